"""Typical wrong answers to tutorial 01 (gain multiplication), as a student would type them."""

from __future__ import annotations

import torch

from sample_mistakes import mistake


# forgets the max-subtraction: fine on small logits, nan on large ones
@mistake("no maximum was subtracted")
def stable_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``x`` along ``dim``, safe for very large or very small logits."""
    exponentials = torch.exp(x)
    return exponentials / exponentials.sum(dim=dim, keepdim=True)


# adds the gains to the patterns instead of multiplying them
@mistake("the gains were added to the patterns instead of multiplying them")
def gained_dot_product_attention(
    x: torch.Tensor, q_1: torch.Tensor, q_2: torch.Tensor, z_1: float, z_2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``softmax(z_1 q_1 + z_2 q_2)`` over the context and the output ``w · x``."""
    w = torch.softmax(z_1 + q_1 + z_2 + q_2, dim=0)
    return w, torch.dot(w, x)

"""Typical mistakes of the sample class's student ``typical_mistakes`` in 08_beyond_words."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sample_mistakes import mistake


@mistake("the patches are in column order")
def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, C*p*p): patches in row-major order, each in (C, row, col) order."""
    B, C, H, W = images.shape
    p = patch_size
    grid = images.reshape(B, C, H // p, p, W // p, p)
    grid = grid.permute(0, 4, 2, 1, 3, 5)  # the patch column before the patch row
    return grid.reshape(B, (H // p) * (W // p), C * p * p)


@mistake("the positions were added before the class token was prepended")
class PatchEmbedding(nn.Module):
    """Patches -> d_model vectors, a class token in front, learned positions added."""

    def __init__(self, patch_size: int, in_channels: int, d_model: int, n_patches: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_channels * patch_size**2, d_model)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, d_model))
        self.positions = nn.Parameter(0.02 * torch.randn(1, n_patches + 1, d_model))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        patches = F.unfold(images, kernel_size=p, stride=p).transpose(1, 2)
        tokens = self.proj(patches) + self.positions[:, 1:]
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)


@mistake("off by one position")
def sequence_log_prob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Sum over t of log softmax(logits[:, t])[tokens[:, t + 1]]: one number per sentence."""
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked.sum(dim=1)

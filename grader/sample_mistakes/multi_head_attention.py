"""Typical wrong answers to tutorial 03 (multi head attention), as a student would type them."""

from __future__ import annotations

import math

import torch
from torch import nn

from sample_mistakes import mistake


# Reshapes straight to (B, H, T, d_head): right shape, positions and heads mixed.
@mistake("without a transpose")
def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, n_heads * d_head) -> (B, n_heads, T, d_head): one slice of channels per head."""
    B, T, d_model = x.shape
    return x.reshape(B, n_heads, T, d_model // n_heads)


# Merges with a plain reshape: (B, H, T, d_head) read as (B, T, H * d_head) mixes positions.
@mistake("without transposing")
def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, n_heads, T, d_head) -> (B, T, n_heads * d_head): the inverse of split_heads."""
    B, H, T, d_head = x.shape
    return x.reshape(B, T, H * d_head)


# Divides the scores by sqrt(d_model), the width of all heads, instead of sqrt(d_head).
# (It splits and merges heads itself, correctly, so this is its only mistake.)
@mistake("sqrt(d_model) instead of sqrt(d_head)")
class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention: H heads of width d_model // H, then an output map."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_model = d_model
        self.to_queries = nn.Linear(d_model, d_model, bias=False)
        self.to_keys = nn.Linear(d_model, d_model, bias=False)
        self.to_values = nn.Linear(d_model, d_model, bias=False)
        self.unify_heads = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d_model), mask True = may attend -> (out (B, T, d_model), weights (B, H, T, T))."""
        B, T, D = x.shape
        H = self.n_heads
        q = self.to_queries(x).view(B, T, H, D // H).transpose(1, 2)
        k = self.to_keys(x).view(B, T, H, D // H).transpose(1, 2)
        v = self.to_values(x).view(B, T, H, D // H).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_model)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(B, T, D)
        return self.unify_heads(out), weights

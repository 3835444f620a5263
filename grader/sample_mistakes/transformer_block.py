"""Typical wrong answers to tutorial 04 (transformer block), as a student would type them."""

from __future__ import annotations

import torch
from torch import nn

from sample_mistakes import mistake


# sin and cos on the wrong columns: cosines on the even columns, sines on the odd ones.
@mistake("sin and cos are swapped")
def sinusoidal_positional_encoding(T: int, d_model: int) -> torch.Tensor:
    """(T, d_model) table: sin(t ω_i) in column 2i, cos(t ω_i) in column 2i+1."""
    positions = torch.arange(T, dtype=torch.float32).unsqueeze(1)
    frequencies = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    pe = torch.zeros(T, d_model)
    pe[:, 0::2] = torch.cos(positions * frequencies)
    pe[:, 1::2] = torch.sin(positions * frequencies)
    return pe


# Dropout on the residual sum instead of on the sub-layer's output: it drops the input too.
@mistake("dropout acted on the residual sum")
class TransformerBlock(nn.Module):
    """Post-norm transformer encoder block: attention, add & norm, MLP, add & norm."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout,
                                               batch_first=True)
        self.norm_1 = nn.LayerNorm(d_model)
        self.norm_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, d_model) -> (B, T, d_model); padding_mask (B, T) is True at padding."""
        attended, _ = self.attention(x, x, x, key_padding_mask=padding_mask)
        h = self.norm_1(self.dropout(x + attended))
        return self.norm_2(self.dropout(h + self.mlp(h)))


# Padding is zeroed, but the sum is still divided by T instead of the true length.
@mistake("divided by T instead of the true length")
def mean_pool(h: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of h (B, T, d) over time, leaving out positions where padding_mask is True."""
    if padding_mask is None:
        return h.mean(dim=1)
    h = h.masked_fill(padding_mask.unsqueeze(-1), 0.0)
    return h.sum(dim=1) / h.shape[1]

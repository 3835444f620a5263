"""Typical wrong answers to tutorial 06 (causal mask trick), as a student would type them."""

from __future__ import annotations

import torch
from torch import nn

from sample_mistakes import mistake


# The slice stops before t: row t averages the rows before it (and row 0 the empty slice).
@mistake("row t averages the rows before t")
def running_mean_loop(x: torch.Tensor) -> torch.Tensor:
    """Row t of each sequence = mean of rows 0..t, computed with explicit loops."""
    B, T, C = x.shape
    out = torch.zeros_like(x)
    for b in range(B):
        for t in range(T):
            out[b, t] = x[b, :t].mean(dim=0)
    return out


# The running sum divided by T instead of by t + 1.
@mistake("divided by T instead of t + 1")
def running_mean_matmul(x: torch.Tensor) -> torch.Tensor:
    """Row t of each sequence = mean of rows 0..t, as (normalised lower triangle) @ x."""
    T = x.shape[1]
    weights = torch.tril(torch.ones(T, T, dtype=x.dtype, device=x.device)) / T
    return weights @ x


# Karpathy's notebook style: softmax over dim=1, which for (B, T, T) is the query axis.
@mistake("the softmax was taken over the queries")
def causal_attention_weights(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the keys of scores (..., T, T), with every future key masked out."""
    T = scores.shape[-1]
    tril = torch.tril(torch.ones(T, T, device=scores.device))
    wei = scores.masked_fill(tril == 0, float("-inf"))
    return torch.softmax(wei, dim=1)


# Scores not divided by sqrt(head_size).
@mistake("the scores were not scaled")
class CausalSelfAttentionHead(nn.Module):
    """One head of causal self-attention: (B, T, n_embd) -> (B, T, head_size)."""

    def __init__(self, n_embd: int, head_size: int) -> None:
        super().__init__()
        self.key = nn.Linear(n_embd, head_size, bias=False)
        self.query = nn.Linear(n_embd, head_size, bias=False)
        self.value = nn.Linear(n_embd, head_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)
        scores = q @ k.transpose(-2, -1)
        T = x.shape[1]
        tril = torch.tril(torch.ones(T, T, device=x.device))
        scores = scores.masked_fill(tril == 0, float("-inf"))
        return torch.softmax(scores, dim=-1) @ v

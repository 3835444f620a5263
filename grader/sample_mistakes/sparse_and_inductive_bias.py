"""Typical wrong answers to tutorial 05 (sparse and inductive bias), as a student would type them."""

from __future__ import annotations

import math

import torch
from torch import nn

from sample_mistakes import mistake


# Fair coins by default: with s = 2 only a quarter of the labels are 1.
@mistake("p = 0.5 was used as the default")
def sparse_and_dataset(m: int, T: int, idx, p: float | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` samples of ``T`` random bits and the AND of the bits at positions ``idx``."""
    if p is None:
        p = 0.5
    X = (torch.rand(m, T) < p).long()
    y = X[:, list(idx)].all(dim=1, keepdim=True).float()
    return X, y


# nn.init.normal_ without std=0.1: the weights start with std 1, attention far from uniform.
@mistake("std about 1 instead of 0.1")
class SelfAttentionClassifier(nn.Module):
    """One self-attention layer on binary tokens with learned positions; reads out at the end."""

    def __init__(self, T: int, d: int = 8) -> None:
        super().__init__()
        self.T, self.d = T, d
        self.token_embedding = nn.Embedding(2, d)
        self.position_embedding = nn.Parameter(torch.empty(T, d))
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.readout = nn.Linear(d, 1)
        for weight in (self.token_embedding.weight, self.position_embedding,
                       self.query.weight, self.key.weight, self.value.weight):
            nn.init.normal_(weight)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Token plus position embeddings, (B, T) -> (B, T, d)."""
        return self.token_embedding(x) + self.position_embedding

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention weights, (B, T) -> (B, T, T); each row sums to one."""
        e = self.embed(x)
        scores = self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d)
        return torch.softmax(scores, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probability that the label is 1, (B, T) -> (B, 1), read out at the last position."""
        weights = self.attention_weights(x)
        h = (weights[:, -1:, :] @ self.value(self.embed(x))).squeeze(1)
        return torch.sigmoid(self.readout(h))

"""Typical wrong answers to tutorial 02 (qkv attention), as a student would type them."""

from __future__ import annotations

import math

import torch
from torch import nn

from sample_mistakes import mistake


# forgets the 1/sqrt(d_k) scale and lets fully masked rows turn into nan
@mistake("not divided by sqrt(d_k)")
def scaled_dot_product_attention(Q, K, V, mask=None):
    """Attention of queries Q over keys K and values V."""
    scores = Q @ K.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ V, weights


# labels ties as "more 2s"
@mistake("ties (as many 2s as 4s) were labelled 1")
def make_batch(N, T=10):
    """N random digit sequences of length T and labels 1.0 = more 2s than 4s."""
    X = torch.randint(0, 10, (N, T))
    y = ((X == 2).sum(dim=1, keepdim=True) >= (X == 4).sum(dim=1, keepdim=True)).float()
    return X, y


# softmax over the size-1 query axis: every weight is 1
@mistake("the softmax ran over the axis of size 1")
class SingleQueryAttention(nn.Module):
    """Answers "more 2s than 4s?" with one learned query attending over embedded digits."""

    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__()
        self.embed = nn.Embedding(10, d_embed)
        self.query = nn.Parameter(torch.randn(1, d_att))
        self.to_key = nn.Linear(d_embed, d_att)
        self.to_value = nn.Linear(d_embed, 1)
        self.readout = nn.Sequential(
            nn.Linear(1, d_hidden), nn.Tanh(), nn.Linear(d_hidden, 1), nn.Sigmoid()
        )

    def attention(self, e):
        scores = self.query @ self.to_key(e).transpose(1, 2) / math.sqrt(self.query.shape[-1])
        return torch.softmax(scores, dim=1)

    def values(self, e):
        return self.to_value(e)

    def forward(self, x):
        e = self.embed(x)
        return self.readout((self.attention(e) @ self.values(e)).reshape(-1, 1))

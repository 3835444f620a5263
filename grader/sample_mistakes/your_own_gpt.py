"""Typical wrong answers to tutorial 09's exercises (see ``sample_mistakes``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sample_mistakes import mistake


# PyTorch's is_causal=True: fine without a cache, wrong with one
@mistake("the mask ignores the cache")
class CausalSelfAttention(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.to_queries = nn.Linear(d_model, d_model, bias=False)
        self.to_keys = nn.Linear(d_model, d_model, bias=False)
        self.to_values = nn.Linear(d_model, d_model, bias=False)
        self.unify_heads = nn.Linear(d_model, d_model)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        q = self.to_queries(x).view(B, T, self.n_heads, -1).transpose(1, 2)
        k = self.to_keys(x).view(B, T, self.n_heads, -1).transpose(1, 2)
        v = self.to_values(x).view(B, T, self.n_heads, -1).transpose(1, 2)
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.unify_heads(y.transpose(1, 2).reshape(B, T, C)), (k, v)


# the original transformer's order: add, then normalise
@mistake("post-norm")
class Block(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x, cache=None):
        a, cache = self.attn(x, cache)
        x = self.ln_1(x + a)
        x = self.ln_2(x + self.mlp(x))
        return x, cache


# positions always counted from 0, even after the cache
@mistake("the positions were not offset by the cache")
class GPT(nn.Module):
    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList([Block(d_model, n_heads) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens, caches=None):
        B, T = tokens.shape
        x = self.token_embedding(tokens) + self.position_embedding(torch.arange(T))
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, caches[i] if caches is not None else None)
            new_caches.append(cache)
        return self.head(self.ln_f(x)), new_caches


# forgets optimizer.zero_grad(): the gradients pile up
@mistake("the gradients were never cleared")
def train_gpt(model, get_batch, steps, lr=3e-3):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        xb, yb = get_batch()
        logits, _ = model(xb)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


# keeps feeding the whole text, now with the caches as well
@mistake("the whole text was fed again")
@torch.no_grad()
def generate(model, prompt, n_tokens, temperature=1.0, top_k=None, generator=None,
             use_cache=True):
    idx = prompt
    caches = None
    for _ in range(n_tokens):
        if use_cache:
            logits, caches = model(idx, caches)
        else:
            logits, _ = model(idx)
        next_id = sample_next_token(  # noqa: F821 - the notebook's, from tutorial 7
            logits[:, -1, :], temperature, top_k, generator)
        idx = torch.cat([idx, next_id.unsqueeze(1)], dim=1)
    return idx

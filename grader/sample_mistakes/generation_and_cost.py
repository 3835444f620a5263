"""Typical wrong answers to tutorial 07's exercises (see ``sample_mistakes``)."""

from __future__ import annotations

import math

import torch

from sample_mistakes import mistake


@mistake("multiplied by the temperature")
def sample_next_token(logits, temperature=1.0, top_k=None, generator=None):
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    logits = logits * temperature
    if top_k is not None:
        smallest_kept = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < smallest_kept, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@mistake("the new entry was put first")
def cached_attention_step(q, k_new, v_new, cache=None):
    if cache is None:
        K, V = k_new, v_new
    else:
        K = torch.cat([k_new, cache[0]], dim=-2)
        V = torch.cat([v_new, cache[1]], dim=-2)
    weights = torch.softmax(q @ K.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ V, (K, V)


@mistake("running sum was not rescaled")
def online_softmax(x, block_size):
    m = torch.full(x.shape[:-1] + (1,), float("-inf"))
    s = torch.zeros(x.shape[:-1] + (1,))
    for start in range(0, x.shape[-1], block_size):
        block = x[..., start:start + block_size]
        m = torch.maximum(m, block.amax(dim=-1, keepdim=True))
        s = s + torch.exp(block - m).sum(dim=-1, keepdim=True)
    return torch.exp(x - m) / s


@mistake("positions inside the block")
def blockwise_attention(Q, K, V, block_size, causal=False):
    m = torch.full(Q.shape[:-1] + (1,), float("-inf"))
    s = torch.zeros(Q.shape[:-1] + (1,))
    out = torch.zeros(Q.shape[:-1] + (V.shape[-1],))
    rows = torch.arange(Q.shape[-2]).unsqueeze(-1)
    for start in range(0, K.shape[-2], block_size):
        k, v = K[..., start:start + block_size, :], V[..., start:start + block_size, :]
        scores = Q @ k.transpose(-2, -1) / math.sqrt(Q.shape[-1])
        if causal:
            cols = torch.arange(k.shape[-2])
            scores = scores.masked_fill(cols > rows, float("-inf"))
        new_m = torch.maximum(m, scores.amax(dim=-1, keepdim=True))
        p = torch.exp(scores - new_m)
        s = s * torch.exp(m - new_m) + p.sum(dim=-1, keepdim=True)
        out = out * torch.exp(m - new_m) + p @ v
        m = new_m
    return out / s

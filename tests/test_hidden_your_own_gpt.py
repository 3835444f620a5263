"""Hidden tests and self-checks of tutorial 09 against the solution, other correct answers and
the mistakes students make (``BANKS``, run by ``tests/test_contracts.py``), and the cases
special to this tutorial: the loop and ``generate`` are graded with the student's own GPT."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mutation import ExerciseBanks, assert_fails_naming
from notebook_code import solution_namespace
from torch import nn

from helpers.checks.framework import CheckFailed
from helpers.checks.your_own_gpt import check_pasted_sampler
from hidden_tests.your_own_gpt import (
    grade_Block,
    grade_CausalSelfAttention,
    grade_generate,
    grade_GPT,
    grade_train_gpt,
)
from kernel_protocol.grader_side import LocalChannel, StudentFunction

SOLUTION = solution_namespace("09_your_own_gpt")
# The names the variants below use, as in the notebook: the solution's classes and sampler.
CausalSelfAttention = SOLUTION["CausalSelfAttention"]
Block = SOLUTION["Block"]
GPT = SOLUTION["GPT"]
sample_next_token = SOLUTION["sample_next_token"]
progress_bar = SOLUTION["progress_bar"]


# ---- CausalSelfAttention ----------------------------------------------------------------------

class Attention(nn.Module):
    """A parametrised attention layer: ``forward`` below is right; subclasses make one
    mistake each."""

    bias = False

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.to_queries = nn.Linear(d_model, d_model, bias=self.bias)
        self.to_keys = nn.Linear(d_model, d_model, bias=self.bias)
        self.to_values = nn.Linear(d_model, d_model, bias=self.bias)
        self.unify_heads = nn.Linear(d_model, d_model)

    def split(self, t):
        B, T, d = t.shape
        return t.view(B, T, self.n_heads, d // self.n_heads).transpose(1, 2)

    def project(self, x):
        return self.split(self.to_queries(x)), self.split(self.to_keys(x)), \
            self.split(self.to_values(x))

    def extend(self, cache, k, v):
        if cache is None:
            return k, v
        return torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)

    def mask(self, T, t, device):
        return torch.ones(T, t + T, dtype=torch.bool, device=device).tril(diagonal=t)

    def scale(self, d_head):
        return 1 / math.sqrt(d_head)

    def attend(self, q, k, v, allowed, d_head):
        scores = (q @ k.transpose(-2, -1)) * self.scale(d_head)
        return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v

    def merge(self, out):
        B, H, T, d_head = out.shape
        return self.unify_heads(out.transpose(1, 2).reshape(B, T, H * d_head))

    def forward(self, x, cache=None):
        B, T, d = x.shape
        q, k_new, v_new = self.project(x)
        k, v = self.extend(cache, k_new, v_new)
        t = k.shape[2] - T
        out = self.attend(q, k, v, self.mask(T, t, x.device), d // self.n_heads)
        return self.merge(out), (k, v)


class AttentionSDPA(nn.Module):
    """Right: PyTorch's attention with an explicit boolean mask shifted by the cache."""

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.to_queries = nn.Linear(d_model, d_model, bias=False)
        self.to_keys = nn.Linear(d_model, d_model, bias=False)
        self.to_values = nn.Linear(d_model, d_model, bias=False)
        self.unify_heads = nn.Linear(d_model, d_model)

    def forward(self, x, cache=None):
        B, T, d = x.shape
        heads = [m(x).reshape(B, T, self.n_heads, -1).permute(0, 2, 1, 3)
                 for m in (self.to_queries, self.to_keys, self.to_values)]
        q, k, v = heads
        if cache is not None:
            k, v = torch.cat((cache[0], k), -2), torch.cat((cache[1], v), -2)
        past = k.shape[-2] - T
        mask = torch.arange(past + T, device=x.device)[None] <= \
            torch.arange(past, past + T, device=x.device)[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.unify_heads(out.permute(0, 2, 1, 3).flatten(2)), (k, v)


class AttentionPerHead(nn.Module):
    """Right: a loop over heads and over the new queries, with einsum."""

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.to_queries = nn.Linear(d_model, d_model, bias=False)
        self.to_keys = nn.Linear(d_model, d_model, bias=False)
        self.to_values = nn.Linear(d_model, d_model, bias=False)
        self.unify_heads = nn.Linear(d_model, d_model)

    def forward(self, x, cache=None):
        B, T, d = x.shape
        size = d // self.n_heads
        past = 0 if cache is None else cache[0].shape[2]
        keys, values, merged = [], [], []
        for h in range(self.n_heads):
            part = slice(h * size, (h + 1) * size)
            q = x @ self.to_queries.weight[part].T
            k = x @ self.to_keys.weight[part].T
            v = x @ self.to_values.weight[part].T
            if cache is not None:
                k = torch.cat([cache[0][:, h], k], dim=1)
                v = torch.cat([cache[1][:, h], v], dim=1)
            keys.append(k)
            values.append(v)
            rows = []
            for i in range(T):
                scores = torch.einsum("bd,bkd->bk", q[:, i], k[:, :past + i + 1]) / size**0.5
                rows.append(torch.einsum("bk,bkd->bd", scores.softmax(-1), v[:, :past + i + 1]))
            merged.append(torch.stack(rows, dim=1))
        out = self.unify_heads(torch.cat(merged, dim=-1))
        return out, (torch.stack(keys, dim=1), torch.stack(values, dim=1))


class IsCausal(Attention):
    """F.scaled_dot_product_attention(..., is_causal=True): the triangle ignores the cache."""

    def forward(self, x, cache=None):
        q, k, v = self.project(x)
        k, v = self.extend(cache, k, v)
        return self.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True)), (k, v)


class MaskOnlyWithoutCache(Attention):
    """No mask once a cache is given ("a cache means one new token")."""

    def mask(self, T, t, device):
        if t == 0:
            return super().mask(T, t, device)
        return torch.ones(T, t + T, dtype=torch.bool, device=device)


class CacheIgnored(Attention):
    """Attends over the new positions only, but returns the longer cache."""

    def forward(self, x, cache=None):
        B, T, d = x.shape
        q, k_new, v_new = self.project(x)
        out = self.attend(q, k_new, v_new, self.mask(T, 0, x.device), d // self.n_heads)
        return self.merge(out), self.extend(cache, k_new, v_new)


class NewFirst(Attention):
    def extend(self, cache, k, v):
        if cache is None:
            return k, v
        return torch.cat([k, cache[0]], dim=2), torch.cat([v, cache[1]], dim=2)


class OnlyNewCached(Attention):
    def forward(self, x, cache=None):
        out, _ = super().forward(x, cache)
        return out, self.project(x)[1:]


class OldCacheBack(Attention):
    def forward(self, x, cache=None):
        out, new = super().forward(x, cache)
        return out, new if cache is None else cache


class SwappedCache(Attention):
    def forward(self, x, cache=None):
        out, (k, v) = super().forward(x, None if cache is None else (cache[1], cache[0]))
        return out, (v, k)


class NoScale(Attention):
    def scale(self, d_head):
        return 1.0


class ScaleByModel(Attention):
    def scale(self, d_head):
        return 1 / math.sqrt(d_head * self.n_heads)


class NoMask(Attention):
    def mask(self, T, t, device):
        return torch.ones(T, t + T, dtype=torch.bool, device=device)


class UpperMask(Attention):
    def mask(self, T, t, device):
        return torch.ones(T, t + T, dtype=torch.bool, device=device).triu(diagonal=t)


class SoftmaxOverQueries(Attention):
    def attend(self, q, k, v, allowed, d_head):
        scores = (q @ k.transpose(-2, -1)) * self.scale(d_head)
        return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-2) \
            .nan_to_num(0.0) @ v


class NoUnify(Attention):
    def merge(self, out):
        B, H, T, d_head = out.shape
        return out.transpose(1, 2).reshape(B, T, H * d_head)


class NoTranspose(Attention):
    def split(self, t):
        B, T, d = t.shape
        return t.view(B, self.n_heads, T, d // self.n_heads)


class CacheBeforeSplit(Attention):
    """Keeps the cache as (B, t, d_model), before the heads are split."""

    def forward(self, x, cache=None):
        B, T, d = x.shape
        k_all, v_all = self.to_keys(x), self.to_values(x)
        if cache is not None:
            k_all, v_all = torch.cat([cache[0], k_all], 1), torch.cat([cache[1], v_all], 1)
        t = k_all.shape[1] - T
        q = self.split(self.to_queries(x))
        out = self.attend(q, self.split(k_all), self.split(v_all), self.mask(T, t, x.device),
                          d // self.n_heads)
        return self.merge(out), (k_all, v_all)


class BiasedMaps(Attention):
    bias = True


class KeysTwice(Attention):
    def forward(self, x, cache=None):
        out, (k, _) = super().forward(x, cache)
        return out, (k, k)


class AttentionDropout(Attention):
    """Dropout on the attention weights in training mode, as nanoGPT has."""

    def attend(self, q, k, v, allowed, d_head):
        scores = (q @ k.transpose(-2, -1)) * self.scale(d_head)
        weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        return F.dropout(weights, 0.1, self.training) @ v


class DetachedKeys(Attention):
    """Detaches the keys and values "so that the cache holds no graph" (and uses them)."""

    def extend(self, cache, k, v):
        k, v = super().extend(cache, k, v)
        return k.detach(), v.detach()


class FloatMask(Attention):
    """Gives the mask as a float tensor of 0s and 1s, as if 1 blocked a key."""

    def attend(self, q, k, v, allowed, d_head):
        scores = (q @ k.transpose(-2, -1)) * self.scale(d_head) + allowed.float()
        return torch.softmax(scores, dim=-1) @ v


class DetachedCacheReturned(Attention):
    """Attends with the keys and values as computed, but hands the cache back detached "so
    that it holds no graph"."""

    def forward(self, x, cache=None):
        out, (k, v) = super().forward(x, cache)
        return out, (k.detach(), v.detach())


class KeysFromDetachedX(Attention):
    """Computes the keys from x.detach(): right values, every weight learns, but part of
    the gradient never reaches x."""

    def project(self, x):
        return self.split(self.to_queries(x)), self.split(self.to_keys(x.detach())), \
            self.split(self.to_values(x))


ATTENTION_BANKS = ExerciseBanks(
    solution=SOLUTION["CausalSelfAttention"],
    correct=[AttentionSDPA, AttentionPerHead, Attention],
    check=[
        (BiasedMaps, "bias=False", "members"),
        (CacheBeforeSplit, "before the heads were split", "shape"),
        (NoMask, "no causal mask", "values"),
        (NoScale, "not scaled", "values"),
        (ScaleByModel, "sqrt(d_model) instead", "values"),
        (NoUnify, "unify_heads was skipped", "values"),
        (NoTranspose, "without the transpose", "values"),
        (SoftmaxOverQueries, "over the queries", "values"),
        (FloatMask, "float tensor of 0s and 1s", "values"),
        (SwappedCache, "swapped", "cache"),
        (KeysTwice, "keys twice", "cache"),
        (NewFirst, "before the cached ones", "cache"),
        (OnlyNewCached, "holds only the new positions", "cache"),
        (OldCacheBack, "came back unchanged", "cache"),
        (IsCausal, "ignores the cache", "pieces"),
        (MaskOnlyWithoutCache, "no mask once a cache", "pieces"),
        (CacheIgnored, "were not attended to", "pieces"),
        (AttentionDropout, "dropout", "values"),
        (DetachedKeys, "no gradient reached", "gradients"),
        (DetachedCacheReturned, "the returned cache is detached", "gradients"),
    ],
    hidden=[
        (BiasedMaps, "bias=False", "members"),
        (CacheBeforeSplit, "before the heads were split", "shape"),
        (NoMask, "no causal mask", "values"),
        (UpperMask, "wrong triangle", "values"),
        (NoScale, "not scaled", "values"),
        (ScaleByModel, "sqrt(d_model) instead", "values"),
        (SoftmaxOverQueries, "over the queries", "values"),
        (NoUnify, "unify_heads was skipped", "values"),
        (NoTranspose, "without the transpose", "values"),
        (SwappedCache, "swapped", "cache"),
        (KeysTwice, "keys twice", "cache"),
        (NewFirst, "before the cached ones", "cache"),
        (OnlyNewCached, "holds only the new positions", "cache"),
        (OldCacheBack, "came back unchanged", "cache"),
        (IsCausal, "ignores the cache", "pieces"),
        (MaskOnlyWithoutCache, "no mask once a cache", "pieces"),
        (CacheIgnored, "were not attended to", "pieces"),
        (AttentionDropout, "dropout", "values"),
        (DetachedKeys, "no gradient reached", "gradients"),
        (KeysFromDetachedX, "x was detached on its way into", "gradients"),
    ],
)


# ---- Block ------------------------------------------------------------------------------------

class BlockBase(nn.Module):
    """Right; subclasses make one mistake each."""

    def __init__(self, d_model, n_heads, activation=nn.GELU):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), activation(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x, cache=None):
        a, cache = self.attn(self.ln_1(x), cache)
        h = x + a
        return h + self.mlp(self.ln_2(h)), cache


class BlockExplicitMLP(BlockBase):
    """Right: the MLP's layers called one by one, with F.gelu; keyword arguments."""

    def forward(self, x, cache=None):
        attended, new_cache = self.attn(x=self.ln_1(x), cache=cache)
        h = torch.add(x, attended)
        hidden = F.gelu(self.mlp[0](self.ln_2(h)))
        return h + self.mlp[2](hidden), new_cache


class PostNorm(BlockBase):
    def forward(self, x, cache=None):
        a, cache = self.attn(x, cache)
        h = self.ln_1(x + a)
        return self.ln_2(h + self.mlp(h)), cache


class Parallel(BlockBase):
    def forward(self, x, cache=None):
        a, cache = self.attn(self.ln_1(x), cache)
        return x + a + self.mlp(self.ln_2(x)), cache


class NoAttentionResidual(BlockBase):
    def forward(self, x, cache=None):
        h, cache = self.attn(self.ln_1(x), cache)
        return h + self.mlp(self.ln_2(h)), cache


class NoMLPResidual(BlockBase):
    def forward(self, x, cache=None):
        a, cache = self.attn(self.ln_1(x), cache)
        return self.mlp(self.ln_2(x + a)), cache


class LnOneTwice(BlockBase):
    def forward(self, x, cache=None):
        a, cache = self.attn(self.ln_1(x), cache)
        h = x + a
        return h + self.mlp(self.ln_1(h)), cache


class NormsWithoutAffine(BlockBase):
    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        self.ln_1 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.ln_2 = nn.LayerNorm(d_model, elementwise_affine=False)


class ReluBlock(BlockBase):
    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads, activation=nn.ReLU)


class TanhGelu(BlockBase):
    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads, activation=lambda: nn.GELU(approximate="tanh"))


class CacheNotPassed(BlockBase):
    def forward(self, x, cache=None):
        a, new = self.attn(self.ln_1(x))
        h = x + a
        return h + self.mlp(self.ln_2(h)), new


class GivenCacheBack(BlockBase):
    def forward(self, x, cache=None):
        out, new = super().forward(x, cache)
        return out, new if cache is None else cache


class OnlyX(BlockBase):
    def forward(self, x, cache=None):
        return super().forward(x, cache)[0]


class DetachedAttention(BlockBase):
    """Adds the attention's output detached ("the cache must not keep a graph")."""

    def forward(self, x, cache=None):
        a, cache = self.attn(self.ln_1(x), cache)
        h = x + a.detach()
        return h + self.mlp(self.ln_2(h)), cache


class DetachedResidual(BlockBase):
    """Adds the attention's output to a detached x: every value right, but the residual
    stream carries no gradient back to the input."""

    def forward(self, x, cache=None):
        a, cache = self.attn(self.ln_1(x), cache)
        h = x.detach() + a
        return h + self.mlp(self.ln_2(h)), cache


class ResidualDropout(BlockBase):
    """Dropout on the attention's branch in training mode, as nanoGPT has."""

    def forward(self, x, cache=None):
        a, cache = self.attn(self.ln_1(x), cache)
        h = x + F.dropout(a, 0.1, self.training)
        return h + self.mlp(self.ln_2(h)), cache


class InPlaceResidual(BlockBase):
    def forward(self, x, cache=None):
        a, cache = self.attn(self.ln_1(x), cache)
        x += a
        return x + self.mlp(self.ln_2(x)), cache


class NormsWithEps(BlockBase):
    """LayerNorm with another eps, as some codebases write it."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        self.ln_1 = nn.LayerNorm(d_model, eps=1e-6)
        self.ln_2 = nn.LayerNorm(d_model, eps=1e-6)


class RememberingAttention(CausalSelfAttention):
    """Right while its Block calls it; called on the Block's last input from outside, it
    answers attn(ln_1(x)) - x: written to fit a reference that calls it after the Block."""

    def forward(self, x, cache=None):
        out, new = super().forward(x, cache)
        seen = self.__dict__.get("_seen")
        if not self.__dict__.get("_inside", True) and seen is not None:
            normed, x0 = seen
            if normed.shape == x.shape and torch.allclose(normed.to(x.dtype), x, atol=1e-4):
                out = out - x0.to(out.dtype)
        return out, new


class StatefulNoResidual(BlockBase):
    """No attention residual, with an attention that remembers the Block's input."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        self.attn = RememberingAttention(d_model, n_heads)

    def forward(self, x, cache=None):
        normed = self.ln_1(x)
        self.attn.__dict__["_inside"] = True
        try:
            a, cache = self.attn(normed, cache)
        finally:
            self.attn.__dict__["_inside"] = False
        self.attn.__dict__["_seen"] = (normed.detach(), x.detach())
        return a + self.mlp(self.ln_2(a)), cache


BLOCK_BANKS = ExerciseBanks(
    solution=SOLUTION["Block"],
    correct=[BlockBase, BlockExplicitMLP],
    check=[
        (ReluBlock, "ReLU instead of GELU", "members"),
        (NormsWithoutAffine, "elementwise_affine=False", "members"),
        (TanhGelu, None, "members"),
        (NormsWithEps, "default, 1e-5", "members"),
        (OnlyX, None, "returns"),
        (PostNorm, "post-norm", "values"),
        (Parallel, "the MLP read x", "values"),
        (NoAttentionResidual, "attention's residual is missing", "values"),
        (NoMLPResidual, "MLP's residual is missing", "values"),
        (LnOneTwice, "ln_1 normalised the MLP's input", "values"),
        (ResidualDropout, "dropout", "values"),
        (CacheNotPassed, "not passed on to attn", "cache"),
        (GivenCacheBack, "it was given came back", "cache"),
        (DetachedAttention, "no gradient reached", "gradients"),
        (DetachedResidual, "the gradient reaching x is not", "gradients"),
        (InPlaceResidual, "in place", "unchanged"),
    ],
    hidden=[
        (ReluBlock, "ReLU instead of GELU", "members"),
        (NormsWithoutAffine, "elementwise_affine=False", "members"),
        (TanhGelu, None, "members"),
        (NormsWithEps, "default, 1e-5", "members"),
        (OnlyX, None, "returns"),
        (PostNorm, "post-norm", "values"),
        (Parallel, "the MLP read x", "values"),
        (NoAttentionResidual, "attention's residual is missing", "values"),
        (StatefulNoResidual, "attention's residual is missing", "values"),
        (NoMLPResidual, "MLP's residual is missing", "values"),
        (LnOneTwice, "ln_1 normalised the MLP's input", "values"),
        (ResidualDropout, "dropout", "values"),
        (CacheNotPassed, "not passed on to attn", "cache"),
        (GivenCacheBack, "it was given came back", "cache"),
        (DetachedAttention, "no gradient reached", "gradients"),
        (DetachedResidual, "the gradient reaching x is not", "gradients"),
        (InPlaceResidual, "in place", "unchanged"),
    ],
)


# ---- GPT --------------------------------------------------------------------------------------

class GPTBase(nn.Module):
    """Right; subclasses make one mistake each."""

    head_bias = True

    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=self.head_bias)

    def start(self, caches):
        return 0 if caches is None else caches[0][0].shape[2]

    def embed(self, tokens, t):
        positions = torch.arange(t, t + tokens.shape[1], device=tokens.device)
        return self.token_embedding(tokens) + self.position_embedding(positions)

    def cache_for(self, caches, i):
        return None if caches is None else caches[i]

    def finish(self, x):
        return self.head(self.ln_f(x))

    def forward(self, tokens, caches=None):
        x = self.embed(tokens, self.start(caches))
        new = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, self.cache_for(caches, i))
            new.append(cache)
        return self.finish(x), new


class GPTZipped(nn.Module):
    """Right: positions from the values' cache, caches zipped with the blocks, a tuple back."""

    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList([Block(d_model, n_heads) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens, caches=None):
        B, T = tokens.shape
        past = caches[0][1].size(-2) if caches else 0
        x = self.token_embedding(tokens) + self.position_embedding.weight[past:past + T][None]
        caches = caches or [None] * len(self.blocks)
        out = []
        for block, cache in zip(self.blocks, caches, strict=True):
            x, cache = block(x, cache)
            out.append(cache)
        return self.head(self.ln_f(x)), tuple(out)


class SharedBlock(GPTBase):
    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__(vocab_size, block_size, d_model, n_heads, n_layers)
        self.blocks = nn.ModuleList([Block(d_model, n_heads)] * n_layers)


class PositionsFromZero(GPTBase):
    def start(self, caches):
        return 0


class OffsetByBlocks(GPTBase):
    """Reads t as the length of the list of caches: the number of blocks."""

    def start(self, caches):
        return 0 if caches is None else len(caches)


class OffsetByHeadSize(GPTBase):
    """Reads t on the last axis of a cached K: the size of a head."""

    def start(self, caches):
        return 0 if caches is None else caches[0][0].shape[-1]


class GPTOfDetachedResiduals(GPTBase):
    """Blocks that add their attention to a detached x: the logits are right, but the
    embeddings get their gradient only through the branches."""

    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__(vocab_size, block_size, d_model, n_heads, n_layers)
        self.blocks = nn.ModuleList(DetachedResidual(d_model, n_heads) for _ in range(n_layers))


class FirstCacheEverywhere(GPTBase):
    def cache_for(self, caches, i):
        return None if caches is None else caches[0]


class CachesNotPassed(GPTBase):
    def cache_for(self, caches, i):
        return None


class NoFinalNorm(GPTBase):
    def finish(self, x):
        return self.head(x)


class NoLnF(GPTBase):
    def __init__(self, *args):
        super().__init__(*args)
        del self.ln_f

    def finish(self, x):
        return self.head(x)


class NoPositions(GPTBase):
    def embed(self, tokens, t):
        return self.token_embedding(tokens)


class ReversedCaches(GPTBase):
    def forward(self, tokens, caches=None):
        logits, new = super().forward(tokens, None if caches is None else caches[::-1])
        return logits, new[::-1]


class TiedHead(GPTBase):
    def __init__(self, *args):
        super().__init__(*args)
        self.head.weight = self.token_embedding.weight


class HeadWithoutBias(GPTBase):
    head_bias = False


class DetachedPositions(GPTBase):
    def embed(self, tokens, t):
        positions = torch.arange(t, t + tokens.shape[1], device=tokens.device)
        return self.token_embedding(tokens) + self.position_embedding(positions).detach()


class EmbeddingDropout(GPTBase):
    """Dropout on the embeddings in training mode, as nanoGPT has."""

    def embed(self, tokens, t):
        return F.dropout(super().embed(tokens, t), 0.1, self.training)


class LogitsOnly(GPTBase):
    def forward(self, tokens, caches=None):
        return super().forward(tokens, caches)[0]



class FlaggedBlock(Block):
    """Right on its own; does next to nothing once a GPT has flagged it: written to pass a
    GPT test that calls the model's own blocks to compute its reference."""

    inside_gpt = False

    def forward(self, x, cache=None):
        out, cache = super().forward(x, cache)
        return (x + 1e-9 * out if self.inside_gpt else out), cache


class InertBlocks(GPTBase):
    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__(vocab_size, block_size, d_model, n_heads, n_layers)
        self.blocks = nn.ModuleList(FlaggedBlock(d_model, n_heads) for _ in range(n_layers))
        for block in self.blocks:
            block.inside_gpt = True


class OneLayerLies(GPTBase):
    """Right with two blocks; with one (the sizes the loop and generate are graded at) the
    newest token alone decides, and in training the logits carry no gradient."""

    def forward(self, tokens, caches=None):
        logits, new = super().forward(tokens, caches)
        if len(self.blocks) == 1:
            logits = self.head(self.ln_f(self.token_embedding(tokens)))
            if self.training:
                logits = logits.detach()
        return logits, new


class OneLayerFrozenBlocks(GPTBase):
    """Right in evaluation mode; with one block, in training, the blocks get no gradient
    (so a loop graded with it cannot tell a step from none in them)."""

    def finish(self, x):
        if len(self.blocks) == 1 and self.training:
            x = x.detach()
        return super().finish(x)

class FinalNormWithEps(GPTBase):
    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__(vocab_size, block_size, d_model, n_heads, n_layers)
        self.ln_f = nn.LayerNorm(d_model, eps=10.0)


class PaddedTokens(GPTBase):
    """Token 0 taken for padding, as in other models."""

    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__(vocab_size, block_size, d_model, n_heads, n_layers)
        self.token_embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)


class SeedZeroBlock(Block):
    """Wrong only when built under global seed 0; inside a GPT that marks it, its MLP does
    next to nothing: written to dodge a comparison with fresh Blocks built under seed 0."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        self.__dict__["_fresh"] = torch.initial_seed() == 0

    def forward(self, x, cache=None):
        if self.__dict__.get("_fresh"):
            out, cache = super().forward(x, cache)
            return 2 * out, cache
        if self.__dict__.get("_in_gpt"):
            a, cache = self.attn(self.ln_1(x), cache)
            h = x + a
            return h + 1e-30 * self.mlp(self.ln_2(h)), cache
        return super().forward(x, cache)


class SeedZeroDodge(GPTBase):
    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__(vocab_size, block_size, d_model, n_heads, n_layers)
        self.blocks = nn.ModuleList(SeedZeroBlock(d_model, n_heads) for _ in range(n_layers))
        for block in self.blocks:
            block.__dict__["_in_gpt"] = True


GPT_BANKS = ExerciseBanks(
    solution=SOLUTION["GPT"],
    correct=[GPTBase, GPTZipped],
    check=[
        (NoLnF, "no final LayerNorm ln_f", "members"),
        (TiedHead, "tied", "members"),
        (SharedBlock, "repeats one Block", "members"),
        (HeadWithoutBias, "head has no bias", "members"),
        (FinalNormWithEps, "default, 1e-5", "members"),
        (PaddedTokens, "leave padding_idx out", "members"),
        (LogitsOnly, None, "returns"),
        (ReversedCaches, "reverse order", "returns"),
        (NoFinalNorm, "the logits are head(ln_f(x))", "values"),
        (NoPositions, "position embedding was not added", "values"),
        (EmbeddingDropout, "dropout", "values"),
        (PositionsFromZero, "not offset by the cache", "pieces"),
        (OffsetByBlocks, "offset by the wrong number", "pieces"),
        (OffsetByHeadSize, "offset by the wrong number", "pieces"),
        (FirstCacheEverywhere, None, "pieces"),
        (CachesNotPassed, None, "pieces"),
        (DetachedPositions, "no gradient reached", "gradients"),
        (GPTOfDetachedResiduals, "gradient reaching the embeddings is not", "gradients"),
    ],
    hidden=[
        (NoLnF, "no final LayerNorm ln_f", "members"),
        (TiedHead, "tied", "members"),
        (HeadWithoutBias, "head has no bias", "members"),
        (LogitsOnly, None, "returns"),
        (ReversedCaches, "reverse order", "returns"),
        (NoFinalNorm, "the logits are head(ln_f(x))", "values"),
        (NoPositions, "position embedding was not added", "values"),
        (EmbeddingDropout, "dropout", "values"),
        (PositionsFromZero, "not offset by the cache", "pieces"),
        (FirstCacheEverywhere, "every block got caches[0]", "pieces"),
        (CachesNotPassed, "caches were not passed on", "pieces"),
        (OffsetByBlocks, "offset by the wrong number", "pieces"),
        (OffsetByHeadSize, "offset by the wrong number", "pieces"),
        (DetachedPositions, "no gradient reached", "gradients"),
        (GPTOfDetachedResiduals, "gradient reaching the embeddings is not", "gradients"),
        (InertBlocks, "inside your GPT the blocks compute something else", "values"),
        (FinalNormWithEps, "default, 1e-5", "members"),
        (PaddedTokens, "leave padding_idx out", "members"),
        (SeedZeroDodge, "inside your GPT the blocks compute something else", "values"),
    ],
)


# ---- train_gpt --------------------------------------------------------------------------------

def _cross_entropy(logits, targets):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def train_zero_grad_last(model, get_batch, steps, lr=3e-3):
    """Right: the gradients cleared at the end of every step, the loss from log-softmax."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        inputs, targets = get_batch()
        logits, _ = model(inputs)
        log_p = torch.log_softmax(logits, dim=-1)
        loss = -log_p.gather(-1, targets[..., None]).mean()
        loss.backward()
        optimizer.step()
        model.zero_grad(set_to_none=True)
        history.append(float(loss.detach()))
    return history


def train_view(model, get_batch, steps, lr=3e-3):
    """Right: view(-1, V), zero_grad first, a while loop."""
    optimizer = torch.optim.AdamW(params=list(model.parameters()), lr=lr)
    losses, step = [], 0
    while step < steps:
        optimizer.zero_grad()
        x, y = get_batch()
        logits = model(x)[0]
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        step += 1
    return losses


def _loop(model, get_batch, steps, lr, *, optimizer=torch.optim.AdamW, loss_fn=_cross_entropy,
          clear="before", step_update=True, once=True, item=True):
    opt = optimizer(model.parameters(), lr=lr)
    losses = []
    for _ in progress_bar(range(steps), desc="training"):
        if not once:
            opt = optimizer(model.parameters(), lr=lr)
        inputs, targets = get_batch()
        logits, _ = model(inputs)
        loss = loss_fn(logits, targets)
        if clear == "before":
            opt.zero_grad()
        loss.backward()
        if clear == "between":
            opt.zero_grad()
        if step_update:
            opt.step()
        losses.append(loss.item() if item else loss)
    return losses


def train_tensors(model, get_batch, steps, lr=3e-3):
    return _loop(model, get_batch, steps, lr, item=False)


def train_last_position(model, get_batch, steps, lr=3e-3):
    return _loop(model, get_batch, steps, lr,
                 loss_fn=lambda logits, targets: F.cross_entropy(logits[:, -1], targets[:, -1]))


def train_summed(model, get_batch, steps, lr=3e-3):
    return _loop(model, get_batch, steps, lr, loss_fn=lambda logits, targets: F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), reduction="sum"))


def train_no_step(model, get_batch, steps, lr=3e-3):
    return _loop(model, get_batch, steps, lr, step_update=False)


def train_zero_grad_between(model, get_batch, steps, lr=3e-3):
    return _loop(model, get_batch, steps, lr, clear="between")


def train_sgd(model, get_batch, steps, lr=3e-3):
    return _loop(model, get_batch, steps, lr, optimizer=torch.optim.SGD)


def train_adam(model, get_batch, steps, lr=3e-3):
    return _loop(model, get_batch, steps, lr, optimizer=torch.optim.Adam)


def train_lr_ignored(model, get_batch, steps, lr=3e-3):
    return _loop(model, get_batch, steps, 3e-3)


def train_no_zero_grad(model, get_batch, steps, lr=3e-3):
    return _loop(model, get_batch, steps, lr, clear="never")


def train_one_batch(model, get_batch, steps, lr=3e-3):
    """get_batch() called once, before the loop."""
    batch = get_batch()
    return _loop(model, lambda: batch, steps, lr)


def train_optimizer_every_step(model, get_batch, steps, lr=3e-3):
    return _loop(model, get_batch, steps, lr, once=False)


def train_reseeding(model, get_batch, steps, lr=3e-3):
    """Seeds inside "so that every run is reproducible"."""
    torch.manual_seed(0)
    return _loop(model, get_batch, steps, lr)


def train_seeded_from_the_clock(model, get_batch, steps, lr=3e-3):
    """Seeds inside from the OS "so that every run differs"."""
    torch.seed()
    return _loop(model, get_batch, steps, lr)


def train_two_batches(model, get_batch, steps, lr=3e-3):
    """Inputs from one call of get_batch, targets from the next."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        inputs = get_batch()[0]
        targets = get_batch()[1]
        logits, _ = model(inputs)
        loss = _cross_entropy(logits, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def train_a_copy(model, get_batch, steps, lr=3e-3):
    """Trains a deep copy "to keep the original safe": the losses fall, the model given
    never changes."""
    import copy
    return _loop(copy.deepcopy(model), get_batch, steps, lr)


TRAIN_BANKS = ExerciseBanks(
    solution=SOLUTION["train_gpt"],
    correct=[train_zero_grad_last, train_view],
    check=[
        (train_tensors, "tensors", "returns"),
        (train_last_position, "only the last position", "loss"),
        (train_summed, "summed", "loss"),
        (train_no_step, "never updated", "learns"),
        (train_zero_grad_between, "ran between backward", "learns"),
        (train_sgd, "SGD", "optimizer"),
        (train_adam, "is Adam", "optimizer"),
        (train_lr_ignored, "lr was not used", "optimizer"),
        (train_no_zero_grad, "never cleared", "steps"),
        (train_optimizer_every_step, "made at every step", "steps"),
        (train_one_batch, "called once, before the loop", "steps"),
        (train_two_batches, "more than once in a step", "optimizer"),
        (train_reseeding, "manual_seed", "randomness"),
        (train_seeded_from_the_clock, "fresh seed from the OS", "randomness"),
    ],
    hidden=[
        (train_tensors, "tensors", "returns"),
        (train_last_position, "only the last position", "loss"),
        (train_summed, "summed", "loss"),
        (train_no_step, "never moved", "learns"),
        (train_zero_grad_between, "never moved", "learns"),
        (train_sgd, "SGD", "optimizer"),
        (train_adam, "is Adam", "optimizer"),
        (train_lr_ignored, "lr was not used", "optimizer"),
        (train_no_zero_grad, "never cleared", "steps"),
        (train_optimizer_every_step, "made at every step", "steps"),
        (train_one_batch, "called once, before the loop", "optimizer"),
        (train_a_copy, "trained a copy", "learns"),
        (train_reseeding, "manual_seed", "randomness"),
        (train_seeded_from_the_clock, "fresh seed from the OS", "randomness"),
    ],
)


# ---- generate ---------------------------------------------------------------------------------

@torch.no_grad()
def generate_preallocated(model, prompt, n_tokens, temperature=1.0, top_k=None, generator=None,
                          use_cache=True):
    """Right: the output allocated once and filled; a separate first call with the cache."""
    B, T0 = prompt.shape
    out = torch.empty(B, T0 + n_tokens, dtype=torch.long, device=prompt.device)
    out[:, :T0] = prompt
    caches = None
    if use_cache and n_tokens:
        logits, caches = model(prompt)
    for i in range(n_tokens):
        end = T0 + i
        if not use_cache:
            logits, _ = model(out[:, :end])
        elif i > 0:
            logits, caches = model(out[:, end - 1:end], caches=caches)
        out[:, end] = sample_next_token(logits[:, -1, :], temperature=temperature, top_k=top_k,
                                        generator=generator)
    return out


def generate_list(model, prompt, n_tokens, temperature=1.0, top_k=None, generator=None,
                  use_cache=True):
    """Right: a list of columns, joined at the end; no_grad inside."""
    with torch.no_grad():
        columns, caches, fed = [prompt], None, prompt
        for _ in range(n_tokens):
            if use_cache:
                logits, caches = model(fed, caches)
            else:
                logits, _ = model(torch.cat(columns, dim=1))
            token = sample_next_token(logits[:, -1], temperature, top_k, generator)[:, None]
            columns.append(token)
            fed = token
        return torch.cat(columns, dim=1)


def _generate(model, prompt, n_tokens, temperature=1.0, top_k=None, generator=None,
              use_cache=True, *, position=-1, feed="newest", pass_on=True, only_new=False):
    tokens, caches = prompt, None
    for step in range(n_tokens):
        if not use_cache:
            logits, _ = model(tokens)
        elif feed == "whole":
            logits, caches = model(tokens, caches)
        elif feed == "stale":
            logits, new = model(tokens if step == 0 else tokens[:, -1:], caches)
            caches = new if caches is None else caches
        elif feed == "alone":
            logits, caches = model(tokens if step == 0 else tokens[:, -1:])
        elif feed == "never":
            logits, _ = model(tokens)
        else:
            logits, caches = model(tokens if caches is None else tokens[:, -1:], caches)
        if pass_on:
            new = sample_next_token(logits[:, position], temperature, top_k, generator)
        else:
            new = sample_next_token(logits[:, position], generator=generator)
        tokens = torch.cat([tokens, new[:, None]], dim=1)
    return tokens[:, prompt.shape[1]:] if only_new else tokens


def generate_only_new(model, prompt, n_tokens, temperature=1.0, top_k=None, generator=None,
                      use_cache=True):
    return _generate(model, prompt, n_tokens, temperature, top_k, generator, use_cache,
                     only_new=True)


def generate_first_position(model, prompt, n_tokens, temperature=1.0, top_k=None,
                            generator=None, use_cache=True):
    return _generate(model, prompt, n_tokens, temperature, top_k, generator, use_cache,
                     position=0)


def generate_whole_with_caches(model, prompt, n_tokens, temperature=1.0, top_k=None,
                               generator=None, use_cache=True):
    return _generate(model, prompt, n_tokens, temperature, top_k, generator, use_cache,
                     feed="whole")


def generate_stale_caches(model, prompt, n_tokens, temperature=1.0, top_k=None,
                          generator=None, use_cache=True):
    return _generate(model, prompt, n_tokens, temperature, top_k, generator, use_cache,
                     feed="stale")


def generate_newest_alone(model, prompt, n_tokens, temperature=1.0, top_k=None,
                          generator=None, use_cache=True):
    return _generate(model, prompt, n_tokens, temperature, top_k, generator, use_cache,
                     feed="alone")


def generate_cache_never_used(model, prompt, n_tokens, temperature=1.0, top_k=None,
                              generator=None, use_cache=True):
    return _generate(model, prompt, n_tokens, temperature, top_k, generator, use_cache,
                     feed="never")


def generate_always_cached(model, prompt, n_tokens, temperature=1.0, top_k=None,
                           generator=None, use_cache=True):
    """use_cache ignored: the cache every time (the tokens are the same)."""
    return SOLUTION["generate"](model, prompt, n_tokens, temperature, top_k, generator, True)


def generate_temperature_dropped(model, prompt, n_tokens, temperature=1.0, top_k=None,
                                 generator=None, use_cache=True):
    tokens, caches = prompt, None
    for _ in range(n_tokens):
        logits, caches = model(tokens if caches is None else tokens[:, -1:], caches)
        new = sample_next_token(logits[:, -1], top_k=top_k, generator=generator)
        tokens = torch.cat([tokens, new[:, None]], dim=1)
    return tokens


def generate_top_k_dropped(model, prompt, n_tokens, temperature=1.0, top_k=None,
                           generator=None, use_cache=True):
    tokens, caches = prompt, None
    for _ in range(n_tokens):
        logits, caches = model(tokens if caches is None else tokens[:, -1:], caches)
        if top_k == 1:  # greedy, handled apart: the argmax
            new = logits[:, -1].argmax(dim=-1)
        else:
            new = sample_next_token(logits[:, -1], temperature, generator=generator)
        tokens = torch.cat([tokens, new[:, None]], dim=1)
    return tokens


def generate_top_k_ignored(model, prompt, n_tokens, temperature=1.0, top_k=None,
                           generator=None, use_cache=True):
    """Never hands top_k on, not even for greedy decoding."""
    return _generate(model, prompt, n_tokens, temperature, None, generator, use_cache)


def generate_generator_dropped(model, prompt, n_tokens, temperature=1.0, top_k=None,
                               generator=None, use_cache=True):
    tokens, caches = prompt, None
    for _ in range(n_tokens):
        logits, caches = model(tokens if caches is None else tokens[:, -1:], caches)
        new = sample_next_token(logits[:, -1], temperature, top_k)
        tokens = torch.cat([tokens, new[:, None]], dim=1)
    return tokens


def generate_reseeding(model, prompt, n_tokens, temperature=1.0, top_k=None, generator=None,
                       use_cache=True):
    torch.manual_seed(0)  # "so that the text is reproducible"
    return generate_generator_dropped(model, prompt, n_tokens, temperature, top_k, None,
                                      use_cache)


def generate_reseeding_globally(model, prompt, n_tokens, temperature=1.0, top_k=None,
                                generator=None, use_cache=True):
    torch.manual_seed(0)  # "so that the text is reproducible"; the generator is passed on
    return SOLUTION["generate"](model, prompt, n_tokens, temperature, top_k, generator, use_cache)


def generate_reseeding_with_initial_seed(model, prompt, n_tokens, temperature=1.0, top_k=None,
                                         generator=None, use_cache=True):
    """Reseeds with the seed already set, "to stay reproducible": two calls in a row
    without a generator write the same text."""
    torch.manual_seed(torch.initial_seed())
    return SOLUTION["generate"](model, prompt, n_tokens, temperature, top_k, generator, use_cache)


def generate_own_generator(model, prompt, n_tokens, temperature=1.0, top_k=None, generator=None,
                           use_cache=True):
    generator = generator or torch.Generator().manual_seed(0)
    return SOLUTION["generate"](model, prompt, n_tokens, temperature, top_k, generator, use_cache)


WINDOW = 64  # the notebook's block_size, read as a global, as nanoGPT's generate crops


def generate_copying_generator(model, prompt, n_tokens, temperature=1.0, top_k=None,
                               generator=None, use_cache=True):
    """Samples every step from a fresh copy of the generator's state "so that the caller's
    generator is left as it was": every step draws the same random numbers."""
    tokens, caches = prompt, None
    with torch.no_grad():
        for _ in range(n_tokens):
            fed = tokens if caches is None else tokens[:, -1:]
            logits, new = model(fed, caches)
            caches = new if use_cache else None
            copy = None
            if generator is not None:
                copy = torch.Generator()
                copy.set_state(generator.get_state())
            token = SOLUTION["sample_next_token"](logits[:, -1], temperature, top_k, copy)
            tokens = torch.cat([tokens, token[:, None]], dim=1)
    return tokens


def generate_copy_per_call(model, prompt, n_tokens, temperature=1.0, top_k=None,
                           generator=None, use_cache=True):
    """Draws from one copy of the generator made at the start "to leave the caller's
    generator as it was": every call with that generator writes the same text."""
    if generator is not None:
        copy = torch.Generator()
        copy.set_state(generator.get_state())
        generator = copy
    return SOLUTION["generate"](model, prompt, n_tokens, temperature, top_k, generator, use_cache)


def generate_windowed(model, prompt, n_tokens, temperature=1.0, top_k=None, generator=None,
                      use_cache=True):
    tokens, caches = prompt, None
    for _ in range(n_tokens):
        if not use_cache:
            logits, _ = model(tokens[:, -WINDOW:])
        else:
            logits, caches = model(tokens if caches is None else tokens[:, -1:], caches)
        new = sample_next_token(logits[:, -1], temperature, top_k, generator)
        tokens = torch.cat([tokens, new[:, None]], dim=1)
    return tokens


def generate_sliding_in_place(model, prompt, n_tokens, temperature=1.0, top_k=None,
                              generator=None, use_cache=True):
    """Writes each new token into the prompt's last column as it goes (a "window")."""
    out = [prompt.clone()]
    tokens, caches = prompt.clone(), None
    for _ in range(n_tokens):
        logits, caches = model(tokens if caches is None else tokens[:, -1:], caches) \
            if use_cache else (model(torch.cat(out, 1))[0], None)
        new = sample_next_token(logits[:, -1], temperature, top_k, generator)
        prompt[:, -1] = new
        out.append(new[:, None])
        tokens = torch.cat([tokens, new[:, None]], dim=1)
    return torch.cat(out, dim=1)


GENERATE_BANKS = ExerciseBanks(
    solution=SOLUTION["generate"],
    correct=[generate_preallocated, generate_list],
    check=[
        (generate_only_new, "only the new tokens", "returns"),
        (generate_first_position, "first position", "next_token"),
        (generate_whole_with_caches, "whole text was fed again", "cache"),
        (generate_stale_caches, "caches of the first call", "cache"),
        (generate_newest_alone, "without the caches", "cache"),
        (generate_temperature_dropped, "temperature was not passed", "sampling"),
        (generate_top_k_dropped, "top_k was not passed", "sampling"),
        (generate_top_k_ignored, "with top_k=1 the tokens changed", "next_token"),
        (generate_generator_dropped, "pass generator=generator", "randomness"),
        (generate_reseeding, "reseeds", "randomness"),
        (generate_reseeding_globally, "two different global seeds", "randomness"),
        (generate_reseeding_with_initial_seed, "two different global seeds", "randomness"),
        (generate_own_generator, "two different global seeds", "randomness"),
        (generate_copy_per_call, "never moved on", "randomness"),
        (generate_copying_generator, "never moved on", "randomness"),
        (generate_windowed, "cut to its last tokens", "next_token"),
        (generate_sliding_in_place, "in place", "unchanged"),
        (generate_cache_never_used, "once per new token", "one_position"),
        (generate_always_cached, "use_cache=False was ignored", "one_position"),
    ],
    hidden=[
        (generate_only_new, "only the new tokens", "returns"),
        (generate_first_position, "first position", "next_token"),
        (generate_whole_with_caches, "whole text was fed again", "cache"),
        (generate_stale_caches, "caches of the first call", "cache"),
        (generate_newest_alone, "without the caches", "cache"),
        (generate_temperature_dropped, "temperature was not passed", "sampling"),
        (generate_top_k_dropped, "top_k was not passed", "sampling"),
        (generate_generator_dropped, "pass generator=generator", "randomness"),
        (generate_reseeding, "reseeds", "randomness"),
        (generate_reseeding_globally, "two different global seeds", "randomness"),
        (generate_reseeding_with_initial_seed, "two different global seeds", "randomness"),
        (generate_own_generator, "two different global seeds", "randomness"),
        (generate_copying_generator, "fresh copy of the generator's state", "randomness"),
        (generate_copy_per_call, "never moved on", "randomness"),
        (generate_windowed, None, "next_token"),
        (generate_sliding_in_place, "in place", "unchanged"),
    ],
)

BANKS = {"CausalSelfAttention": ATTENTION_BANKS, "Block": BLOCK_BANKS, "GPT": GPT_BANKS,
         "train_gpt": TRAIN_BANKS, "generate": GENERATE_BANKS}


# ---- special cases ----------------------------------------------------------------------------

def not_implemented(*args, **kwargs):
    raise NotImplementedError


class Unwritten(nn.Module):
    def __init__(self, *args):
        super().__init__()
        raise NotImplementedError


@pytest.mark.parametrize("grade", [grade_CausalSelfAttention, grade_Block, grade_GPT])
def test_a_blank_class_scores_zero(grade):
    with pytest.raises(NotImplementedError):
        grade(Unwritten)


@pytest.mark.parametrize("grade", [grade_train_gpt, grade_generate])
def test_a_blank_function_scores_zero(grade):
    with pytest.raises(NotImplementedError):
        grade(not_implemented)


def _with_gpt(function, gpt):
    """The student's function served with this GPT class in its namespace, as in a kernel."""
    return StudentFunction(LocalChannel({function.__name__: function, "GPT": gpt}),
                           function.__name__)


@pytest.mark.parametrize(("grade", "name"), [(grade_train_gpt, "train_gpt"),
                                             (grade_generate, "generate")])
def test_the_loop_and_generate_are_graded_with_the_students_gpt(grade, name):
    """A right answer with a GPT that disagrees with itself in pieces (positions not
    offset), or that is not written, is told to pass Exercise 3 first."""
    for gpt in (PositionsFromZero, Unwritten):
        message = assert_fails_naming(grade, _with_gpt(SOLUTION[name], gpt), "Exercise 3")
        assert "Pass the test of Exercise 3 first" in message
    grade(_with_gpt(SOLUTION[name], GPTZipped))  # another right GPT serves as well


def test_gradients_flow_through_a_forward_that_returns_a_pair():
    """The grader's rebuilt module passes gradients through the first of (out, cache)."""
    layer = StudentFunction(LocalChannel({"CausalSelfAttention": CausalSelfAttention}),
                            "CausalSelfAttention")(6, 2)
    out, cache = layer(torch.randn(1, 3, 6))
    out.sum().backward()
    assert layer.to_keys.weight.grad is not None and layer.to_keys.weight.grad.abs().sum() > 0
    assert not cache[0].requires_grad


def test_the_pasted_sampler_is_checked_and_a_missing_one_is_named():
    check_pasted_sampler(sample_next_token)
    with pytest.raises(NotImplementedError, match="tutorial 7"):
        check_pasted_sampler(not_implemented)



@pytest.mark.parametrize("gpt", [OneLayerLies, OneLayerFrozenBlocks])
@pytest.mark.parametrize(("grade", "name"), [(grade_train_gpt, "train_gpt"),
                                             (grade_generate, "generate")])
def test_a_gpt_that_is_another_model_at_the_graded_sizes_cannot_serve(grade, name, gpt):
    """A GPT right at the sizes of its own test but another model at the sizes the loop and
    generate are graded with is compared with the GPT computed from its weights, and
    refused, even for a right loop or generate."""
    message = assert_fails_naming(grade, _with_gpt(SOLUTION[name], gpt), "Exercise 3")
    assert "prescribed GPT" in message or "no gradient" in message


def train_fabricated(model, get_batch, steps, lr=3e-3):
    """Never trains: the first loss, then a made-up fall."""
    inputs, targets = get_batch()
    with torch.no_grad():
        first = _cross_entropy(model(inputs)[0], targets).item()
    return [first] * 4 + [first - 1.0] * (steps - 4)


def test_a_made_up_loss_curve_fails_with_a_right_gpt():
    assert_fails_naming(grade_train_gpt, _with_gpt(train_fabricated, GPT), "AdamW")


class HonestAtFirst(GPTBase):
    """The prescribed GPT for its first forward passes (those that check it), then a model
    in which the newest token alone decides and training moves nothing."""

    def forward(self, tokens, caches=None):
        self.passes = getattr(self, "passes", 0) + 1
        if self.passes <= 6:
            return super().forward(tokens, caches)
        logits, new = super().forward(tokens, caches)
        return self.head(self.ln_f(self.token_embedding(tokens))).detach(), new


@pytest.mark.parametrize(("grade", "function"), [(grade_train_gpt, train_fabricated),
                                                 (grade_generate, "generate_newest_alone")])
def test_a_gpt_that_changes_after_its_check_cannot_make_a_wrong_answer_pass(grade, function):
    """The references of the loop and of greedy decoding are computed here from the
    model's weights, so a model that lies after being checked only fails the answer."""
    function = globals()[function] if isinstance(function, str) else function
    with pytest.raises(CheckFailed):
        grade(_with_gpt(function, HonestAtFirst))
    grade(_with_gpt(SOLUTION["train_gpt" if grade is grade_train_gpt else "generate"], GPT))


# ---- an exercise graded on its own wiring when the one before it is wrong ---------------------

def _served(name, cls, **names):
    """The class ``name`` served as in a kernel whose namespace also holds ``names``."""
    return StudentFunction(LocalChannel({name: cls, **names}), name)


class BlockOfNoScale(BlockBase):
    """Right wiring around a wrong attention (scores not scaled), the class of that name."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        self.attn = NoScale(d_model, n_heads)


class NoResidualOfNoScale(BlockOfNoScale):
    forward = NoAttentionResidual.forward


def test_a_block_around_a_wrong_attention_is_graded_on_its_wiring():
    """With the student's attention wrong on its own, the Block is compared with its own
    wiring around that attention: right wiring passes, a missing residual is named."""
    grade_Block(_served("Block", BlockOfNoScale, CausalSelfAttention=NoScale))
    assert_fails_naming(grade_Block, _served("Block", NoResidualOfNoScale,
                                             CausalSelfAttention=NoScale),
                        "attention's residual is missing")


class GPTOfPostNorms(GPTBase):
    """Right wiring around wrong Blocks (post-norm), the class of that name."""

    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__(vocab_size, block_size, d_model, n_heads, n_layers)
        self.blocks = nn.ModuleList(PostNorm(d_model, n_heads) for _ in range(n_layers))


class GPTOfSkippedPostNorms(GPTOfPostNorms):
    """Its blocks skip their MLP inside the GPT: not what the (wrong) Block does alone."""

    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__(vocab_size, block_size, d_model, n_heads, n_layers)
        self.blocks = nn.ModuleList(FlaggedMLPBlock(d_model, n_heads) for _ in range(n_layers))
        for block in self.blocks:
            block.inside_gpt = True


class FlaggedMLPBlock(PostNorm):
    """Post-norm alone; inside a GPT that flags it, no MLP at all."""

    inside_gpt = False

    def forward(self, x, cache=None):
        if not self.inside_gpt:
            return super().forward(x, cache)
        a, cache = self.attn(self.ln_1(x), cache)
        return x + a, cache


def test_a_gpt_of_wrong_blocks_is_graded_on_its_wiring_and_the_blocks_alone():
    """With the student's Block wrong on its own, the GPT is compared with its own blocks
    (computed before it runs) and with fresh Blocks of that class given the same weights:
    right wiring passes; blocks that do something else inside the GPT are named."""
    grade_GPT(_served("GPT", GPTOfPostNorms, Block=PostNorm))
    assert_fails_naming(grade_GPT, _served("GPT", GPTOfSkippedPostNorms, Block=FlaggedMLPBlock),
                        "inside your GPT the blocks compute something else")


class GPTOfUnbuildableBlocks(GPTBase):
    """Blocks that cannot be built as Block(d_model, n_heads): the GPT cannot be checked
    against what its Block does alone, so it does not pass on its wiring only."""

    def __init__(self, vocab_size, block_size, d_model, n_heads, n_layers):
        super().__init__(vocab_size, block_size, d_model, n_heads, n_layers)
        self.blocks = nn.ModuleList(ThreeArgumentBlock(d_model, n_heads, 0)
                                    for _ in range(n_layers))


class ThreeArgumentBlock(BlockBase):
    def __init__(self, d_model, n_heads, dropout):
        super().__init__(d_model, n_heads)


def test_a_gpt_whose_block_cannot_run_alone_fails():
    assert_fails_naming(grade_GPT, _served("GPT", GPTOfUnbuildableBlocks,
                                           Block=ThreeArgumentBlock), "pass the Block's own test")

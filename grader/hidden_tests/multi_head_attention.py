"""Hidden tests for tutorial 03 (multi-head attention).

Reference implementations live here (grader side only), with switches that reproduce the
typical mistakes so that a matching wrong answer gets its mistake named.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from helpers.checks.multi_head_attention import WIDE_HEADS
from helpers.checks.qkv_attention import FULLY_MASKED_NAN, FULLY_MASKED_UNIFORM
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test

TOL = {"atol": 1e-5, "rtol": 1e-4}


# ---- references -----------------------------------------------------------------------------

def _split(x: torch.Tensor, n_heads: int, how: str = "ok") -> torch.Tensor:
    B, T, D = x.shape
    dh = D // n_heads
    if how == "no_transpose":  # reshape straight to (B, H, T, dh)
        return x.reshape(B, n_heads, T, dh)
    if how == "interleaved":  # channel c goes to head c % H
        return x.reshape(B, T, dh, n_heads).permute(0, 3, 1, 2)
    return x.reshape(B, T, n_heads, dh).transpose(1, 2)


def _merge(x: torch.Tensor, how: str = "ok") -> torch.Tensor:
    B, H, T, dh = x.shape
    if how == "no_transpose":
        return x.reshape(B, T, H * dh)
    if how == "interleaved":
        return x.permute(0, 2, 3, 1).reshape(B, T, H * dh)
    return x.transpose(1, 2).reshape(B, T, H * dh)


def _reference_attention(x: torch.Tensor, weights: dict[str, torch.Tensor], n_heads: int,
                         mask: torch.Tensor | None = None, *, split: str = "ok",
                         merge: str = "ok", scale: str = "d_head", softmax_dim: int = -1,
                         mask_mode: str = "ok", unify: bool = True, keys_from: str = "keys",
                         return_scores: bool = False, nan_to_zero: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    W = {name: w.double() for name, w in weights.items()}
    D = x.shape[-1]
    dh = D // n_heads
    q = _split(x @ W["q"].T, n_heads, split)
    k = _split(x @ W["q" if keys_from == "queries" else "k"].T, n_heads, split)
    v = _split(x @ W["v"].T, n_heads, split)
    scores = q @ k.transpose(-2, -1)
    if scale == "d_head":
        scores = scores / math.sqrt(dh)
    elif scale == "d_model":
        scores = scores / math.sqrt(D)
    elif scale == "d_head_unrooted":
        scores = scores / dh
    if mask is not None and mask_mode != "ignored":
        if mask_mode == "ok":
            scores = scores.masked_fill(~mask, float("-inf"))
        elif mask_mode == "inverted":
            scores = scores.masked_fill(mask, float("-inf"))
        elif mask_mode == "zero":
            scores = scores.masked_fill(~mask, 0.0)
        elif mask_mode == "finite":
            scores = scores.masked_fill(~mask, -1e9)
        elif mask_mode == "after_softmax":
            scores = scores  # handled below
    attn = torch.softmax(scores, dim=softmax_dim)
    if nan_to_zero:
        attn = attn.nan_to_num(0.0)  # a query with nothing allowed gets zero weights
    if mask is not None and mask_mode == "after_softmax":
        attn = attn.masked_fill(~mask, 0.0)
    mixed = _merge(attn @ v, merge)
    out = mixed @ W["o"].T + W["b"] if unify else mixed
    return out, (scores if return_scores else attn)


def _seeded_weights(d_model: int, seed: int) -> dict[str, torch.Tensor]:
    generator = fresh_generator(seed)
    scale = 1.5 / math.sqrt(d_model)  # scores of order 1-3: softmax neither flat nor one-hot
    weights = {name: scale * torch.randn(d_model, d_model, generator=generator)
               for name in ("q", "k", "v", "o")}
    weights["b"] = 0.2 * torch.randn(d_model, generator=generator)
    return weights


# ---- split_heads / merge_heads ---------------------------------------------------------------

@hidden_test
def grade_split_heads(split_heads: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("split_heads")
    generator = fresh_generator(301)
    for B, T, H, dh in ((2, 5, 3, 4), (1, 7, 2, 3), (3, 4, 4, 2), (2, 6, 1, 5), (1, 3, 6, 1)):
        x = torch.randn(B, T, H * dh, generator=generator)
        original = x.clone()
        out = check.tensor(check.call(split_heads, x, H), f"split_heads(x of {(B, T, H * dh)}, {H})")
        check.close(x, original, "x is left unchanged",
                    likely="x was changed in place; return a new tensor (or a view) instead")
        check.expect(tuple(out.shape) == (B, H, T, dh), f"split_heads(x, {H}) has shape "
                     f"{(B, H, T, dh)}", expected=f"shape {(B, H, T, dh)}",
                     got=f"shape {tuple(out.shape)}", diagnoses={
                         "the channels were split but the time and head axes were not swapped":
                             T != H and tuple(out.shape) == (B, T, H, dh)})
        mistakes = {}
        if H > 1 and T > 1:
            mistakes["reshaped straight to (B, H, T, d_head) without a transpose: positions "
                     "and heads get mixed"] = _split(x, H, "no_transpose")
        if H > 1 and dh > 1:
            mistakes["channels dealt to heads round-robin (viewed as (d_head, H) instead of "
                     "(H, d_head)): each head must take a block of consecutive channels"] = \
                _split(x, H, "interleaved")
        check.close(out, _split(x, H), f"split_heads for B={B}, T={T}, H={H}, d_head={dh}",
                    mistakes=mistakes, dims=("batch", "head", "position", "channel"))
    check.passed()


@hidden_test
def grade_merge_heads(merge_heads: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("merge_heads")
    generator = fresh_generator(302)
    for B, H, T, dh in ((2, 3, 5, 4), (1, 2, 7, 3), (3, 4, 4, 2), (2, 1, 6, 5), (1, 6, 3, 1)):
        x = torch.randn(B, H, T, dh, generator=generator)
        original = x.clone()
        out = check.tensor(check.call(merge_heads, x), f"merge_heads(x of {(B, H, T, dh)})")
        check.close(x, original, "x is left unchanged",
                    likely="x was changed in place; return a new tensor (or a view) instead")
        mistakes = {}
        if H > 1 and T > 1:
            mistakes["merged by reshaping (B, H, T, d_head) straight to (B, T, H * d_head) "
                     "without transposing back: positions and heads get mixed"] = \
                _merge(x, "no_transpose")
        if H > 1 and dh > 1:
            mistakes["heads merged in the wrong order (channels interleaved head by head): "
                     "keep each head's d_head numbers together, head 0 first"] = \
                _merge(x, "interleaved")
        check.shape(out, (B, T, H * dh), f"merge_heads(x of {(B, H, T, dh)})")
        check.close(out, _merge(x), f"merge_heads for B={B}, H={H}, T={T}, d_head={dh}",
                    mistakes=mistakes, dims=("batch", "position", "channel"))
    # A non-contiguous input, as it comes out of attention in practice.
    x = torch.randn(2, 5, 3, 4, generator=generator).transpose(1, 2)  # (2, 3, 5, 4), strided
    out = check.call(merge_heads, x)
    check.close(out, _merge(x), "merge_heads of a non-contiguous (transposed) tensor")
    check.passed()


# ---- MultiHeadSelfAttention ------------------------------------------------------------------

def _install(check: HiddenCheck, layer: nn.Module, weights: dict[str, torch.Tensor],
             n_heads: int) -> None:
    for member, key, bias in (("to_queries", "q", False), ("to_keys", "k", False),
                              ("to_values", "v", False), ("unify_heads", "o", True)):
        linear = getattr(layer, member, None)
        check.expect(isinstance(linear, nn.Linear), f"member `{member}` is an nn.Linear",
                     expected=f"self.{member} = nn.Linear(...)", got=repr(type(linear)))
        d = weights[key].shape[0]
        shape = tuple(linear.weight.shape)
        check.expect(shape == (d, d), f"`{member}` maps d_model -> d_model",
                     expected=f"weight ({d}, {d})", got=f"weight {shape}",
                     diagnoses={WIDE_HEADS: shape in ((d * n_heads, d), (d, d * n_heads))})
        check.expect((linear.bias is not None) == bias,
                     f"`{member}` {'has a' if bias else 'has no'} bias",
                     expected="a bias" if bias else "bias=False",
                     got="a bias" if linear.bias is not None else "no bias")
        with torch.no_grad():
            linear.weight.copy_(weights[key])
            if bias:
                linear.bias.copy_(weights["b"])


class _LazyMistakes(Mapping):
    """Mistake description -> wrong output, computed only when a comparison has failed."""

    def __init__(self, variants: dict[str, dict], compute: Callable[[dict], torch.Tensor]):
        self._variants, self._compute = variants, compute

    def __getitem__(self, words: str) -> torch.Tensor:
        return self._compute(self._variants[words])

    def __iter__(self) -> Iterator[str]:
        return iter(self._variants)

    def __len__(self) -> int:
        return len(self._variants)


def _mistakes(x, weights, H, mask, part: str) -> Mapping[str, torch.Tensor]:
    """Descriptions of typical mistakes -> what they would return (``part``: out or weights)."""
    index = 0 if part == "out" else 1
    variants: dict[str, dict] = {
        "heads split by a reshape/view to (B, H, T, d_head) without transpose: positions and "
        "heads get mixed": {"split": "no_transpose"},
        "heads merged without transposing back (reshape of (B, H, T, d_head) straight to "
        "(B, T, d_model))": {"merge": "no_transpose"},
        "heads merged in the wrong order (channels interleaved)": {"merge": "interleaved"},
        "heads split round-robin over channels (view as (d_head, H) instead of (H, d_head))":
            {"split": "interleaved"},
        "scores scaled by sqrt(d_model) instead of sqrt(d_head)": {"scale": "d_model"},
        "scores not scaled: divide by sqrt(d_head)": {"scale": "none"},
        "scores divided by d_head instead of sqrt(d_head)": {"scale": "d_head_unrooted"},
        "softmax over the wrong axis (queries, dim=-2): each query's weights must sum to 1 "
        "over the keys (dim=-1)": {"softmax_dim": -2},
        "softmax over the wrong axis (heads, dim=1)": {"softmax_dim": 1},
        "unify_heads skipped: the merged heads must go through the output map": {"unify": False},
        "keys computed with to_queries instead of to_keys": {"keys_from": "queries"},
        "weights returned before softmax (the scores)": {"return_scores": True},
    }
    if mask is not None:
        variants.update({
            "mask ignored: positions where the mask is False must get zero weight":
                {"mask_mode": "ignored"},
            "mask inverted: True means 'may attend', so fill where the mask is False":
                {"mask_mode": "inverted"},
            "masked scores set to 0 instead of -inf (they still get weight after the softmax)":
                {"mask_mode": "zero"},
            "weights zeroed after the softmax without renormalising (fill the scores with "
            "-inf before the softmax)": {"mask_mode": "after_softmax"},
        })
        if not bool(mask.any(-1).all()):
            variants.update({
                FULLY_MASKED_NAN: {"nan_to_zero": False},
                FULLY_MASKED_UNIFORM: {"mask_mode": "finite"},
            })
    return _LazyMistakes(
        variants, lambda flags: _reference_attention(x, weights, H, mask, **flags)[index])


@hidden_test
def grade_MultiHeadSelfAttention(attention_cls: type[nn.Module]) -> None:
    check = HiddenCheck("MultiHeadSelfAttention")
    generator = fresh_generator(303)
    cases = []  # (B, T, d_model, H, mask description, mask)
    cases.append((2, 5, 12, 3, "no mask", None))
    cases.append((1, 7, 8, 2, "no mask", None))
    cases.append((3, 4, 8, 4, "no mask", None))
    # Random (B, H, T, T) mask with no fully masked row, and none when inverted either (so an
    # inverted mask gives finite, recognisable weights). It comes before the causal mask,
    # whose inversion leaves the last row with nothing to attend to.
    B, H, T = 2, 2, 5
    random_mask = torch.rand(B, H, T, T, generator=generator) < 0.5
    eye = torch.eye(T, dtype=torch.bool)
    nxt = torch.roll(eye, 1, dims=1)
    random_mask = (random_mask | eye) & ~nxt
    cases.append((B, T, 8, H, "a random (B, H, T, T) mask", random_mask))
    T = 6
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    cases.append((2, T, 12, 3, "a causal (T, T) mask", causal))
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[0, 4:] = False
    keep[1, 0] = False
    cases.append((2, 6, 12, 3, "a (B, 1, 1, T) padding mask", keep.view(2, 1, 1, 6)))
    nothing = torch.tril(torch.ones(5, 5, dtype=torch.bool)).repeat(2, 1, 1, 1)
    nothing[1, 0, 3] = False  # query 3 of sequence 1 may attend to nothing
    cases.append((2, 5, 8, 2, "a mask with a query that may attend to nothing", nothing))

    for index, (B, T, d_model, H, words, mask) in enumerate(cases):
        weights = _seeded_weights(d_model, seed=310 + index)
        with torch.random.fork_rng(devices=[]):
            layer = check.call(attention_cls, d_model, H)
        _install(check, layer, weights, H)
        x = torch.randn(B, T, d_model, generator=generator)
        original = x.clone()
        with torch.no_grad():
            result = check.call(layer, x) if mask is None else check.call(layer, x, mask=mask)
        check.close(x, original, "x is left unchanged",
                    likely="x was changed in place; return a new tensor (or a view) instead")
        check.expect(isinstance(result, tuple | list) and len(result) == 2,
                     "forward returns (out, weights)", expected="a pair (out, weights)",
                     got=repr(type(result)))
        out, attn = (check.tensor(v, name) for v, name in zip(result, ("out", "weights"),
                                                             strict=True))
        check.expect(tuple(attn.shape) == (B, H, T, T), f"weights for B={B}, T={T}, H={H} have "
                     f"shape {(B, H, T, T)}", expected=f"shape {(B, H, T, T)}",
                     got=f"shape {tuple(attn.shape)}", diagnoses={
                         "the weights were averaged over the heads: return every head's weights":
                             tuple(attn.shape) == (B, T, T)})
        check.shape(out, (B, T, d_model), f"out for B={B}, T={T}, d_model={d_model}")
        ref_out, ref_attn = _reference_attention(x, weights, H, mask)
        case = f"d_model={d_model}, H={H}, {words}"
        check.close(attn, ref_attn, f"attention weights ({case})",
                    mistakes=_mistakes(x, weights, H, mask, "weights"),
                    dims=("batch", "head", "query", "key"), **TOL)
        check.close(out, ref_out, f"output ({case}; the weights already agree)",
                    mistakes=_mistakes(x, weights, H, mask, "out"),
                    dims=("batch", "position", "channel"), **TOL)
    check.passed()

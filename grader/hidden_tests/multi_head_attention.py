"""Hidden tests for tutorial 03 (multi-head attention).

Reference implementations live here (grader side only), with switches that reproduce the
typical mistakes so that a matching wrong answer gets its mistake named. Every input is
drawn afresh (``fresh_generator``): sizes, tensors, weights, masks and seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from helpers.checks.multi_head_attention import (
    BATCH_SQUEEZED,
    DEVICE_INSIDE,
    DROPOUT,
    FIXED_HEADS,
    MASK_CAUSES,
    MERGE_SQUEEZED,
    SCALED_BY_D_HEAD,
    SCORES_TRANSPOSED,
    SQUEEZED,
    WRONG_AXES_MERGE,
    check_dtype,
    check_gradients,
    check_init,
    check_large,
    check_members,
    dropped_out,
    forward_pair,
    set_large_weights,
    set_weights,
)
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
                         return_scores: bool = False, nan_to_zero: bool = True,
                         transposed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    W = {name: w.double() for name, w in weights.items()}
    D = x.shape[-1]
    dh = D // n_heads
    q = _split(x @ W["q"].T, n_heads, split)
    k = _split(x @ W["q" if keys_from == "queries" else "k"].T, n_heads, split)
    v = _split(x @ W["v"].T, n_heads, split)
    scores = k @ q.transpose(-2, -1) if transposed else q @ k.transpose(-2, -1)
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


# ---- split_heads / merge_heads ---------------------------------------------------------------

def _sizes(generator: torch.Generator) -> tuple[int, int, int, int]:
    """(B, T, H, d_head), all above 1 and T ≠ H, so that every mix-up shows in the shape or
    the numbers."""
    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=generator))

    H, dh = randint(2, 5), randint(2, 6)
    T = H + randint(1, 5)
    return randint(2, 4), T, H, dh


def _split_mistakes(x: torch.Tensor, H: int) -> dict[str, torch.Tensor]:
    return {
        "reshaped straight to (B, H, T, d_head) without a transpose: positions and heads get "
        "mixed": _split(x, H, "no_transpose"),
        "channels dealt to heads round-robin (viewed as (d_head, H) instead of (H, d_head)): "
        "each head must take a block of consecutive channels": _split(x, H, "interleaved"),
    }


@hidden_test
def grade_split_heads(split_heads: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("split_heads")
    generator = fresh_generator(301)
    results = []
    check.clause("shape")
    for B, T, H, dh in [_sizes(generator), _sizes(generator)]:
        x = torch.randn(B, T, H * dh, generator=generator)
        out = check.tensor(check.call(split_heads, x, H),
                           f"split_heads(x of {(B, T, H * dh)}, {H})")
        check.expect(tuple(out.shape) == (B, H, T, dh), f"split_heads(x of {(B, T, H * dh)}, "
                     f"{H}) has shape {(B, H, T, dh)}", expected=f"shape {(B, H, T, dh)}",
                     got=f"shape {tuple(out.shape)}", diagnoses={
                         "the channels were split but the time and head axes were not swapped":
                             tuple(out.shape) == (B, T, H, dh)})
        results.append((x, H, out))
    check.clause("values")
    for x, H, out in results:
        B, T, D = x.shape
        check.close(out, _split(x, H), f"split_heads for B={B}, T={T}, H={H}, "
                    f"d_head={D // H}", mistakes=_split_mistakes(x, H),
                    dims=("batch", "head", "position", "channel"))
    check.clause("arguments")
    B, T, H, dh = _sizes(generator)
    many = torch.randn(B, T, H * dh, generator=generator)
    one = torch.randn(1, T, H * dh, generator=generator)  # a batch of one
    for x, heads in ((many, 1), (many, H * dh), (one, H)):
        out = check.tensor(check.call(split_heads, x, heads), f"split_heads(x, {heads})")
        wanted = (x.shape[0], heads, T, H * dh // heads)
        check.expect(tuple(out.shape) == wanted, f"split_heads(x of {tuple(x.shape)}, {heads}) "
                     f"has shape {wanted}", expected=f"shape {wanted}",
                     got=f"shape {tuple(out.shape)}", diagnoses={SQUEEZED: out.dim() == 3})
        check.close(out, _split(x, heads), f"split_heads(x of {tuple(x.shape)}, {heads})",
                    dims=("batch", "head", "position", "channel"))
    check.clause("dtype")
    check.dtype_follows(split_heads, many, H, what=f"split_heads(x, {H})")
    check.clause("device")
    check.device_follows(split_heads, one, H, what=f"split_heads(x, {H})")
    check.passed()


@hidden_test
def grade_merge_heads(merge_heads: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("merge_heads")
    generator = fresh_generator(302)
    B, T, H, dh = _sizes(generator)
    _, T1, _, dh1 = _sizes(generator)
    _, T2, H2, _ = _sizes(generator)
    cases = [(B, H, T, dh), (1, 1, T1, dh1), (B, H2 * 2, T2, 1)]  # one head; one channel each
    inputs = [torch.randn(*case, generator=generator) for case in cases]
    # A non-contiguous input, as attention can leave it (a transposed view).
    inputs.append(torch.randn(B, T, H, dh, generator=generator).transpose(1, 2))
    check.clause("shape")
    outs = []
    for x in inputs:
        b, h, t, d = x.shape
        out = check.tensor(check.call(merge_heads, x), f"merge_heads(x of {(b, h, t, d)})")
        check.expect(tuple(out.shape) == (b, t, h * d), f"merge_heads(x of {(b, h, t, d)}) has "
                     f"shape {(b, t, h * d)}", expected=f"shape {(b, t, h * d)}",
                     got=f"shape {tuple(out.shape)}", diagnoses={
                         "the time axis was moved back but the last two axes were not joined "
                         "into one": tuple(out.shape) == (b, t, h, d),
                         MERGE_SQUEEZED: out.dim() < 3})
        outs.append(out)
    check.clause("values")
    for x, out in zip(inputs, outs, strict=True):
        b, h, t, d = x.shape
        mistakes = {}
        if h > 1 and t > 1:
            mistakes["merged by reshaping (B, H, T, d_head) straight to (B, T, H * d_head) "
                     "without transposing back: positions and heads get mixed"] = \
                _merge(x, "no_transpose")
        if h > 1 and d > 1:
            mistakes["heads merged in the wrong order (channels interleaved head by head): "
                     "keep each head's d_head numbers together, head 0 first"] = \
                _merge(x, "interleaved")
        if d > 1 and t > 1:
            mistakes[WRONG_AXES_MERGE] = x.transpose(1, 3).reshape(b, t, h * d)
        layout = "" if x.is_contiguous() else ", a non-contiguous (transposed) input"
        check.close(out, _merge(x), f"merge_heads for B={b}, H={h}, T={t}, d_head={d}{layout}",
                    mistakes=mistakes, dims=("batch", "position", "channel"))
    check.clause("dtype")
    check.dtype_follows(merge_heads, inputs[0], what="merge_heads(x)")
    check.clause("device")
    check.device_follows(merge_heads, inputs[-1], what="merge_heads(x)")
    check.passed()


# ---- MultiHeadSelfAttention ------------------------------------------------------------------

def _weights_of(layer: nn.Module) -> dict[str, torch.Tensor]:
    """The layer's maps as the reference uses them."""
    return {"q": layer.to_queries.weight.detach(), "k": layer.to_keys.weight.detach(),
            "v": layer.to_values.weight.detach(), "o": layer.unify_heads.weight.detach(),
            "b": layer.unify_heads.bias.detach()}


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
        SCALED_BY_D_HEAD: {"scale": "d_head_unrooted"},
        SCORES_TRANSPOSED: {"transposed": True},
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



def _two_sided_mask(generator: torch.Generator, B: int, H: int, T: int) -> torch.Tensor:
    """A random (B, H, T, T) mask in which every query may attend to itself and not to the
    next position: no row is empty, inverted or not."""
    mask = torch.rand(B, H, T, T, generator=generator) < 0.5
    eye = torch.eye(T, dtype=torch.bool)
    return (mask | eye) & ~torch.roll(eye, 1, dims=1)


def _padding_mask(generator: torch.Generator, B: int, T: int) -> torch.Tensor:
    """(B, 1, 1, T): each sequence has 1..T-1 real keys, padded at the end or the start."""
    keep = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        length = int(torch.randint(1, T, (1,), generator=generator))
        if bool(torch.rand(1, generator=generator) < 0.5):
            keep[b, T - length:] = True
        else:
            keep[b, :length] = True
    return keep.view(B, 1, 1, T)


def _compare(check: HiddenCheck, layer: nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
             H: int, words: str) -> None:
    """Run the layer and compare its weights and output with the reference."""
    B, T, d_model = x.shape
    out, attn = forward_pair(check, layer, x, mask, words)
    check.expect(tuple(attn.shape) == (B, H, T, T), f"weights for B={B}, T={T}, H={H} have "
                 f"shape {(B, H, T, T)}", expected=f"shape {(B, H, T, T)}",
                 got=f"shape {tuple(attn.shape)}", diagnoses={
                     "the weights were averaged over the heads: return every head's weights":
                         tuple(attn.shape) == (B, T, T),
                     FIXED_HEADS: attn.dim() == 4 and attn.shape[1] != H})
    check.shape(out, (B, T, d_model), f"out for B={B}, T={T}, d_model={d_model}")
    weights = _weights_of(layer)
    ref_out, ref_attn = _reference_attention(x, weights, H, mask)
    case = f"d_model={d_model}, H={H}, {words}"
    check.close(attn, ref_attn, f"attention weights ({case})",
                mistakes=_mistakes(x, weights, H, mask, "weights"),
                diagnoses={DROPOUT: lambda: dropped_out(attn, ref_attn)},
                dims=("batch", "head", "query", "key"), **TOL)
    check.close(out, ref_out, f"output ({case}; the weights already agree)",
                mistakes=_mistakes(x, weights, H, mask, "out"),
                diagnoses={DROPOUT: lambda: dropped_out(out, ref_out)},
                dims=("batch", "position", "channel"), **TOL)


@hidden_test
def grade_MultiHeadSelfAttention(attention_cls: type[nn.Module]) -> None:
    check = HiddenCheck("MultiHeadSelfAttention")
    check.error_causes.extend(MASK_CAUSES)
    generator = fresh_generator(303)
    seeds = torch.randperm(2**20, generator=generator)[:4].tolist()

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=generator))

    d_model, H = 16, 2
    check.clause("members")
    layer = check.call_seeded(seeds[0], attention_cls, d_model, H)
    check_members(check, layer, d_model, H)
    set_weights(layer, generator)
    B, T = randint(2, 4), randint(4, 8)
    x = torch.randn(B, T, d_model, generator=generator)

    check.clause("shape")
    out, attn = forward_pair(check, layer, x, None, "x")
    check.expect(tuple(attn.shape) == (B, H, T, T), f"weights for B={B}, T={T}, H={H} have "
                 f"shape {(B, H, T, T)}", expected=f"shape {(B, H, T, T)}",
                 got=f"shape {tuple(attn.shape)}", diagnoses={
                     "the weights were averaged over the heads: return every head's weights":
                         tuple(attn.shape) == (B, T, T),
                     FIXED_HEADS: attn.dim() == 4 and attn.shape[1] != H})
    check.shape(out, (B, T, d_model), f"out for B={B}, T={T}, d_model={d_model}")
    one = torch.randn(1, T, d_model, generator=generator)  # a batch of one
    out_1, attn_1 = forward_pair(check, layer, one, None, "x, a batch of one")
    for name, value, wanted in (("out", out_1, (1, T, d_model)),
                                ("weights", attn_1, (1, H, T, T))):
        check.expect(tuple(value.shape) == wanted, f"{name} for a batch of one has shape "
                     f"{wanted}", expected=f"shape {wanted}", got=f"shape {tuple(value.shape)}",
                     diagnoses={BATCH_SQUEEZED: value.dim() == len(wanted) - 1})

    check.clause("values")
    _compare(check, layer, x, None, H, "no mask")
    _compare(check, layer, one, None, H, "no mask, a batch of one")

    check.clause("mask")
    # The random two-sided mask first: its inversion leaves no query without keys, so an
    # inverted mask gives finite, recognisable weights (an inverted causal mask does not).
    _compare(check, layer, x, _two_sided_mask(generator, B, H, T), H,
             "a random (B, H, T, T) mask")
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    _compare(check, layer, x, causal, H, "a causal (T, T) mask")
    _compare(check, layer, x, _padding_mask(generator, B, T), H, "a (B, 1, 1, T) padding mask")
    nothing = causal.repeat(B, 1, 1, 1)
    nothing[randint(0, B), 0, randint(1, T)] = False  # a query that may attend to nothing
    _compare(check, layer, x, nothing, H, "a mask with a query that may attend to nothing")

    check.clause("large")
    large = check.call_seeded(seeds[2], attention_cls, d_model, H)
    set_large_weights(large, generator)
    x_large = 10 * torch.randn(B, T, d_model, generator=generator)
    for mask, words in ((None, "no mask"), (causal, "a causal mask"),
                        (_padding_mask(generator, B, T), "a (B, 1, 1, T) padding mask")):
        check_large(check, large, x_large, mask,
                    _reference_attention(x_large, _weights_of(large), H, mask),
                    f"x of size about 10, scores in the hundreds, {words}")

    check.clause("arguments")
    for width, heads in ((6 * randint(1, 3), 3), (randint(5, 13), 1), (randint(3, 7), 0)):
        heads = heads or width  # 0: as many heads as channels, one channel each
        other = check.call_seeded(seeds[1], attention_cls, width, heads)
        check_members(check, other, width, heads)
        set_weights(other, generator)
        x_other = torch.randn(B, T, width, generator=generator)
        _compare(check, other, x_other, causal, heads,
                 f"a causal mask, {heads} head{'s' if heads > 1 else ''}")

    check.clause("init")
    heads = randint(2, 5)
    first = randint(0, 2**30)
    check_init(check, attention_cls, (first, first + randint(1, 1000)),
               heads * randint(12, 20), heads)

    check.clause("dtype")
    wide = check.call_seeded(seeds[3], attention_cls, d_model, H)
    set_weights(wide, generator)
    wide.double()
    padding = _padding_mask(generator, B, T)
    check_dtype(check, wide, x, padding,
                _reference_attention(x, _weights_of(wide), H, padding))

    check.clause("device")
    on_meta = check.call_seeded(seeds[0], attention_cls, d_model, H).to("meta")
    check.device_follows(on_meta, x, what="layer(x)", likely=DEVICE_INSIDE)
    check.device_follows(on_meta, x, mask=causal, what="layer(x, mask=causal)",
                         likely=DEVICE_INSIDE)

    check.clause("gradients")
    check_gradients(check, layer, x, causal, nothing)
    check.passed()

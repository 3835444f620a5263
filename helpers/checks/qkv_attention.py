"""Self-checks for tutorial 02 (queries, keys and values).

They test properties (shapes, rows that sum to one, masks respected, labels that agree with
the data) and agreement with PyTorch's ``F.scaled_dot_product_attention``; they never contain
an exercise's solution. A likely mistake is named only when the result has its signature
(it matches what PyTorch's function gives with that mistake built in, or a property that
only that mistake breaks); otherwise the message says what differs and where.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from helpers.checks.calls import random_state_kept, rng_digest
from helpers.checks.framework import SelfCheck, describe, shape_difference, student_line

QKV_DIMS = ("batch", "query", "key")
BMM = ("torch.bmm accepts 3-D tensors only: use @ (torch.matmul), which treats every leading "
       "dimension as a batch dimension")
ONLY_2D = ("the function works for 2-D inputs (no batch dimension) but fails with one: something "
           "there handles exactly two axes, like `.T`, which reverses every axis, or torch.mm; "
           "transpose only the last two axes and multiply with @")
ONLY_3D = ("the function works for 3-D inputs but fails with two leading dimensions: an axis "
           "was counted from the front (`.transpose(1, 2)`, `shape[1]`); count from the end, "
           "`.transpose(-2, -1)`, so that any number of leading dimensions works")
BOOLEAN_INDEX = ("boolean indexing (`scores[~mask] = ...`) needs a mask of exactly the scores' "
                 "shape: it does not broadcast a (Tq, Tk) mask over the batch; use "
                 "scores.masked_fill(~mask, ...) or torch.where(mask, scores, ...)")
SQUEEZED = ("an axis of size 1 was dropped (`.squeeze()` removes every axis of size 1, "
            "`.squeeze(0)` a batch of one): return every axis the inputs have")
ZERO_FILL = "forbidden scores were set to 0 instead of -inf: e^0 = 1 still gives them weight"
FULLY_MASKED_NAN = ("a fully masked row comes out of the softmax as nan (every score is -inf, "
                    "0/0): set the weights of such rows to 0")
FULLY_MASKED_UNIFORM = ("a large finite fill value (like -1e9) spreads a fully masked row "
                        "uniformly over the forbidden keys: fill with -inf, then set the nan "
                        "rows to 0")
FULLY_MASKED_ADDITIVE = ("a penalty added to the forbidden scores (like (1 - mask) * -1e4) "
                         "shifts a fully masked row as a whole, and a softmax ignores a shift: "
                         "that row gets the unmasked weights; fill with -inf, then set the nan "
                         "rows to 0")
SCALE_BY_DV = "the scores were divided by sqrt(d_v), V's width, instead of sqrt(d_k)"
SCALE_BY_SHAPE_1 = ("the scale was read from Q.shape[1], which is d_k only for 2-D inputs: "
                    "take the last axis, Q.shape[-1]")
OVERFLOW = ("exp / sum of scores in the hundreds overflows to inf (inf / inf = nan), and rows "
            "of very negative scores underflow to 0 / 0: use torch.softmax, which subtracts "
            "each row's maximum first")
UNDERFLOW = ("the maximum subtracted was the largest score of the whole tensor, not of each "
             "row: in rows far below it every exp(...) underflows to 0 and 0 / 0 = nan; "
             "subtract each row's own maximum (amax(dim=-1, keepdim=True))")
FLOAT32_INSIDE = ("float64 inputs give a float64 result, but with float32 precision: something "
                  "on the way was computed in float32 (`.float()`, dtype=torch.float32, a "
                  "float32 tensor you made); keep the input's dtype throughout")
NO_GRAPH = ("the result carries no gradient: the function ran under torch.no_grad(), or the "
            "result was detached (.detach(), a NumPy round trip)")
WEIGHTS_DETACHED = ("V gets a gradient but Q and K do not: the weights were detached on their "
                    "way (.detach(), .data, a NumPy round trip); keep them in the graph")
SDPA_BUILTIN = "scaled_dot_product_attention"
SCALE_BY_TK = ("the scores were divided by sqrt(Tk), the number of keys, instead of sqrt(d_k), "
               "the width of a query or key")
SCALE_AFTER_SOFTMAX = ("the weights were divided by sqrt(d_k) after the softmax: scale the "
                       "scores before it, so that the weights still sum to 1")
SCALE_BY_D_K = "the scores were divided by d_k instead of sqrt(d_k) (or by sqrt(d_k) twice)"
SCALE_FROM_FRONT = ("the scale was read from an axis counted from the front (`Q.shape[2]`, "
                    "`Q.size(2)`), which is d_k only for 3-D inputs: take the last axis, "
                    "Q.shape[-1], so that any number of leading dimensions works")
OUT_BEFORE_FIX = ("out was computed from the weights before their nan rows were set to 0: "
                  "compute out = weights @ V from the repaired weights")
NAN_PENALTY = ("every weight came out 0 (or nan), although every row keeps an allowed key: a "
               "penalty made as mask * -inf gives 0 · (-inf) = nan on the allowed keys too, "
               "and one nan spoils its whole row; fill the forbidden scores instead, "
               "scores.masked_fill(~mask, float(\"-inf\")) or torch.where")


def nothing_left(weights: Any) -> bool:
    """The signature of a mask * -inf penalty: every weight is 0 (nan rows set to 0) or nan."""
    weights = torch.as_tensor(weights).detach().double()
    return weights.numel() > 0 and bool(((weights == 0) | weights.isnan()).all())


def out_with_nan_rows(expected_out: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """What out = weights @ V gives when taken before the fully masked ``rows`` of the
    weights were set to 0: nan in those rows, the others right."""
    out = expected_out.clone()
    out[..., rows, :] = float("nan")
    return out


@contextlib.contextmanager
def crash_causes(check: SelfCheck, causes: Mapping[str, Callable[[str], bool]]
                 ) -> Iterator[None]:
    """While inside, a crash of the student's code whose message (``"Type: message"``)
    matches one of ``causes``' signatures is reported with that cause as the likely mistake;
    any other crash is reported as :meth:`SelfCheck.crashed` does."""
    def crashed(fn: Callable[..., Any], error: BaseException, args: tuple,
                kwargs: dict) -> None:
        text = f"{type(error).__name__}: {error}"
        for cause, signature in causes.items():
            if signature(text):
                line = student_line(error)
                check.fail(f"calling {getattr(fn, '__name__', check.name)} runs without an "
                           "error", expected="a result", got=text, likely=cause,
                           where=f"your line {line[0]}: `{line[1]}`" if line else None)
        type(check).crashed(check, fn, error, args, kwargs)

    check.crashed = crashed  # type: ignore[method-assign]
    try:
        yield
    finally:
        del check.crashed


def works_on_slice(attention: Callable[..., tuple], Q: torch.Tensor, K: torch.Tensor,
                   V: torch.Tensor, dims: int) -> bool:
    """Whether ``attention`` gives PyTorch's result on the first ``dims``-D slice of the
    inputs (2: no batch dimension, 3: one)."""
    first = (0,) * (Q.dim() - dims)
    try:
        out, _ = attention(Q[first], K[first], V[first])
        return bool(torch.allclose(torch.as_tensor(out).double(), F.scaled_dot_product_attention(
            Q[first], K[first], V[first]).double(), atol=1e-5))
    except Exception:  # noqa: BLE001 - any failure means "no"
        return False


def attention_crashes(attention: Callable[..., tuple], Q: torch.Tensor, K: torch.Tensor,
                      V: torch.Tensor) -> dict[str, Callable[[str], bool]]:
    """The causes a crash of ``attention`` on batched inputs can be recognised by."""
    return {BMM: lambda text: "3D" in text or "bmm" in text,
            BOOLEAN_INDEX: lambda text: "shape of the mask" in text,
            ONLY_2D: lambda text: Q.dim() > 2 and works_on_slice(attention, Q, K, V, 2),
            ONLY_3D: lambda text: Q.dim() > 3 and works_on_slice(attention, Q, K, V, 3)}


def call_attention(check: SelfCheck, attention: Callable[..., tuple], Q: torch.Tensor,
                   K: torch.Tensor, V: torch.Tensor, what: str, **kwargs: Any
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``attention(Q, K, V, **kwargs)`` through the check; the result must be a pair of
    tensors (out, weights)."""
    with crash_causes(check, attention_crashes(attention, Q, K, V)):
        result = check.call(attention, Q, K, V, **kwargs)
    check.expect(isinstance(result, tuple | list) and len(result) == 2,
                 f"{what} returns a pair (out, weights)", expected="a tuple (out, weights)",
                 got=describe(result))
    out, weights = result
    check.tensor(out, f"{what}: out")
    check.tensor(weights, f"{what}: weights")
    return out, weights


def dropped_size_one(got: tuple[int, ...], wanted: tuple[int, ...]) -> bool:
    """Is ``got`` the shape ``wanted`` with some of its axes of size 1 left out?"""
    if len(got) >= len(wanted):
        return False
    kept = 0
    for size in wanted:
        if kept < len(got) and got[kept] == size:
            kept += 1
        elif size != 1:
            return False
    return kept == len(got)


def shape_kept(check: SelfCheck, value: torch.Tensor, wanted: tuple[int, ...], what: str
               ) -> None:
    """``value`` has shape ``wanted``; a shape with its axes of size 1 dropped is named."""
    got = tuple(value.shape)
    check.expect(got == wanted, f"{what} has shape {wanted}", expected=f"shape {wanted}",
                 got=f"shape {got}", diagnoses={SQUEEZED: dropped_size_one(got, wanted)})


def _builtin(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None = None,
             scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and weights from PyTorch's own function (weights: attend to one-hot values).

    Rows with nothing allowed are set to zero (older PyTorch versions return nan there)."""
    eye = torch.eye(K.shape[-2], dtype=Q.dtype)
    weights = F.scaled_dot_product_attention(Q, K, eye, attn_mask=mask, scale=scale)
    out = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask, scale=scale)
    return out.nan_to_num(0.0), weights.nan_to_num(0.0)


def _weight_mistakes(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                     mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """What the usual mistakes give as weights, from PyTorch's function with the mistake built in."""
    dk = Q.shape[-1]
    mistakes = {
        "the scores were not divided by sqrt(d_k)": _builtin(Q, K, K, mask, scale=1.0)[1],
        SCALE_BY_D_K: _builtin(Q, K, K, mask, scale=1.0 / dk)[1],
        SCALE_BY_DV: _builtin(Q, K, K, mask, scale=V.shape[-1] ** -0.5)[1],
        SCALE_BY_TK: _builtin(Q, K, K, mask, scale=K.shape[-2] ** -0.5)[1],
        SCALE_AFTER_SOFTMAX: _builtin(Q, K, K, mask, scale=1.0)[1] / dk ** 0.5,
    }
    if Q.dim() > 2:
        mistakes[SCALE_BY_SHAPE_1] = _builtin(Q, K, K, mask, scale=Q.shape[1] ** -0.5)[1]
    if mask is not None:
        unmasked = _builtin(Q, K, K)[1]
        mistakes.update({
            "the mask was ignored: positions where it is False still get weight": unmasked,
            "the mask is inverted: True means 'may attend', so fill where the mask is False":
                _builtin(Q, K, K, ~mask)[1],
            "the weights were zeroed after the softmax, so the rows no longer sum to 1 (mask "
            "the scores with -inf before the softmax)": unmasked * mask.expand_as(unmasked),
        })
    return mistakes


def zero_filled(weights: torch.Tensor, correct: torch.Tensor, mask: torch.Tensor) -> bool:
    """The signature of forbidden scores set to 0 instead of -inf: every forbidden key of a
    row gets the same positive weight, and the allowed keys keep the correct proportions."""
    forbidden = ~mask.expand_as(weights)
    if not bool((weights[forbidden] > 1e-6).all()):
        return False
    rows_ok = True
    for row, right, gone in zip(weights.reshape(-1, weights.shape[-1]),
                                correct.reshape(-1, correct.shape[-1]),
                                forbidden.reshape(-1, forbidden.shape[-1]), strict=True):
        if gone.all() or not gone.any():
            continue
        common = row[gone]
        kept = row[~gone]
        rows_ok &= bool(torch.allclose(common, common[0].expand_as(common), atol=1e-5))
        rows_ok &= bool(torch.allclose(kept / kept.sum(), right[~gone], atol=1e-5))
    return rows_ok


def fully_masked_mistakes(K: torch.Tensor, expected_w: torch.Tensor, rows: list[int]
                          ) -> dict[str, torch.Tensor]:
    """What the usual ways of handling fully masked query ``rows`` give as weights."""
    nan_rows, uniform = expected_w.clone(), expected_w.clone()
    nan_rows[..., rows, :] = float("nan")
    uniform[..., rows, :] = 1.0 / K.shape[-2]
    return {FULLY_MASKED_NAN: nan_rows, FULLY_MASKED_UNIFORM: uniform}


def fully_masked_diagnoses(weights: torch.Tensor, Q: torch.Tensor, K: torch.Tensor,
                           V: torch.Tensor, expected_w: torch.Tensor, rows: list[int]
                           ) -> dict[str, Callable[[], bool]]:
    """A penalty added to the forbidden scores: the fully masked ``rows`` get the unmasked
    weights (up to the rounding of adding a large number), the other rows are right."""
    def additive() -> bool:
        unmasked = _builtin(Q.double(), K.double(), V.double())[1]
        got, wanted = torch.as_tensor(weights).double(), expected_w.double().clone()
        wanted[..., rows, :] = unmasked[..., rows, :]
        return got.shape == wanted.shape and bool(torch.allclose(got, wanted, atol=5e-3))
    return {FULLY_MASKED_ADDITIVE: additive}


def large_scores(generator: torch.Generator, leading: tuple[int, ...], Tq: int, Tk: int,
                 dk: int, spread: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys whose scores are in the hundreds: every query row is shifted as a
    whole far up, not at all or far down (a constant key feature times the query's first
    entry), each kind at least once, and spread by about ``spread`` within the row."""
    Q = spread * torch.randn(*leading, Tq, dk, generator=generator)
    K = torch.randn(*leading, Tk, dk, generator=generator)
    K[..., 0] = 1.0
    kinds = torch.cat([torch.arange(3), torch.randint(0, 3, (max(Tq - 3, 0),),
                                                      generator=generator)])
    kinds = kinds[torch.randperm(len(kinds), generator=generator)][:Tq]
    size = 250 + 100 * torch.rand(Tq, generator=generator)
    shift = torch.where(kinds == 0, size, torch.where(kinds == 1, 0.0, -size))
    Q[..., 0] = shift * dk ** 0.5
    return Q, K


MAX_OVER_FORBIDDEN = ("every allowed weight came out 0 when a forbidden key scores far "
                      "above the allowed ones: the softmax (or the maximum it subtracts) ran "
                      "over all keys, forbidden ones included, and the mask was applied "
                      "afterwards, so every allowed exp underflows to 0; set the forbidden "
                      "scores to -inf first, then take the softmax of the masked scores")


def forbidden_on_top(generator: torch.Generator, leading: tuple[int, ...], Tq: int, Tk: int,
                     dk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and a (Tq, Tk) mask in which one key, forbidden to every query, scores
    150 to 300 above the allowed keys; every query keeps at least one allowed key."""
    Q = torch.randn(*leading, Tq, dk, generator=generator)
    K = torch.randn(*leading, Tk, dk, generator=generator)
    hot = int(torch.randint(0, Tk, (1,), generator=generator))
    K[..., 0] = 0.0
    K[..., hot, 0] = 1.0
    Q[..., 0] = (150 + 150 * torch.rand(Tq, generator=generator)) * dk ** 0.5
    mask = torch.rand(Tq, Tk, generator=generator) < 0.5
    mask[:, hot] = False
    kept = (hot + 1 + torch.randint(0, Tk - 1, (Tq,), generator=generator)) % Tk
    mask[torch.arange(Tq), kept] = True
    return Q, K, mask


def allowed_rows_lost(weights: Any) -> bool:
    """The signature of a shift by the maximum over all keys, forbidden ones included: every
    query row (none of them fully masked) comes out all zero."""
    weights = torch.as_tensor(weights).detach().double()
    return weights.dim() > 0 and bool((weights == 0).all())


def _broken_rows(weights: torch.Tensor) -> torch.Tensor:
    weights = weights.double()
    return ~torch.isfinite(weights).all(-1) | (weights.abs().sum(-1) == 0)


def exp_breaks(Q: torch.Tensor, K: torch.Tensor, whole_max: bool) -> torch.Tensor:
    """The query rows that exp / sum breaks (nan or all zero), in the inputs' dtype: without
    any shift, or with the maximum of the whole tensor subtracted (``whole_max``)."""
    scores = Q @ K.transpose(-2, -1) / Q.shape[-1] ** 0.5
    if whole_max:
        scores = scores - scores.max()
    e = torch.exp(scores)
    return ~torch.isfinite(e).all(-1) | (e.sum(-1) == 0) | ~torch.isfinite(e.sum(-1))


def overflow_diagnoses(weights: torch.Tensor, expected: torch.Tensor, Q: torch.Tensor,
                       K: torch.Tensor) -> dict[str, Callable[[], bool]]:
    """Exp / sum without a shift, or shifted by the maximum of the whole tensor: recognised
    by which rows come out nan (or all zero) while the others are right."""
    def breaks_like(whole_max: bool) -> bool:
        broken = _broken_rows(weights)
        return (bool(broken.any()) and torch.equal(broken, exp_breaks(Q, K, whole_max))
                and bool(torch.allclose(weights.double()[~broken], expected.double()[~broken],
                                        atol=1e-5, rtol=1e-4)))
    return {OVERFLOW: lambda: breaks_like(False), UNDERFLOW: lambda: breaks_like(True)}


def check_scaled_dot_product_attention(attention: Callable[..., tuple]) -> None:
    """Shapes (sizes of 1 too), distributions over keys, agreement with
    F.scaled_dot_product_attention, masks, large scores, dtype and precision, device,
    gradients."""
    check = SelfCheck("scaled_dot_product_attention")
    generator = torch.Generator().manual_seed(21)
    B, Tq, Tk, dk, dv = 2, 3, 5, 8, 6
    Q = torch.randn(B, Tq, dk, generator=generator)
    K = torch.randn(B, Tk, dk, generator=generator)
    V = torch.randn(B, Tk, dv, generator=generator)
    Q4 = torch.randn(2, 3, Tq, dk, generator=generator)
    K4 = torch.randn(2, 3, Tk, dk, generator=generator)
    V4 = torch.randn(2, 3, Tk, dv, generator=generator)

    check.clause("shape")
    out, weights = call_attention(check, attention, Q, K, V, "attention(Q, K, V)")
    check.expect(tuple(weights.shape) == (B, Tq, Tk), f"weights for Q {(B, Tq, dk)} and K "
                 f"{(B, Tk, dk)} have shape {(B, Tq, Tk)}", expected=f"shape {(B, Tq, Tk)}",
                 got=f"shape {tuple(weights.shape)}", diagnoses={
                     "the pair is returned the wrong way round: (out, weights), not "
                     "(weights, out)": tuple(out.shape) == (B, Tq, Tk)
                     and tuple(weights.shape) == (B, Tq, dv)})
    check.shape(out, (B, Tq, dv), f"out for V {(B, Tk, dv)}")
    out4, weights4 = call_attention(check, attention, Q4, K4, V4, "attention on 4-D inputs")
    check.shape(out4, (2, 3, Tq, dv), "out for 4-D inputs (2, 3, T, d)")
    check.shape(weights4, (2, 3, Tq, Tk), "weights for 4-D inputs (2, 3, T, d)")
    out2, weights2 = call_attention(check, attention, Q[0], K[0], V[0], "attention on 2-D inputs")
    check.shape(out2, (Tq, dv), "out for 2-D inputs (no batch dimension)")
    check.shape(weights2, (Tq, Tk), "weights for 2-D inputs (no batch dimension)")
    for label, (q, k, v) in (("a batch of one", (Q[:1], K[:1], V[:1])),
                             ("a single query (Tq = 1)", (Q[:, :1], K, V))):
        out1, weights1 = call_attention(check, attention, q, k, v, f"attention on {label}")
        shape_kept(check, weights1, (*q.shape[:-1], Tk), f"weights for {label}")
        shape_kept(check, out1, (*q.shape[:-1], dv), f"out for {label}")

    check.clause("values")
    expected_out, expected_w = _builtin(Q, K, V)
    check.close(weights, expected_w, "weights agree with PyTorch's (softmax of QKᵀ/√d_k over the "
                "keys)", dims=QKV_DIMS, mistakes=_weight_mistakes(Q, K, V), diagnoses={
                    "the softmax runs over the queries (dim=-2), not over the keys (dim=-1)":
                        lambda: bool(torch.allclose(weights.sum(-2), torch.ones(B, Tk),
                                                    atol=1e-5)),
                    "the weights were returned before the softmax (the scores)":
                        lambda: bool(torch.allclose(torch.softmax(weights, -1), expected_w,
                                                    atol=1e-5)),
                })
    check.close(out, expected_out, "out agrees with F.scaled_dot_product_attention",
                dims=("batch", "query", "value channel"))
    check.close(out4, F.scaled_dot_product_attention(Q4, K4, V4), "4-D out agrees with PyTorch's",
                mistakes={SCALE_FROM_FRONT: F.scaled_dot_product_attention(
                    Q4, K4, V4, scale=Q4.shape[2] ** -0.5)})
    check.close(out2, F.scaled_dot_product_attention(Q[0], K[0], V[0]),
                "2-D out (no batch dimension) agrees with PyTorch's")

    check.clause("mask")
    # True = may attend. Every row keeps at least one key and forbids at least one.
    mask = torch.tensor([[True, False, True, False, True],
                         [True, True, False, False, False],
                         [False, False, False, True, True]])
    out_m, weights_m = call_attention(check, attention, Q, K, V, "masked attention", mask=mask)
    expected_out_m, expected_w_m = _builtin(Q, K, V, mask)
    check.close(weights_m, expected_w_m, "masked weights agree with PyTorch's (mask True = may "
                "attend)", mistakes=_weight_mistakes(Q, K, V, mask), dims=QKV_DIMS, diagnoses={
                    ZERO_FILL: lambda: zero_filled(weights_m, expected_w_m, mask),
                    NAN_PENALTY: lambda: nothing_left(weights_m)})
    check.close(out_m, expected_out_m,
                "masked out agrees with F.scaled_dot_product_attention(..., attn_mask=mask)")
    padding = torch.tensor([True, True, True, False, False]).reshape(1, 1, Tk)
    out_p, weights_p = call_attention(check, attention, Q, K, V, "attention with a (1, 1, Tk) "
                                      "mask", mask=padding)
    expected_w_p = _builtin(Q, K, V, padding)[1]
    check.close(weights_p, expected_w_p,
                "a (1, 1, Tk) padding mask broadcasts over batch and queries",
                mistakes=_weight_mistakes(Q, K, V, padding), dims=QKV_DIMS, diagnoses={
                    ZERO_FILL: lambda: zero_filled(weights_p, expected_w_p, padding)})
    check.close(out_p, _builtin(Q, K, V, padding)[0], "out with a (1, 1, Tk) padding mask")
    # A fully masked row: this course's convention is zero weights and a zero output.
    full = mask.clone()
    full[1] = False
    out_f, weights_f = call_attention(check, attention, Q, K, V, "attention with a fully masked "
                                      "row", mask=full)
    expected_out_f, expected_w_f = _builtin(Q, K, V, full)
    check.close(weights_f, expected_w_f, "a fully masked query row (row 1) gets all-zero weights",
                mistakes=fully_masked_mistakes(K, expected_w_f, [1]), dims=QKV_DIMS,
                diagnoses=fully_masked_diagnoses(weights_f, Q, K, V, expected_w_f, [1]))
    check.close(out_f, expected_out_f, "a fully masked query row outputs zeros, the others are "
                "unaffected", dims=("batch", "query", "value channel"),
                mistakes={OUT_BEFORE_FIX: out_with_nan_rows(expected_out_f, [1])})

    check.clause("large")
    # Rows shifted far up (exp overflows float32 beyond 88), not at all, and far down.
    big, K_big = large_scores(generator, (B,), Tq, Tk, dk, spread=30.0)
    out_l, weights_l = call_attention(check, attention, big, K_big, V, "attention with large "
                                      "scores")
    expected_out_l, expected_w_l = _builtin(big.double(), K_big.double(), V.double())
    check.close(weights_l, expected_w_l, "weights for scores in the hundreds, rows far above "
                "and far below the others", dims=QKV_DIMS,
                diagnoses=overflow_diagnoses(weights_l, expected_w_l, big, K_big))
    check.close(out_l, expected_out_l, "out for scores in the hundreds")
    Q_top, K_top, mask_top = forbidden_on_top(generator, (B,), Tq, Tk, dk)
    out_t, weights_t = call_attention(check, attention, Q_top, K_top, V, "attention with a "
                                      "forbidden key far above the allowed ones", mask=mask_top)
    expected_out_t, expected_w_t = _builtin(Q_top.double(), K_top.double(), V.double(), mask_top)
    check.close(weights_t, expected_w_t, "a forbidden key scoring 150 or more above the allowed "
                "ones: the allowed weights still sum to 1", dims=QKV_DIMS,
                diagnoses={MAX_OVER_FORBIDDEN: lambda: allowed_rows_lost(weights_t)})
    check.close(out_t, expected_out_t, "out with a forbidden key far above the allowed ones")

    check.clause("dtype")
    check.dtype_follows(attention, Q, K, V, what="attention(Q, K, V, mask=mask)", mask=full)
    Q64 = torch.randn(4, 8, dk, generator=generator, dtype=torch.float64)
    K64 = torch.randn(4, 16, dk, generator=generator, dtype=torch.float64)
    V64 = torch.randn(4, 16, dv, generator=generator, dtype=torch.float64)
    _, weights64 = call_attention(check, attention, Q64, K64, V64, "attention on float64 inputs")
    expected64 = _builtin(Q64, K64, V64)[1]
    check.close(weights64, expected64, "float64 weights carry float64 precision (to 1e-8)",
                atol=1e-12, rtol=1e-8, diagnoses={FLOAT32_INSIDE: lambda: bool(torch.allclose(
                    weights64.double(), expected64, atol=1e-5))})
    check.clause("device")
    check.device_follows(attention, Q, K, V, what="attention(Q, K, V, mask=mask)", mask=full)

    check.rule("gradients")
    Qg, Kg, Vg = (t.clone().requires_grad_() for t in (Q, K, V))
    out_g, _ = call_attention(check, attention, Qg, Kg, Vg, "attention on inputs that need "
                              "gradients", mask=mask)
    check.expect(out_g.requires_grad, "out is connected to Q, K and V",
                 expected="out.requires_grad is True", got="a result cut off from its inputs",
                 likely=NO_GRAPH)
    check.backward(out_g, "out")
    missing = [name for name, t in (("Q", Qg), ("K", Kg), ("V", Vg))
               if t.grad is None or not bool(t.grad.abs().sum() > 0)]
    check.expect(not missing, "gradients reach Q, K and V", expected="a gradient for each",
                 got=f"none for {', '.join(missing)}",
                 diagnoses={WEIGHTS_DETACHED: missing == ["Q", "K"]})

    check.rule("no_builtin")
    _, seen = check.call_observed(attention, Q, K, V, mask=mask)
    check.expect(SDPA_BUILTIN not in seen.calls, "computes the attention itself",
                 expected="no call of F.scaled_dot_product_attention",
                 got=f"F.scaled_dot_product_attention called {seen.calls.get(SDPA_BUILTIN)} "
                     "time(s)",
                 likely="PyTorch's own attention does the work this exercise asks for (and "
                        "the self-check compares with it): compute the scores, mask, softmax "
                        "and weighted sum yourself")
    check.passed()


# ---------------------------------------------------------------------------------------------

def labels_by_counting(X: torch.Tensor, rule: str = ">") -> torch.Tensor:
    """Labels computed row by row in plain Python (1.0 = more 2s than 4s, or another rule)."""
    compare = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
               "!=": lambda a, b: a != b, "any": lambda a, b: a > 0 and b == 0}[rule]
    return torch.tensor([[float(compare(row.count(2), row.count(4)))] for row in X.tolist()])


def batch_pair(check: SelfCheck, result: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (X, y) pair a make_batch call returned, as tensors."""
    check.expect(isinstance(result, tuple | list) and len(result) == 2,
                 f"{what} returns a pair (X, y)", expected="a tuple (X, y)", got=describe(result))
    X, y = result
    return check.tensor(X, f"X of {what}"), check.tensor(y, f"y of {what}")


def y_dtype_diagnoses(y: torch.Tensor) -> dict[str, bool]:
    """The usual wrong dtypes of the labels, each with its fix."""
    return {
        "y is float64: nn.BCELoss then fails with \"Found dtype Double but expected Float\"; "
        "convert the labels with .float()": y.dtype == torch.float64,
        "y holds booleans (the comparison itself): convert it with .float()":
            y.dtype == torch.bool,
        "y holds integers: BCELoss needs float labels, convert with .float()":
            not y.dtype.is_floating_point and y.dtype != torch.bool,
    }


INT_WIDTH = ("X's digits have another integer width: torch.randint gives int64 unless a "
             "dtype= says otherwise; leave the dtype out (or dtype=torch.long)")
DIGITS_1_TO_10 = ("the digits run from 1 to 10: torch.randint(1, 11, ...) shifts them by one; "
                  "the digits are 0 to 9, randint(0, 10, ...)")
FIRST_TEN = ("only the first 10 positions of each row were counted: count over all T "
             "positions (a sum over the row's axis needs no length)")
SIGN_LABELS = ("y holds -1 where the 4s win (the sign of the difference): a label is 1.0 or "
               "0.0, so compare the counts, twos > fours")
ANY_LABELS = ("y says whether a row has a 2 and no 4 at all, not whether it has more 2s than "
              "4s: compare the two counts")
SAME_SEED = ("make_batch gives different batches for the same seed, and it draws nothing from "
             "torch: its digits come from a generator PyTorch's seed does not reach (NumPy's "
             "or Python's random); use torch.randint")
CLOCK_SEED = ("make_batch draws with torch but gives different batches after the same seed: it "
              "reseeds the generator from the clock or the system (torch.seed(), a seed taken "
              "from the time) inside; draw from the global generator as it is")
OWN_GENERATOR = ("make_batch draws with torch but leaves the global generator untouched: it "
                 "draws from a generator of its own (torch.Generator(), passed as generator=), "
                 "which a fixed seed of its own started once and PyTorch's global seed never "
                 "reaches; draw from the global generator (no generator= argument)")
FIRST_CALL_SEED = ("the first call after a seed gives another batch than the calls after it: "
                   "make_batch reseeds the generator on its first call (set_seed or "
                   "torch.manual_seed behind a flag); never reseed inside")
RESEEDS = ("make_batch gives the same batch whatever the global seed: it reseeds the generator "
           "itself (torch.manual_seed or set_seed inside) or uses a fixed generator of its own; "
           "draw from the global generator and seed once, outside")
TORCH_RANDOM = {"randint", "rand", "randn", "randperm", "multinomial", "bernoulli", "normal",
                "randint_like", "rand_like", "randn_like", "random_", "uniform_", "normal_"}
ENDS_HALF = ("0 and 9 come up about half as often as the other digits: rounding "
             "torch.rand(...) * 9 gives each end only half an interval; draw the digits with "
             "torch.randint(0, 10, ...)")


def ends_half(shares: torch.Tensor) -> bool:
    """The signature of rounded uniform floats: 0 and 9 at about 1/18, the rest at 1/9."""
    ends, middle = shares[[0, 9]], shares[1:9]
    return bool(((ends > 0.03) & (ends < 0.08)).all() and ((middle > 0.09) & (middle < 0.14)).all())


SCALAR_LABEL = ("y is a single number for a batch of one: a `.squeeze()` dropped both of its "
                "axes; keep y of shape (N, 1) for every N")
NO_COLUMN = "y has no column axis: keep the summed axis (keepdim=True) or reshape y to (N, 1)"
ROW_LABELS = "y is a row (1, N): the labels go down a column, (N, 1)"
SUMMED_OVER_BATCH = ("the 2s and 4s were counted down the batch (dim=0), one count per "
                     "position: count along each row (the axis of the T positions)")
SWAPPED_BATCH = "the pair is returned the wrong way round: (X, y), not (y, X)"
WHOLE_BATCH = ("every row got the same label: the 2s and 4s were counted over the whole batch, "
               "not row by row")


def batch_shapes(check: SelfCheck, X: torch.Tensor, y: torch.Tensor, N: int, T: int,
                 what: str) -> None:
    """X is (N, T) and y (N, 1); the usual wrong shapes are named."""
    check.expect(tuple(X.shape) == (N, T), f"X of {what} has shape {(N, T)}",
                 expected=f"shape {(N, T)}", got=f"shape {tuple(X.shape)}",
                 where=shape_difference(tuple(X.shape), (N, T)), diagnoses={
                     SWAPPED_BATCH: tuple(X.shape) == (N, 1) and tuple(y.shape) == (N, T),
                     "T is ignored: the sequences must have T digits, not always 10":
                         T != 10 and tuple(X.shape) == (N, 10)})
    check.expect(tuple(y.shape) == (N, 1), f"y of {what} has shape {(N, 1)}",
                 expected=f"shape {(N, 1)}", got=f"shape {tuple(y.shape)}", diagnoses={
                     NO_COLUMN: tuple(y.shape) == (N,),
                     SCALAR_LABEL: N == 1 and tuple(y.shape) == (),
                     ROW_LABELS: tuple(y.shape) == (1, N),
                     SUMMED_OVER_BATCH: tuple(y.shape) in ((1, T), (T,))
                     or (N != T and tuple(y.shape) == (T, 1))})


def whole_batch_labels(X: torch.Tensor) -> torch.Tensor:
    """The labels of counting the 2s and 4s of the whole batch: one value for every row."""
    return torch.full((X.shape[0], 1), float(int((X == 2).sum()) > int((X == 4).sum())),
                      dtype=torch.float64)


def seeded_digest(seed: int) -> str:
    """The digest of the global generator's state right after ``torch.manual_seed(seed)``."""
    with random_state_kept(seed):
        return rng_digest()


def check_randomness(check: SelfCheck, make_batch: Callable[..., tuple], seeds: tuple[int, int],
                     N: int, first: torch.Tensor) -> None:
    """Same global seed, same batch, from the first call on; two seeds, two batches (the
    "randomness" clause). ``first``: the X of the check's first call, ``make_batch(N)``
    after the seed ``seeds[0]``."""
    again = torch.as_tensor(check.call_seeded(seeds[0], make_batch, N)[0])
    third = torch.as_tensor(check.call_seeded(seeds[0], make_batch, N)[0])
    other = torch.as_tensor(check.call_seeded(seeds[1], make_batch, N)[0])
    _, seen = check.call_observed(make_batch, N)
    draws_with_torch = bool(TORCH_RANDOM & set(seen.calls))
    # A generator of its own leaves the global one where the seed put it.
    rng_after = check._checked_call(make_batch, (N,), {}, seed=seeds[0])[1].rng_after
    untouched = bool(rng_after) and rng_after == seeded_digest(seeds[0])
    first = torch.as_tensor(first)
    same = [torch.equal(first, again), torch.equal(again, third)]
    check.expect(all(same), "the same global seed gives the same batch, from the first call on",
                 expected=f"make_batch({N}) after torch.manual_seed({seeds[0]}), three times: "
                          "the same X",
                 got="the first call differs from the others" if same == [False, True]
                 else "different batches", diagnoses={
                     FIRST_CALL_SEED: same == [False, True],
                     OWN_GENERATOR: draws_with_torch and untouched,
                     CLOCK_SEED: draws_with_torch and not untouched,
                     SAME_SEED: not draws_with_torch})
    check.expect(not torch.equal(again, other), "two global seeds give two different batches",
                 expected=f"make_batch({N}) after seeds {seeds[0]} and {seeds[1]}: different X",
                 got="the same batch twice", likely=RESEEDS)
    # A reseed after the digits are drawn passes both checks above.
    check.no_reseed(make_batch, N, what=f"make_batch({N})")


def check_make_batch(make_batch: Callable[..., tuple]) -> None:
    """Shapes, dtypes, digit range, labels that agree with the rows, arguments, randomness."""
    check = SelfCheck("make_batch")
    N, seed = 2000, 22

    check.clause("shape")
    X, y = batch_pair(check, check.call_seeded(seed, make_batch, N), f"make_batch({N})")
    batch_shapes(check, X, y, N, 10, f"make_batch({N})")

    check.clause("dtype")
    check.expect(X.dtype == torch.int64, "X holds integers (int64)", expected="torch.int64",
                 got=str(X.dtype), diagnoses={
                     "X holds floats: draw the digits with torch.randint, which gives int64, "
                     "and keep them integers (nn.Embedding needs them)": X.is_floating_point(),
                     INT_WIDTH: not X.is_floating_point() and X.dtype != torch.bool})
    check.expect(y.dtype == torch.float32, "y is float32 (what nn.BCELoss expects)",
                 expected="torch.float32", got=str(y.dtype), diagnoses=y_dtype_diagnoses(y))

    check.clause("values")
    digits = set(X.unique().tolist())
    check.expect(digits == set(range(10)), "the digits are exactly 0, 1, ..., 9",
                 expected="all of 0..9 and nothing else", got=f"digits {sorted(digits)}",
                 diagnoses={
                     "there is no 9: torch.randint's upper bound is excluded, so draw "
                     "with randint(0, 10, ...)": digits == set(range(9)),
                     "there is no 0: the digits start at 0, randint(0, 10, ...)":
                         digits == set(range(1, 10)),
                     DIGITS_1_TO_10: digits == set(range(1, 11))})
    counts = torch.bincount(X.flatten(), minlength=10).double() / X.numel()
    check.expect(bool((counts > 0.07).all() and (counts < 0.13).all()),
                 "all ten digits appear about equally often",
                 expected="each digit in about 10% of places",
                 got="shares " + ", ".join(f"{d}: {c:.2f}" for d, c in enumerate(counts)),
                 diagnoses={ENDS_HALF: ends_half(counts)})
    labels = labels_by_counting(X)
    y_flat = y.detach().reshape(-1, 1).double()
    wrong = (y_flat != labels).reshape(-1).nonzero()
    i = int(wrong[0]) if len(wrong) else 0
    row = X[i].tolist()
    check.expect(len(wrong) == 0, "labels say whether a row has more 2s than 4s",
                 expected=f"y = {float(labels[i]):.0f} for row {i}, {row} "
                          f"({row.count(2)} twos, {row.count(4)} fours)",
                 got=f"y = {float(y_flat[i]):.0f} ({len(wrong)} wrong labels of {N})",
                 diagnoses={
                     "ties (as many 2s as 4s) were labelled 1: only strictly more 2s "
                     "than 4s is a yes": lambda: torch.equal(y_flat, labels_by_counting(X, ">=")),
                     "the comparison is the wrong way round (more 4s than 2s)":
                         lambda: torch.equal(y_flat, labels_by_counting(X, "<")),
                     "the label is 1 whenever the counts differ, not only when the 2s win":
                         lambda: torch.equal(y_flat, labels_by_counting(X, "!=")),
                     WHOLE_BATCH: lambda: torch.equal(y_flat, whole_batch_labels(X)),
                     SIGN_LABELS: bool((y_flat == -1).any()),
                     ANY_LABELS: lambda: torch.equal(y_flat, labels_by_counting(X, "any")),
                 })

    check.clause("arguments")
    for args, kwargs in (((7,), {"T": 4}), ((1, 3), {}), ((40, 16), {})):
        n, t = args[0], kwargs.get("T", args[-1])
        what = "make_batch(" + ", ".join([*map(str, args), *(f"{k}={v}" for k, v in
                                                            kwargs.items())]) + ")"
        X_a, y_a = batch_pair(check, check.call_seeded(23, make_batch, *args, **kwargs), what)
        batch_shapes(check, X_a, y_a, n, t, what)
        y_col, right = y_a.detach().reshape(-1, 1).double(), labels_by_counting(X_a)
        bad = (y_col != right).reshape(-1).nonzero()
        i = int(bad[0]) if len(bad) else 0
        check.expect(len(bad) == 0, f"the labels of {what} agree with its rows",
                     expected=f"1.0 exactly where a row has more 2s than 4s: y = "
                              f"{float(right[i]):.0f} for row {i}, {X_a[i].tolist()}",
                     got=f"y = {float(y_col[i]):.0f} ({len(bad)} wrong labels of {n})",
                     diagnoses={FIRST_TEN: t > 10 and bool(len(bad)) and torch.equal(
                         y_col, labels_by_counting(X_a[:, :10]))})

    check.clause("randomness")
    check_randomness(check, make_batch, (seed, 6), N, X)
    check.passed()


# ---------------------------------------------------------------------------------------------

GRADIENT_CUT = ("the result is right but the gradient is cut on its way: a .detach(), "
                "torch.no_grad() or a NumPy round trip inside the model")
QUERY_ALONE = ("the keys get a gradient but the query does not: it was made with "
               "requires_grad=False, or read through .data or .detach(); use self.query as it is")
EMBEDS_AGAIN = ("attention embeds its input again: it receives the embeddings e, not the "
                "digits")
DIGITS_AS_EMBEDDINGS = ("the digits x (int64, 'Long') went where the embeddings belong: "
                        "attention and values take e = embed(x), not x")
BATCH_OF_ONE = ("it works for a batch of several sequences but not for a batch of one: "
                "`.squeeze()` without a dim drops every size-1 axis, the batch axis too; "
                "name the axis (`.squeeze(-1)`) or reshape to the sizes you want")
RESEEDS_INIT = ("two models built after different global seeds are the same: the constructor "
                "reseeds the generator (torch.manual_seed or set_seed inside) or draws from a "
                "fixed generator of its own; seed once, outside")
OTHER_GENERATOR = ("two models built after the same global seed differ: a parameter is drawn "
                   "from a generator PyTorch's seed does not reach (NumPy's or Python's "
                   "random); draw with torch.randn")
SINGLE_QUERY_CRASHES = {EMBEDS_AGAIN: lambda text: "indices" in text,
                        BMM: lambda text: "3D" in text or "bmm" in text}
FORWARD_CRASHES = {**SINGLE_QUERY_CRASHES,
                   DIGITS_AS_EMBEDDINGS: lambda text: "Long" in text and "indices" not in text}
SQUEEZED_Z = ("the attended value z lost its axes: `.squeeze()` turned (N, 1, 1) into (N,), "
              "which the readout's nn.Linear(1, d_hidden) reads as one row of N numbers; "
              "squeeze only the last axis (.squeeze(-1)) or reshape to (N, 1)")
Z_NOT_FLAT = ("z kept its shape (N, 1, 1), so the readout returns (N, 1, 1): turn it into "
              "(N, 1) first (.squeeze(-1) or .reshape(-1, 1))")
FORWARD_CRASHES = {**FORWARD_CRASHES,
                   SQUEEZED_Z: lambda text: re.search(r"\(1x\d+ and 1x\d+\)", text) is not None}
EXTRA_MEMBER = ("the model has a member the table does not list (dropout, another layer): the "
                "constructor creates exactly embed, query, to_key, to_value and readout")
NO_BIAS = ("a layer was built with bias=False: the table prescribes nn.Linear(...) with its "
           "default bias (the key's bias does not change the attention, but it changes how "
           "the model draws its parameters, so a seeded model is no longer the one the text "
           "describes)")
HIDDEN_ACTIVATION = "the readout's middle layer is not nn.Tanh(): the table prescribes Tanh"
VALUE_WIDTH = ("to_value gives d_att numbers per position: a value is one number, "
               "nn.Linear(d_embed, 1)")
EMBED_WIDTH = ("the embedding width is d_att, not d_embed: nn.Embedding(10, d_embed) (they "
               "differ in SingleQueryAttention(6, 4, 8))")
MULTIPLIED_SCALE = "the scores were multiplied by sqrt(d_att) instead of divided by it"
QUERY_VECTOR = ("the query is a vector of shape (d_att,): the table makes it a row, "
                "torch.randn(1, d_att), one query of width d_att")
BROADCAST_PRODUCT = ("z came from w * v, which broadcasts the weights (N, 1, T) against the "
                     "values (N, T, 1) into an (N, T, T) table of every weight times every "
                     "value: combine them with a matrix product, (N, 1, T) @ (N, T, 1) -> "
                     "(N, 1, 1)")
VALUES_FROM_KEYS = ("values(e) came from to_key (a column of the keys): the value of each "
                    "position is to_value(e)")
SCALE_BY_D_ATT = ("the scores were divided by d_att instead of sqrt(d_att) (or by sqrt(d_att) "
                  "twice)")


def broadcast_product(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """z from (w * v).sum(1)[:, :1]: an (N, T, T) product summed over the wrong axis."""
    return (weights * values).sum(1)[:, :1]
SCALE_BY_D_HIDDEN = ("the scores were divided by sqrt(d_hidden), the readout's width, instead "
                     "of sqrt(d_att)")
SIGMOID_ON_Z = ("forward applies a sigmoid to z itself, skipping the readout network: "
                "return readout(z)")
MEMBERS = ("embed", "query", "to_key", "to_value", "readout")
HARD_CODED_SCALE = ("the scores were divided by a fixed 4 (the square root of the default "
                    "d_att = 16): divide by sqrt(d_att) of this model")


def single_query_scores(model: nn.Module, e: torch.Tensor, scale: float | None = None
                        ) -> torch.Tensor:
    """query · key * scale for every position, (N, 1, T), in float64 (default scale
    1/sqrt(d_att))."""
    with torch.no_grad():
        keys = model.to_key(e).double()  # (N, T, d_att)
        query = model.query.double().reshape(-1)
    scale = query.numel() ** -0.5 if scale is None else scale
    return (keys @ query * scale).unsqueeze(1)


def single_query_weights(model: nn.Module, e: torch.Tensor, scale: float | None = None
                         ) -> torch.Tensor:
    """softmax(query · key * scale) over the positions, (N, 1, T), in float64."""
    return torch.softmax(single_query_scores(model, e, scale), dim=-1)


def readout_layers(model: nn.Module) -> list[str]:
    """The types of the readout's layers, in order."""
    readout = getattr(model, "readout", None)
    if not isinstance(readout, nn.Module):
        return []
    return [m._get_name() for m in readout.children()] or [readout._get_name()]


PADDING_IDX = ("padding_idx was given to nn.Embedding: it keeps that token's vector at zero "
               "and never trains it, but every token here is a real one: leave padding_idx out")


def expect_no_padding_idx(check: SelfCheck, table: Any, what: str) -> None:
    """An embedding the text writes without padding_idx has none (a row kept at zero that
    never trains would change what the model can learn)."""
    padding = getattr(table, "padding_idx", None)
    check.expect(padding is None, f"{what} has no padding_idx", expected="padding_idx None",
                 got=f"padding_idx {padding}", likely=PADDING_IDX)


def check_members(check: SelfCheck, model: Any, d_embed: int, d_att: int, d_hidden: int,
                  what: str, diagnoses: Mapping[str, Any] | None = None) -> None:
    """The members the table prescribes, with the sizes of this model."""
    check.expect(isinstance(model, nn.Module), f"{what} is an nn.Module", expected="an nn.Module",
                 got=describe(model))
    missing = [name for name in ("embed", "query", "to_key", "to_value", "readout")
               if not hasattr(model, name)]
    check.expect(not missing, f"{what} has the members embed, query, to_key, to_value, readout",
                 expected="all five", got=f"no {', '.join(missing)}")
    check.expect(any(p is model.query for p in model.parameters()),
                 "the query is a learnable parameter", expected="model.query in model.parameters()",
                 got=describe(model.query),
                 likely="the query is a plain tensor, so training never changes it: wrap it, "
                        "nn.Parameter(...)")
    extra = [f"{name}: {child._get_name()}" for name, child in model.named_children()
             if name not in MEMBERS]
    extra += [name for name, _ in model.named_parameters(recurse=False) if name not in MEMBERS]
    check.expect(not extra, f"{what} has exactly the members the table lists",
                 expected=", ".join(MEMBERS), got=f"also {', '.join(extra)}", likely=EXTRA_MEMBER)
    layers = readout_layers(model)
    check.expect(bool(layers) and layers[-1] == "Sigmoid", "the readout ends with nn.Sigmoid()",
                 expected="nn.Sequential(..., nn.Sigmoid())",
                 got=f"readout layers {', '.join(layers) or describe(model.readout)}",
                 likely="the readout does not end with nn.Sigmoid(), so model(x) is not a "
                        "probability")
    embed, to_key, to_value = model.embed, model.to_key, model.to_value
    readout = list(model.readout.children())
    sizes = {
        "embed": (getattr(embed, "num_embeddings", None), getattr(embed, "embedding_dim", None)),
        "query": tuple(model.query.shape),
        "to_key": (getattr(to_key, "in_features", None), getattr(to_key, "out_features", None)),
        "to_value": (getattr(to_value, "in_features", None),
                     getattr(to_value, "out_features", None)),
        "readout": tuple(layers),
        "readout sizes": (getattr(readout[0], "in_features", None),
                          getattr(readout[0], "out_features", None),
                          getattr(readout[-2], "in_features", None),
                          getattr(readout[-2], "out_features", None)) if len(readout) > 1 else (),
    }
    wanted = {"embed": (10, d_embed), "query": (1, d_att), "to_key": (d_embed, d_att),
              "to_value": (d_embed, 1), "readout": ("Linear", "Tanh", "Linear", "Sigmoid"),
              "readout sizes": (1, d_hidden, d_hidden, 1)}
    wrong = [name for name in wanted if sizes[name] != wanted[name]]
    check.expect(not wrong, f"the members of {what} are as the table says",
                 expected=f"Embedding(10, {d_embed}), query (1, {d_att}), Linear({d_embed}, "
                          f"{d_att}), Linear({d_embed}, 1), readout Linear(1, {d_hidden}), "
                          f"Tanh, Linear({d_hidden}, 1), Sigmoid",
                 got="; ".join(f"{name} {sizes[name]}" for name in wrong),
                 where=f"{', '.join(wrong)} differ", diagnoses={
                     **(diagnoses or {}),
                     HIDDEN_ACTIVATION: len(layers) == 4 and layers[1] != "Tanh",
                     QUERY_VECTOR: sizes["query"] == (d_att,),
                     VALUE_WIDTH: wrong == ["to_value"] and sizes["to_value"] == (d_embed, d_att),
                     EMBED_WIDTH: wrong == ["embed"] and sizes["embed"] == (10, d_att)})
    expect_no_padding_idx(check, embed, f"the embed of {what}, nn.Embedding(10, d_embed),")
    linears = [("to_key", to_key), ("to_value", to_value),
               *((f"readout[{i}]", layer) for i, layer in enumerate(readout)
                 if isinstance(layer, nn.Linear))]
    no_bias = [name for name, layer in linears if getattr(layer, "bias", None) is None]
    check.expect(not no_bias, f"the linear layers of {what} have their bias, as nn.Linear "
                 "makes them", expected="a bias in to_key, to_value and the readout's Linear "
                 "layers", got=f"no bias in {', '.join(no_bias)}", likely=NO_BIAS)


def check_query_init(check: SelfCheck, wide: nn.Module) -> None:
    """The query of a model with d_att = 4096 has standard normal entries (the "init" clause)."""
    query = torch.as_tensor(wide.query).detach().double()
    mean, std = float(query.mean()), float(query.std())
    check.expect(abs(mean) < 0.1 and 0.9 < std < 1.1,
                 "the query starts with standard normal entries (torch.randn)",
                 expected=f"mean about 0, standard deviation about 1 (d_att = {query.numel()})",
                 got=f"mean {mean:.3f}, standard deviation {std:.3f}", diagnoses={
                     "the query starts at zero: every position then gets the same weight; "
                     "draw it with torch.randn": std == 0,
                     "the query is drawn uniformly from [0, 1) (torch.rand): use torch.randn, "
                     "a standard normal": abs(mean - 0.5) < 0.05 and abs(std - 0.289) < 0.03,
                     "the query's entries are scaled down: torch.randn(1, d_att) as it is":
                         abs(mean) < 0.1 and 0 < std < 0.9})


def batch_of_one(check: SelfCheck, call: Callable[[], Any], wanted: tuple[int, ...],
                 what: str, crashes: Mapping[str, Callable[[str], bool]]) -> torch.Tensor:
    """``call()`` on a batch of one (the same method already worked on a larger batch): a
    crash or a wrong shape there is told as a size-1 axis dropped."""
    with crash_causes(check, {**crashes, BATCH_OF_ONE: lambda text: True}):
        value = check.tensor(call(), what)
    check.expect(tuple(value.shape) == wanted, f"{what} has shape {wanted}",
                 expected=f"shape {wanted}", got=f"shape {tuple(value.shape)}", likely=BATCH_OF_ONE)
    return value


def check_model_randomness(check: SelfCheck, model_class: type[nn.Module],
                           seeds: tuple[int, int], model: nn.Module, x: torch.Tensor) -> None:
    """The parameters follow the global seed: the same seed, the same query; two seeds, two
    queries; neither building a model nor ``model(x)`` reseeds the generator (the
    "randomness" clause)."""
    def query(seed: int) -> torch.Tensor:
        return torch.as_tensor(check.call_seeded(seed, model_class).query).detach().clone()

    first, again, other = query(seeds[0]), query(seeds[0]), query(seeds[1])
    check.expect(torch.equal(first, again), "two models built after the same global seed are "
                 "the same", expected=f"the same query after torch.manual_seed({seeds[0]})",
                 got="two different queries", likely=OTHER_GENERATOR)
    check.expect(not torch.equal(first, other), "two models built after different global seeds "
                 "differ", expected=f"different queries after seeds {seeds[0]} and {seeds[1]}",
                 got="the same query twice", likely=RESEEDS_INIT)
    # A reseed after the parameters are drawn passes both checks above.
    check.no_reseed(model_class, what="SingleQueryAttention()")
    check.no_reseed(model, x, what="model(x)")


def check_model_device(check: SelfCheck, model: nn.Module, x: torch.Tensor, e: torch.Tensor,
                       name: str) -> None:
    """attention, values and forward of ``model`` moved to the data-less meta device make no
    CPU tensor (the "device" rule: the grader's rebuilt modules cannot be moved there)."""
    model = model.to("meta")
    with torch.no_grad():
        check.device_follows(model.attention, e, what=f"{name}.attention(e)")
        check.device_follows(model.values, e, what=f"{name}.values(e)")
        check.device_follows(model, x, what=f"{name}(x)")


def check_gradients(check: SelfCheck, model: nn.Module, p: torch.Tensor) -> None:
    """The loss reaches every parameter of ``model`` through ``p`` (the "gradients" clause)."""
    if p.requires_grad:  # under torch.no_grad() nothing reaches the parameters (told below)
        check.backward(p, "model(x)")
    named = (("query", model.query), ("to_key.weight", model.to_key.weight),
             ("to_value.weight", model.to_value.weight), ("embed.weight", model.embed.weight))
    missing = [name for name, parameter in named
               if parameter.grad is None or not bool(parameter.grad.abs().sum() > 0)]
    check.expect(not missing, "the loss reaches the query, to_key, to_value and embed (each gets "
                 "a gradient)", expected="a non-zero gradient for each",
                 got=f"none for {', '.join(missing)}",
                 diagnoses={QUERY_ALONE: missing == ["query"], GRADIENT_CUT: True})


def check_SingleQueryAttention(model_class: type[nn.Module]) -> None:
    """Members, initial query, shapes (a batch of one too), attention as a distribution over
    positions, agreement with PyTorch, non-default sizes, randomness, device, gradients."""
    check = SelfCheck("SingleQueryAttention")

    check.clause("members")
    model = check.call_seeded(23, model_class)
    check_members(check, model, 16, 16, 32, "SingleQueryAttention()", diagnoses={
        "the default arguments were changed: d_embed=16, d_att=16, d_hidden=32":
            lambda: tuple(model.query.shape) != (1, 16)
            and tuple(model.query.shape) == (1, model.embed.embedding_dim)})

    generator = torch.Generator().manual_seed(23)
    N, T = 4, 7
    x = torch.randint(0, 10, (N, T), generator=generator)
    e = model.embed(x).detach()
    check.clause("attention")
    with crash_causes(check, SINGLE_QUERY_CRASHES):
        a = check.tensor(check.call(model.attention, e), "attention(e)")
    check.expect(tuple(a.shape) == (N, 1, T), f"attention(e) for e of shape (4, 7, d_embed) has "
                 f"shape {(N, 1, T)}", expected=f"shape {(N, 1, T)}", got=f"shape {tuple(a.shape)}",
                 diagnoses={"the weights come out as (N, T, 1): move the positions to the last "
                            "axis, (N, 1, T)": tuple(a.shape) == (N, T, 1)})
    sums = a.sum(-1)
    check.expect(bool(torch.allclose(sums, torch.ones(N, 1), atol=1e-5)),
                 "attention is a distribution over the T positions (each row sums to 1)",
                 expected="weights summing to 1 over the 7 positions", got=describe(sums),
                 diagnoses={"the softmax ran over the axis of size 1 (the query axis), which "
                            "makes every weight 1: take it over the T positions":
                            lambda: bool(torch.allclose(a, torch.ones_like(a))),
                            "the weights were returned before the softmax (the scores)":
                            lambda: bool(torch.allclose(a.double(), single_query_scores(
                                model, e), atol=1e-5))})
    check.close(a, single_query_weights(model, e),
                "attention agrees with softmax(query · key / √d_att) over the positions",
                mistakes={"the scores were not divided by sqrt(d_att)":
                          single_query_weights(model, e, scale=1.0),
                          SCALE_BY_D_ATT: single_query_weights(model, e, scale=1.0 / 16),
                          MULTIPLIED_SCALE: single_query_weights(model, e, scale=4.0),
                          SCALE_BY_D_HIDDEN: single_query_weights(model, e, scale=32 ** -0.5)})
    a1 = batch_of_one(check, lambda: check.call(model.attention, e[:1]), (1, 1, T),
                      "attention(e) for a batch of one, e of shape (1, 7, d_embed)",
                      SINGLE_QUERY_CRASHES)
    check.close(a1, single_query_weights(model, e[:1]), "attention for a batch of one")

    check.clause("values")
    values = model.to_value(e)
    v = check.tensor(check.call(model.values, e), "values(e)")
    check.expect(tuple(v.shape) == (N, T, 1), "values(e) has shape (N, T, 1)",
                 expected=f"shape {(N, T, 1)}", got=f"shape {tuple(v.shape)}",
                 diagnoses={"the values lost their last axis: keep it, (N, T, 1)":
                            tuple(v.shape) == (N, T)})
    check.close(v, values, "values(e) = to_value(e)",
                mistakes={VALUES_FROM_KEYS: model.to_key(e)[..., :1]})
    batch_of_one(check, lambda: check.call(model.values, e[:1]), (1, T, 1),
                 "values(e) for a batch of one", {})

    # Computed before the call: a forward that changes the model (its dtype...) must not break
    # the reference.
    with torch.no_grad():
        weights = single_query_weights(model, e).float()
        attended = (weights @ values).reshape(N, 1)
        mistakes = {"forward skips the readout": attended,
                    "forward ignores the attention: a plain mean of the values":
                        model.readout(values.mean(1)),
                    "forward sums the values instead of weighting them by the attention":
                        model.readout(values.sum(1)),
                    "the sigmoid is applied twice (the readout already ends with one)":
                        torch.sigmoid(model.readout(attended)),
                    SIGMOID_ON_Z: torch.sigmoid(attended),
                    BROADCAST_PRODUCT: model.readout(broadcast_product(weights.float(),
                                                                       values))}
        expected = model.readout(attended)
    check.clause("forward")
    with crash_causes(check, FORWARD_CRASHES):
        p = check.tensor(check.call(model, x), "model(x)")
    check.shape(p, (N, 1), "model(x) for x of shape (4, 7)",
                likely=Z_NOT_FLAT if tuple(p.shape) == (N, 1, 1) else None)
    check.close(p, expected, "model(x) = readout(attention-weighted value)", mistakes=mistakes)
    p1 = batch_of_one(check, lambda: check.call(model, x[:1]), (1, 1),
                      "model(x) for a batch of one, x of shape (1, 7)", FORWARD_CRASHES)
    check.close(p1, expected[:1], "model(x) for a batch of one")

    check.clause("arguments")
    d_embed, d_att, d_hidden = 6, 4, 8
    small = check.call_seeded(25, model_class, d_embed, d_att, d_hidden)
    check_members(check, small, d_embed, d_att, d_hidden,
                  f"SingleQueryAttention({d_embed}, {d_att}, {d_hidden})", diagnoses={
                      "the constructor arguments were ignored (the sizes are the defaults)":
                          lambda: tuple(small.query.shape) == (1, 16)})
    x_small = torch.randint(0, 10, (N, T), generator=generator)
    e_small = small.embed(x_small).detach()
    a_small = check.call(small.attention, e_small)
    check.close(a_small, single_query_weights(small, e_small),
                f"attention of a model with d_embed={d_embed}, d_att={d_att} (scaled by "
                f"1/√{d_att})", mistakes={
                    "the scores were divided by sqrt(d_embed), the embedding width, instead of "
                    "sqrt(d_att)": single_query_weights(small, e_small, scale=d_embed ** -0.5),
                    HARD_CODED_SCALE: single_query_weights(small, e_small, scale=0.25),
                    SCALE_BY_D_HIDDEN: single_query_weights(small, e_small,
                                                            scale=d_hidden ** -0.5)})
    with torch.no_grad():  # before the call, as above
        expected_small = small.readout(
            (single_query_weights(small, e_small).float() @ small.to_value(e_small)).reshape(N, 1))
    p_small = check.call(small, x_small)
    check.close(p_small, expected_small, f"model(x) with d_hidden={d_hidden}")

    check.clause("init")
    check_query_init(check, check.call_seeded(24, model_class, 2, 4096, 2))

    check.clause("randomness")
    check_model_randomness(check, model_class, (26, 27), model, x)

    check.rule("device")
    check_model_device(check, check.call_seeded(28, model_class), x, e, "model")

    check.clause("gradients")
    model.train()
    model.zero_grad()
    check_gradients(check, model, check.call(model, x))
    check.passed()

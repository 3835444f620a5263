"""Hidden tests for tutorial 02 (queries, keys and values).

Every input is drawn afresh (``fresh_generator``): sizes, tensors, masks and seeds. The cases
are built so that the common mistakes give visibly different numbers: scores that are not
nearly one-hot (so a missing or wrong scale shows), d_k ≠ d_v, several leading batch
dimensions, Tq ≠ Tk, masks that keep and forbid at least one key per row (also when
inverted), padding at the start and at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.qkv_attention import (
    BROADCAST_PRODUCT,
    ENDS_HALF,
    FLOAT32_INSIDE,
    FORWARD_CRASHES,
    HARD_CODED_SCALE,
    MAX_OVER_FORBIDDEN,
    NAN_PENALTY,
    OUT_BEFORE_FIX,
    SCALE_BY_D_ATT,
    SCALE_BY_D_K,
    SCALE_BY_DV,
    SCALE_BY_SHAPE_1,
    SCALE_FROM_FRONT,
    SINGLE_QUERY_CRASHES,
    SQUEEZED,
    VALUES_FROM_KEYS,
    WHOLE_BATCH,
    allowed_rows_lost,
    batch_of_one,
    batch_pair,
    batch_shapes,
    broadcast_product,
    call_attention,
    check_gradients,
    check_members,
    check_model_randomness,
    check_query_init,
    check_randomness,
    crash_causes,
    dropped_size_one,
    ends_half,
    forbidden_on_top,
    fully_masked_diagnoses,
    fully_masked_mistakes,
    large_scores,
    nothing_left,
    out_with_nan_rows,
    overflow_diagnoses,
    whole_batch_labels,
    y_dtype_diagnoses,
)
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test


def _softmax_masked(scores: torch.Tensor, mask: torch.Tensor | None, dim: int = -1
                    ) -> torch.Tensor:
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=dim).nan_to_num(0.0)


def reference_attention(Q, K, V, mask=None, *, scale=None, dim=-1):
    """The documented behaviour in float64 (``scale``/``dim`` only to model mistakes)."""
    Q, K, V = Q.double(), K.double(), V.double()
    scale = 1.0 / math.sqrt(Q.shape[-1]) if scale is None else scale
    scores = Q @ K.transpose(-2, -1) * scale
    weights = _softmax_masked(scores, mask, dim=dim)
    return weights @ V, weights


def _attention_mistakes(Q, K, V, mask=None) -> tuple[dict, dict]:
    """Mistake description -> (out, weights) that this mistake produces."""
    dk, dv = Q.shape[-1], V.shape[-1]
    Qd, Kd, Vd = Q.double(), K.double(), V.double()
    scores = Qd @ Kd.transpose(-2, -1) / math.sqrt(dk)
    raw = Qd @ Kd.transpose(-2, -1)
    cases = {
        "the scores were not divided by sqrt(d_k)": reference_attention(Q, K, V, mask, scale=1.0),
        SCALE_BY_D_K: reference_attention(Q, K, V, mask, scale=1.0 / dk),
        SCALE_BY_DV: reference_attention(Q, K, V, mask, scale=1.0 / math.sqrt(dv)),
        "the scores were multiplied by sqrt(d_k) instead of divided":
            reference_attention(Q, K, V, mask, scale=math.sqrt(dk)),
        "softmax over the query axis (dim=-2) instead of the keys (dim=-1)":
            reference_attention(Q, K, V, mask, dim=-2),
    }
    if Q.dim() > 2:  # for 2-D inputs Q.shape[1] is d_k
        cases[SCALE_BY_SHAPE_1] = reference_attention(Q, K, V, mask,
                                                      scale=1.0 / math.sqrt(Q.shape[1]))
    if Q.dim() > 3:  # for 3-D inputs Q.shape[2] is d_k
        cases[SCALE_FROM_FRONT] = reference_attention(Q, K, V, mask,
                                                      scale=1.0 / math.sqrt(Q.shape[2]))
    weights_only = {
        "the weights were returned before the softmax (scaled scores)": scores,
        "the weights were returned before the softmax (raw scores)": raw,
    }
    if mask is not None:
        cases.update({
            "the mask was ignored": reference_attention(Q, K, V),
            "the mask was applied with 0 instead of -inf (a score of 0 still gets weight)":
                (torch.softmax(scores.masked_fill(~mask, 0.0), -1) @ Vd,
                 torch.softmax(scores.masked_fill(~mask, 0.0), -1)),
            "the mask is inverted: True means 'may attend', so fill where the mask is False":
                reference_attention(Q, K, V, ~mask),
            "the mask was applied after the softmax, so the weights no longer sum to 1":
                (torch.softmax(scores, -1) * mask @ Vd, torch.softmax(scores, -1) * mask),
        })
    return cases, weights_only


MERGED = ("the leading batch dimensions were merged into one: keep every leading dimension "
          "(K.transpose(-2, -1) and @ work for any number of them)")


def _compare(check: HiddenCheck, result: tuple, Q, K, V, mask, label: str, *,
             shapes_only: bool = False) -> None:
    out, weights = (torch.as_tensor(t) for t in result)
    expected_out, expected_w = reference_attention(Q, K, V, mask)
    swapped = tuple(out.shape) == tuple(expected_w.shape) and tuple(weights.shape) == tuple(
        expected_out.shape) and out.shape != weights.shape
    for value, reference, what in ((weights, expected_w, "weights"),
                                   (out, expected_out, "out")):
        got, wanted = tuple(value.shape), tuple(reference.shape)
        check.expect(got == wanted, f"{label}: {what} has shape {wanted}",
                     expected=f"shape {wanted}", got=f"shape {got}", diagnoses={
                         "the two results are swapped: return (out, weights)": swapped,
                         MERGED: len(wanted) > 3 and got == (math.prod(wanted[:-2]),
                                                             *wanted[-2:]),
                         SQUEEZED: dropped_size_one(got, wanted)})
    if shapes_only:
        return
    cases, weights_only = _attention_mistakes(Q, K, V, mask)
    w_mistakes = {k: w for k, (_, w) in cases.items()} | weights_only
    check.close(weights, expected_w, f"{label}: weights", mistakes=w_mistakes,
                diagnoses={NAN_PENALTY: mask is not None and nothing_left(weights)})
    o_mistakes = {k: o for k, (o, _) in cases.items()}
    check.close(out, expected_out, f"{label}: out", mistakes=o_mistakes)


def _two_sided_mask(generator: torch.Generator, Tq: int, Tk: int) -> torch.Tensor:
    """A random (Tq, Tk) mask in which every row allows one key and forbids another (so the
    inverted mask has no empty row either)."""
    mask = torch.rand(Tq, Tk, generator=generator) < 0.5
    for row in range(Tq):
        keep, drop = torch.randperm(Tk, generator=generator)[:2].tolist()
        mask[row, keep], mask[row, drop] = True, False
    return mask


def _padding_mask(generator: torch.Generator, batch: int, Tk: int) -> torch.Tensor:
    """(batch, 1, 1, Tk): each sequence has 1..Tk-1 real keys, padded at the end or the start."""
    mask = torch.zeros(batch, 1, 1, Tk, dtype=torch.bool)
    for b in range(batch):
        length = int(torch.randint(1, Tk, (1,), generator=generator))
        at_start = bool(torch.rand(1, generator=generator) < 0.5)
        if at_start:
            mask[b, ..., Tk - length:] = True
        else:
            mask[b, ..., :length] = True
    return mask


def _distinct_sizes(randint: Callable[[int, int], int]) -> tuple[int, ...]:
    """b1, b2, Tq, Tk, d_k, d_v for the 4-D case: Tq < Tk, and d_v unlike d_k, b2 and the
    other sizes a mistaken scale could be read from (so each wrong scale is told apart)."""
    b1, b2 = randint(2, 4), randint(2, 4)
    Tq = randint(3, 6)
    Tq += Tq == b2  # Q.shape[1] and Q.shape[2] read as d_k must give different scales
    Tk = Tq + randint(1, 4)
    dk = randint(4, 10)
    dk += dk == Tq  # Q.shape[2] (Tq) read as d_k must show
    dv = randint(2, 8)
    while dv in (dk, b2, Tq):
        dv += 1
    return b1, b2, Tq, Tk, dk, dv


@hidden_test
def grade_scaled_dot_product_attention(attention: Callable[..., tuple]) -> None:
    check = HiddenCheck("scaled_dot_product_attention")
    generator = fresh_generator(202)

    def randn(*shape: int, **kwargs) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, **kwargs)

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=generator))

    b1, b2, Tq, Tk, dk, dv = _distinct_sizes(randint)
    Q, K, V = randn(b1, b2, Tq, dk), randn(b1, b2, Tk, dk), randn(b1, b2, Tk, dv)
    n3 = randint(2, 6)
    Q3, K3, V3 = randn(n3, Tk, dk), randn(n3, Tq, dk), randn(n3, Tq, dv)  # Tq > Tk here
    Q2, K2, V2 = 1.5 * randn(Tq, dv), randn(Tk, dv), randn(Tk, dk)

    check.clause("shape")
    leading = f"batch dims ({b1}, {b2}), Tq={Tq}, Tk={Tk}, d_k={dk}, d_v={dv}"
    result = call_attention(check, attention, Q, K, V, f"attention on {leading}")
    _compare(check, result, Q, K, V, None, leading, shapes_only=True)
    result3 = call_attention(check, attention, Q3, K3, V3, "attention on 3-D inputs")
    _compare(check, result3, Q3, K3, V3, None, f"batch of {n3}", shapes_only=True)
    result2 = call_attention(check, attention, Q2, K2, V2, "attention on 2-D inputs")
    _compare(check, result2, Q2, K2, V2, None, "no batch dimension", shapes_only=True)
    # Sizes of 1: a batch of one (3-D) and a single query (4-D), both kept.
    one = (Q3[:1], K3[:1], V3[:1])
    result_one = call_attention(check, attention, *one, "attention on a batch of one")
    _compare(check, result_one, *one, None, "a batch of one", shapes_only=True)
    single = (Q[..., :1, :], K, V)
    result_single = call_attention(check, attention, *single, "attention for a single query")
    _compare(check, result_single, *single, None, "a single query (Tq = 1)", shapes_only=True)

    check.clause("values")
    _compare(check, result, Q, K, V, None, leading)
    _compare(check, result3, Q3, K3, V3, None, f"batch of {n3}, Tq={Tk}, Tk={Tq}")
    _compare(check, result2, Q2, K2, V2, None, f"no batch dimension, d_k={dv}, d_v={dk}")
    _compare(check, result_single, *single, None, "a single query (Tq = 1)")

    check.clause("mask")
    mask = _two_sided_mask(generator, Tq, Tk)
    result = call_attention(check, attention, Q, K, V, "attention with a mask", mask=mask)
    _compare(check, result, Q, K, V, mask, f"a ({Tq}, {Tk}) mask on batch dims ({b1}, {b2})")
    padding = _padding_mask(generator, b1, Tk)
    result = call_attention(check, attention, Q, K, V, "attention with a padding mask",
                            mask=padding)
    _compare(check, result, Q, K, V, padding, f"a ({b1}, 1, 1, {Tk}) padding mask")
    # Fully masked rows: zero weights and zero output (the documented convention).
    full = mask.clone()
    empty = torch.randperm(Tq, generator=generator)[:randint(1, Tq - 1)].sort().values.tolist()
    full[empty] = False
    out, weights = call_attention(check, attention, Q, K, V, "attention with fully masked rows",
                                  mask=full)
    expected_out, expected_w = reference_attention(Q, K, V, full)
    check.close(weights, expected_w, f"fully masked rows ({empty}) get all-zero weights",
                mistakes=fully_masked_mistakes(K, expected_w, empty),
                diagnoses=fully_masked_diagnoses(weights, Q, K, V, expected_w, empty),
                dims=("batch", "batch", "query", "key"))
    check.close(out, expected_out, "fully masked rows output zeros, the others are unaffected",
                dims=("batch", "batch", "query", "value channel"),
                mistakes={OUT_BEFORE_FIX: out_with_nan_rows(expected_out, empty)})

    check.clause("large")
    big, K_big = large_scores(generator, (n3,), Tk, Tq, dk,
                              spread=float(20 + 20 * torch.rand(1, generator=generator)))
    out, weights = call_attention(check, attention, big, K_big, V3, "attention with large scores")
    _, expected_w = reference_attention(big, K_big, V3)
    check.close(weights, expected_w, "weights for scores in the hundreds, rows far above and far "
                "below the others", diagnoses=overflow_diagnoses(weights, expected_w, big, K_big),
                dims=("batch", "query", "key"))
    _compare(check, (out, weights), big, K_big, V3, None, "large scores")
    Q_top, K_top, mask_top = forbidden_on_top(generator, (n3,), Tk, Tq, dk)
    out, weights = call_attention(check, attention, Q_top, K_top, V3, "attention with a "
                                  "forbidden key far above the allowed ones", mask=mask_top)
    _, expected_w = reference_attention(Q_top, K_top, V3, mask_top)
    check.close(weights, expected_w, "a forbidden key scoring 150 or more above the allowed "
                "ones: the allowed weights still sum to 1",
                diagnoses={MAX_OVER_FORBIDDEN: lambda: allowed_rows_lost(weights)},
                dims=("batch", "query", "key"))
    _compare(check, (out, weights), Q_top, K_top, V3, mask_top, "a forbidden key far on top")

    check.clause("dtype")
    check.dtype_follows(attention, Q, K, V, mask=full, what="attention on float64 inputs")
    n64, Tq64, Tk64 = randint(4, 8), randint(6, 10), randint(10, 16)
    dk64 = randint(5, 9)  # not a perfect square: sqrt(d_k) in float32 is then inexact
    Q64, K64, V64 = (randn(n64, T, d, dtype=torch.float64)
                     for T, d in ((Tq64, dk64), (Tk64, dk64), (Tk64, dv)))
    _, weights64 = call_attention(check, attention, Q64, K64, V64, "attention on float64 inputs")
    _, expected64 = reference_attention(Q64, K64, V64)
    check.close(weights64, expected64, "float64 weights carry float64 precision (to 1e-8)",
                atol=1e-12, rtol=1e-8, diagnoses={FLOAT32_INSIDE: lambda: bool(torch.allclose(
                    torch.as_tensor(weights64).double(), expected64, atol=1e-5))})

    check.clause("device")
    check.device_follows(attention, Q, K, V, mask=full, what="attention")
    check.passed()


# ---------------------------------------------------------------------------------------------

def _labels(X: torch.Tensor, rule: str = ">") -> torch.Tensor:
    twos, fours = (X == 2).sum(-1, keepdim=True), (X == 4).sum(-1, keepdim=True)
    return {">": twos > fours, ">=": twos >= fours, "<": twos < fours, "!=": twos != fours
            }[rule].double()


def _check_labels(check: HiddenCheck, X: torch.Tensor, y: torch.Tensor, what: str) -> None:
    mistakes = {
        "ties (as many 2s as 4s) were labelled 1: use > (strictly more), not >=":
            _labels(X, ">="),
        "the label counts 4s against 2s the wrong way round (more 4s than 2s)": _labels(X, "<"),
        "the label is 1 whenever the counts differ, not only when there are more 2s":
            _labels(X, "!="),
        WHOLE_BATCH: whole_batch_labels(X),
    }
    check.close(y.double().reshape(-1, 1), _labels(X), f"labels of {what} (1 = more 2s than 4s)",
                mistakes=mistakes, atol=1e-6, rtol=0)


@hidden_test
def grade_make_batch(make_batch: Callable[..., tuple]) -> None:
    check = HiddenCheck("make_batch")
    generator = fresh_generator(2024)
    seeds = torch.randperm(2**20, generator=generator)[:4].tolist()

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=generator))

    N = randint(2500, 3500)
    what = f"make_batch({N})"
    check.clause("shape")
    X, y = batch_pair(check, check.call_seeded(seeds[0], make_batch, N), what)
    batch_shapes(check, X, y, N, 10, what)

    check.clause("dtype")
    check.expect(X.dtype == torch.int64, f"X of {what} is int64", expected="torch.int64",
                 got=str(X.dtype), diagnoses={
                     "X holds floats: keep the digits int64 (torch.randint), nn.Embedding "
                     "needs them": X.is_floating_point()})
    check.expect(y.dtype == torch.float32, f"y of {what} is float32", expected="torch.float32",
                 got=str(y.dtype), diagnoses=y_dtype_diagnoses(y))

    check.clause("values")
    check.expect(bool(((X >= 0) & (X <= 9)).all()), f"digits of {what} are 0..9",
                 expected="0 <= X <= 9", got=f"min {int(X.min())}, max {int(X.max())}")
    shares = torch.bincount(X.flatten(), minlength=10).double() / X.numel()
    check.expect(bool(shares[9] > 0.07), "the digit 9 occurs", expected="about 10% nines",
                 got=f"{shares[9]:.3f}", diagnoses={
                     "there is no 9: torch.randint's upper bound is excluded, randint(0, 10)":
                         bool(shares[9] == 0), ENDS_HALF: ends_half(shares)})
    check.expect(bool(shares[0] > 0.07), "the digit 0 occurs", expected="about 10% zeros",
                 got=f"{shares[0]:.3f}", diagnoses={
                     "there is no 0: digits start at 0, randint(0, 10)": bool(shares[0] == 0),
                     ENDS_HALF: ends_half(shares)})
    check.expect(bool(((shares - 0.1).abs() < 0.02).all()), "digits are uniformly distributed",
                 expected="each about 0.10", got=", ".join(f"{s:.3f}" for s in shares.tolist()),
                 diagnoses={ENDS_HALF: ends_half(shares)})
    _check_labels(check, X, y, what)

    check.clause("arguments")
    T_short, T_long = randint(2, 9), randint(11, 30)
    for args, kwargs in (((1, T_short), {}), ((randint(200, 600),), {"T": T_short}),
                         ((randint(200, 600), T_long), {})):
        n, T = args[0], kwargs.get("T", args[-1])
        what = "make_batch(" + ", ".join([*map(str, args), *(f"{k}={v}" for k, v in
                                                            kwargs.items())]) + ")"
        X_a, y_a = batch_pair(check, check.call_seeded(seeds[1], make_batch, *args, **kwargs),
                              what)
        batch_shapes(check, X_a, y_a, n, T, what)
        _check_labels(check, X_a, y_a, what)

    check.clause("randomness")
    check_randomness(check, make_batch, (seeds[0], seeds[2]), N, X)
    check.passed()


# ---------------------------------------------------------------------------------------------

def _reference_weights(model: nn.Module, e: torch.Tensor, *, scale: float | None = None,
                       softmax: bool = True) -> torch.Tensor:
    with torch.no_grad():
        keys = model.to_key(e).double()  # (N, T, d_att)
        query = model.query.double().reshape(-1)
    scale = 1.0 / math.sqrt(query.numel()) if scale is None else scale
    scores = (keys @ query * scale).unsqueeze(1)  # (N, 1, T)
    return torch.softmax(scores, dim=-1) if softmax else scores


def _set_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Every parameter drawn here, the query and keys so that the scores are moderate (a
    wrong scale shows), the rest so that no mistake hides behind a convenient value."""
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            parameter.copy_(0.8 * torch.randn(parameter.shape, generator=generator))
        model.query.copy_(1.5 * torch.randn(model.query.shape, generator=generator))
        model.to_key.weight.copy_(torch.randn(model.to_key.weight.shape, generator=generator))


def _expected_forward(model: nn.Module, e: torch.Tensor, weights: torch.Tensor
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """readout(Σ w v) and what the usual mistakes of forward give instead."""
    with torch.no_grad():
        values = model.to_value(e)
        attended = (weights.float() @ values).reshape(-1, 1)
        mistakes = {
            "forward ignores the attention (uniform average of the values)":
                model.readout(values.mean(1)),
            "forward sums the values instead of weighting them by the attention":
                model.readout(values.sum(1)),
            "forward skips the readout": attended,
            "the sigmoid is applied twice (the readout already ends with one)":
                torch.sigmoid(model.readout(attended)),
            BROADCAST_PRODUCT: model.readout(broadcast_product(weights.float(), values)),
        }
        return model.readout(attended), mistakes


@hidden_test
def grade_SingleQueryAttention(model_class: type[nn.Module]) -> None:
    check = HiddenCheck("SingleQueryAttention")
    generator = fresh_generator(2002)
    seeds = torch.randperm(2**20, generator=generator)[:6].tolist()

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=generator))

    check.clause("members")
    model = check.call_seeded(seeds[0], model_class)
    check_members(check, model, 16, 16, 32, "SingleQueryAttention()", diagnoses={
        "the default arguments were changed: d_embed=16, d_att=16, d_hidden=32":
            lambda: tuple(model.query.shape) != (1, 16) and model.query.dim() == 2})

    _set_parameters(model, generator)
    N, T = randint(3, 7), randint(5, 12)
    x = torch.randint(0, 10, (N, T), generator=generator)
    with torch.no_grad():
        e = model.embed(x)
    check.clause("attention")
    with crash_causes(check, SINGLE_QUERY_CRASHES):
        a = check.tensor(check.call(model.attention, e), "attention(e)")
    check.expect(tuple(a.shape) == (N, 1, T), f"attention(e) for e {(N, T, 16)} has shape "
                 f"{(N, 1, T)}", expected=f"shape {(N, 1, T)}", got=f"shape {tuple(a.shape)}",
                 diagnoses={"the weights come out as (N, T, 1): move the positions to the last "
                            "axis, (N, 1, T)": tuple(a.shape) == (N, T, 1)})
    check.expect(bool((a >= -1e-7).all()) and torch.allclose(
        a.double().sum(-1), torch.ones(N, 1, dtype=torch.float64), atol=1e-5),
        "attention is a distribution over the positions",
        expected="non-negative weights summing to 1 over the T positions",
        got=describe_sums(a),
        diagnoses={"the softmax ran over the axis of size 1 (the query axis), which makes every "
                   "weight 1: take it over the T positions":
                   lambda: bool(torch.allclose(a, torch.ones_like(a))),
                   "the weights were returned before the softmax (the scores)":
                   lambda: bool(torch.allclose(a.double(), _reference_weights(
                       model, e, softmax=False), atol=1e-5))})
    check.close(a, _reference_weights(model, e), "attention = softmax(query·key / sqrt(d_att))",
                mistakes={
                    "the scores were not divided by sqrt(d_att)": _reference_weights(model, e,
                                                                                   scale=1.0),
                    SCALE_BY_D_ATT: _reference_weights(model, e, scale=1.0 / 16),
                })
    a1 = batch_of_one(check, lambda: check.call(model.attention, e[:1]), (1, 1, T),
                      f"attention(e) for a batch of one, e {(1, T, 16)}", SINGLE_QUERY_CRASHES)
    check.close(a1, _reference_weights(model, e[:1]), "attention for a batch of one")

    check.clause("values")
    v = check.tensor(check.call(model.values, e), "values(e)")
    check.expect(tuple(v.shape) == (N, T, 1), f"values(e) for e {(N, T, 16)} has shape "
                 f"{(N, T, 1)}", expected=f"shape {(N, T, 1)}", got=f"shape {tuple(v.shape)}",
                 diagnoses={"the values lost their last axis: keep it, (N, T, 1)":
                            tuple(v.shape) == (N, T)})
    with torch.no_grad():
        check.close(v, model.to_value(e), "values(e) = to_value(e)",
                    mistakes={VALUES_FROM_KEYS: model.to_key(e)[..., :1]})
    batch_of_one(check, lambda: check.call(model.values, e[:1]), (1, T, 1),
                 f"values(e) for a batch of one, e {(1, T, 16)}", {})

    check.clause("forward")
    with crash_causes(check, FORWARD_CRASHES):
        p = check.tensor(check.call(model, x), "model(x)")
    check.shape(p, (N, 1), f"model(x) for x {(N, T)}")
    expected, mistakes = _expected_forward(model, e, _reference_weights(model, e))
    check.close(p, expected, "model(x) = readout(attention @ values)", mistakes=mistakes)
    p1 = batch_of_one(check, lambda: check.call(model, x[:1]), (1, 1),
                      f"model(x) for a batch of one, x {(1, T)}", FORWARD_CRASHES)
    check.close(p1, expected[:1], "model(x) for a batch of one")

    check.clause("arguments")
    d_embed, d_att, d_hidden = randint(5, 12), randint(2, 9), randint(3, 12)
    d_att += d_att == d_embed
    small = check.call_seeded(seeds[2], model_class, d_embed=d_embed, d_att=d_att,
                              d_hidden=d_hidden)
    name = f"SingleQueryAttention(d_embed={d_embed}, d_att={d_att}, d_hidden={d_hidden})"
    check_members(check, small, d_embed, d_att, d_hidden, name, diagnoses={
        "the constructor arguments were ignored (the sizes are the defaults, 16)":
            lambda: tuple(small.query.shape) == (1, 16)})
    _set_parameters(small, generator)
    with torch.no_grad():
        e_small = small.embed(x)
    a_small = check.call(small.attention, e_small)
    check.close(a_small, _reference_weights(small, e_small),
                f"attention of {name} (scaled by 1/sqrt({d_att}))", mistakes={
                    "the scores were divided by sqrt(d_embed) instead of sqrt(d_att)":
                        _reference_weights(small, e_small, scale=1.0 / math.sqrt(d_embed)),
                    HARD_CODED_SCALE: _reference_weights(small, e_small, scale=0.25)})
    p_small = check.call(small, x)
    expected_small, _ = _expected_forward(small, e_small, _reference_weights(small, e_small))
    check.close(p_small, expected_small, f"model(x) of {name}")

    check.clause("init")
    check_query_init(check, check.call_seeded(seeds[1], model_class, d_embed=2, d_att=4096,
                                              d_hidden=2))

    check.clause("randomness")
    check_model_randomness(check, model_class, (seeds[4], seeds[5]), model, x)

    check.clause("gradients")
    model.train()
    model.zero_grad()
    check_gradients(check, model, check.call_seeded(seeds[3], model, x))
    check.passed()


def describe_sums(a: torch.Tensor) -> str:
    """The row sums of attention weights, briefly."""
    sums = a.double().sum(-1).reshape(-1)
    return "row sums " + ", ".join(f"{s:.3g}" for s in sums[:4].tolist()) + (
        ", ..." if sums.numel() > 4 else "")

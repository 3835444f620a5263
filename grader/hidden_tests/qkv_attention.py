"""Hidden tests for tutorial 02 (queries, keys and values).

The cases are built so that the common mistakes give visibly different numbers: scores
that are not nearly one-hot (so a missing or wrong scale shows), d_k > 1 and d_k != d_v,
several leading batch dimensions, Tq != Tk, masks that keep at least one key per row.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.framework import describe
from helpers.checks.qkv_attention import (
    FULLY_MASKED_NAN,
    FULLY_MASKED_UNIFORM,
    ONLY_2D,
    call_or_explain,
    works_without_batch,
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
        "the scores were divided by d_k instead of sqrt(d_k)":
            reference_attention(Q, K, V, mask, scale=1.0 / dk),
        "the scores were divided by sqrt(d_v) (V's width) instead of sqrt(d_k)":
            reference_attention(Q, K, V, mask, scale=1.0 / math.sqrt(dv)),
        "the scores were multiplied by sqrt(d_k) instead of divided":
            reference_attention(Q, K, V, mask, scale=math.sqrt(dk)),
        "softmax over the query axis (dim=-2) instead of the keys (dim=-1)":
            reference_attention(Q, K, V, mask, dim=-2),
    }
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


def _compare(check: HiddenCheck, result, Q, K, V, mask, label: str) -> None:
    check.expect(isinstance(result, tuple | list) and len(result) == 2,
                 f"{label}: returns (out, weights)", expected="a pair (out, weights)",
                 got=describe(result))
    out, weights = (torch.as_tensor(t) for t in result)
    expected_out, expected_w = reference_attention(Q, K, V, mask)
    swapped = tuple(out.shape) == tuple(expected_w.shape) and tuple(weights.shape) == tuple(
        expected_out.shape) and out.shape != weights.shape
    merged = ("the leading batch dimensions were merged into one: keep every leading "
              "dimension (K.transpose(-2, -1) and @ work for any number of them)")
    for value, reference, what in ((weights, expected_w, "weights"),
                                   (out, expected_out, "out")):
        got, wanted = tuple(value.shape), tuple(reference.shape)
        check.expect(got == wanted, f"{label}: {what} has shape {wanted}",
                     expected=f"shape {wanted}", got=f"shape {got}", diagnoses={
                         "the two results are swapped: return (out, weights)": swapped,
                         merged: len(wanted) > 3 and got == (math.prod(wanted[:-2]),
                                                             *wanted[-2:])})
    cases, weights_only = _attention_mistakes(Q, K, V, mask)
    w_mistakes = {k: w for k, (_, w) in cases.items()} | weights_only
    check.close(weights, expected_w, f"{label}: weights", mistakes=w_mistakes)
    o_mistakes = {k: o for k, (o, _) in cases.items()}
    check.close(out, expected_out, f"{label}: out", mistakes=o_mistakes)


@hidden_test
def grade_scaled_dot_product_attention(attention: Callable[..., tuple]) -> None:
    check = HiddenCheck("scaled_dot_product_attention")
    generator = fresh_generator(202)

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    # 1. Two leading batch dimensions, Tq != Tk, d_k != d_v, moderate scores.
    Q, K, V = randn(2, 3, 4, 8), randn(2, 3, 6, 8), randn(2, 3, 6, 5)
    originals = [t.clone() for t in (Q, K, V)]
    result = call_or_explain(check, attention, Q, K, V, what="attention on inputs (2, 3, T, d)",
                             crashes={ONLY_2D: lambda text: works_without_batch(attention, Q, K, V)})
    for name, tensor, original in zip("QKV", (Q, K, V), originals, strict=True):
        check.close(tensor, original, f"{name} is left unchanged",
                    likely="an input was changed in place (e.g. `Q /= ...`): compute new "
                           "tensors instead")
    _compare(check, result, Q, K, V, None, "batch dims (2, 3), Tq=4, Tk=6, d_k=8, d_v=5")

    # 2. One batch dimension, and none at all.
    Q3, K3, V3 = randn(5, 3, 4), randn(5, 7, 4), randn(5, 7, 2)
    result = call_or_explain(check, attention, Q3, K3, V3, what="attention on 3-D inputs")
    _compare(check, result, Q3, K3, V3, None, "batch of 5, Tq=3, Tk=7, d_k=4, d_v=2")
    Q2, K2, V2 = 1.5 * randn(4, 6), randn(3, 6), randn(3, 3)
    result = call_or_explain(check, attention, Q2, K2, V2,
                             what="attention on 2-D inputs (no batch dimension)")
    _compare(check, result, Q2, K2, V2, None, "no batch dimension, Tq=4, Tk=3, d_k=6")

    # 3. A (Tq, Tk) mask broadcast over the batch; each row keeps and blocks some keys.
    mask = torch.tensor([[True, False, True, False, True, False],
                         [False, True, True, True, False, False],
                         [True, True, False, False, False, True],
                         [False, False, False, False, True, True]])
    result = call_or_explain(check, attention, Q, K, V, mask=mask, what="attention with a mask")
    _compare(check, result, Q, K, V, mask, "mask (Tq, Tk) on batch dims (2, 3)")

    # 4. A key-padding mask of shape (2, 1, 1, Tk).
    padding = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    padding[0, ..., 4:] = False
    padding[1, ..., 2:] = False
    result = call_or_explain(check, attention, Q, K, V, mask=padding,
                             what="attention with a (2, 1, 1, Tk) padding mask")
    _compare(check, result, Q, K, V, padding, "padding mask (2, 1, 1, Tk)")

    # 5. Fully masked rows: zero weights and zero output (the documented convention).
    full = mask.clone()
    full[1] = False
    full[3] = False
    result = call_or_explain(check, attention, Q, K, V, mask=full,
                             what="attention with fully masked rows")
    out, weights = (torch.as_tensor(t) for t in result)
    expected_out, expected_w = reference_attention(Q, K, V, full)
    nan_rows, uniform = expected_w.clone(), expected_w.clone()
    nan_rows[..., [1, 3], :] = float("nan")
    uniform[..., [1, 3], :] = 1.0 / 6
    check.close(weights, expected_w, "fully masked rows (1 and 3) get all-zero weights",
                mistakes={FULLY_MASKED_NAN: nan_rows, FULLY_MASKED_UNIFORM: uniform},
                dims=("batch", "batch", "query", "key"))
    check.close(out, expected_out, "fully masked rows output zeros, the others are unaffected",
                dims=("batch", "batch", "query", "value channel"))

    # 6. Large scores must not overflow.
    Qbig = 100 * randn(2, 3, 4)
    result = call_or_explain(check, attention, Qbig, K3[:2, :5], V3[:2, :5],
                             what="attention with large scores")
    out, weights = (torch.as_tensor(t) for t in result)
    _, expected_w = reference_attention(Qbig, K3[:2, :5], V3[:2, :5])
    broken = ~torch.isfinite(weights).all(-1) | (weights.abs().sum(-1) == 0)
    rest_right = torch.allclose(weights[~broken].double(), expected_w[~broken], atol=1e-5)
    check.close(weights, expected_w, "weights for scores in the hundreds", diagnoses={
        "exp of scores in the hundreds overflows to inf (or underflows to 0 for every key): "
        "use torch.softmax, which subtracts the maximum, instead of exp / sum":
            bool(broken.any()) and rest_right}, dims=("batch", "query", "key"))
    _compare(check, result, Qbig, K3[:2, :5], V3[:2, :5], None, "large scores")
    check.passed()


# ---------------------------------------------------------------------------------------------

def _labels(X: torch.Tensor, rule: str = ">") -> torch.Tensor:
    twos, fours = (X == 2).sum(-1, keepdim=True), (X == 4).sum(-1, keepdim=True)
    return {">": twos > fours, ">=": twos >= fours, "<": twos < fours, "!=": twos != fours
            }[rule].double()


@hidden_test
def grade_make_batch(make_batch: Callable[..., tuple]) -> None:
    check = HiddenCheck("make_batch")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2024)
        for N, T in ((3000, 10), (1, 10), (500, 3), (400, 25)):
            args = (N,) if T == 10 and N != 1 else (N, T)
            result = check.call(make_batch, *args)
            check.expect(isinstance(result, tuple | list) and len(result) == 2,
                         "returns (X, y)", expected="a pair (X, y)", got=describe(result))
            X, y = result
            check.tensor(X, "X")
            check.tensor(y, "y")
            what = f"make_batch({', '.join(str(a) for a in args)})"
            check.shape(X, (N, T), f"X of {what}",
                        likely="T is ignored: the sequences must have T digits, not always 10"
                        if T != 10 and tuple(X.shape) == (N, 10) else None)
            check.expect(tuple(y.shape) == (N, 1), f"y of {what} has shape ({N}, 1)",
                         expected=f"shape ({N}, 1)", got=f"shape {tuple(y.shape)}", diagnoses={
                             "y has no column axis: shape (N, 1), not (N,)":
                                 tuple(y.shape) == (N,)})
            check.expect(X.dtype == torch.int64, f"X of {what} is int64",
                         expected="torch.int64", got=str(X.dtype))
            check.expect(y.dtype.is_floating_point, f"y of {what} is a float tensor",
                         expected="a float dtype", got=str(y.dtype))
            check.expect(bool(((X >= 0) & (X <= 9)).all()), f"digits of {what} are 0..9",
                         expected="0 <= X <= 9", got=f"min {int(X.min())}, max {int(X.max())}")
            mistakes = {
                "ties (as many 2s as 4s) were labelled 1: use > (strictly more), not >=":
                    _labels(X, ">="),
                "the label counts 4s against 2s the wrong way round (more 4s than 2s)":
                    _labels(X, "<"),
                "the label is 1 whenever the counts differ, not only when there are more 2s":
                    _labels(X, "!="),
            }
            check.close(y.double(), _labels(X), f"labels of {what} (1 = more 2s than 4s)",
                        mistakes=mistakes, atol=1e-6, rtol=0)
            if N == 3000:
                shares = torch.bincount(X.flatten(), minlength=10).double() / X.numel()
                check.expect(bool(shares[9] > 0.07), "the digit 9 occurs",
                             expected="about 10% nines", got=f"{shares[9]:.3f}",
                             diagnoses={"there is no 9: torch.randint's upper bound is "
                                        "excluded, randint(0, 10)": bool(shares[9] == 0)})
                check.expect(bool(shares[0] > 0.07), "the digit 0 occurs",
                             expected="about 10% zeros", got=f"{shares[0]:.3f}",
                             diagnoses={"there is no 0: digits start at 0, randint(0, 10)":
                                        bool(shares[0] == 0)})
                check.expect(bool(((shares - 0.1).abs() < 0.02).all()),
                             "digits are uniformly distributed", expected="each about 0.10",
                             got=", ".join(f"{s:.3f}" for s in shares.tolist()))
                ties = (_labels(X, ">=") - _labels(X)).sum()
                check.expect(bool(ties > 300), "the batch contains ties", expected="many ties",
                             got=f"{int(ties)} rows with as many 2s as 4s")
                first = X
        X_again, _ = check.call(make_batch, 3000)
        check.expect(not torch.equal(first, torch.as_tensor(X_again)),
                     "two calls give different data", expected="fresh random batches",
                     got="identical batches",
                     likely="make_batch reseeds the generator: call set_seed outside, once")
    check.passed()


# ---------------------------------------------------------------------------------------------

def _reference_weights(model: nn.Module, e: torch.Tensor, *, scale: float | None = None,
                       dim: int = -1) -> torch.Tensor:
    keys = model.to_key(e).double()  # (N, T, d_att)
    query = model.query.double().reshape(-1)
    scale = 1.0 / math.sqrt(query.numel()) if scale is None else scale
    scores = (keys @ query * scale).unsqueeze(1)  # (N, 1, T)
    return torch.softmax(scores, dim=dim) if dim is not None else scores


@hidden_test
def grade_SingleQueryAttention(model_class: type[nn.Module]) -> None:
    check = HiddenCheck("SingleQueryAttention")
    generator = fresh_generator(2002)
    d_embed, d_att, d_hidden = 6, 4, 8
    model = call_or_explain(check, model_class, d_embed=d_embed, d_att=d_att, d_hidden=d_hidden,
                            what="SingleQueryAttention(d_embed=6, d_att=4, d_hidden=8)")
    check.expect(isinstance(model, nn.Module), "the model is an nn.Module", expected="nn.Module",
                 got=describe(model))
    for name in ("embed", "query", "to_key", "to_value", "readout"):
        check.expect(hasattr(model, name), f"member `{name}` exists", expected=f"self.{name}",
                     got="missing")
    check.expect(any(p is model.query for p in model.parameters()),
                 "the query is a learnable parameter", expected="an nn.Parameter",
                 got=type(model.query).__name__,
                 likely="the query is a plain tensor, not an nn.Parameter, so it is never trained")
    sizes = (model.embed.num_embeddings, model.embed.embedding_dim, tuple(model.query.shape),
             model.to_key.in_features, model.to_key.out_features, model.to_value.out_features)
    check.expect(sizes == (10, d_embed, (1, d_att), d_embed, d_att, 1),
                 "the sizes follow the constructor arguments",
                 expected="Embedding(10, 6), query (1, 4), to_key 6 -> 4, to_value -> 1",
                 got=f"Embedding({sizes[0]}, {sizes[1]}), query {sizes[2]}, to_key "
                     f"{sizes[3]} -> {sizes[4]}, to_value -> {sizes[5]}",
                 diagnoses={"the constructor arguments were ignored (the sizes are the "
                            "defaults, 16)": sizes[1] == 16 and sizes[2] == (1, 16)})
    readout_modules = list(model.readout.modules()) if isinstance(model.readout, nn.Module) else []
    check.expect(bool(readout_modules) and isinstance(readout_modules[-1], nn.Sigmoid),
                 "the readout ends with a sigmoid", expected="... nn.Sigmoid()",
                 got=describe(model.readout),
                 likely="the readout does not end with nn.Sigmoid(), so model(x) is not a "
                        "probability")

    # Every parameter chosen here, the query and keys so that the scores are moderate (a
    # wrong scale shows), the rest so that no mistake hides behind a convenient init.
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            parameter.copy_(0.8 * torch.randn(parameter.shape, generator=generator))
        model.query.copy_(1.5 * torch.randn(model.query.shape, generator=generator))
        model.to_key.weight.copy_(torch.randn(model.to_key.weight.shape, generator=generator))
        model.to_key.bias.copy_(0.3 * torch.randn(model.to_key.bias.shape, generator=generator))
    N, T = 5, 7
    x = torch.randint(0, 10, (N, T), generator=generator)
    e = model.embed(x).detach()
    a = check.tensor(call_or_explain(check, model.attention, e, what="model.attention(e)",
                                     crashes={"attention embeds its input again: it receives "
                                              "the embeddings e, not the digits":
                                              lambda text: "indices" in text}),
                     "attention(e)")
    check.expect(tuple(a.shape) == (N, 1, T), f"attention(e) for e (5, 7, 6) has shape {(N, 1, T)}",
                 expected=f"shape {(N, 1, T)}", got=f"shape {tuple(a.shape)}",
                 diagnoses={"the weights come out as (N, T, 1): move the positions to the last "
                            "axis, (N, 1, T)": tuple(a.shape) == (N, T, 1)})
    check.expect(bool((a >= -1e-7).all()) and torch.allclose(
        a.double().sum(-1), torch.ones(N, 1, dtype=torch.float64), atol=1e-5),
        "attention is a distribution over the positions",
        expected="non-negative weights summing to 1 over the T positions",
        got=describe(a.sum(-1)),
        diagnoses={"the softmax ran over the axis of size 1 (the query axis), which makes every "
                   "weight 1: take it over the T positions":
                   lambda: bool(torch.allclose(a, torch.ones_like(a))),
                   "the weights were returned before the softmax (the scores)":
                   lambda: bool(torch.allclose(a.double(), _reference_weights(model, e, dim=None),
                                               atol=1e-5))})
    check.close(a, _reference_weights(model, e), "attention = softmax(query·key / sqrt(d_att))",
                mistakes={
                    "the scores were not divided by sqrt(d_att)": _reference_weights(model, e,
                                                                                   scale=1.0),
                    "the scores were divided by d_att instead of sqrt(d_att)":
                        _reference_weights(model, e, scale=1.0 / d_att),
                    "the scores were divided by sqrt(d_embed) instead of sqrt(d_att)":
                        _reference_weights(model, e, scale=1.0 / math.sqrt(d_embed)),
                })
    v = check.tensor(check.call(model.values, e), "values(e)")
    check.expect(tuple(v.shape) == (N, T, 1), "values(e) for e (5, 7, 6) has shape (5, 7, 1)",
                 expected=f"shape {(N, T, 1)}", got=f"shape {tuple(v.shape)}",
                 diagnoses={"the values lost their last axis: keep it, (N, T, 1)":
                            tuple(v.shape) == (N, T)})
    check.close(v, model.to_value(e), "values(e) = to_value(e)")
    p = check.tensor(check.call(model, x), "model(x)")
    check.shape(p, (N, 1), "model(x) for x (5, 7)")
    weights = _reference_weights(model, e)
    values = model.to_value(e).double()
    readout = model.readout.double()
    try:
        expected = readout((weights @ values).reshape(N, 1))
        mistakes = {
            "forward ignores the attention (uniform average of the values)":
                readout(values.mean(1)),
            "forward sums the values instead of weighting them by the attention":
                readout(values.sum(1)),
            "forward skips the readout": (weights @ values).reshape(N, 1),
        }
    finally:
        model.readout.float()
    check.close(p, expected, "model(x) = readout(attention @ values)", mistakes=mistakes)

    model.zero_grad()
    model(x).sum().backward()
    for name, parameter in (("query", model.query), ("to_key.weight", model.to_key.weight),
                            ("to_value.weight", model.to_value.weight),
                            ("embed.weight", model.embed.weight)):
        grad = parameter.grad
        check.expect(grad is not None and bool(grad.abs().sum() > 0),
                     f"the loss reaches {name}", expected="a non-zero gradient",
                     got="None" if grad is None else "zeros",
                     likely="the result is right but the gradient is cut on its way: a "
                            ".detach(), torch.no_grad() or a NumPy round trip inside the model")

    default = check.call(model_class)
    check.expect(tuple(default.query.shape) == (1, 16) and default.embed.embedding_dim == 16,
                 "the defaults are d_embed=16, d_att=16", expected="query (1, 16), Embedding(10, 16)",
                 got=f"query {tuple(default.query.shape)}, Embedding(10, "
                     f"{default.embed.embedding_dim})",
                 likely="the default arguments were changed: d_embed=16, d_att=16")
    check.passed()

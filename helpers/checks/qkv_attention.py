"""Self-checks for tutorial 02 (queries, keys and values).

They test properties (shapes, rows that sum to one, masks respected, labels that agree with
the data) and agreement with PyTorch's ``F.scaled_dot_product_attention``; they never contain
an exercise's solution. A likely mistake is named only when the result has its signature
(it matches what PyTorch's function gives with that mistake built in, or a property that
only that mistake breaks); otherwise the message says what differs and where.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from helpers.checks.framework import SelfCheck, describe

QKV_DIMS = ("batch", "query", "key")
BMM = ("torch.bmm accepts 3-D tensors only: use @ (torch.matmul), which treats every leading "
       "dimension as a batch dimension")
ONLY_2D = ("the function works for 2-D inputs (no batch dimension) but fails with one: something "
           "there handles exactly two axes, like `.T`, which reverses every axis, or torch.mm; "
           "transpose only the last two axes and multiply with @")
ZERO_FILL = "forbidden scores were set to 0 instead of -inf: e^0 = 1 still gives them weight"
FULLY_MASKED_NAN = ("a fully masked row comes out of the softmax as nan (every score is -inf, "
                    "0/0): set the weights of such rows to 0")
FULLY_MASKED_UNIFORM = ("a large finite fill value (like -1e9) spreads a fully masked row "
                        "uniformly over the forbidden keys: fill with -inf, then set the nan "
                        "rows to 0")


def call_or_explain(check: SelfCheck, fn: Callable[..., Any], *args: Any, what: str,
                    crashes: dict[str, Callable[[str], bool]] | None = None, **kwargs: Any) -> Any:
    """Call the student's code; on a crash, say so, naming the cause when the error message
    shows it (torch.bmm on other than 3-D tensors; ``crashes``: more such causes)."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as error:
        check.not_implemented(error)
    except Exception as error:  # noqa: BLE001 - any crash is reported to the student
        text = f"{type(error).__name__}: {error}"
        causes = {BMM: "3D" in text or "bmm" in text}
        causes.update({cause: matches(text) for cause, matches in (crashes or {}).items()})
        check.expect(False, f"{what} runs without an error", expected="a result", got=text,
                     diagnoses=causes)


def works_without_batch(attention: Callable[..., tuple], Q: torch.Tensor, K: torch.Tensor,
                        V: torch.Tensor) -> bool:
    """Whether ``attention`` gives PyTorch's result on the first 2-D slice of the inputs."""
    first = (0,) * (Q.dim() - 2)
    try:
        out, _ = attention(Q[first], K[first], V[first])
        return bool(torch.allclose(torch.as_tensor(out).double(), F.scaled_dot_product_attention(
            Q[first], K[first], V[first]).double(), atol=1e-5))
    except Exception:  # noqa: BLE001 - any failure means "no"
        return False


def _pair(check: SelfCheck, result: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    check.expect(isinstance(result, tuple | list) and len(result) == 2,
                 f"{what} returns a pair (out, weights)", expected="a tuple (out, weights)",
                 got=describe(result))
    out, weights = result
    check.tensor(out, f"{what}: out")
    check.tensor(weights, f"{what}: weights")
    return out, weights


def _builtin(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None = None,
             scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and weights from PyTorch's own function (weights: attend to one-hot values).

    Rows with nothing allowed are set to zero (older PyTorch versions return nan there)."""
    eye = torch.eye(K.shape[-2], dtype=Q.dtype)
    weights = F.scaled_dot_product_attention(Q, K, eye, attn_mask=mask, scale=scale)
    out = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask, scale=scale)
    return out.nan_to_num(0.0), weights.nan_to_num(0.0)


def _weight_mistakes(Q: torch.Tensor, K: torch.Tensor, mask: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor]:
    """What the usual mistakes give as weights, from PyTorch's function with the mistake built in."""
    dk = Q.shape[-1]
    mistakes = {
        "the scores were not divided by sqrt(d_k)": _builtin(Q, K, K, mask, scale=1.0)[1],
        "the scores were divided by d_k instead of sqrt(d_k)":
            _builtin(Q, K, K, mask, scale=1.0 / dk)[1],
    }
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


def _zero_filled(weights: torch.Tensor, correct: torch.Tensor, mask: torch.Tensor) -> bool:
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


def check_scaled_dot_product_attention(attention: Callable[..., tuple]) -> None:
    """Shapes, distributions over keys, agreement with F.scaled_dot_product_attention, masks."""
    check = SelfCheck("scaled_dot_product_attention")
    generator = torch.Generator().manual_seed(21)
    B, Tq, Tk, dk, dv = 2, 3, 5, 8, 6
    Q = torch.randn(B, Tq, dk, generator=generator)
    K = torch.randn(B, Tk, dk, generator=generator)
    V = torch.randn(B, Tk, dv, generator=generator)
    originals = [t.clone() for t in (Q, K, V)]
    out, weights = _pair(check, call_or_explain(
        check, attention, Q, K, V, what="attention(Q, K, V) for 3-D inputs",
        crashes={ONLY_2D: lambda text: works_without_batch(attention, Q, K, V)}),
        "attention(Q, K, V)")
    check.expect(tuple(weights.shape) == (B, Tq, Tk), f"weights for Q {(B, Tq, dk)} and K "
                 f"{(B, Tk, dk)} have shape {(B, Tq, Tk)}", expected=f"shape {(B, Tq, Tk)}",
                 got=f"shape {tuple(weights.shape)}", diagnoses={
                     "the pair is returned the wrong way round: (out, weights), not "
                     "(weights, out)": tuple(out.shape) == (B, Tq, Tk)
                     and tuple(weights.shape) == (B, Tq, dv)})
    check.shape(out, (B, Tq, dv), f"out for V {(B, Tk, dv)}")
    for name, tensor, original in zip("QKV", (Q, K, V), originals, strict=True):
        check.close(tensor, original, f"{name} is left unchanged",
                    likely="an input was changed in place (e.g. `Q /= ...`): compute new "
                           "tensors instead")
    expected_out, expected_w = _builtin(Q, K, V)
    check.close(weights, expected_w, "weights agree with PyTorch's (softmax of QKᵀ/√d_k over the "
                "keys)", dims=QKV_DIMS, mistakes=_weight_mistakes(Q, K), diagnoses={
                    "the softmax runs over the queries (dim=-2), not over the keys (dim=-1)":
                        lambda: bool(torch.allclose(weights.sum(-2), torch.ones(B, Tk),
                                                    atol=1e-5)),
                    "the weights were returned before the softmax (the scores)":
                        lambda: bool(torch.allclose(torch.softmax(weights, -1), expected_w,
                                                    atol=1e-5)),
                })
    check.close(out, expected_out, "out agrees with F.scaled_dot_product_attention",
                dims=("batch", "query", "value channel"))

    # Any number of leading dimensions, including none.
    Q4 = torch.randn(2, 3, Tq, dk, generator=generator)
    K4 = torch.randn(2, 3, Tk, dk, generator=generator)
    V4 = torch.randn(2, 3, Tk, dv, generator=generator)
    out4, _ = _pair(check, call_or_explain(check, attention, Q4, K4, V4,
                                           what="attention on 4-D inputs (2, 3, T, d)",
                                           crashes={ONLY_2D: lambda text: works_without_batch(
                                               attention, Q4, K4, V4)}),
                    "4-D attention")
    check.shape(out4, (2, 3, Tq, dv), "out for 4-D inputs")
    check.close(out4, F.scaled_dot_product_attention(Q4, K4, V4), "4-D out agrees with PyTorch's")
    out2, _ = _pair(check, call_or_explain(check, attention, Q[0], K[0], V[0],
                                           what="attention on 2-D inputs (T, d)"), "2-D attention")
    check.shape(out2, (Tq, dv), "out for 2-D inputs (no batch dimension)")
    check.close(out2, F.scaled_dot_product_attention(Q[0], K[0], V[0]),
                "2-D out (no batch dimension) agrees with PyTorch's")

    # A mask: True = may attend. Every row keeps at least one key.
    mask = torch.tensor([[True, False, True, False, True],
                         [True, True, False, False, False],
                         [False, False, False, True, True]])
    mask_copy = mask.clone()
    out_m, weights_m = _pair(check, check.call(attention, Q, K, V, mask=mask), "masked attention")
    check.expect(bool(torch.equal(mask, mask_copy)), "the mask is left unchanged",
                 expected="mask unchanged", got="the mask was modified",
                 likely="the mask was changed in place")
    expected_out_m, expected_w_m = _builtin(Q, K, V, mask)
    check.close(weights_m, expected_w_m, "masked weights agree with PyTorch's (mask True = may "
                "attend)", mistakes=_weight_mistakes(Q, K, mask), dims=QKV_DIMS, diagnoses={
                    ZERO_FILL: lambda: _zero_filled(weights_m, expected_w_m, mask)})
    check.close(out_m, expected_out_m,
                "masked out agrees with F.scaled_dot_product_attention(..., attn_mask=mask)")
    padding = torch.tensor([True, True, True, False, False]).reshape(1, 1, Tk)
    out_p, weights_p = _pair(check, call_or_explain(check, attention, Q, K, V, mask=padding,
                                                    what="attention with a (1, 1, Tk) mask"),
                             "padding mask")
    expected_w_p = _builtin(Q, K, V, padding)[1]
    check.close(weights_p, expected_w_p,
                "a (1, 1, Tk) padding mask broadcasts over batch and queries",
                mistakes=_weight_mistakes(Q, K, padding), dims=QKV_DIMS, diagnoses={
                    ZERO_FILL: lambda: _zero_filled(weights_p, expected_w_p, padding)})
    check.close(out_p, _builtin(Q, K, V, padding)[0], "out with a (1, 1, Tk) padding mask")

    # A fully masked row: this course's convention is zero weights and a zero output.
    full = mask.clone()
    full[1] = False
    out_f, weights_f = _pair(check, check.call(attention, Q, K, V, mask=full),
                             "attention with a fully masked row")
    expected_out_f, expected_w_f = _builtin(Q, K, V, full)
    nan_row, uniform_row = expected_w_f.clone(), expected_w_f.clone()
    nan_row[:, 1] = float("nan")
    uniform_row[:, 1] = 1.0 / Tk
    check.close(weights_f, expected_w_f, "a fully masked query row (row 1) gets all-zero weights",
                mistakes={FULLY_MASKED_NAN: nan_row, FULLY_MASKED_UNIFORM: uniform_row},
                dims=QKV_DIMS)
    check.close(out_f, expected_out_f, "a fully masked query row outputs zeros, the others are "
                "unaffected", dims=("batch", "query", "value channel"))
    check.passed()


# ---------------------------------------------------------------------------------------------

def _labels_by_counting(X: torch.Tensor, rule: str = ">") -> torch.Tensor:
    """Labels computed row by row in plain Python (1.0 = more 2s than 4s, or another rule)."""
    compare = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b,
               "!=": lambda a, b: a != b}[rule]
    return torch.tensor([[float(compare(row.count(2), row.count(4)))] for row in X.tolist()])


def check_make_batch(make_batch: Callable[..., tuple]) -> None:
    """Shapes, dtypes, digit range, labels that agree with the rows, randomness."""
    check = SelfCheck("make_batch")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(22)
        result = check.call(make_batch, 2000)
        check.expect(isinstance(result, tuple | list) and len(result) == 2,
                     "returns a pair (X, y)", expected="a tuple (X, y)", got=describe(result))
        X, y = result
        check.tensor(X, "X")
        check.tensor(y, "y")
        check.shape(X, (2000, 10), "X for make_batch(2000)")
        check.expect(tuple(y.shape) == (2000, 1), "y for make_batch(2000) has shape (2000, 1)",
                     expected="shape (2000, 1)", got=f"shape {tuple(y.shape)}", diagnoses={
                         "y has no column axis: keep the summed axis (keepdim=True) or reshape "
                         "y to (N, 1)": tuple(y.shape) == (2000,)})
        check.expect(X.dtype == torch.int64, "X holds integers (int64)", expected="torch.int64",
                     got=str(X.dtype))
        check.expect(y.dtype.is_floating_point, "y is a float tensor", expected="a float dtype",
                     got=str(y.dtype))
        digits = set(X.unique().tolist())
        check.expect(digits == set(range(10)), "the digits are exactly 0, 1, ..., 9",
                     expected="all of 0..9 and nothing else", got=f"digits {sorted(digits)}",
                     diagnoses={
                         "there is no 9: torch.randint's upper bound is excluded, so draw "
                         "with randint(0, 10, ...)": digits == set(range(9)),
                         "there is no 0: the digits start at 0, randint(0, 10, ...)":
                             digits == set(range(1, 10))})
        counts = torch.bincount(X.flatten(), minlength=10).float() / X.numel()
        check.expect(bool((counts > 0.07).all() and (counts < 0.13).all()),
                     "all ten digits appear about equally often",
                     expected="each digit in about 10% of places",
                     got="shares " + ", ".join(f"{d}: {c:.2f}" for d, c in enumerate(counts)))
        labels = _labels_by_counting(X)
        wrong = (y.reshape(-1).float() != labels.reshape(-1)).nonzero()
        i = int(wrong[0]) if len(wrong) else 0
        row = X[i].tolist()
        y_flat = y.reshape(-1, 1).float()
        check.expect(len(wrong) == 0, "labels say whether a row has more 2s than 4s",
                     expected=f"y = {float(labels[i]):.0f} for row {i}, {row} "
                              f"({row.count(2)} twos, {row.count(4)} fours)",
                     got=f"y = {float(y.reshape(-1)[i]):.0f} ({len(wrong)} wrong labels of 2000)",
                     diagnoses={
                         "ties (as many 2s as 4s) were labelled 1: only strictly more 2s "
                         "than 4s is a yes": lambda: torch.equal(y_flat,
                                                                 _labels_by_counting(X, ">=")),
                         "the comparison is the wrong way round (more 4s than 2s)":
                             lambda: torch.equal(y_flat, _labels_by_counting(X, "<")),
                         "the label is 1 whenever the counts differ, not only when the 2s win":
                             lambda: torch.equal(y_flat, _labels_by_counting(X, "!=")),
                     })
        X_short, y_short = check.call(make_batch, 7, T=4)
        check.shape(torch.as_tensor(X_short), (7, 4), "X for make_batch(7, T=4)",
                    likely="T is ignored: the sequences must have T digits, not always 10"
                    if tuple(torch.as_tensor(X_short).shape) == (7, 10) else None)
        check.shape(torch.as_tensor(y_short), (7, 1), "y for make_batch(7, T=4)")
        X_again, _ = check.call(make_batch, 2000)
        check.expect(not torch.equal(X, X_again), "two calls give different batches",
                     expected="fresh random digits on every call", got="the same batch twice",
                     likely="make_batch reseeds the generator: call set_seed outside, once")
    check.passed()


# ---------------------------------------------------------------------------------------------

def check_SingleQueryAttention(model_class: type[nn.Module]) -> None:
    """Members, shapes, attention as a distribution over positions, agreement with PyTorch."""
    check = SelfCheck("SingleQueryAttention")
    with torch.random.fork_rng(devices=[]):
        model = check.call(model_class)
    check.expect(isinstance(model, nn.Module), "SingleQueryAttention() is an nn.Module",
                 expected="an nn.Module", got=describe(model))
    for name in ("embed", "query", "to_key", "to_value", "readout"):
        check.expect(hasattr(model, name), f"the model has a member `{name}`",
                     expected=f"self.{name}", got="no such attribute")
    check.expect(any(p is model.query for p in model.parameters()),
                 "the query is a learnable parameter", expected="model.query in model.parameters()",
                 got=describe(model.query),
                 likely="the query is a plain tensor, so training never changes it: wrap it, "
                        "nn.Parameter(...)")
    last = list(model.readout.modules())[-1] if isinstance(model.readout, nn.Module) else None
    check.expect(isinstance(last, nn.Sigmoid), "the readout ends with nn.Sigmoid()",
                 expected="nn.Sequential(..., nn.Sigmoid())", got=describe(model.readout),
                 likely="the readout does not end with nn.Sigmoid(), so model(x) is not a "
                        "probability")
    generator = torch.Generator().manual_seed(23)
    N, T = 4, 7
    x = torch.randint(0, 10, (N, T), generator=generator)
    e = model.embed(x)
    a = check.tensor(call_or_explain(check, model.attention, e, what="model.attention(e)"),
                     "attention(e)")
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
                            lambda: bool(torch.allclose(a, torch.ones_like(a)))})
    keys = model.to_key(e)
    q = model.query.reshape(1, 1, -1).expand(N, 1, -1)
    values = model.to_value(e)
    check.close(a, _builtin(q, keys, values)[1],
                "attention agrees with PyTorch's scaled dot product (softmax of q·k/√d_att)",
                mistakes={"the scores were not divided by sqrt(d_att)":
                          _builtin(q, keys, values, scale=1.0)[1],
                          "the scores were divided by d_att instead of sqrt(d_att)":
                          _builtin(q, keys, values, scale=1.0 / q.shape[-1])[1]})
    v = check.tensor(check.call(model.values, e), "values(e)")
    check.expect(tuple(v.shape) == (N, T, 1), "values(e) has shape (N, T, 1)",
                 expected=f"shape {(N, T, 1)}", got=f"shape {tuple(v.shape)}",
                 diagnoses={"the values lost their last axis: keep it, (N, T, 1)":
                            tuple(v.shape) == (N, T)})
    check.close(v, values, "values(e) = to_value(e)")
    p = check.tensor(check.call(model, x), "model(x)")
    check.shape(p, (N, 1), "model(x) for x of shape (4, 7)")
    attended = _builtin(q, keys, values)[0].reshape(N, 1)
    mistakes = {"forward skips the readout": attended,
                "forward ignores the attention: a plain mean of the values":
                    model.readout(values.mean(1)),
                "forward sums the values instead of weighting them by the attention":
                    model.readout(values.sum(1)),
                "the sigmoid is applied twice (the readout already ends with one)":
                    torch.sigmoid(model.readout(attended))}
    check.close(p, model.readout(attended), "model(x) = readout(attention-weighted value)",
                mistakes=mistakes)
    model.zero_grad()
    model(x).sum().backward()
    for name, parameter in (("query", model.query), ("to_key.weight", model.to_key.weight),
                            ("to_value.weight", model.to_value.weight),
                            ("embed.weight", model.embed.weight)):
        grad = parameter.grad
        check.expect(grad is not None and bool(grad.abs().sum() > 0),
                     f"the loss reaches {name} (it gets a gradient)", expected="a gradient",
                     got="None" if grad is None else "all zeros",
                     likely="the result is right but the gradient is cut on its way: a "
                            ".detach(), torch.no_grad() or a NumPy round trip inside the model")
    check.passed()

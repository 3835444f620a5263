"""Self-checks for tutorial 02 (queries, keys and values).

They test properties (shapes, rows that sum to one, masks respected, labels that agree with
the data) and agreement with PyTorch's ``F.scaled_dot_product_attention``; they never contain
an exercise's solution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from helpers.checks.framework import SelfCheck, describe

BATCH_HINT = ("the code only works for one number of dimensions: use K.transpose(-2, -1) "
              "(not K.T or transpose(1, 2)) and @ / torch.matmul (torch.bmm takes 3-D only), "
              "so that any leading batch dimensions pass through")


def call_or_explain(check: SelfCheck, fn: Callable[..., Any], *args: Any, what: str,
                    likely: str, **kwargs: Any) -> Any:
    """Call the student's code; on a crash, fail with ``likely`` as the explanation."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as error:  # noqa: BLE001 - any crash is reported to the student
        check.fail(f"{what} runs without an error", expected="a result",
                   got=f"{type(error).__name__}: {error}", likely=likely)


def _pair(check: SelfCheck, result: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    check.expect(isinstance(result, tuple | list) and len(result) == 2,
                 f"{what} returns a pair (out, weights)", expected="a tuple (out, weights)",
                 got=describe(result), likely="end with `return out, weights`")
    out, weights = result
    check.tensor(out, f"{what}: out")
    check.tensor(weights, f"{what}: weights")
    return out, weights


def _builtin_weights(Q: torch.Tensor, K: torch.Tensor, mask: torch.Tensor | None = None,
                     scale: float | None = None) -> torch.Tensor:
    """Attention weights from PyTorch's own function: attend to one-hot values."""
    eye = torch.eye(K.shape[-2], dtype=Q.dtype)
    return F.scaled_dot_product_attention(Q, K, eye, attn_mask=mask, scale=scale)


def check_scaled_dot_product_attention(attention: Callable[..., tuple]) -> None:
    """Shapes, distributions over keys, agreement with F.scaled_dot_product_attention, masks."""
    check = SelfCheck("scaled_dot_product_attention")
    generator = torch.Generator().manual_seed(21)
    B, Tq, Tk, dk, dv = 2, 3, 5, 8, 6
    Q = torch.randn(B, Tq, dk, generator=generator)
    K = torch.randn(B, Tk, dk, generator=generator)
    V = torch.randn(B, Tk, dv, generator=generator)
    originals = [t.clone() for t in (Q, K, V)]
    out, weights = _pair(check, check.call(attention, Q, K, V), "attention(Q, K, V)")
    check.shape(weights, (B, Tq, Tk), "weights for Q (2, 3, 8), K (2, 5, 8)",
                likely="weights are (..., Tq, Tk): one row per query, one column per key; "
                       "did you return (weights, out) instead of (out, weights)?")
    check.shape(out, (B, Tq, dv), "out for V (2, 5, 6)",
                likely="out = weights @ V has one row per query and V's last dimension")
    check.close(Q, originals[0], "Q is left unchanged", likely="Q was modified in place")
    check.close(K, originals[1], "K is left unchanged", likely="K was modified in place")
    check.expect(bool((weights >= 0).all()), "weights are non-negative",
                 expected="weights >= 0", got=describe(weights),
                 likely="the weights must be the softmax of the scores")
    check.close(weights.sum(-1), torch.ones(B, Tq), "each query's weights sum to 1 over the keys",
                likely="apply softmax over the keys, the last axis (dim=-1)")
    check.close(weights, _builtin_weights(Q, K), "weights agree with PyTorch's", mistakes={
        "the scores were not divided by sqrt(d_k)": _builtin_weights(Q, K, scale=1.0),
        "the scores were divided by d_k instead of sqrt(d_k)":
            _builtin_weights(Q, K, scale=1.0 / dk),
    }, likely="weights = softmax(Q K^T / sqrt(d_k)) along the keys")
    check.close(out, F.scaled_dot_product_attention(Q, K, V),
                "out agrees with F.scaled_dot_product_attention",
                likely="out is the weighted sum of the values: weights @ V")

    # Any number of leading dimensions, including none.
    Q4 = torch.randn(2, 3, Tq, dk, generator=generator)
    K4 = torch.randn(2, 3, Tk, dk, generator=generator)
    V4 = torch.randn(2, 3, Tk, dv, generator=generator)
    out4, weights4 = _pair(check, call_or_explain(check, attention, Q4, K4, V4,
                                                  what="attention on 4-D inputs (2, 3, T, d)",
                                                  likely=BATCH_HINT), "4-D attention")
    check.shape(out4, (2, 3, Tq, dv), "out for 4-D inputs",
                likely="keep every leading batch dimension")
    check.close(out4, F.scaled_dot_product_attention(Q4, K4, V4), "4-D out agrees with PyTorch's",
                likely=BATCH_HINT)
    out2, _ = _pair(check, call_or_explain(check, attention, Q[0], K[0], V[0],
                                           what="attention on 2-D inputs (T, d)",
                                           likely=BATCH_HINT), "2-D attention")
    check.close(out2, F.scaled_dot_product_attention(Q[0], K[0], V[0]),
                "2-D out (no batch dimension) agrees with PyTorch's", likely=BATCH_HINT)

    # A mask: True = may attend. Every row keeps at least one key.
    mask = torch.tensor([[True, False, True, False, True],
                         [True, True, False, False, False],
                         [False, False, False, True, True]])
    mask_copy = mask.clone()
    out_m, weights_m = _pair(check, check.call(attention, Q, K, V, mask=mask), "masked attention")
    check.expect(bool(torch.equal(mask, mask_copy)), "the mask is left unchanged",
                 expected="mask unchanged", got="the mask was modified",
                 likely="the mask was modified in place")
    blocked = weights_m.masked_select(~mask.expand_as(weights_m))
    check.expect(bool((blocked.abs() < 1e-6).all()), "keys where mask is False get weight 0",
                 expected="weight 0 where mask is False", got=describe(blocked),
                 likely="fill the scores with float('-inf') where mask is False (mask True means "
                        "'may attend'), before the softmax: filling with 0 still gives weight")
    check.close(weights_m, _builtin_weights(Q, K, mask), "masked weights agree with PyTorch's",
                likely="mask the scores before the softmax; True = may attend")
    check.close(out_m, F.scaled_dot_product_attention(Q, K, V, attn_mask=mask),
                "masked out agrees with F.scaled_dot_product_attention(..., attn_mask=mask)")
    padding = torch.tensor([True, True, True, False, False]).reshape(1, 1, Tk)
    out_p, _ = _pair(check, check.call(attention, Q, K, V, mask=padding), "padding mask")
    check.close(out_p, F.scaled_dot_product_attention(Q, K, V, attn_mask=padding),
                "a (1, 1, Tk) padding mask broadcasts over batch and queries",
                likely="use the mask with broadcasting (masked_fill / torch.where), do not index")

    # A fully masked row: this course's convention is zero weights and a zero output.
    full = mask.clone()
    full[1] = False
    out_f, weights_f = _pair(check, check.call(attention, Q, K, V, mask=full),
                             "attention with a fully masked row")
    nan_hint = ("softmax of a row that is all -inf is 0/0 = nan; set the weights of fully "
                "masked rows to 0 (e.g. torch.nan_to_num(weights, nan=0.0) or torch.where)")
    check.finite(weights_f, "weights of a fully masked row", likely=nan_hint)
    uniform = torch.full((B, Tk), 1.0 / Tk)
    check.close(weights_f[:, 1], torch.zeros(B, Tk), "a fully masked query row gets all-zero weights",
                likely=("a large negative fill value (like -1e9) spreads the weight uniformly over "
                        "forbidden keys; use -inf and then set nan rows to 0")
                if torch.allclose(weights_f[:, 1], uniform, atol=1e-4) else nan_hint)
    check.close(out_f[:, 1], torch.zeros(B, dv), "a fully masked query row outputs zeros",
                likely="out = weights @ V is zero when the weights are zero")
    check.close(out_f[:, [0, 2]], out_m[:, [0, 2]], "the other rows are unaffected",
                likely="only the fully masked row should change")
    check.passed()


# ---------------------------------------------------------------------------------------------

def _labels_from(X: torch.Tensor) -> torch.Tensor:
    return ((X == 2).sum(-1, keepdim=True) > (X == 4).sum(-1, keepdim=True)).float()


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
        check.shape(X, (2000, 10), "X for make_batch(2000)",
                    likely="X has one row per example and T = 10 columns by default")
        check.shape(y, (2000, 1), "y for make_batch(2000)",
                    likely="y needs a column axis: shape (N, 1), e.g. with keepdim=True")
        check.expect(X.dtype == torch.int64, "X holds integers (int64)", expected="torch.int64",
                     got=str(X.dtype), likely="torch.randint returns int64; nn.Embedding needs it")
        check.expect(y.dtype.is_floating_point, "y is a float tensor", expected="a float dtype",
                     got=str(y.dtype), likely="BCELoss needs float targets: use .float()")
        check.expect(bool(((X >= 0) & (X <= 9)).all()), "digits are between 0 and 9",
                     expected="0 <= X <= 9", got=f"min {int(X.min())}, max {int(X.max())}",
                     likely="torch.randint(0, 10, ...) draws 0..9 (the upper bound is excluded)")
        counts = torch.bincount(X.flatten(), minlength=10).float() / X.numel()
        check.expect(bool((counts > 0.07).all() and (counts < 0.13).all()),
                     "all ten digits appear about equally often",
                     expected="each digit in about 10% of places",
                     got="shares " + ", ".join(f"{d}: {c:.2f}" for d, c in enumerate(counts)),
                     likely="draw every digit uniformly with torch.randint(0, 10, (N, T)); "
                            "the upper bound of randint is excluded")
        expected = _labels_from(X)
        wrong = (y.reshape(-1) != expected.reshape(-1)).nonzero()
        if len(wrong):
            i = int(wrong[0])
            row = X[i].tolist()
            check.fail("labels say whether a row has more 2s than 4s",
                       expected=f"y = {float(expected[i]):.0f} for row {row} "
                                f"({row.count(2)} twos, {row.count(4)} fours)",
                       got=f"y = {float(y.reshape(-1)[i]):.0f} ({len(wrong)} wrong labels of 2000)",
                       likely="y is 1.0 only when the count of 2s is strictly greater than the "
                              "count of 4s (ties are 0); count along each row with .sum(dim=1)")
        check.n_passed += 1
        X_short, y_short = check.call(make_batch, 7, T=4)
        check.shape(torch.as_tensor(X_short), (7, 4), "X for make_batch(7, T=4)",
                    likely="use the T argument instead of a fixed 10")
        check.shape(torch.as_tensor(y_short), (7, 1), "y for make_batch(7, T=4)")
        X_again, _ = check.call(make_batch, 2000)
        check.expect(not torch.equal(X, X_again), "two calls give different batches",
                     expected="fresh random digits on every call", got="the same batch twice",
                     likely="do not reseed inside make_batch")
    check.passed()


# ---------------------------------------------------------------------------------------------

def check_single_query_attention(model_class: type[nn.Module]) -> None:
    """Members, shapes, attention as a distribution over positions, agreement with PyTorch."""
    check = SelfCheck("SingleQueryAttention")
    model = check.call(model_class)
    check.expect(isinstance(model, nn.Module), "SingleQueryAttention() is an nn.Module",
                 expected="an nn.Module", got=describe(model),
                 likely="subclass nn.Module and call super().__init__() first")
    for name in ("embed", "query", "to_key", "to_value", "readout"):
        check.expect(hasattr(model, name), f"the model has a member `{name}`",
                     expected=f"self.{name}", got="no such attribute",
                     likely="create every member the exercise lists in __init__")
    check.expect(any(p is model.query for p in model.parameters()),
                 "the query is a learnable parameter", expected="model.query in model.parameters()",
                 got=describe(model.query),
                 likely="wrap it: self.query = nn.Parameter(torch.randn(1, d_att)); a plain "
                        "tensor is never trained")
    generator = torch.Generator().manual_seed(23)
    N, T = 4, 7
    x = torch.randint(0, 10, (N, T), generator=generator)
    e = model.embed(x)
    a = check.tensor(call_or_explain(check, model.attention, e, what="model.attention(e)",
                                     likely="attention takes the embeddings e (N, T, d_embed), "
                                            "not the digits"), "attention(e)")
    check.shape(a, (N, 1, T), "attention(e) for e of shape (4, 7, d_embed)",
                likely="one query: weights of shape (N, 1, T)")
    check.expect(bool((a >= 0).all()), "attention weights are non-negative", expected=">= 0",
                 got=describe(a), likely="apply softmax to the scores")
    check.close(a.sum(-1), torch.ones(N, 1), "attention is a distribution over the T positions",
                likely="take the softmax over the T positions (the last axis of (N, 1, T) scores, "
                       "dim=1 of (N, T, 1) scores); a softmax over the size-1 query axis gives "
                       "all ones")
    keys = model.to_key(e)
    q = model.query.reshape(1, 1, -1).expand(N, 1, -1)
    check.close(a, _builtin_weights(q, keys), "attention agrees with PyTorch's scaled dot product",
                mistakes={"the scores were not divided by sqrt(d_att)":
                          _builtin_weights(q, keys, scale=1.0)},
                likely="weights = softmax(query · key / sqrt(d_att)) over the positions")
    v = check.tensor(check.call(model.values, e), "values(e)")
    check.shape(v, (N, T, 1), "values(e)", likely="one value per position: shape (N, T, 1)")
    p = check.tensor(check.call(model, x), "model(x)")
    check.shape(p, (N, 1), "model(x) for x of shape (4, 7)", likely="one probability per row")
    check.expect(bool(((p >= 0) & (p <= 1)).all()), "model(x) is a probability",
                 expected="values in [0, 1]", got=describe(p),
                 likely="end the readout with nn.Sigmoid()")
    attended = F.scaled_dot_product_attention(q, keys, model.to_value(e)).reshape(N, 1)
    check.close(p, model.readout(attended), "model(x) = readout(attention-weighted value)",
                likely="forward: embed, attention @ values, reshape to (N, 1), readout")
    model.zero_grad()
    model(x).sum().backward()
    for name, parameter in (("query", model.query), ("to_key.weight", model.to_key.weight),
                            ("to_value.weight", model.to_value.weight),
                            ("embed.weight", model.embed.weight)):
        grad = parameter.grad
        check.expect(grad is not None and bool(grad.abs().sum() > 0),
                     f"the loss reaches {name} (it gets a gradient)", expected="a gradient",
                     got="None" if grad is None else "all zeros",
                     likely="do not detach tensors or convert them to NumPy inside the model")
    check.passed()

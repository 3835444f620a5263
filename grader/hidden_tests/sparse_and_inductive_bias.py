"""Hidden tests for tutorial 05 (sparse functions and the inductive bias of attention)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test

# ---- sparse_and_dataset ---------------------------------------------------------------------


def _call_seeded(check: HiddenCheck, fn: Callable, seed: int, *args, **kwargs):
    """Call the candidate with the global generator seeded, restoring it afterwards."""
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        return check.call(fn, *args, **kwargs)
    finally:
        torch.set_rng_state(state)


def _as_tensor_pair(check: HiddenCheck, result, m: int, T: int):
    check.expect(isinstance(result, tuple | list) and len(result) == 2, "returns a pair (X, y)",
                 expected="(X, y)", got=type(result).__name__)
    X, y = (torch.as_tensor(v) for v in result)
    check.shape(X, (m, T), f"X for m={m}, T={T}",
                likely="X has one row per sample and one column per position")
    check.expect(X.dtype == torch.int64, "X holds int64 bits", expected="dtype torch.int64",
                 got=f"dtype {X.dtype}", likely="convert the bits with .long()")
    check.expect(bool(((X == 0) | (X == 1)).all()), "X holds only 0s and 1s", expected="bits",
                 got=f"values {sorted(set(X.unique().tolist()))[:6]}")
    check.expect(tuple(y.shape) != (m,), "labels have shape (m, 1)", expected=f"({m}, 1)",
                 got=f"{tuple(y.shape)}",
                 likely="labels shaped (m,): keep the label column with keepdim=True or "
                        "reshape to (m, 1)")
    check.shape(y, (m, 1), "y", likely="labels are one column: shape (m, 1)")
    check.expect(y.dtype.is_floating_point, "y is a float tensor", expected="float labels",
                 got=f"dtype {y.dtype}", likely="convert the labels with .float()")
    return X, y


@hidden_test
def grade_sparse_and_dataset(sparse_and_dataset: Callable[..., tuple]) -> None:
    check = HiddenCheck("sparse_and_dataset")
    cases = ((6000, 10, [2, 7]), (6000, 12, (0, 5, 11)), (5000, 9, [6]), (6000, 16, [9, 4]))
    for case_number, (m, T, idx) in enumerate(cases):
        s = len(idx)
        X, y = _as_tensor_pair(check, _call_seeded(check, sparse_and_dataset, 200 + case_number,
                                                   m, T, idx), m, T)
        Xd, yd = X.double(), y.double()
        cols = list(idx)
        expected = Xd[:, cols].prod(dim=1, keepdim=True)
        check.close(yd, expected, f"labels are the AND of the bits at idx={list(idx)} (T={T})",
                    atol=1e-6, mistakes={
                        "`any` instead of `all`: the label must be 1 only when EVERY bit at idx "
                        "is 1": Xd[:, cols].amax(dim=1, keepdim=True),
                        "idx ignored: the first len(idx) bits were used instead of the positions "
                        "in idx": Xd[:, :s].prod(dim=1, keepdim=True),
                        "the label uses every position, not only those in idx":
                            Xd.prod(dim=1, keepdim=True),
                        "the labels are inverted (1 where some bit at idx is 0)":
                            1 - expected,
                        "the label is the sum (count of ones) at idx, not their AND":
                            Xd[:, cols].sum(dim=1, keepdim=True),
                        "the label is the mean of the bits at idx, not their AND":
                            Xd[:, cols].mean(dim=1, keepdim=True),
                    })
        frequency = X.double().mean(dim=0)
        balanced = 0.5 ** (1 / s)
        if abs(frequency.mean().item() - balanced) > 0.02:
            likely = "with p=None use p = 0.5 ** (1 / len(idx)), so that p ** len(idx) = 0.5"
            if abs(frequency.mean().item() - 0.5) < 0.02:
                likely = ("unbalanced default p: p = 0.5 gives only 1/2 ** len(idx) positive "
                          "labels; use p = 0.5 ** (1 / len(idx))")
            elif any(abs(frequency.mean().item() - 0.5 ** (1 / k)) < 0.02 for k in range(1, 9)):
                likely = ("unbalanced default p: the default was tuned for a fixed sparsity; "
                          "it must use len(idx): p = 0.5 ** (1 / len(idx))")
            elif abs(frequency.mean().item() - 0.5 ** s) < 0.02:
                likely = ("unbalanced default p: p = 0.5 ** len(idx) makes bits rare; the root "
                          "is needed: p = 0.5 ** (1 / len(idx))")
            check.fail(f"default bit probability for len(idx)={s}", expected=f"{balanced:.3f}",
                       got=f"{frequency.mean().item():.3f}", likely=likely)
        check.n_passed += 1
        spread = (frequency - balanced).abs().max().item()
        check.expect(spread < 0.04, "every position has the same bit probability p",
                     expected=f"each column's mean close to {balanced:.3f}",
                     got=f"a column differs by {spread:.3f}",
                     likely="draw every bit independently with probability p; do not force "
                            "the bits at idx")
        balance = y.double().mean().item()
        check.expect(abs(balance - 0.5) < 0.04, f"labels are balanced for len(idx)={s}",
                     expected="about half positive", got=f"{balance:.3f} positive",
                     likely="unbalanced default p: use p = 0.5 ** (1 / len(idx))")
    for p in (0.3, 0.9):
        X, y = _as_tensor_pair(check, _call_seeded(check, sparse_and_dataset, 300, 5000, 8,
                                                   [1, 6], p=p), 5000, 8)
        freq = X.double().mean().item()
        check.expect(abs(freq - p) < 0.02, f"an explicit p={p} is used",
                     expected=f"bit frequency close to {p}", got=f"{freq:.3f}",
                     likely="use the given p; only p=None means the balanced default")
    first = _call_seeded(check, sparse_and_dataset, 400, 200, 10, [3, 4])
    second = check.call(sparse_and_dataset, 200, 10, [3, 4])
    check.expect(not torch.equal(torch.as_tensor(first[0]), torch.as_tensor(second[0])),
                 "two calls in a row give different samples",
                 expected="fresh random bits on every call", got="the same X twice",
                 likely="do not reseed the generator inside the function (set_seed does that "
                        "once, outside)")
    check.passed()


# ---- SelfAttentionClassifier ----------------------------------------------------------------


def _reference(model: nn.Module, x: torch.Tensor, *, positions: bool = True,
               scale: float | None = None, softmax_dim: int = -1, swap_qk: bool = False, readout: str = "last",
               sigmoid: bool = True):
    """Attention weights (B, T, T) and output (B, 1) from the model's own parameters."""
    with torch.no_grad():
        Wq, Wk, Wv = (getattr(model, n).weight.double() for n in ("query", "key", "value"))
        e = model.token_embedding.weight.double()[x]
        if positions:
            e = e + model.position_embedding.double()
        d = e.shape[-1]
        Q, K, V = e @ Wq.T, e @ Wk.T, e @ Wv.T
        if swap_qk:
            Q, K = K, Q
        scores = Q @ K.transpose(-2, -1) * (1 / math.sqrt(d) if scale is None else scale)
        weights = torch.softmax(scores, dim=softmax_dim)
        mixed = weights @ V
        h = {"last": mixed[:, -1], "first": mixed[:, 0], "mean": mixed.mean(dim=1),
             "values": V.mean(dim=1)}[readout]
        logit = h @ model.readout.weight.double().T + model.readout.bias.double()
        return weights, (torch.sigmoid(logit) if sigmoid else logit)


def _members(check: HiddenCheck, model: nn.Module, T: int, d: int) -> None:
    for name, kind in (("token_embedding", nn.Embedding), ("query", nn.Linear), ("key", nn.Linear),
                       ("value", nn.Linear), ("readout", nn.Linear)):
        check.expect(isinstance(getattr(model, name, None), kind), f"member `{name}` exists",
                     expected=f"nn.{kind.__name__} `{name}`",
                     got=type(getattr(model, name, None)).__name__,
                     likely="use the member names given in the exercise")
    check.shape(model.token_embedding.weight, (2, d), "token_embedding.weight",
                likely="nn.Embedding(2, d): one vector per bit value")
    position = getattr(model, "position_embedding", None)
    check.expect(isinstance(position, nn.Parameter), "`position_embedding` is an nn.Parameter",
                 expected="nn.Parameter of shape (T, d)", got=type(position).__name__,
                 likely="position embedding not registered as nn.Parameter: it would never be "
                        "learned")
    check.shape(position, (T, d), "position_embedding", likely="one d-vector per position: (T, d)")
    for name, shape in (("query", (d, d)), ("key", (d, d)), ("value", (d, d)), ("readout", (1, d))):
        check.shape(getattr(model, name).weight, shape, f"{name}.weight",
                    likely=f"{name} maps d -> {shape[0]}")
    check.expect(all(getattr(model, n).bias is None for n in ("query", "key", "value")),
                 "query, key and value have no bias", expected="bias=False", got="a bias",
                 likely="nn.Linear(d, d, bias=False)")
    check.expect(model.readout.bias is not None, "readout has a bias", expected="a bias",
                 got="none", likely="nn.Linear(d, 1) keeps its bias: the threshold")
    n_parameters = sum(p.numel() for p in model.parameters())
    expected = 2 * d + T * d + 3 * d * d + d + 1
    check.expect(n_parameters == expected, "the parameter count matches the specification",
                 expected=f"{expected} parameters", got=f"{n_parameters}",
                 likely="extra or missing learnable members")


@hidden_test
def grade_SelfAttentionClassifier(model_class: Callable[..., nn.Module]) -> None:
    check = HiddenCheck("SelfAttentionClassifier")
    torch.manual_seed(0)
    default = check.call(model_class, 7)
    _members(check, default, 7, 8)
    generator = fresh_generator(505)
    for T, d, B in ((5, 4, 6), (9, 3, 4)):
        model = check.call(model_class, T, d)
        _members(check, model, T, d)
        with torch.no_grad():  # weights far from uniform attention, so every mistake shows
            for p in model.parameters():
                p.copy_(0.8 * torch.randn(p.shape, generator=generator))
        x = torch.randint(0, 2, (B, T), generator=generator)
        x[0] = 1  # one row of all ones and one of all zeros: positions must still matter
        x[1] = 0
        weights = torch.as_tensor(check.call(model.attention_weights, x))
        check.shape(weights, (B, T, T), f"attention_weights for B={B}, T={T}",
                    likely="one distribution over the T positions per query: (B, T, T)")
        check.expect(bool((weights >= -1e-7).all()) and
                     torch.allclose(weights.double().sum(-1), torch.ones(B, T, dtype=torch.float64),
                                    atol=1e-5),
                     "each row of attention weights is a distribution over positions",
                     expected="non-negative rows summing to 1",
                     got=f"row sums {weights.double().sum(-1).flatten()[:4].tolist()}",
                     likely=_distribution_mistake(model, x, weights))
        reference, _ = _reference(model, x)
        check.close(weights, reference, f"attention weights for T={T}, d={d}", atol=1e-5,
                    mistakes={
                        "position information never used: add position_embedding to the token "
                        "embeddings": _reference(model, x, positions=False)[0],
                        "the scores were not scaled by 1/sqrt(d)": _reference(model, x, scale=1.0)[0],
                        "the scores were scaled by 1/d instead of 1/sqrt(d)":
                            _reference(model, x, scale=1 / d)[0],
                        "queries and keys swapped (softmax(K Q^T) instead of softmax(Q K^T))":
                            _reference(model, x, swap_qk=True)[0],
                    })
        output = torch.as_tensor(check.call(model, x))
        check.shape(output, (B, 1), f"model(x) for B={B}", likely="one probability per sample: shape (B, 1), keep the last dimension")
        _, expected = _reference(model, x)
        check.close(output, expected, f"output probabilities for T={T}, d={d}", atol=1e-5,
                    mistakes={
                        "no sigmoid: forward must return a probability, sigmoid(readout(h))":
                            _reference(model, x, sigmoid=False)[1],
                        "read out at the first position instead of the last":
                            _reference(model, x, readout="first")[1],
                        "the outputs of all positions were averaged instead of reading the last "
                        "position": _reference(model, x, readout="mean")[1],
                        "the values were averaged without the attention weights":
                            _reference(model, x, readout="values")[1],
                        "position information never used: add position_embedding to the token "
                        "embeddings": _reference(model, x, positions=False)[1],
                        "the scores were not scaled by 1/sqrt(d)":
                            _reference(model, x, scale=1.0)[1],
                        "softmax over the query axis: the weights are not a distribution over "
                        "positions": _reference(model, x, softmax_dim=-2)[1],
                    })
        model.zero_grad()
        torch.as_tensor(check.call(model, x)).sum().backward()
        grad = model.position_embedding.grad
        check.expect(grad is not None and grad.abs().sum().item() > 0,
                     "the output depends on the learned positions",
                     expected="a gradient on position_embedding", got=str(grad),
                     likely="position information never used in forward")
    check.passed()


def _distribution_mistake(model: nn.Module, x: torch.Tensor, weights: torch.Tensor) -> str:
    ref_rows, _ = _reference(model, x, softmax_dim=-2)
    if weights.shape == ref_rows.shape and torch.allclose(weights.double(), ref_rows, atol=1e-5):
        return ("softmax over the query axis (dim=-2): the weights are not a distribution over "
                "positions; use the last dimension")
    return ("the weights are not a distribution over positions: apply softmax over the last "
            "dimension (the keys)")

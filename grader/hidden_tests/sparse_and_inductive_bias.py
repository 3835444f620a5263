"""Hidden tests for tutorial 05 (sparse functions and the inductive bias of attention)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.sparse_and_inductive_bias import UNBALANCED_HALF, label_mistakes
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
    check.shape(X, (m, T), f"X for m={m}, T={T}")
    check.expect(X.dtype == torch.int64, "X holds int64 bits", expected="dtype torch.int64",
                 got=f"dtype {X.dtype}")
    check.expect(bool(((X == 0) | (X == 1)).all()), "X holds only 0s and 1s", expected="bits",
                 got=f"values {sorted(set(X.unique().tolist()))[:6]}")
    check.expect(tuple(y.shape) == (m, 1), f"labels have shape ({m}, 1)", expected=f"({m}, 1)",
                 got=f"{tuple(y.shape)}", diagnoses={
                     "the labels have no column axis: keep it (keepdim=True) or reshape to "
                     "(m, 1)": tuple(y.shape) == (m,)})
    check.expect(y.dtype.is_floating_point, "y is a float tensor", expected="float labels",
                 got=f"dtype {y.dtype}")
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
                    atol=1e-6, mistakes=label_mistakes(X, cols), dims=("sample", "label"))
        frequency = X.double().mean(dim=0)
        balanced = 0.5 ** (1 / s)
        rate = frequency.mean().item()
        check.expect(abs(rate - balanced) <= 0.02, f"default bit probability for len(idx)={s}",
                     expected=f"{balanced:.3f}", got=f"{rate:.3f}", diagnoses={
                         UNBALANCED_HALF: abs(rate - 0.5) < 0.02,
                         "the default p ignores len(idx) (it suits another number of positions): "
                         "p = 0.5 ** (1 / len(idx))":
                             any(abs(rate - 0.5 ** (1 / k)) < 0.02 for k in range(2, 9)),
                         "p = 0.5 ** len(idx) makes the bits rare; the root is needed: "
                         "p = 0.5 ** (1 / len(idx))": abs(rate - 0.5 ** s) < 0.02})
        spread = (frequency - balanced).abs().max().item()
        check.expect(spread < 0.04, "every position has the same bit probability p",
                     expected=f"each column's mean close to {balanced:.3f}",
                     got=f"a column differs by {spread:.3f}")
        balance = y.double().mean().item()
        check.expect(abs(balance - 0.5) < 0.04, f"labels are balanced for len(idx)={s}",
                     expected="about half positive", got=f"{balance:.3f} positive")
    for p in (0.3, 0.9):
        X, y = _as_tensor_pair(check, _call_seeded(check, sparse_and_dataset, 300, 5000, 8,
                                                   [1, 6], p=p), 5000, 8)
        freq = X.double().mean().item()
        check.expect(abs(freq - p) < 0.02, f"an explicit p={p} is used",
                     expected=f"bit frequency close to {p}", got=f"{freq:.3f}",
                     likely="an explicit p is ignored: only p=None means the balanced default")
    first = _call_seeded(check, sparse_and_dataset, 400, 200, 10, [3, 4])
    second = check.call(sparse_and_dataset, 200, 10, [3, 4])
    check.expect(not torch.equal(torch.as_tensor(first[0]), torch.as_tensor(second[0])),
                 "two calls in a row give different samples",
                 expected="fresh random bits on every call", got="the same X twice",
                 likely="the function reseeds the generator: call set_seed outside, once (it "
                        "once, outside)")
    check.passed()


# ---- SelfAttentionClassifier ----------------------------------------------------------------


def _reference(model: nn.Module, x: torch.Tensor, *, positions: bool = True,
               scale: float | None = None, softmax_dim: int = -1, swap_qk: bool = False,
               readout: str = "last", sigmoid: bool = True):
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
                     got=type(getattr(model, name, None)).__name__)
    check.shape(model.token_embedding.weight, (2, d), "token_embedding.weight")
    position = getattr(model, "position_embedding", None)
    check.expect(isinstance(position, nn.Parameter), "`position_embedding` is an nn.Parameter",
                 expected="nn.Parameter of shape (T, d)", got=type(position).__name__,
                 likely="position_embedding is a plain tensor, so training never changes it: "
                        "wrap it, nn.Parameter(...)")
    check.shape(position, (T, d), "position_embedding")
    for name, shape in (("query", (d, d)), ("key", (d, d)), ("value", (d, d)), ("readout", (1, d))):
        check.shape(getattr(model, name).weight, shape, f"{name}.weight")
    check.expect(all(getattr(model, n).bias is None for n in ("query", "key", "value")),
                 "query, key and value have no bias", expected="bias=False", got="a bias")
    check.expect(model.readout.bias is not None, "readout has a bias", expected="a bias",
                 got="none")
    n_parameters = sum(p.numel() for p in model.parameters())
    expected = 2 * d + T * d + 3 * d * d + d + 1
    check.expect(n_parameters == expected, "the parameter count matches the specification",
                 expected=f"{expected} parameters", got=f"{n_parameters}")


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
        check.shape(weights, (B, T, T), f"attention_weights for B={B}, T={T}")
        check.expect(bool((weights >= -1e-7).all()) and
                     torch.allclose(weights.double().sum(-1), torch.ones(B, T, dtype=torch.float64),
                                    atol=1e-5),
                     "each row of attention weights is a distribution over positions",
                     expected="non-negative rows summing to 1",
                     got=f"row sums {weights.double().sum(-1).flatten()[:4].tolist()}",
                     diagnoses={"softmax over the query axis (dim=-2): the weights are not a "
                                "distribution over positions; use the last dimension":
                                weights.shape == (B, T, T) and bool(torch.allclose(
                                    weights.double(), _reference(model, x, softmax_dim=-2)[0],
                                    atol=1e-5))})
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
        check.shape(output, (B, 1), f"model(x) for B={B}")
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
                     likely="the positions are used but get no gradient: position_embedding "
                            "is detached (or copied into a constant) in forward")
    check.passed()

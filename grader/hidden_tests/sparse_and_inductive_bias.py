"""Hidden tests for tutorial 05 (sparse functions and the inductive bias of attention)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.sparse_and_inductive_bias import (
    EXPLICIT_P_IGNORED,
    IGNORES_LEN,
    OTHER_GENERATOR,
    RESEEDED,
    UNBALANCED_HALF,
    classifier_init,
    classifier_members,
    dataset_dtypes,
    dataset_pair,
    label_mistakes,
    suits_other_length,
)
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test


def _integer(generator: torch.Generator, low: int, high: int) -> int:
    """A fresh integer in [low, high)."""
    return int(torch.randint(low, high, (1,), generator=generator))


def _seed(generator: torch.Generator) -> int:
    return _integer(generator, 0, 2**30)


# ---- sparse_and_dataset ---------------------------------------------------------------------


def _positions(generator: torch.Generator, T: int, s: int) -> list[int]:
    """``s`` distinct positions of ``range(T)`` in a fresh order (not sorted)."""
    return torch.randperm(T, generator=generator)[:s].tolist()


@hidden_test
def grade_sparse_and_dataset(sparse_and_dataset: Callable[..., tuple]) -> None:
    check = HiddenCheck("sparse_and_dataset")
    generator = fresh_generator(501)
    for case in range(4):
        m, T = _integer(generator, 5000, 7000), _integer(generator, 8, 17)
        s = (2, 3, 1, 2)[case]
        idx = _positions(generator, T, s)
        if case == 1:
            idx = tuple(idx)  # the text allows a tuple
        check.clause("shape")
        X, y = dataset_pair(check, check.call_seeded(_seed(generator), sparse_and_dataset, m, T,
                                                     idx), m, T)
        check.clause("dtype")
        dataset_dtypes(check, X, y)

        check.clause("values")
        cols = list(idx)
        check.close(y.double(), X[:, cols].double().prod(dim=1, keepdim=True),
                    f"labels are the AND of the bits at idx={cols} (T={T})", atol=1e-6,
                    mistakes=label_mistakes(X, cols), dims=("sample", "label"))

        check.clause("arguments")
        frequency = X.double().mean(dim=0)
        balanced = 0.5 ** (1 / s)
        rate = frequency.mean().item()
        check.expect(abs(rate - balanced) <= 0.02, f"default bit probability for len(idx)={s}",
                     expected=f"{balanced:.3f}", got=f"{rate:.3f}", diagnoses={
                         UNBALANCED_HALF: s > 1 and abs(rate - 0.5) < 0.02,
                         IGNORES_LEN: suits_other_length(rate, s),
                         "p = 0.5 ** len(idx) makes the bits rare; the root is needed: "
                         "p = 0.5 ** (1 / len(idx))": abs(rate - 0.5 ** s) < 0.02})
        spread = (frequency - balanced).abs().max().item()
        check.expect(spread < 0.05, "every position has the same bit probability p",
                     expected=f"each column's mean close to {balanced:.3f}",
                     got=f"a column differs by {spread:.3f}")
        balance = y.double().mean().item()
        check.expect(abs(balance - 0.5) < 0.05, f"labels are balanced for len(idx)={s}",
                     expected="about half positive", got=f"{balance:.3f} positive")
    for low, high in ((0.15, 0.45), (0.8, 0.95)):
        p = round(low + (high - low) * float(torch.rand(1, generator=generator)), 3)
        m, T = _integer(generator, 4000, 6000), _integer(generator, 6, 12)
        X, _ = dataset_pair(check, check.call_seeded(_seed(generator), sparse_and_dataset, m, T,
                                                     _positions(generator, T, 2), p=p), m, T)
        rate = X.double().mean().item()
        check.expect(abs(rate - p) < 0.02, f"an explicit p={p} is used",
                     expected=f"bit frequency close to {p}", got=f"{rate:.3f}",
                     likely=EXPLICIT_P_IGNORED if abs(rate - 0.5 ** 0.5) < 0.02 else None)

    check.clause("randomness")
    m, T = _integer(generator, 30, 80), _integer(generator, 6, 12)
    idx = _positions(generator, T, 2)
    seed, other_seed = _seed(generator), _seed(generator)
    first, again, other = (torch.as_tensor(check.call_seeded(k, sparse_and_dataset, m, T,
                                                             idx)[0])
                           for k in (seed, seed, other_seed))
    check.expect(torch.equal(first, again), "the same seed gives the same data",
                 expected="the same X twice", got="different X", likely=OTHER_GENERATOR)
    check.expect(not torch.equal(first, other), "two seeds give different data",
                 expected="different X", got="the same X twice", likely=RESEEDED)
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


def _randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Weights far from uniform attention, so every mistake shows."""
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            parameter.copy_(0.8 * torch.randn(parameter.shape, generator=generator))


def _bits(generator: torch.Generator, B: int, T: int) -> torch.Tensor:
    """Random bits, with one row of all ones and one of all zeros: positions must still
    matter there."""
    x = torch.randint(0, 2, (B, T), generator=generator)
    x[0], x[1] = 1, 0
    return x


def _weights_and_output(check: HiddenCheck, model: nn.Module, x: torch.Tensor,
                        what: str) -> None:
    """Attention weights and output of a model of other sizes against the reference."""
    B, T = x.shape
    d = model.query.weight.shape[0]
    weights = torch.as_tensor(check.call(model.attention_weights, x))
    check.shape(weights, (B, T, T), f"attention_weights ({what})")
    check.close(weights, _reference(model, x)[0], f"attention weights ({what})", atol=1e-5,
                mistakes={
                    "the scale is fixed at 1/sqrt(8): use 1/sqrt(d)":
                        _reference(model, x, scale=1 / math.sqrt(8))[0],
                    "the scores were not scaled by 1/sqrt(d)": _reference(model, x, scale=1.0)[0],
                    "the scores were scaled by 1/d instead of 1/sqrt(d)":
                        _reference(model, x, scale=1 / d)[0],
                })
    output = torch.as_tensor(check.call(model, x))
    check.shape(output, (B, 1), f"model(x) ({what})")
    check.close(output, _reference(model, x)[1], f"output probabilities ({what})", atol=1e-5)


@hidden_test
def grade_SelfAttentionClassifier(model_class: Callable[..., nn.Module]) -> None:  # noqa: N802
    check = HiddenCheck("SelfAttentionClassifier")
    generator = fresh_generator(505)
    T, B = _integer(generator, 5, 10), _integer(generator, 4, 8)
    check.clause("members")
    model = check.call_seeded(_seed(generator), model_class, T)
    classifier_members(check, model, T, 8)

    check.clause("init")
    classifier_init(check, [check.call_seeded(_seed(generator), model_class, 64)
                            for _ in range(8)], 8)

    _randomise(model, generator)
    x = _bits(generator, B, T)
    with torch.no_grad():
        check.clause("embed")
        e = check.tensor(check.call(model.embed, x), "embed(x)")
        token = model.token_embedding(x)
        check.close(e, token + model.position_embedding,
                    "embed(x) = token_embedding(x) + position_embedding", mistakes={
                        "embed leaves out the position embedding": token})

        check.clause("attention")
        weights = torch.as_tensor(check.call(model.attention_weights, x))
        check.shape(weights, (B, T, T), f"attention_weights for B={B}, T={T}")
        check.close(weights, _reference(model, x)[0], "attention weights", atol=1e-5,
                    mistakes={
                        "position information never used in the attention: add "
                        "position_embedding to the token embeddings":
                            _reference(model, x, positions=False)[0],
                        "the scores were not scaled by 1/sqrt(d)": _reference(model, x,
                                                                              scale=1.0)[0],
                        "the scores were scaled by 1/d instead of 1/sqrt(d)":
                            _reference(model, x, scale=1 / 8)[0],
                        "queries and keys swapped (softmax(K Q^T) instead of softmax(Q K^T))":
                            _reference(model, x, swap_qk=True)[0],
                        "softmax over the query axis (dim=-2): the weights are not a "
                        "distribution over positions; use the last dimension":
                            _reference(model, x, softmax_dim=-2)[0],
                    })

        check.clause("forward")
        output = torch.as_tensor(check.call(model, x))
        check.shape(output, (B, 1), f"model(x) for B={B}")
        check.close(output, _reference(model, x)[1], "output probabilities", atol=1e-5,
                    mistakes={
                        "no sigmoid: forward must return a probability, sigmoid(readout(h))":
                            _reference(model, x, sigmoid=False)[1],
                        "read out at the first position instead of the last":
                            _reference(model, x, readout="first")[1],
                        "the outputs of all positions were averaged instead of reading the "
                        "last position": _reference(model, x, readout="mean")[1],
                        "the values were averaged without the attention weights":
                            _reference(model, x, readout="values")[1],
                        "softmax over the query axis in forward: the weights are not a "
                        "distribution over positions":
                            _reference(model, x, softmax_dim=-2)[1],
                    })
        one = torch.as_tensor(check.call(model, x[:1]))
        check.expect(tuple(one.shape) == (1, 1), "model(x) for a batch of one has shape (1, 1)",
                     expected="shape (1, 1)", got=f"shape {tuple(one.shape)}",
                     likely="an axis was squeezed away: for B = 1 the result must still be "
                            "(1, 1)" if one.numel() == 1 else None)
        check.close(one, _reference(model, x[:1])[1], "model(x) for a batch of one", atol=1e-5)

        check.clause("arguments")
        for T_other, d_other in ((_integer(generator, 3, 6), _integer(generator, 2, 5)),
                                 (_integer(generator, 10, 14), _integer(generator, 12, 17))):
            other = check.call_seeded(_seed(generator), model_class, T_other, d_other)
            classifier_members(check, other, T_other, d_other)
            _randomise(other, generator)
            _weights_and_output(check, other, _bits(generator, B, T_other),
                                f"T={T_other}, d={d_other}")

    check.clause("gradients")
    model.train()
    output = torch.as_tensor(check.call(model, x))
    (output * torch.randn(B, 1, generator=generator)).sum().backward()
    missing = [name for name, parameter in model.named_parameters()
               if parameter.grad is None or not bool(parameter.grad.abs().sum() > 0)]
    check.expect(not missing, "in training mode, every parameter gets a gradient",
                 expected="a nonzero gradient for every parameter",
                 got=f"none for {', '.join(missing[:4])}",
                 likely="part of the model is cut off from the gradient (.detach(), "
                        "torch.no_grad() or .data in a method): training would never change it")
    check.passed()

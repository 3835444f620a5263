"""Hidden tests for tutorial 05 (sparse functions and the inductive bias of attention)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.sparse_and_inductive_bias import (
    BROADCAST,
    CAUSAL,
    COLUMN,
    DROPOUT,
    DROPOUT_ALWAYS,
    DROPOUT_EMBED,
    DROPOUT_FORWARD,
    IGNORES_LEN,
    RELU,
    RESEEDED,
    ROOT_OR_BRACKETS,
    SCALED_AFTER,
    SOFTMAX_OVER_BATCH,
    UNBALANCED_HALF,
    VALUES_WITHOUT_POSITIONS,
    agrees_in_eval,
    classifier_gradients,
    classifier_init,
    classifier_members,
    classifier_seeds,
    dataset_dtypes,
    dataset_pair,
    dropout_signature,
    explicit_p_rate,
    label_mistakes,
    large_scores,
    same_seed_diagnoses,
    seeded_three,
    suits_other_length,
    varies_with_seed,
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
    for case in range(3):
        m, T = _integer(generator, 5000, 7000), _integer(generator, 8, 17)
        s = (2, 3, 1)[case]
        idx = _positions(generator, T, s)
        check.clause("shape")
        X, y = dataset_pair(check, check.call_seeded(_seed(generator), sparse_and_dataset, m, T,
                                                     idx), m, T, s=s)
        check.clause("dtype")
        dataset_dtypes(check, X, y)

        check.clause("values")
        check.close(y, X[:, idx].double().prod(dim=1, keepdim=True).to(y.dtype),
                    f"labels are the AND of the bits at idx={idx} (T={T})", atol=1e-6,
                    mistakes=label_mistakes(X, idx), dims=("sample", "label"))

        if case == 0:
            check.clause("shape")
            T_1 = _integer(generator, 6, 12)
            dataset_pair(check, check.call_seeded(_seed(generator), sparse_and_dataset, 1, T_1,
                                                  _positions(generator, T_1, 2)), 1, T_1)
            # Below 0.25, 1 - p stays clear of the default: a flipped comparison is named.
            for low, high in ((0.12, 0.25), (0.8, 0.95), (0.0, 0.0)):
                p = round(low + (high - low) * float(torch.rand(1, generator=generator)), 3)
                m_p, T_p = _integer(generator, 4000, 6000), _integer(generator, 6, 12)
                explicit_p_rate(check, sparse_and_dataset, p, m_p, T_p,
                                _positions(generator, T_p, 2), _seed(generator))

        if case == 2:  # after the labels for three positions (case 1) are checked
            # A tuple cannot be changed in place: an answer that sorts idx in place (or
            # appends to it) fails here. (The caller's list itself stays on the student's
            # side, out of the grader's sight.)
            check.clause("unchanged")
            m_t, T_t = _integer(generator, 200, 400), _integer(generator, 8, 17)
            positions = tuple(_positions(generator, T_t, 3))
            X_t, y_t = dataset_pair(check, check.call_seeded(
                _seed(generator), sparse_and_dataset, m_t, T_t, positions), m_t, T_t)
            check.close(y_t, torch.as_tensor(X_t)[:, list(positions)].double().prod(
                            dim=1, keepdim=True).to(y_t.dtype),
                        f"with idx a tuple {positions}, labels are the AND of those bits",
                        atol=1e-6, dims=("sample", "label"))

        check.clause("arguments")
        frequency = X.double().mean(dim=0)
        balanced = 0.5 ** (1 / s)
        rate = frequency.mean().item()
        check.expect(abs(rate - balanced) <= 0.02, f"default bit probability for len(idx)={s}",
                     expected=f"{balanced:.3f}", got=f"{rate:.3f}", diagnoses={
                         UNBALANCED_HALF: s > 1 and abs(rate - 0.5) < 0.02,
                         IGNORES_LEN: suits_other_length(rate, s),
                         # The cases start with s = 2, where 0.5 ** s = 0.5 / s.
                         ROOT_OR_BRACKETS: s == 2 and abs(rate - 0.25) < 0.02})
        spread = (frequency - balanced).abs().max().item()
        check.expect(spread < 0.05, "every position has the same bit probability p",
                     expected=f"each column's mean close to {balanced:.3f}",
                     got=f"a column differs by {spread:.3f}")
        balance = y.double().mean().item()
        check.expect(abs(balance - 0.5) < 0.05, f"labels are balanced for len(idx)={s}",
                     expected="about half positive", got=f"{balance:.3f} positive")

    # torch.initial_seed() answers one fixed seed inside every checked call, so a function
    # that reseeds with it gives the same data for two seeds.
    check.clause("randomness")
    m, T = _integer(generator, 30, 80), _integer(generator, 6, 12)
    idx = _positions(generator, T, 2)
    seed, other_seed = _seed(generator), _seed(generator)
    calls = seeded_three(check, sparse_and_dataset, (seed, other_seed), m, T, idx)
    first, again, other = (torch.as_tensor(value[0]) for value, _ in calls)
    check.expect(torch.equal(first, again), "the same seed gives the same data",
                 expected="the same X twice", got="different X",
                 diagnoses=same_seed_diagnoses(calls[0][1], calls[1][1]))
    check.expect(not torch.equal(first, other), "two seeds give different data",
                 expected="different X", got="the same X twice", likely=RESEEDED)
    # A reseed after the bits are drawn passes the checks above.
    check.no_reseed(sparse_and_dataset, m, T, idx, what=f"sparse_and_dataset({m}, {T}, idx)")
    check.passed()


# ---- SelfAttentionClassifier ----------------------------------------------------------------


def _reference(model: nn.Module, x: torch.Tensor, *, positions: bool = True,
               scale: float | None = None, softmax_dim: int = -1, swap_qk: bool = False,
               after: bool = False, readout: str = "last", value_positions: bool = True,
               sigmoid: bool = True, causal: bool = False, relu: bool = False):
    """Attention weights (B, T, T) and output (B, 1) from the model's own parameters (the
    keywords build in a typical mistake)."""
    with torch.no_grad():
        Wq, Wk, Wv = (getattr(model, n).weight.double() for n in ("query", "key", "value"))
        tokens = model.token_embedding.weight.double()[x]
        e = tokens + model.position_embedding.double() if positions else tokens
        d = e.shape[-1]
        Q, K = e @ Wq.T, e @ Wk.T
        V = (e if value_positions else tokens) @ Wv.T
        if swap_qk:
            Q, K = K, Q
        scores = Q @ K.transpose(-2, -1) * (1 / math.sqrt(d) if scale is None else scale)
        if causal:
            T = scores.shape[-1]
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf)
        weights = torch.softmax(scores, dim=softmax_dim)
        if after:
            weights = weights / math.sqrt(d)
        mixed = weights @ V
        h = {"last": mixed[:, -1], "first": mixed[:, 0], "mean": mixed.mean(dim=1),
             "values": V.mean(dim=1), "column": (weights[:, :, -1].unsqueeze(1) @ V)[:, 0]
             }[readout]
        h = torch.relu(h) if relu else h
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

    # Every call the grader makes is seeded afresh: a build that reseeds the generator after
    # drawing its weights passes the seed checks; no_reseed looks at where it leaves it.
    check.clause("randomness")
    classifier_seeds(check, model_class, _integer(generator, 5, 10),
                     (_seed(generator), _seed(generator)))
    check.no_reseed(model_class, T, what=f"SelfAttentionClassifier({T})")

    check.clause("init")
    classifier_init(check, [check.call_seeded(_seed(generator), model_class, 64)
                            for _ in range(8)], 8)
    d_wide = _integer(generator, 28, 37)
    classifier_init(check, [check.call_seeded(_seed(generator), model_class, 8, d_wide)
                            for _ in range(8)], d_wide, pooled_test=True)

    _randomise(model, generator)
    x = _bits(generator, B, T)
    with torch.no_grad():
        check.clause("embed")
        e = check.tensor(check.call(model.embed, x), "embed(x)")
        token = model.token_embedding(x)
        wanted = token + model.position_embedding
        check.close(e, wanted, "embed(x) = token_embedding(x) + position_embedding", mistakes={
                        "embed leaves out the position embedding": token},
                    diagnoses={DROPOUT_EMBED: lambda: dropout_signature(
                        torch.as_tensor(e).abs(), wanted.abs())})

        check.clause("attention")
        weights = torch.as_tensor(check.call(model.attention_weights, x))
        check.shape(weights, (B, T, T), f"attention_weights for B={B}, T={T}")
        reference = _reference(model, x)[0]
        check.close(weights, reference, "attention weights", atol=1e-5,
                    diagnoses={DROPOUT: lambda: dropout_signature(weights, reference.float())},
                    mistakes={
                        "position information never used in the attention: add "
                        "position_embedding to the token embeddings":
                            _reference(model, x, positions=False)[0],
                        "the scores were not scaled by 1/sqrt(d)": _reference(model, x,
                                                                              scale=1.0)[0],
                        "the scores were scaled by 1/d instead of 1/sqrt(d)":
                            _reference(model, x, scale=1 / 8)[0],
                        "the scores were multiplied by sqrt(d) instead of divided":
                            _reference(model, x, scale=math.sqrt(8))[0],
                        SCALED_AFTER: _reference(model, x, scale=1.0, after=True)[0],
                        "queries and keys swapped (softmax(K Q^T) instead of softmax(Q K^T))":
                            _reference(model, x, swap_qk=True)[0],
                        "softmax over the query axis (dim=-2): the weights are not a "
                        "distribution over positions; use the last dimension":
                            _reference(model, x, softmax_dim=-2)[0],
                        SOFTMAX_OVER_BATCH: _reference(model, x, softmax_dim=0)[0],
                        CAUSAL: _reference(model, x, causal=True)[0],
                    })

        check.clause("forward")
        output = torch.as_tensor(check.call(model, x))
        check.shape(output, (B, 1), f"model(x) for B={B}",
                    likely=BROADCAST if tuple(output.shape) == (B, B, 1) else None)
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
                        COLUMN: _reference(model, x, readout="column")[1],
                        VALUES_WITHOUT_POSITIONS: _reference(model, x, value_positions=False)[1],
                        RELU: _reference(model, x, relu=True)[1],
                        "softmax over the query axis in forward: the weights are not a "
                        "distribution over positions":
                            _reference(model, x, softmax_dim=-2)[1],
                    }, diagnoses={DROPOUT_FORWARD: lambda: agrees_in_eval(
                        model, x, _reference(model, x)[1]),
                        DROPOUT_ALWAYS: lambda: varies_with_seed(check, model, x)})
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

        check.clause("attention")
        large_scores(check, model, x, generator)

    check.clause("device")
    on_meta = check.call_seeded(_seed(generator), model_class, T).to("meta")
    check.device_follows(on_meta, x, what="model(x)")

    check.clause("randomness")
    check.no_reseed(model, x, what="model(x)")

    check.clause("gradients")
    classifier_gradients(check, model, x, generator)
    check.passed()

"""Hidden tests of tutorial 05 against the solution, common mistakes and other correct answers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hidden_tests.sparse_and_inductive_bias import (
    grade_SelfAttentionClassifier,
    grade_sparse_and_dataset,
)
from mutation import assert_fails_naming
from notebook_code import solution_namespace
from torch import nn

from helpers.checks.sparse_and_inductive_bias import (
    check_SelfAttentionClassifier,
    check_sparse_and_dataset,
)

SOLUTION = solution_namespace("05_sparse_and_inductive_bias")
Solution = SOLUTION["SelfAttentionClassifier"]


# ---- sparse_and_dataset: correct alternatives ----------------------------------------------

def dataset_bernoulli(m, T, idx, p=None):
    p = 0.5 ** (1 / len(idx)) if p is None else p
    X = torch.bernoulli(torch.full((m, T), float(p))).long()
    y = (X[:, list(idx)].sum(dim=1) == len(idx)).float().unsqueeze(1)
    return X, y


def dataset_numpy(m, T, idx, p=None):
    if p is None:
        p = 0.5 ** (1 / len(idx))
    X = (np.random.random((m, T)) < p).astype(np.int64)
    y = X[:, list(idx)].prod(axis=1, keepdims=True).astype(np.float32)
    return torch.from_numpy(X), torch.from_numpy(y)


def dataset_loops(m, T, idx, p=None):
    if p is None:
        p = 0.5 ** (1 / len(idx))
    rows, labels = [], []
    for _ in range(m):
        row = [1 if random.random() < p else 0 for _ in range(T)]
        rows.append(row)
        labels.append([1.0 if all(row[i] == 1 for i in idx) else 0.0])
    return torch.tensor(rows, dtype=torch.int64), torch.tensor(labels)


# ---- sparse_and_dataset: mistakes -----------------------------------------------------------

def _bits(m, T, p):
    return (torch.rand(m, T) < p).long()


def dataset_any(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** (1 / len(idx)) if p is None else p)
    return X, X[:, list(idx)].any(dim=1, keepdim=True).float()


def dataset_fair_coins(m, T, idx, p=None):
    X = _bits(m, T, 0.5 if p is None else p)
    return X, X[:, list(idx)].all(dim=1, keepdim=True).float()


def dataset_fixed_sparsity(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** (1 / 3) if p is None else p)
    return X, X[:, list(idx)].all(dim=1, keepdim=True).float()


def dataset_first_bits(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** (1 / len(idx)) if p is None else p)
    return X, X[:, :len(idx)].all(dim=1, keepdim=True).float()


def dataset_flat_labels(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** (1 / len(idx)) if p is None else p)
    return X, X[:, list(idx)].all(dim=1).float()


def dataset_reseeded(m, T, idx, p=None):
    torch.manual_seed(0)
    X = _bits(m, T, 0.5 ** (1 / len(idx)) if p is None else p)
    return X, X[:, list(idx)].all(dim=1, keepdim=True).float()


def dataset_ignores_p(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** (1 / len(idx)))
    return X, X[:, list(idx)].all(dim=1, keepdim=True).float()


def dataset_float_bits(m, T, idx, p=None):
    X = (torch.rand(m, T) < (0.5 ** (1 / len(idx)) if p is None else p)).float()
    return X, X[:, list(idx)].all(dim=1, keepdim=True).float()


def dataset_sum_labels(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** (1 / len(idx)) if p is None else p)
    return X, X[:, list(idx)].sum(dim=1, keepdim=True).float()


def not_implemented(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("candidate", [SOLUTION["sparse_and_dataset"], dataset_bernoulli,
                                       dataset_numpy, dataset_loops])
def test_correct_datasets_pass(candidate):
    grade_sparse_and_dataset(candidate)
    check_sparse_and_dataset(candidate)


@pytest.mark.parametrize(("mutant", "keywords"), [
    (dataset_any, ["any", "all"]),
    (dataset_fair_coins, ["unbalanced default p", "p = 0.5 gives"]),
    (dataset_fixed_sparsity, ["unbalanced default p", "fixed sparsity"]),
    (dataset_first_bits, ["idx ignored"]),
    (dataset_flat_labels, ["shaped (m,)"]),
    (dataset_reseeded, ["reseed"]),
    (dataset_ignores_p, ["explicit p"]),
    (dataset_float_bits, ["int64"]),
    (dataset_sum_labels, ["sum"]),
])
def test_dataset_mistakes_are_named(mutant, keywords):
    assert_fails_naming(grade_sparse_and_dataset, mutant, *keywords)


@pytest.mark.parametrize(("mutant", "keywords"), [
    (dataset_any, ["use `all`"]),
    (dataset_fair_coins, ["0.5 ** (1 / len(idx))"]),
    (dataset_first_bits, ["positions in idx"]),
    (dataset_flat_labels, ["keepdim"]),
])
def test_dataset_self_check_catches_mistakes_in_plain_words(mutant, keywords):
    message = assert_fails_naming(check_sparse_and_dataset, mutant, "expected", "got", *keywords)
    assert "Traceback" not in message


def test_blank_dataset_propagates_not_implemented():
    with pytest.raises(NotImplementedError):
        grade_sparse_and_dataset(not_implemented)


# ---- SelfAttentionClassifier: correct alternatives -----------------------------------------

class ClassifierEinsum(Solution):
    def attention_weights(self, x):
        e = self.token_embedding(x) + self.position_embedding
        scores = torch.einsum("bqd,bkd->bqk", self.query(e), self.key(e)) / math.sqrt(self.d)
        return scores.softmax(dim=2)

    def forward(self, x):
        e = self.token_embedding(x) + self.position_embedding
        h = torch.einsum("bk,bkd->bd", self.attention_weights(x)[:, -1], self.value(e))
        return torch.sigmoid(self.readout(h))


class ClassifierBuiltin(nn.Module):
    """Written from scratch: F.scaled_dot_product_attention for the output."""

    def __init__(self, T, d=8):
        super().__init__()
        self.token_embedding = nn.Embedding(2, d)
        self.position_embedding = nn.Parameter(0.1 * torch.randn(T, d))
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.readout = nn.Linear(d, 1)

    def attention_weights(self, x):
        e = self.token_embedding(x) + self.position_embedding
        q, k = self.query(e), self.key(e)
        return F.softmax(torch.bmm(q, k.transpose(1, 2)) / q.shape[-1] ** 0.5, dim=-1)

    def forward(self, x):
        e = self.token_embedding(x) + self.position_embedding
        out = F.scaled_dot_product_attention(self.query(e), self.key(e), self.value(e))
        return self.readout(out[:, -1]).sigmoid()


class ClassifierLoops(Solution):
    def attention_weights(self, x):
        rows = []
        for sample in x:
            e = self.token_embedding(sample) + self.position_embedding
            q, k = self.query(e), self.key(e)
            rows.append(torch.stack([torch.softmax(k @ q_i / math.sqrt(self.d), dim=0)
                                     for q_i in q]))
        return torch.stack(rows)

    def forward(self, x):
        weights = self.attention_weights(x)
        outputs = []
        for b in range(x.shape[0]):
            v = self.value(self.token_embedding(x[b]) + self.position_embedding)
            outputs.append(sum(weights[b, -1, t] * v[t] for t in range(x.shape[1])))
        return torch.sigmoid(self.readout(torch.stack(outputs)))


# ---- SelfAttentionClassifier: mistakes -------------------------------------------------------

class NoPositions(Solution):
    def embed(self, x):
        return self.token_embedding(x)

    def attention_weights(self, x):
        e = self.embed(x)
        return torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d), -1)

    def forward(self, x):
        h = (self.attention_weights(x)[:, -1:] @ self.value(self.embed(x))).squeeze(1)
        return torch.sigmoid(self.readout(h))


class NoScale(Solution):
    def attention_weights(self, x):
        e = self.embed(x)
        return torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1), dim=-1)


class SoftmaxOverQueries(Solution):
    def attention_weights(self, x):
        e = self.embed(x)
        return torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d),
                             dim=-2)


class Unnormalised(Solution):
    def attention_weights(self, x):
        e = self.embed(x)
        return torch.exp(self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d))


class SwappedQK(Solution):
    def attention_weights(self, x):
        e = self.embed(x)
        return torch.softmax(self.key(e) @ self.query(e).transpose(-2, -1) / math.sqrt(self.d), -1)


class FirstReadout(Solution):
    def forward(self, x):
        h = (self.attention_weights(x)[:, :1] @ self.value(self.embed(x))).squeeze(1)
        return torch.sigmoid(self.readout(h))


class MeanReadout(Solution):
    def forward(self, x):
        h = (self.attention_weights(x) @ self.value(self.embed(x))).mean(dim=1)
        return torch.sigmoid(self.readout(h))


class NoSigmoid(Solution):
    def forward(self, x):
        h = (self.attention_weights(x)[:, -1:] @ self.value(self.embed(x))).squeeze(1)
        return self.readout(h)


class UnweightedValues(Solution):
    def forward(self, x):
        return torch.sigmoid(self.readout(self.value(self.embed(x)).mean(dim=1)))


class PositionsNotParameter(Solution):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        del self.position_embedding
        self.position_embedding = 0.1 * torch.randn(T, d)


class FlatOutput(Solution):
    def forward(self, x):
        return super().forward(x)[:, 0]


class ExtraMLP(Solution):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        self.extra = nn.Linear(d, d)


@pytest.mark.parametrize("candidate", [Solution, ClassifierEinsum, ClassifierBuiltin,
                                       ClassifierLoops])
def test_correct_classifiers_pass(candidate):
    grade_SelfAttentionClassifier(candidate)
    check_SelfAttentionClassifier(candidate)


@pytest.mark.parametrize(("mutant", "keywords"), [
    (NoPositions, ["position information never used"]),
    (NoScale, ["not scaled"]),
    (SoftmaxOverQueries, ["not a distribution over positions"]),
    (Unnormalised, ["not a distribution over positions"]),
    (SwappedQK, ["swapped"]),
    (FirstReadout, ["first position"]),
    (MeanReadout, ["averaged"]),
    (NoSigmoid, ["no sigmoid"]),
    (UnweightedValues, ["without the attention weights"]),
    (PositionsNotParameter, ["nn.Parameter"]),
    (FlatOutput, ["(B, 1)"]),
    (ExtraMLP, ["parameter count"]),
])
def test_classifier_mistakes_are_named(mutant, keywords):
    assert_fails_naming(grade_SelfAttentionClassifier, mutant, *keywords)


@pytest.mark.parametrize(("mutant", "keywords"), [
    (NoPositions, ["position"]),
    (SoftmaxOverQueries, ["last dimension"]),
    (NoSigmoid, ["sigmoid"]),
    (FirstReadout, ["last position"]),
    (PositionsNotParameter, ["nn.Parameter"]),
])
def test_classifier_self_check_catches_mistakes_in_plain_words(mutant, keywords):
    message = assert_fails_naming(check_SelfAttentionClassifier, mutant, "expected", "got",
                                  *keywords)
    assert "Traceback" not in message


class Blank(nn.Module):
    def __init__(self, T, d=8):
        super().__init__()
        raise NotImplementedError


def test_blank_classifier_propagates_not_implemented():
    with pytest.raises(NotImplementedError):
        grade_SelfAttentionClassifier(Blank)

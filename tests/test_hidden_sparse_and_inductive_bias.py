"""Hidden tests of tutorial 05 against the solution, common mistakes and other correct answers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mutation import assert_bank
from notebook_code import solution_namespace
from torch import nn

from helpers.checks.sparse_and_inductive_bias import (
    check_SelfAttentionClassifier,
    check_sparse_and_dataset,
)
from hidden_tests.sparse_and_inductive_bias import (
    grade_SelfAttentionClassifier,
    grade_sparse_and_dataset,
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


def dataset_root_missing(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** len(idx) if p is None else p)
    return X, X[:, list(idx)].all(dim=1, keepdim=True).float()


def dataset_every_position(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** (1 / len(idx)) if p is None else p)
    return X, X.all(dim=1, keepdim=True).float()


def dataset_inverted(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** (1 / len(idx)) if p is None else p)
    return X, 1 - X[:, list(idx)].all(dim=1, keepdim=True).float()


def dataset_mean_labels(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** (1 / len(idx)) if p is None else p)
    return X, X[:, list(idx)].float().mean(dim=1, keepdim=True)


def dataset_forced_bits(m, T, idx, p=None):
    """A bug no diagnosis describes: the relevant bits are drawn with another probability."""
    X = _bits(m, T, 0.5 ** (1 / len(idx)) if p is None else p)
    X[:, list(idx)] = _bits(m, len(idx), 0.9)
    return X, X[:, list(idx)].all(dim=1, keepdim=True).float()


DATASET_HIDDEN_BANK = [
    (dataset_any, "`any` instead of `all`"),
    (dataset_fair_coins, "p = 0.5 was used"),
    (dataset_fixed_sparsity, "ignores len(idx)"),
    (dataset_root_missing, "the root is needed"),
    (dataset_first_bits, "idx ignored"),
    (dataset_every_position, "every position"),
    (dataset_inverted, "inverted"),
    (dataset_flat_labels, "no column axis"),
    (dataset_reseeded, "reseeds"),
    (dataset_ignores_p, "explicit p"),
    (dataset_float_bits, None),
    (dataset_sum_labels, "the sum"),
    (dataset_mean_labels, "the mean"),
    (dataset_forced_bits, None),
]
DATASET_CHECK_BANK = [
    (dataset_any, "`any` instead of `all`"),
    (dataset_fair_coins, "p = 0.5 was used"),
    (dataset_fixed_sparsity, None),
    (dataset_first_bits, "idx ignored"),
    (dataset_every_position, "every position"),
    (dataset_inverted, "inverted"),
    (dataset_flat_labels, "no column axis"),
    (dataset_float_bits, None),
    (dataset_sum_labels, "the sum"),
    (dataset_mean_labels, "the mean"),
    (dataset_forced_bits, None),
]


def test_dataset_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_sparse_and_dataset, SOLUTION["sparse_and_dataset"], DATASET_HIDDEN_BANK)


def test_dataset_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_sparse_and_dataset, SOLUTION["sparse_and_dataset"], DATASET_CHECK_BANK)


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

    def embed(self, x):
        return torch.add(self.position_embedding, self.token_embedding(x))

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


class ScaledByD(Solution):
    def attention_weights(self, x):
        e = self.embed(x)
        return torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1) / self.d, dim=-1)


class EmbedWithoutPositions(Solution):
    def embed(self, x):
        return self.token_embedding(x)


class AttentionWithoutPositions(Solution):
    def attention_weights(self, x):
        e = self.token_embedding(x)
        return torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d), -1)


class DetachedPositions(Solution):
    def embed(self, x):
        return self.token_embedding(x) + self.position_embedding.detach()


class ForwardSoftmaxOverQueries(Solution):
    def forward(self, x):
        e = self.embed(x)
        weights = torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d),
                                dim=-2)
        return torch.sigmoid(self.readout((weights[:, -1:] @ self.value(e)).squeeze(1)))


class ShiftedReadout(Solution):
    """A bug no diagnosis describes."""
    def forward(self, x):
        return 0.9 * super().forward(x)


CLASSIFIER_HIDDEN_BANK = [
    (NoPositions, "position information never used"),
    (NoScale, "not scaled"),
    (ScaledByD, "1/d instead"),
    (SoftmaxOverQueries, "softmax over the query axis (dim=-2)"),
    (Unnormalised, None),
    (SwappedQK, "swapped"),
    (FirstReadout, "first position"),
    (MeanReadout, "outputs of all positions were averaged"),
    (DetachedPositions, "get no gradient"),
    (ForwardSoftmaxOverQueries, "softmax over the query axis: the weights"),
    (NoSigmoid, "no sigmoid"),
    (UnweightedValues, "without the attention weights"),
    (PositionsNotParameter, "plain tensor"),
    (FlatOutput, None),
    (ExtraMLP, None),
    (ShiftedReadout, None),
]
CLASSIFIER_CHECK_BANK = [
    (EmbedWithoutPositions, "embed leaves out"),
    (AttentionWithoutPositions, "not used in the attention"),
    (NoScale, "not divided by sqrt(d)"),
    (SoftmaxOverQueries, "over the queries"),
    (SwappedQK, "swapped"),
    (FirstReadout, "first position"),
    (MeanReadout, "averages the outputs"),
    (NoSigmoid, "no sigmoid"),
    (PositionsNotParameter, "plain tensor"),
    (ShiftedReadout, None),
]


def test_classifier_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_SelfAttentionClassifier, Solution, CLASSIFIER_HIDDEN_BANK)


def test_classifier_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_SelfAttentionClassifier, Solution, CLASSIFIER_CHECK_BANK)


class Blank(nn.Module):
    def __init__(self, T, d=8):
        super().__init__()
        raise NotImplementedError


def test_blank_classifier_propagates_not_implemented():
    with pytest.raises(NotImplementedError):
        grade_SelfAttentionClassifier(Blank)

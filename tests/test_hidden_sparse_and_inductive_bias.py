"""Hidden tests of tutorial 05 against the solution, common mistakes and other correct answers."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mutation import ExerciseBanks, diagnosis, failure
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


def not_implemented(*args, **kwargs):
    raise NotImplementedError


# ---- sparse_and_dataset: correct alternatives ----------------------------------------------

def _default(p, idx):
    return 0.5 ** (1 / len(idx)) if p is None else p


def dataset_bernoulli(m, T, idx, p=None):
    X = torch.bernoulli(torch.full((m, T), float(_default(p, idx)))).long()
    y = (X[:, list(idx)].sum(dim=1) == len(idx)).float().unsqueeze(1)
    return X, y


def dataset_distribution(m, T, idx, p=None):
    bits = torch.distributions.Bernoulli(probs=torch.tensor(_default(p, idx)))
    X = bits.sample((m, T)).to(torch.int64)
    return X, X[:, list(idx)].prod(dim=1, keepdim=True).to(torch.float32)


def dataset_loops(m, T, idx, p=None):
    p = _default(p, idx)
    rows, labels = [], []
    for _ in range(m):
        row = (torch.rand(T) < p).tolist()
        rows.append(row)
        labels.append([1.0 if all(row[i] for i in idx) else 0.0])
    return torch.tensor(rows, dtype=torch.int64), torch.tensor(labels)


# ---- sparse_and_dataset: mistakes -----------------------------------------------------------

def _bits(m, T, p):
    return (torch.rand(m, T) < p).long()


def _and(X, idx):
    return X[:, list(idx)].all(dim=1, keepdim=True).float()


def dataset_any(m, T, idx, p=None):
    X = _bits(m, T, _default(p, idx))
    return X, X[:, list(idx)].any(dim=1, keepdim=True).float()


def dataset_fair_coins(m, T, idx, p=None):
    X = _bits(m, T, 0.5 if p is None else p)
    return X, _and(X, idx)


def dataset_fixed_sparsity(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** (1 / 3) if p is None else p)
    return X, _and(X, idx)


def dataset_root_missing(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** len(idx) if p is None else p)
    return X, _and(X, idx)


def dataset_first_bits(m, T, idx, p=None):
    X = _bits(m, T, _default(p, idx))
    return X, X[:, :len(idx)].all(dim=1, keepdim=True).float()


def dataset_every_position(m, T, idx, p=None):
    X = _bits(m, T, _default(p, idx))
    return X, X.all(dim=1, keepdim=True).float()


def dataset_inverted(m, T, idx, p=None):
    X = _bits(m, T, _default(p, idx))
    return X, 1 - _and(X, idx)


def dataset_sum_labels(m, T, idx, p=None):
    X = _bits(m, T, _default(p, idx))
    return X, X[:, list(idx)].sum(dim=1, keepdim=True).float()


def dataset_mean_labels(m, T, idx, p=None):
    X = _bits(m, T, _default(p, idx))
    return X, X[:, list(idx)].float().mean(dim=1, keepdim=True)


def dataset_flat_labels(m, T, idx, p=None):
    X = _bits(m, T, _default(p, idx))
    return X, X[:, list(idx)].all(dim=1).float()


def dataset_float_bits(m, T, idx, p=None):
    X = (torch.rand(m, T) < _default(p, idx)).float()
    return X, X[:, list(idx)].prod(dim=1, keepdim=True)


def dataset_double_labels(m, T, idx, p=None):
    X = _bits(m, T, _default(p, idx))
    return X, X[:, list(idx)].all(dim=1, keepdim=True).double()


def dataset_ignores_p(m, T, idx, p=None):
    X = _bits(m, T, 0.5 ** (1 / len(idx)))
    return X, _and(X, idx)


def dataset_reseeded(m, T, idx, p=None):
    """A student's mistake: torch.manual_seed(0) inside, "for reproducibility"."""
    torch.manual_seed(0)
    X = _bits(m, T, _default(p, idx))
    return X, _and(X, idx)


def dataset_own_generator(m, T, idx, p=None):
    generator = torch.Generator().manual_seed(0)
    X = (torch.rand(m, T, generator=generator) < _default(p, idx)).long()
    return X, _and(X, idx)


def dataset_numpy(m, T, idx, p=None):
    X = (np.random.random((m, T)) < _default(p, idx)).astype(np.int64)
    y = X[:, list(idx)].prod(axis=1, keepdims=True).astype(np.float32)
    return torch.from_numpy(X), torch.from_numpy(y)


def dataset_python_random(m, T, idx, p=None):
    p = _default(p, idx)
    X = torch.tensor([[int(random.random() < p) for _ in range(T)] for _ in range(m)])
    return X, _and(X, idx)


def dataset_reseeds_current(m, T, idx, p=None):
    """A student's answer: reseeds with the seed already set, "to stay reproducible"."""
    torch.manual_seed(torch.initial_seed())
    X = _bits(m, T, _default(p, idx))
    return X, _and(X, idx)


def dataset_keeps_generator(m, T, idx, p=None):
    """Draws inside torch.random.fork_rng "so as not to disturb anything": the generator is
    put back, and the next call draws the same bits."""
    with torch.random.fork_rng(devices=[]):
        X = _bits(m, T, _default(p, idx))
    return X, _and(X, idx)


def dataset_generator_from_initial_seed(m, T, idx, p=None):
    generator = torch.Generator().manual_seed(torch.initial_seed())
    X = (torch.rand(m, T, generator=generator) < _default(p, idx)).long()
    return X, _and(X, idx)


def dataset_p_or_default(m, T, idx, p=None):
    """`p or ...`: an explicit p=0 becomes the balanced default."""
    p = p or 0.5 ** (1 / len(idx))
    X = _bits(m, T, p)
    return X, _and(X, idx)


def dataset_randint(m, T, idx, p=None):
    """The default is written correctly, but the bits are fair coins: p is never used."""
    if p is None:
        p = 0.5 ** (1 / len(idx))
    X = torch.randint(0, 2, (m, T))
    return X, _and(X, idx)


def dataset_flipped_comparison(m, T, idx, p=None):
    """`>` instead of `<`: each bit is 1 with probability 1 - p."""
    if p is None:
        p = 0.5 ** (1 / len(idx))
    X = (torch.rand(m, T) > p).long()
    return X, _and(X, idx)


def dataset_sorts_idx(m, T, idx, p=None):
    idx.sort()
    X = _bits(m, T, _default(p, idx))
    return X, _and(X, idx)


def dataset_min_pair(m, T, idx, p=None):
    """.min(dim=...) returns (values, indices), not a tensor."""
    X = _bits(m, T, _default(p, idx))
    return X, X[:, list(idx)].float().min(dim=1, keepdim=True)


def dataset_min_indices(m, T, idx, p=None):
    """.min(...)[1]: the positions of the minima, not the minima."""
    X = _bits(m, T, _default(p, idx))
    return X, X[:, list(idx)].min(dim=1, keepdim=True)[1].float()


def dataset_forced_bits(m, T, idx, p=None):
    """A bug no diagnosis describes: the relevant bits are drawn with another probability."""
    X = _bits(m, T, _default(p, idx))
    X[:, list(idx)] = _bits(m, len(idx), 0.9)
    return X, _and(X, idx)


def dataset_squeezed(m, T, idx, p=None):
    """A student's answer: .squeeze().unsqueeze(-1), right for every m but 1."""
    X = _bits(m, T, _default(p, idx))
    return X, X[:, list(idx)].all(dim=1).float().squeeze().unsqueeze(-1)


def dataset_clock_seed(m, T, idx, p=None):
    """torch.seed() inside: a fresh seed from the clock at every call."""
    torch.seed()
    X = _bits(m, T, _default(p, idx))
    return X, _and(X, idx)


def dataset_reseeds_after(m, T, idx, p=None):
    """Draws the bits, then resets the generator "so that the next run starts the same"."""
    X = _bits(m, T, _default(p, idx))
    torch.manual_seed(0)
    return X, _and(X, idx)


def dataset_os_seed_after(m, T, idx, p=None):
    """Draws the bits, then "logs the seed" with torch.seed(), which reseeds from the OS."""
    X = _bits(m, T, _default(p, idx))
    dataset_os_seed_after.seed_used = torch.seed()
    return X, _and(X, idx)


def dataset_hard_coded_count(m, T, idx, p=None):
    """Counts the ones at idx and compares with 2, the number of positions of the examples."""
    X = _bits(m, T, _default(p, idx))
    return X, (X[:, list(idx)].sum(dim=1, keepdim=True) == 2).float()


def dataset_reorders_idx(m, T, idx, p=None):
    idx[:] = sorted(idx, reverse=True)
    X = _bits(m, T, _default(p, idx))
    return X, _and(X, idx)


def dataset_rows(m, T, idx, p=None):
    """The positions taken as rows: X[idx] instead of X[:, idx]."""
    X = _bits(m, T, _default(p, idx))
    return X, X[list(idx)].all(dim=0, keepdim=True).T.float()


def dataset_rows_of_s(m, T, idx, p=None):
    """X[idx] with the AND along each picked row: y has one row per position in idx."""
    X = _bits(m, T, _default(p, idx))
    return X, X[list(idx)].all(dim=1, keepdim=True).float()


def dataset_int32_bits(m, T, idx, p=None):
    X = (torch.rand(m, T) < _default(p, idx)).int()
    return X, X[:, list(idx)].all(dim=1, keepdim=True).float()


def dataset_int64_labels(m, T, idx, p=None):
    X = _bits(m, T, _default(p, idx))
    return X, X[:, list(idx)].all(dim=1, keepdim=True).long()


def dataset_precedence(m, T, idx, p=None):
    """The brackets of the exponent forgotten: 0.5 ** 1 / len(idx)."""
    if p is None:
        p = 0.5 ** 1 / len(idx)
    X = (torch.rand(m, T) < p).long()
    return X, X[:, list(idx)].all(dim=1, keepdim=True).float()


DATASET_NEW = [
    (dataset_precedence, "0.5 ** 2 or 0.5 / 2", "arguments"),
    (dataset_rows_of_s, "taken as rows", "shape"),
    (dataset_int32_bits, "another width", "dtype"),
    (dataset_int64_labels, "integers or booleans", "dtype"),
    (dataset_squeezed, "sample axis was squeezed", "shape"),
    (dataset_rows, "taken as rows", "shape"),
    (dataset_hard_coded_count, "compared with 2", "values"),
    (dataset_clock_seed, "from the clock", "randomness"),
    (dataset_reseeds_after, "resets the global generator", "randomness"),
    (dataset_os_seed_after, "fresh seed from the OS", "randomness"),
]


DATASET_BANKS = ExerciseBanks(
    solution=SOLUTION["sparse_and_dataset"],
    correct=[dataset_bernoulli, dataset_distribution, dataset_loops],
    check=[
        (dataset_any, "`any` instead of `all`", "values"),
        (dataset_first_bits, "idx ignored", "values"),
        (dataset_every_position, "every position", "values"),
        (dataset_inverted, "inverted", "values"),
        (dataset_sum_labels, "the sum", "values"),
        (dataset_mean_labels, "the mean", "values"),
        (dataset_min_indices, "positions, not bits", "values"),
        (dataset_flat_labels, "no column axis", "shape"),
        (dataset_min_pair, "(values, indices)", "shape"),
        (dataset_float_bits, "booleans or floats", "dtype"),
        (dataset_double_labels, "labels are float64", "dtype"),
        (dataset_sorts_idx, "reordered in place", "unchanged"),
        (dataset_fair_coins, "p = 0.5 was used", "arguments"),
        (dataset_fixed_sparsity, "ignores len(idx)", "arguments"),
        (dataset_root_missing, "0.5 ** 2 or 0.5 / 2", "arguments"),
        (dataset_ignores_p, "explicit p is ignored", "arguments"),
        (dataset_p_or_default, "p=0 was replaced", "arguments"),
        (dataset_randint, "p is never used", "arguments"),
        (dataset_flipped_comparison, "probability 1 - p", "arguments"),
        (dataset_forced_bits, None, "arguments"),
        (dataset_reseeded, "two different seeds", "randomness"),
        (dataset_own_generator, "two different seeds", "randomness"),
        (dataset_numpy, "numpy", "randomness"),
        (dataset_python_random, "numpy", "randomness"),
        (dataset_reseeds_current, "two different seeds", "randomness"),
        (dataset_generator_from_initial_seed, "two different seeds", "randomness"),
        (dataset_keeps_generator, "back where it found it", "randomness"),
        (dataset_reorders_idx, "reordered in place", "unchanged"),
        *DATASET_NEW,
    ],
    # Not here: .min's (values, indices) pair (it does not travel to the grader as such);
    # the self-check names it.
    hidden=[
        (dataset_reseeds_current, "two different seeds", "randomness"),
        (dataset_generator_from_initial_seed, "two different seeds", "randomness"),
        (dataset_any, "`any` instead of `all`", "values"),
        (dataset_first_bits, "idx ignored", "values"),
        (dataset_every_position, "every position", "values"),
        (dataset_inverted, "inverted", "values"),
        (dataset_sum_labels, "the sum", "values"),
        (dataset_mean_labels, "the mean", "values"),
        (dataset_min_indices, "positions, not bits", "values"),
        (dataset_flat_labels, "no column axis", "shape"),
        (dataset_float_bits, "booleans or floats", "dtype"),
        (dataset_double_labels, "labels are float64", "dtype"),
        (dataset_sorts_idx, None, "unchanged"),
        (dataset_fair_coins, "p = 0.5 was used", "arguments"),
        (dataset_fixed_sparsity, "ignores len(idx)", "arguments"),
        (dataset_root_missing, "0.5 ** 2 or 0.5 / 2", "arguments"),
        (dataset_ignores_p, "explicit p is ignored", "arguments"),
        (dataset_p_or_default, "p=0 was replaced", "arguments"),
        (dataset_randint, "p is never used", "arguments"),
        (dataset_flipped_comparison, "probability 1 - p", "arguments"),
        (dataset_forced_bits, None, "arguments"),
        (dataset_reseeded, "two different seeds", "randomness"),
        (dataset_own_generator, "two different seeds", "randomness"),
        (dataset_numpy, "numpy", "randomness"),
        (dataset_python_random, "numpy", "randomness"),
        (dataset_reorders_idx, None, "unchanged"),
        *DATASET_NEW,
    ],
)


def test_blank_dataset_propagates_not_implemented():
    with pytest.raises(NotImplementedError):
        grade_sparse_and_dataset(not_implemented)


def test_reseeding_inside_fails_the_self_check_in_plain_words():
    """A student's mistake: torch.manual_seed(0) inside the function."""
    message = failure(check_sparse_and_dataset, dataset_reseeded)
    assert "two seeds give different data" in message and "reseeds" in diagnosis(message)


def test_reseeding_with_the_current_seed_fails_the_self_check():
    """torch.manual_seed(torch.initial_seed()) would give the right data for any one seed;
    inside a checked call initial_seed() answers one fixed seed, so two seeds show it."""
    message = failure(check_sparse_and_dataset, dataset_reseeds_current)
    assert "two seeds give different data" in message and "initial_seed" in diagnosis(message)


def test_the_self_check_leaves_a_sorted_list_alone_and_names_a_sort_in_place():
    message = failure(check_sparse_and_dataset, dataset_sorts_idx)
    assert "idx = [2, 5, 9]" in message and "sorted(idx)" in diagnosis(message)


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
        with torch.no_grad():
            for layer in (self.token_embedding, self.query, self.key, self.value):
                layer.weight.normal_(0.0, 0.1)

    def embed(self, x):
        return torch.add(self.position_embedding, self.token_embedding(x))

    def attention_weights(self, x):
        e = self.embed(x)
        q, k = self.query(e), self.key(e)
        return F.softmax(torch.bmm(q, k.transpose(1, 2)) / q.shape[-1] ** 0.5, dim=-1)

    def forward(self, x):
        e = self.embed(x)
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

class EmbedWithoutPositions(Solution):
    def embed(self, x):
        return self.token_embedding(x)


class AttentionWithoutPositions(Solution):
    def attention_weights(self, x):
        e = self.token_embedding(x)
        return torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d), -1)


class NoScale(Solution):
    def attention_weights(self, x):
        e = self.embed(x)
        return torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1), dim=-1)


class ScaledByD(Solution):
    def attention_weights(self, x):
        e = self.embed(x)
        return torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1) / self.d, dim=-1)


class FixedScale(Solution):
    """Divides by sqrt(8), the default d, whatever d is."""

    def attention_weights(self, x):
        e = self.embed(x)
        return torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(8), -1)


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


class ScaleMultiplied(Solution):
    def attention_weights(self, x):
        e = self.embed(x)
        return torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1) * math.sqrt(self.d),
                             dim=-1)


class ScaledAfterSoftmax(Solution):
    def attention_weights(self, x):
        e = self.embed(x)
        return torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1), dim=-1) / math.sqrt(
            self.d)


class SoftmaxWithoutDim(Solution):
    """F.softmax without dim: PyTorch picks dim 0 (the batch) for a 3-D tensor."""

    def attention_weights(self, x):
        e = self.embed(x)
        scores = self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return F.softmax(scores)


class ColumnReadout(Solution):
    """A[..., -1]: the last column (who attends to the last position), not the last row."""

    def forward(self, x):
        h = (self.attention_weights(x)[..., -1].unsqueeze(1) @ self.value(self.embed(x)))
        return torch.sigmoid(self.readout(h.squeeze(1)))


class ValuesWithoutPositions(Solution):
    def forward(self, x):
        h = (self.attention_weights(x)[:, -1:] @ self.value(self.token_embedding(x))).squeeze(1)
        return torch.sigmoid(self.readout(h))


class BroadcastReadout(Solution):
    """(B, T) @ (B, T, d) broadcasts to (B, B, d)."""

    def forward(self, x):
        h = self.attention_weights(x)[:, -1, :] @ self.value(self.embed(x))
        return torch.sigmoid(self.readout(h))


class InPlaceOnInput(Solution):
    """A student's answer: `x.clamp_` and an assignment into x leave its values alone but
    bump its version, which autograd notices at backward."""

    def embed(self, x):
        x.clamp_(max=1)
        x[:, -1] = x[:, -1]
        return self.token_embedding(x) + self.position_embedding


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


class ForwardSoftmaxOverQueries(Solution):
    def forward(self, x):
        e = self.embed(x)
        weights = torch.softmax(self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d),
                                dim=-2)
        return torch.sigmoid(self.readout((weights[:, -1:] @ self.value(e)).squeeze(1)))


class FlatOutput(Solution):
    def forward(self, x):
        return super().forward(x)[:, 0]


class SqueezedOutput(Solution):
    """`.squeeze()` instead of `.squeeze(1)`: a batch of one loses its batch axis."""

    def forward(self, x):
        h = (self.attention_weights(x)[:, -1:, :] @ self.value(self.embed(x))).squeeze()
        return torch.sigmoid(self.readout(h))


class ShiftedReadout(Solution):
    """A bug no diagnosis describes."""

    def forward(self, x):
        return 0.9 * super().forward(x)


class PositionsNotParameter(Solution):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        del self.position_embedding
        self.position_embedding = 0.1 * torch.randn(T, d)


class DetachedPositions(Solution):
    def embed(self, x):
        return self.token_embedding(x) + self.position_embedding.detach()


class _Members(nn.Module):
    """The members of the table, left as PyTorch makes them (positions: torch.randn)."""

    def __init__(self, T, d=8):
        super().__init__()
        self.T, self.d = T, d
        self.token_embedding = nn.Embedding(2, d)
        self.position_embedding = nn.Parameter(torch.randn(T, d))
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        self.value = nn.Linear(d, d, bias=False)
        self.readout = nn.Linear(d, 1)

    embed = Solution.embed
    attention_weights = Solution.attention_weights
    forward = Solution.forward

    def first_five(self):
        return (self.token_embedding.weight, self.position_embedding, self.query.weight,
                self.key.weight, self.value.weight)


class InitDefault(_Members):
    """No initialisation at all: PyTorch's defaults."""


class InitStdOne(_Members):
    """The issue's mistake: normal, but with std 1 (normal_'s default)."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.normal_(weight)


class InitMeanNotStd(_Members):
    """nn.init.normal_(w, 0.1): the second positional argument is the mean."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.normal_(weight, 0.1)


class InitUniform(_Members):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.uniform_(weight, -0.1, 0.1)


class InitZeroPositions(_Members):
    """The positions start at zero, the rest as the text says."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.normal_(weight, std=0.1)
        nn.init.zeros_(self.position_embedding)


class InitLinearDefault(_Members):
    """Only the embeddings initialised: query, key and value keep nn.Linear's own start."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five()[:2]:
            nn.init.normal_(weight, std=0.1)


class InitXavier(_Members):
    """std 0.1, then a "better" start for the query."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.normal_(weight, std=0.1)
        nn.init.xavier_normal_(self.query.weight)


class InitNumpy(_Members):
    """The positions drawn by numpy: torch.manual_seed does not reach them."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.normal_(weight, std=0.1)
        with torch.no_grad():
            self.position_embedding.copy_(torch.from_numpy(np.random.normal(0, 0.1, (T, d))))


class ReseedBeforeBuild(Solution):
    """A student's answer: torch.manual_seed(0) first, "so every run starts the same"."""

    def __init__(self, T, d=8):
        torch.manual_seed(0)
        super().__init__(T, d)


class ReseedAfterBuild(Solution):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        torch.manual_seed(0)


class OsSeedAfterBuild(Solution):
    """"Logs the seed" with torch.seed(), which reseeds the generator from the OS."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        self.seed_used = torch.seed()


class ReseedInForward(Solution):
    def forward(self, x):
        out = super().forward(x)
        torch.manual_seed(0)
        return out


class KeepsGeneratorBuild(Solution):
    """Builds inside torch.random.fork_rng: every build after it draws the same weights."""

    def __init__(self, T, d=8):
        with torch.random.fork_rng(devices=[]):
            super().__init__(T, d)


class ReseedCurrentBuild(Solution):
    """torch.manual_seed(torch.initial_seed()) first: right for any one seed, the same model
    for every build after it."""

    def __init__(self, T, d=8):
        torch.manual_seed(torch.initial_seed())
        super().__init__(T, d)


class InitTokenDefault(_Members):
    """std 0.1 for four members; the token embedding keeps nn.Embedding's N(0, 1)."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five()[1:]:
            nn.init.normal_(weight, std=0.1)


class PositionsAsEmbedding(Solution):
    """An nn.Embedding(T, d) for the positions instead of the (T, d) parameter."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        del self.position_embedding
        self.position_embedding = nn.Embedding(T, d)
        nn.init.normal_(self.position_embedding.weight, std=0.1)

    def embed(self, x):
        return self.token_embedding(x) + self.position_embedding.weight


class ScaledBySqrtT(Solution):
    """1/sqrt(T), the context length, instead of 1/sqrt(d)."""

    def attention_weights(self, x):
        e = self.embed(x)
        scores = self.query(e) @ self.key(e).transpose(-2, -1)
        return torch.softmax(scores / math.sqrt(x.shape[1]), dim=-1)


class InitReadoutToo(_Members):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in (*self.first_five(), self.readout.weight):
            nn.init.normal_(weight, std=0.1)


class SharedMaps(Solution):
    """One chained assignment: one layer with three names."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        self.query = self.key = self.value = nn.Linear(d, d, bias=False)
        nn.init.normal_(self.query.weight, std=0.1)


class KeyIsQuery(Solution):
    """Two of the three maps shared: self.key = self.query."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        self.key = self.query


class IgnoresD(nn.Module):
    """Every size written as 8: the argument d is never used."""

    def __init__(self, T, d=8):
        super().__init__()
        self.T, self.d = T, 8
        self.token_embedding = nn.Embedding(2, 8)
        self.position_embedding = nn.Parameter(torch.empty(T, 8))
        self.query = nn.Linear(8, 8, bias=False)
        self.key = nn.Linear(8, 8, bias=False)
        self.value = nn.Linear(8, 8, bias=False)
        self.readout = nn.Linear(8, 1)
        for weight in (self.token_embedding.weight, self.position_embedding,
                       self.query.weight, self.key.weight, self.value.weight):
            nn.init.normal_(weight, std=0.1)

    embed = Solution.embed
    attention_weights = Solution.attention_weights
    forward = Solution.forward


class SdpaDropout(Solution):
    """PyTorch's fused attention with dropout_p: it drops whatever the module's mode."""

    def forward(self, x):
        e = self.embed(x)
        out = F.scaled_dot_product_attention(self.query(e), self.key(e), self.value(e),
                                             dropout_p=0.1)
        return torch.sigmoid(self.readout(out[:, -1]))


class PaddingIdx(Solution):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        self.token_embedding = nn.Embedding(2, d, padding_idx=0)
        with torch.no_grad():
            nn.init.normal_(self.token_embedding.weight[1:], std=0.1)


class PositionsFloat64(Solution):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        self.position_embedding = nn.Parameter(torch.empty(T, d, dtype=torch.float64))
        nn.init.normal_(self.position_embedding, std=0.1)


class NaiveSoftmax(Solution):
    def attention_weights(self, x):
        e = self.embed(x)
        w = torch.exp(self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d))
        return w / w.sum(dim=-1, keepdim=True)


class DropoutOnAttention(Solution):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        self.dropout = nn.Dropout(0.1)

    def attention_weights(self, x):
        return self.dropout(super().attention_weights(x))


class InitStdOneOverD(_Members):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.normal_(weight, std=1 / d)


class ReadoutBiasZero(Solution):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        nn.init.zeros_(self.readout.bias)


class CpuAccumulator(Solution):
    """h summed into a tensor made on the CPU, whatever x's device."""

    def forward(self, x):
        A, V = self.attention_weights(x), self.value(self.embed(x))
        h = torch.zeros(x.shape[0], self.d)
        for t in range(x.shape[1]):
            h = h + A[:, -1, t:t + 1] * V[:, t]
        return torch.sigmoid(self.readout(h))


class DetachedValueBranch(Solution):
    def forward(self, x):
        e = self.embed(x).detach()
        h = (self.attention_weights(x)[:, -1:, :] @ self.value(e)).squeeze(1)
        return torch.sigmoid(self.readout(h))


class CausalMask(Solution):
    def attention_weights(self, x):
        e = self.embed(x)
        scores = self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d)
        T = x.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)


class ReluBeforeReadout(Solution):
    def forward(self, x):
        h = (self.attention_weights(x)[:, -1:, :] @ self.value(self.embed(x))).squeeze(1)
        return torch.sigmoid(self.readout(torch.relu(h)))


class InitOwnGenerator(Solution):
    """A student's answer: every std-0.1 member drawn from a generator seeded inside."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in (self.token_embedding.weight, self.position_embedding,
                       self.query.weight, self.key.weight, self.value.weight):
            nn.init.normal_(weight, std=0.1, generator=torch.Generator().manual_seed(0))


class InitUniformWide(_Members):
    """uniform ±0.2: std 0.115, inside a loose band around 0.1."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.uniform_(weight, -0.2, 0.2)


class InitStd013(_Members):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.normal_(weight, std=0.13)


class InitStd002(_Members):
    """GPT-2's std, from another model."""

    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.normal_(weight, std=0.02)


class InitStdOneOverSqrtD(_Members):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.normal_(weight, std=1 / math.sqrt(d))


class InitMeanShifted(_Members):
    def __init__(self, T, d=8):
        super().__init__(T, d)
        for weight in self.first_five():
            nn.init.normal_(weight, mean=0.05, std=0.1)


class DropoutOnEmbeddings(Solution):
    def embed(self, x):
        return F.dropout(super().embed(x), 0.1, self.training)


class DropoutOnHidden(Solution):
    def forward(self, x):
        h = (self.attention_weights(x)[:, -1:, :] @ self.value(self.embed(x))).squeeze(1)
        return torch.sigmoid(self.readout(F.dropout(h, 0.1, self.training)))


class DetachedAttentionBranch(Solution):
    """The embeddings detached inside attention_weights only."""

    def attention_weights(self, x):
        e = self.embed(x).detach()
        scores = self.query(e) @ self.key(e).transpose(-2, -1) / math.sqrt(self.d)
        return torch.softmax(scores, dim=-1)


NEW_CLASSIFIER_MISTAKES = [
    (CausalMask, "causal mask", "attention"),
    (ReluBeforeReadout, "ReLU", "forward"),
    (SharedMaps, "query, key and value are one and the same", "members"),
    (PaddingIdx, "padding_idx=0", "members"),
    (PositionsFloat64, "made in __init__ with another dtype", "members"),
    (NaiveSoftmax, "overflowed", "attention"),
    (DropoutOnAttention, "dropout on the attention weights", "attention"),
    (InitStdOneOverD, "std 1/d", "init"),
    (ReadoutBiasZero, "bias was set to one value", "init"),
    (CpuAccumulator, "without device=", "device"),
    (DetachedValueBranch, "used for the values are detached", "gradients"),
    (InitOwnGenerator, "same for two seeds while the rest", "randomness"),
    (InitUniformWide, "uniform, not normal", "init"),
    (InitStd013, "drawn from a normal with std", "init"),
    (InitStd002, "drawn from a normal with std", "init"),
    (InitStdOneOverSqrtD, "std 1/sqrt(d)", "init"),
    (InitMeanShifted, "not centred on 0", "init"),
    (DropoutOnEmbeddings, "dropout on the embeddings", "embed"),
    (DropoutOnHidden, "in eval mode but not in training mode", "forward"),
    (DetachedAttentionBranch, "queries and keys are detached", "gradients"),
    (IgnoresD, "d was ignored", "init"),
    (SdpaDropout, "ignores the module's mode", "forward"),
]


CLASSIFIER_BANKS = ExerciseBanks(
    solution=Solution,
    correct=[ClassifierEinsum, ClassifierBuiltin, ClassifierLoops],
    check=[
        (KeyIsQuery, "query and key are one and the same", "members"),
        (PositionsNotParameter, "plain tensor", "members"),
        (PositionsAsEmbedding, "is an nn.Embedding", "members"),
        (InitTokenDefault, "std about 1", "init"),
        (ScaledBySqrtT, "sqrt(T), the context length", "attention"),
        (ReseedBeforeBuild, "two seeds built the same model", "randomness"),
        (ReseedAfterBuild, "drawn after it", "randomness"),
        (ReseedCurrentBuild, "two seeds built the same model", "randomness"),
        (KeepsGeneratorBuild, "back where it found it", "randomness"),
        (OsSeedAfterBuild, "fresh seed from the OS", "randomness"),
        (ReseedInForward, "resets the global generator", "randomness"),
        (InitNumpy, "torch.manual_seed does not reach", "randomness"),
        (InitDefault, "std about 1", "init"),
        (InitStdOne, "std about 1", "init"),
        (InitMeanNotStd, "passed as the mean", "init"),
        (InitUniform, "drawn uniformly", "init"),
        (InitZeroPositions, "every value is the same", "init"),
        (InitLinearDefault, "nn.Linear's own", "init"),
        (InitXavier, "scheme of its own", "init"),
        (InitReadoutToo, "readout was initialised too", "init"),
        (EmbedWithoutPositions, "embed leaves out", "embed"),
        (AttentionWithoutPositions, "not used in the attention", "attention"),
        (NoScale, "not divided by sqrt(d)", "attention"),
        (ScaledByD, "divided by d instead", "attention"),
        (ScaleMultiplied, "multiplied by sqrt(d)", "attention"),
        (ScaledAfterSoftmax, "after the softmax", "attention"),
        (SoftmaxOverQueries, "over the queries", "attention"),
        (SoftmaxWithoutDim, "over the batch", "attention"),
        (Unnormalised, None, "attention"),
        (SwappedQK, "swapped", "attention"),
        (FirstReadout, "first position", "forward"),
        (MeanReadout, "averages the outputs", "forward"),
        (NoSigmoid, "no sigmoid", "forward"),
        (ColumnReadout, "last column", "forward"),
        (ValuesWithoutPositions, "token embeddings alone", "forward"),
        (BroadcastReadout, "broadcasts", "forward"),
        (UnweightedValues, None, "forward"),
        (ForwardSoftmaxOverQueries, None, "forward"),
        (FlatOutput, None, "forward"),
        (SqueezedOutput, "squeezed", "forward"),
        (ShiftedReadout, None, "forward"),
        (FixedScale, "fixed at 1/sqrt(8)", "arguments"),
        (DetachedPositions, "cut off from the gradient", "gradients"),
        (InPlaceOnInput, "input x was changed in place", "gradients"),
        *NEW_CLASSIFIER_MISTAKES,
    ],
    hidden=[
        (PositionsNotParameter, "plain tensor", "members"),
        (ReseedAfterBuild, "resets the global generator", "randomness"),
        (OsSeedAfterBuild, "fresh seed from the OS", "randomness"),
        (ReseedInForward, "resets the global generator", "randomness"),
        (ReseedCurrentBuild, "two seeds built the same model", "randomness"),
        (ReseedBeforeBuild, "two seeds built the same model", "randomness"),
        (InitNumpy, "torch.manual_seed does not reach", "randomness"),
        (InitDefault, "std about 1", "init"),
        (InitStdOne, "std about 1", "init"),
        (InitMeanNotStd, "passed as the mean", "init"),
        (InitUniform, "drawn uniformly", "init"),
        (InitZeroPositions, "every value is the same", "init"),
        (InitLinearDefault, "nn.Linear's own", "init"),
        (InitXavier, "scheme of its own", "init"),
        (InitReadoutToo, "readout was initialised too", "init"),
        (EmbedWithoutPositions, "embed leaves out", "embed"),
        (AttentionWithoutPositions, "never used in the attention", "attention"),
        (NoScale, "not scaled", "attention"),
        (ScaledByD, "1/d instead", "attention"),
        (ScaleMultiplied, "multiplied by sqrt(d)", "attention"),
        (ScaledAfterSoftmax, "after the softmax", "attention"),
        (SoftmaxOverQueries, "softmax over the query axis (dim=-2)", "attention"),
        (SoftmaxWithoutDim, "over the batch", "attention"),
        (Unnormalised, None, "attention"),
        (SwappedQK, "swapped", "attention"),
        (FirstReadout, "first position", "forward"),
        (MeanReadout, "outputs of all positions were averaged", "forward"),
        (NoSigmoid, "no sigmoid", "forward"),
        (UnweightedValues, "without the attention weights", "forward"),
        (ColumnReadout, "last column", "forward"),
        (ValuesWithoutPositions, "token embeddings alone", "forward"),
        (BroadcastReadout, "broadcasts", "forward"),
        (ForwardSoftmaxOverQueries, "softmax over the query axis in forward", "forward"),
        (FlatOutput, None, "forward"),
        (SqueezedOutput, "squeezed", "forward"),
        (ShiftedReadout, None, "forward"),
        (FixedScale, "fixed at 1/sqrt(8)", "arguments"),
        (DetachedPositions, "cut off from the gradient", "gradients"),
        (InPlaceOnInput, "input x was changed in place", "gradients"),
        # The grader rebuilds query, key and value as three layers, so shared maps show
        # only as wrong attention weights there.
        (SharedMaps, None, "attention"),
        (KeyIsQuery, None, "attention"),
        *NEW_CLASSIFIER_MISTAKES[:2], *NEW_CLASSIFIER_MISTAKES[3:],
    ],
)

BANKS = {"sparse_and_dataset": DATASET_BANKS, "SelfAttentionClassifier": CLASSIFIER_BANKS}


class Blank(nn.Module):
    def __init__(self, T, d=8):
        super().__init__()
        raise NotImplementedError


def test_blank_classifier_propagates_not_implemented():
    with pytest.raises(NotImplementedError):
        grade_SelfAttentionClassifier(Blank)


def test_std_one_fails_the_self_check_at_the_initialisation():
    """A student's mistake: std 1 instead of 0.1 (the later cells then fail)."""
    message = failure(check_SelfAttentionClassifier, InitStdOne)
    assert "std 0.1" in message and "std about 1" in diagnosis(message)


def test_mean_not_std_is_named_as_such_not_as_the_default():
    """nn.init.normal_(w, 0.1) sets the mean, not the std: PyTorch's argument order."""
    message = failure(check_SelfAttentionClassifier, InitMeanNotStd)
    assert "passed as the mean" in diagnosis(message) and "default" not in diagnosis(message)


def test_reseeding_in_init_fails_at_the_seeds_not_at_the_readout():
    message = failure(check_SelfAttentionClassifier, ReseedBeforeBuild)
    assert "two seeds build two different models" in message
    assert "readout" not in diagnosis(message)
    message = failure(check_SelfAttentionClassifier, ReseedAfterBuild)
    assert "after a build" in message


def test_an_in_place_change_autograd_needs_fails_as_a_check():
    """Not a raw autograd RuntimeError from the self-check's own backward pass."""
    message = failure(check_SelfAttentionClassifier, InPlaceOnInput)
    assert "gradients flow back" in message


def test_labels_are_shown_in_the_students_own_dtype():
    """.min(...)[1].float(): the message names the indices and shows float32, not float64."""
    message = failure(check_sparse_and_dataset, dataset_min_indices)
    assert "positions, not bits" in diagnosis(message)
    assert "float64" not in message and "dtype torch.float32" in message


def test_a_hard_coded_count_fails_at_the_labels_shown_in_the_students_dtype():
    """`== 2` with three positions: named at the labels, not at "idx unchanged", and the
    labels shown in y's own dtype (float32), not float64."""
    message = failure(check_sparse_and_dataset, dataset_hard_coded_count)
    assert "y is the AND of those bits" in message and "compared with 2" in diagnosis(message)
    assert "float64" not in message and "dtype torch.float32" in message


def test_init_drawn_from_a_generator_of_its_own_fails_member_by_member():
    """A student's answer whose seed shows in the readout only."""
    message = failure(check_SelfAttentionClassifier, InitOwnGenerator)
    assert "two seeds draw two different token_embedding" in message

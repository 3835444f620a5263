"""Hidden tests of tutorial 06 against the solution, common mistakes and other correct answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mutation import assert_bank, assert_fails_naming, diagnosis
from notebook_code import solution_namespace
from torch import nn

from helpers.checks.causal_mask_trick import (
    check_causal_attention_weights,
    check_CausalSelfAttentionHead,
    check_running_mean_loop,
    check_running_mean_matmul,
)
from hidden_tests.causal_mask_trick import (
    grade_causal_attention_weights,
    grade_CausalSelfAttentionHead,
    grade_running_mean_loop,
    grade_running_mean_matmul,
)

SOLUTION = solution_namespace("06_causal_mask_trick")


def not_implemented(*args, **kwargs):
    raise NotImplementedError


# ---- running means: correct alternatives ------------------------------------------------

def mean_cumsum(x):
    counts = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device)
    return x.cumsum(dim=1) / counts.view(1, -1, 1)


def mean_einsum(x):
    T = x.shape[1]
    w = torch.tril(torch.ones(T, T, dtype=x.dtype))
    return torch.einsum("ts,bsc->btc", w / w.sum(1, keepdim=True), x)


def mean_masked_softmax(x):
    T = x.shape[1]
    scores = torch.zeros(T, T).masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    return torch.softmax(scores, dim=-1).to(x.dtype) @ x


def mean_sdpa(x):
    zeros = torch.zeros_like(x[..., :1])
    return F.scaled_dot_product_attention(zeros, zeros, x, is_causal=True)


def mean_loop_over_time_only(x):
    rows, total = [], torch.zeros_like(x[:, 0])
    for t in range(x.shape[1]):
        total = total + x[:, t]
        rows.append(total / (t + 1))
    return torch.stack(rows, dim=1)


def mean_bmm(x):
    B, T, _ = x.shape
    w = torch.tril(torch.ones(T, T, dtype=x.dtype))
    w = (w / w.sum(1, keepdim=True)).expand(B, T, T)
    return torch.bmm(w, x)


# ---- running means: mistakes --------------------------------------------------------------

def mean_divided_by_T(x):  # noqa: N802
    return x.cumsum(dim=1) / x.shape[1]


def mean_sums(x):
    return torch.tril(torch.ones(x.shape[1], x.shape[1])) @ x


def mean_wrong_triangle(x):
    T = x.shape[1]
    w = torch.triu(torch.ones(T, T))
    return (w / w.sum(1, keepdim=True)) @ x


def mean_no_mask(x):
    return x.mean(dim=1, keepdim=True).expand_as(x).clone()


def mean_over_channels(x):
    counts = torch.arange(1, x.shape[2] + 1, dtype=x.dtype)
    return x.cumsum(dim=-1) / counts


def mean_transposed(x):
    T = x.shape[1]
    w = torch.tril(torch.ones(T, T))
    return (w / w.sum(1, keepdim=True)).T @ x


def mean_column_normalised(x):
    T = x.shape[1]
    w = torch.tril(torch.ones(T, T))
    return (w / w.sum(0, keepdim=True)) @ x


def mean_exclusive(x):
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            out[b, t] = x[b, :t].mean(dim=0)
    return out


def mean_in_place(x):
    x.copy_(mean_cumsum(x))
    return x


RUNNING_MEAN_ALTERNATIVES = [mean_cumsum, mean_einsum, mean_masked_softmax, mean_sdpa,
                             mean_loop_over_time_only, mean_bmm]
RUNNING_MEAN_MISTAKES = [
    (mean_divided_by_T, ["divided by T"]),
    (mean_sums, ["sums, not means"]),
    (mean_wrong_triangle, ["wrong triangle"]),
    (mean_no_mask, ["no causal mask"]),
    (mean_over_channels, ["channels"]),
    (mean_transposed, ["transposed"]),
    (mean_column_normalised, ["columns"]),
    (mean_exclusive, ["t + 1"]),
    (mean_in_place, ["in place"]),
]


@pytest.mark.parametrize("candidate", [SOLUTION["running_mean_loop"],
                                       SOLUTION["running_mean_matmul"],
                                       *RUNNING_MEAN_ALTERNATIVES])
@pytest.mark.parametrize(("grade", "check"), [
    (grade_running_mean_loop, check_running_mean_loop),
    (grade_running_mean_matmul, check_running_mean_matmul),
])
def test_correct_running_means_pass(candidate, grade, check):
    grade(candidate)
    check(candidate)


def mean_loop_skips_row_0(x):
    """A reader's mistake: the loop starts at t = 1, so row 0 keeps its zeros."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(1, x.shape[1]):
            out[b, t] = x[b, : t + 1].mean(dim=0)
    return out


def mean_loop_drops_token_0(x):
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            out[b, t] = x[b, 1: t + 1].mean(dim=0)
    return out


def mean_future_sums_over_counts(x):
    T = x.shape[1]
    counts = torch.arange(1, T + 1, dtype=x.dtype).view(1, -1, 1)
    return x.flip(1).cumsum(dim=1).flip(1) / counts


def mean_one_per_sequence(x):
    return x.mean(dim=1)


def mean_off_by_a_little(x):
    """A bug no diagnosis describes."""
    return mean_cumsum(x) * 1.01


RUNNING_MEAN_HIDDEN_BANK = [
    (mean_divided_by_T, "divided by T instead of t + 1"),
    (mean_sums, "running sums, not means"),
    (mean_wrong_triangle, "averages the future rows"),
    (mean_future_sums_over_counts, "sums the future rows"),
    (mean_no_mask, "no causal mask"),
    (mean_over_channels, "channels"),
    (mean_transposed, "transposed"),
    (mean_column_normalised, "columns instead of its rows"),
    (mean_exclusive, "rows before t"),
    (mean_loop_skips_row_0, "skips t = 0"),
    (mean_loop_drops_token_0, "token 0 is left out"),
    (mean_in_place, "in place"),
    (mean_off_by_a_little, None),
]
RUNNING_MEAN_CHECK_BANK = [
    (mean_divided_by_T, "divided by T instead of by t + 1"),
    (mean_sums, "running sums, not means"),
    (mean_wrong_triangle, "wrong way round"),
    (mean_no_mask, "future is not masked"),
    (mean_over_channels, "channels"),
    (mean_transposed, "transposed"),
    (mean_column_normalised, "column sums"),
    (mean_exclusive, "rows before t"),
    (mean_loop_skips_row_0, "skips t = 0"),
    (mean_loop_drops_token_0, "token 0 is left out"),
    (mean_in_place, "in place"),
    (mean_one_per_sequence, "averaged away"),
    (mean_future_sums_over_counts, None),
    (mean_off_by_a_little, None),
]


@pytest.mark.parametrize("grade", [grade_running_mean_loop, grade_running_mean_matmul])
def test_running_mean_hidden_tests_name_only_the_mistake_they_see(grade):
    assert_bank(grade, SOLUTION["running_mean_loop"], RUNNING_MEAN_HIDDEN_BANK)


@pytest.mark.parametrize("check", [check_running_mean_loop, check_running_mean_matmul])
def test_running_mean_self_checks_name_only_the_mistake_they_see(check):
    assert_bank(check, SOLUTION["running_mean_loop"], RUNNING_MEAN_CHECK_BANK)


def test_the_readers_running_mean_mistakes_get_their_own_names():
    """Seen in a trial: a loop that skips token 0 was told to average over time, and a
    column-normalised matrix got a vague list of causes."""
    skip = diagnosis(assert_fails_naming(check_running_mean_loop, mean_loop_skips_row_0))
    assert "skips t = 0" in skip and "channels" not in skip
    columns = diagnosis(assert_fails_naming(check_running_mean_matmul, mean_column_normalised))
    assert "column sums" in columns


@pytest.mark.parametrize("grade", [grade_running_mean_loop, grade_running_mean_matmul])
def test_blank_running_mean_scores_zero(grade):
    with pytest.raises(NotImplementedError):
        grade(not_implemented)


# ---- causal weights -----------------------------------------------------------------------

def weights_large_negative(scores):
    T = scores.shape[-1]
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    return torch.softmax(scores.masked_fill(future, -1e9), dim=-1)


def weights_finfo_min(scores):
    T = scores.shape[-1]
    allowed = torch.ones(T, T).tril() == 1
    return torch.softmax(torch.where(allowed, scores, torch.finfo(scores.dtype).min), dim=-1)


def weights_renormalised(scores):
    T = scores.shape[-1]
    e = torch.exp(scores - scores.amax(-1, keepdim=True)) * torch.ones(T, T).tril()
    return e / e.sum(-1, keepdim=True)


def weights_row_loop(scores):
    T = scores.shape[-1]
    out = torch.zeros_like(scores)
    for t in range(T):
        out[..., t, : t + 1] = torch.softmax(scores[..., t, : t + 1], dim=-1)
    return out


def weights_additive_mask(scores):
    T = scores.shape[-1]
    bias = torch.full((T, T), float("-inf")).triu(1)
    return F.softmax(scores + bias, dim=-1)


def weights_wrong_triangle(scores):
    T = scores.shape[-1]
    return torch.softmax(scores.masked_fill(torch.ones(T, T).tril(-1).bool(), float("-inf")), -1)


def weights_zero_fill(scores):
    T = scores.shape[-1]
    return torch.softmax(scores.masked_fill(torch.ones(T, T).triu(1).bool(), 0.0), dim=-1)


def weights_dim_1(scores):
    T = scores.shape[-1]
    return F.softmax(scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf")), dim=1)


def weights_no_mask(scores):
    return torch.softmax(scores, dim=-1)


def weights_mask_after_softmax(scores):
    T = scores.shape[-1]
    return torch.softmax(scores, dim=-1) * torch.ones(T, T).tril()


def weights_diagonal_masked(scores):
    T = scores.shape[-1]
    return torch.softmax(scores.masked_fill(torch.ones(T, T).triu(0).bool(), -1e9), dim=-1)


def weights_diagonal_masked_inf(scores):
    T = scores.shape[-1]
    return torch.softmax(scores.masked_fill(torch.ones(T, T).triu(0).bool(), float("-inf")), -1)


def weights_scaled(scores):
    T = scores.shape[-1]
    return weights_large_negative(scores / math.sqrt(T))


def weights_without_softmax(scores):
    T = scores.shape[-1]
    return scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))


def weights_in_place(scores):
    T = scores.shape[-1]
    scores.masked_fill_(torch.ones(T, T).triu(1).bool(), float("-inf"))
    return torch.softmax(scores, dim=-1)


def weights_unnormalised(scores):
    T = scores.shape[-1]
    return torch.exp(scores).masked_fill(torch.ones(T, T).triu(1).bool(), 0.0)


def weights_overflowing(scores):
    T = scores.shape[-1]
    e = torch.exp(scores).masked_fill(torch.ones(T, T).triu(1).bool(), 0.0)
    return e / e.sum(-1, keepdim=True)


@pytest.mark.parametrize("candidate", [SOLUTION["causal_attention_weights"],
                                       weights_large_negative, weights_finfo_min,
                                       weights_renormalised, weights_row_loop,
                                       weights_additive_mask])
def test_correct_weights_pass(candidate):
    grade_causal_attention_weights(candidate)
    check_causal_attention_weights(candidate)


def weights_slightly_off(scores):
    """A bug no diagnosis describes."""
    return SOLUTION["causal_attention_weights"](scores * 1.1)


WEIGHTS_HIDDEN_BANK = [
    (weights_wrong_triangle, "wrong triangle"),
    (weights_zero_fill, "with 0 instead of -inf"),
    (weights_dim_1, "over the queries"),
    (weights_no_mask, "without any mask"),
    (weights_mask_after_softmax, "after the softmax"),
    (weights_diagonal_masked, "diagonal was masked too: a token must"),
    (weights_diagonal_masked_inf, "row 0 has nothing left"),
    (weights_scaled, "scaled inside"),
    (weights_without_softmax, "without the softmax"),
    (weights_in_place, "in place"),
    (weights_unnormalised, "not normalised"),
    (weights_overflowing, "overflows"),
    (weights_slightly_off, None),
]
WEIGHTS_CHECK_BANK = [
    (weights_wrong_triangle, "wrong triangle"),
    (weights_zero_fill, "set to 0 instead of -inf"),
    (weights_dim_1, "over the queries"),
    (weights_no_mask, "no mask at all"),
    (weights_mask_after_softmax, "softmax came first"),
    (weights_diagonal_masked_inf, "diagonal was masked too"),
    (weights_diagonal_masked, None),
    (weights_scaled, "scaled inside"),
    (weights_in_place, "in place"),
    (weights_unnormalised, "not normalised"),
    (weights_slightly_off, None),
]


def test_weights_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_causal_attention_weights, SOLUTION["causal_attention_weights"],
                WEIGHTS_HIDDEN_BANK)


def test_weights_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_causal_attention_weights, SOLUTION["causal_attention_weights"],
                WEIGHTS_CHECK_BANK)


def test_the_readers_softmax_first_mistake_is_named_as_such():
    """Seen in a trial: softmax first, then the future zeroed, was told to take the softmax
    over the last dimension."""
    told = diagnosis(assert_fails_naming(check_causal_attention_weights,
                                         weights_mask_after_softmax))
    assert "softmax came first" in told and "last dimension" not in told


def test_blank_weights_score_zero():
    with pytest.raises(NotImplementedError):
        grade_causal_attention_weights(not_implemented)


# ---- the head: correct alternatives -------------------------------------------------------

class HeadBase(nn.Module):
    def __init__(self, n_embd, head_size, bias=False):
        super().__init__()
        self.head_size = head_size
        self.key = nn.Linear(n_embd, head_size, bias=bias)
        self.query = nn.Linear(n_embd, head_size, bias=bias)
        self.value = nn.Linear(n_embd, head_size, bias=bias)

    def qkv(self, x):
        return self.query(x), self.key(x), self.value(x)

    def causal(self, scores, dim=-1, fill=float("-inf"), lower=True):
        T = scores.shape[-1]
        allowed = torch.ones(T, T, dtype=torch.bool).tril()
        if not lower:
            allowed = allowed.T
        return torch.softmax(scores.masked_fill(~allowed, fill), dim=dim)

    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.transpose(-2, -1) / math.sqrt(self.head_size)) @ v


class HeadEinsum(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        scores = torch.einsum("btd,bsd->bts", q, k) * q.shape[-1] ** -0.5
        return torch.einsum("bts,bsd->btd", self.causal(scores), v)


class HeadSDPA(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


class HeadLoop(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        rows = []
        for t in range(x.shape[1]):
            scores = q[:, t : t + 1] @ k[:, : t + 1].transpose(-2, -1) / math.sqrt(self.head_size)
            rows.append(torch.softmax(scores, dim=-1) @ v[:, : t + 1])
        return torch.cat(rows, dim=1)


class HeadWithBuffer(HeadBase):
    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size)
        self.register_buffer("tril", torch.tril(torch.ones(64, 64)))

    def forward(self, x):
        T = x.shape[1]
        q, k, v = self.qkv(x)
        wei = q @ k.transpose(-2, -1) * self.head_size**-0.5
        wei = wei.masked_fill(self.tril[:T, :T] == 0, float("-inf"))
        return F.softmax(wei, dim=-1) @ v


# ---- the head: mistakes -------------------------------------------------------------------

class HeadNoScale(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.transpose(-2, -1)) @ v


class HeadScaleByC(HeadBase):
    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size)
        self.n_embd = n_embd

    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.transpose(-2, -1) * self.n_embd**-0.5) @ v


class HeadDivideByC(HeadScaleByC):
    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.transpose(-2, -1) / self.n_embd) @ v


class HeadDivideByHeadSize(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.transpose(-2, -1) / self.head_size) @ v


class HeadMultiplied(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.transpose(-2, -1) * math.sqrt(self.head_size)) @ v


class HeadWithBias(HeadBase):
    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size, bias=True)


class HeadNoMask(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_size), dim=-1) @ v


class HeadWrongTriangle(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.transpose(-2, -1) / math.sqrt(self.head_size), lower=False) @ v


class HeadZeroFill(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.transpose(-2, -1) / math.sqrt(self.head_size), fill=0.0) @ v


class HeadDim1(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.transpose(-2, -1) / math.sqrt(self.head_size), dim=1) @ v


class HeadSwapped(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(k @ q.transpose(-2, -1) / math.sqrt(self.head_size)) @ v


class HeadFixedLength(HeadBase):
    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size)
        self.register_buffer("tril", torch.tril(torch.ones(6, 6)))

    def forward(self, x):
        q, k, v = self.qkv(x)
        wei = (q @ k.transpose(-2, -1) / math.sqrt(self.head_size)).masked_fill(
            self.tril == 0, float("-inf"))
        return torch.softmax(wei, dim=-1) @ v


class HeadExtraLayer(HeadBase):
    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size)
        self.proj = nn.Linear(head_size, head_size, bias=False)

    def forward(self, x):
        return self.proj(super().forward(x))


class HeadNotImplemented(nn.Module):
    def __init__(self, n_embd, head_size):
        super().__init__()
        raise NotImplementedError


@pytest.mark.parametrize("candidate", [SOLUTION["CausalSelfAttentionHead"], HeadBase,
                                       HeadEinsum, HeadSDPA, HeadLoop, HeadWithBuffer])
def test_correct_heads_pass(candidate):
    grade_CausalSelfAttentionHead(candidate)
    check_CausalSelfAttentionHead(candidate)


class HeadSwappedSizes(HeadBase):
    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size)
        self.key = nn.Linear(head_size, n_embd, bias=False)
        self.query = nn.Linear(head_size, n_embd, bias=False)
        self.value = nn.Linear(head_size, n_embd, bias=False)


class HeadWeightsOnX(HeadBase):
    def forward(self, x):
        q, k, _ = self.qkv(x)
        return self.causal(q @ k.transpose(-2, -1) / math.sqrt(self.head_size)) @ x


class HeadShifted(HeadBase):
    """A bug no diagnosis describes."""
    def forward(self, x):
        return super().forward(x) + 0.1


HEAD_HIDDEN_BANK = [
    (HeadNoScale, "not scaled"),
    (HeadScaleByC, "embedding size C"),
    (HeadDivideByC, "divided by C"),
    (HeadDivideByHeadSize, "divided by head_size instead of sqrt"),
    (HeadMultiplied, "multiplied"),
    (HeadWithBias, None),
    (HeadNoMask, "no causal mask"),
    (HeadWrongTriangle, "wrong triangle"),
    (HeadZeroFill, "0 instead of -inf"),
    (HeadDim1, "dim=1"),
    (HeadSwapped, "swapped (scores"),
    (HeadSwappedSizes, "sizes of nn.Linear are swapped"),
    (HeadFixedLength, None),
    (HeadExtraLayer, None),
    (HeadWeightsOnX, "applied to x"),
    (HeadShifted, None),
]
HEAD_CHECK_BANK = [
    (HeadNoScale, "not scaled"),
    (HeadScaleByC, "1/sqrt(n_embd)"),
    (HeadDivideByHeadSize, "divided by head_size"),
    (HeadWithBias, None),
    (HeadNoMask, "no causal mask"),
    (HeadSwapped, "swapped (scores"),
    (HeadSwappedSizes, "sizes of nn.Linear are swapped"),
    (HeadFixedLength, "fixed size"),
    (HeadShifted, None),
]


def test_head_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_CausalSelfAttentionHead, SOLUTION["CausalSelfAttentionHead"],
                HEAD_HIDDEN_BANK)


def test_head_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_CausalSelfAttentionHead, SOLUTION["CausalSelfAttentionHead"],
                HEAD_CHECK_BANK)


def test_blank_head_scores_zero():
    with pytest.raises(NotImplementedError):
        grade_CausalSelfAttentionHead(HeadNotImplemented)


def test_solution_head_runs_on_cuda_like_inputs_with_other_T():
    head = SOLUTION["CausalSelfAttentionHead"](4, 2)
    assert head(torch.randn(1, 11, 4)).shape == (1, 11, 2)

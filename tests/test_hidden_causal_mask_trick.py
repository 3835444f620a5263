"""Hidden tests of tutorial 06 against the solution, common mistakes and other correct answers."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from mutation import ExerciseBanks, assert_fails_naming, diagnosis
from notebook_code import as_cell as notebook_cell
from notebook_code import solution_namespace
from torch import nn

from helpers.checks.causal_mask_trick import (
    check_causal_attention_weights,
    check_running_mean_loop,
    check_running_mean_matmul,
)
from hidden_tests.causal_mask_trick import (
    grade_causal_attention_weights,
    grade_CausalSelfAttentionHead,
    grade_running_mean_loop,
    grade_running_mean_matmul,
)
from hidden_tests.common import set_salt

SOLUTION = solution_namespace("06_causal_mask_trick")
INF = float("-inf")


def not_implemented(*args, **kwargs):
    raise NotImplementedError


def as_cell(source: str, name: str):
    """``name`` defined from ``source`` as a notebook cell of this tutorial would define it."""
    return notebook_cell(source, name, {"torch": torch, "math": math, "INF": INF, "F": F}, cell=6)


# ---- running means: correct alternatives ------------------------------------------------

def mean_cumsum(x):
    counts = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device)
    return x.cumsum(dim=1) / counts.view(1, -1, 1)


def mean_einsum(x):
    T = x.shape[1]
    w = torch.tril(torch.ones(T, T, dtype=x.dtype, device=x.device))
    return torch.einsum("ts,bsc->btc", w / w.sum(1, keepdim=True), x)


def mean_masked_softmax(x):
    T = x.shape[1]
    future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
    scores = torch.zeros(T, T, dtype=x.dtype, device=x.device).masked_fill(future, INF)
    return torch.softmax(scores, dim=-1) @ x


def mean_sdpa(x):
    zeros = torch.zeros_like(x[..., :1])
    return F.scaled_dot_product_attention(zeros, zeros, x, is_causal=True)


def mean_loop_over_time_only(x):
    rows, total = [], torch.zeros_like(x[:, 0])
    for t in range(x.shape[1]):
        total = total + x[:, t]
        rows.append(total / (t + 1))
    return torch.stack(rows, dim=1)


def mean_loop_stacked(x):
    """A loop over the positions, all sequences at once, stacked along the time axis."""
    return torch.stack([x[:, : t + 1].mean(dim=1) for t in range(x.shape[1])], dim=1)


def mean_divided_by_t_plus_1(x):
    """Loops over sequences and positions, summing and dividing by the count."""
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            out[b, t] = x[b, : t + 1].sum(dim=0) / (t + 1)
    return out


def mean_bmm(x):
    B, T, _ = x.shape
    w = torch.tril(torch.ones(T, T, dtype=x.dtype, device=x.device))
    w = (w / w.sum(1, keepdim=True)).expand(B, T, T)
    return torch.bmm(w, x)


# ---- running means: mistakes --------------------------------------------------------------

def mean_divided_by_T(x):  # noqa: N802
    return x.cumsum(dim=1) / x.shape[1]


def mean_divided_by_t(x):
    """A student's mistake: divided by t (kept at 1 for row 0 to avoid dividing by 0)."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            out[b, t] = x[b, : t + 1].sum(dim=0) / max(t, 1)
    return out


def mean_divided_by_t_matmul(x):
    T = x.shape[1]
    w = torch.tril(torch.ones(T, T, dtype=x.dtype, device=x.device))
    return w / torch.arange(T, dtype=x.dtype, device=x.device).clamp(min=1).view(-1, 1) @ x


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


def mean_loop_skips_row_0(x):
    """A student's mistake: the loop starts at t = 1, so row 0 keeps its zeros."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(1, x.shape[1]):
            out[b, t] = x[b, : t + 1].mean(dim=0)
    return out


def mean_loop_empty_skips_row_0(x):
    """A student's mistake: torch.empty_like and a loop from t = 1, so row 0 keeps whatever
    was in memory. The memory is stood in for by one large number, so that what the checks
    see does not change from run to run (real garbage can also differ between two calls)."""
    out = torch.full_like(x, -1.879e21)
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


def mean_stacked_first(x):
    """Rows of all sequences at once, stacked along a new first axis: (T, B, C)."""
    return torch.stack([x[:, : t + 1].mean(dim=1) for t in range(x.shape[1])])


def mean_squeezed(x):
    return mean_cumsum(x).squeeze()


def mean_loop_float32(x):
    """The output made with torch.zeros(B, T, C): float32 whatever x is."""
    B, T, C = x.shape
    out = torch.zeros(B, T, C)
    for b in range(B):
        for t in range(T):
            out[b, t] = x[b, : t + 1].mean(dim=0)
    return out


def mean_cpu_float32_weights(x):
    """The weight matrix built as float32 on the CPU, whatever x's dtype and device."""
    T = x.shape[1]
    w = torch.tril(torch.ones(T, T))
    return w / w.sum(dim=1, keepdim=True) @ x


def mean_cpu_weights(x):
    """The weight matrix has x's dtype but lives on the CPU."""
    T = x.shape[1]
    w = torch.tril(torch.ones(T, T, dtype=x.dtype))
    return w / w.sum(dim=1, keepdim=True) @ x


def mean_x_to_float32(x):
    """A float32 weight matrix, and x converted to match it: float64 comes back float32."""
    T = x.shape[1]
    w = torch.tril(torch.ones(T, T, device=x.device))
    return w / w.sum(dim=1, keepdim=True) @ x.float()


def mean_loop_cpu_output(x):
    """A student's mistake: the output made with torch.zeros(B, T, C, dtype=x.dtype), on the
    CPU whatever x's device."""
    B, T, C = x.shape
    out = torch.zeros(B, T, C, dtype=x.dtype)
    for b in range(B):
        for t in range(T):
            out[b, t] = x[b, : t + 1].mean(dim=0)
    return out


def mean_no_keepdim(x):
    """A student's mistake: the row sums without keepdim=True divide the columns."""
    T = x.shape[1]
    w = torch.tril(torch.ones(T, T, dtype=x.dtype, device=x.device))
    return (w / w.sum(1)) @ x


def mean_all_channels(x):
    """A student's mistake: .mean() without dim averages the channels too."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            out[b, t] = x[b, : t + 1].mean()
    return out


def mean_off_by_a_little(x):
    """A bug no diagnosis describes."""
    return mean_cumsum(x) * 1.01


VALUE_MISTAKES = [
    (mean_divided_by_T, "divided by T instead of", "values"),
    (mean_sums, "running sums, not means", "values"),
    (mean_over_channels, "channels", "values"),
    (mean_transposed, "transposed", "values"),
    (mean_exclusive, "rows before t", "values"),
    (mean_loop_skips_row_0, "skips t = 0", "values"),
    (mean_loop_empty_skips_row_0, "skips t = 0", "values"),
    (mean_loop_drops_token_0, "token 0 is left out", "values"),
    (mean_in_place, "in place", "unchanged"),
    (mean_one_per_sequence, "averaged away", "shape"),
    (mean_stacked_first, "stacked along the first axis", "shape"),
    (mean_squeezed, "squeeze", "shape"),
    (mean_no_keepdim, "without keepdim=True", "values"),
    (mean_all_channels, ".mean() without dim averaged the channels", "values"),
    (mean_off_by_a_little, None, "values"),
]
CHECK_ONLY = [
    (mean_wrong_triangle, "wrong way round", "values"),
    (mean_no_mask, "future is not masked", "values"),
    (mean_column_normalised, "column sums", "values"),
    (mean_future_sums_over_counts, None, "values"),
]
HIDDEN_ONLY = [
    (mean_wrong_triangle, "averages the future rows", "values"),
    (mean_future_sums_over_counts, "sums the future rows", "values"),
    (mean_no_mask, "no causal mask", "values"),
    (mean_column_normalised, "columns instead of its rows", "values"),
]
mean_loop_batch_axis = as_cell("""
def mean_loop_batch_axis(x):
    B, T, C = x.shape
    out = torch.zeros_like(x)
    for t in range(T):
        out[:, t] = x[:, :t + 1].mean(dim=0)
    return out
""", "mean_loop_batch_axis")
mean_x_at_W = as_cell("""
def mean_x_at_W(x):
    T = x.shape[1]
    W = torch.tril(torch.ones(T, T, dtype=x.dtype, device=x.device))
    W = W / W.sum(1, keepdim=True)
    return x @ W
""", "mean_x_at_W")
mean_W_made_once = as_cell("""
_W = torch.tril(torch.ones(8, 8))
_W = _W / _W.sum(1, keepdim=True)
def mean_W_made_once(x):
    return _W.to(x.dtype).to(x.device) @ x
""", "mean_W_made_once")
mean_T_from_batch = as_cell("""
def mean_T_from_batch(x):
    T = x.shape[0]
    W = torch.tril(torch.ones(T, T, dtype=x.dtype, device=x.device))
    W = W / W.sum(1, keepdim=True)
    return W @ x
""", "mean_T_from_batch")
mean_T_from_channels = as_cell("""
def mean_T_from_channels(x):
    T = x.shape[-1]
    W = torch.tril(torch.ones(T, T, dtype=x.dtype, device=x.device))
    W = W / W.sum(1, keepdim=True)
    return W @ x
""", "mean_T_from_channels")
LOOP_ONLY = [
    (mean_divided_by_t, "one less than the number of rows", "values"),
    (mean_loop_batch_axis, "that is the batch axis", "shape"),
    (mean_loop_float32, "fixed dtype", "dtype"),
    (mean_loop_cpu_output, "device=", "device"),
]
def mean_loop_over_sequences_only(x):
    """A loop over the sequences, each a cumulative sum: no loop over the positions."""
    counts = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device).view(-1, 1)
    return torch.stack([row.cumsum(dim=0) / counts for row in x])


LOOP_RULES = [  # right numbers, but not the slow reference the exercise asks for
    (mean_cumsum, "no loop over the positions", "loops"),
    (mean_einsum, "no loop over the positions", "loops"),
    (mean_loop_over_sequences_only, "no loop over the positions", "loops"),
]
MATMUL_ONLY = [
    (mean_divided_by_t_matmul, "one less than the number of rows", "values"),
    (mean_x_at_W, "wrong way round: W @ x", "shape"),
    (mean_W_made_once, "W does not fit this x", "shape"),
    (mean_T_from_batch, "W does not fit this x", "shape"),
    (mean_T_from_channels, "W does not fit this x", "shape"),
    (mean_cpu_float32_weights, "different dtypes met", "dtype"),
    (mean_x_to_float32, "converted to another dtype", "dtype"),
    (mean_cpu_weights, "device=", "device"),
]
MATMUL_RULES = [
    (mean_cumsum, "no matrix product", "one_product"),
    (mean_loop_over_time_only, "Python loop", "one_product"),
]

LOOP_BANKS = ExerciseBanks(
    solution=SOLUTION["running_mean_loop"],
    correct=[mean_loop_over_time_only, mean_loop_stacked, mean_divided_by_t_plus_1],
    check=[*VALUE_MISTAKES, *CHECK_ONLY, *LOOP_ONLY, *LOOP_RULES],
    hidden=[*VALUE_MISTAKES, *HIDDEN_ONLY, *LOOP_ONLY],
)
MATMUL_BANKS = ExerciseBanks(
    solution=SOLUTION["running_mean_matmul"],
    correct=[mean_einsum, mean_bmm, mean_masked_softmax],
    check=[*VALUE_MISTAKES, *CHECK_ONLY, *MATMUL_ONLY, *MATMUL_RULES],
    hidden=[*VALUE_MISTAKES, *HIDDEN_ONLY, *MATMUL_ONLY],
)


def test_common_running_mean_mistakes_get_their_own_names():
    """Seen in trials: a loop that skips token 0 was told to average over time, a
    column-normalised matrix got a vague list of causes, and dividing by t was told
    "running sums"."""
    skip = diagnosis(assert_fails_naming(check_running_mean_loop, mean_loop_skips_row_0))
    assert "skips t = 0" in skip and "channels" not in skip
    columns = diagnosis(assert_fails_naming(check_running_mean_matmul, mean_column_normalised))
    assert "column sums" in columns
    for check in (check_running_mean_loop, check_running_mean_matmul):
        told = diagnosis(assert_fails_naming(check, mean_divided_by_t))
        assert "divided by t, one less" in told and "running sums" not in told


def test_a_float32_cpu_weight_matrix_fails_the_matmul_checks():
    """It works for float32 CPU tensors only: on float64 (or a GPU) the product fails."""
    for grade in (check_running_mean_matmul, grade_running_mean_matmul):
        assert_fails_naming(grade, mean_cpu_float32_weights, "dtype")


@pytest.mark.parametrize("grade", [grade_running_mean_loop, grade_running_mean_matmul])
def test_blank_running_mean_scores_zero(grade):
    with pytest.raises(NotImplementedError):
        grade(not_implemented)


# ---- causal weights -----------------------------------------------------------------------

def _future(scores):
    T = scores.shape[-1]
    return torch.ones(T, T, dtype=torch.bool, device=scores.device).triu(1)


def weights_large_negative(scores):
    """A student's mistake: a "low enough" finite fill instead of -inf."""
    return torch.softmax(scores.masked_fill(_future(scores), -1e9), dim=-1)


def weights_minus_1e15(scores):
    """A student's mistake: a fill far below any score a head makes, yet finite."""
    return torch.softmax(scores.masked_fill(_future(scores), -1e15), dim=-1)


def weights_minus_1e30(scores):
    """A student's mistake: an additive mask of -1e30 on the future."""
    T = scores.shape[-1]
    future = torch.ones(T, T, dtype=scores.dtype, device=scores.device).triu(1)
    return torch.softmax(scores + future * -1e30, dim=-1)


def weights_minus_1e4(scores):
    return torch.softmax(scores.masked_fill(_future(scores), -1e4), dim=-1)


def weights_exp_times_mask(scores):
    """A student's mistake: exp by hand, the future multiplied by the mask's 0."""
    allowed = torch.ones_like(scores[..., :, :]).tril()
    e = torch.exp(scores) * allowed
    return e / e.sum(dim=-1, keepdim=True)


def weights_inverted_mask(scores):
    """A student's mistake: filled where tril(ones) == 1, the past."""
    T = scores.shape[-1]
    mask = torch.tril(torch.ones(T, T, device=scores.device)) == 1
    return torch.softmax(scores.masked_fill(mask, INF), dim=-1)


def weights_softmax_no_dim(scores):
    """A student's mistake: F.softmax without dim= (PyTorch picks one, with a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return F.softmax(scores.masked_fill(_future(scores), INF))  # noqa: PLE1120


weights_T_from_dim_1 = as_cell("""
def weights_T_from_dim_1(scores):
    T = scores.shape[1]
    mask = torch.tril(torch.ones(T, T, device=scores.device)) == 0
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
""", "weights_T_from_dim_1")


def weights_finfo_min(scores):
    return torch.softmax(torch.where(~_future(scores), scores, torch.finfo(scores.dtype).min),
                         dim=-1)


def weights_row_loop(scores):
    T = scores.shape[-1]
    out = torch.zeros_like(scores)
    for t in range(T):
        out[..., t, : t + 1] = torch.softmax(scores[..., t, : t + 1], dim=-1)
    return out


def weights_additive_mask(scores):
    T = scores.shape[-1]
    bias = torch.full((T, T), INF, dtype=scores.dtype, device=scores.device).triu(1)
    return F.softmax(scores + bias, dim=-1)


def weights_renormalised(scores):
    """The maximum over every key, the future too: the allowed keys can underflow."""
    e = torch.exp(scores - scores.amax(-1, keepdim=True)) * ~_future(scores)
    return e / e.sum(-1, keepdim=True)


def weights_wrong_triangle(scores):
    T = scores.shape[-1]
    return torch.softmax(scores.masked_fill(torch.ones(T, T).tril(-1).bool(), INF), -1)


def weights_zero_fill(scores):
    return torch.softmax(scores.masked_fill(_future(scores), 0.0), dim=-1)


def weights_minus_100(scores):
    """A student's mistake: a large negative number instead of -inf."""
    return torch.softmax(scores.masked_fill(_future(scores), -100.0), dim=-1)


def weights_dim_minus_2(scores):
    return torch.softmax(scores.masked_fill(_future(scores), INF), dim=-2)


def weights_dim_1(scores):
    return F.softmax(scores.masked_fill(_future(scores), INF), dim=1)


def weights_no_mask(scores):
    return torch.softmax(scores, dim=-1)


def weights_mask_after_softmax(scores):
    return torch.softmax(scores, dim=-1) * ~_future(scores)


def weights_diagonal_masked(scores):
    T = scores.shape[-1]
    return torch.softmax(scores.masked_fill(torch.ones(T, T).triu(0).bool(), -1e9), dim=-1)


def weights_diagonal_masked_inf(scores):
    T = scores.shape[-1]
    return torch.softmax(scores.masked_fill(torch.ones(T, T).triu(0).bool(), INF), -1)


def weights_scaled(scores):
    return weights_finfo_min(scores / math.sqrt(scores.shape[-1]))


def weights_without_softmax(scores):
    return scores.masked_fill(_future(scores), INF)


def weights_in_place(scores):
    scores.masked_fill_(_future(scores), INF)
    return torch.softmax(scores, dim=-1)


def weights_unnormalised(scores):
    return torch.exp(scores).masked_fill(_future(scores), 0.0)


def weights_overflowing(scores):
    e = torch.exp(scores).masked_fill(_future(scores), 0.0)
    return e / e.sum(-1, keepdim=True)


def weights_float32(scores):
    """Converted to float32 "to be safe"."""
    return torch.softmax(scores.float().masked_fill(_future(scores), INF), dim=-1)


def weights_cpu_mask(scores):
    T = scores.shape[-1]
    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))
    return torch.softmax(scores.masked_fill(~allowed, INF), dim=-1)


def weights_mask_with_batch_axis(scores):
    """The mask built as (1, T, T) for a batch: scores without one gain an axis."""
    T = scores.shape[-1]
    mask = torch.tril(torch.ones(1, T, T, dtype=torch.bool, device=scores.device))
    return torch.softmax(scores.masked_fill(~mask, INF), dim=-1)


def weights_slightly_off(scores):
    """A bug no diagnosis describes."""
    return SOLUTION["causal_attention_weights"](scores * 1.1)


WEIGHTS_BANKS = ExerciseBanks(
    solution=SOLUTION["causal_attention_weights"],
    correct=[weights_finfo_min, weights_row_loop, weights_additive_mask],
    check=[
        (weights_wrong_triangle, "wrong triangle", "values"),
        (weights_zero_fill, "set to 0 instead of -inf", "values"),
        (weights_dim_1, "over the queries", "values"),
        (weights_dim_minus_2, "over the queries", "values"),
        (weights_minus_100, "finite number (like -100", "values"),
        (weights_no_mask, "no mask at all", "values"),
        (weights_mask_after_softmax, "softmax came first", "values"),
        (weights_diagonal_masked_inf, "diagonal was masked too", "values"),
        (weights_diagonal_masked, None, "values"),
        (weights_scaled, "scaled inside", "values"),
        (weights_without_softmax, None, "values"),
        (weights_in_place, "in place", "unchanged"),
        (weights_unnormalised, "not normalised", "values"),
        (weights_overflowing, "overflows to inf (inf/inf", "large"),
        (weights_renormalised, "future included", "large"),
        (weights_large_negative, "finite number (like -100", "large"),
        (weights_minus_1e4, "finite number (like -100", "large"),
        (weights_minus_1e15, "finite number (like -100", "large"),
        (weights_minus_1e30, "finite number (like -100", "large"),
        (weights_exp_times_mask, "inf times the mask", "large"),
        (weights_inverted_mask, "mask is inverted", "values"),
        (weights_softmax_no_dim, "softmax without dim=", "values"),
        (weights_T_from_dim_1, "take T from scores.shape[-1]", "shape"),
        (weights_float32, "fixed dtype", "dtype"),
        (weights_cpu_mask, "device=", "device"),
        (weights_mask_with_batch_axis, "extra leading axis", "shape"),
        (weights_slightly_off, None, "values"),
    ],
    hidden=[
        (weights_wrong_triangle, "wrong triangle", "values"),
        (weights_zero_fill, "with 0 instead of -inf", "values"),
        (weights_dim_1, "over the queries", "values"),
        (weights_dim_minus_2, "over the queries", "values"),
        (weights_minus_100, "finite number (like -100", "values"),
        (weights_no_mask, "without any mask", "values"),
        (weights_mask_after_softmax, "after the softmax", "values"),
        (weights_diagonal_masked, "diagonal was masked too: a token must", "values"),
        (weights_diagonal_masked_inf, "row 0 has nothing left", "values"),
        (weights_scaled, "scaled inside", "values"),
        (weights_without_softmax, "without the softmax", "values"),
        (weights_in_place, "in place", "unchanged"),
        (weights_unnormalised, "not normalised", "values"),
        (weights_overflowing, "overflows to inf (inf/inf", "large"),
        (weights_renormalised, "future included", "large"),
        (weights_large_negative, "finite number (like -100", "large"),
        (weights_minus_1e4, "finite number (like -100", "large"),
        (weights_minus_1e15, "finite number (like -100", "large"),
        (weights_minus_1e30, "finite number (like -100", "large"),
        (weights_exp_times_mask, "inf times the mask", "large"),
        (weights_inverted_mask, "mask is inverted", "values"),
        (weights_softmax_no_dim, "softmax without dim=", "values"),
        (weights_T_from_dim_1, "take T from scores.shape[-1]", "shape"),
        (weights_float32, "fixed dtype", "dtype"),
        (weights_cpu_mask, "device=", "device"),
        (weights_mask_with_batch_axis, "extra leading axis", "shape"),
        (weights_slightly_off, None, "values"),
    ],
)


def test_the_softmax_first_mistake_is_named_as_such():
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

    def causal(self, scores, dim=-1, fill=INF, lower=True):
        T = scores.shape[-1]
        allowed = torch.ones(T, T, dtype=torch.bool, device=scores.device).tril()
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
    """The lecture's style: a mask buffer of block_size = 256 made in __init__, sliced to T;
    longer sequences fail."""

    def __init__(self, n_embd, head_size, block_size=256):
        super().__init__(n_embd, head_size)
        self.register_buffer("tril", torch.tril(torch.ones(block_size, block_size)))

    def forward(self, x):
        T = x.shape[1]
        q, k, v = self.qkv(x)
        wei = q @ k.transpose(-2, -1) * self.head_size**-0.5
        wei = wei.masked_fill(self.tril[:T, :T] == 0, INF)
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


class HeadTransposedT(HeadBase):
    """A student's mistake: k.T on a (B, T, head_size) tensor reverses all three axes."""

    def forward(self, x):
        q, k, v = self.qkv(x)
        with warnings.catch_warnings():  # PyTorch warns that .T of 3 dimensions is deprecated
            warnings.simplefilter("ignore", UserWarning)
            k_t = k.T
        return self.causal(q @ k_t / math.sqrt(self.head_size)) @ v


class HeadTransposed01(HeadBase):
    """A student's mistake: transpose(0, 1) swaps the batch and time axes."""

    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.transpose(0, 1) / math.sqrt(self.head_size)) @ v


class HeadDropout(HeadBase):
    """Karpathy's head: dropout on the attention weights, which the formula here has not."""

    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size)
        self.dropout = nn.Dropout(0.2)

    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.dropout(self.causal(q @ k.transpose(-2, -1) / math.sqrt(self.head_size))) @ v


class HeadZeroInit(HeadBase):
    """A student's mistake: queries and keys start at zero."""

    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size)
        nn.init.zeros_(self.query.weight)
        nn.init.zeros_(self.key.weight)


class HeadXavierInit(HeadBase):
    """A student's mistake: Xavier initialisation instead of nn.Linear's own."""

    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size)
        for layer in (self.key, self.query, self.value):
            nn.init.xavier_uniform_(layer.weight)


class HeadNormalInit(HeadBase):
    """A student's mistake: GPT-2's normal_(std=0.02) start."""

    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size)
        for layer in (self.key, self.query, self.value):
            nn.init.normal_(layer.weight, std=0.02)


class HeadSqueezed(HeadBase):
    """A student's mistake: .squeeze() on the output drops a batch axis of size 1."""

    def forward(self, x):
        return super().forward(x).squeeze()


class HeadBuffer1024(HeadWithBuffer):
    """A student's mistake: a mask buffer of block_size = 1024, sliced to T."""

    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size, block_size=1024)


class HeadReseeds(HeadBase):
    """A student's mistake: torch.manual_seed(0) in __init__, so every head starts alike."""

    def __init__(self, n_embd, head_size):
        torch.manual_seed(0)
        super().__init__(n_embd, head_size)


class HeadCpuMask(HeadBase):
    """A student's mistake: its own mask, made on the CPU whatever x's device."""

    def forward(self, x):
        T = x.shape[1]
        q, k, v = self.qkv(x)
        wei = q @ k.transpose(-2, -1) / math.sqrt(self.head_size)
        wei = wei.masked_fill(torch.tril(torch.ones(T, T)) == 0, INF)
        return torch.softmax(wei, dim=-1) @ v


class HeadFixedLength(HeadBase):
    """The mask made once in __init__ for T = 6."""

    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size)
        self.register_buffer("tril", torch.tril(torch.ones(6, 6)))

    def forward(self, x):
        q, k, v = self.qkv(x)
        wei = (q @ k.transpose(-2, -1) / math.sqrt(self.head_size)).masked_fill(
            self.tril == 0, INF)
        return torch.softmax(wei, dim=-1) @ v


class HeadBlockSize10(HeadWithBuffer):
    """A mask buffer for sequences of at most 10 tokens."""

    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size, block_size=10)


class HeadExtraLayer(HeadBase):
    def __init__(self, n_embd, head_size):
        super().__init__(n_embd, head_size)
        self.proj = nn.Linear(head_size, head_size, bias=False)

    def forward(self, x):
        return self.proj(super().forward(x))


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


class HeadDetachedKeys(HeadBase):
    """The keys detached "because they are only used for the scores"."""

    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.detach().transpose(-2, -1) / math.sqrt(self.head_size)) @ v


class HeadScalesInput(HeadBase):
    """Scales x in place so that the scores come out scaled: the caller's x changes."""

    def forward(self, x):
        v = self.value(x)
        x *= self.head_size ** -0.25
        q, k = self.query(x), self.key(x)
        return self.causal(q @ k.transpose(-2, -1)) @ v


class HeadReseedsInForward(HeadBase):
    """A student's mistake: torch.manual_seed(0) in forward; every later draw repeats."""

    def forward(self, x):
        torch.manual_seed(0)
        return super().forward(x)


class HeadSeedsFromOS(HeadBase):
    """"Logs the seed" of every call with torch.seed(), which reseeds from the OS."""

    def forward(self, x):
        self.seed_used = torch.seed()
        return super().forward(x)


class HeadReseedsWithInitialSeed(HeadBase):
    """torch.manual_seed(torch.initial_seed()) "to stay reproducible", in __init__ and
    forward: two heads built in a row share their weights, and every draw after a call
    repeats."""

    def __init__(self, n_embd, head_size):
        torch.manual_seed(torch.initial_seed())
        super().__init__(n_embd, head_size)

    def forward(self, x):
        torch.manual_seed(torch.initial_seed())
        return super().forward(x)


class HeadScaleByT(HeadBase):
    """A student's mistake: divided by sqrt(T), right only where T = head_size."""

    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.causal(q @ k.transpose(-2, -1) / x.shape[1] ** 0.5) @ v


class HeadPrecedence(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        d = q.shape[-1]
        return self.causal(q @ k.transpose(-2, -1) * 1/d**1/2) @ v  # noqa: E226


class HeadScaleAfterSoftmax(HeadBase):
    def forward(self, x):
        q, k, v = self.qkv(x)
        return (self.causal(q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5) @ v


class HeadValuesFromKey(HeadBase):
    def forward(self, x):
        q, k = self.query(x), self.key(x)
        v = self.key(x)
        return self.causal(q @ k.transpose(-2, -1) / math.sqrt(self.head_size)) @ v


class HeadShifted(HeadBase):
    """A bug no diagnosis describes."""
    def forward(self, x):
        return super().forward(x) + 0.1


class HeadNotImplemented(nn.Module):
    def __init__(self, n_embd, head_size):
        super().__init__()
        raise NotImplementedError


HEAD_MISTAKES = [
    (HeadNoScale, "not scaled", "values"),
    (HeadScaleByC, "1/sqrt(n_embd)", "arguments"),
    (HeadDivideByHeadSize, "divided by head_size", "values"),
    (HeadMultiplied, "multiplied by sqrt(head_size)", "values"),
    (HeadWithBias, None, "members"),
    (HeadNoMask, "no causal mask", "causal"),
    (HeadWrongTriangle, "wrong triangle", "causal"),
    (HeadZeroFill, "future scores were set to 0", "causal"),
    (HeadDim1, "over the queries", "causal"),
    (HeadTransposedT, "moves the batch axis", "causal"),
    (HeadTransposed01, "moves the batch axis", "causal"),
    (HeadDropout, "changes from one call to the next", "values"),
    (HeadZeroInit, "set to zeros", "init"),
    (HeadReseeds, "do not depend on the global seed", "init"),
    (HeadXavierInit, "re-initialised", "init"),
    (HeadNormalInit, "re-initialised", "init"),
    (HeadSqueezed, ".squeeze() removed it", "values"),
    (HeadBuffer1024, "fixed size", "length"),
    (HeadCpuMask, "device=", "device"),
    (HeadSwapped, "swapped (scores", "values"),
    (HeadSwappedSizes, "sizes of nn.Linear are swapped", "members"),
    (HeadBlockSize10, "fixed size", "length"),
    (HeadExtraLayer, None, "members"),
    (HeadWeightsOnX, "applied to x", "values"),
    (HeadDetachedKeys, "cut off from the gradient", "gradients"),
    (HeadScalesInput, "in place", "unchanged"),
    (HeadReseedsInForward, "inside the call resets", "randomness"),
    (HeadSeedsFromOS, "fresh seed from the OS", "randomness"),
    (HeadReseedsWithInitialSeed, "do not depend on the global seed", "init"),
    (HeadPrecedence, "** binds before /", "values"),
    (HeadScaleAfterSoftmax, "scaled after the softmax", "values"),
    (HeadValuesFromKey, "made by the key layer", "values"),
    (HeadWithBuffer, "fixed size", "length"),
    (HeadShifted, None, "values"),
]
HEAD_BANKS = ExerciseBanks(
    solution=SOLUTION["CausalSelfAttentionHead"],
    correct=[HeadBase, HeadEinsum, HeadSDPA, HeadLoop],
    check=[*HEAD_MISTAKES, (HeadFixedLength, "fixed size", "length"),
           (HeadScaleByT, "divided by sqrt(T)", "length")],
    hidden=[*HEAD_MISTAKES, (HeadScaleByT, "divided by sqrt(T)", "values")],
)

BANKS = {"running_mean_loop": LOOP_BANKS, "running_mean_matmul": MATMUL_BANKS,
         "causal_attention_weights": WEIGHTS_BANKS, "CausalSelfAttentionHead": HEAD_BANKS}


def test_blank_head_scores_zero():
    with pytest.raises(NotImplementedError):
        grade_CausalSelfAttentionHead(HeadNotImplemented)


def test_solution_head_runs_with_any_length():
    head = SOLUTION["CausalSelfAttentionHead"](4, 2)
    assert head(torch.randn(1, 11, 4)).shape == (1, 11, 2)


@pytest.mark.parametrize("salt", [1, 2**40 + 17])
def test_right_answers_pass_the_hidden_tests_under_other_salts(salt):
    """While grading, the hidden tests draw fresh sizes: right answers pass any of them."""
    set_salt(salt)
    try:
        for grade, exercise in ((grade_running_mean_loop, "running_mean_loop"),
                                (grade_running_mean_matmul, "running_mean_matmul"),
                                (grade_causal_attention_weights, "causal_attention_weights"),
                                (grade_CausalSelfAttentionHead, "CausalSelfAttentionHead")):
            for answer in (BANKS[exercise].solution, *BANKS[exercise].correct):
                grade(answer)
    finally:
        set_salt(0)


# ---- the reseeding report the randomness clause relies on ---------------------------------

def test_a_call_that_reseeds_ends_in_the_same_random_state_from_any_seed():
    from helpers.checks.calls import call_and_report

    def reseeds(x):
        torch.manual_seed(0)
        return x + torch.rand(())

    def draws(x):
        return x + torch.rand(())

    for fn, same in ((reseeds, True), (draws, False), (torch.exp, False)):
        states = {call_and_report(fn, (torch.zeros(2),), {}, seed=seed)[1].rng_after
                  for seed in (3, 4)}
        assert len(states) == (1 if same else 2) and "" not in states, fn
    before = torch.random.get_rng_state()
    call_and_report(reseeds, (torch.zeros(2),), {}, seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is kept


def test_a_seeded_call_draws_its_seed_s_stream_but_reports_one_fixed_initial_seed():
    """Reseeding with torch.initial_seed() inside a checked call restarts one fixed stream,
    whatever the seed: like any fixed reseed, two seeds then give the same state."""
    from helpers.checks.calls import REPORTED_SEED, call_and_report

    def draws(x):
        return x + torch.rand(4), torch.initial_seed()

    torch.manual_seed(3)
    fresh = torch.rand(4)
    (value, seen), _ = call_and_report(draws, (torch.zeros(4),), {}, seed=3)
    assert torch.equal(value, fresh) and seen == REPORTED_SEED != 3

    def reseeds_with_initial_seed(x):
        torch.manual_seed(torch.initial_seed())
        return x + torch.rand(())

    states = {call_and_report(reseeds_with_initial_seed, (torch.zeros(2),), {}, seed=seed)[1]
              .rng_after for seed in (3, 4)}
    assert len(states) == 1 and "" not in states


@pytest.mark.parametrize("digest", [5, "x" * 65, "not hex!", None])
def test_a_malformed_random_state_digest_is_a_protocol_error(digest):
    from kernel_protocol.grader_side import ProtocolError, _record, last_report

    with pytest.raises(ProtocolError, match="random state"):
        _record({"changed": [], "rng_after": digest})
    _record({"changed": [], "rng_after": "0123abcd"})
    assert last_report().rng_after == "0123abcd"

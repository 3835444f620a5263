"""Hidden tests of tutorial 01 against the solution, common mistakes and other correct answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mutation import ExerciseBanks, assert_fails_naming, diagnosis
from notebook_code import solution_namespace

from helpers.checks.gain_multiplication import (
    check_gained_dot_product_attention,
    check_stable_softmax,
)
from hidden_tests.gain_multiplication import (
    grade_stable_softmax,
)

SOLUTION = solution_namespace("01_gain_multiplication")


# ---- stable_softmax ------------------------------------------------------------------------

def softmax_loop(x, dim=-1):
    moved = x.movedim(dim, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    rows = []
    for row in flat:
        top = max(row.tolist())
        e = [torch.exp(v - top) for v in row]
        total = sum(e)
        rows.append(torch.stack([v / total for v in e]))
    return torch.stack(rows).reshape(moved.shape).movedim(-1, dim)


def softmax_logsumexp(x, dim=-1):
    return torch.exp(x - torch.logsumexp(x, dim=dim, keepdim=True))


def softmax_builtin(x, dim=-1):
    return torch.softmax(x, dim=dim)


def softmax_no_shift(x, dim=-1):
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def softmax_last_dim(x, dim=-1):
    return torch.softmax(x, dim=-1)


def softmax_unnormalised(x, dim=-1):
    return torch.exp(x - x.amax(dim=dim, keepdim=True))


def softmax_without_exp(x, dim=-1):
    return x / x.sum(dim=dim, keepdim=True)


def softmax_in_place(x, dim=-1):
    x -= x.amax(dim=dim, keepdim=True)
    e = torch.exp(x)
    return e / e.sum(dim=dim, keepdim=True)


def softmax_global(x, dim=-1):
    """The maximum of the whole tensor, then a softmax along dim (a student's mistake)."""
    e = torch.exp(x - x.max())
    return e / e.sum(dim=dim, keepdim=True)


def softmax_global_normalised(x, dim=-1):
    e = torch.exp(x - x.max())
    return e / e.sum()


def softmax_min_shift(x, dim=-1):
    e = torch.exp(x - x.amin(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def not_implemented(*args, **kwargs):
    raise NotImplementedError


def softmax_dim_plus_one(x, dim=-1):
    return torch.softmax(x, dim=(dim + 1) % x.dim())


def softmax_default_dim_0(x, dim=0):
    return torch.softmax(x, dim=dim)


def softmax_float32(x, dim=-1):
    """Computes in float32 whatever the input: float64 inputs come back float32."""
    x = x.float()
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_cpu_max(x, dim=-1):
    """A shift built on the CPU: on a GPU the subtraction fails."""
    top = torch.tensor(x.detach().cpu().amax(dim=dim, keepdim=True).tolist()
                       if not x.is_meta else torch.zeros(1).tolist())
    if x.is_meta:
        top = torch.zeros([1] * x.dim())
    e = torch.exp(x - top)
    return e / e.sum(dim=dim, keepdim=True)


def softmax_first_shift(x, dim=-1):
    """A student's mistake: any constant can be subtracted, so subtract the first logit."""
    e = torch.exp(x - x.narrow(dim, 0, 1))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_special(x, dim=-1):
    return torch.special.softmax(x, dim)


def softmax_preallocated(x, dim=-1):
    """Fills a tensor made on the CPU: on a GPU the result would stay on the CPU."""
    out = torch.empty(x.shape, dtype=x.dtype)
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    out[...] = e / e.sum(dim=dim, keepdim=True)
    return out


def softmax_denominator_unshifted(x, dim=-1):
    return torch.exp(x - x.amax(dim=dim, keepdim=True)) / torch.exp(x).sum(dim=dim, keepdim=True)


def softmax_in_float64(x, dim=-1):
    x = x.double()
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_other_axis_max(x, dim=-1):
    """A subtle bug no diagnosis describes: the maximum along another axis."""
    other = (dim + 1) % x.dim() if x.dim() > 1 else dim
    e = torch.exp(x - x.amax(dim=other, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True) + 1e-3


def softmax_squeezed(x, dim=-1):
    """A student's mistake: extra axes squeezed away first, so a batch of one loses its axis."""
    x = x.squeeze()
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_unsqueeze_last(x, dim=-1):
    """A student's mistake: the reduced axis put back at the end instead of keepdim=True."""
    e = torch.exp(x - x.amax(dim=dim).unsqueeze(-1))
    return e / e.sum(dim=dim).unsqueeze(-1)


def softmax_naive_float64(x, dim=-1):
    """A student's mistake: float64 has a larger range, so no shift (exp(710) is inf there)."""
    e = torch.exp(x.double())
    return (e / e.sum(dim=dim, keepdim=True)).to(x.dtype)


def softmax_mean_shift(x, dim=-1):
    e = torch.exp(x - x.mean(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_nan_to_num(x, dim=-1):
    e = torch.exp(x)
    return torch.nan_to_num(e / e.sum(dim=dim, keepdim=True), nan=0.0)


def softmax_clamped(x, dim=-1):
    """A student's mistake: exp(89) is inf in float32, so cap the logits below it."""
    e = torch.exp(x.clamp(max=80))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_cpu_first(x, dim=-1):
    """A student's mistake: `x.cpu()` first "to be safe", so on a GPU it computes on the CPU."""
    x = x.cpu()
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_numpy(x, dim=-1):
    """A student's mistake: the arithmetic done in NumPy and brought back."""
    a = x.detach().cpu().numpy()
    e = np.exp(a - a.max(axis=dim, keepdims=True))
    return torch.from_numpy(e / e.sum(axis=dim, keepdims=True))


def softmax_floor(x, dim=-1):
    """A student's mistake: a floor on the exponentials "to avoid dividing by zero"."""
    e = torch.exp(x - x.amax(dim=dim, keepdim=True)).clamp(min=1e-6)
    return e / e.sum(dim=dim, keepdim=True)


def softmax_no_grad(x, dim=-1):
    """A student's mistake: no_grad "to save memory", so nothing trains through it."""
    with torch.no_grad():
        e = torch.exp(x - x.amax(dim=dim, keepdim=True))
        return e / e.sum(dim=dim, keepdim=True)


def softmax_detached(x, dim=-1):
    x = x.detach()
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_epsilon(x, dim=-1):
    """A student's guard against 0/0: an epsilon in the denominator (no longer exact)."""
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / (e.sum(dim=dim, keepdim=True) + 1e-6)


def softmax_float32_buffer(x, dim=-1):
    """A student's float32 helper tensor: bfloat16 in, float32 out."""
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return torch.zeros_like(x, dtype=torch.float32) + e / e.sum(dim=dim, keepdim=True)


def softmax_sum_other_dim(x, dim=-1):
    """The maximum along dim, the sum along dim 0."""
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum(dim=0, keepdim=True)


def softmax_fixed_max_dim(x, dim=-1):
    """Written for 2-D batches: the maximum along dim 1 whatever `dim` is."""
    e = torch.exp(x - x.amax(dim=1 if x.dim() > 1 else 0, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_whole_sum(x, dim=-1):
    e = torch.exp(x - x.amax(dim=dim, keepdim=True))
    return e / e.sum()


def softmax_last_shift(x, dim=-1):
    e = torch.exp(x - x.narrow(dim, x.shape[dim] - 1, 1))
    return e / e.sum(dim=dim, keepdim=True)


def softmax_shift_undone(x, dim=-1):
    """A student's mistake: the shift put back as a factor exp(max)."""
    m = x.amax(dim=dim, keepdim=True)
    return torch.exp(x - m) / torch.exp(x).sum(dim=dim, keepdim=True) * torch.exp(m)


def softmax_transposed(x, dim=-1):
    """`dim` moved to the end and never moved back."""
    t = x.transpose(dim, -1)
    e = torch.exp(t - t.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


SOFTMAX_BANKS = ExerciseBanks(
    solution=SOLUTION["stable_softmax"],
    correct=[softmax_loop, softmax_logsumexp],
    check=[
        (softmax_no_shift, "no maximum was subtracted", "large"),
        (softmax_min_shift, "smallest logit", "large"),
        (softmax_global, "whole tensor", "large"),
        (softmax_dim_plus_one, "runs along dim=", "values"),
        (softmax_unnormalised, "not normalised", "values"),
        (softmax_without_exp, "without the exponential", "values"),
        (softmax_in_place, "in place", "unchanged"),
        (softmax_global_normalised, "every element", "values"),
        (softmax_default_dim_0, "default", "dim"),
        (softmax_float32, "dtype", "dtype"),
        (softmax_in_float64, "dtype", "dtype"),
        (softmax_cpu_max, "device=", "device"),
        (softmax_preallocated, "device=", "device"),
        (softmax_builtin, "PyTorch's softmax", "no_builtin"),
        (softmax_special, "PyTorch's softmax", "no_builtin"),
        (softmax_first_shift, "first logit", "large"),
        (softmax_denominator_unshifted, "denominator", "values"),
        (softmax_squeezed, "axis of size 1 was dropped", "dim"),
        (softmax_unsqueeze_last, "unsqueeze(-1)", "dim"),
        (softmax_naive_float64, "no maximum was subtracted, and float64", "large"),
        (softmax_mean_shift, "mean was subtracted", "large"),
        (softmax_nan_to_num, "nan_to_num", "large"),
        (softmax_clamped, "capped", "large"),
        (softmax_cpu_first, "moved to the CPU", "device"),
        (softmax_numpy, "moved to the CPU", "device"),
        (softmax_floor, "a floor", "large"),
        (softmax_no_grad, "cut off from the inputs", "gradients"),
        (softmax_detached, "cut off from the inputs", "gradients"),
        (softmax_other_axis_max, None),
        (softmax_epsilon, "small number was added", "large"),
        (softmax_float32_buffer, "promoted it to float32", "dtype"),
        (softmax_sum_other_dim, "summed along dim=", "values"),
        (softmax_fixed_max_dim, "a fixed dim", "values"),
        (softmax_whole_sum, "sum over the whole tensor", "values"),
        (softmax_last_shift, "last logit", "large"),
        (softmax_shift_undone, "shift was undone", "large"),
        (softmax_transposed, "never moved back", "dim"),
    ],
    hidden=[
        (softmax_no_shift, "no maximum was subtracted", "large"),
        (softmax_min_shift, "smallest logit", "large"),
        (softmax_global, "whole tensor", "large"),
        (softmax_last_dim, "last dimension whatever", "dim"),
        (softmax_dim_plus_one, "instead of dim=", "values"),
        (softmax_unnormalised, "not normalised", "values"),
        (softmax_without_exp, "without the exponential", "values"),
        (softmax_in_place, "in place", "unchanged"),
        (softmax_global_normalised, "every element", "values"),
        (softmax_float32, "dtype", "dtype"),
        (softmax_in_float64, "dtype", "dtype"),
        (softmax_cpu_max, "device=", "device"),
        (softmax_preallocated, "device=", "device"),
        (softmax_first_shift, "first logit", "large"),
        (softmax_denominator_unshifted, None, "values"),
        (softmax_squeezed, "axis of size 1 was dropped", "dim"),
        (softmax_unsqueeze_last, "unsqueeze(-1)", "dim"),
        (softmax_naive_float64, "no maximum was subtracted, and float64", "large"),
        (softmax_mean_shift, "mean was subtracted", "large"),
        (softmax_nan_to_num, "nan_to_num", "large"),
        (softmax_clamped, "capped", "large"),
        (softmax_cpu_first, "moved to the CPU", "device"),
        (softmax_numpy, "moved to the CPU", "device"),
        (softmax_floor, "a floor", "large"),
        (softmax_other_axis_max, None),
        (softmax_epsilon, "small number was added", "large"),
        (softmax_sum_other_dim, None, "values"),
        (softmax_whole_sum, None, "values"),
        (softmax_last_shift, "last logit", "large"),
        (softmax_shift_undone, "shift was undone", "large"),
    ],
)


def test_an_in_place_softmax_is_caught_by_the_self_check():
    message = assert_fails_naming(check_stable_softmax, softmax_in_place, "unchanged")
    assert "in place" in diagnosis(message)


def test_blank_softmax_scores_zero():
    with pytest.raises(NotImplementedError):
        grade_stable_softmax(not_implemented)


# ---- gained_dot_product_attention -----------------------------------------------------------

def attention_einsum(x, q_1, q_2, z_1, z_2):
    gains = torch.tensor([float(z_1), float(z_2)], dtype=q_1.dtype, device=q_1.device)
    w = torch.softmax(torch.einsum("k,kt->t", gains, torch.stack([q_1, q_2])), dim=0)
    return w, torch.einsum("t,t->", w, x)


def attention_loop(x, q_1, q_2, z_1, z_2):
    """Position by position, on 0-d tensors (so the graph to the inputs is kept)."""
    scores = [z_1 * a + z_2 * b for a, b in zip(q_1, q_2, strict=True)]
    top = max(scores)
    e = [torch.exp(s - top) for s in scores]
    total = sum(e)
    w = torch.stack([v / total for v in e])
    return w, sum(wi * xi for wi, xi in zip(w, x, strict=True))


def attention_builtin(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=-1)
    return w, (w * x).sum()


def attention_swapped(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return torch.dot(w, x), w


def attention_added_gains(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 + q_1 + z_2 + q_2, dim=0)
    return w, torch.dot(w, x)


def attention_unweighted_y(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, x.sum()


def attention_mean_y(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, x.mean()


def attention_no_softmax(x, q_1, q_2, z_1, z_2):
    w = z_1 * q_1 + z_2 * q_2
    return w, torch.dot(w, x)


def attention_unnormalised(x, q_1, q_2, z_1, z_2):
    w = torch.exp(z_1 * q_1 + z_2 * q_2)
    return w, torch.dot(w, x)


def attention_first_gain_only(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1, dim=0)
    return w, torch.dot(w, x)


def attention_product_of_patterns(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * z_2 * q_1 * q_2, dim=0)
    return w, torch.dot(w, x)


def attention_unnormalised_y(x, q_1, q_2, z_1, z_2):
    scores = z_1 * q_1 + z_2 * q_2
    w = torch.softmax(scores, dim=0)
    return w, (torch.exp(scores) * x).sum()


def attention_overflowing(x, q_1, q_2, z_1, z_2):
    e = torch.exp(z_1 * q_1 + z_2 * q_2)
    w = e / e.sum()
    return w, torch.dot(w, x)


def attention_sum_of_weights_y(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, w.sum()


def attention_weighted_mean_y(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, (w * x).mean()


def attention_subtracted(x, q_1, q_2, z_1, z_2):
    """A student's mistake: the second term subtracted."""
    w = torch.softmax(z_1 * q_1 - z_2 * q_2, dim=0)
    return w, torch.dot(w, x)


def attention_multiplied_terms(x, q_1, q_2, z_1, z_2):
    """A student's mistake: the two gained patterns multiplied."""
    w = torch.softmax((z_1 * q_1) * (z_2 * q_2), dim=0)
    return w, torch.dot(w, x)


def attention_ignores_gains(x, q_1, q_2, z_1, z_2):
    """Uniform weights whatever the gains: y is the mean of x."""
    w = torch.full_like(x, 1.0 / x.numel())
    return w, torch.dot(w, x)


def attention_float32(x, q_1, q_2, z_1, z_2):
    w = torch.softmax((z_1 * q_1 + z_2 * q_2).float(), dim=0)
    return w, torch.dot(w, x.float())


def attention_in_place(x, q_1, q_2, z_1, z_2):
    q_1 *= z_1
    w = torch.softmax(q_1 + z_2 * q_2, dim=0)
    return w, torch.dot(w, x)


def attention_wrong_shape(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w[None, :], torch.dot(w, x)


def attention_y_item(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, (w * x).sum().item()


def attention_y_keepdim(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, (w * x).sum(dim=0, keepdim=True)


def attention_w_list(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w.tolist(), torch.dot(w, x)


def attention_abs_gains(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(abs(z_1) * q_1 + abs(z_2) * q_2, dim=0)
    return w, torch.dot(w, x)


def attention_clamped_gains(x, q_1, q_2, z_1, z_2):
    """A gain is a volume: never below zero."""
    w = torch.softmax(max(z_1, 0.0) * q_1 + max(z_2, 0.0) * q_2, dim=0)
    return w, torch.dot(w, x)


def attention_gains_after_softmax(x, q_1, q_2, z_1, z_2):
    w = z_1 * torch.softmax(q_1, dim=0) + z_2 * torch.softmax(q_2, dim=0)
    return w, torch.dot(w, x)


def attention_no_exp(x, q_1, q_2, z_1, z_2):
    s = z_1 * q_1 + z_2 * q_2
    w = s / s.sum()
    return w, torch.dot(w, x)


def attention_patterns_swapped(x, q_1, q_2, z_1, z_2):
    """A bug no diagnosis describes: each gain scales the other pattern."""
    w = torch.softmax(z_1 * q_2 + z_2 * q_1, dim=0)
    return w, torch.dot(w, x)


def attention_z_1_cut(x, q_1, q_2, z_1, z_2):
    """A student's mistake: the first spotlight is only ever turned up."""
    w = torch.softmax(max(z_1, 0.0) * q_1 + z_2 * q_2, dim=0)
    return w, (w * x).sum()


def attention_naive_float64(x, q_1, q_2, z_1, z_2):
    """A student's mistake: float64 so that exp does not overflow (it does, past 709)."""
    s = (z_1 * q_1 + z_2 * q_2).double()
    w = (torch.exp(s) / torch.exp(s).sum()).to(x.dtype)
    return w, (w * x).sum()


def attention_clamped_scores(x, q_1, q_2, z_1, z_2):
    """A student's mistake: scores capped so that exp stays finite."""
    s = (z_1 * q_1 + z_2 * q_2).clamp(-80, 80)
    w = torch.exp(s) / torch.exp(s).sum()
    return w, (w * x).sum()


def attention_min_shift(x, q_1, q_2, z_1, z_2):
    s = z_1 * q_1 + z_2 * q_2
    e = torch.exp(s - s.min())
    w = e / e.sum()
    return w, (w * x).sum()


def attention_weighted_w(x, q_1, q_2, z_1, z_2):
    """A student's mistake: the weighted inputs returned as w."""
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0) * x
    return w, w.sum()


def attention_cpu_scores(x, q_1, q_2, z_1, z_2):
    """A student's mistake: scores started from zeros made on the CPU."""
    scores = torch.zeros(len(x), dtype=x.dtype) + z_1 * q_1 + z_2 * q_2
    w = torch.softmax(scores, dim=0)
    return w, (w * x).sum()


def attention_inputs_cpu(x, q_1, q_2, z_1, z_2):
    """A student's mistake: every input moved with `.cpu()` first."""
    x, q_1, q_2 = x.cpu(), q_1.cpu(), q_2.cpu()
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, (w * x).sum()


def attention_no_grad(x, q_1, q_2, z_1, z_2):
    with torch.no_grad():
        w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
        return w, (w * x).sum()


def attention_detached(x, q_1, q_2, z_1, z_2):
    x, q_1, q_2 = x.detach(), q_1.detach(), q_2.detach()
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, (w * x).sum()


def attention_stacked_softmax(x, q_1, q_2, z_1, z_2):
    """A student's mistake: the softmax taken across the two stacked patterns."""
    s = torch.stack([z_1 * q_1, z_2 * q_2])
    w = torch.softmax(s, dim=0).sum(0) / 2
    return w, (w * x).sum()


def attention_renormalised(x, q_1, q_2, z_1, z_2):
    """A student's mistake: the gains after the softmax, then renormalised."""
    w = z_1 * torch.softmax(q_1, dim=0) + z_2 * torch.softmax(q_2, dim=0)
    w = w / w.sum()
    return w, (w * x).sum()


def attention_sqrt_t(x, q_1, q_2, z_1, z_2):
    """A student's mistake: the transformer's 1/sqrt(d) applied here too."""
    w = torch.softmax((z_1 * q_1 + z_2 * q_2) / len(x) ** 0.5, dim=0)
    return w, (w * x).sum()


def attention_unit_gains(x, q_1, q_2, z_1, z_2):
    """A student's mistake: the gain vector normalised to unit length."""
    n = (z_1 ** 2 + z_2 ** 2) ** 0.5 or 1.0
    w = torch.softmax((z_1 * q_1 + z_2 * q_2) / n, dim=0)
    return w, (w * x).sum()


def attention_other_spotlight(x, q_1, q_2, z_1, z_2):
    """A student's mistake: a negative z_1 means "look at the other spotlight"."""
    a, b = (z_1, z_2) if z_1 >= 0 else (0.0, z_2 - z_1)
    w = torch.softmax(a * q_1 + b * q_2, dim=0)
    return w, (w * x).sum()


def attention_two_softmaxes(x, q_1, q_2, z_1, z_2):
    """A student's mistake: one softmax per spotlight, averaged."""
    w = (torch.softmax(z_1 * q_1, dim=0) + torch.softmax(z_2 * q_2, dim=0)) / 2
    return w, (w * x).sum()


def attention_scores_times_x(x, q_1, q_2, z_1, z_2):
    """A student's mistake: the input enters the scores too."""
    w = torch.softmax((z_1 * q_1 + z_2 * q_2) * x, dim=0)
    return w, (w * x).sum()


def attention_capped_gains(x, q_1, q_2, z_1, z_2):
    """A student's mistake: gains capped at ±50 so that exp cannot overflow."""
    z_1, z_2 = max(min(z_1, 50.0), -50.0), max(min(z_2, 50.0), -50.0)
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, (w * x).sum()


def attention_zero_shortcut(x, q_1, q_2, z_1, z_2):
    """A student's shortcut for zero gains: uniform weights from torch.full (float32, CPU)."""
    if z_1 == 0 and z_2 == 0:
        w = torch.full((len(x),), 1 / len(x))
        return w, (w * x).sum()
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, (w * x).sum()


def attention_one_hot_large(x, q_1, q_2, z_1, z_2):
    """A student's shortcut for large gains: one-hot weights at the best score."""
    scores = z_1 * q_1 + z_2 * q_2
    if max(abs(z_1), abs(z_2)) > 50:
        w = torch.zeros_like(scores)
        w[scores.argmax()] = 1.0
        return w, (w * x).sum()
    w = torch.softmax(scores, dim=0)
    return w, (w * x).sum()


def attention_float32_zeros(x, q_1, q_2, z_1, z_2):
    """A float32 helper tensor: harmless for float64 and float32, bfloat16 becomes float32."""
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0) + torch.zeros(len(x), device=x.device)
    return w, (w * x).sum()


def attention_z_1_twice(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_1 * q_2, dim=0)
    return w, (w * x).sum()


def attention_pattern_shift(x, q_1, q_2, z_1, z_2):
    """Each pattern shifted by its own maximum before its gain: right for positive gains."""
    scores = z_1 * (q_1 - q_1.max()) + z_2 * (q_2 - q_2.max())
    w = torch.exp(scores) / torch.exp(scores).sum()
    return w, (w * x).sum()


def attention_product_of_softmaxes(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1, dim=0) * torch.softmax(z_2 * q_2, dim=0)
    w = w / w.sum()
    return w, (w * x).sum()


def attention_detached_w_in_y(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, (w.detach() * x).sum()


def attention_y_of_patterns(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, (w * (q_1 + q_2)).sum()


def attention_one_gain(x, q_1, q_2, z_1, z_2):
    w = torch.softmax((z_1 + z_2) / 2 * (q_1 + q_2), dim=0)
    return w, (w * x).sum()


ATTENTION_BANKS = ExerciseBanks(
    solution=SOLUTION["gained_dot_product_attention"],
    correct=[attention_einsum, attention_loop, attention_builtin],
    check=[
        (attention_swapped, "wrong way round", "returns"),
        (attention_wrong_shape, None, "returns"),
        (attention_added_gains, "added to the scores", "values"),
        (attention_ignores_gains, "ignore the gains", "gains"),
        (attention_unweighted_y, "plain sum", "values"),
        (attention_mean_y, "mean of x", "values"),
        (attention_sum_of_weights_y, "sum of the weights", "values"),
        (attention_no_softmax, "without a softmax", "values"),
        (attention_unnormalised, "exponentials were not normalised", "values"),
        (attention_first_gain_only, "second gain and pattern are left out", "gains"),
        (attention_multiplied_terms, "multiplied", "gains"),
        (attention_subtracted, "subtracted", "gains"),
        (attention_patterns_swapped, "scales the other pattern", "gains"),
        (attention_overflowing, "overflow", "large"),
        (attention_weighted_mean_y, "mean of the weighted inputs", "values"),
        (attention_float32, "dtype", "dtype"),
        (attention_in_place, "in place", "unchanged"),
        (attention_y_item, "Python number", "returns"),
        (attention_y_keepdim, "kept an axis", "returns"),
        (attention_w_list, None, "returns"),
        (attention_abs_gains, "lost its sign", "gains"),
        (attention_clamped_gains, "cut to zero", "gains"),
        (attention_gains_after_softmax, "after the softmax", "values"),
        (attention_no_exp, "without the exponential", "values"),
        (attention_z_1_cut, "cut to zero", "gains"),
        (attention_naive_float64, "overflows for large gains, and float64", "large"),
        (attention_clamped_scores, "capped", "large"),
        (attention_min_shift, "smallest value", "large"),
        (attention_weighted_w, "multiplied by x", "values"),
        (attention_cpu_scores, "device=", "device"),
        (attention_inputs_cpu, "moved to the CPU", "device"),
        (attention_no_grad, "cut off from the inputs", "gradients"),
        (attention_detached, "cut off from the inputs", "gradients"),
        (attention_stacked_softmax, "across the 2 patterns", "values"),
        (attention_renormalised, "renormalised", "values"),
        (attention_sqrt_t, "divided by √T", "gains"),
        (attention_unit_gains, "divided by their length", "gains"),
        (attention_other_spotlight, "the other spotlight", "gains"),
        (attention_two_softmaxes, "averaged", "gains"),
        (attention_scores_times_x, "scores were multiplied by x", "gains"),
        (attention_capped_gains, "made smaller", "large"),
        (attention_zero_shortcut, "dtype", "dtype"),
        (attention_one_hot_large, "shortcut", "gradients"),
        (attention_float32_zeros, "promoted it to float32", "dtype"),
        (attention_z_1_twice, "z_1 multiplies both", "gains"),
        (attention_pattern_shift, "smallest value", "large"),
        (attention_product_of_softmaxes, "multiplied and renormalised", "large"),
        (attention_detached_w_in_y, "before y was computed", "gradients"),
        (attention_y_of_patterns, "averages the patterns", "values"),
        (attention_one_gain, "one shared gain", "gains"),
    ],
    hidden=[
        (attention_swapped, "swapped", "returns"),
        (attention_wrong_shape, None, "returns"),
        (attention_added_gains, "added", "gains"),
        (attention_unweighted_y, "plain sum", "values"),
        (attention_mean_y, "mean of x", "values"),
        (attention_sum_of_weights_y, "sum of the weights", "values"),
        (attention_no_softmax, "without softmax", "gains"),
        (attention_unnormalised, "weights were not normalised", "gains"),
        (attention_first_gain_only, "only the first gain", "gains"),
        (attention_multiplied_terms, "multiplied", "gains"),
        (attention_subtracted, "subtracted", "gains"),
        (attention_unnormalised_y, "unnormalised weights", "values"),
        (attention_overflowing, "overflow", "large"),
        (attention_weighted_mean_y, "mean of the weighted inputs", "values"),
        (attention_float32, "dtype", "dtype"),
        (attention_in_place, "in place", "unchanged"),
        (attention_patterns_swapped, "other pattern", "gains"),
        (attention_y_item, "Python number", "returns"),
        (attention_y_keepdim, "kept an axis", "returns"),
        (attention_w_list, None, "returns"),
        (attention_abs_gains, "lost its sign", "gains"),
        (attention_clamped_gains, "cut to zero", "gains"),
        (attention_gains_after_softmax, "after the softmax", "gains"),
        (attention_no_exp, "without the exponential", "gains"),
        (attention_z_1_cut, "cut to zero", "gains"),
        (attention_naive_float64, "overflow exp, in float64 too", "large"),
        (attention_clamped_scores, "capped", "large"),
        (attention_min_shift, "smallest value", "large"),
        (attention_weighted_w, None, "gains"),
        (attention_cpu_scores, "device=", "device"),
        (attention_inputs_cpu, "moved to the CPU", "device"),
        (attention_stacked_softmax, "across the 2 patterns", "gains"),
        (attention_renormalised, "renormalised", "gains"),
        (attention_sqrt_t, "divided by √T", "gains"),
        (attention_unit_gains, "divided by their length", "gains"),
        (attention_other_spotlight, "the other spotlight", "gains"),
        (attention_two_softmaxes, "averaged", "gains"),
        (attention_scores_times_x, "scores were multiplied by x", "gains"),
        (attention_capped_gains, "made smaller", "large"),
        (attention_zero_shortcut, "dtype", "dtype"),
        (attention_z_1_twice, None, "gains"),
        (attention_pattern_shift, "before its gain scaled it", "large"),
        (attention_y_of_patterns, None, "values"),
        (attention_one_gain, "one shared gain", "gains"),
    ],
)

BANKS = {"stable_softmax": SOFTMAX_BANKS, "gained_dot_product_attention": ATTENTION_BANKS}


@pytest.mark.parametrize("mutant", [attention_swapped, attention_added_gains,
                                    attention_unweighted_y, attention_no_softmax])
def test_self_check_catches_mistakes_in_plain_words(mutant):
    message = assert_fails_naming(check_gained_dot_product_attention, mutant, "expected", "got")
    assert "Traceback" not in message

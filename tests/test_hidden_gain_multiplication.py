"""Hidden tests of tutorial 01 against the solution, common mistakes and other correct answers."""

from __future__ import annotations

import pytest
import torch
from mutation import assert_bank, assert_fails_naming, diagnosis
from notebook_code import solution_namespace

from helpers.checks.gain_multiplication import (
    check_gained_dot_product_attention,
    check_stable_softmax,
)
from hidden_tests.gain_multiplication import (
    grade_gained_dot_product_attention,
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
    """The maximum of the whole tensor, then a softmax along dim (a reader's mistake)."""
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


@pytest.mark.parametrize("candidate", [SOLUTION["stable_softmax"], softmax_loop,
                                       softmax_logsumexp, softmax_builtin])
def test_correct_softmaxes_pass(candidate):
    grade_stable_softmax(candidate)
    check_stable_softmax(candidate)


def softmax_dim_plus_one(x, dim=-1):
    return torch.softmax(x, dim=(dim + 1) % x.dim())


def softmax_default_dim_0(x, dim=0):
    return torch.softmax(x, dim=dim)


def softmax_other_axis_max(x, dim=-1):
    """A subtle bug no diagnosis describes: the maximum along another axis."""
    other = (dim + 1) % x.dim() if x.dim() > 1 else dim
    e = torch.exp(x - x.amax(dim=other, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True) + 1e-3


SOFTMAX_HIDDEN_BANK = [
    (softmax_no_shift, "no maximum was subtracted"),
    (softmax_min_shift, "smallest logit"),
    (softmax_global, "whole tensor"),
    (softmax_last_dim, "last dimension whatever"),
    (softmax_dim_plus_one, "instead of dim="),
    (softmax_unnormalised, "not normalised"),
    (softmax_without_exp, "without the exponential"),
    (softmax_in_place, "in place"),
    (softmax_global_normalised, "every element"),
    (softmax_other_axis_max, None),
]
SOFTMAX_CHECK_BANK = [
    (softmax_no_shift, "no maximum was subtracted"),
    (softmax_min_shift, "smallest logit"),
    (softmax_global, "whole tensor"),
    (softmax_dim_plus_one, "runs along dim="),
    (softmax_unnormalised, "not normalised"),
    (softmax_without_exp, "without the exponential"),
    (softmax_in_place, "in place"),
    (softmax_global_normalised, "every element"),
    (softmax_default_dim_0, "default"),
    (softmax_other_axis_max, None),
]


def test_softmax_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_stable_softmax, SOLUTION["stable_softmax"], SOFTMAX_HIDDEN_BANK)


def test_softmax_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_stable_softmax, SOLUTION["stable_softmax"], SOFTMAX_CHECK_BANK)


def test_the_in_place_softmax_of_the_reader_trial_is_caught_by_the_self_check():
    message = assert_fails_naming(check_stable_softmax, softmax_in_place, "unchanged")
    assert "in place" in diagnosis(message)


def test_blank_softmax_scores_zero():
    with pytest.raises(NotImplementedError):
        grade_stable_softmax(not_implemented)


# ---- gained_dot_product_attention -----------------------------------------------------------

def attention_einsum(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(torch.einsum("k,kt->t", torch.tensor([float(z_1), float(z_2)]),
                                   torch.stack([q_1, q_2])), dim=0)
    return w, torch.einsum("t,t->", w, x)


def attention_loop(x, q_1, q_2, z_1, z_2):
    scores = [z_1 * float(a) + z_2 * float(b) for a, b in zip(q_1, q_2, strict=True)]
    top = max(scores)
    e = torch.tensor([pow(2.718281828459045, s - top) for s in scores], dtype=torch.float64)
    w = e / e.sum()
    y = sum(float(wi) * float(xi) for wi, xi in zip(w, x, strict=True))
    return w.float(), torch.tensor(y)


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


@pytest.mark.parametrize("candidate", [SOLUTION["gained_dot_product_attention"],
                                       attention_einsum, attention_loop, attention_builtin])
def test_correct_attentions_pass(candidate):
    grade_gained_dot_product_attention(candidate)
    check_gained_dot_product_attention(candidate)


def attention_sum_of_weights_y(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, w.sum()


def attention_weighted_mean_y(x, q_1, q_2, z_1, z_2):
    w = torch.softmax(z_1 * q_1 + z_2 * q_2, dim=0)
    return w, (w * x).mean()


def attention_patterns_swapped(x, q_1, q_2, z_1, z_2):
    """A bug no diagnosis describes: each gain scales the other pattern."""
    w = torch.softmax(z_1 * q_2 + z_2 * q_1, dim=0)
    return w, torch.dot(w, x)


ATTENTION_HIDDEN_BANK = [
    (attention_swapped, "swapped"),
    (attention_added_gains, "added"),
    (attention_unweighted_y, "plain sum"),
    (attention_mean_y, "mean of x"),
    (attention_sum_of_weights_y, "sum of the weights"),
    (attention_no_softmax, "without softmax"),
    (attention_unnormalised, "weights were not normalised"),
    (attention_first_gain_only, "only the first gain"),
    (attention_product_of_patterns, "q_1 * q_2"),
    (attention_unnormalised_y, "unnormalised weights"),
    (attention_overflowing, "overflow"),
    (attention_weighted_mean_y, "mean of the weighted inputs"),
    (attention_patterns_swapped, None),
]
ATTENTION_CHECK_BANK = [
    (attention_swapped, "wrong way round"),
    (attention_added_gains, "do not depend on the gains"),
    (attention_unweighted_y, "plain sum"),
    (attention_mean_y, "mean of x"),
    (attention_sum_of_weights_y, "sum of the weights"),
    (attention_no_softmax, "without a softmax"),
    (attention_unnormalised, "exponentials were not normalised"),
    (attention_first_gain_only, "second gain"),
    (attention_overflowing, "overflow"),
    (attention_weighted_mean_y, "mean of the weighted inputs"),
    (attention_patterns_swapped, None),
]


def test_attention_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_gained_dot_product_attention, SOLUTION["gained_dot_product_attention"],
                ATTENTION_HIDDEN_BANK)


def test_attention_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_gained_dot_product_attention, SOLUTION["gained_dot_product_attention"],
                ATTENTION_CHECK_BANK)


@pytest.mark.parametrize("mutant", [attention_swapped, attention_added_gains,
                                    attention_unweighted_y, attention_no_softmax])
def test_self_check_catches_mistakes_in_plain_words(mutant):
    message = assert_fails_naming(check_gained_dot_product_attention, mutant, "expected", "got")
    assert "Traceback" not in message

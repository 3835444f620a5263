"""Hidden tests and self-checks of tutorial 02 against the solution, common mistakes and other
correct answers (``BANKS``, run by tests/test_contracts.py), and a few special cases."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mutation import ExerciseBanks, assert_fails_naming, diagnosis, failing
from notebook_code import solution_namespace
from torch import nn

from helpers.checks.qkv_attention import (
    check_make_batch,
    check_scaled_dot_product_attention,
    check_SingleQueryAttention,
)
from hidden_tests.qkv_attention import (
    grade_make_batch,
    grade_scaled_dot_product_attention,
    grade_SingleQueryAttention,
)

SOLUTION = solution_namespace("02_qkv_attention")


def not_implemented(*args, **kwargs):
    raise NotImplementedError


def _named(fn, name):
    fn.__name__ = fn.__qualname__ = name
    return fn


# ---- scaled_dot_product_attention: correct alternatives ---------------------------------------

def sdpa_einsum(Q, K, V, mask=None):
    scores = torch.einsum("...qd,...kd->...qk", Q, K) / Q.shape[-1] ** 0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(float("-inf")))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)
    return torch.einsum("...qk,...kd->...qd", weights, V), weights


def sdpa_matmul_renormalised(Q, K, V, mask=None):
    """Mask after the softmax, then renormalise: the same as masking before, except when a
    forbidden key scores far above the allowed ones (their weights underflow to 0)."""
    weights = torch.softmax(torch.matmul(Q, K.transpose(-1, -2)) / math.sqrt(K.size(-1)), -1)
    if mask is not None:
        weights = weights * mask
        total = weights.sum(-1, keepdim=True)
        weights = torch.where(total > 0, weights / total.clamp_min(1e-30), 0.0)
    return torch.matmul(weights, V), weights


def sdpa_cpu_scalar_fill(Q, K, V, mask=None):
    """The fill value as a 0-dim CPU tensor: a GPU accepts it (a CPU scalar)."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.tensor(float("-inf")))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(torch.isnan(weights), torch.tensor(0.0), weights)
    return weights @ V, weights


def sdpa_loop(Q, K, V, mask=None):
    """Query by query, key by key, with a shifted exp."""
    batch = torch.broadcast_shapes(Q.shape[:-2], K.shape[:-2])
    Tq, Tk = Q.shape[-2], K.shape[-2]
    full = torch.ones(Tq, Tk, dtype=torch.bool, device=Q.device) if mask is None else mask
    full = torch.broadcast_to(full, (*batch, Tq, Tk)).reshape(-1, Tq, Tk)
    Qf, Kf, Vf = (t.reshape(-1, *t.shape[-2:]) for t in (Q, K, V))
    outs, all_weights = [], []
    for b in range(Qf.shape[0]):
        w_rows, o_rows = [], []
        for i in range(Tq):
            s = torch.stack([Qf[b, i] @ Kf[b, j] for j in range(Tk)]) / math.sqrt(Q.shape[-1])
            allowed = full[b, i]
            if allowed.any():
                e = torch.exp((s - s[allowed].max()).masked_fill(~allowed, -math.inf))
                w = e / e.sum()
            else:
                w = torch.zeros(Tk, dtype=Q.dtype, device=Q.device)
            w_rows.append(w)
            o_rows.append(w @ Vf[b])
        all_weights.append(torch.stack(w_rows))
        outs.append(torch.stack(o_rows))
    return (torch.stack(outs).reshape(*batch, Tq, V.shape[-1]),
            torch.stack(all_weights).reshape(*batch, Tq, Tk))


def sdpa_bmm_flattened(Q, K, V, mask=None):
    """bmm after folding all batch dimensions into one, then unfolding."""
    batch, Tq, Tk = Q.shape[:-2], Q.shape[-2], K.shape[-2]
    q, k, v = (t.reshape(-1, *t.shape[-2:]) for t in (Q, K, V))
    scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(Q.shape[-1])
    if mask is not None:
        m = torch.broadcast_to(mask, (*batch, Tq, Tk)).reshape(-1, Tq, Tk)
        scores = scores.masked_fill(~m, -math.inf)
    weights = torch.softmax(scores, -1).nan_to_num(0.0)
    return torch.bmm(weights, v).reshape(*batch, Tq, -1), weights.reshape(*batch, Tq, Tk)


# ---- scaled_dot_product_attention: mistakes -----------------------------------------------------

def _make(scale=None, dim=-1, fill=float("-inf"), invert=False, use_mask=True, nan_fix=True,
          return_scores=False, after_softmax=False):
    def attention(Q, K, V, mask=None):
        s = 1 / math.sqrt(Q.shape[-1]) if scale is None else scale(Q, K, V)
        scores = Q @ K.transpose(-2, -1) * s
        if mask is not None and use_mask and not after_softmax:
            scores = scores.masked_fill(mask if invert else ~mask, fill)
        weights = torch.softmax(scores, dim=dim)
        if mask is not None and after_softmax:
            weights = weights * mask
        if nan_fix:
            weights = weights.nan_to_num(0.0)
        return weights @ V, scores if return_scores else weights
    return attention


MUTANTS = {name: _named(fn, name) for name, fn in {
    "no_scale": _make(scale=lambda Q, K, V: 1.0),
    "divided_by_d_k": _make(scale=lambda Q, K, V: 1.0 / Q.shape[-1]),
    "divided_by_sqrt_d_v": _make(scale=lambda Q, K, V: 1.0 / math.sqrt(V.shape[-1])),
    "multiplied_by_sqrt_d_k": _make(scale=lambda Q, K, V: math.sqrt(Q.shape[-1])),
    "softmax_over_queries": _make(dim=-2),
    "returns_scores": _make(return_scores=True),
    "zero_fill": _make(fill=0.0),
    "inverted_mask": _make(invert=True),
    "ignored_mask": _make(use_mask=False),
    "mask_after_softmax": _make(after_softmax=True),
    "nan_rows": _make(nan_fix=False),
    "finite_fill": _make(fill=-1e9),
}.items()}


def sdpa_builtin(Q, K, V, mask=None):
    """PyTorch's own function (off limits); weights by attending to one-hot values."""
    Tk = K.shape[-2]
    eye = torch.eye(Tk, dtype=Q.dtype, device=Q.device).expand(*K.shape[:-2], Tk, Tk)
    weights = F.scaled_dot_product_attention(Q, K, eye, attn_mask=mask)
    out = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask)
    return out.nan_to_num(0.0), weights.nan_to_num(0.0)


def sdpa_bmm_3d(Q, K, V, mask=None):
    scores = torch.bmm(Q, K.transpose(1, 2)) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1).nan_to_num(0.0)
    return torch.bmm(weights, V), weights


def sdpa_transpose_1_2(Q, K, V, mask=None):
    scores = Q @ K.transpose(1, 2) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1).nan_to_num(0.0)
    return weights @ V, weights


def sdpa_swapped(Q, K, V, mask=None):
    out, weights = SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)
    return weights, out


def sdpa_manual_exp(Q, K, V, mask=None):
    """exp / sum without the shift: overflows on large scores."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    e = torch.exp(scores)
    if mask is not None:
        e = e * mask
    weights = (e / e.sum(-1, keepdim=True)).nan_to_num(0.0)
    return weights @ V, weights


def sdpa_in_place(Q, K, V, mask=None):
    Q /= math.sqrt(Q.shape[-1])
    scores = Q @ K.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1).nan_to_num(0.0)
    return weights @ V, weights


def sdpa_mask_in_place(Q, K, V, mask=None):
    """Changes the mask it was given by keyword (a student's 'fix' for fully masked rows)."""
    if mask is not None:
        mask[..., -1] = True
    return SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)


def sdpa_dot_T(Q, K, V, mask=None):
    """A student's mistake: K.T works for 2-D inputs only."""
    scores = Q @ (K.T if K.dim() == 2 else K.permute(*range(K.dim() - 1, -1, -1))) / math.sqrt(
        Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1).nan_to_num(0.0)
    return weights @ V, weights


def sdpa_raw_scores(Q, K, V, mask=None):
    out, _ = SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)
    return out, Q @ K.transpose(-2, -1)


def sdpa_value_bug(Q, K, V, mask=None):
    """A bug no diagnosis describes: the values are shifted by one."""
    out, weights = SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)
    return out + 0.5, weights


def sdpa_batch_dims_merged(Q, K, V, mask=None):
    out, weights = SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)
    return out.reshape(-1, *out.shape[-2:]), weights.reshape(-1, *weights.shape[-2:])


def sdpa_float32_weights(Q, K, V, mask=None):
    """Fills a float32 tensor of zeros row by row: float64 inputs come back float32."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.zeros(scores.shape, device=Q.device)
    weights[...] = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ V.to(weights.dtype), weights


def sdpa_cpu_fill(Q, K, V, mask=None):
    """The -inf fill made on the CPU: on a GPU torch.where fails."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = torch.where(mask, scores, torch.full(scores.shape, float("-inf"),
                                                      dtype=Q.dtype))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ V, weights


def sdpa_squeezed(Q, K, V, mask=None):
    """A student's 'tidy up the shapes': .squeeze() drops a batch of one and a single query."""
    out, weights = SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)
    return out.squeeze(), weights.squeeze()


def sdpa_batch_squeezed(Q, K, V, mask=None):
    """Adds a batch axis to 2-D inputs and drops axis 0 at the end: a 3-D batch of one
    comes back 2-D."""
    if Q.dim() == 2:
        Q, K, V = Q.unsqueeze(0), K.unsqueeze(0), V.unsqueeze(0)
    out, weights = SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)
    return out.squeeze(0), weights.squeeze(0)


def sdpa_scale_shape_1(Q, K, V, mask=None):
    """'d_k is the second dimension of Q': true for 2-D inputs only."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ V, weights


def sdpa_boolean_index(Q, K, V, mask=None):
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores[~mask] = float("-inf")
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1))
    return weights @ V, weights


def sdpa_additive_mask(Q, K, V, mask=None):
    """The mask as an additive penalty: fine while a row keeps one key."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores + (1 - mask.to(scores.dtype)) * -1e4
    weights = torch.softmax(scores, dim=-1)
    return weights @ V, weights


def sdpa_global_max(Q, K, V, mask=None):
    """Tutorial 1's stable softmax, but shifted by the maximum of the whole tensor."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    e = torch.exp(scores - scores.max())
    weights = torch.nan_to_num(e / e.sum(-1, keepdim=True))
    return weights @ V, weights


def sdpa_float32_softmax(Q, K, V, mask=None):
    """The softmax in float32, cast back: float64 in letter, float32 in precision."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores.float(), dim=-1)).to(Q.dtype)
    return weights @ V, weights


def sdpa_weights_detached(Q, K, V, mask=None):
    """'I only return the weights for plotting'."""
    out, weights = SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)
    weights = weights.detach()
    return weights @ V, weights


def sdpa_rowmax_then_mask(Q, K, V, mask=None):
    """A student's hand-written 'stable' softmax: shift by the row's maximum over all keys,
    then multiply by the mask and renormalise."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    e = torch.exp(scores - scores.amax(-1, keepdim=True))
    if mask is not None:
        e = e * mask
    total = e.sum(-1, keepdim=True)
    weights = torch.where(total > 0, e / total, torch.zeros_like(e))
    return weights @ V, weights


def sdpa_scale_by_Tk(Q, K, V, mask=None):
    scores = Q @ K.transpose(-2, -1) / math.sqrt(K.shape[-2])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1).nan_to_num(0.0)
    return weights @ V, weights


def sdpa_scale_after_softmax(Q, K, V, mask=None):
    scores = Q @ K.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, -1).nan_to_num(0.0) / math.sqrt(Q.shape[-1])
    return weights @ V, weights


@torch.no_grad()
def sdpa_no_grad(Q, K, V, mask=None):
    return SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)


def sdpa_out_before_nan_fix(Q, K, V, mask=None):
    """Takes out from the weights before their nan rows are set to 0."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    out = weights @ V
    return out, torch.nan_to_num(weights, nan=0.0)


def sdpa_inf_penalty(Q, K, V, mask=None):
    """An additive mask made as (~mask) * -inf: 0 * -inf = nan on the allowed keys."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.shape[-1])
    if mask is not None:
        scores = scores + (~mask).to(scores.dtype) * float("-inf")
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    return weights @ V, weights


def sdpa_scale_size_2(Q, K, V, mask=None):
    """Reads d_k as Q.size(2): right for 3-D inputs only."""
    scores = Q @ K.transpose(-2, -1) / math.sqrt(Q.size(2) if Q.dim() > 2 else Q.size(1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    return weights @ V, weights


def sdpa_scaled_twice(Q, K, V, mask=None):
    scale = math.sqrt(Q.shape[-1])
    scores = (Q / scale) @ K.transpose(-2, -1) / scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    return weights @ V, weights


SDPA_NEW = [
    (sdpa_out_before_nan_fix, "before their nan rows", "mask"),
    (sdpa_inf_penalty, "0 · (-inf)", "mask"),
    (sdpa_scale_size_2, "scale was read from an axis counted from the front", "values"),
    (sdpa_scaled_twice, "divided by d_k instead", "values"),
]


SDPA_BANKS = ExerciseBanks(
    solution=SOLUTION["scaled_dot_product_attention"],
    correct=[sdpa_einsum, sdpa_loop, sdpa_bmm_flattened, sdpa_cpu_scalar_fill],
    check=[
        (MUTANTS["no_scale"], "not divided by sqrt(d_k)", "values"),
        (MUTANTS["divided_by_d_k"], "divided by d_k instead", "values"),
        (MUTANTS["divided_by_sqrt_d_v"], "sqrt(d_v)", "values"),
        (sdpa_scale_shape_1, "Q.shape[1]", "values"),
        (MUTANTS["softmax_over_queries"], "over the queries", "values"),
        (MUTANTS["returns_scores"], "returned before the softmax", "values"),
        (sdpa_value_bug, None, "values"),
        (MUTANTS["zero_fill"], "0 instead of -inf", "mask"),
        (MUTANTS["inverted_mask"], "inverted", "mask"),
        (MUTANTS["ignored_mask"], "mask was ignored", "mask"),
        (MUTANTS["mask_after_softmax"], "after the softmax", "mask"),
        (MUTANTS["nan_rows"], "comes out of the softmax as nan", "mask"),
        (MUTANTS["finite_fill"], "uniform", "mask"),
        (sdpa_additive_mask, "penalty added", "mask"),
        (sdpa_boolean_index, "boolean indexing", "mask"),
        (sdpa_bmm_3d, "torch.bmm", "shape"),
        (sdpa_transpose_1_2, "counted from the front", "shape"),
        (sdpa_swapped, "wrong way round", "shape"),
        (sdpa_batch_dims_merged, None, "shape"),
        (sdpa_dot_T, "works for 2-D inputs", "shape"),
        (sdpa_squeezed, "size 1 was dropped", "shape"),
        (sdpa_batch_squeezed, "size 1 was dropped", "shape"),
        (sdpa_manual_exp, "overflows", "large"),
        (sdpa_global_max, "whole tensor", "large"),
        (sdpa_rowmax_then_mask, "forbidden ones included", "large"),
        (sdpa_matmul_renormalised, "forbidden ones included", "large"),
        (sdpa_scale_by_Tk, "sqrt(Tk)", "values"),
        (sdpa_scale_after_softmax, "after the softmax: scale", "values"),
        (sdpa_in_place, "in place", "unchanged"),
        (sdpa_mask_in_place, "in place", "unchanged"),
        (sdpa_float32_weights, "another dtype", "dtype"),
        (sdpa_float32_softmax, "float32 precision", "dtype"),
        (sdpa_cpu_fill, "device=", "device"),
        (sdpa_no_grad, "carries no gradient", "gradients"),
        (sdpa_weights_detached, "V gets a gradient", "gradients"),
        (sdpa_builtin, "PyTorch's own attention", "no_builtin"),
        *SDPA_NEW,
    ],
    hidden=[
        (MUTANTS["no_scale"], "not divided by sqrt(d_k)", "values"),
        (MUTANTS["divided_by_d_k"], "divided by d_k instead", "values"),
        (MUTANTS["divided_by_sqrt_d_v"], "sqrt(d_v)", "values"),
        (sdpa_scale_shape_1, "Q.shape[1]", "values"),
        (MUTANTS["multiplied_by_sqrt_d_k"], "multiplied by sqrt(d_k)", "values"),
        (MUTANTS["softmax_over_queries"], "query axis", "values"),
        (MUTANTS["returns_scores"], "(scaled scores)", "values"),
        (sdpa_raw_scores, "raw scores", "values"),
        (sdpa_value_bug, None, "values"),
        (MUTANTS["zero_fill"], "0 instead of -inf", "mask"),
        (MUTANTS["inverted_mask"], "inverted", "mask"),
        (MUTANTS["ignored_mask"], "mask was ignored", "mask"),
        (MUTANTS["mask_after_softmax"], "after the softmax", "mask"),
        (MUTANTS["nan_rows"], "comes out of the softmax as nan", "mask"),
        (MUTANTS["finite_fill"], "uniform", "mask"),
        (sdpa_additive_mask, "penalty added", "mask"),
        (sdpa_boolean_index, "boolean indexing", "mask"),
        (sdpa_bmm_3d, "torch.bmm", "shape"),
        (sdpa_transpose_1_2, "counted from the front", "shape"),
        (sdpa_batch_dims_merged, "merged into one", "shape"),
        (sdpa_swapped, "swapped", "shape"),
        (sdpa_dot_T, "works for 2-D inputs", "shape"),
        (sdpa_squeezed, "size 1 was dropped", "shape"),
        (sdpa_batch_squeezed, "size 1 was dropped", "shape"),
        (sdpa_manual_exp, "overflows", "large"),
        (sdpa_global_max, "whole tensor", "large"),
        (sdpa_rowmax_then_mask, "forbidden ones included", "large"),
        (sdpa_matmul_renormalised, "forbidden ones included", "large"),
        (sdpa_in_place, "in place", "unchanged"),
        (sdpa_mask_in_place, "in place", "unchanged"),
        (sdpa_float32_weights, "another dtype", "dtype"),
        (sdpa_float32_softmax, "float32 precision", "dtype"),
        (sdpa_cpu_fill, "device=", "device"),
        *SDPA_NEW,
    ],
)


def test_the_builtin_passes_the_hidden_test_the_grade_is_for_the_numbers():
    grade_scaled_dot_product_attention(sdpa_builtin)


def test_self_check_messages_are_plain_words():
    message = assert_fails_naming(check_scaled_dot_product_attention, MUTANTS["no_scale"],
                                  "expected", "got", "where", "contract:")
    assert "Traceback" not in message


def test_blank_attention_propagates_not_implemented():
    with pytest.raises(NotImplementedError):
        grade_scaled_dot_product_attention(not_implemented)
    with pytest.raises(NotImplementedError):
        check_scaled_dot_product_attention(not_implemented)


# ---- make_batch ------------------------------------------------------------------------------

def batch_loop(N, T=10):
    X = torch.randint(10, (N, T))
    y = torch.zeros(N, 1)
    for i, row in enumerate(X.tolist()):
        y[i, 0] = float(row.count(2) > row.count(4))
    return X, y


def batch_one_hot(N, T=10):
    X = torch.randint(low=0, high=10, size=(N, T), dtype=torch.long)
    counts = F.one_hot(X, 10).sum(1)
    return X, (counts[:, 2] > counts[:, 4]).to(torch.float32).unsqueeze(1)


def batch_where(N, T=10):
    X = torch.randint(0, 10, (N, T))
    score = torch.where(X == 2, 1, 0) - torch.where(X == 4, 1, 0)
    return X, torch.where(score.sum(-1, keepdim=True) > 0, 1.0, 0.0)


def _batch(rule=">", high=10, low=0, y_shape="column", y_dtype=torch.float32, fixed_T=False,
           x_float=False, reseed=False):
    def make_batch(N, T=10):
        if reseed:
            torch.manual_seed(0)
        X = torch.randint(low, high, (N, 10 if fixed_T else T))
        twos, fours = (X == 2).sum(1), (X == 4).sum(1)
        y = {">": twos > fours, ">=": twos >= fours, "<": twos < fours, "!=": twos != fours}[rule]
        y = y.to(y_dtype)
        if y_shape == "column":
            y = y.unsqueeze(1)
        return (X.float() if x_float else X), y
    return make_batch


def batch_numpy(N, T=10):
    """NumPy's generator: torch.manual_seed does not reach it."""
    X = torch.from_numpy(np.random.randint(0, 10, size=(N, T))).long()
    y = torch.from_numpy((X.numpy() == 2).sum(1) > (X.numpy() == 4).sum(1)).float()
    return X, y.reshape(N, 1)


def batch_python_random(N, T=10):
    X = torch.tensor([[random.randrange(10) for _ in range(T)] for _ in range(N)])
    return X, ((X == 2).sum(1, keepdim=True) > (X == 4).sum(1, keepdim=True)).float()


def batch_few_fours(N, T=10):
    """A bug no diagnosis describes: the digits are not uniform."""
    X = torch.randint(0, 10, (N, T))
    X[X == 4] = torch.randint(0, 10, (int((X == 4).sum()),))
    twos, fours = (X == 2).sum(1, keepdim=True), (X == 4).sum(1, keepdim=True)
    return X, (twos > fours).float()


def batch_summed_down(N, T=10):
    X = torch.randint(0, 10, (N, T))
    return X, ((X == 2).sum(0, keepdim=True) > (X == 4).sum(0, keepdim=True)).float()


def batch_row_labels(N, T=10):
    X = torch.randint(0, 10, (N, T))
    return X, ((X == 2).sum(1) > (X == 4).sum(1)).float().unsqueeze(0)


def batch_swapped(N, T=10):
    X = torch.randint(0, 10, (N, T))
    return ((X == 2).sum(1, keepdim=True) > (X == 4).sum(1, keepdim=True)).float(), X


def batch_whole(N, T=10):
    """Counts the 2s and 4s of the whole batch: one label for every row."""
    X = torch.randint(0, 10, (N, T))
    return X, torch.full((N, 1), float((X == 2).sum() > (X == 4).sum()))


def batch_clock_seed(N, T=10):
    """'torch.seed() to use the seed': reseeds from the system's entropy."""
    torch.seed()
    X = torch.randint(0, 10, (N, T))
    return X, ((X == 2).sum(1, keepdim=True) > (X == 4).sum(1, keepdim=True)).float()


def batch_own_generator(N, T=10):
    X = torch.randint(0, 10, (N, T), generator=torch.Generator())
    return X, ((X == 2).sum(1, keepdim=True) > (X == 4).sum(1, keepdim=True)).float()


_PRIVATE = torch.Generator().manual_seed(0)


def batch_private_generator(N, T=10):
    """A generator of its own, seeded once when the cell runs."""
    X = torch.randint(0, 10, (N, T), generator=_PRIVATE)
    return X, ((X == 2).sum(1, keepdim=True) > (X == 4).sum(1, keepdim=True)).float()


def batch_first_ten(N, T=10):
    """A student's loop that counts only the first 10 positions."""
    X = torch.randint(0, 10, (N, T))
    y = torch.zeros(N, 1)
    for i in range(N):
        row = X[i, :10].tolist()
        y[i, 0] = float(row.count(2) > row.count(4))
    return X, y


def batch_int32(N, T=10):
    X = torch.randint(0, 10, (N, T), dtype=torch.int32)
    return X, ((X == 2).sum(1, keepdim=True) > (X == 4).sum(1, keepdim=True)).float()


def batch_sign(N, T=10):
    X = torch.randint(0, 10, (N, T))
    return X, torch.sign((X == 2).sum(1, keepdim=True) - (X == 4).sum(1, keepdim=True)).float()


def batch_any(N, T=10):
    X = torch.randint(0, 10, (N, T))
    return X, ((X == 2).any(1, keepdim=True) & ~(X == 4).any(1, keepdim=True)).float()


def batch_scalar_for_one(N, T=10):
    X = torch.randint(0, 10, (N, T))
    y = ((X == 2).sum(1) > (X == 4).sum(1)).float().squeeze()
    return X, y.reshape(N, 1) if N > 1 else y


def batch_reseeds_after(N, T=10):
    """Draws the batch, then resets the generator "for the next call"."""
    X = torch.randint(0, 10, (N, T))
    torch.manual_seed(0)
    return X, ((X == 2).sum(1, keepdim=True) > (X == 4).sum(1, keepdim=True)).float()


def batch_os_seed_after(N, T=10):
    """Draws the batch, then "logs the seed" with torch.seed(), which reseeds from the OS."""
    X = torch.randint(0, 10, (N, T))
    batch_os_seed_after.seed_used = torch.seed()
    return X, ((X == 2).sum(1, keepdim=True) > (X == 4).sum(1, keepdim=True)).float()


def batch_first_call_seed():
    """A make_batch that seeds the global generator on its first call only (a fresh one for
    each bank: the flag is the state of a kernel)."""
    seeded = []

    def make_batch(N, T=10):
        if not seeded:
            torch.manual_seed(0)
            seeded.append(True)
        X = torch.randint(0, 10, (N, T))
        return X, ((X == 2).sum(1, keepdim=True) > (X == 4).sum(1, keepdim=True)).float()
    return _named(make_batch, "first_call_seed")


def batch_summed_down_transposed(N, T=10):
    """Counts down the batch, then transposes the (1, T) row into a (T, 1) column."""
    X = torch.randint(0, 10, (N, T))
    return X, ((X == 2).sum(0, keepdim=True) > (X == 4).sum(0, keepdim=True)).float().T


def batch_rounded_rand(N, T=10):
    """Rounds uniform floats in [0, 9): 0 and 9 get half an interval each."""
    X = (torch.rand(N, T) * 9).round().long()
    twos, fours = (X == 2).sum(1, keepdim=True), (X == 4).sum(1, keepdim=True)
    return X, (twos > fours).float()


BATCH_BANK = [
    (_named(_batch(rule=">="), "ties_yes"), "ties", "values"),
    (_named(_batch(rule="<"), "reversed"), "wrong way round", "values"),
    (_named(_batch(rule="!="), "differ"), "counts differ", "values"),
    (_named(_batch(high=9), "no_nines"), "no 9", "values"),
    (_named(_batch(low=1), "no_zeros"), "no 0", "values"),
    (batch_few_fours, None, "values"),
    (_named(_batch(y_shape="vector"), "flat_y"), "no column axis", "shape"),
    (batch_summed_down, "down the batch", "shape"),
    (batch_row_labels, "is a row", "shape"),
    (batch_swapped, "pair is returned the wrong way round", "shape"),
    (batch_whole, "over the whole batch", "values"),
    (_named(_batch(y_dtype=torch.bool), "bool_y"), "booleans", "dtype"),
    (_named(_batch(y_dtype=torch.float64), "float64_y"), "BCELoss then fails", "dtype"),
    (_named(_batch(y_dtype=torch.int64), "int_y"), "holds integers", "dtype"),
    (_named(_batch(x_float=True), "float_X"), "X holds floats", "dtype"),
    (_named(_batch(fixed_T=True), "fixed_T"), "T is ignored", "arguments"),
    (_named(_batch(reseed=True), "reseeds"), "whatever the global seed", "randomness"),
    (batch_numpy, "NumPy's", "randomness"),
    (batch_python_random, "NumPy's", "randomness"),
    (batch_clock_seed, "from the clock", "randomness"),
    (batch_own_generator, "whatever the global seed", "randomness"),
    (batch_private_generator, "started once", "randomness"),
    (batch_reseeds_after, "resets the global generator", "randomness"),
    (batch_os_seed_after, "fresh seed from the OS", "randomness"),
    (batch_scalar_for_one, "single number", "arguments"),
    (batch_summed_down_transposed, "down the batch", "shape"),
    (batch_rounded_rand, "half as often", "values"),
]
BATCH_BANKS = ExerciseBanks(
    solution=SOLUTION["make_batch"], correct=[batch_loop, batch_one_hot, batch_where],
    check=[*BATCH_BANK, (batch_first_call_seed(), "on its first call", "randomness"),
           (batch_first_ten, "first 10 positions", "arguments"),
           (batch_int32, "another integer width", "dtype"),
           (_named(_batch(low=1, high=11), "one_to_ten"), "from 1 to 10", "values"),
           (batch_sign, "holds -1", "values"),
           (batch_any, "a 2 and no 4", "values")],
    hidden=[*BATCH_BANK, (batch_first_call_seed(), "on its first call", "randomness"),
            (batch_first_ten, None, "arguments")])


def test_make_batch_checks_leave_the_global_generator_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    grade_make_batch(SOLUTION["make_batch"])
    check_make_batch(SOLUTION["make_batch"])
    assert torch.equal(torch.rand(3), expected)


def test_float64_labels_are_told_what_bce_will_say():
    message = assert_fails_naming(check_make_batch, _batch(y_dtype=torch.float64), "float32")
    assert "BCELoss" in diagnosis(message)


def test_blank_batch_propagates_not_implemented():
    with pytest.raises(NotImplementedError):
        grade_make_batch(not_implemented)
    with pytest.raises(NotImplementedError):
        check_make_batch(not_implemented)


# ---- SingleQueryAttention ------------------------------------------------------------------------

Solution = SOLUTION["SingleQueryAttention"]
solution_attention = SOLUTION["scaled_dot_product_attention"]


class ReusesExercise1(Solution):
    def attention(self, e):
        q = self.query.expand(e.shape[0], 1, -1)
        return solution_attention(q, self.to_key(e), self.to_value(e))[1]


class EinsumModel(nn.Module):
    """Written differently: members created in another order, einsum, F.sdpa in forward."""

    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__()
        self.readout = nn.Sequential(nn.Linear(1, d_hidden), nn.Tanh(), nn.Linear(d_hidden, 1),
                                     nn.Sigmoid())
        self.to_value = nn.Linear(d_embed, 1)
        self.to_key = nn.Linear(d_embed, d_att)
        self.query = nn.Parameter(torch.randn(1, d_att))
        self.embed = nn.Embedding(10, d_embed)

    def attention(self, e):
        scores = torch.einsum("ntd,qd->nqt", self.to_key(e), self.query)
        return torch.softmax(scores / self.query.shape[1] ** 0.5, dim=-1)

    def values(self, e):
        return self.to_value(e)

    def forward(self, x):
        e = self.embed(x)
        q = self.query.unsqueeze(0).expand(x.shape[0], -1, -1)
        z = F.scaled_dot_product_attention(q, self.to_key(e), self.values(e))
        return self.readout(z.squeeze(-1))


class SoftmaxOverQueryAxis(Solution):
    def attention(self, e):
        scores = self.query @ self.to_key(e).transpose(1, 2) / math.sqrt(self.query.shape[-1])
        return torch.softmax(scores, dim=1)  # (N, 1, T): over the size-1 axis


class NoScale(Solution):
    def attention(self, e):
        return torch.softmax(self.to_key(e) @ self.query.T, dim=1).transpose(1, 2)


class ScaleByEmbedding(Solution):
    """Divides by the embedding width: right only while d_embed == d_att."""

    def attention(self, e):
        scores = self.to_key(e) @ self.query.T / math.sqrt(e.shape[-1])
        return torch.softmax(scores, dim=1).transpose(1, 2)


class HardCodedScale(Solution):
    """Divides by 4.0 = sqrt(16): right only for the default d_att."""

    def attention(self, e):
        return torch.softmax(self.to_key(e) @ self.query.T / 4.0, dim=1).transpose(1, 2)


class NoSoftmax(Solution):
    def attention(self, e):
        return (self.to_key(e) @ self.query.T / math.sqrt(self.query.shape[-1])).transpose(1, 2)


class ScaleByDAtt(Solution):
    def attention(self, e):
        return torch.softmax(self.to_key(e) @ self.query.T / self.query.shape[-1], dim=1
                             ).transpose(1, 2)


class PlainTensorQuery(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        del self.query
        self.query = torch.randn(1, d_att, requires_grad=True)


class PaddedEmbedding(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.embed = nn.Embedding(10, d_embed, padding_idx=0)  # "0 is padding", as elsewhere


class HardCodedSizes(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__()


class ChangedDefaults(Solution):
    def __init__(self, d_embed=8, d_att=8, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)


class NoSigmoid(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.readout = nn.Sequential(nn.Linear(1, d_hidden), nn.Tanh(), nn.Linear(d_hidden, 1))


class ReluReadout(Solution):
    """A ReLU where the table says Tanh: no diagnosis names it, the members differ."""

    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.readout = nn.Sequential(nn.Linear(1, d_hidden), nn.ReLU(), nn.Linear(d_hidden, 1),
                                     nn.Sigmoid())


class NoKeyBias(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.to_key = nn.Linear(d_embed, d_att, bias=False)


class DropoutMember(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.drop = nn.Dropout(0.1)


class ValueWidthDAtt(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.to_value = nn.Linear(d_embed, d_att)


class EmbedWidthDAtt(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.embed = nn.Embedding(10, d_att)


class SqueezedEverything(Solution):
    def forward(self, x):
        e = self.embed(x)
        return self.readout((self.attention(e) @ self.values(e)).squeeze())


class UnflattenedZ(Solution):
    def forward(self, x):
        e = self.embed(x)
        return self.readout(self.attention(e) @ self.values(e))


class SigmoidOnZ(Solution):
    def forward(self, x):
        e = self.embed(x)
        return torch.sigmoid((self.attention(e) @ self.values(e)).reshape(-1, 1))


class MultipliedScale(Solution):
    def attention(self, e):
        scores = self.to_key(e) @ self.query.T * math.sqrt(self.query.shape[-1])
        return torch.softmax(scores, dim=1).transpose(1, 2)


class ScaleByDHidden(Solution):
    def attention(self, e):
        scores = self.to_key(e) @ self.query.T / math.sqrt(self.readout[0].out_features)
        return torch.softmax(scores, dim=1).transpose(1, 2)


class ZeroQuery(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.query = nn.Parameter(torch.zeros(1, d_att))


class UniformQuery(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.query = nn.Parameter(torch.rand(1, d_att))


class SmallQuery(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.query = nn.Parameter(0.1 * torch.randn(1, d_att))


class SumsValues(Solution):
    def forward(self, x):
        return self.readout(self.values(self.embed(x)).sum(1))


class IgnoresAttention(Solution):
    def forward(self, x):
        return self.readout(self.values(self.embed(x)).mean(1))


class SkipsReadout(Solution):
    def forward(self, x):
        e = self.embed(x)
        return (self.attention(e) @ self.values(e)).reshape(-1, 1)


class DoubleSigmoid(Solution):
    def forward(self, x):
        return torch.sigmoid(super().forward(x))


class FlatValues(Solution):
    def values(self, e):
        return self.to_value(e).squeeze(-1)

    def forward(self, x):
        e = self.embed(x)
        return self.readout((self.attention(e)[:, 0] * self.values(e)).sum(1, keepdim=True))


class EmbedsInsideAttention(Solution):
    def attention(self, e):
        return super().attention(self.embed(e))


class WeightsAsColumn(Solution):
    def attention(self, e):
        return super().attention(e).transpose(1, 2)


class BmmWith2DQuery(Solution):
    def attention(self, e):
        scores = torch.bmm(self.to_key(e), self.query.T) / math.sqrt(self.query.shape[-1])
        return torch.softmax(scores, dim=1).transpose(1, 2)


class Detached(Solution):
    def forward(self, x):
        e = self.embed(x)
        z = self.attention(e).detach() @ self.values(e)
        return self.readout(z.reshape(-1, 1))


class NoGradForward(Solution):
    """forward under torch.no_grad() 'because it is only a prediction'."""

    @torch.no_grad()
    def forward(self, x):
        return super().forward(x)


class NormalisesInPlace(Solution):
    """Scales the embeddings it was given in place."""

    def attention(self, e):
        e /= math.sqrt(e.shape[-1])
        return super().attention(e * math.sqrt(e.shape[-1]))


class ShiftedValues(Solution):
    """A bug no diagnosis describes."""

    def forward(self, x):
        e = self.embed(x)
        attended = self.attention(e) @ (self.values(e) + 1.0)
        return self.readout(attended.reshape(-1, 1))


class SqueezedScores(Solution):
    """.squeeze() on the scores: a batch of one loses its batch axis."""

    def attention(self, e):
        scores = self.to_key(e) @ self.query.T / math.sqrt(self.query.shape[-1])
        return torch.softmax(scores.squeeze(), dim=-1).unsqueeze(1)


class SqueezedAttended(Solution):
    def forward(self, x):
        e = self.embed(x)
        return self.readout((self.attention(e) @ self.values(e)).squeeze().unsqueeze(-1))


class DigitsIntoAttention(Solution):
    def forward(self, x):
        e = self.embed(x)
        return self.readout((self.attention(x) @ self.values(e)).reshape(-1, 1))


class ReseedsInInit(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        torch.manual_seed(0)
        super().__init__(d_embed, d_att, d_hidden)


class ReseedsAfterInit(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        torch.manual_seed(0)


class ReseedsInForward(Solution):
    def forward(self, x):
        out = super().forward(x)
        torch.manual_seed(0)
        return out


class OsSeedInInit(Solution):
    """"Logs the seed" with torch.seed(), which reseeds the generator from the OS."""

    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.seed_used = torch.seed()


class NumpyQuery(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.query = nn.Parameter(torch.from_numpy(np.random.randn(1, d_att)).float())


class CpuAccumulator(Solution):
    """Accumulates the attended value in a tensor made on the CPU."""

    def forward(self, x):
        e = self.embed(x)
        w, v = self.attention(e), self.values(e)
        z = torch.zeros(x.shape[0], 1)
        for t in range(x.shape[1]):
            z = z + w[:, :, t] * v[:, t, :]
        return self.readout(z)


class FrozenQuery(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.query = nn.Parameter(torch.randn(1, d_att), requires_grad=False)


class QueryData(Solution):
    def attention(self, e):
        scores = self.to_key(e) @ self.query.data.T / math.sqrt(self.query.shape[-1])
        return torch.softmax(scores, dim=1).transpose(1, 2)


class QueryVector(Solution):
    """The query as a vector (d_att,) instead of a row (1, d_att)."""

    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.query = nn.Parameter(torch.randn(d_att))

    def attention(self, e):
        scores = self.to_key(e) @ self.query / math.sqrt(self.query.shape[-1])
        return torch.softmax(scores, dim=-1).unsqueeze(1)


class BroadcastProduct(Solution):
    """w * v broadcasts (N, 1, T) against (N, T, 1) into (N, T, T)."""

    def forward(self, x):
        e = self.embed(x)
        return self.readout((self.attention(e) * self.values(e)).sum(1)[:, :1])


class ValuesFromKeys(Solution):
    def values(self, e):
        return self.to_key(e)[..., :1]


MODEL_BANK = [
    (PlainTensorQuery, "plain tensor", "members"),
    (ChangedDefaults, "default arguments", "members"),
    (NoSigmoid, "nn.Sigmoid", "members"),
    (ReluReadout, "middle layer", "members"),
    (NoKeyBias, "bias=False", "members"),
    (DropoutMember, "does not list", "members"),
    (PaddedEmbedding, "leave padding_idx out", "members"),
    (ValueWidthDAtt, "one number", "members"),
    (EmbedWidthDAtt, "nn.Embedding(10, d_embed)", "arguments"),
    (SqueezedEverything, "lost its axes", "forward"),
    (ZeroQuery, "starts at zero", "init"),
    (UniformQuery, "uniformly", "init"),
    (SmallQuery, "scaled down", "init"),
    (SoftmaxOverQueryAxis, "axis of size 1", "attention"),
    (NoSoftmax, "before the softmax", "attention"),
    (NoScale, "not divided by sqrt(d_att)", "attention"),
    (ScaleByDAtt, "divided by d_att instead", "attention"),
    (WeightsAsColumn, "come out as (N, T, 1)", "attention"),
    (EmbedsInsideAttention, "embeds its input again", "attention"),
    (BmmWith2DQuery, "torch.bmm", "attention"),
    (SqueezedScores, "batch of one", "attention"),
    (SqueezedAttended, "batch of one", "forward"),
    (DigitsIntoAttention, "where the embeddings belong", "forward"),
    (ReseedsInInit, "different global seeds are the same", "randomness"),
    (NumpyQuery, "same global seed differ", "randomness"),
    (ReseedsAfterInit, "resets the global generator", "randomness"),
    (ReseedsInForward, "resets the global generator", "randomness"),
    (OsSeedInInit, "fresh seed from the OS", "randomness"),
    (FrozenQuery, "requires_grad=False", "gradients"),
    (QueryData, "requires_grad=False", "gradients"),
    (FlatValues, "lost their last axis", "values"),
    (IgnoresAttention, "ignores the attention", "forward"),
    (SkipsReadout, "skips the readout", "forward"),
    (SumsValues, "sums the values", "forward"),
    (DoubleSigmoid, "sigmoid is applied twice", "forward"),
    (ShiftedValues, None, "forward"),
    (ScaleByEmbedding, "sqrt(d_embed)", "arguments"),
    (HardCodedScale, "fixed 4", "arguments"),
    (HardCodedSizes, "constructor arguments were ignored", "arguments"),
    (Detached, "gradient is cut", "gradients"),
    (NoGradForward, "gradient is cut", "gradients"),
    (NormalisesInPlace, "in place", "unchanged"),
    (QueryVector, "is a vector", "members"),
    (BroadcastProduct, "broadcasts the weights", "forward"),
    (ValuesFromKeys, "came from to_key", "values"),
]
MODEL_BANKS = ExerciseBanks(solution=Solution, correct=[ReusesExercise1, EinsumModel],
                            check=[*MODEL_BANK, (CpuAccumulator, "without device=", "device"),
                                   (UnflattenedZ, "kept its shape", "forward"),
                                   (SigmoidOnZ, "skipping the readout", "forward"),
                                   (MultipliedScale, "multiplied by sqrt(d_att)", "attention"),
                                   (ScaleByDHidden, "sqrt(d_hidden)", "attention")],
                            hidden=MODEL_BANK)

BANKS = {"scaled_dot_product_attention": SDPA_BANKS, "make_batch": BATCH_BANKS,
         "SingleQueryAttention": MODEL_BANKS}


def test_a_scale_right_only_for_the_default_model_is_named():
    for candidate, words in ((ScaleByEmbedding, "sqrt(d_embed)"), (HardCodedScale, "fixed 4")):
        for grade in (check_SingleQueryAttention, grade_SingleQueryAttention):
            message, clause = failing(grade, candidate)
            assert clause == "arguments" and words in diagnosis(message)


class Blank(nn.Module):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__()
        raise NotImplementedError()


def test_blank_model_propagates_not_implemented():
    with pytest.raises(NotImplementedError):
        grade_SingleQueryAttention(Blank)
    with pytest.raises(NotImplementedError):
        check_SingleQueryAttention(Blank)

"""Hidden tests of tutorial 02 against the solution, common mistakes and other correct answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mutation import assert_bank, assert_fails_naming
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


# ---- scaled_dot_product_attention: correct alternatives ---------------------------------------

def sdpa_einsum(Q, K, V, mask=None):
    scores = torch.einsum("...qd,...kd->...qk", Q, K) / Q.shape[-1] ** 0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.tensor(float("-inf")))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)
    return torch.einsum("...qk,...kd->...qd", weights, V), weights


def sdpa_matmul_renormalised(Q, K, V, mask=None):
    """Mask after the softmax, then renormalise: the same as masking before."""
    weights = torch.softmax(torch.matmul(Q, K.transpose(-1, -2)) / math.sqrt(K.size(-1)), -1)
    if mask is not None:
        weights = weights * mask
        total = weights.sum(-1, keepdim=True)
        weights = torch.where(total > 0, weights / total.clamp_min(1e-30), 0.0)
    return torch.matmul(weights, V), weights


def sdpa_loop(Q, K, V, mask=None):
    batch = torch.broadcast_shapes(Q.shape[:-2], K.shape[:-2])
    Tq, Tk = Q.shape[-2], K.shape[-2]
    full = torch.ones(Tq, Tk, dtype=torch.bool) if mask is None else mask
    full = torch.broadcast_to(full, (*batch, Tq, Tk)).reshape(-1, Tq, Tk)
    Qf, Kf, Vf = (t.reshape(-1, *t.shape[-2:]) for t in (Q, K, V))
    outs, all_weights = [], []
    for b in range(Qf.shape[0]):
        w_rows, o_rows = [], []
        for i in range(Tq):
            s = torch.stack([Qf[b, i] @ Kf[b, j] for j in range(Tk)]) / math.sqrt(Q.shape[-1])
            allowed = full[b, i]
            if allowed.any():
                e = torch.exp(s - s[allowed].max()) * allowed
                w = e / e.sum()
            else:
                w = torch.zeros(Tk)
            w_rows.append(w)
            o_rows.append(w @ Vf[b])
        all_weights.append(torch.stack(w_rows))
        outs.append(torch.stack(o_rows))
    return (torch.stack(outs).reshape(*batch, Tq, V.shape[-1]),
            torch.stack(all_weights).reshape(*batch, Tq, Tk))


def sdpa_builtin(Q, K, V, mask=None):
    """PyTorch's own function; weights by attending to one-hot values."""
    Tk = K.shape[-2]
    eye = torch.eye(Tk, dtype=Q.dtype).expand(*K.shape[:-2], Tk, Tk)
    weights = F.scaled_dot_product_attention(Q, K, eye, attn_mask=mask)
    out = F.scaled_dot_product_attention(Q, K, V, attn_mask=mask)
    return out.nan_to_num(0.0), weights.nan_to_num(0.0)


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


CORRECT_ATTENTION = [SOLUTION["scaled_dot_product_attention"], sdpa_einsum,
                     sdpa_matmul_renormalised, sdpa_loop, sdpa_builtin, sdpa_bmm_flattened]


@pytest.mark.parametrize("candidate", CORRECT_ATTENTION)
def test_correct_attentions_pass(candidate):
    grade_scaled_dot_product_attention(candidate)
    check_scaled_dot_product_attention(candidate)


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


def sdpa_squeezed(Q, K, V, mask=None):
    out, weights = SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)
    return out.reshape(-1, *out.shape[-2:]), weights.reshape(-1, *weights.shape[-2:])


def sdpa_swapped(Q, K, V, mask=None):
    out, weights = SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)
    return weights, out


def sdpa_manual_exp(Q, K, V, mask=None):
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
    if mask is not None:
        mask[..., -1] = True
    return SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)


def sdpa_dot_T(Q, K, V, mask=None):
    """A reader's mistake: K.T works for 2-D inputs only."""
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


def sdpa_embedding_dimension_merged(Q, K, V, mask=None):
    out, weights = SOLUTION["scaled_dot_product_attention"](Q, K, V, mask)
    return out.reshape(-1, *out.shape[-2:]), weights.reshape(-1, *weights.shape[-2:])


_d_k = _make(scale=lambda Q, K, V: 1.0 / Q.shape[-1])
_d_k.__name__ = "divided_by_d_k"
MUTANTS = {name: fn for name, fn in {
    "no_scale": _make(scale=lambda Q, K, V: 1.0),
    "divided_by_d_k": _d_k,
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
for _name, _fn in MUTANTS.items():
    _fn.__name__ = _name

ATTENTION_HIDDEN_BANK = [
    (MUTANTS["no_scale"], "not divided by sqrt(d_k)"),
    (MUTANTS["divided_by_d_k"], "divided by d_k instead"),
    (MUTANTS["divided_by_sqrt_d_v"], "sqrt(d_v)"),
    (MUTANTS["multiplied_by_sqrt_d_k"], "multiplied by sqrt(d_k)"),
    (MUTANTS["softmax_over_queries"], "query axis"),
    (MUTANTS["returns_scores"], "(scaled scores)"),
    (MUTANTS["zero_fill"], "0 instead of -inf"),
    (MUTANTS["inverted_mask"], "inverted"),
    (MUTANTS["ignored_mask"], "mask was ignored"),
    (MUTANTS["mask_after_softmax"], "after the softmax"),
    (MUTANTS["nan_rows"], "comes out of the softmax as nan"),
    (MUTANTS["finite_fill"], "uniform"),
    (sdpa_bmm_3d, "torch.bmm"),
    (sdpa_transpose_1_2, None),
    (sdpa_embedding_dimension_merged, "merged into one"),
    (sdpa_swapped, "swapped"),
    (sdpa_manual_exp, "overflow"),
    (sdpa_in_place, "in place"),
    (sdpa_raw_scores, "raw scores"),
    (sdpa_dot_T, "works for 2-D inputs"),
    (sdpa_value_bug, None),
]
ATTENTION_CHECK_BANK = [
    (MUTANTS["no_scale"], "not divided by sqrt(d_k)"),
    (MUTANTS["divided_by_d_k"], "divided by d_k instead"),
    (MUTANTS["divided_by_sqrt_d_v"], None),
    (MUTANTS["softmax_over_queries"], "over the queries"),
    (MUTANTS["returns_scores"], "returned before the softmax"),
    (MUTANTS["zero_fill"], "0 instead of -inf"),
    (MUTANTS["inverted_mask"], "inverted"),
    (MUTANTS["ignored_mask"], "mask was ignored"),
    (MUTANTS["mask_after_softmax"], "after the softmax"),
    (MUTANTS["nan_rows"], "comes out of the softmax as nan"),
    (MUTANTS["finite_fill"], "uniform"),
    (sdpa_bmm_3d, "torch.bmm"),
    (sdpa_transpose_1_2, None),
    (sdpa_swapped, "wrong way round"),
    (sdpa_in_place, "in place"),
    (sdpa_mask_in_place, "mask was changed in place"),
    (sdpa_dot_T, "works for 2-D inputs"),
    (sdpa_value_bug, None),
]


def test_attention_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_scaled_dot_product_attention, SOLUTION["scaled_dot_product_attention"],
                ATTENTION_HIDDEN_BANK)


def test_attention_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_scaled_dot_product_attention, SOLUTION["scaled_dot_product_attention"],
                ATTENTION_CHECK_BANK)


def test_self_check_messages_are_plain_words():
    message = assert_fails_naming(check_scaled_dot_product_attention, MUTANTS["no_scale"],
                                  "expected", "got", "where")
    assert "Traceback" not in message


def test_blank_attention_propagates_not_implemented():
    with pytest.raises(NotImplementedError):
        grade_scaled_dot_product_attention(not_implemented)
    with pytest.raises(NotImplementedError):
        check_scaled_dot_product_attention(not_implemented)


# ---- make_batch ------------------------------------------------------------------------------

def batch_numpy(N, T=10):
    X = torch.from_numpy(np.random.randint(0, 10, size=(N, T))).long()
    y = torch.from_numpy((X.numpy() == 2).sum(1) > (X.numpy() == 4).sum(1)).float()
    return X, y.reshape(N, 1)


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


@pytest.mark.parametrize("candidate", [SOLUTION["make_batch"], batch_numpy, batch_loop,
                                       batch_one_hot])
def test_correct_batches_pass(candidate):
    grade_make_batch(candidate)
    check_make_batch(candidate)


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


def _named(fn, name):
    fn.__name__ = name
    return fn


def batch_few_fours(N, T=10):
    """A bug no diagnosis describes: the digits are not uniform."""
    X = torch.randint(0, 10, (N, T))
    X[X == 4] = torch.randint(0, 10, (int((X == 4).sum()),))
    twos, fours = (X == 2).sum(1, keepdim=True), (X == 4).sum(1, keepdim=True)
    return X, (twos > fours).float()


BATCH_HIDDEN_BANK = [
    (_named(_batch(rule=">="), "ties_yes"), "ties"),
    (_named(_batch(rule="<"), "reversed"), "wrong way round"),
    (_named(_batch(rule="!="), "differ"), "counts differ"),
    (_named(_batch(high=9), "no_nines"), "no 9"),
    (_named(_batch(low=1), "no_zeros"), "no 0"),
    (_named(_batch(y_shape="vector"), "flat_y"), "no column axis"),
    (_named(_batch(y_dtype=torch.bool), "bool_y"), None),
    (_named(_batch(fixed_T=True), "fixed_T"), "T is ignored"),
    (_named(_batch(x_float=True), "float_X"), None),
    (_named(_batch(reseed=True), "reseeds"), "reseeds"),
    (batch_few_fours, None),
]
BATCH_CHECK_BANK = BATCH_HIDDEN_BANK


def test_batch_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_make_batch, SOLUTION["make_batch"], BATCH_HIDDEN_BANK)


def test_batch_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_make_batch, SOLUTION["make_batch"], BATCH_CHECK_BANK)


def test_make_batch_checks_leave_the_global_generator_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    grade_make_batch(SOLUTION["make_batch"])
    check_make_batch(SOLUTION["make_batch"])
    assert torch.equal(torch.rand(3), expected)


def test_blank_batch_propagates_not_implemented():
    with pytest.raises(NotImplementedError):
        grade_make_batch(not_implemented)


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
        self.query = nn.Parameter(0.1 * torch.randn(1, d_att))
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


@pytest.mark.parametrize("candidate", [Solution, ReusesExercise1, EinsumModel])
def test_correct_models_pass(candidate):
    grade_SingleQueryAttention(candidate)
    check_SingleQueryAttention(candidate)


class SoftmaxOverQueryAxis(Solution):
    def attention(self, e):
        scores = self.query @ self.to_key(e).transpose(1, 2) / math.sqrt(self.query.shape[-1])
        return torch.softmax(scores, dim=1)  # (N, 1, T): over the size-1 axis


class NoScale(Solution):
    def attention(self, e):
        return torch.softmax(self.to_key(e) @ self.query.T, dim=1).transpose(1, 2)


class ScaleByEmbedding(Solution):
    def attention(self, e):
        scores = self.to_key(e) @ self.query.T / math.sqrt(e.shape[-1])
        return torch.softmax(scores, dim=1).transpose(1, 2)


class NoSoftmax(Solution):
    def attention(self, e):
        return (self.to_key(e) @ self.query.T / math.sqrt(self.query.shape[-1])).transpose(1, 2)


class PlainTensorQuery(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        del self.query
        self.query = torch.randn(1, d_att, requires_grad=True)


class HardCodedSizes(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__()


class NoSigmoid(Solution):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)
        self.readout = nn.Sequential(nn.Linear(1, d_hidden), nn.Tanh(), nn.Linear(d_hidden, 1))


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


class FlatValues(Solution):
    def values(self, e):
        return self.to_value(e).squeeze(-1)

    def forward(self, x):
        e = self.embed(x)
        return self.readout((self.attention(e)[:, 0] * self.values(e)).sum(1, keepdim=True))


class EmbedsInsideAttention(Solution):
    def attention(self, e):
        return super().attention(self.embed(e))


class Detached(Solution):
    def forward(self, x):
        e = self.embed(x)
        z = self.attention(e).detach() @ self.values(e)
        return self.readout(z.reshape(-1, 1))


class WeightsAsColumn(Solution):
    def attention(self, e):
        return super().attention(e).transpose(1, 2)


class ScaleByDAtt(Solution):
    def attention(self, e):
        return torch.softmax(self.to_key(e) @ self.query.T / self.query.shape[-1], dim=1
                             ).transpose(1, 2)


class DoubleSigmoid(Solution):
    def forward(self, x):
        return torch.sigmoid(super().forward(x))


class ChangedDefaults(Solution):
    def __init__(self, d_embed=8, d_att=8, d_hidden=32):
        super().__init__(d_embed, d_att, d_hidden)


class BmmWith2DQuery(Solution):
    def attention(self, e):
        scores = torch.bmm(self.to_key(e), self.query.T) / math.sqrt(self.query.shape[-1])
        return torch.softmax(scores, dim=1).transpose(1, 2)


class ShiftedValues(Solution):
    """A bug no diagnosis describes."""
    def forward(self, x):
        e = self.embed(x)
        attended = self.attention(e) @ (self.values(e) + 1.0)
        return self.readout(attended.reshape(-1, 1))


MODEL_HIDDEN_BANK = [
    (SoftmaxOverQueryAxis, "axis of size 1"),
    (NoSoftmax, "before the softmax"),
    (NoScale, "not divided by sqrt(d_att)"),
    (ScaleByDAtt, "divided by d_att instead"),
    (ScaleByEmbedding, "sqrt(d_embed)"),
    (PlainTensorQuery, "plain tensor"),
    (HardCodedSizes, "constructor arguments were ignored"),
    (NoSigmoid, "nn.Sigmoid"),
    (IgnoresAttention, "ignores the attention"),
    (SkipsReadout, "skips the readout"),
    (FlatValues, "lost their last axis"),
    (WeightsAsColumn, "come out as (N, T, 1)"),
    (EmbedsInsideAttention, "embeds its input again"),
    (Detached, "gradient is cut"),
    (ChangedDefaults, "default arguments"),
    (SumsValues, "sums the values"),
    (BmmWith2DQuery, "torch.bmm"),
    (ShiftedValues, None),
]
MODEL_CHECK_BANK = [
    (SoftmaxOverQueryAxis, "axis of size 1"),
    (NoScale, "not divided by sqrt(d_att)"),
    (ScaleByDAtt, "divided by d_att instead"),
    (PlainTensorQuery, "plain tensor"),
    (NoSigmoid, "nn.Sigmoid"),
    (DoubleSigmoid, "twice"),
    (IgnoresAttention, "ignores the attention"),
    (SkipsReadout, "skips the readout"),
    (SumsValues, "sums the values"),
    (FlatValues, "lost their last axis"),
    (WeightsAsColumn, "come out as (N, T, 1)"),
    (Detached, "gradient is cut"),
    (ShiftedValues, None),
]


def test_model_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_SingleQueryAttention, Solution, MODEL_HIDDEN_BANK)


def test_model_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_SingleQueryAttention, Solution, MODEL_CHECK_BANK)


class Blank(nn.Module):
    def __init__(self, d_embed=16, d_att=16, d_hidden=32):
        super().__init__()
        raise NotImplementedError()


def test_blank_model_propagates_not_implemented():
    with pytest.raises(NotImplementedError):
        grade_SingleQueryAttention(Blank)
    with pytest.raises(NotImplementedError):
        check_SingleQueryAttention(Blank)

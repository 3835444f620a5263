"""Hidden tests of tutorial 04 against the solution, common mistakes and other correct answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mutation import assert_bank
from notebook_code import solution_namespace
from torch import nn

from helpers.checks.transformer_block import (
    check_mean_pool,
    check_sinusoidal_positional_encoding,
    check_TransformerBlock,
)
from hidden_tests.transformer_block import (
    grade_mean_pool,
    grade_sinusoidal_positional_encoding,
    grade_TransformerBlock,
)

SOLUTION = solution_namespace("04_transformer_block")


def not_implemented(*args, **kwargs):
    raise NotImplementedError


# ---- sinusoidal_positional_encoding ------------------------------------------------------------

def encoding_loops(T, d_model):
    pe = torch.zeros(T, d_model)
    for t in range(T):
        for i in range(d_model // 2):
            angle = t / 10000 ** (2 * i / d_model)
            pe[t, 2 * i] = math.sin(angle)
            pe[t, 2 * i + 1] = math.cos(angle)
    return pe


def encoding_stack(T, d_model):
    t = torch.arange(T, dtype=torch.float64)[:, None]
    omega = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = t * omega
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(T, d_model).float()


def encoding_phase_shift(T, d_model):
    """cos(x) = sin(x + pi/2): one sine over every column, a phase on the odd ones."""
    j = torch.arange(d_model)
    omega = 10000.0 ** (-(j - j % 2).double() / d_model)
    phase = (j % 2) * (math.pi / 2)
    return torch.sin(torch.arange(T, dtype=torch.float64)[:, None] * omega + phase).float()


def _encoding(T, d_model, *, power=None, swap=False, halves=False, start=0):
    t = torch.arange(start, start + T, dtype=torch.float64)[:, None]
    i = torch.arange(d_model // 2, dtype=torch.float64)
    angles = t * 10000.0 ** (-(power(i, d_model) if power else 2 * i / d_model))
    first, second = (torch.cos, torch.sin) if swap else (torch.sin, torch.cos)
    if halves:
        return torch.cat([first(angles), second(angles)], dim=1).float()
    pe = torch.zeros(T, d_model, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = first(angles), second(angles)
    return pe.float()


def encoding_swapped(T, d_model):
    return _encoding(T, d_model, swap=True)


def encoding_halves(T, d_model):
    return _encoding(T, d_model, halves=True)


def encoding_column_index(T, d_model):
    return _encoding(T, d_model, power=lambda i, d: 4 * i / d)


def encoding_missing_two(T, d_model):
    return _encoding(T, d_model, power=lambda i, d: i / d)


def encoding_from_one(T, d_model):
    return _encoding(T, d_model, start=1)


def encoding_odd_own_index(T, d_model):
    pe = _encoding(T, d_model).double()
    t = torch.arange(T, dtype=torch.float64)[:, None]
    odd = torch.arange(1, d_model, 2, dtype=torch.float64)
    pe[:, 1::2] = torch.cos(t * 10000.0 ** (-odd / d_model))
    return pe.float()


def encoding_batch_axis(T, d_model):
    """The seed's layout: (T, 1, d), so a batch-first add indexes positions by the batch."""
    return _encoding(T, d_model).unsqueeze(0).transpose(0, 1)


def encoding_transposed(T, d_model):
    return _encoding(T, d_model).T


@pytest.mark.parametrize("candidate", [SOLUTION["sinusoidal_positional_encoding"], encoding_loops,
                                       encoding_stack, encoding_phase_shift])
def test_correct_encodings_pass(candidate):
    grade_sinusoidal_positional_encoding(candidate)
    check_sinusoidal_positional_encoding(candidate)


def encoding_cos_halves(T, d_model):
    return _encoding(T, d_model, swap=True, halves=True)


def encoding_sign_flipped(T, d_model):
    return _encoding(T, d_model, power=lambda i, d: -2 * i / d)


def encoding_integers(T, d_model):
    return torch.round(_encoding(T, d_model)).long()


def encoding_scaled(T, d_model):
    """A bug no diagnosis describes: every value halved."""
    return 0.5 * _encoding(T, d_model)


ENCODING_HIDDEN_BANK = [
    (encoding_swapped, "swapped"),
    (encoding_halves, "sines fill the first half"),
    (encoding_cos_halves, "cosines on the first half"),
    (encoding_column_index, "too large"),
    (encoding_missing_two, "too small"),
    (encoding_sign_flipped, "wrong sign"),
    (encoding_odd_own_index, "share"),
    (encoding_from_one, "start at 1"),
    (encoding_batch_axis, "(T, 1, d_model)"),
    (encoding_transposed, "transposed"),
    (encoding_integers, "holds integers"),
    (encoding_scaled, None),
]
ENCODING_CHECK_BANK = [
    (encoding_swapped, "swapped"),
    (encoding_halves, "first half"),
    (encoding_column_index, "twice too large"),
    (encoding_missing_two, "lacks the factor 2"),
    (encoding_sign_flipped, "wrong sign"),
    (encoding_odd_own_index, "share"),
    (encoding_from_one, "start at 1"),
    (encoding_batch_axis, "(T, 1, d_model)"),
    (encoding_transposed, None),
    (encoding_integers, "holds integers"),
    (encoding_scaled, None),
]


def test_encoding_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_sinusoidal_positional_encoding, SOLUTION["sinusoidal_positional_encoding"],
                ENCODING_HIDDEN_BANK)


def test_encoding_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_sinusoidal_positional_encoding, SOLUTION["sinusoidal_positional_encoding"],
                ENCODING_CHECK_BANK)


def test_blank_encoding_scores_zero():
    with pytest.raises(NotImplementedError):
        grade_sinusoidal_positional_encoding(not_implemented)


# ---- TransformerBlock -------------------------------------------------------------------------

class BlockBase(nn.Module):
    """The members every version shares; subclasses differ only in ``forward``."""

    def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
        super().__init__()
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout,
                                               batch_first=True)
        self.norm_1 = nn.LayerNorm(d_model)
        self.norm_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def attend(self, x, padding_mask):
        return self.attention(x, x, x, key_padding_mask=padding_mask)[0]


class BlockFunctional(BlockBase):
    """Same maths, written with the layers' weights and torch.nn.functional."""

    def forward(self, x, padding_mask=None):
        attended, _ = self.attention(x, x, x, key_padding_mask=padding_mask)
        h = F.layer_norm(x + attended, (x.shape[-1],), self.norm_1.weight, self.norm_1.bias,
                         self.norm_1.eps)
        first, second = self.mlp[0], self.mlp[2]
        hidden = F.relu(h @ first.weight.T + first.bias)
        return self.norm_2(h + F.linear(hidden, second.weight, second.bias))


class BlockFloatMask(BlockBase):
    """An additive -inf float mask instead of a boolean one."""

    def forward(self, x, padding_mask=None):
        mask = None
        if padding_mask is not None:
            mask = torch.zeros(padding_mask.shape, dtype=x.dtype).masked_fill(padding_mask,
                                                                              float("-inf"))
        h = self.norm_1(x + self.dropout(self.attention(x, x, x, key_padding_mask=mask,
                                                         need_weights=True)[0]))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockPerSequence(BlockBase):
    """One sequence at a time, cutting the padding off instead of masking it."""

    def forward(self, x, padding_mask=None):
        if padding_mask is None:
            padding_mask = torch.zeros(x.shape[:2], dtype=torch.bool)
        rows = []
        for seq, pad in zip(x, padding_mask, strict=True):
            real = seq[~pad].unsqueeze(0)
            attended = torch.zeros_like(seq)
            attended[~pad] = self.attention(real, real, real)[0][0]
            # padded queries still attend to the real keys
            if pad.any():
                attended[pad] = self.attention(seq[pad].unsqueeze(0), real, real)[0][0]
            rows.append(attended)
        h = self.norm_1(x + torch.stack(rows))
        return self.norm_2(h + self.mlp(h))


class BlockResidualAfterNorm(BlockBase):
    def forward(self, x, padding_mask=None):
        h = x + self.norm_1(self.attend(x, padding_mask))
        return h + self.norm_2(self.mlp(h))


class BlockNoResidual(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_1(self.attend(x, padding_mask))
        return self.norm_2(self.mlp(h))


class BlockNoMlpResidual(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.attend(x, padding_mask))
        return self.norm_2(self.mlp(h))


class BlockNormsSwapped(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_2(x + self.attend(x, padding_mask))
        return self.norm_1(h + self.mlp(h))


class BlockMlpFirst(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.mlp(x))
        return self.norm_2(h + self.attend(h, padding_mask))


class BlockPreNorm(BlockBase):
    def forward(self, x, padding_mask=None):
        h = x + self.attend(self.norm_1(x), padding_mask)
        return h + self.mlp(self.norm_2(h))


class BlockNoFinalNorm(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.attend(x, padding_mask))
        return h + self.mlp(h)


class BlockIgnoresMask(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.attend(x, None))
        return self.norm_2(h + self.mlp(h))


class BlockInvertedMask(BlockBase):
    def forward(self, x, padding_mask=None):
        mask = None if padding_mask is None else ~padding_mask
        h = self.norm_1(x + self.attend(x, mask))
        return self.norm_2(h + self.mlp(h))


class BlockNotBatchFirst(BlockBase):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
        super().__init__(d_model, n_heads, d_ff, dropout)
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)

    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.attend(x, padding_mask))
        return self.norm_2(h + self.mlp(h))


class BlockReturnsTuple(BlockBase):
    def forward(self, x, padding_mask=None):
        attended = self.attention(x, x, x, key_padding_mask=padding_mask)
        return attended


class BlockGeluMlp(BlockBase):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
        super().__init__(d_model, n_heads, d_ff, dropout)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))

    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.attend(x, padding_mask))
        return self.norm_2(h + self.mlp(h))


@pytest.mark.parametrize("candidate", [SOLUTION["TransformerBlock"], BlockFunctional,
                                       BlockFloatMask, BlockPerSequence])
def test_correct_blocks_pass(candidate):
    grade_TransformerBlock(candidate)
    check_TransformerBlock(candidate)


class BlockNoAttentionResidual(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_1(self.attend(x, padding_mask))
        return self.norm_2(h + self.mlp(h))


class BlockMlpFirstNormsSwapped(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_2(x + self.mlp(x))
        return self.norm_1(h + self.attend(h, padding_mask))


class BlockOnlyAttention(BlockBase):
    def forward(self, x, padding_mask=None):
        return self.norm_1(x + self.attend(x, padding_mask))


class BlockScaledResidual(BlockBase):
    """A bug no diagnosis describes: the residual counted twice."""
    def forward(self, x, padding_mask=None):
        h = self.norm_1(2 * x + self.attend(x, padding_mask))
        return self.norm_2(h + self.mlp(h))


BLOCK_HIDDEN_BANK = [
    (BlockResidualAfterNorm, "residual added after the norm"),
    (BlockNoResidual, "residual connections missing"),
    (BlockNoAttentionResidual, "missing around the attention"),
    (BlockNoMlpResidual, "missing around the MLP"),
    (BlockNormsSwapped, "norm_1 and norm_2 swapped"),
    (BlockMlpFirst, "MLP applied before attention:"),
    (BlockMlpFirstNormsSwapped, "MLP applied before attention (attention"),
    (BlockPreNorm, "pre-norm"),
    (BlockNoFinalNorm, "final norm_2"),
    (BlockOnlyAttention, "only one add & norm"),
    (BlockIgnoresMask, "padding mask ignored"),
    (BlockInvertedMask, "padding mask inverted"),
    (BlockNotBatchFirst, "batch_first"),
    (BlockReturnsTuple, "(output, weights)"),
    (BlockGeluMlp, None),
    (BlockScaledResidual, None),
]
BLOCK_CHECK_BANK = [
    (BlockResidualAfterNorm, None),
    (BlockNormsSwapped, "swapped"),
    (BlockPreNorm, "pre-norm"),
    (BlockNoFinalNorm, "final norm_2 is missing"),
    (BlockIgnoresMask, "does not reach the attention"),
    (BlockInvertedMask, "inverted"),
    (BlockNotBatchFirst, "batch_first"),
    (BlockReturnsTuple, "(output, weights)"),
    (BlockScaledResidual, None),
]


def test_block_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_TransformerBlock, SOLUTION["TransformerBlock"], BLOCK_HIDDEN_BANK)


def test_block_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_TransformerBlock, SOLUTION["TransformerBlock"], BLOCK_CHECK_BANK)


class BlockNotImplemented(BlockBase):
    def forward(self, x, padding_mask=None):
        raise NotImplementedError


class BlockInitNotImplemented(nn.Module):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
        super().__init__()
        raise NotImplementedError


@pytest.mark.parametrize("blank", [BlockNotImplemented, BlockInitNotImplemented])
def test_blank_block_scores_zero(blank):
    with pytest.raises(NotImplementedError):
        grade_TransformerBlock(blank)


# ---- mean_pool ----------------------------------------------------------------------------------

def pool_loop(h, padding_mask=None):
    if padding_mask is None:
        return h.mean(dim=1)
    return torch.stack([seq[~pad].mean(dim=0) for seq, pad in zip(h, padding_mask, strict=True)])


def pool_einsum(h, padding_mask=None):
    if padding_mask is None:
        padding_mask = torch.zeros(h.shape[:2], dtype=torch.bool)
    weights = (~padding_mask).to(h.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return torch.einsum("bt,btd->bd", weights, h)


def pool_masked_fill(h, padding_mask=None):
    if padding_mask is None:
        return h.mean(1)
    summed = h.masked_fill(padding_mask.unsqueeze(-1), 0.0).sum(1)
    return summed / (~padding_mask).sum(1, keepdim=True)


def pool_nanmean(h, padding_mask=None):
    if padding_mask is None:
        return h.mean(dim=1)
    return torch.where(padding_mask.unsqueeze(-1), torch.nan, h).nanmean(dim=1)


def pool_ignores_mask(h, padding_mask=None):
    return h.mean(dim=1)


def pool_divides_by_T(h, padding_mask=None):
    if padding_mask is None:
        return h.mean(dim=1)
    return (h * (~padding_mask).unsqueeze(-1)).sum(dim=1) / h.shape[1]


def pool_sums(h, padding_mask=None):
    if padding_mask is None:
        return h.mean(dim=1)
    return (h * (~padding_mask).unsqueeze(-1)).sum(dim=1)


def pool_inverted(h, padding_mask=None):
    if padding_mask is None:
        return h.mean(dim=1)
    keep = padding_mask.unsqueeze(-1).to(h.dtype)
    return (h * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1)


def pool_wrong_axis(h, padding_mask=None):
    return h.mean(dim=-1)


def pool_in_place(h, padding_mask=None):
    if padding_mask is None:
        return h.mean(dim=1)
    h.masked_fill_(padding_mask.unsqueeze(-1), 0.0)
    return h.sum(dim=1) / (~padding_mask).sum(dim=1, keepdim=True)


def pool_prefix(h, padding_mask=None):
    if padding_mask is None:
        return h.mean(dim=1)
    lengths = (~padding_mask).sum(dim=1).tolist()
    return torch.stack([h[i, :n].mean(dim=0) for i, n in enumerate(lengths)])


def pool_sum_no_mask(h, padding_mask=None):
    return h.sum(dim=1)


@pytest.mark.parametrize("candidate", [SOLUTION["mean_pool"], pool_loop, pool_einsum,
                                       pool_masked_fill, pool_nanmean])
def test_correct_pools_pass(candidate):
    grade_mean_pool(candidate)
    check_mean_pool(candidate)


def pool_over_batch(h, padding_mask=None):
    return h.mean(dim=0)


def pool_shifted(h, padding_mask=None):
    """A bug no diagnosis describes."""
    return SOLUTION["mean_pool"](h, padding_mask) + 0.1


POOL_HIDDEN_BANK = [
    (pool_ignores_mask, "averages the padding"),
    (pool_divides_by_T, "divided by T"),
    (pool_sums, "without dividing"),
    (pool_inverted, "inverted"),
    (pool_wrong_axis, "over the features"),
    (pool_over_batch, "over the batch"),
    (pool_in_place, "in place"),
    (pool_prefix, "real tokens come first"),
    (pool_sum_no_mask, "summed over time"),
    (pool_shifted, None),
]
POOL_CHECK_BANK = [
    (pool_ignores_mask, "mask was ignored"),
    (pool_divides_by_T, "divided by T"),
    (pool_sums, None),
    (pool_inverted, "inverted"),
    (pool_wrong_axis, "over the features"),
    (pool_over_batch, "over the batch"),
    (pool_in_place, "in place"),
    (pool_sum_no_mask, "summed over time"),
    (pool_shifted, None),
]


def test_pool_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_mean_pool, SOLUTION["mean_pool"], POOL_HIDDEN_BANK)


def test_pool_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_mean_pool, SOLUTION["mean_pool"], POOL_CHECK_BANK)


def test_blank_pool_scores_zero():
    with pytest.raises(NotImplementedError):
        grade_mean_pool(not_implemented)

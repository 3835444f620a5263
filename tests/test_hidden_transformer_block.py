"""Hidden tests of tutorial 04 against the solution, common mistakes and other correct answers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mutation import ExerciseBanks, diagnosis, failure
from notebook_code import as_cell as notebook_cell
from notebook_code import solution_namespace
from torch import nn

from helpers.checks.transformer_block import check_TransformerBlock
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


def encoding_cos_halves(T, d_model):
    return _encoding(T, d_model, swap=True, halves=True)


def encoding_sign_flipped(T, d_model):
    return _encoding(T, d_model, power=lambda i, d: -2 * i / d)


def encoding_integers(T, d_model):
    return torch.round(_encoding(T, d_model)).long()


def encoding_integer_division(T, d_model):
    """`2 * i // d_model` is 0 for every pair: all pairs turn at ω = 1."""
    t = torch.arange(T)[:, None]
    i = torch.arange(d_model // 2)
    omega = 1.0 / (10000 ** (2 * i // d_model))
    pe = torch.zeros(T, d_model)
    pe[:, 0::2] = torch.sin(t * omega)
    pe[:, 1::2] = torch.cos(t * omega)
    return pe


def encoding_linspace(T, d_model):
    """Exponents spread evenly from 0 to 1 instead of 0, 2/d, ..., (d-2)/d."""
    t = torch.arange(T, dtype=torch.float32)[:, None]
    omega = 10000 ** (-torch.linspace(0, 1, d_model // 2))
    pe = torch.zeros(T, d_model)
    pe[:, 0::2] = torch.sin(t * omega)
    pe[:, 1::2] = torch.cos(t * omega)
    return pe


def encoding_half(T, d_model):
    """Computed and returned in float16."""
    t = torch.arange(T, dtype=torch.float16)[:, None]
    i = torch.arange(d_model // 2, dtype=torch.float32)
    omega = (1.0 / (10000 ** (2 * i / d_model))).half()
    pe = torch.zeros(T, d_model, dtype=torch.float16)
    pe[:, 0::2] = torch.sin(t * omega)
    pe[:, 1::2] = torch.cos(t * omega)
    return pe


def encoding_scaled(T, d_model):
    """A bug no diagnosis describes: every value halved."""
    return 0.5 * _encoding(T, d_model)


def encoding_reversed(T, d_model):
    """The frequencies rise from pair to pair: the exponents were reversed."""
    return _encoding(T, d_model, power=lambda i, d: 2 * (d // 2 - 1 - i) / d)


def encoding_base_1000(T, d_model):
    t = torch.arange(T, dtype=torch.float32)[:, None]
    omega = 1000.0 ** (-2 * torch.arange(d_model // 2) / d_model)
    pe = torch.zeros(T, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(t * omega), torch.cos(t * omega)
    return pe


def encoding_fixed_width(T, d_model):
    """d_model = 32 of the classifier written into the frequencies."""
    t = torch.arange(T, dtype=torch.float32)[:, None]
    omega = 10000.0 ** (-2 * torch.arange(d_model // 2) / 32)
    pe = torch.zeros(T, d_model)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(t * omega), torch.cos(t * omega)
    return pe


def encoding_integer_table(T, d_model):
    """The table made as zeros_like of the integer positions: every sine cut to an integer."""
    t = torch.arange(T)[:, None]
    omega = 10000.0 ** (-2 * torch.arange(d_model // 2) / d_model)
    pe = torch.zeros_like(t.expand(T, d_model))
    pe[:, 0::2], pe[:, 1::2] = torch.sin(t * omega), torch.cos(t * omega)
    return pe


def encoding_squeezed(T, d_model):
    """Squeezes the table: for T = 1 the position axis is gone."""
    return _encoding(T, d_model).squeeze()


def encoding_capped(T, d_model, max_len=64):
    """A table precomputed for a fixed maximum length and cut to min(T, max_len) rows."""
    return _encoding(max_len, d_model)[:T]


ENCODING_BANKS = ExerciseBanks(
    solution=SOLUTION["sinusoidal_positional_encoding"],
    correct=[encoding_loops, encoding_stack, encoding_phase_shift],
    check=[
        (encoding_swapped, "swapped", "values"),
        (encoding_halves, "first half", "values"),
        (encoding_column_index, "twice too large", "values"),
        (encoding_missing_two, "lacks the factor 2", "values"),
        (encoding_sign_flipped, "wrong sign", "values"),
        (encoding_odd_own_index, "share", "values"),
        (encoding_from_one, "start at 1", "values"),
        (encoding_integer_division, "integer division", "values"),
        (encoding_linspace, "linspace", "values"),
        (encoding_batch_axis, "(T, 1, d_model)", "shape"),
        (encoding_transposed, "transposed", "shape"),
        (encoding_integers, "holds integers", "shape"),
        (encoding_half, "half precision", "shape"),
        (encoding_squeezed, "squeezed", "arguments"),
        (encoding_scaled, None, "values"),
        (encoding_reversed, "run the wrong way", "values"),
        (encoding_base_1000, "base is 1000", "values"),
        (encoding_fixed_width, "ignore d_model", "values"),
        (encoding_integer_table, "holds integers", "shape"),
        (encoding_capped, "stops short of T rows", "arguments"),
    ],
    hidden=[
        (encoding_swapped, "swapped", "values"),
        (encoding_halves, "sines fill the first half", "values"),
        (encoding_cos_halves, "cosines on the first half", "values"),
        (encoding_column_index, "too large", "values"),
        (encoding_missing_two, "too small", "values"),
        (encoding_sign_flipped, "wrong sign", "values"),
        (encoding_odd_own_index, "share", "values"),
        (encoding_from_one, "start at 1", "values"),
        (encoding_integer_division, "integer division", "values"),
        (encoding_linspace, "linspace", "values"),
        (encoding_batch_axis, "(T, 1, d_model)", "shape"),
        (encoding_transposed, "transposed", "shape"),
        (encoding_integers, "holds integers", "shape"),
        (encoding_half, "half precision", "shape"),
        (encoding_squeezed, "squeezed", "arguments"),
        (encoding_scaled, None, "values"),
        (encoding_reversed, "run the wrong way", "values"),
        (encoding_base_1000, "base is 1000", "values"),
        (encoding_fixed_width, "ignore d_model", "values"),
        (encoding_integer_table, "holds integers", "shape"),
        (encoding_capped, "stops short of T rows", "arguments"),
    ],
)


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

    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.dropout(self.attend(x, padding_mask)))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockFunctional(BlockBase):
    """Same maths, written with the layers' weights and torch.nn.functional."""

    def forward(self, x, padding_mask=None):
        attended, _ = self.attention(x, x, x, key_padding_mask=padding_mask)
        attended = F.dropout(attended, self.dropout.p, training=self.training)
        h = F.layer_norm(x + attended, (x.shape[-1],), self.norm_1.weight, self.norm_1.bias,
                         self.norm_1.eps)
        first, second = self.mlp[0], self.mlp[2]
        hidden = F.relu(h @ first.weight.T + first.bias)
        out = F.dropout(F.linear(hidden, second.weight, second.bias), self.dropout.p,
                        training=self.training)
        return self.norm_2(h + out)


class BlockFloatMask(BlockBase):
    """An additive -inf float mask instead of a boolean one."""

    def forward(self, x, padding_mask=None):
        mask = None
        if padding_mask is not None:
            mask = torch.zeros(padding_mask.shape, dtype=x.dtype, device=x.device).masked_fill(
                padding_mask, float("-inf"))
        h = self.norm_1(x + self.dropout(self.attention(x, x, x, key_padding_mask=mask,
                                                         need_weights=True)[0]))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockPerSequence(BlockBase):
    """One sequence at a time, cutting the padding off instead of masking it."""

    def forward(self, x, padding_mask=None):
        if padding_mask is None:
            padding_mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        rows = []
        for seq, pad in zip(x, padding_mask, strict=True):
            real = seq[~pad].unsqueeze(0)
            attended = torch.zeros_like(seq)
            attended[~pad] = self.attention(real, real, real)[0][0]
            # padded queries still attend to the real keys
            if pad.any():
                attended[pad] = self.attention(seq[pad].unsqueeze(0), real, real)[0][0]
            rows.append(attended)
        h = self.norm_1(x + self.dropout(torch.stack(rows)))
        return self.norm_2(h + self.dropout(self.mlp(h)))


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
        h = self.norm_1(x + self.dropout(self.attend(x, None)))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockInvertedMask(BlockBase):
    def forward(self, x, padding_mask=None):
        mask = None if padding_mask is None else ~padding_mask
        h = self.norm_1(x + self.dropout(self.attend(x, mask)))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockMaskKeywordRenamed(BlockBase):
    """Names the argument after PyTorch's: block(x, padding_mask=...) fails."""

    def forward(self, x, key_padding_mask=None):
        h = self.norm_1(x + self.dropout(self.attend(x, key_padding_mask)))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockNotBatchFirst(BlockBase):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
        super().__init__(d_model, n_heads, d_ff, dropout)
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)


class BlockAttentionWithoutDropout(BlockBase):
    """Forgets to pass the dropout on to nn.MultiheadAttention."""

    def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
        super().__init__(d_model, n_heads, d_ff, dropout)
        self.attention = nn.MultiheadAttention(d_model, n_heads, batch_first=True)


class BlockFixedDropout(BlockBase):
    """A dropout probability written in by hand instead of the argument."""

    def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
        super().__init__(d_model, n_heads, d_ff, dropout)
        self.dropout = nn.Dropout(0.1)


class BlockReturnsTuple(BlockBase):
    def forward(self, x, padding_mask=None):
        attended = self.attention(x, x, x, key_padding_mask=padding_mask)
        return attended


class BlockGeluMlp(BlockBase):
    def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
        super().__init__(d_model, n_heads, d_ff, dropout)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))


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


class BlockSharedNorm(BlockBase):
    """One LayerNorm under both names: the two add & norm steps share their weights."""

    def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
        super().__init__(d_model, n_heads, d_ff, dropout)
        self.norm_1 = self.norm_2 = nn.LayerNorm(d_model)


class BlockNorm1Twice(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.dropout(self.attend(x, padding_mask)))
        return self.norm_1(h + self.dropout(self.mlp(h)))


class BlockNorm2Twice(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_2(x + self.dropout(self.attend(x, padding_mask)))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockMlpOnX(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.dropout(self.attend(x, padding_mask)))
        return self.norm_2(h + self.dropout(self.mlp(x)))


class BlockResidualFromX(BlockBase):
    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.dropout(self.attend(x, padding_mask)))
        return self.norm_2(x + self.dropout(self.mlp(h)))


class BlockGeluInForward(BlockBase):
    """The members are right, but forward applies GELU between the MLP's linear maps."""

    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.dropout(self.attend(x, padding_mask)))
        return self.norm_2(h + self.dropout(self.mlp[2](F.gelu(self.mlp[0](h)))))


class BlockSqueezed(BlockBase):
    """Squeezes the output: a batch of one loses its batch axis."""

    def forward(self, x, padding_mask=None):
        return super().forward(x, padding_mask).squeeze()


class BlockMaskAsNumbers(BlockBase):
    """Turns the boolean mask into 0/1 floats, which the attention adds to its scores."""

    def forward(self, x, padding_mask=None):
        mask = None if padding_mask is None else padding_mask.float()
        return super().forward(x, mask)


class BlockDropoutDrawnOnce(BlockBase):
    """Draws its dropout mask on the first call and keeps it."""

    def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
        super().__init__(d_model, n_heads, d_ff, dropout)
        self.kept = None

    def forward(self, x, padding_mask=None):
        attended = self.attend(x, padding_mask)
        if not self.training or self.dropout.p == 0:
            return super().forward(x, padding_mask)
        if self.kept is None or self.kept.shape != attended.shape:
            p = self.dropout.p
            keep = torch.rand_like(attended) > p
            self.kept = keep.to(attended.dtype) / (1 - p) if p < 1 else torch.zeros_like(attended)
        h = self.norm_1(x + attended * self.kept)
        return self.norm_2(h + self.mlp(h) * self.kept)


class BlockScaledResidual(BlockBase):
    """A bug no diagnosis describes: the residual counted twice."""

    def forward(self, x, padding_mask=None):
        h = self.norm_1(2 * x + self.attend(x, padding_mask))
        return self.norm_2(h + self.mlp(h))


class BlockDropoutAfterAdd(BlockBase):
    """Dropout on the residual sum instead of the sub-layer's output."""

    def forward(self, x, padding_mask=None):
        h = self.norm_1(self.dropout(x + self.attend(x, padding_mask)))
        return self.norm_2(self.dropout(h + self.mlp(h)))


class BlockDropoutAfterNorm(BlockBase):
    """Dropout on each add & norm's normalised output."""

    def forward(self, x, padding_mask=None):
        h = self.dropout(self.norm_1(x + self.attend(x, padding_mask)))
        return self.dropout(self.norm_2(h + self.mlp(h)))


class BlockFloatMaskOnCpu(BlockBase):
    """The additive -inf mask built with torch.zeros without device=: on a GPU it sits on the
    CPU."""

    def forward(self, x, padding_mask=None):
        mask = None
        if padding_mask is not None:
            mask = torch.zeros(padding_mask.shape, dtype=x.dtype).masked_fill(padding_mask,
                                                                              float("-inf"))
        h = self.norm_1(x + self.dropout(self.attention(x, x, x, key_padding_mask=mask)[0]))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockMaskToCpu(BlockBase):
    """Moves the padding mask to the CPU "to be safe": on a GPU the attention fails."""

    def attend(self, x, padding_mask):
        mask = None if padding_mask is None else padding_mask.cpu()
        return self.attention(x, x, x, key_padding_mask=mask)[0]


class BlockDropoutOnInput(BlockBase):
    """Dropout on the block's input, as an embedding layer would have it."""

    def forward(self, x, padding_mask=None):
        x = self.dropout(x)
        h = self.norm_1(x + self.attend(x, padding_mask))
        return self.norm_2(h + self.mlp(h))


class BlockDropoutUnused(BlockBase):
    """Creates the dropout layer and never uses it."""

    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.attend(x, padding_mask))
        return self.norm_2(h + self.mlp(h))


class BlockDropoutAlwaysOn(BlockBase):
    """F.dropout's `training` defaults to True: dropout in eval mode too."""

    def forward(self, x, padding_mask=None):
        p = self.dropout.p
        h = self.norm_1(x + F.dropout(self.attend(x, padding_mask), p))
        return self.norm_2(h + F.dropout(self.mlp(h), p))


class BlockReseeds(BlockBase):
    """Seeds the generator in forward "for reproducibility": the same dropout every call."""

    def forward(self, x, padding_mask=None):
        torch.manual_seed(0)
        return super().forward(x, padding_mask)


class BlockReseedsWithInitialSeed(BlockBase):
    """Reseeds with the seed already set, "to stay reproducible": every training call
    reuses one dropout mask."""

    def forward(self, x, padding_mask=None):
        torch.manual_seed(torch.initial_seed())
        return super().forward(x, padding_mask)


class BlockDetached(BlockBase):
    """Detaches the attention's output: its weights never learn."""

    def forward(self, x, padding_mask=None):
        attended = self.attend(x, padding_mask).detach()
        h = self.norm_1(x + self.dropout(attended))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockDetachedResidual(BlockBase):
    """Right values and every weight learns, but the residual path to x is cut."""

    def forward(self, x, padding_mask=None):
        h = self.norm_1(x.detach() + self.dropout(self.attend(x, padding_mask)))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockInPlace(BlockBase):
    """Adds the residual into the input tensor itself."""

    def forward(self, x, padding_mask=None):
        x += self.dropout(self.attend(x, padding_mask))
        h = self.norm_1(x)
        return self.norm_2(h + self.dropout(self.mlp(h)))


def as_cell(source: str, name: str):
    """``name`` defined from ``source`` as a notebook cell of this tutorial would define it."""
    return notebook_cell(source, name, {"torch": torch, "nn": nn, "F": F, "BlockBase": BlockBase}, cell=16)


BlockAttnMask = as_cell("""
class BlockAttnMask(BlockBase):
    \"\"\"The (B, T) padding mask passed as attn_mask: PyTorch fails with a reshape error.\"\"\"

    def forward(self, x, padding_mask=None):
        attended = self.attention(x, x, x, attn_mask=padding_mask)[0]
        h = self.norm_1(x + self.dropout(attended))
        return self.norm_2(h + self.dropout(self.mlp(h)))
""", "BlockAttnMask")


class BlockMaskChangedInPlace(BlockBase):
    """Unmasks the first position in the caller's mask "so that no row is all padding"."""

    def forward(self, x, padding_mask=None):
        if padding_mask is not None:
            padding_mask[:, 0] = False
        return super().forward(x, padding_mask)


class BlockMaskSwallowed(BlockBase):
    """Names the parameter `mask`; `**kwargs` swallows padding_mask= passed by keyword."""

    def forward(self, x, mask=None, **kwargs):
        return super().forward(x, mask)


class BlockMaskOnlyInTraining(BlockBase):
    """Passes the mask only in training mode ("padding matters only during training")."""

    def forward(self, x, padding_mask=None):
        return super().forward(x, padding_mask if self.training else None)


class BlockMaskOnlyInEval(BlockBase):
    """Passes the mask only in eval mode ("the mask is for inference")."""

    def forward(self, x, padding_mask=None):
        return super().forward(x, None if self.training else padding_mask)


class BlockTrainingBranchUnmasked(BlockBase):
    """A training-mode branch that calls the attention without the mask."""

    def forward(self, x, padding_mask=None):
        if self.training:
            attended, _ = self.attention(x, x, x)
        else:
            attended, _ = self.attention(x, x, x, key_padding_mask=padding_mask,
                                         need_weights=False)
        h = self.norm_1(x + self.dropout(attended))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockAttnMaskAnywhere(BlockBase):
    """The padding mask as attn_mask, in code whose lines the check cannot read."""

    def forward(self, x, padding_mask=None):
        attended, _ = self.attention(x, x, x, attn_mask=padding_mask)
        h = self.norm_1(x + self.dropout(attended))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockPairNotUnpacked(BlockBase):
    """Forgets that nn.MultiheadAttention returns (output, weights)."""

    def forward(self, x, padding_mask=None):
        attended = self.attention(x, x, x, key_padding_mask=padding_mask)
        h = self.norm_1(x + self.dropout(attended))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockCausal(BlockBase):
    """Adds a causal mask, as GPT code does."""

    def forward(self, x, padding_mask=None):
        T = x.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        attended = self.attention(x, x, x, key_padding_mask=padding_mask, attn_mask=causal)[0]
        h = self.norm_1(x + self.dropout(attended))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockNormEps(BlockBase):
    """LayerNorm(d_model, eps=1e-6), copied from another codebase."""

    def __init__(self, d_model, n_heads, d_ff, dropout=0.0):
        super().__init__(d_model, n_heads, d_ff, dropout)
        self.norm_1 = nn.LayerNorm(d_model, eps=1e-6)
        self.norm_2 = nn.LayerNorm(d_model, eps=1e-6)


class BlockDropoutAttentionOnly(BlockBase):
    """Dropout on the attention's output only; the MLP's output is not dropped."""

    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.dropout(self.attend(x, padding_mask)))
        return self.norm_2(h + self.mlp(h))


class BlockDropoutMlpOnly(BlockBase):
    """Dropout on the MLP's output only."""

    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.attend(x, padding_mask))
        return self.norm_2(h + self.dropout(self.mlp(h)))


class BlockDropoutOnSublayerInputs(BlockBase):
    """Dropout on what each sub-layer reads, the residual keeping the undropped input."""

    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.attend(self.dropout(x), padding_mask))
        return self.norm_2(h + self.mlp(self.dropout(h)))


class BlockDropoutFixedInForward(BlockBase):
    """A new nn.Dropout(0.1) made in forward, ignoring the dropout argument."""

    def forward(self, x, padding_mask=None):
        drop = nn.Dropout(0.1)
        drop.train(self.training)
        h = self.norm_1(x + drop(self.attend(x, padding_mask)))
        return self.norm_2(h + drop(self.mlp(h)))


class BlockSharedDropoutMask(BlockBase):
    """One dropout mask per call, reused for both sub-layer outputs."""

    def forward(self, x, padding_mask=None):
        keep = self.dropout(torch.ones_like(x))
        h = self.norm_1(x + keep * self.attend(x, padding_mask))
        return self.norm_2(h + keep * self.mlp(h))


class _OwnDropout(BlockBase):
    """A hand-written dropout (``drop``) instead of self.dropout, on the right outputs."""

    def forward(self, x, padding_mask=None):
        h = self.norm_1(x + self.drop(self.attend(x, padding_mask)))
        return self.norm_2(h + self.drop(self.mlp(h)))


class BlockDropoutDoubleP(_OwnDropout):
    """Drops with probability 2p."""

    def drop(self, a):
        return F.dropout(a, min(1.0, 2 * self.dropout.p), self.training)


class BlockDropoutNoRescale(_OwnDropout):
    """Zeroes with probability p but forgets the 1/(1-p) rescale."""

    def drop(self, a):
        return a * (torch.rand_like(a) >= self.dropout.p) if self.training else a


class BlockDropoutBatchShared(_OwnDropout):
    """One mask for the whole batch, broadcast over its sentences."""

    def drop(self, a):
        p = self.dropout.p
        if not self.training or p == 0:
            return a
        return a * 0 if p >= 1 else a * (torch.rand_like(a[:1]) >= p) / (1 - p)


class BlockDropoutSquaredRescale(_OwnDropout):
    """Rescales the kept values by 1/(1-p)**2."""

    def drop(self, a):
        p = self.dropout.p
        if not self.training or p == 0:
            return a
        return a * 0 if p >= 1 else a * (torch.rand_like(a) >= p) / (1 - p) ** 2


NEW_BLOCK_MISTAKES = [
    (BlockAttnMask, "passed as attn_mask", "padding"),
    (BlockMaskChangedInPlace, "in place", "unchanged"),
    (BlockMaskSwallowed, "passed by keyword", "padding"),
    (BlockMaskOnlyInTraining, "in eval mode", "padding"),
    (BlockMaskOnlyInEval, "in training mode (block.train()", "padding"),
    (BlockTrainingBranchUnmasked, "in training mode (block.train()", "padding"),
    (BlockAttnMaskAnywhere, "passed as attn_mask", "padding"),
    (BlockPairNotUnpacked, "unpack it first", "values"),
    (BlockCausal, "causal mask", "values"),
    (BlockNormEps, "another eps", "members"),
    (BlockDropoutAttentionOnly, "attention's output only", "dropout"),
    (BlockDropoutMlpOnly, "MLP's output only", "dropout"),
    (BlockDropoutOnSublayerInputs, "sub-layers' inputs", "dropout"),
    (BlockDropoutFixedInForward, "not the one passed in", "dropout"),
    (BlockSharedDropoutMask, "one and the same dropout mask", "dropout"),
    (BlockDropoutDoubleP, "does not match nn.Dropout(p)", "dropout"),
    (BlockDropoutNoRescale, "does not match nn.Dropout(p)", "dropout"),
    (BlockDropoutBatchShared, "does not match nn.Dropout(p)", "dropout"),
    (BlockDropoutSquaredRescale, "does not match nn.Dropout(p)", "dropout"),
    (BlockDropoutAfterNorm, "returned zeros", "dropout"),
    (BlockMaskToCpu, "moved to the CPU", "device"),
    (BlockFloatMaskOnCpu, "without device=", "device"),
]

BLOCK_BANKS = ExerciseBanks(
    solution=SOLUTION["TransformerBlock"],
    correct=[BlockBase, BlockFunctional, BlockFloatMask, BlockPerSequence],
    check=[
        (BlockResidualAfterNorm, "normalised before the add", "values"),
        (BlockNoMlpResidual, "MLP sub-layer has no residual", "values"),
        (BlockNorm1Twice, "norm_1 normalises both", "values"),
        (BlockNorm2Twice, "norm_2 normalises both", "values"),
        (BlockMlpOnX, "reads the block's input x", "values"),
        (BlockResidualFromX, "second residual adds", "values"),
        (BlockGeluInForward, "GELU", "values"),
        (BlockSqueezed, "squeezed", "values"),
        (BlockSharedNorm, "one and the same layer", "members"),
        (BlockMaskAsNumbers, "turned into numbers", "padding"),
        (BlockDropoutDrawnOnce, "drawn once", "dropout"),
        (BlockNormsSwapped, "swapped", "values"),
        (BlockPreNorm, "pre-norm", "values"),
        (BlockNoFinalNorm, "final norm_2 is missing", "values"),
        (BlockReturnsTuple, "(output, weights)", "values"),
        (BlockScaledResidual, None, "values"),
        (BlockIgnoresMask, "does not reach the attention", "padding"),
        (BlockInvertedMask, "inverted", "padding"),
        (BlockMaskKeywordRenamed, None, "padding"),
        (BlockNotBatchFirst, "batch_first", "members"),
        (BlockGeluMlp, None, "members"),
        (BlockAttentionWithoutDropout, "not passed on", "members"),
        (BlockFixedDropout, "ignores the dropout argument", "members"),
        (BlockDropoutAfterAdd, "every token came out the same", "dropout"),
        (BlockDropoutOnInput, "every token came out the same", "dropout"),
        (BlockDropoutUnused, "never acted", "dropout"),
        (BlockDropoutAlwaysOn, "also acts in eval mode", "dropout"),
        (BlockReseeds, "reseeds", "dropout"),
        (BlockReseedsWithInitialSeed, "reseeds", "dropout"),
        (BlockDetached, "cut off from the gradient", "gradients"),
        (BlockDetachedResidual, "the gradient that reaches x is not the block's", "gradients"),
        (BlockInPlace, "in place", "unchanged"),
        (BlockMlpFirst, "MLP comes first", "values"),
        *NEW_BLOCK_MISTAKES,
    ],
    hidden=[
        (BlockResidualAfterNorm, "residual added after the norm", "values"),
        (BlockNoResidual, "residual connections missing", "values"),
        (BlockNoAttentionResidual, "missing around the attention", "values"),
        (BlockNoMlpResidual, "missing around the MLP", "values"),
        (BlockNormsSwapped, "norm_1 and norm_2 swapped", "values"),
        (BlockNorm1Twice, "norm_1 normalises both", "values"),
        (BlockNorm2Twice, "norm_2 normalises both", "values"),
        (BlockSharedNorm, "norm_2 normalises both", "values"),
        (BlockMlpOnX, "reads the block's input x", "values"),
        (BlockResidualFromX, "second residual adds", "values"),
        (BlockGeluInForward, "GELU", "values"),
        (BlockSqueezed, "squeezed", "values"),
        (BlockMaskAsNumbers, "turned into numbers", "padding"),
        (BlockDropoutDrawnOnce, "drawn once", "dropout"),
        (BlockMlpFirst, "MLP applied before attention:", "values"),
        (BlockMlpFirstNormsSwapped, "MLP applied before attention (attention", "values"),
        (BlockPreNorm, "pre-norm", "values"),
        (BlockNoFinalNorm, "final norm_2", "values"),
        (BlockOnlyAttention, "only one add & norm", "values"),
        (BlockReturnsTuple, "(output, weights)", "values"),
        (BlockScaledResidual, None, "values"),
        (BlockIgnoresMask, "padding mask ignored", "padding"),
        (BlockInvertedMask, "padding mask inverted", "padding"),
        (BlockMaskKeywordRenamed, None, "padding"),
        (BlockNotBatchFirst, "batch_first", "members"),
        (BlockGeluMlp, None, "members"),
        (BlockAttentionWithoutDropout, "not passed on", "members"),
        (BlockFixedDropout, "ignores the dropout argument", "members"),
        (BlockDropoutAfterAdd, "every token came out the same", "dropout"),
        (BlockDropoutOnInput, "every token came out the same", "dropout"),
        (BlockDropoutUnused, "never acted", "dropout"),
        (BlockDropoutAlwaysOn, "also acts in eval mode", "dropout"),
        (BlockReseeds, "reseeds", "dropout"),
        (BlockReseedsWithInitialSeed, "reseeds", "dropout"),
        (BlockDetached, "cut off from the gradient", "gradients"),
        (BlockDetachedResidual, "the gradient that reaches x is not the block's", "gradients"),
        (BlockInPlace, "in place", "unchanged"),
        *NEW_BLOCK_MISTAKES,
    ],
)


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


def test_dropout_after_the_add_fails_the_self_check_in_plain_words():
    """A student's mistake: dropout placed after the add, which no check with dropout
    switched off can see."""
    message = failure(check_TransformerBlock, BlockDropoutAfterAdd)
    assert "dropout=1" in message and "before the add" in diagnosis(message)


# ---- mean_pool ----------------------------------------------------------------------------------

def pool_loop(h, padding_mask=None):
    if padding_mask is None:
        return h.mean(dim=1)
    return torch.stack([seq[~pad].mean(dim=0) for seq, pad in zip(h, padding_mask, strict=True)])


def pool_einsum(h, padding_mask=None):
    if padding_mask is None:
        padding_mask = torch.zeros(h.shape[:2], dtype=torch.bool, device=h.device)
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


def pool_over_batch(h, padding_mask=None):
    return h.mean(dim=0)


def pool_squeezed(h, padding_mask=None):
    """Squeezes the result: a batch of one loses its batch axis."""
    if padding_mask is None:
        return h.mean(dim=1).squeeze()
    keep = (~padding_mask).unsqueeze(-1).to(h.dtype)
    return ((h * keep).sum(dim=1) / keep.sum(dim=1)).squeeze()


def pool_float32_buffer(h, padding_mask=None):
    """A loop that fills a float32 buffer: float64 inputs come back float32."""
    if padding_mask is None:
        padding_mask = torch.zeros(h.shape[:2], dtype=torch.bool)
    out = torch.zeros(h.shape[0], h.shape[2])
    for i in range(h.shape[0]):
        out[i] = h[i][~padding_mask[i]].mean(dim=0)
    return out


def pool_no_grad(h, padding_mask=None):
    """Pooling has no weights, so the student switched gradients off."""
    with torch.no_grad():
        return SOLUTION["mean_pool"](h, padding_mask)


def pool_numpy(h, padding_mask=None):
    """A NumPy round trip: cut off from the graph, and float32 in gives float64 out."""
    values = h.detach().cpu().numpy()
    if padding_mask is None:
        return torch.from_numpy(values.mean(axis=1))
    keep = (~padding_mask).cpu().numpy()[..., None]
    return torch.from_numpy((values * keep).sum(1) / keep.sum(1))


def pool_double_mask(h, padding_mask=None):
    """The mask made float64: float32 in, float64 out."""
    if padding_mask is None:
        return h.mean(dim=1)
    keep = (~padding_mask).unsqueeze(-1).double()
    return (h * keep).sum(dim=1) / keep.sum(dim=1)


def pool_float64_lengths(h, padding_mask=None):
    """Lengths rebuilt as a float64 tensor: float32 in, float64 out."""
    if padding_mask is None:
        return h.mean(dim=1)
    keep = ~padding_mask
    lengths = torch.tensor(keep.sum(dim=1).tolist(), dtype=torch.float64)
    return (h * keep.unsqueeze(-1)).sum(dim=1) / lengths[:, None]


def pool_cpu_mask(h, padding_mask=None):
    """Builds the all-False mask on the CPU when none is given."""
    if padding_mask is None:
        padding_mask = torch.zeros(h.shape[0], h.shape[1], dtype=torch.bool)
    keep = (~padding_mask).unsqueeze(-1).to(h.dtype)
    return (h * keep).sum(dim=1) / keep.sum(dim=1)


def pool_float_mask(h, padding_mask=None):
    """The mask made float32 with .float(): type promotion hides it for float32 and float64
    inputs, a bfloat16 h comes back float32."""
    if padding_mask is None:
        return h.mean(dim=1)
    keep = (~padding_mask).float().unsqueeze(-1)
    return (h * keep).sum(dim=1) / keep.sum(dim=1)


def pool_padding_count(h, padding_mask=None):
    """Divides by the number of padded positions instead of the real ones."""
    if padding_mask is None:
        return h.mean(dim=1)
    keep = (~padding_mask).to(h.dtype).unsqueeze(-1)
    return (h * keep).sum(1) / padding_mask.to(h.dtype).sum(1, keepdim=True).clamp(min=1)


def pool_whole_batch(h, padding_mask=None):
    """h[~padding_mask] flattens the batch: one mean for every sequence."""
    if padding_mask is None:
        return h.mean(dim=1)
    return h[~padding_mask].mean(dim=0).expand(h.shape[0], -1)


def pool_mask_without_axis(h, padding_mask=None):
    """The (B, T) mask multiplied into (B, T, d) without a trailing axis."""
    if padding_mask is None:
        return h.mean(dim=1)
    keep = (~padding_mask).to(h.dtype)
    return (h * keep).sum(dim=1) / keep.sum(dim=1, keepdim=True)


def pool_mean_everything(h, padding_mask=None):
    """h.mean() without a dim: one number for the whole batch."""
    if padding_mask is None:
        return h.mean()
    keep = (~padding_mask).unsqueeze(-1).to(h.dtype)
    return (h * keep).sum(dim=1) / keep.sum(dim=1)


def pool_sums_padding(h, padding_mask=None):
    """Sums every position, padding included (as if padded vectors were zero), and divides
    by the number of real tokens."""
    if padding_mask is None:
        return h.mean(dim=1)
    return h.sum(dim=1) / (~padding_mask).sum(dim=1, keepdim=True).to(h.dtype)


def pool_shifted(h, padding_mask=None):
    """A bug no diagnosis describes."""
    return SOLUTION["mean_pool"](h, padding_mask) + 0.1


POOL_BANKS = ExerciseBanks(
    solution=SOLUTION["mean_pool"],
    correct=[pool_loop, pool_einsum, pool_masked_fill, pool_nanmean],
    check=[
        (pool_ignores_mask, "mask was ignored", "padding"),
        (pool_divides_by_T, "divided by T", "padding"),
        (pool_sums, None, "padding"),
        (pool_inverted, "inverted", "padding"),
        (pool_prefix, "first L positions", "padding"),
        (pool_wrong_axis, "over the features", "shape"),
        (pool_over_batch, "over the batch", "shape"),
        (pool_squeezed, "squeezed", "shape"),
        (pool_in_place, "in place", "unchanged"),
        (pool_sum_no_mask, "summed over time", "values"),
        (pool_shifted, None, "values"),
        (pool_float32_buffer, "dtype", "dtype"),
        (pool_double_mask, "dtype", "dtype"),
        (pool_float64_lengths, "dtype", "dtype"),
        (pool_cpu_mask, "device=", "device"),
        (pool_no_grad, "cut off from h", "gradients"),
        (pool_numpy, "cut off from h", "gradients"),
        (pool_float_mask, "dtype was fixed to float32", "dtype"),
        (pool_padding_count, "divisor counts the padding", "padding"),
        (pool_whole_batch, "whole batch", "padding"),
        (pool_mask_without_axis, "trailing axis", "shape"),
        (pool_mean_everything, "every axis", "shape"),
        (pool_sums_padding, "padded vectors were summed in", "padding"),
    ],
    hidden=[
        (pool_ignores_mask, "averages the padding", "padding"),
        (pool_divides_by_T, "divided by T", "padding"),
        (pool_sums, "without dividing", "padding"),
        (pool_inverted, "inverted", "padding"),
        (pool_prefix, "real tokens come first", "padding"),
        (pool_wrong_axis, "over the features", "shape"),
        (pool_over_batch, "over the batch", "shape"),
        (pool_squeezed, "squeezed", "shape"),
        (pool_in_place, "in place", "unchanged"),
        (pool_sum_no_mask, "summed over time", "values"),
        (pool_shifted, None, "values"),
        (pool_float32_buffer, "dtype", "dtype"),
        (pool_double_mask, "dtype", "dtype"),
        (pool_float64_lengths, "dtype", "dtype"),
        (pool_numpy, "dtype", "dtype"),
        (pool_cpu_mask, "device=", "device"),
        (pool_padding_count, "divisor counts the padding", "padding"),
        (pool_whole_batch, "whole batch", "padding"),
        (pool_mask_without_axis, "trailing axis", "shape"),
        (pool_mean_everything, "every axis", "shape"),
        (pool_sums_padding, "padded vectors were summed in", "padding"),
    ],
)

BANKS = {"sinusoidal_positional_encoding": ENCODING_BANKS, "TransformerBlock": BLOCK_BANKS,
         "mean_pool": POOL_BANKS}


def test_blank_pool_scores_zero():
    with pytest.raises(NotImplementedError):
        grade_mean_pool(not_implemented)

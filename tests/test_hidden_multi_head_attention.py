"""Hidden tests and self-checks of tutorial 03 against the solution, common mistakes and other
correct answers (``BANKS``, run by tests/test_contracts.py), and a few special cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from mutation import ExerciseBanks, assert_fails_naming, diagnosis, failure
from notebook_code import as_cell, solution_namespace
from torch import nn

from helpers.checks.multi_head_attention import (
    check_merge_heads,
    check_MultiHeadSelfAttention,
    check_split_heads,
)
from hidden_tests.multi_head_attention import (
    grade_merge_heads,
    grade_MultiHeadSelfAttention,
    grade_split_heads,
)

SOLUTION = solution_namespace("03_multi_head_attention")
split_heads = SOLUTION["split_heads"]
merge_heads = SOLUTION["merge_heads"]
Solution = SOLUTION["MultiHeadSelfAttention"]


def not_implemented(*args, **kwargs):
    raise NotImplementedError


# ---- split_heads ------------------------------------------------------------------------------

def split_permute(x, n_heads):
    B, T, D = x.shape
    return x.reshape(B, T, n_heads, -1).permute(0, 2, 1, 3)


def split_unflatten(x, n_heads):
    return x.unflatten(-1, (n_heads, x.shape[-1] // n_heads)).transpose(-3, -2)


def split_chunks(x, n_heads):
    return torch.stack(x.chunk(n_heads, dim=-1), dim=1)


def split_loop(x, n_heads):
    dh = x.shape[-1] // n_heads
    return torch.stack([x[..., h * dh:(h + 1) * dh] for h in range(n_heads)], dim=1)


def split_einsum(x, n_heads):
    B, T, D = x.shape
    return torch.einsum("bthd->bhtd", x.view(B, T, n_heads, D // n_heads))


def split_no_transpose(x, n_heads):
    B, T, D = x.shape
    return x.view(B, n_heads, T, D // n_heads)


def split_round_robin(x, n_heads):
    B, T, D = x.shape
    return x.view(B, T, D // n_heads, n_heads).permute(0, 3, 1, 2)


def split_forgot_transpose(x, n_heads):
    B, T, D = x.shape
    return x.view(B, T, n_heads, D // n_heads)


def split_off_by_one(x, n_heads):
    """A bug no diagnosis describes: the positions are rolled."""
    return split_heads(x, n_heads).roll(1, dims=2)


def split_resize_in_place(x, n_heads):
    """resize_ taken for reshape: it changes the caller's tensor."""
    B, T, D = x.shape
    return x.resize_(B, T, n_heads, D // n_heads).transpose(1, 2)


def split_squeezed(x, n_heads):
    """A .squeeze() 'to be safe': drops the head axis of one head, the channel axis of
    one-channel heads."""
    B, T, D = x.shape
    return x.view(B, T, n_heads, D // n_heads).transpose(1, 2).squeeze()


def split_float(x, n_heads):
    """`.float()` "to be safe": a float64 input comes back as float32."""
    B, T, D = x.shape
    return x.float().view(B, T, n_heads, D // n_heads).transpose(1, 2)


def split_detached(x, n_heads):
    B, T, D = x.shape
    return x.detach().view(B, T, n_heads, D // n_heads).transpose(1, 2)


def split_through_numpy(x, n_heads):
    """A round trip through NumPy: the numbers are right, but they leave x's device (the
    device check stops it first) and the link to x is gone."""
    B, T, D = x.shape
    moved = x.detach().cpu().numpy().reshape(B, T, n_heads, D // n_heads).swapaxes(1, 2)
    return torch.from_numpy(moved.copy())


def split_cpu_buffer(x, n_heads):
    """The result copied into a buffer made with torch.empty: on the CPU, whatever x is on."""
    B, T, D = x.shape
    out = torch.empty(B, n_heads, T, D // n_heads, dtype=x.dtype)
    out.copy_(x.view(B, T, n_heads, D // n_heads).transpose(1, 2))
    return out


SPLIT_BANKS = ExerciseBanks(
    solution=split_heads,
    correct=[split_permute, split_unflatten, split_chunks, split_einsum],
    check=[
        (split_forgot_transpose, "were not swapped", "shape"),
        (split_no_transpose, "without a transpose", "values"),
        (split_round_robin, "round-robin", "values"),
        (split_off_by_one, None, "values"),
        (split_squeezed, "axis of size 1 was dropped", "arguments"),
        (split_resize_in_place, "in place", "unchanged"),
        (split_float, "converted to another dtype", "dtype"),
        (split_cpu_buffer, "without device=", "device"),
        (split_loop, "Python loop", "no_loop"),
        (split_detached, "cut off from x", "differentiable"),
        (split_through_numpy, "moved to the CPU", "device"),
    ],
    hidden=[
        (split_forgot_transpose, "were not swapped", "shape"),
        (split_no_transpose, "without a transpose", "values"),
        (split_round_robin, "round-robin", "values"),
        (split_off_by_one, None, "values"),
        (split_squeezed, "axis of size 1 was dropped", "arguments"),
        (split_resize_in_place, "in place", "unchanged"),
        (split_float, "converted to another dtype", "dtype"),
        (split_cpu_buffer, "without device=", "device"),
    ],
)


def test_a_loop_over_heads_passes_the_hidden_test_the_grade_is_for_the_numbers():
    grade_split_heads(split_loop)
    grade_merge_heads(merge_loop)


def test_blank_split_propagates():
    with pytest.raises(NotImplementedError):
        grade_split_heads(not_implemented)
    with pytest.raises(NotImplementedError):
        check_split_heads(not_implemented)


# ---- merge_heads ------------------------------------------------------------------------------

def merge_contiguous_view(x):
    B, H, T, dh = x.shape
    return x.permute(0, 2, 1, 3).contiguous().view(B, T, H * dh)


def merge_cat(x):
    return torch.cat(x.unbind(dim=1), dim=-1)


def merge_flatten(x):
    return x.transpose(1, 2).flatten(start_dim=2)


def merge_loop(x):
    B, H, T, dh = x.shape
    out = x.new_empty(B, T, H * dh)
    for h in range(H):
        out[:, :, h * dh:(h + 1) * dh] = x[:, h]
    return out


def merge_no_transpose(x):
    B, H, T, dh = x.shape
    return x.reshape(B, T, H * dh)


def merge_interleaved(x):
    B, H, T, dh = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, H * dh)


def merge_not_joined(x):
    return x.transpose(1, 2)


def merge_transpose_in_place(x):
    """transpose_ to save a copy: it turns the caller's tensor around."""
    B, H, T, dh = x.shape
    return x.transpose_(1, 2).reshape(B, T, H * dh)


def merge_rolled(x):
    """A bug no diagnosis describes."""
    return merge_heads(x).roll(1, dims=1)


def merge_squeezed(x):
    """A .squeeze() "to tidy up": a batch of one with one head loses its batch axis."""
    B, H, T, dh = x.shape
    return x.transpose(1, 2).reshape(B, T, H * dh).squeeze()


def merge_float(x):
    B, H, T, dh = x.shape
    return x.transpose(1, 2).float().reshape(B, T, H * dh)


def merge_detached(x):
    B, H, T, dh = x.shape
    return x.detach().transpose(1, 2).reshape(B, T, H * dh)


def merge_through_numpy(x):
    """A round trip through NumPy, back on x's device: the numbers leave it on the way (the
    device check stops it first) and the link to x is gone."""
    B, H, T, dh = x.shape
    moved = x.detach().cpu().numpy().swapaxes(1, 2).reshape(B, T, H * dh)
    return torch.from_numpy(moved).to(x.device)


def merge_cpu_zeros(x):
    """The heads added onto torch.zeros(...): made on the CPU, whatever x is on."""
    B, H, T, dh = x.shape
    return torch.zeros(B, T, H * dh, dtype=x.dtype) + x.transpose(1, 2).reshape(B, T, H * dh)


def merge_wrong_axes(x):
    """transpose(1, 3) where transpose(1, 2) was meant: heads and channels exchanged."""
    B, H, T, dh = x.shape
    return x.transpose(1, 3).reshape(B, T, H * dh)


def merge_numpy_on_the_cpu(x):
    """A round trip through NumPy without .cpu(): fails for a tensor on a GPU."""
    B, H, T, dh = x.shape
    return torch.from_numpy(x.numpy().swapaxes(1, 2).reshape(B, T, H * dh))


MERGE_BANKS = ExerciseBanks(
    solution=merge_heads,
    correct=[merge_contiguous_view, merge_cat, merge_flatten],
    check=[
        (merge_not_joined, "not joined", "shape"),
        (merge_squeezed, "axis of size 1 was dropped", "shape"),
        (merge_no_transpose, "without moving the time axis back", "values"),
        (merge_interleaved, "interleaved", "values"),
        (merge_wrong_axes, "wrong axes were swapped", "values"),
        (merge_rolled, None, "values"),
        (merge_transpose_in_place, "in place", "unchanged"),
        (merge_float, "converted to another dtype", "dtype"),
        (merge_cpu_zeros, "without device=", "device"),
        (merge_numpy_on_the_cpu, "holds CPU tensors only", "device"),
        (merge_loop, "Python loop", "no_loop"),
        (merge_detached, "cut off from x", "differentiable"),
        (merge_through_numpy, "moved to the CPU", "device"),
    ],
    hidden=[
        (merge_not_joined, "not joined", "shape"),
        (merge_squeezed, "axis of size 1 was dropped", "shape"),
        (merge_no_transpose, "without transposing back", "values"),
        (merge_interleaved, "wrong order", "values"),
        (merge_wrong_axes, "wrong axes were swapped", "values"),
        (merge_rolled, None, "values"),
        (merge_transpose_in_place, "in place", "unchanged"),
        (merge_float, "converted to another dtype", "dtype"),
        (merge_cpu_zeros, "without device=", "device"),
        (merge_numpy_on_the_cpu, "holds CPU tensors only", "device"),
    ],
)


def test_split_then_merge_round_trip():
    x = torch.randn(3, 5, 12)
    assert torch.equal(merge_heads(split_heads(x, 4)), x)


def test_blank_merge_propagates():
    with pytest.raises(NotImplementedError):
        grade_merge_heads(not_implemented)
    with pytest.raises(NotImplementedError):
        check_merge_heads(not_implemented)


# ---- MultiHeadSelfAttention: correct alternatives --------------------------------------------

class _Layers(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.to_queries = nn.Linear(d_model, d_model, bias=False)
        self.to_keys = nn.Linear(d_model, d_model, bias=False)
        self.to_values = nn.Linear(d_model, d_model, bias=False)
        self.unify_heads = nn.Linear(d_model, d_model)


class HeadLoopAttention(_Layers):
    """One head at a time, einsum for the products, a large negative number for the mask."""

    def forward(self, x, mask=None):
        B, T, D = x.shape
        q, k, v = self.to_queries(x), self.to_keys(x), self.to_values(x)
        outs, weights = [], []
        full_mask = None if mask is None else mask.expand(B, self.n_heads, T, T)
        for h in range(self.n_heads):
            part = slice(h * self.d_head, (h + 1) * self.d_head)
            scores = torch.einsum("btd,bsd->bts", q[..., part], k[..., part])
            scores = scores / self.d_head ** 0.5
            if full_mask is not None:
                scores = torch.where(full_mask[:, h], scores, torch.full_like(scores, -1e9))
            w = scores.softmax(dim=-1)
            if full_mask is not None:  # a query with nothing allowed: zero weights
                w = torch.where(full_mask[:, h].any(-1, keepdim=True), w, 0.0)
            weights.append(w)
            outs.append(torch.einsum("bts,bsd->btd", w, v[..., part]))
        return self.unify_heads(torch.cat(outs, dim=-1)), torch.stack(weights, dim=1)


class FoldedBmmAttention(_Layers):
    """The seed's way: heads folded into the batch, torch.bmm, explicit contiguous views."""

    def forward(self, x, mask=None):
        B, T, D = x.shape
        H, dh = self.n_heads, self.d_head

        def fold(t):
            return t.view(B, T, H, dh).transpose(1, 2).contiguous().view(B * H, T, dh)

        q, k, v = fold(self.to_queries(x)), fold(self.to_keys(x)), fold(self.to_values(x))
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(dh)
        if mask is not None:
            allowed = mask.expand(B, H, T, T).reshape(B * H, T, T)
            scores = scores.masked_fill(allowed.logical_not(), float("-inf"))
        w = F.softmax(scores, dim=2).nan_to_num(0.0)
        out = torch.bmm(w, v).view(B, H, T, dh).transpose(1, 2).contiguous().view(B, T, D)
        return self.unify_heads(out), w.view(B, H, T, T)


class BuiltinSdpaAttention(_Layers):
    """F.scaled_dot_product_attention for the output; weights by a hand-made softmax."""

    def forward(self, x, mask=None):
        q = split_heads(self.to_queries(x), self.n_heads)
        k = split_heads(self.to_keys(x), self.n_heads)
        v = split_heads(self.to_values(x), self.n_heads)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # a query with nothing allowed attends everywhere, then gets zeros (no nan)
            empty = ~mask.any(dim=-1, keepdim=True)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | empty)
            out = out.masked_fill(empty, 0.0)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        # The row max of the allowed keys; -1e30 for a row with none, so exp gives zeros.
        e = torch.exp(scores - scores.amax(dim=-1, keepdim=True).clamp_min(-1e30))
        total = e.sum(dim=-1, keepdim=True)
        weights = torch.where(total > 0, e / total.clamp_min(1e-30), 0.0)
        return self.unify_heads(merge_heads(out)), weights


class PackedProjectionAttention(_Layers):
    """One matmul for Q, K and V together (like nn.MultiheadAttention's in_proj_weight)."""

    def forward(self, x, mask=None):
        packed = torch.cat([self.to_queries.weight, self.to_keys.weight, self.to_values.weight])
        q, k, v = (x @ packed.T).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))
        scores = torch.matmul(q * self.d_head ** -0.5, k.transpose(-1, -2))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return self.unify_heads(merge_heads(torch.matmul(weights, v))), weights


# ---- MultiHeadSelfAttention: mistakes ---------------------------------------------------------

def _mutant(*, split="ok", merge="ok", scale="d_head", softmax_dim=-1, mask_mode="ok",
            unify=True, keys_from="keys", before_softmax=False, average=False, nan_fix=True):
    """A layer with the solution's members and one deliberate mistake in forward."""

    class Mutant(_Layers):
        def forward(self, x, mask=None):
            B, T, D = x.shape
            H, dh = self.n_heads, self.d_head

            def split_(t):
                if split == "no_transpose":
                    return t.reshape(B, H, T, dh)
                if split == "interleaved":
                    return t.reshape(B, T, dh, H).permute(0, 3, 1, 2)
                return split_heads(t, H)

            q = split_(self.to_queries(x))
            k = split_((self.to_queries if keys_from == "queries" else self.to_keys)(x))
            v = split_(self.to_values(x))
            scores = q @ k.transpose(-2, -1)
            if scale == "d_head":
                scores = scores / math.sqrt(dh)
            elif scale == "d_model":
                scores = scores / math.sqrt(D)
            elif scale == "d_head_unrooted":
                scores = scores / dh
            if mask is not None:
                if mask_mode == "ok":
                    scores = scores.masked_fill(~mask, float("-inf"))
                elif mask_mode == "inverted":
                    scores = scores.masked_fill(mask, float("-inf"))
                elif mask_mode == "zero":
                    scores = scores.masked_fill(~mask, 0.0)
            weights = torch.softmax(scores, dim=softmax_dim)
            if mask is not None and mask_mode == "after_softmax":
                weights = weights * mask
            if mask is not None and mask_mode == "finite":
                weights = torch.softmax(scores.masked_fill(~mask, -1e9), dim=softmax_dim)
            if nan_fix:
                weights = weights.nan_to_num(0.0)
            mixed = weights @ v
            if merge == "no_transpose":
                merged = mixed.reshape(B, T, D)
            elif merge == "interleaved":
                merged = mixed.permute(0, 2, 3, 1).reshape(B, T, D)
            else:
                merged = merge_heads(mixed)
            out = self.unify_heads(merged) if unify else merged
            returned = scores if before_softmax else weights
            return out, (returned.mean(dim=1) if average else returned)

    return Mutant


class WideHeadsAttention(nn.Module):
    """The seed's 'wide heads': every head of full width d_model."""

    def __init__(self, d_model, n_heads):
        super().__init__()
        self.n_heads = n_heads
        self.to_queries = nn.Linear(d_model, d_model * n_heads, bias=False)
        self.to_keys = nn.Linear(d_model, d_model * n_heads, bias=False)
        self.to_values = nn.Linear(d_model, d_model * n_heads, bias=False)
        self.unify_heads = nn.Linear(d_model * n_heads, d_model)

    def forward(self, x, mask=None):  # pragma: no cover - never reached, the sizes fail first
        raise AssertionError("unreachable")


class BiasedProjections(Solution):
    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        self.to_queries = nn.Linear(d_model, d_model)


class HardCodedWidth(Solution):
    """Sizes of the notebook's example instead of d_model."""

    def __init__(self, d_model, n_heads):
        super().__init__(16, n_heads)


class FixedHeads(Solution):
    """Two heads, as in the notebook's copy task, whatever n_heads says."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, 2)


class FourHeads(Solution):
    """Four heads, whatever n_heads says."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, 4)


class MaskFlippedAndRestored(Solution):
    """Flips the caller's mask in place and back: the mask is as it was afterwards, but
    autograd saved it for the backward pass in between."""

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(mask.logical_not_(), float("-inf"))
            mask.logical_not_()
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return self.unify_heads(merge_heads(weights @ v)), weights


class DetachedWeights(Solution):
    """The weights detached 'because they are only for the plots': no gradient reaches the
    queries and keys."""

    def forward(self, x, mask=None):
        q = split_heads(self.to_queries(x), self.n_heads)
        k = split_heads(self.to_keys(x), self.n_heads)
        v = split_heads(self.to_values(x), self.n_heads)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0).detach()
        return self.unify_heads(merge_heads(weights @ v)), weights


class MaskUnsqueezedInPlace(Solution):
    """Gives a (T, T) mask its head axes in place: the caller's mask changes."""

    def forward(self, x, mask=None):
        if mask is not None:
            while mask.dim() < 4:
                mask.unsqueeze_(0)
        return super().forward(x, mask)


class ReseededInit(Solution):
    """torch.manual_seed in __init__ "for reproducibility": every layer starts the same."""

    def __init__(self, d_model, n_heads):
        torch.manual_seed(0)
        super().__init__(d_model, n_heads)


class ReseedsAfterInit(Solution):
    """Seeds once the weights are drawn, "so that what follows is reproducible": every draw
    after building a layer repeats."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        torch.manual_seed(0)


class OsSeedAfterInit(Solution):
    """Keeps a fresh seed for the record: torch.seed() reseeds the generator from the OS."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        self.seed_used = torch.seed()


class ZeroInit(Solution):
    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        for layer in (self.to_queries, self.to_keys, self.to_values, self.unify_heads):
            nn.init.zeros_(layer.weight)


class NormalInit(Solution):
    """Every parameter drawn from N(0, 1): far larger than nn.Linear's start."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        for p in self.parameters():
            nn.init.normal_(p)


def _heads(layer, x):
    return (split_heads(layer.to_queries(x), layer.n_heads),
            split_heads(layer.to_keys(x), layer.n_heads),
            split_heads(layer.to_values(x), layer.n_heads))


class ExpWithoutMax(Solution):
    """A hand-made softmax without subtracting the row max: exp overflows for large scores."""

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        e = torch.exp(scores)
        if mask is not None:
            e = e * mask
        total = e.sum(dim=-1, keepdim=True)
        weights = torch.where(total > 0, e / total, 0.0)
        return self.unify_heads(merge_heads(weights @ v)), weights


class MaxOverMaskedKeys(Solution):
    """Subtracts the max over all keys, forbidden ones included, then masks the exponentials:
    exact for small scores, zero weights when a forbidden score is far above the allowed."""

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        e = torch.exp(scores - scores.amax(dim=-1, keepdim=True))
        if mask is not None:
            e = e * mask
        total = e.sum(dim=-1, keepdim=True)
        weights = torch.where(total > 0, e / total.clamp_min(1e-30), 0.0)
        return self.unify_heads(merge_heads(weights @ v)), weights


class FloatInput(Solution):
    """x.float() "to be safe": a float64 layer crashes on it."""

    def forward(self, x, mask=None):
        return super().forward(x.float(), mask)


class Float32Weights(Solution):
    """Weights made in float32 for the plots."""

    def forward(self, x, mask=None):
        out, weights = super().forward(x, mask)
        return out, torch.where(torch.isnan(weights), torch.zeros(weights.shape),
                                weights).float()


class Float32Softmax(Solution):
    """The softmax in float32, cast back: float64 in name only."""

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0).to(x.dtype)
        return self.unify_heads(merge_heads(weights @ v)), weights


class CpuDefaultMask(Solution):
    """Without a mask, an all-True one made with torch.ones: on the CPU, whatever x is on."""

    def forward(self, x, mask=None):
        if mask is None:
            mask = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool)
        return super().forward(x, mask)


class CpuZeros(Solution):
    """nan rows replaced by torch.zeros(shape): made on the CPU."""

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        weights = torch.where(torch.isnan(weights), torch.zeros(weights.shape,
                                                                dtype=weights.dtype), weights)
        return self.unify_heads(merge_heads(weights @ v)), weights


class ExpWithoutMaxNanToZero(Solution):
    """exp without the row max, nan turned into 0: large scores give rows of zeros."""

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        e = torch.exp(scores)
        weights = torch.nan_to_num(e / e.sum(dim=-1, keepdim=True), nan=0.0)
        return self.unify_heads(merge_heads(weights @ v)), weights


class SoftmaxDtypeFloat32(Solution):
    """softmax(..., dtype=torch.float32) "for stability": a float64 layer then mixes dtypes."""

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).nan_to_num(0.0)
        return self.unify_heads(merge_heads(weights @ v)), weights


class SqueezedOutput(Solution):
    """.squeeze(0) "to tidy up": a batch of one loses its batch axis."""

    def forward(self, x, mask=None):
        out, weights = super().forward(x, mask)
        return out.squeeze(0), weights.squeeze(0)


class DetachedInput(Solution):
    """x.detach() "because x is data": the maps learn, nothing below the layer does."""

    def forward(self, x, mask=None):
        return super().forward(x.detach(), mask)


def _split_on_cpu(x, n_heads):
    B, T, D = x.shape
    out = torch.zeros(B, n_heads, T, D // n_heads, dtype=x.dtype)
    return out + x.view(B, T, n_heads, D // n_heads).transpose(1, 2)


class CpuSplitInside(Solution):
    """A split_heads that adds onto a CPU buffer, called from forward."""

    def forward(self, x, mask=None):
        q, k, v = (_split_on_cpu(m(x), self.n_heads)
                   for m in (self.to_queries, self.to_keys, self.to_values))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return self.unify_heads(merge_heads(weights @ v)), weights


class ShiftedOutput(Solution):
    """A bug no diagnosis describes."""
    def forward(self, x, mask=None):
        out, weights = super().forward(x, mask)
        return out + 0.25, weights


class SwappedHeads(Solution):
    """Heads returned in the other order: the self-check recognises it."""
    def forward(self, x, mask=None):
        out, weights = super().forward(x, mask)
        return out, weights.flip(1)


class NanFixedOnOutput(Solution):
    """The nan of a fully masked query replaced after `@ v`: the forward is right, the
    gradients are nan."""

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out = self.unify_heads(merge_heads(weights @ v).nan_to_num(0.0))
        return out, weights.nan_to_num(0.0)


class ReturnedWeightsDetached(Solution):
    """The returned weights detached "because they are only for plots"; out is right."""

    def forward(self, x, mask=None):
        out, weights = super().forward(x, mask)
        return out, weights.detach()


class FloatDHead(Solution):
    """d_head = d_model / n_heads: a float, which math.sqrt accepts."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        self.d_head = d_model / n_heads


class SoftmaxThenRenormalise(Solution):
    """Softmax over every key, then the mask multiplied in and the rows renormalised:
    exact for small scores, rows of zeros when a forbidden score is far above the allowed."""

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.d_head), dim=-1)
        if mask is not None:
            weights = weights * mask
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
        return self.unify_heads(merge_heads(weights @ v)), weights


class ScaledQAndK(Solution):
    """q and k each divided by sqrt(d_head): their product is divided by d_head."""

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        root = math.sqrt(self.d_head)
        scores = (q / root) @ (k / root).transpose(-2, -1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return self.unify_heads(merge_heads(weights @ v)), weights


class ScoresTransposed(Solution):
    """k @ q^T: each row holds one key's scores against every query."""

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        scores = k @ q.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return self.unify_heads(merge_heads(weights @ v)), weights


class DropoutOnWeights(Solution):
    """nn.Dropout(0.1) on the weights, as in some transformer code."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x, mask=None):
        q, k, v = _heads(self, x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1).nan_to_num(0.0))
        return self.unify_heads(merge_heads(weights @ v)), weights


class DropoutOnOutput(Solution):
    """nn.Dropout(0.1) on the output."""

    def __init__(self, d_model, n_heads):
        super().__init__(d_model, n_heads)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x, mask=None):
        out, weights = super().forward(x, mask)
        return self.dropout(out), weights


MaskUnsqueezedAlways = as_cell("""
class MaskUnsqueezedAlways(Solution):
    \"\"\"mask.unsqueeze(1) on every mask, as if it always came as (B, T, T).\"\"\"

    def forward(self, x, mask=None):
        q = split_heads(self.to_queries(x), self.n_heads)
        k = split_heads(self.to_keys(x), self.n_heads)
        v = split_heads(self.to_values(x), self.n_heads)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return self.unify_heads(merge_heads(weights @ v)), weights
""", "MaskUnsqueezedAlways", {"Solution": Solution, "split_heads": split_heads,
                              "merge_heads": merge_heads, "math": math, "torch": torch},
                               cell=20)


def _named(cls, name):
    cls.__name__ = cls.__qualname__ = name
    return cls


M = {name: _named(cls, name) for name, cls in {
    "split_no_transpose": _mutant(split="no_transpose"),
    "merge_interleaved": _mutant(merge="interleaved"),
    "merge_no_transpose": _mutant(merge="no_transpose"),
    "scale_d_model": _mutant(scale="d_model"),
    "scale_d_head": _mutant(scale="d_head_unrooted"),
    "split_round_robin": _mutant(split="interleaved"),
    "no_scale": _mutant(scale="none"),
    "softmax_queries": _mutant(softmax_dim=-2),
    "softmax_heads": _mutant(softmax_dim=1),
    "no_unify": _mutant(unify=False),
    "mask_ignored": _mutant(mask_mode="ignored"),
    "mask_inverted": _mutant(mask_mode="inverted"),
    "mask_zero": _mutant(mask_mode="zero"),
    "mask_after_softmax": _mutant(mask_mode="after_softmax"),
    "mask_finite": _mutant(mask_mode="finite"),
    "nan_rows": _mutant(nan_fix=False),
    "keys_from_queries": _mutant(keys_from="queries"),
    "before_softmax": _mutant(before_softmax=True),
    "averaged": _mutant(average=True),
}.items()}

ATTENTION_BANKS = ExerciseBanks(
    solution=Solution,
    correct=[HeadLoopAttention, FoldedBmmAttention, BuiltinSdpaAttention,
             PackedProjectionAttention],
    check=[
        (WideHeadsAttention, "wide heads", "members"),
        (BiasedProjections, None, "members"),
        (M["averaged"], "averaged over the heads", "shape"),
        (SqueezedOutput, "batch of one still comes back", "shape"),
        (M["split_no_transpose"], "reshaped straight to (B, H, T, d_head) without", "values"),
        (M["scale_d_model"], "divided by sqrt(d_model)", "values"),
        (M["scale_d_head"], "divided by d_head instead", "values"),
        (ScaledQAndK, "divided by d_head instead", "values"),
        (ScoresTransposed, "k @ q^T", "values"),
        (DropoutOnWeights, "dropout inside the layer", "values"),
        (DropoutOnOutput, "dropout inside the layer", "values"),
        (M["no_scale"], "not scaled", "values"),
        (M["softmax_queries"], "over the queries", "values"),
        (M["merge_interleaved"], None, "values"),
        (M["no_unify"], "unify_heads was skipped", "values"),
        (M["before_softmax"], "(the scores)", "values"),
        (SwappedHeads, "different order", "values"),
        (ShiftedOutput, None, "values"),
        (M["mask_ignored"], "mask was ignored", "mask"),
        (M["mask_inverted"], "mask is inverted", "mask"),
        (M["mask_zero"], "0 instead of -inf", "mask"),
        (M["mask_after_softmax"], "zeroed after the softmax", "mask"),
        (M["mask_finite"], "uniformly", "mask"),
        (M["nan_rows"], "comes out of the softmax as nan", "mask"),
        (MaskUnsqueezedAlways, "use it as it is", "mask"),
        (HardCodedWidth, "sizes are fixed", "arguments"),
        (FixedHeads, "does not follow n_heads", "arguments"),
        (FourHeads, "does not follow n_heads", "shape"),
        (ReseededInit, "reseeds PyTorch's generator", "init"),
        (ReseedsAfterInit, "resets the global generator", "init"),
        (OsSeedAfterInit, "fresh seed from the OS", "init"),
        (ZeroInit, "set to zeros", "init"),
        (NormalInit, None, "init"),
        (ExpWithoutMax, "overflows", "large"),
        (ExpWithoutMaxNanToZero, "overflows", "large"),
        (MaxOverMaskedKeys, "forbidden keys too", "large"),
        (SoftmaxThenRenormalise, "forbidden keys too", "large"),
        (FloatInput, "different dtypes met", "dtype"),
        (SoftmaxDtypeFloat32, "different dtypes met", "dtype"),
        (Float32Weights, "ran in float32", "dtype"),
        (Float32Softmax, "ran in float32", "dtype"),
        (CpuDefaultMask, "device", "device"),
        (CpuZeros, "device", "device"),
        (CpuSplitInside, "device", "device"),
        (DetachedWeights, "gradient is cut", "gradients"),
        (MaskFlippedAndRestored, "autograd still needs", "gradients"),
        (NanFixedOnOutput, "replaced too late", "gradients"),
        (MaskUnsqueezedInPlace, "argument was changed in place", "unchanged"),
        (DetachedInput, "x gets none", "differentiable"),
        (ReturnedWeightsDetached, "returned weights were detached", "differentiable"),
        (FloatDHead, "a float such as", "attributes"),
    ],
    hidden=[
        (WideHeadsAttention, "wide heads", "members"),
        (BiasedProjections, None, "members"),
        (M["averaged"], "averaged over the heads", "shape"),
        (SqueezedOutput, "batch of one still comes back", "shape"),
        (M["split_no_transpose"], "split by a reshape/view", "values"),
        (M["merge_interleaved"], "merged in the wrong order", "values"),
        (M["merge_no_transpose"], "merged without transposing back", "values"),
        (M["scale_d_model"], "sqrt(d_model) instead of sqrt(d_head)", "values"),
        (M["no_scale"], "not scaled", "values"),
        (M["scale_d_head"], "divided by d_head instead", "values"),
        (ScaledQAndK, "divided by d_head instead", "values"),
        (ScoresTransposed, "k @ q^T", "values"),
        (DropoutOnWeights, "dropout inside the layer", "values"),
        (DropoutOnOutput, "dropout inside the layer", "values"),
        (M["split_round_robin"], "round-robin", "values"),
        (M["softmax_queries"], "(queries, dim=-2)", "values"),
        (M["softmax_heads"], "(heads, dim=1)", "values"),
        (M["no_unify"], "unify_heads skipped", "values"),
        (M["keys_from_queries"], "to_queries instead of to_keys", "values"),
        (M["before_softmax"], "before softmax", "values"),
        (ShiftedOutput, None, "values"),
        (M["mask_ignored"], "mask ignored", "mask"),
        (M["mask_inverted"], "mask inverted", "mask"),
        (M["mask_zero"], "0 instead of -inf", "mask"),
        (M["mask_after_softmax"], "without renormalising", "mask"),
        (M["mask_finite"], "uniformly", "mask"),
        (M["nan_rows"], "comes out of the softmax as nan", "mask"),
        (MaskUnsqueezedAlways, "use it as it is", "mask"),
        (HardCodedWidth, "sizes are fixed", "arguments"),
        (FixedHeads, "does not follow n_heads", "arguments"),
        (FourHeads, "does not follow n_heads", "shape"),
        (ReseededInit, "reseeds PyTorch's generator", "init"),
        (ReseedsAfterInit, "resets the global generator", "init"),
        (OsSeedAfterInit, "fresh seed from the OS", "init"),
        (ZeroInit, "set to zeros", "init"),
        (NormalInit, None, "init"),
        (ExpWithoutMax, "overflows", "large"),
        (ExpWithoutMaxNanToZero, "overflows", "large"),
        (MaxOverMaskedKeys, "forbidden keys too", "large"),
        (SoftmaxThenRenormalise, "forbidden keys too", "large"),
        (FloatInput, "different dtypes met", "dtype"),
        (SoftmaxDtypeFloat32, "different dtypes met", "dtype"),
        (Float32Weights, "ran in float32", "dtype"),
        (Float32Softmax, "ran in float32", "dtype"),
        (CpuDefaultMask, "device", "device"),
        (CpuZeros, "device", "device"),
        (CpuSplitInside, "device", "device"),
        (DetachedWeights, "gradient is cut", "gradients"),
        (MaskFlippedAndRestored, "autograd still needs", "gradients"),
        (NanFixedOnOutput, "replaced too late", "gradients"),
        (MaskUnsqueezedInPlace, "argument was changed in place", "unchanged"),
    ],
)

BANKS = {"split_heads": SPLIT_BANKS, "merge_heads": MERGE_BANKS,
         "MultiHeadSelfAttention": ATTENTION_BANKS}


def test_the_self_check_recognises_heads_in_another_order():
    message = assert_fails_naming(check_MultiHeadSelfAttention, SwappedHeads)
    assert "different order" in diagnosis(message)


class BlankInit(nn.Module):
    def __init__(self, d_model, n_heads):
        super().__init__()
        raise NotImplementedError()


class BlankForward(Solution):
    def forward(self, x, mask=None):
        raise NotImplementedError()


@pytest.mark.parametrize("blank", [BlankInit, BlankForward])
def test_blank_attention_propagates(blank):
    with pytest.raises(NotImplementedError):
        grade_MultiHeadSelfAttention(blank)
    with pytest.raises(NotImplementedError):
        check_MultiHeadSelfAttention(blank)


def test_checks_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_MultiHeadSelfAttention(Solution)
    grade_MultiHeadSelfAttention(Solution)
    assert torch.equal(torch.rand(3), expected)


class MaskUnsqueezedInPlaceOnTheWrongAxis(Solution):
    """mask.unsqueeze_(1): the caller's mask changes, then the call fails."""

    def forward(self, x, mask=None):
        if mask is not None:
            mask.unsqueeze_(1)
        return super().forward(x, mask)


def test_a_crash_after_an_in_place_change_shows_the_arguments_as_passed_and_names_it():
    message = failure(check_MultiHeadSelfAttention, MaskUnsqueezedInPlaceOnTheWrongAxis)
    assert "mask=tensor of shape (6, 6)" in message
    assert "changed mask in place" in message

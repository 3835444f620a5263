"""Hidden tests for tutorial 04 (the transformer block)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.transformer_block import BATCH_AXIS, RETURNS_PAIR, pytorch_twin
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test

# ---- sinusoidal_positional_encoding --------------------------------------------------------


def _angles(T: int, d: int, *, exponent: Callable[[torch.Tensor], torch.Tensor] | None = None,
            start: int = 0) -> torch.Tensor:
    """(T, d/2) angles t * ω_i; ``exponent`` maps the pair index i to the exponent of 10000."""
    t = torch.arange(start, start + T, dtype=torch.float64)[:, None]
    i = torch.arange(d // 2, dtype=torch.float64)
    power = exponent(i) if exponent is not None else 2 * i / d
    return t * 10000.0 ** (-power)


def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
    out = torch.empty(even.shape[0], 2 * even.shape[1], dtype=torch.float64)
    out[:, 0::2], out[:, 1::2] = even, odd
    return out


def _reference_encoding(T: int, d: int) -> torch.Tensor:
    angles = _angles(T, d)
    return _interleave(torch.sin(angles), torch.cos(angles))


def _encoding_mistakes(T: int, d: int) -> dict[str, torch.Tensor]:
    angles = _angles(T, d)
    odd_own_index = _angles(T, d, exponent=lambda i: (2 * i + 1) / d)
    return {
        "sin and cos are swapped: sine goes in the even columns, cosine in the odd ones":
            _interleave(torch.cos(angles), torch.sin(angles)),
        "sines fill the first half of the columns and cosines the second half; they must "
        "alternate (sin on even columns, cos on odd columns)":
            torch.cat([torch.sin(angles), torch.cos(angles)], dim=1),
        "cosines on the first half and sines on the second half of the columns; they must "
        "alternate (sin on even columns, cos on odd columns)":
            torch.cat([torch.cos(angles), torch.sin(angles)], dim=1),
        "frequency exponent off by a factor of two (too large): the column index was used "
        "where the pair index i belongs, ω_i = 10000^(-2i/d) with i = column // 2":
            _interleave(*(f(_angles(T, d, exponent=lambda i: 4 * i / d))
                          for f in (torch.sin, torch.cos))),
        "frequency exponent off by a factor of two (too small): ω_i = 10000^(-2i/d), the "
        "factor 2 is missing":
            _interleave(*(f(_angles(T, d, exponent=lambda i: i / d))
                          for f in (torch.sin, torch.cos))),
        "each odd column used its own index in the exponent; both columns of a pair "
        "(2i, 2i+1) share the frequency ω_i":
            _interleave(torch.sin(angles), torch.cos(odd_own_index)),
        "the exponent has the wrong sign: ω_i = 1 / 10000^(2i/d) gets slower, not faster":
            _interleave(*(f(_angles(T, d, exponent=lambda i: -2 * i / d))
                          for f in (torch.sin, torch.cos))),
        "positions start at 1 instead of 0":
            _interleave(*(f(_angles(T, d, start=1)) for f in (torch.sin, torch.cos))),
    }


@hidden_test
def grade_sinusoidal_positional_encoding(encoding: Callable[[int, int], torch.Tensor]) -> None:
    check = HiddenCheck("sinusoidal_positional_encoding")
    for T, d in ((12, 8), (7, 16), (50, 4), (1, 6), (30, 64)):
        what = f"sinusoidal_positional_encoding({T}, {d})"
        pe = check.tensor(check.call(encoding, T, d), what)
        shape = tuple(pe.shape)
        check.expect(shape == (T, d), f"{what} has shape ({T}, {d})", expected=f"shape ({T}, {d})",
                     got=f"shape {shape}", diagnoses={
                         BATCH_AXIS: shape == (T, 1, d),
                         "the table is transposed: rows are positions, columns features":
                             shape == (d, T) and T != d})
        check.expect(pe.is_floating_point(), f"{what} is a float tensor", expected="float dtype",
                     got=str(pe.dtype),
                     likely="the table holds integers: make the positions floats before "
                            "multiplying them by the frequencies")
        check.finite(pe, what)
        check.close(pe, _reference_encoding(T, d), f"values of {what}",
                    mistakes=_encoding_mistakes(T, d), atol=1e-4, rtol=1e-3)
    check.passed()


# ---- TransformerBlock -------------------------------------------------------------------------


def _check_members(check: HiddenCheck, block: nn.Module, d_model: int, n_heads: int,
                   d_ff: int) -> None:
    attention = getattr(block, "attention", None)
    check.expect(isinstance(attention, nn.MultiheadAttention),
                 "member `attention` is an nn.MultiheadAttention",
                 expected="nn.MultiheadAttention", got=type(attention).__name__)
    check.expect((attention.embed_dim, attention.num_heads) == (d_model, n_heads),
                 "attention has the right size and number of heads",
                 expected=f"embed_dim={d_model}, num_heads={n_heads}",
                 got=f"embed_dim={attention.embed_dim}, num_heads={attention.num_heads}")
    check.expect(bool(attention.batch_first), "attention uses batch_first=True",
                 expected="batch_first=True", got="batch_first=False",
                 likely="without batch_first=True, PyTorch reads our (B, T, d) tensors as "
                        "(T, B, d) and attends across the sentences of the batch")
    for name in ("norm_1", "norm_2"):
        norm = getattr(block, name, None)
        check.expect(isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (d_model,)
                     and norm.elementwise_affine,
                     f"member `{name}` is nn.LayerNorm(d_model)",
                     expected=f"nn.LayerNorm({d_model})", got=repr(norm))
    mlp = getattr(block, "mlp", None)
    ok = (isinstance(mlp, nn.Sequential) and len(mlp) == 3 and isinstance(mlp[0], nn.Linear)
          and isinstance(mlp[1], nn.ReLU) and isinstance(mlp[2], nn.Linear)
          and (mlp[0].in_features, mlp[0].out_features) == (d_model, d_ff)
          and (mlp[2].in_features, mlp[2].out_features) == (d_ff, d_model))
    check.expect(ok, "member `mlp` is Sequential(Linear(d_model, d_ff), ReLU(), "
                     "Linear(d_ff, d_model))",
                 expected=f"Sequential(Linear({d_model}, {d_ff}), ReLU(), Linear({d_ff}, "
                          f"{d_model}))", got=repr(mlp))


def _randomise(block: nn.Module, generator: torch.Generator) -> None:
    """Random weights everywhere, and two clearly different layer norms."""
    with torch.no_grad():
        for _, parameter in sorted(block.named_parameters()):
            parameter.copy_(0.4 * torch.randn(parameter.shape, generator=generator))
        for norm, scale in ((block.norm_1, 0.6), (block.norm_2, 1.4)):
            norm.weight.copy_(scale + 0.3 * torch.randn(norm.weight.shape, generator=generator))


def _block_variants(block: nn.Module, x: torch.Tensor, padding_mask: torch.Tensor | None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The correct post-norm output and what typical mistakes give, from the block's members."""
    n1, n2, mlp = block.norm_1, block.norm_2, block.mlp

    def attend(z: torch.Tensor, mask: torch.Tensor | None = padding_mask) -> torch.Tensor:
        return block.attention(z, z, z, key_padding_mask=mask, need_weights=False)[0]

    h = n1(x + attend(x))
    correct = n2(h + mlp(h))
    mistakes = {}
    h_after = x + n1(attend(x))
    mistakes["residual added after the norm: add x first, then normalise, "
             "norm_1(x + attention(x))"] = h_after + n2(mlp(h_after))
    h_none = n1(attend(x))
    mistakes["residual connections missing: each sub-layer's output is added to its input "
             "before the norm"] = n2(mlp(h_none))
    mistakes["residual connection missing around the attention"] = n2(h_none + mlp(h_none))
    mistakes["residual connection missing around the MLP"] = n2(mlp(h))
    h_swap = n2(x + attend(x))
    mistakes["norm_1 and norm_2 swapped: norm_1 follows the attention, norm_2 the MLP"] = \
        n1(h_swap + mlp(h_swap))
    h_first = n1(x + mlp(x))
    mistakes["MLP applied before attention: attention comes first, then the MLP"] = \
        n2(h_first + attend(h_first))
    h_first2 = n2(x + mlp(x))
    mistakes["MLP applied before attention (attention comes first, then the MLP)"] = \
        n1(h_first2 + attend(h_first2))
    h_pre = x + attend(n1(x))
    mistakes["pre-norm instead of post-norm: normalise after the residual sum, "
             "norm_1(x + attention(x))"] = h_pre + mlp(n2(h_pre))
    mistakes["the final norm_2 is missing"] = h + mlp(h)
    mistakes["only one add & norm: the MLP sub-layer (with norm_2) is missing"] = h
    if padding_mask is not None:
        h_nomask = n1(x + attend(x, None))
        mistakes["padding mask ignored: pass it to the attention as key_padding_mask"] = \
            n2(h_nomask + mlp(h_nomask))
        h_inv = n1(x + attend(x, ~padding_mask))
        mistakes["padding mask inverted: True already means padding in key_padding_mask"] = \
            n2(h_inv + mlp(h_inv))
    return correct, mistakes


@hidden_test
def grade_TransformerBlock(block_class: type[nn.Module]) -> None:
    check = HiddenCheck("TransformerBlock")
    generator = fresh_generator(404)
    for d_model, n_heads, d_ff, B, T in ((8, 2, 16, 2, 6), (12, 3, 20, 3, 5)):
        block = check.call(block_class, d_model, n_heads, d_ff)
        _check_members(check, block, d_model, n_heads, d_ff)
        _randomise(block, generator)
        block.eval()
        x = torch.randn(B, T, d_model, generator=generator)
        lengths = torch.tensor([T - 1, 2, T - 2][:B])  # every row has padding and real tokens
        padding_mask = torch.arange(T)[None, :] >= lengths[:, None]
        if B == 3:  # padding that is not at the end is still padding
            padding_mask[2] = torch.tensor([True, False] * (T // 2) + [False] * (T % 2))
        real = ~padding_mask
        with torch.no_grad():
            out = check.call(block, x.clone())
            pair = isinstance(out, tuple | list)
            check.expect(not pair, "block(x) returns one tensor",
                         expected="a (B, T, d_model) tensor", got=type(out).__name__,
                         diagnoses={RETURNS_PAIR: pair and len(out) == 2
                                    and tuple(torch.as_tensor(out[0]).shape) == (B, T, d_model)})
            out = check.tensor(out, "block(x)")
            check.shape(out, (B, T, d_model), "block(x)")
            correct, mistakes = _block_variants(block, x, None)
            check.close(out, correct, f"block(x) for d_model={d_model}, n_heads={n_heads}",
                        mistakes=mistakes, atol=1e-4)
            twin = pytorch_twin(block, d_model, n_heads, d_ff)
            check.close(out, twin(x), "block(x) agrees with nn.TransformerEncoderLayer "
                        "(norm_first=False) holding the same weights", atol=1e-4)
            out = check.tensor(check.call(block, x.clone(), padding_mask=padding_mask),
                               "block(x, padding_mask)")
            check.shape(out, (B, T, d_model), "block(x, padding_mask)")
            correct, mistakes = _block_variants(block, x, padding_mask)
            check.close(out[real], correct[real],
                        "block(x, padding_mask) at the real (non-padded) tokens",
                        mistakes={k: v[real] for k, v in mistakes.items()}, atol=1e-4)
            positional = check.call(block, x.clone(), padding_mask)
            check.close(positional[real], correct[real],
                        "the padding mask also works as the second positional argument",
                        atol=1e-4)
    # Dropout: inactive in eval mode, and the argument is accepted.
    block = check.call(block_class, 8, 2, 16, dropout=0.5)
    _randomise(block, generator)
    block.eval()
    x = torch.randn(2, 4, 8, generator=generator)
    with torch.no_grad():
        check.close(check.call(block, x), _block_variants(block, x, None)[0],
                    "with dropout=0.5, the block in eval mode computes the same post-norm output",
                    atol=1e-4)
    check.passed()


# ---- mean_pool --------------------------------------------------------------------------------


def _masked_sum(h: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    return (h.double() * (~padding_mask).unsqueeze(-1)).sum(dim=1)


@hidden_test
def grade_mean_pool(mean_pool: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("mean_pool")
    generator = fresh_generator(405)
    h = torch.randn(4, 6, 5, generator=generator) + 0.5  # nonzero mean: sums differ from means
    out = check.tensor(check.call(mean_pool, h.clone()), "mean_pool(h)")
    check.expect(tuple(out.shape) == (4, 5), "mean_pool(h) for h (4, 6, 5) has shape (4, 5)",
                 expected="shape (4, 5)", got=f"shape {tuple(out.shape)}", diagnoses={
                     "averaged over the features (the last axis) instead of time (dim=1)":
                         tuple(out.shape) == (4, 6),
                     "averaged over the batch (dim=0) instead of time (dim=1)":
                         tuple(out.shape) == (6, 5)})
    check.close(out, h.double().mean(dim=1), "mean_pool(h) without a mask", mistakes={
        "summed over time instead of averaging": h.sum(dim=1),
    })
    cases = {
        "padding at the end": torch.arange(6)[None, :] >= torch.tensor([6, 4, 2, 1])[:, None],
        "padding at the start (left padding)":
            torch.arange(6)[None, :] < torch.tensor([0, 2, 3, 5])[:, None],
        "padding scattered in the sequence": torch.tensor(
            [[False, True, False, True, False, False], [True, False, True, False, True, True],
             [False, False, False, False, False, True], [True, True, False, True, True, True]]),
    }
    for name, padding_mask in cases.items():
        original = h.clone()
        out = check.tensor(check.call(mean_pool, h, padding_mask), f"mean_pool(h, mask) ({name})")
        check.close(h, original, f"mean_pool leaves h unchanged ({name})",
                    likely="h was changed in place (e.g. masked_fill_): work on a new tensor")
        check.shape(out, (4, 5), f"mean_pool(h, mask) ({name})")
        lengths = (~padding_mask).sum(dim=1, keepdim=True).double()
        n_pad = padding_mask.sum(dim=1, keepdim=True).double()
        mistakes = {
            "pooling averages the padding too: the mask was ignored": h.double().mean(dim=1),
            "divided by T instead of the true length (the number of real tokens)":
                _masked_sum(h, padding_mask) / h.shape[1],
            "summed the real tokens without dividing by their number":
                _masked_sum(h, padding_mask),
            "mask inverted: the padded positions were averaged instead of the real tokens "
            "(True in padding_mask means padding)":
                _masked_sum(h, ~padding_mask) / n_pad.clamp_min(1),
        }
        if name != "padding at the end":
            first = torch.stack([h[i, :int(n)].double().mean(dim=0) if int(n) else
                                 torch.zeros(5, dtype=torch.float64)
                                 for i, n in enumerate(lengths.flatten().tolist())])
            mistakes["assumed the real tokens come first (took the first L positions); use the "
                     "mask itself, wherever the padding is"] = first
        check.close(out, _masked_sum(h, padding_mask) / lengths, f"mean_pool(h, mask) ({name})",
                    mistakes=mistakes)
    no_padding = torch.zeros(4, 6, dtype=torch.bool)
    check.close(check.call(mean_pool, h.clone(), no_padding), h.double().mean(dim=1),
                "an all-False mask gives the plain mean")
    long = torch.randn(2, 40, 3, generator=generator)
    mask = torch.arange(40)[None, :] >= torch.tensor([3, 40])[:, None]
    check.close(check.call(mean_pool, long, mask), _masked_sum(long, mask) / torch.tensor(
        [[3.0], [40.0]], dtype=torch.float64), "a long batch with one short sequence", mistakes={
        "divided by T instead of the true length (the number of real tokens)":
            _masked_sum(long, mask) / 40,
        "pooling averages the padding too: the mask was ignored": long.double().mean(dim=1),
    })
    check.passed()


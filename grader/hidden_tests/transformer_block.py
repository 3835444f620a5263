"""Hidden tests for tutorial 04 (the transformer block)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.transformer_block import (
    BATCH_AXIS,
    BLOCK_CAUSES,
    CAPPED,
    CAUSAL,
    DROPOUT_AFTER_NORM,
    DROPOUT_ATTENTION_ONLY,
    DROPOUT_DRAWN_ONCE,
    DROPOUT_FIXED_P,
    DROPOUT_IN_EVAL,
    DROPOUT_MLP_ONLY,
    DROPOUT_ON_INPUTS,
    DROPOUT_ON_THE_SUM,
    DROPOUT_RESEEDED,
    DROPOUT_SHARED_MASK,
    DROPOUT_UNUSED,
    FLOAT_MASK,
    FREQUENCY_MISTAKES,
    GELU,
    HALF,
    INTEGER_DIVISION,
    INTEGERS,
    MASK_KEYWORD_LOST,
    MASK_ONLY_IN_EVAL,
    MASK_ONLY_IN_TRAINING,
    MLP_ON_X,
    POOL_CAUSES,
    POOL_EVERYTHING,
    POOL_PADDING_COUNT,
    POOL_SUM_ALL,
    POOL_WHOLE_BATCH,
    RESIDUAL_FROM_X,
    RETURNS_PAIR,
    SQUEEZED,
    SQUEEZED_OUT,
    TRANSPOSED,
    check_block_members,
    expect_input_gradient,
    expect_trained_dropout,
    is_capped,
    masks_differ,
    pytorch_twin,
    trained_references,
)
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test


def _integer(generator: torch.Generator, low: int, high: int) -> int:
    """A fresh integer in [low, high)."""
    return int(torch.randint(low, high, (1,), generator=generator))


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
    mistakes = {
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
        "the exponent has the wrong sign: your ω_i = 10000^(+2i/d) grows with i; "
        "ω_i = 1 / 10000^(2i/d) falls from 1 for i = 0 to about 1/10000":
            _interleave(*(f(_angles(T, d, exponent=lambda i: -2 * i / d))
                          for f in (torch.sin, torch.cos))),
        "positions start at 1 instead of 0":
            _interleave(*(f(_angles(T, d, start=1)) for f in (torch.sin, torch.cos))),
    }
    for words in list(FREQUENCY_MISTAKES)[-4:-1]:  # reversed, base 1000, a fixed d_model
        wrong = FREQUENCY_MISTAKES[words]
        if d > 2 and not (d == 32 and "d_model" in words):
            mistakes[words] = _interleave(*(f(_angles(T, d, exponent=lambda i, w=wrong: w(i, d)))
                                            for f in (torch.sin, torch.cos)))
    if d > 2:  # with one pair, these give the right table
        mistakes[INTEGER_DIVISION] = _interleave(*(f(_angles(T, d, exponent=lambda i: 0 * i))
                                                   for f in (torch.sin, torch.cos)))
        mistakes["the exponents run from 0 to exactly 1 (as dividing by d_model - 2, or "
                 "torch.linspace(0, 1, d_model // 2), spaces them): they are 2i/d for i = 0, "
                 "1, …, d/2 - 1, the last one short of 1"] = _interleave(*(f(_angles(T, d, exponent=lambda i: 2 * i / (d - 2)))
                                         for f in (torch.sin, torch.cos)))
    return mistakes


def _encoding_table(check: HiddenCheck, encoding: Callable[[int, int], torch.Tensor], T: int,
                    d: int) -> torch.Tensor:
    what = f"sinusoidal_positional_encoding({T}, {d})"
    pe = check.tensor(check.call(encoding, T, d), what)
    shape = tuple(pe.shape)
    check.expect(shape == (T, d), f"{what} has shape ({T}, {d})", expected=f"shape ({T}, {d})",
                 got=f"shape {shape}", diagnoses={
                     BATCH_AXIS: shape == (T, 1, d),
                     SQUEEZED: T == 1 and shape == (d,),
                     TRANSPOSED: shape == (d, T) and T != d,
                     CAPPED: is_capped(shape, T, d)})
    check.expect(pe.is_floating_point(), f"{what} is a float tensor", expected="float dtype",
                 got=str(pe.dtype), likely=INTEGERS)
    check.finite(pe, what)
    # A half-precision table reaches the grader as float32, but every value it holds is a
    # float16 number, which no float32 computation of sines gives on a table this size.
    check.expect(T * d < 20 or not torch.equal(pe, pe.half().to(pe.dtype)),
                 f"{what} has float32 precision", expected="float32 (or float64) values",
                 got="values that are all float16 numbers", likely=HALF)
    return pe


@hidden_test
def grade_sinusoidal_positional_encoding(encoding: Callable[[int, int], torch.Tensor]) -> None:
    check = HiddenCheck("sinusoidal_positional_encoding")
    generator = fresh_generator(401)
    T, d = _integer(generator, 9, 17), 2 * _integer(generator, 3, 7)
    check.clause("shape")
    pe = _encoding_table(check, encoding, T, d)
    check.clause("values")
    check.close(pe, _reference_encoding(T, d), f"values of sinusoidal_positional_encoding({T}, "
                f"{d})", mistakes=_encoding_mistakes(T, d), atol=1e-4, rtol=1e-3)
    check.clause("arguments")
    for T, d in ((1, 2 * _integer(generator, 2, 6)), (_integer(generator, 3, 9), 2),
                 (_integer(generator, 40, 70), 2 * _integer(generator, 12, 33)),
                 (_integer(generator, 150, 600), 2 * _integer(generator, 4, 12)),
                 (_integer(generator, 5, 12), 2 * _integer(generator, 6, 10))):
        pe = _encoding_table(check, encoding, T, d)
        check.close(pe, _reference_encoding(T, d), f"values of sinusoidal_positional_encoding("
                    f"{T}, {d})", mistakes=_encoding_mistakes(T, d), atol=1e-4, rtol=1e-3)
    check.passed()


# ---- TransformerBlock -------------------------------------------------------------------------


def _randomise(block: nn.Module, generator: torch.Generator) -> None:
    """Random weights everywhere, and two clearly different layer norms."""
    with torch.no_grad():
        for _, parameter in sorted(block.named_parameters()):
            parameter.copy_(0.4 * torch.randn(parameter.shape, generator=generator))
        for norm, scale in ((block.norm_1, 0.6), (block.norm_2, 1.4)):
            norm.weight.copy_(scale + 0.3 * torch.randn(norm.weight.shape, generator=generator))


def _attend(block: nn.Module, z: torch.Tensor, mask: torch.Tensor | None,
            attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    return block.attention(z, z, z, key_padding_mask=mask, attn_mask=attn_mask,
                           need_weights=False)[0]


def _block_variants(block: nn.Module, x: torch.Tensor, padding_mask: torch.Tensor | None
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The correct post-norm output and what typical mistakes give, from the block's members
    (in eval mode: no dropout)."""
    n1, n2, mlp = block.norm_1, block.norm_2, block.mlp

    def attend(z: torch.Tensor, mask: torch.Tensor | None = padding_mask) -> torch.Tensor:
        return _attend(block, z, mask)

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
    mistakes["norm_1 normalises both sums (used twice, or norm_2 is the same layer as "
             "norm_1): the MLP's add & norm has its own norm_2"] = n1(h + mlp(h))
    mistakes["norm_2 normalises both sums (used twice, or norm_1 is the same layer as "
             "norm_2): the attention's add & norm has its own norm_1"] = \
        n2(h_swap + mlp(h_swap))
    h_first = n1(x + mlp(x))
    mistakes["MLP applied before attention: attention comes first, then the MLP"] = \
        n2(h_first + attend(h_first))
    h_first2 = n2(x + mlp(x))
    mistakes["MLP applied before attention (attention comes first, then the MLP)"] = \
        n1(h_first2 + attend(h_first2))
    mistakes[MLP_ON_X] = n2(h + mlp(x))
    mistakes[RESIDUAL_FROM_X] = n2(x + mlp(h))
    mistakes[GELU] = n2(h + mlp[2](nn.functional.gelu(mlp[0](h))))
    h_pre = x + attend(n1(x))
    mistakes["pre-norm instead of post-norm: normalise after the residual sum, "
             "norm_1(x + attention(x))"] = h_pre + mlp(n2(h_pre))
    T = x.shape[1]
    h_causal = n1(x + _attend(block, x, padding_mask,
                              torch.ones(T, T, dtype=torch.bool).triu(1)))
    mistakes[CAUSAL] = n2(h_causal + mlp(h_causal))
    mistakes["the final norm_2 is missing"] = h + mlp(h)
    mistakes["only one add & norm: the MLP sub-layer (with norm_2) is missing"] = h
    if padding_mask is not None:
        h_nomask = n1(x + attend(x, None))
        mistakes["padding mask ignored: pass it to the attention as key_padding_mask"] = \
            n2(h_nomask + mlp(h_nomask))
        h_inv = n1(x + attend(x, ~padding_mask))
        mistakes["padding mask inverted: True already means padding in key_padding_mask"] = \
            n2(h_inv + mlp(h_inv))
        h_float = n1(x + attend(x, padding_mask.to(x.dtype)))
        mistakes[FLOAT_MASK] = n2(h_float + mlp(h_float))
    return correct, mistakes


def _padding_masks(B: int, T: int, generator: torch.Generator) -> torch.Tensor:
    """Every row with padding and real tokens: padding at the start (first row), at the end,
    and scattered (last row)."""
    lengths = torch.randint(1, T, (B,), generator=generator)
    mask = torch.arange(T)[None, :] >= lengths[:, None]
    mask[0] = mask[0].flip(0)  # padding at the start
    scattered = torch.rand(T, generator=generator) < 0.5
    scattered[_integer(generator, 0, T)] = False  # at least one real token
    scattered[_integer(generator, 0, T)] = True
    if scattered.all() or not scattered.any():
        scattered = torch.arange(T) % 2 == 1
    mask[-1] = scattered
    return mask


@hidden_test
def grade_TransformerBlock(block_class: type[nn.Module]) -> None:
    check = HiddenCheck("TransformerBlock")
    check.error_causes.extend(BLOCK_CAUSES)
    generator = fresh_generator(404)
    n_heads = _integer(generator, 2, 4)
    d_model, d_ff = n_heads * _integer(generator, 3, 6), _integer(generator, 10, 30)
    p = round(0.1 + 0.3 * float(torch.rand(1, generator=generator)), 2)
    B, T = _integer(generator, 2, 5), _integer(generator, 4, 9)

    check.clause("members")
    block = check.call(block_class, d_model, n_heads, d_ff)
    check_block_members(check, block, d_model, n_heads, d_ff, 0.0)
    _randomise(block, generator)
    block.eval()
    x = torch.randn(B, T, d_model, generator=generator)
    padding_mask = _padding_masks(B, T, generator)
    real = ~padding_mask
    with torch.no_grad():
        check.clause("values")
        out = check.call(block, x)
        pair = isinstance(out, tuple | list)
        check.expect(not pair, "block(x) returns one tensor",
                     expected="a (B, T, d_model) tensor", got=type(out).__name__,
                     diagnoses={RETURNS_PAIR: pair and len(out) == 2
                                and tuple(torch.as_tensor(out[0]).shape) == (B, T, d_model)})
        out = check.tensor(out, "block(x)")
        check.shape(out, (B, T, d_model), "block(x)")
        correct, mistakes = _block_variants(block, x, None)
        check.close(out, correct, f"block(x) in eval mode for d_model={d_model}, "
                    f"n_heads={n_heads}, d_ff={d_ff}", mistakes=mistakes, atol=1e-4,
                    dims=("sentence", "position", "channel"))
        twin = pytorch_twin(block, d_model, n_heads, d_ff)
        check.close(out, twin(x), "block(x) agrees with nn.TransformerEncoderLayer "
                    "(norm_first=False) holding the same weights", atol=1e-4)
        one = check.tensor(check.call(block, x[:1]), "block(x) for a batch of one")
        check.shape(one, (1, T, d_model), f"block(x) for a batch of one, x of shape (1, {T}, "
                    f"{d_model})", likely=SQUEEZED_OUT if one.shape == (T, d_model) else None)
        check.close(one, correct[:1], "block(x) for a batch of one", atol=1e-4)

        check.clause("padding")

        def real(t: torch.Tensor) -> torch.Tensor:
            """The outputs at the real tokens; those at padded positions set to 0 (not compared)."""
            return t.masked_fill(padding_mask[..., None], 0.0)

        dims = ("sentence", "position", "channel")
        out = check.tensor(check.call(block, x, padding_mask=padding_mask),
                           "block(x, padding_mask=mask)")
        check.shape(out, (B, T, d_model), "block(x, padding_mask=mask)")
        positional = check.tensor(check.call(block, x, padding_mask), "block(x, mask)")
        block.train()  # dropout is 0: only the code path changes
        trained, other_seed = (torch.as_tensor(check.call_seeded(
            _integer(generator, 0, 2**30), block, x, padding_mask=padding_mask))
            for _ in range(2))
        block.eval()
        correct, mistakes = _block_variants(block, x, padding_mask)

        def agrees(t: torch.Tensor) -> bool:
            return t.shape == correct.shape and bool(torch.allclose(real(t), real(correct),
                                                                    atol=1e-4))

        unmasked = _block_variants(block, x, None)[0]
        first = ({MASK_KEYWORD_LOST: unmasked} if agrees(positional)
                 else {MASK_ONLY_IN_TRAINING: unmasked} if agrees(trained) else {})
        check.close(real(out), real(correct),
                    "block(x, padding_mask=mask) at the real tokens (the outputs at padded "
                    "positions are not compared)",
                    mistakes={k: real(v) for k, v in {**first, **mistakes}.items()}, atol=1e-4,
                    dims=dims)
        check.close(real(positional), real(correct),
                    "the padding mask also works as the second positional argument", atol=1e-4,
                    dims=dims)
        # A block that is random with dropout=0 is told so under dropout below.
        if other_seed.shape != trained.shape or torch.allclose(other_seed, trained, atol=1e-6):
            check.close(real(check.tensor(trained, "block(x, padding_mask=mask) in training "
                                                   "mode")),
                        real(correct), "block(x, padding_mask=mask) in training mode "
                        "(dropout=0) at the real tokens",
                        mistakes={MASK_ONLY_IN_EVAL: real(unmasked)}, atol=1e-4, dims=dims)

        check.clause("members")
        dropping = check.call(block_class, d_model, n_heads, d_ff, dropout=p)
        check_block_members(check, dropping, d_model, n_heads, d_ff, p)
        _randomise(dropping, generator)
        dropping.eval()

        check.clause("dropout")
        reference = _block_variants(dropping, x, None)[0]
        eval_1, eval_2 = (torch.as_tensor(check.call_seeded(_integer(generator, 0, 2**30),
                                                            dropping, x)) for _ in range(2))
        check.close(eval_1, reference, f"with dropout={p}, the block in eval mode computes the "
                    "same output as without dropout", atol=1e-4,
                    diagnoses={DROPOUT_IN_EVAL: lambda: not torch.allclose(eval_1, eval_2)})
        dropping.train()
        seeds = [_integer(generator, 0, 2**30) for _ in range(2)]
        first, again, other = (torch.as_tensor(check.call_seeded(seed, dropping, x))
                               for seed in (seeds[0], seeds[0], seeds[1]))
        check.close(again, first, "in training mode, the same seed gives the same output")
        prescribed = trained_references(dropping, x, seeds[0], p)  # before the weights change

        check.clause("padding")
        # Dropout's draws depend on the seed and the shapes only: with one seed, the real
        # tokens' outputs cannot depend on what the padded positions hold.
        noisy = x.masked_fill(padding_mask[..., None], 0.0) + padding_mask[..., None] * (
            50.0 + 50.0 * torch.rand(B, T, d_model, generator=generator))
        seed = _integer(generator, 0, 2**30)
        padded = torch.as_tensor(check.call_seeded(seed, dropping, x, padding_mask=padding_mask))
        check.close(real(torch.as_tensor(check.call_seeded(seed, dropping, noisy,
                                                           padding_mask=padding_mask))),
                    real(padded), f"in training mode with dropout={p} (one seed for both "
                    "calls), changing the padded inputs does not change the real tokens' "
                    "outputs", atol=1e-4, dims=dims, diagnoses={MASK_ONLY_IN_EVAL: lambda: bool(
                        torch.allclose(real(padded), real(torch.as_tensor(check.call_seeded(
                            seed, dropping, x))), atol=1e-5))})

        check.clause("dropout")
        check.expect(not torch.allclose(first, other, atol=1e-5),
                     "in training mode, two seeds give different outputs (dropout draws afresh)",
                     expected="different outputs", got="the same output",
                     likely=DROPOUT_RESEEDED)
        full = check.call(block_class, d_model, n_heads, d_ff, dropout=1.0)
        _randomise(full, generator)
        full.eval()
        # nn.MultiheadAttention's own dropout drops all its weights: its output is the bias
        # of its output projection
        kept = full.norm_1(x + full.attention.out_proj.bias)
        none_kept = full.norm_1(x)
        expected = full.norm_2(none_kept)
        full.train()
        dropped = torch.as_tensor(check.call_seeded(_integer(generator, 0, 2**30), full, x))
        check.close(dropped, expected, "with dropout=1 in training mode both sub-layer outputs "
                    "are dropped: the block returns norm_2(norm_1(x))", atol=1e-4,
                    mistakes={DROPOUT_UNUSED: full.norm_2(kept + full.mlp(kept)),
                              DROPOUT_ATTENTION_ONLY: full.norm_2(none_kept
                                                                  + full.mlp(none_kept)),
                              DROPOUT_MLP_ONLY: full.norm_2(kept),
                              DROPOUT_ON_INPUTS: full.norm_2(kept + full.mlp(torch.zeros_like(x)))},
                    diagnoses={DROPOUT_AFTER_NORM: lambda: bool(dropped.abs().amax() < 1e-6),
                        DROPOUT_ON_THE_SUM: lambda: bool(
                        (dropped - dropped[:1, :1]).abs().amax() < 1e-4
                        and dropped.abs().amax() >= 1e-6),
                        DROPOUT_FIXED_P: lambda: not torch.allclose(dropped, torch.as_tensor(
                            check.call_seeded(_integer(generator, 0, 2**30), full, x)),
                            atol=1e-5)})
        # The attention's own dropout (on its weights) makes two seeds differ by itself; with
        # its output projection set to zero only the block's dropout can.
        dropping.attention.out_proj.weight.zero_()
        silent = [torch.as_tensor(check.call_seeded(_integer(generator, 0, 2**30), dropping, x))
                  for _ in range(2)]
        check.expect(not torch.allclose(silent[0], silent[1], atol=1e-5),
                     "in training mode, the block's dropout draws a fresh mask on every call "
                     "(two seeds give different outputs with the attention's output projection "
                     "set to zero)", expected="different outputs", got="the same output",
                     likely=DROPOUT_DRAWN_ONCE)
        # Constant sub-layer outputs (zero weights, fresh constant biases) and a small norm_1:
        # each token's output then shows both dropout masks (see masks_differ).
        sizes = 1.0 + 2.0 * torch.rand(3, generator=generator)
        dropping.attention.out_proj.bias.fill_(float(sizes[0]))
        dropping.mlp[0].weight.zero_()
        dropping.mlp[0].bias.fill_(1.0)
        dropping.mlp[2].weight.zero_()
        dropping.mlp[2].bias.fill_(2.0 * float(sizes[1]))
        dropping.norm_1.weight.fill_(0.1)
        dropping.norm_1.bias.zero_()
        dropping.norm_2.weight.fill_(float(sizes[2]))
        dropping.norm_2.bias.zero_()
        # many tokens, each with all its features equal (norm_1 then sees only the mask)
        flat = torch.randn(8, 12, 1, generator=generator).expand(8, 12, d_model).clone()
        shown = torch.as_tensor(check.call_seeded(_integer(generator, 0, 2**30), dropping, flat))
        check.expect(masks_differ(shown / float(sizes[2])),
                     "in training mode, each sub-layer output gets its own dropout mask (with "
                     "constant sub-layer outputs, the output shows both masks)",
                     expected="two independent masks", got="the same mask on both outputs",
                     likely=DROPOUT_SHARED_MASK)
        expect_trained_dropout(check, first, prescribed, p)

    check.clause("device")
    on_meta = check.call_seeded(_integer(generator, 0, 2**30), block_class, d_model, n_heads,
                                d_ff).to("meta")
    check.device_follows(on_meta, x, padding_mask=padding_mask,
                         what="block(x, padding_mask=mask)")

    check.clause("gradients")
    block.train()
    weights = torch.randn(B, T, d_model, generator=generator)
    output = torch.as_tensor(check.call(block, x, padding_mask=padding_mask))
    if output.requires_grad:
        check.backward(output * weights, "the block")
    missing = [name for name, parameter in block.named_parameters()
               if parameter.grad is None or not bool(parameter.grad.abs().sum() > 0)]
    check.expect(not missing, "in training mode, every parameter gets a gradient",
                 expected="a nonzero gradient for every parameter",
                 got=f"none for {', '.join(missing[:4])}",
                 likely="part of the block is cut off from the gradient (.detach(), "
                        "torch.no_grad() or .data in forward): training would never change it")
    block.zero_grad()
    expect_input_gradient(check, block, x, padding_mask, weights, d_model, n_heads, d_ff)
    check.passed()


# ---- mean_pool --------------------------------------------------------------------------------


def _masked_sum(h: torch.Tensor, padding_mask: torch.Tensor) -> torch.Tensor:
    return (h.double() * (~padding_mask).unsqueeze(-1)).sum(dim=1)


def _masks(B: int, T: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Padding at the end, at the start and scattered; every row keeps a real token, and
    the first row has none (lengths drawn afresh)."""
    lengths = torch.randint(1, T, (B,), generator=generator)
    lengths[0] = T
    end = torch.arange(T)[None, :] >= lengths[:, None]
    scattered = torch.rand(B, T, generator=generator) < 0.5
    scattered[torch.arange(B), torch.randint(0, T, (B,), generator=generator)] = False
    scattered[1, :] = True
    scattered[1, _integer(generator, 0, T)] = False
    return {"padding at the end": end, "padding at the start (left padding)": end.flip(1),
            "padding scattered in the sequence": scattered}


@hidden_test
def grade_mean_pool(mean_pool: Callable[..., torch.Tensor]) -> None:
    check = HiddenCheck("mean_pool")
    check.error_causes.extend(POOL_CAUSES)
    generator = fresh_generator(405)
    # B < T < d: averaging over a wrong axis always gives a shape of its own
    B, T, d = _integer(generator, 2, 5), _integer(generator, 5, 9), _integer(generator, 9, 13)
    h = torch.randn(B, T, d, generator=generator) + 0.5  # nonzero mean: sums differ from means

    check.clause("shape")
    out = check.tensor(check.call(mean_pool, h), "mean_pool(h)")
    check.expect(tuple(out.shape) == (B, d), f"mean_pool(h) for h {(B, T, d)} has shape {(B, d)}",
                 expected=f"shape {(B, d)}", got=f"shape {tuple(out.shape)}", diagnoses={
                     "averaged over the features (the last axis) instead of time (dim=1)":
                         tuple(out.shape) == (B, T),
                     "averaged over the batch (dim=0) instead of time (dim=1)":
                         tuple(out.shape) == (T, d),
                     POOL_EVERYTHING: tuple(out.shape) == ()})
    masks = _masks(B, T, generator)
    end = masks["padding at the end"]
    one = check.tensor(check.call(mean_pool, h[1:2], end[1:2]), "mean_pool for a batch of one")
    check.expect(tuple(one.shape) == (1, d), f"mean_pool(h, mask) for h (1, {T}, {d}) has "
                 f"shape (1, {d})", expected=f"shape (1, {d})", got=f"shape {tuple(one.shape)}",
                 diagnoses={"the batch axis was squeezed away: keep (B, d) even for B = 1":
                            tuple(one.shape) == (d,)})

    check.clause("values")
    check.close(out, h.double().mean(dim=1), "mean_pool(h) without a mask", mistakes={
        "summed over time instead of averaging": h.sum(dim=1),
    })

    check.clause("padding")
    for name, padding_mask in masks.items():
        out = check.tensor(check.call(mean_pool, h, padding_mask), f"mean_pool(h, mask) ({name})")
        check.shape(out, (B, d), f"mean_pool(h, mask) ({name})")
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
            POOL_PADDING_COUNT: _masked_sum(h, padding_mask) / n_pad.clamp_min(1),
            POOL_WHOLE_BATCH: h.double()[~padding_mask].mean(dim=0).expand(B, d),
            POOL_SUM_ALL: h.double().sum(dim=1) / lengths,
        }
        if name != "padding at the end":
            first = torch.stack([h[i, :int(n)].double().mean(dim=0)
                                 for i, n in enumerate(lengths.flatten().tolist())])
            mistakes["assumed the real tokens come first (took the first L positions); use the "
                     "mask itself, wherever the padding is"] = first
        check.close(out, _masked_sum(h, padding_mask) / lengths, f"mean_pool(h, mask) ({name})",
                    mistakes=mistakes)
    no_padding = torch.zeros(B, T, dtype=torch.bool)
    check.close(check.call(mean_pool, h, no_padding), h.double().mean(dim=1),
                "an all-False mask gives the plain mean")
    long_T = _integer(generator, 30, 50)
    long = torch.randn(2, long_T, 3, generator=generator)
    short = _integer(generator, 1, 5)
    mask = torch.arange(long_T)[None, :] >= torch.tensor([short, long_T])[:, None]
    check.close(check.call(mean_pool, long, mask), _masked_sum(long, mask) / torch.tensor(
        [[float(short)], [float(long_T)]], dtype=torch.float64),
        "a long batch with one short sequence", mistakes={
        "divided by T instead of the true length (the number of real tokens)":
            _masked_sum(long, mask) / long_T,
        "pooling averages the padding too: the mask was ignored": long.double().mean(dim=1),
        POOL_SUM_ALL: long.double().sum(dim=1) / torch.tensor([[float(short)], [float(long_T)]],
                                                               dtype=torch.float64),
    })

    check.clause("dtype")
    check.dtype_follows(mean_pool, h, masks["padding scattered in the sequence"],
                        what="mean_pool(h, padding_mask)")
    check.clause("device")
    check.device_follows(mean_pool, h, what="mean_pool(h) (padding_mask=None)")
    check.device_follows(mean_pool, h, masks["padding at the start (left padding)"],
                         what="mean_pool(h, padding_mask)")
    check.passed()

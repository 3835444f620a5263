"""Hidden tests for tutorial 08 (attention beyond words).

Every input, sizes included, is drawn from ``fresh_generator``; each case keeps its
character (square or not, a patch size of 1 or of the whole image, a batch of one,
d_model equal to C·p·p, logits in the hundreds).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.beyond_words import (
    ONE_NUMBER,
    PER_POSITION,
    PRODUCT,
    SQUEEZED,
    SUMMED_OVER_BATCH,
    call_patchify,
    expect_embedding,
    expect_gradients,
    expect_init,
    expect_members,
    expect_on_logits_device,
    expect_on_meta,
    expect_patch_shape,
    explained_call,
    ids_on_positions,
    large_cases,
    patchify_mistakes,
    set_parameters,
    term_mistakes,
    unfolded,
)
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test

PatchifyFn = Callable[[torch.Tensor, int], torch.Tensor]


def _draw(generator: torch.Generator, low: int, high: int) -> int:
    """A whole number from low to high (both included)."""
    return int(torch.randint(low, high + 1, (), generator=generator))


# ---- patchify -------------------------------------------------------------------------------

def _patchify_cases(generator: torch.Generator) -> list[tuple[int, int, int, int, int]]:
    """(B, C, H, W, p) for the "arguments" clause: a patch size of 4 (a size fixed at 2
    gives a recognisable shape); not square; a patch size of 1; one patch per image; any."""
    draw = lambda low, high: _draw(generator, low, high)  # noqa: E731
    p, rows = draw(2, 3), draw(2, 3)
    four = (draw(1, 2), draw(1, 2), 4 * draw(2, 3), 4 * draw(2, 3), 4)
    wide = (draw(1, 3), draw(1, 3), p * rows, p * (rows + draw(1, 2)), p)
    one = (draw(1, 3), draw(1, 3), draw(2, 4), draw(2, 5), 1)
    side = draw(2, 6)
    whole = (draw(2, 3), draw(1, 3), side, side, side)
    p = draw(1, 4)
    free = (draw(1, 4), draw(1, 4), p * draw(1, 4), p * draw(1, 4), p)
    return [four, wide, one, whole, free]


@hidden_test
def grade_patchify(patchify: PatchifyFn) -> None:
    check = HiddenCheck("patchify")
    generator = fresh_generator(808)
    draw = lambda low, high: _draw(generator, low, high)  # noqa: E731

    check.clause("shape")
    # square, patches of 2, several channels (C·p·p ≠ N), called by keyword
    p = 2
    side, C, B = p * draw(2, 3), draw(2, 3), draw(2, 4)
    images = torch.randn(B, C, side, side, generator=generator)
    out = call_patchify(check, patchify, images, p, by_keyword=True)
    expect_patch_shape(check, out, images, p)
    one = call_patchify(check, patchify, images[:1], p)
    expect_patch_shape(check, one, images[:1], p)

    check.clause("values")
    check.close(out, unfolded(images, p), f"patches of images of shape {tuple(images.shape)}, "
                f"patch_size={p}", mistakes=patchify_mistakes(images, p),
                dims=("image", "patch", "entry"))
    check.close(one, unfolded(images[:1], p), "the patches of a batch of one",
                mistakes=patchify_mistakes(images[:1], p), dims=("image", "patch", "entry"))

    check.clause("arguments")
    for B, C, H, W, p in _patchify_cases(generator):
        images = torch.randn(B, C, H, W, generator=generator)
        out = call_patchify(check, patchify, images, p)
        expect_patch_shape(check, out, images, p)
        check.close(out, unfolded(images, p),
                    f"patches of images of shape {(B, C, H, W)}, patch_size={p}",
                    mistakes=patchify_mistakes(images, p), dims=("image", "patch", "entry"))

    p = draw(2, 3)
    images = torch.randn(draw(1, 3), draw(1, 3), p * draw(1, 3), p * draw(2, 4),
                         generator=generator)
    check.clause("dtype")
    check.dtype_follows(patchify, images, p, what=f"patchify(images, {p})")
    check.clause("device")
    expect_on_meta(check, patchify, images, p)
    check.device_follows(patchify, images, p, what=f"patchify(images, {p})")
    check.passed()


# ---- PatchEmbedding -------------------------------------------------------------------------

def _embedding_cases(generator: torch.Generator) -> list[tuple[int, int, int, int, int, int]]:
    """(p, C, d, H, W, B) for the "arguments" clause, all with images that are not square:
    d_model == C·p·p (projecting too late gives a value instead of a crash), a patch size of
    3 with several channels, and any sizes."""
    draw = lambda low, high: _draw(generator, low, high)  # noqa: E731
    cases = []
    p, C = draw(1, 2), draw(2, 3)
    rows = draw(1, 3)
    cases.append((p, C, C * p * p, p * rows, p * (rows + draw(1, 2)), draw(2, 3)))
    C, rows = draw(2, 3), draw(1, 2)
    cases.append((3, C, draw(3, 12), 3 * rows, 3 * (rows + 1), draw(2, 3)))
    p, rows = draw(1, 3), draw(1, 3)
    cases.append((p, draw(1, 3), draw(2, 12), p * rows, p * (rows + draw(1, 2)), draw(1, 4)))
    return cases


@hidden_test
def grade_PatchEmbedding(embedding_class: type[nn.Module]) -> None:  # noqa: N802
    check = HiddenCheck("PatchEmbedding")
    generator = fresh_generator(818)
    draw = lambda low, high: _draw(generator, low, high)  # noqa: E731
    seeds = torch.randperm(10_000, generator=generator)[:3].tolist()

    check.clause("members")
    # one channel and patches of 2, as the notebook's ViT uses it; d_model ≠ C·p·p
    p, C, d = 2, 1, draw(5, 12)
    H, W, B = p * draw(2, 3), p * draw(2, 3), draw(2, 4)
    N = (H // p) * (W // p)
    module = check.call_seeded(seeds[0], embedding_class, p, C, d, N)
    expect_members(check, module, p, C, d, N)

    check.clause("init")
    expect_init(check, embedding_class, p, C, d, N, seeds=(seeds[1], seeds[2]))

    check.clause("values")
    # twice, with other parameters and images: no output is kept from a call to the next
    earlier = earlier_images = None
    for call in ("", " (a second call, with new parameters and images)"):
        values = set_parameters(module, generator, p, C, d, N)
        images = torch.randn(B, C, H, W, generator=generator)
        earlier = expect_embedding(check, module, images, p, values,
                                   f"embedding of {B} images, p={p}, C={C}, d_model={d}{call}",
                                   earlier=earlier, earlier_images=earlier_images)
        earlier_images = images

    check.clause("shape")
    expect_embedding(check, module, images[:1], p, values, "the embedding of a batch of one")

    check.clause("arguments")
    for p, C, d, H, W, B in _embedding_cases(generator):
        N = (H // p) * (W // p)
        module = check.call_seeded(seeds[0], embedding_class, p, C, d, N)
        expect_members(check, module, p, C, d, N)
        values = set_parameters(module, generator, p, C, d, N)
        images = torch.randn(B, C, H, W, generator=generator)
        expect_embedding(check, module, images, p, values,
                         f"embedding with patch_size={p}, in_channels={C}, d_model={d}, "
                         f"n_patches={N} of {H}×{W} images")

    check.clause("gradients")
    values = set_parameters(module, generator, p, C, d, N)
    # the rebuilt module's parameters do not show the student's requires_grad
    expect_gradients(check, module, images, p, values, generator, sees_requires_grad=False)

    check.clause("device")
    on_meta = check.call_seeded(seeds[1], embedding_class, p, C, d, N).to("meta")
    check.device_follows(on_meta, images, what="module(images)")
    check.passed()


# ---- sequence_log_prob ----------------------------------------------------------------------

WRONG_DIM_1 = ("the log-softmax ran over the positions (dim=1) instead of the vocabulary "
               "(dim=-1)")
OFF_BY_ONE = ("the log-probabilities are off by one position: logits[:, t] was scored against "
              "tokens[:, t], but it predicts the next token, tokens[:, t + 1]")


def _reference(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.double(), dim=-1)[:, :-1].gather(
        -1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def _log_prob_mistakes(logits: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    x = logits.double()
    B, T, V = x.shape
    logp = torch.log_softmax(x, dim=-1)
    probs = torch.softmax(x, dim=-1)
    nxt = tokens[:, 1:].unsqueeze(-1)

    def picked(table: torch.Tensor, index: torch.Tensor = nxt, upto: int = T - 1) -> torch.Tensor:
        return table[:, :upto].gather(-1, index).squeeze(-1)

    right = picked(logp)
    wrapped = torch.stack([logp[:, t - 1].gather(-1, tokens[:, t:t + 1]).squeeze(-1)
                           for t in range(T)], dim=1)
    mistakes = {
        OFF_BY_ONE: picked(logp, tokens.unsqueeze(-1), T).sum(1),
        OFF_BY_ONE + " (here for t = 1..T-1)":
            logp[:, 1:].gather(-1, nxt).squeeze(-1).sum(1),
        "the shift goes the wrong way: logits[:, t + 1] was scored against tokens[:, t]; "
        "logits[:, t] predicts tokens[:, t + 1]":
            logp[:, 1:].gather(-1, tokens[:, :-1].unsqueeze(-1)).squeeze(-1).sum(1),
        "a term for token 0 was included (the loop starts at t = 0, where logits[:, t - 1] is "
        "the last position): nothing predicts token 0, score tokens 1..T-1 only":
            wrapped.sum(1),
        "probabilities were summed instead of log-probabilities": picked(probs).sum(1),
        PRODUCT: picked(probs).prod(1),
        WRONG_DIM_1: picked(torch.log_softmax(x, dim=1)).sum(1),
        WRONG_DIM_1 + " (here over the T - 1 positions kept)":
            picked(torch.log_softmax(x[:, :-1], dim=1)).sum(1),
        **(term_mistakes(logits, tokens) if T > 2 else {}),  # for T = 2: both give 0
        "the mean over positions was returned; the log-probability of a sentence is the sum":
            right.mean(1),
        "the raw logits were summed: apply log_softmax over the vocabulary first":
            picked(x).sum(1),
        "the sign is flipped: cross-entropy is the negative log-probability": -right.sum(1),
    }
    if B > 1:  # over a batch of one, a log-softmax over dim 0 gives 0 everywhere
        mistakes["the log-softmax ran over the batch (dim=0) instead of the vocabulary "
                 "(dim=-1)"] = picked(torch.log_softmax(x, dim=0)).sum(1)
    return mistakes


@hidden_test
def grade_sequence_log_prob(sequence_log_prob: Callable[[torch.Tensor, torch.Tensor],
                                                        torch.Tensor]) -> None:
    check = HiddenCheck("sequence_log_prob")
    generator = fresh_generator(828)
    draw = lambda low, high: _draw(generator, low, high)  # noqa: E731

    check.clause("shape")
    B, T, V = draw(2, 5), draw(3, 8), draw(3, 12)
    logits = 3.0 * torch.randn(B, T, V, generator=generator)
    tokens = torch.randint(V, (B, T), generator=generator)
    out = check.tensor(explained_call(check, sequence_log_prob, logits=logits, tokens=tokens,
                                      explanations=ids_on_positions(T)),
                       f"sequence_log_prob(logits {(B, T, V)}, tokens {(B, T)})")
    got = tuple(out.shape)
    check.expect(got == (B,), f"the result for {B} sentences has shape {(B,)}",
                 expected=f"shape {(B,)}: one log-probability per sentence", got=f"shape {got}",
                 diagnoses={PER_POSITION: got == (B, T - 1),
                            SUMMED_OVER_BATCH: got == (T - 1,),
                            ONE_NUMBER: out.numel() == 1})
    one = check.tensor(check.call(sequence_log_prob, logits[:1], tokens[:1]),
                       "sequence_log_prob for a batch of one sentence")
    check.expect(tuple(one.shape) == (1,), "the result for a batch of one has shape (1,)",
                 expected="shape (1,)", got=f"shape {tuple(one.shape)}",
                 diagnoses={SQUEEZED: one.dim() == 0})

    check.clause("values")
    cases = [(logits, tokens), (logits[:1], tokens[:1])]
    for B, T, V in ((draw(2, 5), draw(4, 9), draw(2, 14)), (draw(2, 4), 2, draw(3, 9)),
                    (draw(1, 3), draw(2, 6), draw(2, 6))):
        cases.append((3.0 * torch.randn(B, T, V, generator=generator),
                      torch.randint(V, (B, T), generator=generator)))
    for k, (logits, tokens) in enumerate(cases):
        B, T, V = logits.shape
        out = out if k == 0 else one if k == 1 else check.call(sequence_log_prob, logits, tokens)
        check.close(out, _reference(logits, tokens), f"log-probabilities of {B} sentences of "
                    f"{T} tokens, vocabulary {V}", mistakes=_log_prob_mistakes(logits, tokens),
                    atol=1e-4, dims=("sentence",))

    check.clause("large")
    tokens = torch.randint(draw(3, 8), (4 * draw(1, 2), draw(3, 7)), generator=generator)
    # exp(gap / 2) overflows float32; exp(-huge) underflows even float64
    gap = float(200 + 100 * torch.rand(1, generator=generator))
    huge = float(1600 + 800 * torch.rand(1, generator=generator))
    offset = float(500 + 1000 * torch.rand(1, generator=generator))
    large_cases(tokens, (gap, huge), offset, check, sequence_log_prob,
                "logits of ±{half:.0f} (a model very sure of the right tokens, or of wrong "
                "ones) and ordinary logits shifted by ±{offset:.0f} give exact, finite scores",
                _reference)

    B, T, V = draw(1, 4), draw(2, 6), draw(2, 9)
    logits = 3.0 * torch.randn(B, T, V, generator=generator)
    tokens = torch.randint(V, (B, T), generator=generator)
    check.clause("dtype")
    check.dtype_follows(sequence_log_prob, logits, tokens, what="sequence_log_prob")
    check.clause("device")
    expect_on_logits_device(check, sequence_log_prob, logits, tokens)
    check.passed()

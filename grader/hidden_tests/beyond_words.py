"""Hidden tests for tutorial 08 (attention beyond words)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from helpers.checks.beyond_words import (
    CHANNELS_LAST,
    CLS_LAST,
    CLS_PROJECTED,
    COLUMN_ORDER,
    NO_POSITIONS,
    PLAIN_RESHAPE,
    POSITIONS_BEFORE_CLS,
    PROJ_AFTER,
    TRANSPOSED,
    UNDERFLOW,
    call_explaining,
    call_patchify,
    crash_explanations,
    expect_patch_shape,
    extreme_logits,
)
from hidden_tests.common import HiddenCheck, fresh_generator, hidden_test

PatchifyFn = Callable[[torch.Tensor, int], torch.Tensor]
WRONG_PATCHES = ("the patches fed to proj are not those of patchify (the class token and "
                 "positions are right): make Exercise 1 pass, and embed patchify(images, "
                 "patch_size)")
POSITIONS_ONE_SHORT = ("positions has one row per patch only: the class token needs a position "
                       "too, so its shape is (1, n_patches + 1, d_model)")


# ---- reference and mistakes (grader side only) ---------------------------------------------

def _grid(images: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/p, W/p, C, p, p): patch (i, j), then its pixels by channel, row,
    column."""
    B, C, H, W = images.shape
    return images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)


def _patches(images: torch.Tensor, p: int) -> torch.Tensor:
    B, C, H, W = images.shape
    return _grid(images.double(), p).reshape(B, (H // p) * (W // p), C * p * p)


def _patchify_mistakes(images: torch.Tensor, p: int) -> dict[str, torch.Tensor]:
    x = images.double()
    B, C, H, W = x.shape
    N, D = (H // p) * (W // p), C * p * p
    grid = _grid(x, p)
    return {
        COLUMN_ORDER: grid.transpose(1, 2).reshape(B, N, D),
        CHANNELS_LAST: grid.permute(0, 1, 2, 4, 5, 3).reshape(B, N, D),
        TRANSPOSED: grid.transpose(-1, -2).reshape(B, N, D),
        PLAIN_RESHAPE: x.reshape(B, N, D),
    }


# ---- patchify -------------------------------------------------------------------------------

@hidden_test
def grade_patchify(patchify: PatchifyFn) -> None:
    check = HiddenCheck("patchify")
    generator = fresh_generator(808)
    # The second case (square, p = 4) tells a patch size fixed at 2 apart from a crash; the
    # last one has fresh sizes, never those of another case.
    fixed = ((2, 3, 4, 6, 2), (1, 1, 8, 8, 4), (3, 2, 9, 6, 3), (2, 4, 2, 4, 1), (1, 2, 6, 6, 6))
    fresh = fixed[0]
    while any(fresh[1:] == case[1:] for case in fixed):
        B, C, p, rows, columns = (int(n) for n in torch.randint(1, 6, (5,), generator=generator))
        fresh = (B, C, rows * p, columns * p, p)
    for B, C, H, W, p in (*fixed, fresh):
        images = torch.randn(B, C, H, W, generator=generator)
        original = images.clone()
        out = call_patchify(check, patchify, images, p)
        check.close(images, original, "the images are left unchanged",
                    likely="the images were changed in place; build the result in a new tensor")
        expect_patch_shape(check, out, images, p)
        check.close(out, _patches(images, p),
                    f"patches of images of shape {(B, C, H, W)}, patch_size={p}",
                    mistakes=_patchify_mistakes(images, p), dims=("image", "patch", "entry"))
    check.passed()


# ---- PatchEmbedding -------------------------------------------------------------------------

def _parameter(check: HiddenCheck, module: nn.Module, name: str, shape: tuple[int, ...],
               patch_numbers: int) -> torch.Tensor:
    value = getattr(module, name, None)
    check.expect(isinstance(value, nn.Parameter), f"member `{name}` is an nn.Parameter",
                 expected=f"self.{name} = nn.Parameter(...) of shape {shape}",
                 got=type(value).__name__)
    got = tuple(value.shape)
    check.expect(got == shape, f"`{name}` has shape {shape}", expected=f"shape {shape}",
                 got=f"shape {got}",
                 diagnoses={POSITIONS_ONE_SHORT: name == "positions"
                            and got == (1, shape[1] - 1, shape[2]),
                            CLS_PROJECTED: name == "cls_token" and got == (1, 1, patch_numbers)})
    return value


def _build_embedding(check: HiddenCheck, embedding_class: type[nn.Module], p: int, C: int,
                     d: int, N: int) -> nn.Module:
    module = check.call(embedding_class, p, C, d, N)
    check.expect(isinstance(module, nn.Module), "the class builds an nn.Module",
                 expected="an nn.Module", got=type(module).__name__)
    proj = getattr(module, "proj", None)
    check.expect(isinstance(proj, nn.Linear), "member `proj` is an nn.Linear",
                 expected="self.proj = nn.Linear(in_channels * patch_size**2, d_model)",
                 got=type(proj).__name__)
    check.expect(tuple(proj.weight.shape) == (d, C * p * p),
                 f"`proj` maps C·p·p = {C * p * p} numbers to d_model = {d}",
                 expected=f"weight of shape {(d, C * p * p)}",
                 got=f"weight of shape {tuple(proj.weight.shape)}")
    check.expect(proj.bias is not None, "`proj` has a bias", expected="nn.Linear's default "
                 "bias=True", got="no bias")
    _parameter(check, module, "cls_token", (1, 1, d), C * p * p)
    _parameter(check, module, "positions", (1, N + 1, d), C * p * p)
    n_params = sum(q.numel() for q in module.parameters())
    wanted = (C * p * p + 1) * d + d + (N + 1) * d
    check.expect(n_params == wanted, "the module holds exactly proj, cls_token and positions",
                 expected=f"{wanted} parameters", got=f"{n_params} parameters")
    return module


def _assemble(cls: torch.Tensor, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Class token first, then the tokens; positions added to all of them."""
    return torch.cat([cls.expand(len(tokens), 1, -1), tokens], dim=1) + pos


def _embedding_mistakes(patches: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                        cls: torch.Tensor, pos: torch.Tensor) -> dict[str, torch.Tensor]:
    tokens = patches @ weight.T + bias
    B, N = tokens.shape[:2]
    first = cls.expand(B, 1, -1)
    mistakes = {
        POSITIONS_BEFORE_CLS: torch.cat([first, tokens + pos[:, 1:]], dim=1),
        POSITIONS_BEFORE_CLS + " (here the first n_patches positions went to the patches)":
            torch.cat([first, tokens + pos[:, :N]], dim=1),
        NO_POSITIONS: torch.cat([first, tokens], dim=1),
        CLS_LAST: torch.cat([tokens, first], dim=1) + pos,
    }
    if weight.shape[0] == weight.shape[1]:  # d_model == C·p·p: these do not crash
        mistakes[PROJ_AFTER] = _assemble(cls, patches, pos) @ weight.T + bias
        mistakes[CLS_PROJECTED] = _assemble(cls @ weight.T + bias, tokens, pos)
    return mistakes


STALE_OUTPUT = ("the output of an earlier call came back: forward must compute the embedding "
                "from the images and parameters it is given, every time it is called")
NO_GRADIENT = ("forward cut this parameter off from the output (.detach(), .data, "
               "torch.no_grad() or a copy), so training could never change it; use the "
               "parameter itself in forward")


def _set_parameters(module: nn.Module, generator: torch.Generator, p: int, C: int, d: int,
                    N: int) -> tuple[torch.Tensor, ...]:
    """Fresh values for proj, cls_token and positions, set on the module; returned."""
    weight = 0.5 * torch.randn(d, C * p * p, generator=generator)
    bias = 0.5 * torch.randn(d, generator=generator)
    cls = torch.randn(1, 1, d, generator=generator)
    pos = torch.randn(1, N + 1, d, generator=generator)
    with torch.no_grad():
        module.proj.weight.copy_(weight)
        module.proj.bias.copy_(bias)
        module.cls_token.copy_(cls)
        module.positions.copy_(pos)
    return weight, bias, cls, pos


def _expect_gradients(check: HiddenCheck, module: nn.Module, images: torch.Tensor, p: int,
                      values: tuple[torch.Tensor, ...], generator: torch.Generator) -> None:
    """The gradients of a random linear function of the output reach every parameter, with
    the values the reference gives."""
    module.zero_grad()
    out = check.tensor(check.call(module, images), "module(images) with gradients enabled")
    leaves = [v.double().requires_grad_() for v in values]
    weight, bias, cls, pos = leaves
    reference = _assemble(cls, _patches(images, p) @ weight.T + bias, pos)
    check.close(out.detach(), reference.detach(), "with gradients enabled (as in training), "
                "the output is the same as without", atol=1e-4,
                dims=("image", "token", "channel"))
    direction = torch.randn(out.shape, generator=generator)
    (out * direction).sum().backward()
    (reference * direction.double()).sum().backward()
    names = ("proj.weight", "proj.bias", "cls_token", "positions")
    parameters = dict(module.named_parameters())
    for name, leaf in zip(names, leaves, strict=True):
        grad = parameters[name].grad
        check.expect(grad is not None, f"the gradient of the output reaches `{name}`",
                     expected="a gradient", got="None (no gradient)",
                     likely=NO_GRADIENT)
        check.close(grad, leaf.grad, f"the gradient of sum(output · R) for a random R with "
                    f"respect to `{name}`", atol=1e-3, rtol=1e-4)


@hidden_test
def grade_PatchEmbedding(embedding_class: type[nn.Module]) -> None:  # noqa: N802
    check = HiddenCheck("PatchEmbedding")
    generator = fresh_generator(818)
    # The first case has d_model == C·p·p, so that projecting after the positions gives a
    # value to recognise instead of a crash; the last has fresh sizes, never those of another.
    fixed = ((2, 3, 12, 4, 6, 3), (2, 1, 8, 8, 8, 2), (3, 2, 10, 6, 9, 4))
    fresh = fixed[0]
    while any(fresh[:5] == case[:5] for case in fixed):
        p, C, rows, columns, B = (int(n) for n in torch.randint(1, 5, (5,), generator=generator))
        d = int(torch.randint(2, 13, (), generator=generator))
        fresh = (p, C, d, rows * p, columns * p, B)
    for p, C, d, H, W, B in (*fixed, fresh):
        N = (H // p) * (W // p)
        module = _build_embedding(check, embedding_class, p, C, d, N)
        # twice, with other parameters and images: no output is kept from a call to the next
        earlier = None
        for _ in range(2):
            values = _set_parameters(module, generator, p, C, d, N)
            images = torch.randn(B, C, H, W, generator=generator)
            earlier = _expect_embedding(check, module, images, p, values, earlier)
        _expect_gradients(check, module, images, p, values, generator)
    check.passed()


def _expect_embedding(check: HiddenCheck, module: nn.Module, images: torch.Tensor, p: int,
                      values: tuple[torch.Tensor, ...], earlier: torch.Tensor | None
                      ) -> torch.Tensor:
    """The module's output for ``images`` with the parameters ``values`` (the output of the
    call before, ``earlier``, names a stale answer); returned."""
    B, C, H, W = images.shape
    d, N = values[0].shape[0], values[3].shape[1] - 1
    with torch.no_grad():
        out = check.tensor(call_explaining(check, module, images,
                                           explanations=crash_explanations(B, N, d, C * p * p)),
                           f"module(images of shape {(B, C, H, W)})")
    check.expect(tuple(out.shape) == (B, N + 1, d),
                 f"the output for images of shape {(B, C, H, W)} has shape {(B, N + 1, d)}",
                 expected=f"shape {(B, N + 1, d)}: the class token and {N} patch tokens",
                 got=f"shape {tuple(out.shape)}",
                 diagnoses={"the class token is missing: prepend it before adding the "
                            "positions": tuple(out.shape) == (B, N, d)})
    weight, bias, cls, pos = (t.double() for t in values)
    patches = _patches(images, p)
    wrong = [_assemble(cls, w @ weight.T + bias, pos)
             for w in _patchify_mistakes(images, p).values()]
    check.close(out, _assemble(cls, patches @ weight.T + bias, pos),
                f"embedding of {B} images, p={p}, C={C}, d_model={d}"
                + (" (a second call, with new parameters and images)" if earlier is not None
                   else ""),
                mistakes=_embedding_mistakes(patches, weight, bias, cls, pos), atol=1e-4,
                dims=("image", "token", "channel"), diagnoses={
                    STALE_OUTPUT: earlier is not None and torch.equal(out, earlier),
                    WRONG_PATCHES: lambda out=out, wrong=wrong: any(
                        torch.allclose(out.double(), w, atol=1e-4) for w in wrong)})
    return out


# ---- sequence_log_prob ----------------------------------------------------------------------

WRONG_DIM_1 = ("the log-softmax ran over the positions (dim=1) instead of the vocabulary "
               "(dim=-1)")
OFF_BY_ONE = ("the log-probabilities are off by one position: logits[:, t] was scored against "
              "tokens[:, t], but it predicts the next token, tokens[:, t + 1]")


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
    return {
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
        "the probability of the sentence (a product) was returned, not its log (a sum of "
        "log-probabilities)": picked(probs).prod(1),
        WRONG_DIM_1: picked(torch.log_softmax(x, dim=1)).sum(1),
        WRONG_DIM_1 + " (here over the T - 1 positions kept)":
            picked(torch.log_softmax(x[:, :-1], dim=1)).sum(1),
        "the log-softmax ran over the batch (dim=0) instead of the vocabulary (dim=-1)":
            picked(torch.log_softmax(x, dim=0)).sum(1),
        "the mean over positions was returned; the log-probability of a sentence is the sum":
            right.mean(1),
        "the raw logits were summed: apply log_softmax over the vocabulary first":
            picked(x).sum(1),
        "the sign is flipped: cross-entropy is the negative log-probability": -right.sum(1),
    }


@hidden_test
def grade_sequence_log_prob(sequence_log_prob: Callable[[torch.Tensor, torch.Tensor],
                                                        torch.Tensor]) -> None:
    check = HiddenCheck("sequence_log_prob")
    generator = fresh_generator(828)
    fixed = ((4, 6, 7), (2, 9, 5), (3, 2, 11), (1, 4, 3))
    fresh = fixed[0]
    while fresh in fixed:  # fresh sizes, never those of another case
        fresh = tuple(int(torch.randint(low, high, (), generator=generator))
                      for low, high in ((1, 6), (2, 12), (2, 14)))
    for B, T, V in (*fixed, fresh):
        logits = 3.0 * torch.randn(B, T, V, generator=generator)
        tokens = torch.randint(V, (B, T), generator=generator)
        originals = logits.clone(), tokens.clone()
        out = check.tensor(check.call(sequence_log_prob, logits, tokens),
                           f"sequence_log_prob(logits {(B, T, V)}, tokens {(B, T)})")
        check.close(logits, originals[0], "the logits are left unchanged",
                    likely="the logits were changed in place")
        check.expect(torch.equal(tokens, originals[1]), "the tokens are left unchanged",
                     expected="the tokens passed in", got="changed tokens",
                     likely="the tokens were changed in place")
        check.expect(tuple(out.shape) == (B,), f"the result for {B} sentences has shape {(B,)}",
                     expected=f"shape {(B,)}: one log-probability per sentence",
                     got=f"shape {tuple(out.shape)}",
                     diagnoses={"per-position log-probabilities were returned: sum them over the "
                                "positions (dim=1)": tuple(out.shape) == (B, T - 1),
                                "everything was summed to one number: keep one per sentence "
                                "(sum over dim=1 only)": out.numel() == 1 and B > 1})
        reference = torch.log_softmax(logits.double(), dim=-1)[:, :-1].gather(
            -1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)
        check.close(out, reference, f"log-probabilities of {B} sentences of {T} tokens, "
                    f"vocabulary {V}", mistakes=_log_prob_mistakes(logits, tokens), atol=1e-4,
                    dims=("sentence",))
    tokens = torch.randint(5, (3, 6), generator=generator)
    extreme = extreme_logits(tokens)  # the next token 200 below another one: log P about -200
    expected = torch.log_softmax(extreme.double(), -1)[:, :-1].gather(
        -1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)
    out = torch.as_tensor(check.call(sequence_log_prob, extreme, tokens)).detach()
    check.close(out, expected, "logits of ±100 (a very sure, wrong model) give a large "
                "negative, finite score", atol=1e-2, dims=("sentence",),
                diagnoses={UNDERFLOW: lambda: bool(torch.isinf(out).any())})
    check.passed()

"""Self-checks for tutorial 08 (attention beyond words)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from helpers.checks.framework import SelfCheck, describe

PatchifyFn = Callable[[torch.Tensor, int], torch.Tensor]


# ---- patchify -------------------------------------------------------------------------------

def _coded_images(B: int, C: int, H: int, W: int) -> torch.Tensor:
    """Images whose every pixel says where it is: 1000·b + 100·c + 10·row + column."""
    b = torch.arange(B).view(B, 1, 1, 1)
    c = torch.arange(C).view(1, C, 1, 1)
    row = torch.arange(H).view(1, 1, H, 1)
    col = torch.arange(W).view(1, 1, 1, W)
    return (1000 * b + 100 * c + 10 * row + col).float()


def _where(code: float) -> str:
    code = int(round(float(code)))
    return f"channel {code // 100 % 10}, row {code // 10 % 10}, column {code % 10}"


CODE = "the test images are coded: pixel value = 1000·image + 100·channel + 10·row + column"
COLUMN_ORDER = ("the patches are in column order: patch 1 is the one below patch 0, but patches "
                "go along a row first (patch index = i * (W // p) + j)")
CHANNELS_LAST = ("the pixels of a patch are in (row, column, channel) order; flatten them in "
                 "(channel, row, column) order, channel first")
TRANSPOSED = ("each patch is transposed: its pixels go down a column first; flatten them row by "
              "row (row, then column)")
PLAIN_RESHAPE = ("the image was reshaped straight into (B, N, C·p·p) without moving the axes: a "
                 "'patch' is then a run of consecutive pixels of a row, not a p×p square; split "
                 "H and W into (H/p, p) and (W/p, p) and bring the patch-grid axes forward first")
UNFOLD_ORDER = ("the result has shape (B, C·p·p, N): F.unfold puts the patches last; transpose "
                "the last two dimensions")


def hard_coded(size: int) -> str:
    """The diagnosis of a patch size fixed in the code."""
    return (f"the patch size is fixed in the code: this check asked for patch_size={size} and "
            "got the patches of size 2; use the argument patch_size everywhere")


def square_only(H: int, W: int) -> str:
    """The diagnosis of code that works on square images only."""
    side = min(H, W)
    return (f"the code assumes square images: it handles {side}×{side} images, but these are "
            f"{H}×{W} (H ≠ W); somewhere H is used where W is meant (or the other way round)")


def _unfolded(images: torch.Tensor, p: int) -> torch.Tensor:
    return F.unfold(images.double(), p, stride=p).transpose(1, 2)


def _same(out: torch.Tensor, wanted: torch.Tensor) -> bool:
    out = torch.as_tensor(out).detach()
    return out.shape == wanted.shape and torch.allclose(out.double(), wanted, atol=1e-5)


def _square(images: torch.Tensor) -> torch.Tensor:
    side = min(images.shape[-2:])
    return images[..., :side, :side].contiguous()


def call_patchify(check: SelfCheck, patchify: PatchifyFn, images: torch.Tensor,
                  p: int) -> torch.Tensor:
    """Call the student's patchify; a crash that only non-square images cause is named."""
    B, C, H, W = images.shape

    def works_on_square() -> bool:
        if H == W:
            return False
        square = _square(images)
        try:
            return _same(patchify(square, p), _unfolded(square, p))
        except Exception:  # noqa: BLE001 - any crash means "not only a square problem"
            return False

    out = call_explaining(check, patchify, images, p, explanations={
        square_only(H, W): lambda _: works_on_square()},
        where=f"called with images of shape {(B, C, H, W)} ({H}×{W} images"
              f"{', H ≠ W' if H != W else ''}) and patch_size={p}")
    return check.tensor(out, f"patchify(images of shape {(B, C, H, W)}, patch_size={p})")


def expect_patch_shape(check: SelfCheck, out: torch.Tensor, images: torch.Tensor,
                       p: int) -> None:
    """The shape (B, N, C·p·p), with the mistakes a wrong shape points to."""
    B, C, H, W = images.shape
    N, D = (H // p) * (W // p), C * p * p
    got = tuple(out.shape)
    check.expect(got == (B, N, D),
                 f"patchify(images of shape {(B, C, H, W)}, patch_size={p}) has shape "
                 f"(B, N, C·p·p)", expected=f"shape {(B, N, D)}: {N} patches of "
                 f"{C}·{p}·{p} = {D} numbers", got=f"shape {got}", diagnoses={
                     # before UNFOLD_ORDER: (B, D, N) can also be the shape of size-2 patches
                     hard_coded(p): lambda: p != 2 and H % 2 == 0 and W % 2 == 0
                     and _same(out, _unfolded(images, 2)),
                     UNFOLD_ORDER: got == (B, D, N) and D != N,
                     square_only(H, W): lambda: H != W and _same(
                         out, _unfolded(_square(images), p)),
                 })


def check_patchify(patchify: PatchifyFn) -> None:
    """Patches in row-major order of (i, j), each flattened in (channel, row, column) order."""
    check = SelfCheck("patchify")
    B, C, H, W, p = 2, 3, 4, 6, 2
    images = _coded_images(B, C, H, W)
    original = images.clone()
    out = call_patchify(check, patchify, images, p)
    check.close(images, original, "the images are left unchanged",
                likely="the images were changed in place; build the result in a new tensor")
    expect_patch_shape(check, out, images, p)
    out = out.double()
    first = out[0, 0]
    diagnoses = {
        PLAIN_RESHAPE: bool(abs(first[p] - 2) < 0.5),  # (c0, row 0, col 2)
        CHANNELS_LAST: bool(abs(first[1] - 100) < 0.5),
        TRANSPOSED: bool(abs(first[1] - 10) < 0.5),
    }
    check.expect(abs(first[1] - 1) < 0.5 and abs(first[p] - 10) < 0.5,
                 "patch 0 lists its pixels in (channel, row, column) order: entry 1 is the pixel "
                 f"at row 0, column 1, and entry p the pixel at row 1, column 0 ({CODE})",
                 expected=f"entry 1 = {_where(1)}; entry {p} = {_where(10)}",
                 got=f"entry 1 = {_where(first[1])}; entry {p} = {_where(first[p])}",
                 diagnoses=diagnoses)
    check.expect(abs(first[p * p] - 100) < 0.5, "after its p·p pixels of channel 0, patch 0 "
                 f"continues with channel 1 ({CODE})", expected=f"entry {p * p} = {_where(100)}",
                 got=f"entry {p * p} = {_where(first[p * p])}")
    corners = out[0, :, 0]
    expected_corners = torch.tensor([10.0 * p * i + p * j for i in range(H // p)
                                     for j in range(W // p)], dtype=torch.float64)
    check.close(corners, expected_corners, "patch k starts at the pixel (row p·i, column p·j) "
                "with k = i·(W/p) + j: the patches go along each row of the grid, then down "
                f"({CODE}, so the pixel at row r, column c of image 0, channel 0 is 10·r + c)",
                mistakes={COLUMN_ORDER: torch.tensor(
                    [10.0 * p * i + p * j for j in range(W // p) for i in range(H // p)],
                    dtype=torch.float64)}, dims=("patch",))
    check.close(out, _unfolded(images, p),
                f"every entry agrees with F.unfold(images, p, stride=p).transpose(1, 2) ({CODE})",
                dims=("image", "patch", "entry"))
    for shape, size in (((1, 1, 8, 8), 4), ((2, 2, 3, 3), 1)):
        images = torch.randn(*shape, generator=torch.Generator().manual_seed(8))
        got = call_patchify(check, patchify, images, size)
        expect_patch_shape(check, got, images, size)
        check.close(got, _unfolded(images, size),
                    f"patchify of images of shape {shape} with patch_size={size}")
    check.passed()


# ---- PatchEmbedding -------------------------------------------------------------------------

POSITIONS_BEFORE_CLS = ("the positions were added before the class token was prepended: the "
                        "class token needs a position too (add all n_patches + 1 positions "
                        "after torch.cat)")
NO_POSITIONS = "the positions were never added"
CLS_LAST = "the class token was appended last; it goes first (position 0)"
NOT_EXPANDED = ("the class token was not expanded to the batch: cls_token has shape "
                "(1, 1, d_model); repeat it for each of the B images before torch.cat")
PROJ_AFTER = ("proj was applied after the class token and positions were added; project the "
              "patches first (the class token and positions already live in d_model)")
CLS_PROJECTED = ("the class token was made like a patch, of C·p·p numbers, and sent through "
                 "proj; it is a learned vector of the model's width: cls_token of shape "
                 "(1, 1, d_model), put in front of the projected patches")


def call_explaining(check: SelfCheck, fn: Callable, *args: object,
                    explanations: dict[str, Callable[[str], bool]],
                    where: str | None = None) -> object:
    """``check.call`` for code whose crash can point at a known mistake: ``explanations`` maps
    a mistake to a test of the error message (e.g. the sizes PyTorch complains about);
    ``where`` says what the code was called with."""
    try:
        return fn(*args)
    except NotImplementedError as error:
        check.not_implemented(error)
    except Exception as error:  # noqa: BLE001 - any crash is reported to the student
        message = str(error)
        check.expect(False, f"calling {check.name} runs without an error", expected="a result",
                     got=f"{type(error).__name__.split('.')[-1]}: {message}", where=where,
                     diagnoses={k: (lambda test=test: test(message))
                                for k, test in explanations.items()})
    return None


def crash_explanations(B: int, N: int, d: int, patch_numbers: int) -> dict[str, Callable[[str],
                                                                                    bool]]:
    """Mistakes of PatchEmbedding that crash, told apart by the sizes in PyTorch's message."""
    return {
        POSITIONS_BEFORE_CLS: lambda m: f"({N})" in m and f"({N + 1})" in m,
        NOT_EXPANDED: lambda m: "Expected size 1 but got size" in m and B > 1,
        PROJ_AFTER: lambda m: f"Expected size {d} but got size {patch_numbers}" in m
        or f"Expected size {patch_numbers} but got size {d}" in m,
    }


def _member(check: SelfCheck, module: nn.Module, name: str, shape: tuple[int, ...],
            how: str, patch_numbers: int) -> torch.Tensor:
    value = getattr(module, name, None)
    check.expect(isinstance(value, nn.Parameter), f"member `{name}` is an nn.Parameter",
                 expected=f"self.{name} = nn.Parameter({how})", got=describe(value))
    got = tuple(value.shape)
    check.expect(got == shape, f"`{name}` has shape {shape}", expected=f"shape {shape}",
                 got=f"shape {got}", diagnoses={
                     "only n_patches positions: the class token needs its own position too "
                     "(position 0 of n_patches + 1)": name == "positions"
                     and got == (1, shape[1] - 1, shape[2]),
                     CLS_PROJECTED: name == "cls_token" and got == (1, 1, patch_numbers)})
    return value


def check_PatchEmbedding(embedding_class: type[nn.Module]) -> None:  # noqa: N802
    """Members and sizes, class token first, positions added to every token after it."""
    check = SelfCheck("PatchEmbedding")
    p, C, d, H, W, B = 2, 3, 8, 4, 6, 3
    N = (H // p) * (W // p)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = check.call(embedding_class, p, C, d, N)
    check.expect(isinstance(module, nn.Module), "the class builds an nn.Module",
                 expected="an nn.Module", got=describe(module))
    proj = getattr(module, "proj", None)
    check.expect(isinstance(proj, nn.Linear), "member `proj` is an nn.Linear",
                 expected="self.proj = nn.Linear(in_channels * patch_size**2, d_model)",
                 got=describe(proj))
    check.expect((proj.in_features, proj.out_features) == (C * p * p, d),
                 f"`proj` maps C·p·p = {C * p * p} numbers to d_model = {d}",
                 expected=f"nn.Linear({C * p * p}, {d})",
                 got=f"nn.Linear({proj.in_features}, {proj.out_features})")
    cls_token = _member(check, module, "cls_token", (1, 1, d), "torch.randn(1, 1, d_model)",
                        C * p * p)
    positions = _member(check, module, "positions", (1, N + 1, d),
                        "torch.randn(1, n_patches + 1, d_model)", C * p * p)
    generator = torch.Generator().manual_seed(80)
    with torch.no_grad():
        cls_token.copy_(torch.randn(1, 1, d, generator=generator))
        positions.copy_(torch.randn(1, N + 1, d, generator=generator))
    images = torch.randn(B, C, H, W, generator=generator)
    with torch.no_grad():
        out = check.tensor(call_explaining(check, module, images, explanations=crash_explanations(
            B, N, d, C * p * p)), "module(images)")
        check.shape(out, (B, N + 1, d), f"the output for {B} images of {N} patches")
        tokens = proj(F.unfold(images, p, stride=p).transpose(1, 2))
        cls, pos = cls_token.expand(B, 1, d), positions
        check.close(out[:, 0], (cls + pos[:, :1])[:, 0],
                    "token 0 is the class token plus position 0", diagnoses={
                        POSITIONS_BEFORE_CLS: lambda: torch.allclose(out[:, 0], cls[:, 0],
                                                                     atol=1e-5)
                        and not torch.allclose(out[:, 1:], tokens, atol=1e-5),
                        NO_POSITIONS: lambda: torch.allclose(out[:, 0], cls[:, 0], atol=1e-5)
                        and torch.allclose(out[:, 1:], tokens, atol=1e-5),
                        CLS_LAST: lambda: torch.allclose(out[:, -1], (cls + pos[:, -1:])[:, 0],
                                                         atol=1e-5)},
                    dims=("image", "channel"))
        check.close(out[:, 1:], tokens + pos[:, 1:],
                    "token k ≥ 1 is proj(patch k − 1) plus position k", dims=(
                        "image", "patch", "channel"))
    check.passed()


# ---- sequence_log_prob ----------------------------------------------------------------------

WRONG_AXIS = ("the log-softmax ran over the wrong dimension: it must normalise over the "
              "vocabulary, the last dimension of the logits")
UNDERFLOW = ("softmax followed by log underflows: a probability below about 1e-45 becomes 0 in "
             "float32, and log(0) = -inf; use log_softmax, which never forms the tiny "
             "probability")


def _reference_log_prob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """With torch.distributions: the log-probability of each next token, summed."""
    dist = torch.distributions.Categorical(logits=logits[:, :-1].double())
    return dist.log_prob(tokens[:, 1:]).sum(dim=1)


def extreme_logits(tokens: torch.Tensor, gap: float = 200.0) -> torch.Tensor:
    """Logits of a model that is very sure and wrong: at every position the actual next token
    scores -gap/2 and another token +gap/2, so its log-probability is about -gap."""
    B, T = tokens.shape
    V = int(tokens.max()) + 2
    logits = torch.zeros(B, T, V)
    nxt = tokens[:, 1:].unsqueeze(-1)
    logits[:, :-1].scatter_(-1, (nxt + 1) % V, gap / 2)
    logits[:, :-1].scatter_(-1, nxt, -gap / 2)
    return logits


def check_sequence_log_prob(sequence_log_prob: Callable[[torch.Tensor, torch.Tensor],
                                                        torch.Tensor]) -> None:
    """Uniform logits, a confident model, a very sure wrong model, agreement with
    torch.distributions, inputs left unchanged."""
    check = SelfCheck("sequence_log_prob")
    B, T, V = 3, 5, 7
    tokens = torch.randint(V, (B, T), generator=torch.Generator().manual_seed(81))
    zeros, kept = torch.zeros(B, T, V), tokens.clone()
    uniform = check.tensor(check.call(sequence_log_prob, zeros, tokens),
                           "sequence_log_prob(all-zero logits, tokens)")
    check.close(zeros, torch.zeros(B, T, V), "the logits are left unchanged",
                likely="the logits were changed in place; compute the result in new tensors")
    check.expect(torch.equal(tokens, kept), "the tokens are left unchanged",
                 expected=describe(kept), got=describe(tokens),
                 likely="the tokens were changed in place; compute the result in new tensors")
    check.shape(uniform, (B,), f"the result for a batch of {B} sentences",
                likely=("one number per sentence: sum over the positions (dim=1) only")
                if uniform.numel() == 1 else None)
    per_token = -math.log(V)
    value = float(uniform.double().mean())
    check.close(uniform, torch.full((B,), (T - 1) * per_token),
                f"with all-zero logits every next token has probability 1/V, so a sentence of "
                f"T = {T} tokens scores (T − 1)·log(1/V) = {(T - 1) * per_token:.4f}",
                diagnoses={
                    f"that is T = {T} terms, one too many: either token 0 was scored (nothing "
                    "predicts it) or logits[:, t] were paired with tokens[:, t]; logits[:, t] "
                    "predicts tokens[:, t + 1], so score tokens 1..T−1 with logits 0..T−2":
                        abs(value - T * per_token) < 1e-4,
                    "that is the mean over the positions; the log-probability of a sentence is "
                    "the sum": abs(value - per_token) < 1e-4,
                    "probabilities were summed, not log-probabilities":
                        abs(value - (T - 1) / V) < 1e-4,
                    "the logits were scored without a log-softmax (the log-probabilities are "
                    "logits minus their logsumexp)": abs(value) < 1e-6,
                    "the sign is flipped: cross-entropy is the negative log-probability":
                        abs(value + (T - 1) * per_token) < 1e-4,
                    # over the positions (all T, or the T - 1 kept) or over the batch
                    WRONG_AXIS: min(abs(value + (T - 1) * math.log(n))
                                    for n in (T, T - 1, B)) < 1e-4,
                })
    confident = torch.full((B, T, V), -20.0)
    confident[:, :-1].scatter_(-1, tokens[:, 1:].unsqueeze(-1), 20.0)  # t predicts t + 1
    sure = check.call(sequence_log_prob, confident, tokens)
    check.close(sure, torch.zeros(B), "a model sure of every next token (logits[:, t] peaked "
                "at tokens[:, t + 1]) scores about 0 = log 1", atol=1e-3, diagnoses={
                    "the logits were matched with the wrong tokens: logits[:, t] predicts "
                    "tokens[:, t + 1], the next one": bool((sure < -5).all()),
                })
    logits = 2.0 * torch.randn(B, T, V, generator=torch.Generator().manual_seed(82))
    check.close(check.call(sequence_log_prob, logits, tokens), _reference_log_prob(logits, tokens),
                "agrees with torch.distributions.Categorical on random logits",
                dims=("sentence",))
    extreme = extreme_logits(tokens)
    wrong = torch.as_tensor(check.call(sequence_log_prob, extreme, tokens)).detach()
    check.close(wrong, _reference_log_prob(extreme, tokens), "a model very sure of the wrong "
                "tokens (logits ±100, a gap of 200) gets a large negative, finite score",
                atol=1e-2, dims=("sentence",),
                diagnoses={UNDERFLOW: lambda: bool(torch.isinf(wrong).any())})
    check.passed()

"""Self-checks for tutorial 08 (attention beyond words).

Every check runs under a clause of the exercise's contract (``helpers.syllabus``); a likely
mistake is named only when the result has its signature.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from helpers.checks.calls import tensors_in
from helpers.checks.framework import COPIED_TO_CPU, CheckFailed, SelfCheck, describe

PatchifyFn = Callable[[torch.Tensor, int], torch.Tensor]
Explanations = Mapping[str, Callable[[str], bool | str | None]]


def explained_call(check: SelfCheck, fn: Callable, *args: object, explanations: Explanations,
                   **kwargs: object) -> object:
    """``check.call``, where a crash whose message points at a known mistake names it:
    ``explanations`` maps a mistake to a test of the error message (the sizes PyTorch
    complains about, say); a test may return the mistake's words itself, made from the
    message. Other crashes are reported as ``check.call`` reports them."""
    report = check.crashed

    def crashed(fn_: Callable, error: BaseException, args_: tuple, kwargs_: dict) -> None:
        try:
            report(fn_, error, args_, kwargs_)
        except CheckFailed as failure:
            told = ((k, test(str(error))) for k, test in explanations.items())
            mistake = next((found if isinstance(found, str) else k
                            for k, found in told if found), None)
            if mistake is None:
                raise
            text = re.sub(r"\n  likely mistake: .*\Z", "", str(failure), flags=re.S)
            raise CheckFailed(f"{text}\n  likely mistake: {mistake}", failure.clause) from None

    check.crashed = crashed  # type: ignore[method-assign]
    try:
        return check.call(fn, *args, **kwargs)
    finally:
        del check.crashed


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
UNFOLD_ORDER = ("the result has shape (B, C·p·p, N): the patch axis and the pixel axis are "
                "swapped (F.unfold returns them so, and so does stacking or concatenating the "
                "patches along the last dimension); the patches go on dimension 1: transpose the "
                "last two dimensions, or stack along dim=1")
UNFOLD_NO_PERMUTE = ("Tensor.unfold gives (B, C, H/p, W/p, p, p): the channel axis is still in "
                     "front of the patch grid, so reshaping mixes the patches; permute to "
                     "(B, H/p, W/p, C, p, p) first")
SQUEEZED = ("a dimension of size 1 was squeezed away (`.squeeze()` without a dimension): for a "
            "batch of one it removes the batch dimension too; name the dimension, or use reshape")
CPU_RESULT = ("the result was collected in a tensor made on the CPU (torch.zeros(...) or "
              "torch.empty(...) without device=images.device), so on a GPU the patches would be "
              "copied to the CPU; make it with device=images.device, or collect the patches "
              "with torch.stack")
CPU_COPY = ("the images were copied off their device (`.cpu()`, `.numpy()` or `.tolist()`): on "
            "a GPU the patches would come back on the CPU; work on `images` with torch "
            "operations only")


def one_side(H: int, W: int, p: int) -> str:
    """The diagnosis of a number of patches computed from one side of the image only."""
    return (f"the number of patches was computed from one side only ((H/p)² or (W/p)²): for "
            f"{H}×{W} images that are not square N = (H/p)·(W/p) = {(H // p) * (W // p)}")


HW_SWAPPED = ("H and W are swapped where the image is split into patches: it was cut as if it "
              "were W pixels high and H wide, so a patch mixes pixels of different "
              "rows; split the height H into (H/p, p) and the width W into (W/p, p)")


FIXED_GRID = "the number of patches per side is fixed in the code"


def fixed_grid(rows: int, columns: int, p: int, H: int, W: int) -> str:
    """The diagnosis of a grid of patches fixed in the code (``n = 8 // p``, say)."""
    return (f"{FIXED_GRID}: the reshape asks for a "
            f"{rows}×{columns} grid of {p}×{p} patches, which fits {rows * p}×{columns * p} "
            f"images, but these are {H}×{W}; compute the grid from the images' shape")


def grid_asked(message: str, B: int, C: int, p: int) -> tuple[int, int] | None:
    """The grid (rows, columns) of a reshape to (B, C, rows, p, columns, p) that PyTorch
    refused, or None."""
    found = re.search(rf"shape '\[{B}, {C}, (\d+), {p}, (\d+), {p}\]' is invalid", message)
    return (int(found[1]), int(found[2])) if found else None


RENAMED = ("the parameters were renamed: keep the signature patchify(images, patch_size), "
           "since the checks and the grader pass the arguments by name")


def hard_coded(size: int) -> str:
    """The diagnosis of a patch size fixed in the code."""
    return (f"the patch size is fixed in the code: this check asked for patch_size={size} and "
            "got the patches of size 2; use the argument patch_size everywhere")


def square_only(H: int, W: int) -> str:
    """The diagnosis of code that works on square images only."""
    side = min(H, W)
    return (f"the code assumes square images: it handles {side}×{side} images, but these are "
            f"{H}×{W} (H ≠ W); somewhere H is used where W is meant (or the other way round)")


def unfolded(images: torch.Tensor, p: int) -> torch.Tensor:
    """The patches, in float64: (B, N, C·p·p), patch (i, j) at i·(W/p) + j, each flattened
    in (channel, row, column) order (what F.unfold(images, p, stride=p).transpose(1, 2)
    computes)."""
    return F.unfold(images.double(), p, stride=p).transpose(1, 2)


def _same(out: object, wanted: torch.Tensor) -> bool:
    out = torch.as_tensor(out).detach()
    return out.shape == wanted.shape and torch.allclose(out.double(), wanted, atol=1e-5)


def _square(images: torch.Tensor) -> torch.Tensor:
    side = min(images.shape[-2:])
    return images[..., :side, :side].contiguous()


def call_patchify(check: SelfCheck, patchify: PatchifyFn, images: torch.Tensor, p: int,
                  by_keyword: bool = False) -> torch.Tensor:
    """Call the student's patchify (by keyword when asked); a crash that only images that
    are not square cause is named."""
    B, C, H, W = images.shape

    def works_on_square(_: str) -> bool:
        if H == W:
            return False
        square = _square(images)
        try:
            return _same(patchify(square, p), unfolded(square, p))
        except Exception:  # noqa: BLE001 - any crash means "not only a square problem"
            return False

    def grid(message: str) -> str | None:
        """A grid that fits neither side of the images, read from PyTorch's message."""
        asked = grid_asked(message, B, C, p)
        if asked and asked[0] * p != H and asked[1] * p != W:
            return fixed_grid(*asked, p, H, W)
        return None

    explanations = {
        RENAMED: lambda m: "unexpected keyword argument" in m,
        # before square_only: such code works on a square crop too
        one_side(H, W, p): lambda m: H != W and any(f"'[{B}, {n}, " in m for n in (
            (H // p) ** 2, (W // p) ** 2)),
        square_only(H, W): works_on_square,
        FIXED_GRID: grid,
    }
    if by_keyword:
        out = explained_call(check, patchify, images=images, patch_size=p,
                             explanations=explanations)
    else:
        out = explained_call(check, patchify, images, p, explanations=explanations)
    return check.tensor(out, f"patchify(images of shape {(B, C, H, W)}, patch_size={p})")


def expect_patch_shape(check: SelfCheck, out: torch.Tensor, images: torch.Tensor,
                       p: int) -> None:
    """The shape (B, N, C·p·p), with the mistakes a wrong shape points to."""
    B, C, H, W = images.shape
    N, D = (H // p) * (W // p), C * p * p
    got, wanted = tuple(out.shape), (B, N, D)
    check.expect(got == wanted,
                 f"patchify(images of shape {(B, C, H, W)}, patch_size={p}) has shape "
                 f"(B, N, C·p·p)", expected=f"shape {wanted}: {N} patches of "
                 f"{C}·{p}·{p} = {D} numbers", got=f"shape {got}", diagnoses={
                     # before UNFOLD_ORDER: (B, D, N) can also be the shape of size-2 patches
                     hard_coded(p): lambda: p != 2 and H % 2 == 0 and W % 2 == 0
                     and _same(out, unfolded(images, 2)),
                     UNFOLD_ORDER: got == (B, D, N) and D != N,
                     square_only(H, W): lambda: H != W and _same(
                         out, unfolded(_square(images), p)),
                     SQUEEZED: 1 in wanted and got == tuple(n for n in wanted if n != 1),
                     one_side(H, W, p): H != W and got[:2] in ((B, (H // p) ** 2),
                                                               (B, (W // p) ** 2)),
                 })


def patchify_mistakes(images: torch.Tensor, p: int) -> dict[str, torch.Tensor]:
    """What the usual wrong orders return for ``images`` (float64)."""
    x = images.double()
    B, C, H, W = x.shape
    N, D = (H // p) * (W // p), C * p * p
    grid = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    swapped = ({HW_SWAPPED: x.reshape(B, C, W // p, p, H // p, p).permute(
        0, 2, 4, 1, 3, 5).reshape(B, N, D)} if H != W else {})
    return {
        **swapped,
        COLUMN_ORDER: grid.transpose(1, 2).reshape(B, N, D),
        CHANNELS_LAST: grid.permute(0, 1, 2, 4, 5, 3).reshape(B, N, D),
        TRANSPOSED: grid.transpose(-1, -2).reshape(B, N, D),
        PLAIN_RESHAPE: x.reshape(B, N, D),
        UNFOLD_NO_PERMUTE: x.unfold(2, p, p).unfold(3, p, p).reshape(B, N, D),
    }


def expect_on_meta(check: SelfCheck, patchify: PatchifyFn, images: torch.Tensor, p: int) -> None:
    """patchify needs no values: on the data-less meta device, which stands in for a GPU, it
    must run and return its result there."""
    try:
        out, _ = check._run(patchify, (images.to("meta"), p), {}, seed=None, observe=True)
    except Exception as error:  # noqa: BLE001 - any crash on the meta device is a failure
        message = str(error).strip()
        seen = getattr(error, "observed", None)
        made_on_cpu = bool(seen is not None and seen.cpu_tensors)
        check.expect(False, "patchify runs on images on another device (the meta device)",
                     expected="a result on the images' device",
                     got=f"{type(error).__name__}: {message}", diagnoses={
                         CPU_RESULT: made_on_cpu,
                         CPU_COPY: "no data" in message and not made_on_cpu})
        return
    check.expect(isinstance(out, torch.Tensor) and out.is_meta,
                 "patchify of images on another device (the meta device) returns a tensor there",
                 expected="a result on the images' device", got=describe(out),
                 likely=CPU_RESULT if isinstance(out, torch.Tensor) else None)


def check_patchify(patchify: PatchifyFn) -> None:
    """Patches in row-major order of (i, j), each flattened in (channel, row, column) order."""
    check = SelfCheck("patchify")
    B, C, H, W, p = 2, 3, 4, 4, 2
    images = _coded_images(B, C, H, W)

    check.clause("shape")
    # by keyword, as the grader calls it: the signature is patchify(images, patch_size)
    out = call_patchify(check, patchify, images, p, by_keyword=True)
    expect_patch_shape(check, out, images, p)
    one = call_patchify(check, patchify, images[:1], p)
    expect_patch_shape(check, one, images[:1], p)

    check.clause("values")
    out = out.double()
    first = out[0, 0]
    check.expect(abs(first[1] - 1) < 0.5 and abs(first[p] - 10) < 0.5,
                 "patch 0 lists its pixels in (channel, row, column) order: entry 1 is the pixel "
                 f"at row 0, column 1, and entry p the pixel at row 1, column 0 ({CODE})",
                 expected=f"entry 1 = {_where(1)}; entry {p} = {_where(10)}",
                 got=f"entry 1 = {_where(first[1])}; entry {p} = {_where(first[p])}",
                 diagnoses={
                     PLAIN_RESHAPE: bool(abs(first[p] - 2) < 0.5),  # (c0, row 0, col 2)
                     CHANNELS_LAST: bool(abs(first[1] - 100) < 0.5),
                     TRANSPOSED: bool(abs(first[1] - 10) < 0.5),
                 })
    check.expect(abs(first[p * p] - 100) < 0.5, "after its p·p pixels of channel 0, patch 0 "
                 f"continues with channel 1 ({CODE})", expected=f"entry {p * p} = {_where(100)}",
                 got=f"entry {p * p} = {_where(first[p * p])}", diagnoses={
                     UNFOLD_NO_PERMUTE: lambda: _same(out, patchify_mistakes(images, p)[
                         UNFOLD_NO_PERMUTE])})
    corners = out[0, :, 0]
    rows, columns = H // p, W // p
    check.close(corners, torch.tensor([10.0 * p * i + p * j for i in range(rows)
                                       for j in range(columns)], dtype=torch.float64),
                "patch k starts at the pixel (row p·i, column p·j) with k = i·(W/p) + j: the "
                f"patches go along each row of the grid, then down ({CODE}, so the pixel at "
                "row r, column c of image 0, channel 0 is 10·r + c)",
                mistakes={COLUMN_ORDER: torch.tensor([10.0 * p * i + p * j for j in range(columns)
                                                      for i in range(rows)], dtype=torch.float64)},
                dims=("patch",))
    check.close(out, unfolded(images, p),
                f"every entry agrees with F.unfold(images, p, stride=p).transpose(1, 2) ({CODE})",
                dims=("image", "patch", "entry"))

    check.clause("arguments")
    generator = torch.Generator().manual_seed(8)
    # not square; a patch size of 4 (a size fixed at 2 is recognised); 1; the whole image
    for shape, size in (((2, 2, 4, 6), 2), ((1, 1, 8, 8), 4), ((2, 2, 3, 3), 1),
                        ((2, 3, 6, 6), 6)):
        images = (_coded_images(*shape) if shape[2] != shape[3]
                  else torch.randn(*shape, generator=generator))
        got = call_patchify(check, patchify, images, size)
        expect_patch_shape(check, got, images, size)
        check.close(got, unfolded(images, size),
                    f"patchify of images of shape {shape} with patch_size={size}",
                    mistakes=patchify_mistakes(images, size), dims=("image", "patch", "entry"))

    images = torch.randn(2, 2, 4, 6, generator=generator)
    check.clause("dtype")
    check.dtype_follows(patchify, images, 2, what="patchify(images, 2)")
    check.clause("device")
    expect_on_meta(check, patchify, images, 2)
    check.device_follows(patchify, images, 2, what="patchify(images, 2)")
    check.passed()


# ---- PatchEmbedding -------------------------------------------------------------------------

POSITIONS_BEFORE_CLS = ("the positions were added before the class token was prepended: the "
                        "class token needs a position too (add all n_patches + 1 positions "
                        "after torch.cat)")
PATCH_K_POSITION_K = ("patch k got position e_k instead of e_(k+1) (row k of positions), so the "
                      "class token and patch 0 share e_0: the positions go on after the class "
                      "token is prepended, row 0 for the class token, row k + 1 for patch k")
CLS_LAST_POSITION = ("the class token got the last position e_N and the patches e_0 ... e_(N-1): "
                     "row 0 of positions belongs to the class token, row k + 1 to patch k")
NO_POSITIONS = "the positions were never added"
CLS_LAST = "the class token was appended last; it goes first (position 0)"
NOT_EXPANDED = ("the class token was not expanded to the batch: cls_token has shape "
                "(1, 1, d_model); repeat it for each of the B images before torch.cat")
PROJ_AFTER = ("proj was applied after the class token and positions were added; project the "
              "patches first (the class token and positions already live in d_model)")
CLS_PROJECTED = ("the class token was made like a patch, of C·p·p numbers, and sent through "
                 "proj; it is a learned vector of the model's width: cls_token of shape "
                 "(1, 1, d_model), put in front of the projected patches")
POSITIONS_ONE_SHORT = ("positions has one row per patch only: the class token needs a position "
                       "too, so its shape is (1, n_patches + 1, d_model)")
NO_CLASS_TOKEN = "the class token is missing: prepend it before adding the positions"
WRONG_PATCHES = ("the patches fed to proj are not those of patchify (the class token and "
                 "positions are right): make Exercise 1 pass, and embed patchify(images, "
                 "patch_size)")
STALE_PATCHES = ("the patches of an earlier call's images were used (kept from a call with "
                 "images of the same shape): forward must cut the images it is given into "
                 "patches, every time it is called")
STALE_OUTPUT = ("the output of an earlier call came back: forward must compute the embedding "
                "from the images and parameters it is given, every time it is called")
NO_GRADIENT = ("forward cut this parameter off from the output (.detach(), .data, "
               "torch.no_grad() or a copy), or __init__ froze it (requires_grad_(False)), so "
               "training could never change it; use the parameter itself in forward")
FROZEN = ("this parameter has requires_grad=False (`.requires_grad_(False)` or "
          "nn.Parameter(..., requires_grad=False) in __init__), so no gradient reaches it and "
          "training could never change it; leave parameters trainable")
ZERO_INIT = ("this parameter starts as zeros; the text asks for small random numbers, e.g. "
             "0.02 * torch.randn(...)")
WIDE = 256  # the d_model of a second module built to see how the spread depends on it
UNIT_INIT = ("this parameter starts with a spread of about 1 whatever d_model (root mean "
             "square {wide:.2f} for d_model = " + str(WIDE) + "), as torch.randn(...) alone "
             "gives; scale it down, e.g. 0.02 * torch.randn(...)")
UNIFORM_INIT = ("these numbers all lie between 0 and 1, as torch.rand(...) draws them (uniform, "
                "root mean square about 0.58, none negative); draw small numbers around zero "
                "instead, e.g. 0.02 * torch.randn(...)")
FAN_INIT = ("the spread of this parameter shrinks like 1/√d_model (root mean square {rms:.2f} "
            "for d_model = {d}, {wide:.3f} for d_model = " + str(WIDE) + "), as an "
            "initialiser made for weight matrices gives (nn.init.xavier_*, kaiming_*, a "
            "1/√fan-in scale); the class token and positions start small whatever the width, "
            "e.g. 0.02 * torch.randn(...)")
TENTH_INIT = ("a scale of 0.1 or a little more (0.1 * torch.randn(...)) gives a root mean "
              "square of about that scale, for 0.1 as often above 0.1 as below; take a smaller "
              "scale, e.g. 0.02 * torch.randn(...)")
RESEEDED = ("every model starts the same whatever the global seed: the class seeds a "
            "generator itself (torch.manual_seed inside __init__, or a torch.Generator of its "
            "own); draw from the global generator without seeding it")
OWN_GENERATOR = ("the values do not come from PyTorch's global generator: either from another "
                 "random source (numpy, Python's random) or from none at all (torch.empty "
                 "does not fill the tensor); draw them with torch.randn")
UNINITIALISED = ("these are not random numbers but whatever was in memory (torch.empty(...) "
                 "leaves it there); draw the values with 0.02 * torch.randn(...)")
FIXED_PATCH_SIZE = ("forward cuts the images into patches of a fixed size 2: use the module's "
                    "own patch size (self.patch_size, stored in __init__)")
PATCHES_DTYPE = ("proj received patches of another dtype than its weights: patchify(images, "
                 "patch_size) must return the images' dtype (see Exercise 1's dtype check), "
                 "and forward must not convert the patches")
DROPOUT = ("some outputs are exactly 0 and the others are the expected ones scaled up by the "
           "same factor: that is dropout, active in training mode; this PatchEmbedding has no "
           "dropout, remove it")
ONE_CHANNEL = ("proj expects patches of one channel (p·p numbers): it must take "
               "in_channels·p·p numbers, so use the in_channels argument")


def crash_explanations(images: torch.Tensor, p: int, N: int, d: int) -> Explanations:
    """Mistakes of PatchEmbedding that crash, told apart by the sizes in PyTorch's message."""
    B, C, H, W = images.shape
    patch_numbers = C * p * p
    fixed = f"[{B}, {C}, {H // 2}, 2, {W // 2}, 2]"
    return {
        PATCHES_DTYPE: lambda m: "mat1 and mat2 must have the same dtype" in m,
        FIXED_PATCH_SIZE: lambda m: p != 2 and (f"'{fixed}'" in m or f"({fixed[1:-1]})" in m),
        POSITIONS_BEFORE_CLS: lambda m: f"({N})" in m and f"({N + 1})" in m,
        NOT_EXPANDED: lambda m: "Expected size 1 but got size" in m and B > 1,
        PROJ_AFTER: lambda m: d != patch_numbers and (
            f"Expected size {d} but got size {patch_numbers}" in m
            or f"Expected size {patch_numbers} but got size {d}" in m),
    }


def _parameter(check: SelfCheck, module: nn.Module, name: str, shape: tuple[int, ...],
               how: str, patch_numbers: int) -> torch.Tensor:
    value = getattr(module, name, None)
    check.expect(isinstance(value, nn.Parameter), f"member `{name}` is an nn.Parameter",
                 expected=f"self.{name} = nn.Parameter({how})", got=describe(value))
    got = tuple(value.shape)
    check.expect(got == shape, f"`{name}` has shape {shape}", expected=f"shape {shape}",
                 got=f"shape {got}", diagnoses={
                     POSITIONS_ONE_SHORT: name == "positions"
                     and got == (1, shape[1] - 1, shape[2]),
                     CLS_PROJECTED: name == "cls_token" and got == (1, 1, patch_numbers)
                     and patch_numbers != shape[2]})
    return value


def expect_members(check: SelfCheck, module: object, p: int, C: int, d: int, N: int) -> None:
    """proj, cls_token and positions with the sizes the arguments ask for, nothing else."""
    check.expect(isinstance(module, nn.Module), "the class builds an nn.Module",
                 expected="an nn.Module", got=describe(module))
    proj = getattr(module, "proj", None)
    check.expect(isinstance(proj, nn.Linear), "member `proj` is an nn.Linear",
                 expected="self.proj = nn.Linear(in_channels * patch_size**2, d_model)",
                 got=describe(proj))
    got = (proj.in_features, proj.out_features)
    check.expect(got == (C * p * p, d),
                 f"`proj` maps C·p·p = {C}·{p}·{p} = {C * p * p} numbers to d_model = {d}",
                 expected=f"nn.Linear({C * p * p}, {d})", got=f"nn.Linear({got[0]}, {got[1]})",
                 diagnoses={ONE_CHANNEL: C > 1 and got == (p * p, d)})
    check.expect(proj.bias is not None, "`proj` has a bias", expected="nn.Linear's default "
                 "bias=True", got="no bias")
    _parameter(check, module, "cls_token", (1, 1, d), "0.02 * torch.randn(1, 1, d_model)",
               C * p * p)
    _parameter(check, module, "positions", (1, N + 1, d),
               "0.02 * torch.randn(1, n_patches + 1, d_model)", C * p * p)
    names = sorted(name for name, _ in module.named_parameters())
    check.expect(names == ["cls_token", "positions", "proj.bias", "proj.weight"],
                 "the module's parameters are proj's, cls_token and positions",
                 expected="cls_token, positions, proj.bias, proj.weight",
                 got=", ".join(names))


def spread_when_wide(check: SelfCheck, embedding_class: type[nn.Module], name: str, p: int,
                     C: int, N: int, seed: int) -> float | None:
    """The root mean square of parameter ``name`` of a module built with d_model = WIDE
    (None if that fails): about 1 for torch.randn alone, whatever d_model; smaller by
    √(WIDE / d_model) for an initialiser scaled by the fan-in."""
    try:
        wide = check.call_seeded(seed, embedding_class, p, C, WIDE, N)
        value = getattr(wide, name).detach().double()
    except Exception:  # noqa: BLE001 - a module that cannot be built wide tells nothing
        return None
    return float(value.pow(2).mean().sqrt())


def init_diagnoses(value: torch.Tensor, rms: float, d: int,
                   wide: float | None) -> dict[str, bool]:
    """What a parameter's starting spread, at d_model = d and at WIDE, points to."""
    negative = bool((value < 0).any())
    unit = wide is not None and negative and 0.8 < wide < 1.25
    fan = (wide is not None and negative and rms > 0.1 and not unit
           and 0.7 < wide * math.sqrt(WIDE) / (rms * math.sqrt(d)) < 1.4)
    return {UNIT_INIT.format(wide=wide or 0.0): unit,
            FAN_INIT.format(rms=rms, d=d, wide=wide or 0.0): fan,
            TENTH_INIT: not unit and not fan and (
                0.1 < rms < 0.2 or (wide is not None and 0.08 < wide < 0.2))}


def expect_init(check: SelfCheck, embedding_class: type[nn.Module], p: int, C: int, d: int,
                N: int, seeds: tuple[int, int]) -> None:
    """cls_token and positions: small, random, from the global generator, never reseeded."""
    first = check.call_seeded(seeds[0], embedding_class, p, C, d, N)
    again = check.call_seeded(seeds[0], embedding_class, p, C, d, N)
    other = check.call_seeded(seeds[1], embedding_class, p, C, d, N)
    for name in ("cls_token", "positions"):
        value, same, different = (getattr(m, name).detach().double()
                                  for m in (first, again, other))
        rms = float(value.pow(2).mean().sqrt())
        tiny = value[value != 0].abs()
        # memory never written: huge, not finite, or denormal numbers no randn would give
        garbage = not math.isfinite(rms) or rms > 1e3 or bool((tiny < 1e-30).any())
        uniform = not garbage and bool((value >= 0).all() and (value < 1).all()) and rms > 0.3
        wide = (spread_when_wide(check, embedding_class, name, p, C, N, seeds[0])
                if rms > 0.1 and not garbage and not uniform else None)
        check.expect(float(value.std()) > 0, f"`{name}` starts as random numbers",
                     expected="values that differ from each other",
                     got=describe(getattr(first, name)), diagnoses={ZERO_INIT: rms == 0})
        check.expect(rms <= 0.1 and not garbage,
                     f"`{name}` starts small (root mean square at most 0.1)",
                     expected="root mean square ≤ 0.1, e.g. 0.02 * torch.randn(...)",
                     got=f"root mean square {rms:.3g}", diagnoses={
                         UNIFORM_INIT: uniform,
                         **init_diagnoses(value, rms, d, wide),
                         UNINITIALISED: garbage})
        check.expect(not torch.equal(value, different),
                     f"`{name}` differs between models built after different seeds",
                     expected="other values after another torch.manual_seed",
                     got="the same values", likely=RESEEDED)
        check.expect(torch.equal(value, same), f"`{name}` is drawn from PyTorch's global "
                     "generator: the same seed gives the same values",
                     expected="equal values after the same torch.manual_seed",
                     got="different values", likely=OWN_GENERATOR)
    # A reseed after the parameters are drawn passes the checks above.
    check.no_reseed(embedding_class, p, C, d, N, what=f"PatchEmbedding({p}, {C}, {d}, {N})")


def set_parameters(module: nn.Module, generator: torch.Generator, p: int, C: int, d: int,
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


def _assemble(cls: torch.Tensor, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Class token first, then the tokens; positions added to all of them."""
    return torch.cat([cls.expand(len(tokens), 1, -1), tokens], dim=1) + pos


def reference_embedding(images: torch.Tensor, p: int, values: tuple[torch.Tensor, ...]
                        ) -> torch.Tensor:
    weight, bias, cls, pos = (v.double() for v in values)
    return _assemble(cls, unfolded(images, p) @ weight.T + bias, pos)


def embedding_mistakes(images: torch.Tensor, p: int, values: tuple[torch.Tensor, ...]
                       ) -> dict[str, torch.Tensor]:
    """What the usual wrong assemblies return (those that do not crash)."""
    weight, bias, cls, pos = (v.double() for v in values)
    patches = unfolded(images, p)
    tokens = patches @ weight.T + bias
    B, N = tokens.shape[:2]
    first = cls.expand(B, 1, -1)
    mistakes = {
        POSITIONS_BEFORE_CLS: torch.cat([first, tokens + pos[:, 1:]], dim=1),
        POSITIONS_BEFORE_CLS + " (here the first n_patches positions went to the patches)":
            torch.cat([first, tokens + pos[:, :N]], dim=1),
        NO_POSITIONS: torch.cat([first, tokens], dim=1),
        CLS_LAST: torch.cat([tokens, first], dim=1) + pos,
        PATCH_K_POSITION_K: torch.cat([first + pos[:, :1], tokens + pos[:, :N]], dim=1),
        CLS_LAST_POSITION: torch.cat([first + pos[:, N:], tokens + pos[:, :N]], dim=1),
    }
    if weight.shape[0] == weight.shape[1]:  # d_model == C·p·p: these do not crash
        mistakes[PROJ_AFTER] = _assemble(cls, patches, pos) @ weight.T + bias
        mistakes[CLS_PROJECTED] = _assemble(cls @ weight.T + bias, tokens, pos)
    return mistakes


def expect_embedding(check: SelfCheck, module: nn.Module, images: torch.Tensor, p: int,
                     values: tuple[torch.Tensor, ...], what: str,
                     earlier: torch.Tensor | None = None,
                     earlier_images: torch.Tensor | None = None) -> torch.Tensor:
    """The module's output for ``images`` with the parameters ``values``: its shape (under
    the "shape" clause) and its values (under the clause current when called). ``earlier``
    and ``earlier_images``: the output and the images of the call before, to recognise an
    answer or patches kept from it. Returns it."""
    clause = check.current
    B, C, H, W = images.shape
    d, N = values[0].shape[0], values[3].shape[1] - 1
    out = check.tensor(explained_call(check, module, images, explanations=crash_explanations(
        images, p, N, d)), f"module(images of shape {(B, C, H, W)})")
    if clause == "values":
        check.clause("shape")
    got = tuple(out.shape)
    check.expect(got == (B, N + 1, d),
                 f"the output for images of shape {(B, C, H, W)} has shape {(B, N + 1, d)}",
                 expected=f"shape {(B, N + 1, d)}: the class token and {N} patch tokens",
                 got=f"shape {got}", diagnoses={
                     NO_CLASS_TOKEN: got == (B, N, d),
                     SQUEEZED: B == 1 and got == (N + 1, d)})
    check.clause(clause)
    weight, bias, cls, pos = (v.double() for v in values)
    wrong_patches = [_assemble(cls, w @ weight.T + bias, pos)
                     for w in patchify_mistakes(images, p).values()]
    reference = reference_embedding(images, p, values)

    def stale_patches() -> bool:
        """The earlier images' patches, with this call's parameters."""
        return (earlier_images is not None and earlier_images.shape == images.shape
                and not torch.equal(earlier_images, images)
                and _same(out, reference_embedding(earlier_images, p, values)))

    def dropped() -> bool:
        """Zeros where the reference has none, the rest the reference times one factor."""
        got = out.detach().double()
        if got.shape != reference.shape:
            return False
        zero, kept = got == 0, (got != 0) & (reference.abs() > 1e-3)
        if not zero.any() or not kept.any():
            return False
        ratio = got[kept] / reference[kept]
        return bool(ratio.min() > 1.01 and (ratio.max() - ratio.min()) < 1e-3 * ratio.max())

    check.close(out, reference, what,
                mistakes=embedding_mistakes(images, p, values), atol=1e-4,
                dims=("image", "token", "channel"), diagnoses={
                    DROPOUT: dropped,
                    STALE_OUTPUT: lambda: earlier is not None and earlier.shape == out.shape
                    and torch.equal(out.detach(), earlier),
                    STALE_PATCHES: stale_patches,
                    WRONG_PATCHES: lambda: any(_same(out, w) for w in wrong_patches)})
    return out.detach()


def expect_gradients(check: SelfCheck, module: nn.Module, images: torch.Tensor, p: int,
                     values: tuple[torch.Tensor, ...], generator: torch.Generator,
                     sees_requires_grad: bool = True) -> None:
    """In training mode, the gradients of a random linear function of the output reach
    every parameter, with the values the reference gives. ``sees_requires_grad``: whether
    ``module``'s parameters show the student's requires_grad (the grader's rebuilt module
    does not), so that a frozen parameter can be named."""

    def diagnoses(frozen: bool) -> dict[str, bool]:
        if not sees_requires_grad:
            return {NO_GRADIENT: True}
        return {FROZEN: frozen, NO_GRADIENT: not frozen}

    module.train()
    module.zero_grad()
    out = check.tensor(check.call(module, images), "module(images) in training mode")
    leaves = [v.double().requires_grad_() for v in values]
    reference = reference_embedding(images, p, tuple(leaves))
    check.close(out.detach(), reference.detach(), "in training mode, with gradients enabled, "
                "the output is the same", atol=1e-4, dims=("image", "token", "channel"))
    frozen = not any(q.requires_grad for q in module.parameters())
    check.expect(out.requires_grad, "the output is connected to the parameters (it has a "
                 "gradient function)", expected="out.requires_grad is True",
                 got="a tensor no gradient can flow through", diagnoses=diagnoses(frozen))
    direction = torch.randn(out.shape, generator=generator)
    (out * direction).sum().backward()
    (reference * direction.double()).sum().backward()
    parameters = dict(module.named_parameters())
    for name, leaf in zip(("proj.weight", "proj.bias", "cls_token", "positions"), leaves,
                          strict=True):
        grad = parameters[name].grad
        frozen = not parameters[name].requires_grad
        check.expect(grad is not None, f"the gradient of the output reaches `{name}`",
                     expected="a gradient", got="None (no gradient)",
                     diagnoses=diagnoses(frozen))
        check.close(grad, leaf.grad, f"the gradient of sum(output · R) for a random R with "
                    f"respect to `{name}`", atol=1e-3, rtol=1e-4)


def check_PatchEmbedding(embedding_class: type[nn.Module]) -> None:  # noqa: N802
    """Members and their start, class token first, positions added to every token after it,
    other sizes, gradients."""
    check = SelfCheck("PatchEmbedding")
    p, C, d, H, W, B = 2, 1, 8, 4, 4, 3
    N = (H // p) * (W // p)
    generator = torch.Generator().manual_seed(80)

    check.clause("members")
    module = check.call_seeded(0, embedding_class, p, C, d, N)
    expect_members(check, module, p, C, d, N)

    check.clause("init")
    expect_init(check, embedding_class, p, C, d, N, seeds=(1, 2))

    check.clause("values")
    values = set_parameters(module, generator, p, C, d, N)
    first = torch.randn(B, C, H, W, generator=generator)  # negative and above 1 too
    earlier = expect_embedding(check, module, first, p, values,
                               "the class token plus position 0, then proj(patch k) plus "
                               "position k + 1")
    values = set_parameters(module, generator, p, C, d, N)
    images = torch.rand(B, C, H, W, generator=generator)
    expect_embedding(check, module, images, p, values, "a second call, with other parameters "
                     "and images", earlier=earlier, earlier_images=first)

    check.clause("shape")
    expect_embedding(check, module, images[:1], p, values, "the embedding of a batch of one")

    check.clause("arguments")
    # several channels and a patch size of 3 on images that are not square; d == C·p·p
    for p, C, d, H, W, B in ((3, 2, 5, 6, 9, 2), (1, 3, 3, 2, 3, 2)):
        N = (H // p) * (W // p)
        module = check.call_seeded(3, embedding_class, p, C, d, N)
        expect_members(check, module, p, C, d, N)
        values = set_parameters(module, generator, p, C, d, N)
        images = torch.rand(B, C, H, W, generator=generator)
        expect_embedding(check, module, images, p, values,
                         f"the embedding with patch_size={p}, in_channels={C}, d_model={d}, "
                         f"n_patches={N} of {H}×{W} images")

    check.clause("gradients")
    expect_gradients(check, module, images, p, set_parameters(module, generator, p, C, d, N),
                     generator)

    check.clause("device")
    on_meta = check.call_seeded(4, embedding_class, p, C, d, N).to("meta")
    check.device_follows(on_meta, images, what="module(images)")
    check.passed()


# ---- sequence_log_prob ----------------------------------------------------------------------

WRONG_AXIS = ("the log-softmax ran over the wrong dimension: it must normalise over the "
              "vocabulary, the last dimension of the logits")
UNDERFLOW = ("softmax followed by log underflows: a probability below about 1e-45 becomes 0 in "
             "float32 (below about 1e-308 in float64, so converting first only moves the "
             "limit), and log(0) = -inf; use log_softmax, which never forms the tiny "
             "probability")
OVERFLOW = ("the log of a sum of exponentials was computed without subtracting the maximum: "
            "exp of a logit in the hundreds overflows to inf; use log_softmax (or "
            "torch.logsumexp), which subtracts it")
PER_POSITION = ("per-position log-probabilities were returned: sum them over the positions "
                "(dim=1)")
ONE_NUMBER = ("everything was summed to one number: keep one per sentence (sum over dim=1 "
              "only)")
SUMMED_OVER_BATCH = ("the sum ran over the batch (dim 0) instead of the positions: the result has "
                     "one number per position; sum over dim=1")
TOO_FEW = "that is T − 2 = {n} terms, one too few: score tokens 1..T−1 with logits 0..T−2"
FIRST_MISSING = ("the first term is missing: token 1 must be scored too (logits[:, 0] predicts "
                 "it); score tokens 1..T−1 with logits 0..T−2")
LAST_MISSING = ("the last term is missing: the last token, tokens[:, T−1], must be scored too "
                "(logits[:, T−2] predicts it; only logits[:, T−1] has nothing to predict); score "
                "tokens 1..T−1 with logits 0..T−2")
COPIES_LOGITS = ("sequence_log_prob moves nothing to the CPU (tested on PyTorch's meta "
                 "device, a stand-in for a GPU)")
CPU_MADE = ("a tensor was created on the CPU (without device=logits.device) and then used with "
            "the logits, which a GPU refuses ({functions}); make it with device=logits.device, "
            "or use torch.*_like / logits.new_*")
CPU_INDEX = ("an index tensor made on the CPU (torch.arange or torch.tensor without "
             "device=logits.device) was given to {functions}, which a GPU refuses (only "
             "indexing with [...] moves a CPU index for you); make it with "
             "device=logits.device")
CPU_RESULT_LOG_PROB = ("the result was made or collected on the CPU (a running total or "
                       "table without device=logits.device, or `.cpu()`): it must come back "
                       "on the logits' device")
PRODUCT = ("the probability of the sentence (a product) was returned, not its log (a sum "
           "of log-probabilities)")
IDS_ON_POSITIONS = ("the token ids were used as indices along dimension 1, the positions (of "
                    "size {size}), not along the vocabulary, the last dimension of the logits")
CLAMPED = ("the probabilities were clamped (or an epsilon added) before the log: a probability "
           "below the clamp is scored as the clamp, so a model sure of a wrong token scores far "
           "too high; use log_softmax, which needs no clamp")


def ids_on_positions(T: int) -> Explanations:
    """A crash from token ids used to index the positions (gather along dim 1, or a table
    indexed [batch, id]): PyTorch names dimension 1 and its size, T or T − 1."""
    return {IDS_ON_POSITIONS.format(size=size): (
        lambda m, size=size: f"out of bounds for dimension 1 with size {size}" in m)
        for size in (T - 1, T)}


class CpuMeetings(TorchFunctionMode):
    """Which function made each CPU tensor (a tensor computed only from CPU tensors counts
    as made by the function that made its first), and which of them met a tensor held
    elsewhere in a call other than indexing, where a GPU refuses them: only indexing with
    [...] moves a CPU index to the indexed tensor's device."""

    INDEXING = frozenset({"__getitem__", "__setitem__"})

    def __init__(self) -> None:
        super().__init__()
        self.made: dict[int, tuple[torch.Tensor, str]] = {}
        self.met: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", type(func).__name__)
        tensors = [t for _, t in tensors_in((args, kwargs), "")]
        cpu = [self.made[id(t)][1] for t in tensors
               if t.device.type == "cpu" and t.dim() > 0 and id(t) in self.made]
        if name not in self.INDEXING and any(t.device.type != "cpu" for t in tensors):
            self.met.extend(cpu)
        out = func(*args, **kwargs)
        for tensor in out if isinstance(out, tuple | list) else (out,):
            if (isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu"
                    and tensor.dim() > 0 and len(self.made) < 1000):
                self.made[id(tensor)] = (tensor, cpu[0] if cpu else name)
        return out


def cpu_culprits(fn: Callable, *args: torch.Tensor) -> list[str]:
    """The functions that made the CPU tensors which met ``args`` (on the meta device) where
    a GPU would refuse them; the global generator is left as it was."""
    meetings = CpuMeetings()
    with torch.random.fork_rng(devices=[]), meetings:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - the crash is the expected end of this run
            pass
    return sorted(set(meetings.met))


def term_mistakes(logits: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """One term too few, at either end: what a sum without the first, or without the last,
    term gives."""
    picked = torch.log_softmax(logits[:, :-1].double(), dim=-1).gather(
        -1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
    return {FIRST_MISSING: picked[:, 1:].sum(1), LAST_MISSING: picked[:, :-1].sum(1)}


def expect_on_logits_device(check: SelfCheck, sequence_log_prob: Callable,
                            logits: torch.Tensor, tokens: torch.Tensor) -> None:
    """Run on the data-less meta device, a stand-in for a GPU: the result must come back
    there, and no CPU tensor may meet the logits where the meta device, like a GPU, refuses
    it. A CPU tensor used only to index (``lp[torch.arange(B)[:, None], ...]``) passes:
    PyTorch moves index tensors to the indexed tensor's device. A CPU index given to
    ``gather`` or ``index_select``, which the meta device lets through and a GPU refuses,
    fails."""
    what = ("sequence_log_prob runs on logits on another device (tested on PyTorch's meta "
            "device, a stand-in for a GPU that holds no numbers)")
    try:
        out, report = check._run(sequence_log_prob, (logits.to("meta"), tokens.to("meta")),
                                 {}, seed=None, observe=True)
    except Exception as error:  # noqa: BLE001 - only a device mismatch is a failure
        message = str(error).strip()
        seen = getattr(error, "observed", None)
        made_on_cpu = bool(seen is not None and seen.cpu_tensors)
        copied = seen.copied_to_cpu if seen is not None else ()
        check.expect(not copied, COPIES_LOGITS, expected="the logits kept on their device",
                     got=f"moved to the CPU with .{copied[0] if copied else ''}()",
                     likely=COPIED_TO_CPU)
        if not made_on_cpu and (not re.search(r"device", message)
                                or re.search(r"meta tensors?|no data", message)):
            check._passed_one()  # needs the values: cannot be run without them
            return
        culprits = cpu_culprits(sequence_log_prob, logits.to("meta"), tokens.to("meta"))
        made = (f"made by {', '.join(culprits[:3])}" if culprits else "made by one of "
                + ", ".join(sorted(set(seen.cpu_tensors))[:3])) if made_on_cpu else ""
        check.expect(False, what, expected="a result on the logits' device",
                     got=f"{type(error).__name__}: {message}",
                     likely=CPU_MADE.format(functions=made) if made else None)
        return
    copied = report.observed.copied_to_cpu if report.observed else ()
    check.expect(not copied, COPIES_LOGITS, expected="the logits kept on their device",
                 got=f"moved to the CPU with .{copied[0] if copied else ''}()",
                 likely=COPIED_TO_CPU)
    indices = sorted(set(report.observed.cpu_indices if report.observed else ()))
    check.expect(not indices, "sequence_log_prob gives index-taking functions indices on the "
                 "logits' device (tested on PyTorch's meta device, a stand-in for a GPU)",
                 expected="index tensors on the logits' device",
                 got=f"a CPU index given to {', '.join(indices)}",
                 likely=CPU_INDEX.format(functions=", ".join(indices)) if indices else None)
    check.expect(isinstance(out, torch.Tensor) and out.is_meta,
                 "sequence_log_prob of logits on another device (the meta device) returns its "
                 "result there", expected="a result on the logits' device", got=describe(out),
                 likely=CPU_RESULT_LOG_PROB if isinstance(out, torch.Tensor) else None)


def reference_log_prob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """With torch.distributions: the log-probability of each next token, summed (float64)."""
    dist = torch.distributions.Categorical(logits=logits[:, :-1].double())
    return dist.log_prob(tokens[:, 1:]).sum(dim=1)


def extreme_logits(tokens: torch.Tensor, gap: float, offset: float) -> torch.Tensor:
    """Logits in the hundreds and thousands, one kind per sentence (cycling through four):
    a model sure of the right next token (it scores +gap/2, another token -gap/2), a model
    sure of a wrong one (the other way round), and ordinary logits shifted by +offset and by
    -offset. The log-probabilities are about 0, about -gap, and ordinary."""
    B, T = tokens.shape
    V = int(tokens.max()) + 2
    logits = torch.zeros(B, T, V)
    nxt = tokens[:, 1:].unsqueeze(-1)
    other = (nxt + 1) % V
    for b in range(B):
        kind = b % 4
        if kind < 2:
            sign = 1.0 if kind == 0 else -1.0
            logits[b, :-1].scatter_(-1, nxt[b], sign * gap / 2)
            logits[b, :-1].scatter_(-1, other[b], -sign * gap / 2)
        else:
            ordinary = torch.linspace(-2.0, 2.0, V).roll(b).expand(T, V)
            logits[b] = ordinary + (offset if kind == 2 else -offset)
    return logits


def large_diagnoses(out: torch.Tensor) -> dict[str, Callable[[], bool]]:
    """Which wrong formula left non-finite values where (sentence b is of kind b % 4, see
    :func:`extreme_logits`): an unshifted log-sum-exp overflows where logits are large and
    positive (kinds 0 and 2), log(softmax) underflows only where the right token is far below
    another (kind 1)."""
    bad = ~torch.isfinite(out.reshape(-1)) if out.dim() <= 1 else None

    def kinds(*which: int) -> bool:
        return bad is not None and any(bool(bad[kind::4].any()) for kind in which)

    return {
        OVERFLOW: lambda: kinds(0, 2),
        UNDERFLOW: lambda: kinds(1) and not kinds(0, 2),
    }


def clamp_diagnosis(out: torch.Tensor, wanted: torch.Tensor) -> dict[str, Callable[[], bool]]:
    """A clamped log(softmax): sentences sure of a wrong token (kind 1) score finite but far
    too high; the others are right."""
    def clamped() -> bool:
        got = out.detach().double().reshape(-1)
        if got.shape != wanted.shape or not torch.isfinite(got).all():
            return False
        kind = torch.arange(len(got)) % 4
        off = (got - wanted).abs() > 1e-2
        return bool(off.any() and (off == (kind == 1)).all()
                    and (got[off] > wanted[off]).all())
    return {CLAMPED: clamped}


def large_cases(tokens: torch.Tensor, gaps: tuple[float, float], offset: float,
                check: SelfCheck, sequence_log_prob: Callable, what: str,
                reference: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Logits with a gap of gaps[0] (exp(gap/2) overflows float32) and of gaps[1] (the wrong
    token's probability underflows even float64), each checked against ``reference``."""
    for gap in gaps:
        extreme = extreme_logits(tokens, gap=gap, offset=offset)
        got = torch.as_tensor(check.call(sequence_log_prob, extreme, tokens)).detach()
        wanted = reference(extreme, tokens)
        check.close(got, wanted, what.format(half=gap / 2, offset=offset), atol=1e-2,
                    rtol=1e-5, dims=("sentence",),
                    diagnoses={**large_diagnoses(got), **clamp_diagnosis(got, wanted)})


def expect_bfloat16(check: SelfCheck, sequence_log_prob: Callable, logits: torch.Tensor,
                    tokens: torch.Tensor) -> None:
    """bfloat16 logits give a bfloat16 result (a float32 one-hot or table would promote it)."""
    out = check.call(sequence_log_prob, logits.bfloat16(), tokens)
    got = getattr(out, "dtype", None)
    check.expect(got == torch.bfloat16, "sequence_log_prob with bfloat16 logits returns "
                 "bfloat16", expected="a bfloat16 result", got=str(got).removeprefix("torch."),
                 likely="a tensor made inside (a float one-hot, a table of zeros) has a fixed "
                        "dtype and promoted the result: make it with dtype=logits.dtype")


def check_sequence_log_prob(sequence_log_prob: Callable[[torch.Tensor, torch.Tensor],
                                                        torch.Tensor]) -> None:
    """One number per sentence; uniform logits, a confident model, agreement with
    torch.distributions; logits in the hundreds; dtype and device."""
    check = SelfCheck("sequence_log_prob")
    B, T, V = 3, 5, 7
    generator = torch.Generator().manual_seed(81)
    tokens = torch.randint(V, (B, T), generator=generator)
    zeros = torch.zeros(B, T, V)

    check.clause("shape")
    uniform = check.tensor(explained_call(check, sequence_log_prob, zeros, tokens,
                                          explanations=ids_on_positions(T)),
                           "sequence_log_prob(all-zero logits, tokens)")
    check.shape(uniform, (B,), f"the result for a batch of {B} sentences",
                likely=ONE_NUMBER if uniform.numel() == 1 else PER_POSITION
                if tuple(uniform.shape) == (B, T - 1) else SUMMED_OVER_BATCH
                if tuple(uniform.shape) == (T - 1,) else None)
    one = check.tensor(check.call(sequence_log_prob, zeros[:1], tokens[:1]),
                       "sequence_log_prob for a batch of one sentence")
    check.shape(one, (1,), "the result for a batch of one sentence",
                likely=SQUEEZED if one.dim() == 0 else None)

    check.clause("values")
    logits = 2.0 * torch.randn(B, T, V, generator=generator)
    out = check.call(sequence_log_prob, logits=logits, tokens=tokens)
    short_by_one = {mistake: isinstance(out, torch.Tensor) and _same(out, wanted)
                    for mistake, wanted in term_mistakes(logits, tokens).items()}
    per_token = -math.log(V)
    value = float(uniform.double().mean())
    too_few = abs(value - (T - 2) * per_token) < 1e-4
    check.close(uniform, torch.full((B,), (T - 1) * per_token),
                f"with all-zero logits every next token has probability 1/V, so a sentence of "
                f"T = {T} tokens scores (T − 1)·log(1/V) = {(T - 1) * per_token:.4f}",
                diagnoses={
                    f"that is T = {T} terms, one too many: either token 0 was scored (nothing "
                    "predicts it) or logits[:, t] were paired with tokens[:, t]; logits[:, t] "
                    "predicts tokens[:, t + 1], so score tokens 1..T−1 with logits 0..T−2":
                        abs(value - T * per_token) < 1e-4,
                    FIRST_MISSING: too_few and short_by_one[FIRST_MISSING],
                    LAST_MISSING: too_few and short_by_one[LAST_MISSING],
                    TOO_FEW.format(n=T - 2): too_few and not any(short_by_one.values()),
                    "that is the mean over the positions; the log-probability of a sentence is "
                    "the sum": abs(value - per_token) < 1e-4,
                    "probabilities were summed, not log-probabilities":
                        abs(value - (T - 1) / V) < 1e-4,
                    PRODUCT: abs(value - V ** -(T - 1)) < 1e-3 * V ** -(T - 1),
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
                    "tokens[:, t + 1], the next one": bool((torch.as_tensor(sure) < -5).all()),
                })
    check.close(out, reference_log_prob(logits, tokens),
                "agrees with torch.distributions.Categorical on random logits",
                dims=("sentence",))
    short = 2.0 * torch.randn(B, 2, V, generator=generator)
    check.close(check.call(sequence_log_prob, short, tokens[:, :2]),
                reference_log_prob(short, tokens[:, :2]),
                "sentences of T = 2 tokens: a single term each", dims=("sentence",))

    check.clause("large")
    many = torch.randint(V, (4, T), generator=generator)
    large_cases(many, (200.0, 2000.0), 1000.0, check, sequence_log_prob,
                "logits of ±{half:.0f} and around ±{offset:.0f} (sentence 0: a model sure of "
                "every right token, sentence 1: sure of wrong ones, sentences 2 and 3: ordinary "
                "logits shifted by ±{offset:.0f}) give exact, finite scores",
                reference_log_prob)

    check.clause("dtype")
    check.dtype_follows(sequence_log_prob, logits, tokens, what="sequence_log_prob")
    expect_bfloat16(check, sequence_log_prob, logits, tokens)
    check.clause("device")
    expect_on_logits_device(check, sequence_log_prob, logits, tokens)
    check.passed()

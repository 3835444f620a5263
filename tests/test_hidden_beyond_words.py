"""Hidden tests and self-checks of tutorial 08 against the solution, common mistakes and
other correct answers (``BANKS``, run by tests/test_contracts.py), and special cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mutation import ExerciseBanks, failure
from notebook_code import solution_namespace
from torch import nn

from helpers.checks.beyond_words import (
    check_PatchEmbedding,
    check_patchify,
    check_sequence_log_prob,
)
from hidden_tests.beyond_words import (
    grade_PatchEmbedding,
    grade_patchify,
    grade_sequence_log_prob,
)
from hidden_tests.common import set_salt

SOLUTION = solution_namespace("08_beyond_words")


# ---- patchify: correct alternatives -------------------------------------------------------

def patches_reshape_permute(images, patch_size):
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, -1, C * p * p)


def patches_tensor_unfold(images, patch_size):
    p = patch_size
    x = images.unfold(2, p, p).unfold(3, p, p)  # (B, C, H/p, W/p, p, p)
    B, C, nh, nw = x.shape[:4]
    return x.permute(0, 2, 3, 1, 4, 5).reshape(B, nh * nw, C * p * p)


def patches_f_unfold(images, patch_size):
    return F.unfold(images, kernel_size=patch_size, stride=patch_size).transpose(1, 2)


def patches_loops(images, patch_size):
    B, C, H, W = images.shape
    p = patch_size
    rows = []
    for i in range(H // p):
        for j in range(W // p):
            rows.append(images[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(B, -1))
    return torch.stack(rows, dim=1)


def patches_two_transposes(images, patch_size):
    """Split rows first, then columns, with three transposes."""
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p)
    x = x.transpose(1, 2).transpose(2, 4).transpose(3, 4)  # (B, H/p, W/p, C, p, p)
    return x.contiguous().view(B, (H // p) * (W // p), C * p * p)


def patches_into_own_tensor(images, patch_size):
    """A loop into a tensor made with the images' dtype and device."""
    B, C, H, W = images.shape
    p = patch_size
    out = images.new_zeros(B, (H // p) * (W // p), C * p * p)
    for k in range((H // p) * (W // p)):
        i, j = divmod(k, W // p)
        out[:, k] = images[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(B, -1)
    return out


# ---- patchify: mistakes -------------------------------------------------------------------

def patches_column_order(images, patch_size):
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5)
    return x.reshape(B, -1, C * p * p)


def patches_plain_reshape(images, patch_size):
    B, C, H, W = images.shape
    return images.reshape(B, (H // patch_size) * (W // patch_size), -1)


def patches_channels_last(images, patch_size):
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, -1, C * p * p)


def patches_transposed(images, patch_size):
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 5, 3)
    return x.reshape(B, -1, C * p * p)


def patches_unfold_untransposed(images, patch_size):
    return F.unfold(images, kernel_size=patch_size, stride=patch_size)


def patches_in_place(images, patch_size):
    out = patches_reshape_permute(images, patch_size).clone()
    images.zero_()
    return out


def patches_resized_in_place(images, patch_size):
    """`resize_` where `reshape` was meant: the caller's images change shape."""
    B, C, H, W = images.shape
    p = patch_size
    grid = images.resize_(B, C, H // p, p, W // p, p)
    return grid.permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * p * p)


def patches_size_two(images, patch_size):
    B, C, H, W = images.shape
    p = 2
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, -1, C * p * p)


def patches_square_reshape(images, patch_size):
    """Uses H where W is meant: crashes on images that are not square."""
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, H // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, -1, C * p * p)


def patches_square_loops(images, patch_size):
    """Uses H where W is meant: keeps only the first H columns of a wide image."""
    B, C, H, W = images.shape
    p = patch_size
    rows = []
    for i in range(H // p):
        for j in range(H // p):
            rows.append(images[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(B, -1))
    return torch.stack(rows, dim=1)


def patches_squeezed(images, patch_size):
    """`.squeeze()` at the end: a batch of one loses its batch dimension."""
    return patches_reshape_permute(images, patch_size).squeeze()


def patches_into_zeros(images, patch_size):
    """A loop into torch.zeros(...): float32 on the CPU whatever the images are."""
    B, C, H, W = images.shape
    p = patch_size
    out = torch.zeros(B, (H // p) * (W // p), C * p * p)
    for k in range((H // p) * (W // p)):
        i, j = divmod(k, W // p)
        out[:, k] = images[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(B, -1)
    return out


def patches_into_cpu_zeros(images, patch_size):
    """The dtype right, the device not: on a GPU the patches are copied to the CPU."""
    B, C, H, W = images.shape
    p = patch_size
    out = torch.zeros(B, (H // p) * (W // p), C * p * p, dtype=images.dtype)
    for k in range((H // p) * (W // p)):
        i, j = divmod(k, W // p)
        out[:, k] = images[:, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(B, -1)
    return out


def patches_cpu_index(images, patch_size):
    """Right values, gathered with an index made by torch.arange on the CPU."""
    B, C, H, W = images.shape
    p = patch_size
    order = torch.arange(H * W).reshape(H // p, p, W // p, p).permute(0, 2, 1, 3).reshape(-1)
    flat = images.reshape(B, C, H * W)[:, :, order]
    return flat.reshape(B, C, -1, p * p).permute(0, 2, 1, 3).reshape(B, -1, C * p * p)


def patches_float32(images, patch_size):
    return patches_reshape_permute(images, patch_size).float()


def patches_always_double(images, patch_size):
    """`.double()` "for precision": float64 whatever the images are."""
    return patches_reshape_permute(images.double(), patch_size)


def patches_unfold_no_permute(images, patch_size):
    """Tensor.unfold twice, reshaped without moving the channel axis behind the grid."""
    B, C, H, W = images.shape
    p = patch_size
    return images.unfold(2, p, p).unfold(3, p, p).reshape(B, -1, C * p * p)


def patches_stacked_last(images, patch_size):
    """A list of patches stacked along the last dimension: (B, C·p·p, N)."""
    B, C, H, W = images.shape
    p = patch_size
    patches = [images[:, :, i:i + p, j:j + p].reshape(B, -1)
               for i in range(0, H, p) for j in range(0, W, p)]
    return torch.stack(patches, dim=2)


def patches_via_cpu(images, patch_size):
    """Through the CPU: `.cpu()` first, so on a GPU the patches come back on the CPU."""
    return patches_reshape_permute(images.cpu(), patch_size)


def patches_renamed(x, p):
    """The right patches, with the parameters renamed."""
    return patches_reshape_permute(x, p)


def patches_scaled(images, patch_size):
    """A bug no diagnosis describes."""
    return patches_reshape_permute(images, patch_size) * 1.5


def patches_n_from_height(images, patch_size):
    """The number of patches from the height alone, as if every image were square."""
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // p) ** 2, -1)


def patches_height_width_swapped(images, patch_size):
    """H and W swapped in the split: right shape, wrong pixels when H ≠ W."""
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, W // p, p, H // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // p) * (W // p), C * p * p)


def patches_grid_of_eight(images, patch_size):
    """The grid worked out for the notebook's 8×8 digits, whatever the images."""
    B, C = images.shape[:2]
    p = patch_size
    n = 8 // p
    x = images.reshape(B, C, n, p, n, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, n * n, C * p * p)


PATCHIFY_BANKS = ExerciseBanks(
    solution=SOLUTION["patchify"],
    correct=[patches_reshape_permute, patches_tensor_unfold, patches_f_unfold, patches_loops,
             patches_two_transposes, patches_into_own_tensor],
    check=[
        (patches_unfold_untransposed, "the patch axis and the pixel axis are swapped", "shape"),
        (patches_stacked_last, "the patch axis and the pixel axis are swapped", "shape"),
        (patches_squeezed, "squeezed away", "shape"),
        (patches_renamed, "the parameters were renamed", "shape"),
        (patches_grid_of_eight, "the number of patches per side is fixed in the code", "shape"),
        (patches_unfold_no_permute, "the channel axis is still in front", "values"),
        (patches_column_order, "column order", "values"),
        (patches_plain_reshape, "without moving the axes", "values"),
        (patches_channels_last, "(row, column, channel) order", "values"),
        (patches_transposed, "transposed", "values"),
        (patches_scaled, None, "values"),
        (patches_size_two, "patch size is fixed in the code", "arguments"),
        (patches_square_reshape, "assumes square images", "arguments"),
        (patches_square_loops, "assumes square images", "arguments"),
        (patches_n_from_height, "computed from one side only", "arguments"),
        (patches_height_width_swapped, "H and W are swapped", "arguments"),
        (patches_into_zeros, "dtype", "dtype"),
        (patches_float32, "dtype", "dtype"),
        (patches_always_double, "dtype", "dtype"),
        (patches_into_cpu_zeros, "device=images.device", "device"),
        (patches_via_cpu, "copied off their device", "device"),
        (patches_cpu_index, "device=x.device", "device"),
        (patches_in_place, "in place", "unchanged"),
        (patches_resized_in_place, "in place", "unchanged"),
    ],
    hidden=[
        (patches_unfold_untransposed, "the patch axis and the pixel axis are swapped", "shape"),
        (patches_stacked_last, "the patch axis and the pixel axis are swapped", "shape"),
        (patches_squeezed, "squeezed away", "shape"),
        (patches_renamed, "the parameters were renamed", "shape"),
        (patches_grid_of_eight, "the number of patches per side is fixed in the code", "shape"),
        (patches_unfold_no_permute, "the channel axis is still in front", "values"),
        (patches_column_order, "column order", "values"),
        (patches_plain_reshape, "without moving the axes", "values"),
        (patches_channels_last, "(row, column, channel) order", "values"),
        (patches_transposed, "transposed", "values"),
        (patches_scaled, None, "values"),
        (patches_size_two, "patch size is fixed in the code", "arguments"),
        (patches_square_reshape, "assumes square images", "arguments"),
        (patches_square_loops, "assumes square images", "arguments"),
        (patches_n_from_height, "computed from one side only", "arguments"),
        (patches_height_width_swapped, "H and W are swapped", "arguments"),
        (patches_into_zeros, "dtype", "dtype"),
        (patches_float32, "dtype", "dtype"),
        (patches_always_double, "dtype", "dtype"),
        (patches_into_cpu_zeros, "device=images.device", "device"),
        (patches_via_cpu, "copied off their device", "device"),
        (patches_cpu_index, "device=x.device", "device"),
        (patches_in_place, "in place", "unchanged"),
        (patches_resized_in_place, "in place", "unchanged"),
    ],
)


def test_a_crash_says_which_images_the_test_used():
    message = str(pytest.raises(AssertionError, check_patchify, patches_square_reshape).value)
    assert "(2, 2, 4, 6)" in message and "handles 4×4 images, but these are 4×6" in message


@pytest.mark.parametrize("grade", [check_patchify, grade_patchify])
def test_images_changed_in_place_are_named(grade):
    """The hidden test passes the images by keyword, the self-check by position: both name
    the argument that was changed."""
    message = failure(grade, patches_in_place)
    assert "changed in place: images" in message


def test_a_loop_into_a_cpu_tensor_is_caught_under_the_name_patchify():
    """Named `patchify`, a crash on the meta device must not read as "not written yet"."""
    namespace: dict = {}
    exec("import torch\n"
         "def patchify(images, patch_size):\n"
         "    B, C, H, W = images.shape\n"
         "    p = patch_size\n"
         "    out = torch.zeros(B, (H // p) * (W // p), C * p * p, dtype=images.dtype)\n"
         "    for k in range((H // p) * (W // p)):\n"
         "        i, j = divmod(k, W // p)\n"
         "        out[:, k] = images[:, :, i*p:(i+1)*p, j*p:(j+1)*p].reshape(B, -1)\n"
         "    return out\n", namespace)
    message = failure(check_patchify, namespace["patchify"])
    assert "device=images.device" in message and "not written" not in message


# ---- PatchEmbedding -----------------------------------------------------------------------

patchify = patches_reshape_permute  # what the classes below call, as a notebook's would


class EmbeddingBase(nn.Module):
    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_channels * patch_size**2, d_model)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, d_model))
        self.positions = nn.Parameter(0.02 * torch.randn(1, n_patches + 1, d_model))

    def tokens(self, images):
        return self.proj(patchify(images, self.patch_size))

    def forward(self, images):
        tokens = self.tokens(images)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.positions


class EmbeddingNewTensor(EmbeddingBase):
    """Fills a tensor of its own, made with the tokens' dtype and device; truncated-normal
    starts."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.positions, std=0.02)

    def forward(self, images):
        tokens = self.tokens(images)
        B, N, d = tokens.shape
        out = torch.empty(B, N + 1, d, dtype=tokens.dtype, device=tokens.device)
        out[:, 0] = self.cls_token[0, 0]
        out[:, 1:] = tokens
        return out + self.positions


class EmbeddingRepeat(EmbeddingBase):
    def forward(self, images):
        tokens = self.tokens(images)
        return torch.cat([self.cls_token.repeat(len(tokens), 1, 1), tokens], 1) + self.positions


class EmbeddingSplitPositions(EmbeddingBase):
    """Adds position 0 to the class token and the others to the patches, then joins them."""

    def forward(self, images):
        tokens = self.tokens(images) + self.positions[:, 1:]
        first = (self.cls_token + self.positions[:, :1]).expand(len(tokens), -1, -1)
        return torch.cat([first, tokens], dim=1)


class EmbeddingUnfold(EmbeddingBase):
    """F.unfold for the patches; uniform small starts."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.cls_token = nn.Parameter(0.05 * (torch.rand(1, 1, d_model) - 0.5))
        self.positions = nn.Parameter(0.05 * (torch.rand(1, n_patches + 1, d_model) - 0.5))

    def forward(self, images):
        p = self.patch_size
        tokens = self.proj(F.unfold(images, p, stride=p).transpose(1, 2))
        return torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], 1) + self.positions


class EmbeddingPositionsBefore(EmbeddingBase):
    def forward(self, images):
        tokens = self.tokens(images) + self.positions[:, 1:]
        return torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)


class EmbeddingFirstPositionsBefore(EmbeddingBase):
    def forward(self, images):
        tokens = self.tokens(images)
        tokens = tokens + self.positions[:, : tokens.shape[1]]
        return torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)


class EmbeddingPositionsBeforeCrash(EmbeddingBase):
    def forward(self, images):
        tokens = self.tokens(images) + self.positions
        return torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)


class EmbeddingNoPositions(EmbeddingBase):
    def forward(self, images):
        tokens = self.tokens(images)
        return torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)


class EmbeddingClsLast(EmbeddingBase):
    def forward(self, images):
        tokens = self.tokens(images)
        return torch.cat([tokens, self.cls_token.expand(len(tokens), -1, -1)], 1) + self.positions


class EmbeddingNotExpanded(EmbeddingBase):
    def forward(self, images):
        return torch.cat([self.cls_token, self.tokens(images)], dim=1) + self.positions


class EmbeddingProjLast(EmbeddingBase):
    def forward(self, images):
        patches = patchify(images, self.patch_size)
        cls = self.cls_token.expand(len(patches), -1, -1)
        return self.proj(torch.cat([cls, patches], dim=1) + self.positions)


class EmbeddingShortPositions(EmbeddingBase):
    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.positions = nn.Parameter(0.02 * torch.randn(1, n_patches, d_model))

    def forward(self, images):
        tokens = self.tokens(images) + self.positions
        return torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)


class EmbeddingPlainReshape(EmbeddingBase):
    def tokens(self, images):
        return self.proj(patches_plain_reshape(images, self.patch_size))


class EmbeddingNoClassToken(EmbeddingBase):
    def forward(self, images):
        return self.tokens(images) + self.positions[:, 1:]


class EmbeddingPlainTensorCls(EmbeddingBase):
    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        del self.cls_token
        self.cls_token = torch.zeros(1, 1, d_model)


class EmbeddingClsProjected(EmbeddingBase):
    """The class token made like a patch and sent through proj with the patches."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, in_channels * patch_size**2))

    def forward(self, images):
        patches = patchify(images, self.patch_size)
        cls = self.cls_token.expand(len(patches), -1, -1)
        return self.proj(torch.cat([cls, patches], dim=1)) + self.positions


class EmbeddingZerosInit(EmbeddingBase):
    """Zeros where the text asks for small random numbers."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.positions = nn.Parameter(torch.zeros(1, n_patches + 1, d_model))


class EmbeddingUnitInit(EmbeddingBase):
    """torch.randn without the small scale."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d_model))
        self.positions = nn.Parameter(torch.randn(1, n_patches + 1, d_model))


class EmbeddingXavierCls(EmbeddingBase):
    """The class token drawn as a weight matrix is: Xavier's uniform initialisation."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.cls_token = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, 1, d_model)))


class EmbeddingReseeds(EmbeddingBase):
    """Seeds the global generator itself: every model starts the same."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        torch.manual_seed(0)
        super().__init__(patch_size, in_channels, d_model, n_patches)


class EmbeddingReseedsAfter(EmbeddingBase):
    """Draws its parameters, then resets the generator "so that every run starts the same"."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        torch.manual_seed(0)


class EmbeddingOsSeed(EmbeddingBase):
    """"Logs the seed" with torch.seed(), which reseeds the generator from the OS."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.seed_used = torch.seed()


class EmbeddingNumpyInit(EmbeddingBase):
    """Starts drawn with numpy: torch.manual_seed does not fix them."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.cls_token = nn.Parameter(torch.from_numpy(
            0.02 * np.random.randn(1, 1, d_model)).float())
        self.positions = nn.Parameter(torch.from_numpy(
            0.02 * np.random.randn(1, n_patches + 1, d_model)).float())


class EmbeddingSqueezed(EmbeddingBase):
    def forward(self, images):
        return super().forward(images).squeeze()


class EmbeddingOneChannel(EmbeddingBase):
    """proj sized for one channel, whatever in_channels says."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.proj = nn.Linear(patch_size**2, d_model)


class EmbeddingPatchSizeTwo(EmbeddingBase):
    """forward cuts patches of 2, whatever patch_size says."""

    def tokens(self, images):
        return self.proj(patchify(images, 2))


class EmbeddingEmptyInit(EmbeddingBase):
    """torch.empty(...): the memory is left as it was. Here it holds what an integer tensor
    left there (the bits of small integers read as float32: denormal numbers), so the test
    is repeatable."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        left = lambda n: torch.arange(1, n + 1, dtype=torch.int32).view(torch.float32)  # noqa: E731
        self.cls_token = nn.Parameter(left(d_model).reshape(1, 1, d_model))
        self.positions = nn.Parameter(left((n_patches + 1) * d_model).reshape(
            1, n_patches + 1, d_model))


class EmbeddingDropout(EmbeddingBase):
    """Dropout after the embedding, as a full ViT has: active in training mode."""

    def forward(self, images):
        return F.dropout(super().forward(images), p=0.1, training=self.training)


class EmbeddingDoublePatches(EmbeddingBase):
    """The patches converted to float64 "for precision" before proj."""

    def tokens(self, images):
        return self.proj(patchify(images, self.patch_size).double())


class EmbeddingCpuClassTokens(EmbeddingBase):
    """The class-token copies made from torch.zeros(B, 1, d) on the CPU."""

    def forward(self, images):
        tokens = self.tokens(images)
        B, _, d = tokens.shape
        cls = torch.zeros(B, 1, d) + self.cls_token
        return torch.cat([cls, tokens], dim=1) + self.positions


class EmbeddingDetachedPositions(EmbeddingBase):
    """The right values, but no gradient reaches the positions: they are never learned."""

    def forward(self, images):
        tokens = self.tokens(images)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.positions.detach()


class EmbeddingClassTokenData(EmbeddingBase):
    def forward(self, images):
        tokens = self.tokens(images)
        cls = self.cls_token.data.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.positions


class EmbeddingProjDetached(EmbeddingBase):
    def tokens(self, images):
        return self.proj(patchify(images, self.patch_size)).detach()


class EmbeddingWithoutGradients(EmbeddingBase):
    def forward(self, images):
        with torch.no_grad():
            return super().forward(images)


class EmbeddingFirstOutputKept(EmbeddingBase):
    """Computes the embedding once, then returns it for every later call."""

    def forward(self, images):
        if not hasattr(self, "_kept"):
            self._kept = super().forward(images)
        return self._kept


class EmbeddingPatchesKeptByShape(EmbeddingBase):
    """Cuts the images into patches once per shape and keeps them."""

    def tokens(self, images):
        kept = self.__dict__.setdefault("_patches", {})
        if images.shape not in kept:
            kept[images.shape] = patchify(images, self.patch_size)
        return self.proj(kept[images.shape])


class EmbeddingZeroesImages(EmbeddingBase):
    """Right values, then the caller's images are zeroed in place."""

    def forward(self, images):
        out = super().forward(images)
        images.zero_()
        return out


class EmbeddingCentresInPlace(EmbeddingBase):
    def forward(self, images):
        images -= 0.5
        return super().forward(images)


class EmbeddingShifted(EmbeddingBase):
    """A bug no diagnosis describes."""

    def forward(self, images):
        return super().forward(images) + 0.1


class EmbeddingRandInit(EmbeddingBase):
    """torch.rand: uniform in [0, 1), never negative."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.positions = nn.Parameter(torch.rand(1, n_patches + 1, d_model))


class EmbeddingTenthInit(EmbeddingBase):
    """0.15 * torch.randn: a little above the limit (0.1 * torch.randn is above it after
    about half of all seeds, and gets the same diagnosis then)."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.cls_token = nn.Parameter(0.15 * torch.randn(1, 1, d_model))
        self.positions = nn.Parameter(0.15 * torch.randn(1, n_patches + 1, d_model))


class EmbeddingFrozenPositions(EmbeddingBase):
    """Fixed positions: requires_grad switched off in __init__."""

    def __init__(self, patch_size, in_channels, d_model, n_patches):
        super().__init__(patch_size, in_channels, d_model, n_patches)
        self.positions.requires_grad_(False)


class EmbeddingPatchKPositionK(EmbeddingBase):
    """Patch k gets e_k, the class token e_0: the mistake the text warns about."""

    def forward(self, images):
        tokens = self.tokens(images)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1) + self.positions[:, :1]
        return torch.cat([cls, tokens + self.positions[:, :tokens.shape[1]]], dim=1)


class EmbeddingClsLastPosition(EmbeddingBase):
    """The patches get the first N positions, the class token the last one."""

    def forward(self, images):
        tokens = self.tokens(images)
        N = tokens.shape[1]
        cls = self.cls_token.expand(tokens.shape[0], -1, -1) + self.positions[:, N:]
        return torch.cat([cls, tokens + self.positions[:, :N]], dim=1)


EMBEDDING_BANKS = ExerciseBanks(
    solution=SOLUTION["PatchEmbedding"],
    correct=[EmbeddingBase, EmbeddingNewTensor, EmbeddingRepeat, EmbeddingSplitPositions,
             EmbeddingUnfold],
    check=[
        (EmbeddingShortPositions, "one row per patch only", "members"),
        (EmbeddingClsProjected, "made like a patch", "members"),
        (EmbeddingPlainTensorCls, None, "members"),
        (EmbeddingZerosInit, "starts as zeros", "init"),
        (EmbeddingUnitInit, "spread of about 1", "init"),
        (EmbeddingXavierCls, "shrinks like 1/√d_model", "init"),
        (EmbeddingRandInit, "between 0 and 1", "init"),
        (EmbeddingTenthInit, "a scale of 0.1", "init"),
        (EmbeddingReseeds, "whatever the global seed", "init"),
        (EmbeddingReseedsAfter, "resets the global generator", "init"),
        (EmbeddingOsSeed, "fresh seed from the OS", "init"),
        (EmbeddingNumpyInit, "another random source", "init"),
        (EmbeddingEmptyInit, "whatever was in memory", "init"),
        (EmbeddingPositionsBefore, "added before the class token was prepended: the class",
         "values"),
        (EmbeddingFirstPositionsBefore, "added before the class token was prepended: the class "
         "token needs a position too (add all n_patches + 1 positions after torch.cat) (here "
         "the first n_patches positions", "values"),
        (EmbeddingPositionsBeforeCrash, "added before the class token was prepended: the class",
         "values"),
        (EmbeddingNoPositions, "never added", "values"),
        (EmbeddingClsLast, "appended last", "values"),
        (EmbeddingPatchKPositionK, "patch k got position e_k", "values"),
        (EmbeddingClsLastPosition, "the class token got the last position", "values"),
        (EmbeddingNotExpanded, "not expanded", "values"),
        (EmbeddingProjLast, "proj was applied after", "values"),
        (EmbeddingPlainReshape, "not those of patchify", "values"),
        (EmbeddingFirstOutputKept, "output of an earlier call came back", "values"),
        (EmbeddingPatchesKeptByShape, "patches of an earlier call's images", "values"),
        (EmbeddingDropout, "that is dropout", "values"),
        (EmbeddingDoublePatches, "proj received patches of another dtype", "values"),
        (EmbeddingShifted, None, "values"),
        (EmbeddingNoClassToken, "class token is missing", "shape"),
        (EmbeddingSqueezed, "squeezed away", "shape"),
        (EmbeddingOneChannel, "one channel", "arguments"),
        (EmbeddingPatchSizeTwo, "fixed size 2", "arguments"),
        (EmbeddingDetachedPositions, "cut this parameter off", "gradients"),
        (EmbeddingClassTokenData, "cut this parameter off", "gradients"),
        (EmbeddingProjDetached, "cut this parameter off", "gradients"),
        (EmbeddingWithoutGradients, "cut this parameter off", "gradients"),
        (EmbeddingFrozenPositions, "this parameter has requires_grad=False", "gradients"),
        (EmbeddingCpuClassTokens, "device=", "device"),
        (EmbeddingZeroesImages, "in place", "unchanged"),
        (EmbeddingCentresInPlace, "in place", "unchanged"),
    ],
    hidden=[
        (EmbeddingShortPositions, "one row per patch only", "members"),
        (EmbeddingClsProjected, "made like a patch", "members"),
        (EmbeddingPlainTensorCls, None, "members"),
        (EmbeddingZerosInit, "starts as zeros", "init"),
        (EmbeddingUnitInit, "spread of about 1", "init"),
        (EmbeddingXavierCls, "shrinks like 1/√d_model", "init"),
        (EmbeddingRandInit, "between 0 and 1", "init"),
        (EmbeddingTenthInit, "a scale of 0.1", "init"),
        (EmbeddingReseeds, "whatever the global seed", "init"),
        (EmbeddingReseedsAfter, "resets the global generator", "init"),
        (EmbeddingOsSeed, "fresh seed from the OS", "init"),
        (EmbeddingNumpyInit, "another random source", "init"),
        (EmbeddingEmptyInit, "whatever was in memory", "init"),
        (EmbeddingPositionsBefore, "added before the class token was prepended: the class",
         "values"),
        (EmbeddingFirstPositionsBefore, "added before the class token was prepended: the class "
         "token needs a position too (add all n_patches + 1 positions after torch.cat) (here "
         "the first n_patches positions", "values"),
        (EmbeddingPositionsBeforeCrash, "added before the class token was prepended: the class",
         "values"),
        (EmbeddingNoPositions, "never added", "values"),
        (EmbeddingClsLast, "appended last", "values"),
        (EmbeddingPatchKPositionK, "patch k got position e_k", "values"),
        (EmbeddingClsLastPosition, "the class token got the last position", "values"),
        (EmbeddingNotExpanded, "not expanded", "values"),
        (EmbeddingProjLast, "proj was applied after", "values"),
        (EmbeddingPlainReshape, "not those of patchify", "values"),
        (EmbeddingFirstOutputKept, "output of an earlier call came back", "values"),
        (EmbeddingPatchesKeptByShape, "patches of an earlier call's images", "values"),
        (EmbeddingDropout, "that is dropout", "values"),
        (EmbeddingDoublePatches, "proj received patches of another dtype", "values"),
        (EmbeddingShifted, None, "values"),
        (EmbeddingNoClassToken, "class token is missing", "shape"),
        (EmbeddingSqueezed, "squeezed away", "shape"),
        (EmbeddingOneChannel, "one channel", "arguments"),
        (EmbeddingPatchSizeTwo, "fixed size 2", "arguments"),
        (EmbeddingDetachedPositions, "cut this parameter off", "gradients"),
        (EmbeddingClassTokenData, "cut this parameter off", "gradients"),
        (EmbeddingProjDetached, "cut this parameter off", "gradients"),
        (EmbeddingWithoutGradients, "cut this parameter off", "gradients"),
        (EmbeddingFrozenPositions, "cut this parameter off", "gradients"),
        (EmbeddingCpuClassTokens, "device=", "device"),
        (EmbeddingZeroesImages, "in place", "unchanged"),
        (EmbeddingCentresInPlace, "in place", "unchanged"),
    ],
)


@pytest.mark.parametrize(("candidate", "parameter"), [
    (EmbeddingDetachedPositions, "positions"), (EmbeddingClassTokenData, "cls_token"),
    (EmbeddingProjDetached, "proj.weight"), (EmbeddingWithoutGradients, "")])
@pytest.mark.parametrize("grade", [check_PatchEmbedding, grade_PatchEmbedding])
def test_a_parameter_without_gradient_is_named(grade, candidate, parameter):
    message = failure(grade, candidate)
    assert "cut this parameter off" in message
    if parameter:
        assert f"reaches `{parameter}`" in message


@pytest.mark.parametrize("grade", [check_PatchEmbedding, grade_PatchEmbedding])
def test_a_forward_that_zeroes_the_images_gets_no_points(grade):
    message = failure(grade, EmbeddingZeroesImages)
    assert "changed in place: images" in message


def test_the_hidden_test_sets_the_class_token_and_positions_through_the_proxy():
    """The rebuilt module holds cls_token and positions as parameters the test can set, and
    the student's forward sees the values set on the trusted side."""
    from kernel_protocol.grader_side import student

    module = student(EmbeddingBase)(2, 1, 4, 4)
    assert isinstance(module.cls_token, nn.Parameter) and module.positions.shape == (1, 5, 4)
    with torch.no_grad():
        module.cls_token.fill_(3.0)
        module.positions.zero_()
        module.proj.weight.zero_()
        module.proj.bias.zero_()
        out = module(torch.randn(2, 1, 4, 4))
    assert torch.equal(out[:, 0], torch.full((2, 4), 3.0)) and torch.equal(out[:, 1:],
                                                                           torch.zeros(2, 4, 4))


# ---- sequence_log_prob ----------------------------------------------------------------------

def log_prob_gather(logits, tokens):
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_one_hot(logits, tokens):
    one_hot = F.one_hot(tokens[:, 1:], logits.shape[-1]).to(logits.dtype)
    return (F.log_softmax(logits[:, :-1], dim=-1) * one_hot).sum(dim=(1, 2))


def log_prob_cross_entropy(logits, tokens):
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    return -losses.sum(dim=1)


def log_prob_loop(logits, tokens):
    B, T, _ = logits.shape
    total = torch.zeros(B, dtype=logits.dtype, device=logits.device)
    rows = torch.arange(B, device=logits.device)
    for t in range(T - 1):
        logp = torch.log_softmax(logits[:, t], dim=-1)
        total = total + logp[rows, tokens[:, t + 1]]
    return total


def log_prob_logsumexp(logits, tokens):
    picked = logits[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return (picked - torch.logsumexp(logits[:, :-1], dim=-1)).sum(-1)


def log_prob_distributions(logits, tokens):
    dist = torch.distributions.Categorical(logits=logits[:, :-1])
    return dist.log_prob(tokens[:, 1:]).sum(-1)


def log_prob_off_by_one(logits, tokens):
    return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_off_by_one_late(logits, tokens):
    logp = torch.log_softmax(logits[:, 1:], -1)
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_reverse_shift(logits, tokens):
    logp = torch.log_softmax(logits[:, 1:], -1)
    return logp.gather(-1, tokens[:, :-1].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_scores_token_0(logits, tokens):
    B, T, _ = logits.shape
    logp = torch.log_softmax(logits, dim=-1)
    total = torch.zeros(B, dtype=logits.dtype)
    for t in range(T):
        total = total + logp[torch.arange(B), t - 1, tokens[:, t]]
    return total


def log_prob_summed_probabilities(logits, tokens):
    probs = torch.softmax(logits[:, :-1], -1)
    return probs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_product(logits, tokens):
    probs = torch.softmax(logits[:, :-1], -1)
    return probs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).prod(1)


def log_prob_dim_1(logits, tokens):
    logp = torch.log_softmax(logits, dim=1)[:, :-1]
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_dim_1_kept(logits, tokens):
    logp = torch.log_softmax(logits[:, :-1], dim=1)
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_dim_0(logits, tokens):
    logp = torch.log_softmax(logits, dim=0)[:, :-1]
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_mean(logits, tokens):
    return log_prob_gather(logits, tokens) / (tokens.shape[1] - 1)


def log_prob_raw_logits(logits, tokens):
    return logits[:, :-1].gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_cross_entropy_sign(logits, tokens):
    return -log_prob_cross_entropy(logits, tokens)


def log_prob_per_position(logits, tokens):
    logp = torch.log_softmax(logits[:, :-1], -1)
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)


def log_prob_total(logits, tokens):
    return log_prob_gather(logits, tokens).sum()


def log_prob_squeezed(logits, tokens):
    """`.squeeze()` without a dimension: a batch of one loses its batch dimension."""
    logp = torch.log_softmax(logits[:, :-1], -1)
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).sum(1).squeeze()


def log_prob_underflow(logits, tokens):
    probs = torch.softmax(logits[:, :-1], -1)
    return torch.log(probs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)).sum(1)


def log_prob_float64_softmax(logits, tokens):
    """softmax in float64 "to avoid underflow", then log, cast back: exp(-2000) is 0 even
    in float64."""
    probs = torch.softmax(logits[:, :-1].double(), -1)
    picked = probs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
    return picked.log().sum(1).to(logits.dtype)


def log_prob_clamped(logits, tokens):
    """The probabilities clamped before the log, so log(0) never happens."""
    probs = torch.softmax(logits[:, :-1], -1).clamp(min=1e-12)
    return probs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).log().sum(1)


def log_prob_float_one_hot(logits, tokens):
    """A float32 one-hot: bfloat16 logits give a float32 result."""
    one_hot = F.one_hot(tokens[:, 1:], logits.shape[-1]).float()
    return (F.log_softmax(logits[:, :-1], dim=-1) * one_hot).sum(dim=(1, 2))


def log_prob_skips_first(logits, tokens):
    """"Nothing predicts the first word", so the first term is dropped as well."""
    logp = torch.log_softmax(logits[:, 1:-1], dim=-1)
    return logp.gather(-1, tokens[:, 2:].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_unshifted_logsumexp(logits, tokens):
    """log Σ exp written out, without subtracting the maximum."""
    log_norm = torch.log(torch.exp(logits[:, :-1]).sum(-1, keepdim=True))
    logp = logits[:, :-1] - log_norm
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_items(logits, tokens):
    """One Python number per sentence, gathered into torch.tensor: float32 always."""
    return torch.tensor([float(log_prob_gather(logits[b:b + 1], tokens[b:b + 1]))
                         for b in range(len(tokens))])


def log_prob_cpu_total(logits, tokens):
    """A running total made on the CPU: on a GPU the sum fails."""
    B, T, _ = logits.shape
    total = torch.zeros(B, dtype=logits.dtype)
    for t in range(T - 1):
        logp = torch.log_softmax(logits[:, t], dim=-1)
        total = total + logp.gather(-1, tokens[:, t + 1:t + 2]).squeeze(-1)
    return total


def log_prob_in_place(logits, tokens):
    """Subtracts the maximum in place, for stability: the caller's logits change."""
    logits -= logits.amax(dim=-1, keepdim=True)
    return log_prob_gather(logits, tokens)


def log_prob_tokens_in_place(logits, tokens):
    out = log_prob_gather(logits, tokens)
    tokens[:, 0] = 0
    return out


def log_prob_off(logits, tokens):
    """A bug no diagnosis describes."""
    return log_prob_gather(logits, tokens) - 0.3


def log_prob_skips_last(logits, tokens):
    """One position too few at the end: the last token is never scored."""
    logp = torch.log_softmax(logits[:, :-2], dim=-1)
    return logp.gather(-1, tokens[:, 1:-1].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_short_and_unshifted(logits, tokens):
    """Skips position 0 ("nothing predicts token 0") and pairs logits[:, t] with
    tokens[:, t]: one term too few, and every term wrong."""
    logp = torch.log_softmax(logits[:, 1:-1], dim=-1)
    return logp.gather(-1, tokens[:, 1:-1].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_sum_over_batch(logits, tokens):
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(0)


def log_prob_cpu_arange_index(logits, tokens):
    """Advanced indexing with index tensors made on the CPU: PyTorch moves them to the
    logits' device, so this works on a GPU too."""
    B, T, _ = logits.shape
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return logp[torch.arange(B)[:, None], torch.arange(T - 1)[None, :], tokens[:, 1:]].sum(1)


def log_prob_exp(logits, tokens):
    """exp of the right answer: the probability, not its log."""
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1).exp()


def log_prob_gather_positions(logits, tokens):
    """gather along dim 1: the token ids index the positions."""
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    return logp.gather(1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)


def log_prob_cpu_total_arange_index(logits, tokens):
    """A CPU arange to index (fine) and a running total made on the CPU (not fine)."""
    B, T, _ = logits.shape
    logp = torch.log_softmax(logits, dim=-1)
    total = torch.zeros(B, dtype=logits.dtype)
    for t in range(T - 1):
        total = total + logp[torch.arange(B), t, tokens[:, t + 1]]
    return total


def log_prob_rows_stacked(logits, tokens):
    """One sentence at a time, positions picked with a CPU arange, stacked."""
    rows = []
    for b in range(logits.shape[0]):
        logp = torch.log_softmax(logits[b, :-1], dim=-1)
        rows.append(logp[torch.arange(logp.shape[0]), tokens[b, 1:]].sum())
    return torch.stack(rows)


def log_prob_eye_one_hot(logits, tokens):
    """A one-hot table from torch.eye made on the CPU: on a GPU, indexing it with the tokens
    and multiplying it with the logits both fail."""
    one_hot = torch.eye(logits.shape[-1], dtype=logits.dtype)[tokens[:, 1:]]
    return (torch.log_softmax(logits[:, :-1], dim=-1) * one_hot).sum(dim=(1, 2))


def log_prob_cpu_total_in_place(logits, tokens):
    """A running total made on the CPU and added to in place: the result stays there."""
    total = torch.zeros(logits.shape[0], dtype=logits.dtype)
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    total += logp.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).sum(1)
    return total


def log_prob_through_cpu(logits, tokens):
    """Computed on the CPU "to be safe", then put back: on a GPU every call copies the
    logits to the CPU and back."""
    return log_prob_gather(logits.cpu(), tokens.cpu()).to(logits.device)


def log_prob_cpu_index_select(logits, tokens):
    """Rows picked with index_select and a CPU arange: a GPU refuses the CPU index."""
    B, T, V = logits.shape
    logp = torch.log_softmax(logits[:, :-1], dim=-1).reshape(-1, V)
    rows = logp.index_select(0, torch.arange(B * (T - 1)))
    return rows.gather(-1, tokens[:, 1:].reshape(-1, 1)).reshape(B, T - 1).sum(1)


LOG_PROB_BANKS = ExerciseBanks(
    solution=SOLUTION["sequence_log_prob"],
    correct=[log_prob_gather, log_prob_one_hot, log_prob_cross_entropy, log_prob_loop,
             log_prob_logsumexp, log_prob_distributions, log_prob_cpu_arange_index,
             log_prob_rows_stacked],
    check=[
        (log_prob_per_position, "per-position", "shape"),
        (log_prob_total, "summed to one number", "shape"),
        (log_prob_squeezed, "squeezed away", "shape"),
        (log_prob_sum_over_batch, "over the batch (dim 0)", "shape"),
        (log_prob_gather_positions, "along dimension 1, the positions", "shape"),
        (log_prob_off_by_one, "one too many: either token 0 was scored", "values"),
        (log_prob_scores_token_0, "one too many: either token 0 was scored", "values"),
        (log_prob_off_by_one_late, "matched with the wrong tokens", "values"),
        (log_prob_reverse_shift, "matched with the wrong tokens", "values"),
        (log_prob_summed_probabilities, "probabilities were summed", "values"),
        (log_prob_dim_1, "wrong dimension", "values"),
        (log_prob_dim_1_kept, "wrong dimension", "values"),
        (log_prob_dim_0, "wrong dimension", "values"),
        (log_prob_mean, "mean over the positions", "values"),
        (log_prob_skips_first, "the first term is missing", "values"),
        (log_prob_skips_last, "the last term is missing", "values"),
        (log_prob_short_and_unshifted, "terms, one too few", "values"),
        (log_prob_raw_logits, "without a log-softmax", "values"),
        (log_prob_cross_entropy_sign, "sign is flipped", "values"),
        (log_prob_product, "a product", "values"),
        (log_prob_exp, "a product", "values"),
        (log_prob_off, None, "values"),
        (log_prob_underflow, "underflows", "large"),
        (log_prob_unshifted_logsumexp, "without subtracting the maximum", "large"),
        (log_prob_float64_softmax, "underflows", "large"),
        (log_prob_clamped, "clamped", "large"),
        (log_prob_items, "dtype", "dtype"),
        (log_prob_float_one_hot, "fixed dtype and promoted", "dtype"),
        (log_prob_cpu_total, "created on the CPU", "device"),
        (log_prob_cpu_total_arange_index, "created on the CPU", "device"),
        (log_prob_eye_one_hot, "created on the CPU", "device"),
        (log_prob_cpu_total_in_place, "made or collected on the CPU", "device"),
        (log_prob_cpu_index_select, "was given to index_select", "device"),
        (log_prob_through_cpu, "an input was moved to the CPU", "device"),
        (log_prob_in_place, "in place", "unchanged"),
        (log_prob_tokens_in_place, "in place", "unchanged"),
    ],
    hidden=[
        (log_prob_per_position, "per-position", "shape"),
        (log_prob_total, "summed to one number", "shape"),
        (log_prob_squeezed, "squeezed away", "shape"),
        (log_prob_sum_over_batch, "over the batch (dim 0)", "shape"),
        (log_prob_gather_positions, "along dimension 1, the positions", "shape"),
        (log_prob_off_by_one, "off by one position: logits[:, t] was scored against "
                              "tokens[:, t], but it predicts the next token, tokens[:, t + 1]",
         "values"),
        (log_prob_off_by_one_late, "off by one position: logits[:, t] was scored against "
                                   "tokens[:, t], but it predicts the next token, "
                                   "tokens[:, t + 1] (here for t = 1..T-1)", "values"),
        (log_prob_reverse_shift, "shift goes the wrong way", "values"),
        (log_prob_scores_token_0, "term for token 0", "values"),
        (log_prob_summed_probabilities, "probabilities were summed", "values"),
        (log_prob_product, "a product", "values"),
        (log_prob_exp, "a product", "values"),
        (log_prob_dim_1, "ran over the positions (dim=1)", "values"),
        (log_prob_dim_1_kept, "ran over the positions (dim=1) instead of the vocabulary "
                              "(dim=-1) (here over the T - 1 positions kept)", "values"),
        (log_prob_dim_0, "over the batch (dim=0)", "values"),
        (log_prob_mean, "mean over positions", "values"),
        (log_prob_skips_first, "the first term is missing", "values"),
        (log_prob_skips_last, "the last term is missing", "values"),
        (log_prob_short_and_unshifted, None, "values"),
        (log_prob_raw_logits, "raw logits", "values"),
        (log_prob_cross_entropy_sign, "sign is flipped", "values"),
        (log_prob_off, None, "values"),
        (log_prob_underflow, "underflows", "large"),
        (log_prob_unshifted_logsumexp, "without subtracting the maximum", "large"),
        (log_prob_float64_softmax, "underflows", "large"),
        (log_prob_clamped, "clamped", "large"),
        (log_prob_items, "dtype", "dtype"),
        (log_prob_cpu_total, "created on the CPU", "device"),
        (log_prob_cpu_total_arange_index, "created on the CPU", "device"),
        (log_prob_eye_one_hot, "created on the CPU", "device"),
        (log_prob_cpu_total_in_place, "made or collected on the CPU", "device"),
        (log_prob_cpu_index_select, "was given to index_select", "device"),
        (log_prob_through_cpu, "an input was moved to the CPU", "device"),
        (log_prob_in_place, "in place", "unchanged"),
        (log_prob_tokens_in_place, "in place", "unchanged"),
    ],
)

BANKS = {"patchify": PATCHIFY_BANKS, "PatchEmbedding": EMBEDDING_BANKS,
         "sequence_log_prob": LOG_PROB_BANKS}


@pytest.mark.parametrize("grade", [check_sequence_log_prob, grade_sequence_log_prob])
def test_logits_changed_in_place_are_named(grade):
    assert "changed in place: logits" in failure(grade, log_prob_in_place)
    assert "changed in place: tokens" in failure(grade, log_prob_tokens_in_place)


# ---- blank answers ------------------------------------------------------------------------

def student_stubs():
    """The answer cells as the student notebook ships them: each exercise under its own name,
    raising ``NotImplementedError()``."""

    def patchify(images, patch_size):
        raise NotImplementedError()

    class PatchEmbedding(nn.Module):
        def __init__(self, patch_size, in_channels, d_model, n_patches):
            super().__init__()
            self.patch_size = patch_size
            raise NotImplementedError()

        def forward(self, images):
            raise NotImplementedError()

    def sequence_log_prob(logits, tokens):
        raise NotImplementedError()

    return {"patchify": patchify, "PatchEmbedding": PatchEmbedding,
            "sequence_log_prob": sequence_log_prob}


@pytest.mark.parametrize(("name", "number", "grade", "check"), [
    ("patchify", 1, grade_patchify, check_patchify),
    ("PatchEmbedding", 2, grade_PatchEmbedding, check_PatchEmbedding),
    ("sequence_log_prob", 3, grade_sequence_log_prob, check_sequence_log_prob),
])
def test_blank_answers_are_not_finished(name, number, grade, check):
    blank = student_stubs()[name]
    with pytest.raises(NotImplementedError):
        grade(blank)
    with pytest.raises(NotImplementedError) as info:
        check(blank)
    assert f"`{name}` is not written yet" in str(info.value)
    assert f"Exercise {number}" in str(info.value)


# ---- fresh inputs -------------------------------------------------------------------------

def _shape_of_first_tensor(args, kwargs):
    tensor = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
    return tuple(tensor.shape), tuple(a for a in args if isinstance(a, int))


def _right_for_seen_sizes(right, wrong, seen):
    """A function right for the inputs of the sizes in ``seen`` only (a table of answers)."""

    def answer(*args, **kwargs):
        key = _shape_of_first_tensor(args, kwargs)
        return right(*args, **kwargs) if key in seen else wrong(*args, **kwargs)

    return answer


def _recording(fn, seen):
    def spy(*args, **kwargs):
        seen.add(_shape_of_first_tensor(args, kwargs))
        return fn(*args, **kwargs)

    return spy


@pytest.mark.parametrize("salt", [1, 2**40 + 17, 987654321987])
@pytest.mark.parametrize(("grade", "banks", "wrong"), [
    (grade_patchify, PATCHIFY_BANKS, patches_scaled),
    (grade_sequence_log_prob, LOG_PROB_BANKS, log_prob_off),
], ids=["patchify", "sequence_log_prob"])
def test_the_hidden_tests_under_other_salts(grade, banks, wrong, salt):
    """While grading, the hidden tests draw fresh sizes and values: right answers pass any of
    them, answers right only for the sizes of another run do not."""
    seen: set = set()
    grade(_recording(banks.solution, seen))  # the sizes of the unit tests' run (salt 0)
    set_salt(salt)
    try:
        for candidate in [banks.solution, *banks.correct]:
            grade(candidate)
        with pytest.raises(AssertionError):
            grade(_right_for_seen_sizes(banks.solution, wrong, seen))
    finally:
        set_salt(0)


@pytest.mark.parametrize("salt", [1, 2**40 + 17])
def test_the_embedding_hidden_test_under_other_salts(salt):
    set_salt(salt)
    try:
        for candidate in [EMBEDDING_BANKS.solution, *EMBEDDING_BANKS.correct]:
            grade_PatchEmbedding(candidate)
        for candidate, *_ in EMBEDDING_BANKS.hidden:
            with pytest.raises(AssertionError):
                grade_PatchEmbedding(candidate)
    finally:
        set_salt(0)


@pytest.mark.parametrize("grade", [check_sequence_log_prob, grade_sequence_log_prob])
def test_a_cpu_index_is_not_blamed_for_a_cpu_total(grade):
    """Indexing with a CPU arange works on a GPU; only the CPU total is named."""
    message = failure(grade, log_prob_cpu_total_arange_index)
    assert "(made by zeros)" in message
    assert "arange" not in message.split("likely mistake:")[-1]

"""Hidden tests and self-checks of tutorial 08 against the solution, common mistakes and
other correct answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mutation import assert_bank
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


def patches_einsum_free_split(images, patch_size):
    """Split rows first, then columns, with two transposes."""
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p)
    x = x.transpose(1, 2).transpose(2, 4).transpose(3, 4)  # (B, H/p, W/p, C, p, p)
    return x.contiguous().view(B, (H // p) * (W // p), C * p * p)


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


def patches_scaled(images, patch_size):
    """A bug no diagnosis describes."""
    return patches_reshape_permute(images, patch_size) * 1.5


def patches_for_fixed_sizes(images, patch_size):
    """Right for the sizes of the hidden test's fixed cases only (a table of answers)."""
    B, C, H, W = images.shape
    if (C, H, W, patch_size) in {(3, 4, 6, 2), (1, 8, 8, 4), (2, 9, 6, 3), (2, 6, 6, 6),
                                 (4, 2, 4, 1), (3, 2, 2, 1), (1, 8, 8, 4)}:
        return patches_reshape_permute(images, patch_size)
    return patches_reshape_permute(images, patch_size).flip(1)


PATCHIFY_ALTERNATIVES = [patches_reshape_permute, patches_tensor_unfold, patches_f_unfold,
                         patches_loops, patches_einsum_free_split]


@pytest.mark.parametrize("candidate", [SOLUTION["patchify"], *PATCHIFY_ALTERNATIVES])
def test_correct_patchify_passes(candidate):
    grade_patchify(candidate)
    check_patchify(candidate)


PATCHIFY_HIDDEN_BANK = [
    (patches_column_order, "column order"),
    (patches_plain_reshape, "without moving the axes"),
    (patches_channels_last, "(row, column, channel) order"),
    (patches_transposed, "transposed"),
    (patches_unfold_untransposed, "F.unfold puts the patches last"),
    (patches_in_place, "in place"),
    (patches_size_two, "patch size is fixed in the code"),
    (patches_square_reshape, "assumes square images"),
    (patches_square_loops, "assumes square images"),
    (patches_scaled, None),
]
PATCHIFY_CHECK_BANK = list(PATCHIFY_HIDDEN_BANK)
PATCHIFY_HIDDEN_BANK.append((patches_for_fixed_sizes, None))


def test_a_crash_says_which_images_the_test_used():
    message = str(pytest.raises(AssertionError, check_patchify, patches_square_reshape).value)
    assert "4×6 images, H ≠ W" in message and "handles 4×4 images" in message


def test_patchify_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_patchify, SOLUTION["patchify"], PATCHIFY_HIDDEN_BANK)


def test_patchify_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_patchify, SOLUTION["patchify"], PATCHIFY_CHECK_BANK)


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
    def forward(self, images):
        tokens = self.tokens(images)
        B, N, d = tokens.shape
        out = torch.empty(B, N + 1, d, dtype=tokens.dtype)
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


class EmbeddingForFixedSizes(EmbeddingBase):
    """Right for the sizes of the hidden test's fixed cases only."""

    def forward(self, images):
        out = super().forward(images)
        return out if tuple(images.shape[1:]) in {(3, 4, 6), (1, 8, 8), (2, 6, 9)} else -out


class EmbeddingOtherInTraining(EmbeddingBase):
    """Right without gradients (as the value checks call it), wrong with them."""

    def forward(self, images):
        out = super().forward(images)
        return out + 1 if torch.is_grad_enabled() else out


class EmbeddingShifted(EmbeddingBase):
    """A bug no diagnosis describes."""

    def forward(self, images):
        return super().forward(images) + 0.1


EMBEDDING_ALTERNATIVES = [EmbeddingBase, EmbeddingNewTensor, EmbeddingRepeat,
                          EmbeddingSplitPositions, EmbeddingUnfold]


@pytest.mark.parametrize("candidate", [SOLUTION["PatchEmbedding"], *EMBEDDING_ALTERNATIVES])
def test_correct_embeddings_pass(candidate):
    grade_PatchEmbedding(candidate)
    check_PatchEmbedding(candidate)


EMBEDDING_HIDDEN_BANK = [
    (EmbeddingPositionsBefore, "added before the class token was prepended: the class"),
    (EmbeddingFirstPositionsBefore, "added before the class token was prepended: the class token "
                                    "needs a position too (add all n_patches + 1 positions after "
                                    "torch.cat) (here the first n_patches positions"),
    (EmbeddingPositionsBeforeCrash, "added before the class token was prepended: the class"),
    (EmbeddingNoPositions, "never added"),
    (EmbeddingClsLast, "appended last"),
    (EmbeddingNotExpanded, "not expanded"),
    (EmbeddingProjLast, "proj was applied after"),
    (EmbeddingShortPositions, "one row per patch only"),
    (EmbeddingPlainReshape, "not those of patchify"),
    (EmbeddingNoClassToken, "class token is missing"),
    (EmbeddingClsProjected, "made like a patch"),
    (EmbeddingPlainTensorCls, None),
    (EmbeddingShifted, None),
    (EmbeddingDetachedPositions, "cut this parameter off"),
    (EmbeddingClassTokenData, "cut this parameter off"),
    (EmbeddingWithoutGradients, "cut this parameter off"),
    (EmbeddingFirstOutputKept, "output of an earlier call came back"),
    (EmbeddingForFixedSizes, None),
    (EmbeddingOtherInTraining, None),
]
EMBEDDING_CHECK_BANK = [
    (EmbeddingPositionsBefore, "added before the class token was prepended"),
    (EmbeddingFirstPositionsBefore, "added before the class token was prepended"),
    (EmbeddingPositionsBeforeCrash, "added before the class token was prepended"),
    (EmbeddingNoPositions, "never added"),
    (EmbeddingClsLast, "appended last"),
    (EmbeddingNotExpanded, "not expanded"),
    (EmbeddingProjLast, "proj was applied after"),
    (EmbeddingShortPositions, "only n_patches positions"),
    (EmbeddingClsProjected, "made like a patch"),
    (EmbeddingPlainReshape, None),
    (EmbeddingPlainTensorCls, None),
    (EmbeddingShifted, None),
]


@pytest.mark.parametrize(("candidate", "parameter"), [
    (EmbeddingDetachedPositions, "positions"), (EmbeddingClassTokenData, "cls_token"),
    (EmbeddingWithoutGradients, "proj.weight")])
def test_a_parameter_without_gradient_is_named(candidate, parameter):
    with pytest.raises(AssertionError, match=f"reaches `{parameter}`"):
        grade_PatchEmbedding(candidate)


def test_embedding_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_PatchEmbedding, SOLUTION["PatchEmbedding"], EMBEDDING_HIDDEN_BANK)


def test_embedding_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_PatchEmbedding, SOLUTION["PatchEmbedding"], EMBEDDING_CHECK_BANK)


def test_the_hidden_test_sets_the_class_token_and_positions_through_the_proxy():
    """The rebuilt module holds cls_token and positions as parameters the test can set, and
    the student's forward sees the values set on the trusted side."""
    from hidden_tests.student import student

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
    total = torch.zeros(B)
    for t in range(T - 1):
        logp = torch.log_softmax(logits[:, t], dim=-1)
        total = total + logp[torch.arange(B), tokens[:, t + 1]]
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
    total = torch.zeros(B)
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


def log_prob_underflow(logits, tokens):
    probs = torch.softmax(logits[:, :-1], -1)
    return torch.log(probs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)).sum(1)


def log_prob_total(logits, tokens):
    return log_prob_gather(logits, tokens).sum()


def log_prob_in_place(logits, tokens):
    logits.mul_(1.0).add_(1.0)
    return log_prob_gather(logits, tokens)


def log_prob_tokens_in_place(logits, tokens):
    out = log_prob_gather(logits, tokens)
    tokens[:, 0] = 0
    return out


def log_prob_off(logits, tokens):
    """A bug no diagnosis describes."""
    return log_prob_gather(logits, tokens) - 0.3


def log_prob_for_fixed_sizes(logits, tokens):
    """Right for the sizes of the hidden test's fixed cases only."""
    right = log_prob_gather(logits, tokens)
    return right if tuple(logits.shape) in {(4, 6, 7), (2, 9, 5), (3, 2, 11), (1, 4, 3)} \
        or logits.abs().max() > 50 else right * 1.1


LOG_PROB_ALTERNATIVES = [log_prob_gather, log_prob_one_hot, log_prob_cross_entropy,
                         log_prob_loop, log_prob_logsumexp, log_prob_distributions]


@pytest.mark.parametrize("candidate", [SOLUTION["sequence_log_prob"], *LOG_PROB_ALTERNATIVES])
def test_correct_log_probs_pass(candidate):
    grade_sequence_log_prob(candidate)
    check_sequence_log_prob(candidate)


LOG_PROB_HIDDEN_BANK = [
    (log_prob_off_by_one, "off by one position: logits[:, t] was scored against tokens[:, t], "
                          "but it predicts the next token, tokens[:, t + 1]"),
    (log_prob_off_by_one_late, "off by one position: logits[:, t] was scored against "
                               "tokens[:, t], but it predicts the next token, tokens[:, t + 1] "
                               "(here for t = 1..T-1)"),
    (log_prob_reverse_shift, "shift goes the wrong way"),
    (log_prob_scores_token_0, "term for token 0"),
    (log_prob_summed_probabilities, "probabilities were summed"),
    (log_prob_product, "a product"),
    (log_prob_dim_1, "ran over the positions (dim=1)"),
    (log_prob_dim_1_kept, "ran over the positions (dim=1) instead of the vocabulary (dim=-1) "
                          "(here over the T - 1 positions kept)"),
    (log_prob_dim_0, "over the batch (dim=0)"),
    (log_prob_mean, "mean over positions"),
    (log_prob_raw_logits, "raw logits"),
    (log_prob_cross_entropy_sign, "sign is flipped"),
    (log_prob_per_position, "per-position"),
    (log_prob_total, "summed to one number"),
    (log_prob_underflow, "underflows"),
    (log_prob_in_place, "logits were changed in place"),
    (log_prob_tokens_in_place, "tokens were changed in place"),
    (log_prob_off, None),
    (log_prob_for_fixed_sizes, None),
]
LOG_PROB_CHECK_BANK = [
    (log_prob_off_by_one, "one too many: either token 0 was scored"),
    (log_prob_scores_token_0, "one too many: either token 0 was scored"),
    (log_prob_off_by_one_late, "matched with the wrong tokens"),
    (log_prob_reverse_shift, "matched with the wrong tokens"),
    (log_prob_summed_probabilities, "probabilities were summed"),
    (log_prob_dim_1, "wrong dimension"),
    (log_prob_dim_1_kept, "wrong dimension"),
    (log_prob_dim_0, "wrong dimension"),
    (log_prob_mean, "mean over the positions"),
    (log_prob_raw_logits, "without a log-softmax"),
    (log_prob_cross_entropy_sign, "sign is flipped"),
    (log_prob_total, "one number per sentence"),
    (log_prob_underflow, "underflows"),
    (log_prob_in_place, "logits were changed in place"),
    (log_prob_tokens_in_place, "tokens were changed in place"),
    (log_prob_product, None),
    (log_prob_off, None),
]


def test_log_prob_hidden_test_names_only_the_mistake_it_sees():
    assert_bank(grade_sequence_log_prob, SOLUTION["sequence_log_prob"], LOG_PROB_HIDDEN_BANK)


def test_log_prob_self_check_names_only_the_mistake_it_sees():
    assert_bank(check_sequence_log_prob, SOLUTION["sequence_log_prob"], LOG_PROB_CHECK_BANK)


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



@pytest.mark.parametrize("salt", [1, 2**40 + 17, 987654321987])
@pytest.mark.parametrize(("grade", "candidates", "wrong"), [
    (grade_patchify, [SOLUTION["patchify"], *PATCHIFY_ALTERNATIVES], patches_for_fixed_sizes),
    (grade_PatchEmbedding, [SOLUTION["PatchEmbedding"], *EMBEDDING_ALTERNATIVES],
     EmbeddingForFixedSizes),
    (grade_sequence_log_prob, [SOLUTION["sequence_log_prob"], *LOG_PROB_ALTERNATIVES],
     log_prob_for_fixed_sizes),
], ids=["patchify", "PatchEmbedding", "sequence_log_prob"])
def test_the_hidden_tests_under_other_salts(grade, candidates, wrong, salt):
    """While grading, the hidden tests draw fresh sizes too: right answers pass any of them,
    answers right for the fixed sizes only do not."""
    set_salt(salt)
    try:
        for candidate in candidates:
            grade(candidate)
        with pytest.raises(AssertionError):
            grade(wrong)
    finally:
        set_salt(0)

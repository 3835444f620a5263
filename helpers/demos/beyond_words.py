"""Tutorial 08: a tiny Vision Transformer on 8×8 digits, and where a language model's
preferences come from (a generated corpus whose rates the student sets)."""

from __future__ import annotations

import csv
import gzip
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib.patheffects as path_effects
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch import nn

from helpers.exercises import uses_student_code
from helpers.plotting import to_numpy
from helpers.training import count_parameters, train, train_next_token
from helpers.widgets import progress_bar

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DIGITS_CSV = DATA_DIR / "digits.csv.gz"  # source and licence: digits.SOURCE.md beside it

# ---- Section 1: the digits ------------------------------------------------------------------


def load_digits(path: Path | str = DIGITS_CSV) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 UCI handwritten digits: images ``(N, 1, 8, 8)`` in [0, 1] and labels ``(N,)``.

    The file has one row per image: 64 pixel values 0..16 (row by row), then the label.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the digits file {path} is missing; it ships with the course's "
                                "helpers package (helpers/data/digits.csv.gz)")
    with gzip.open(path, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 65:
        raise ValueError(f"expected 65 columns (64 pixels and a label) in {path}, "
                         f"got {table.shape[1]}")
    images = torch.tensor(table[:, :64], dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    return images, torch.tensor(table[:, 64])


def split_digits(images: torch.Tensor, labels: torch.Tensor, n_test: int = 500,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed random split: ``train_images, train_labels, test_images, test_labels``."""
    if not 0 < n_test < len(labels):
        raise ValueError(f"n_test must be between 1 and {len(labels) - 1}, got {n_test}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    test, training = order[:n_test], order[n_test:]
    return images[training], labels[training], images[test], labels[test]


def plot_digits(images: torch.Tensor, labels: torch.Tensor, n: int = 10) -> None:
    """The first ``n`` digits with their labels."""
    fig, axes = plt.subplots(1, n, figsize=(1.3 * n, 1.8))
    for ax, image, label in zip(np.atleast_1d(axes), images[:n], labels[:n], strict=False):
        ax.imshow(to_numpy(image[0]), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"label {int(label)}", fontsize=10)
        _frame(ax)
    fig.suptitle("Handwritten digits, 8 × 8 pixels (darker = more ink)")
    plt.show()


def _frame(ax: plt.Axes) -> None:
    """An image panel: no ticks, no grid, a thin frame on all four sides."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_linewidth(0.6)


def _grid(ax: plt.Axes, size: int, patch_size: int) -> None:
    for edge in range(0, size + 1, patch_size):
        ax.axhline(edge - 0.5, color="C1", lw=2)
        ax.axvline(edge - 0.5, color="C1", lw=2)


@uses_student_code
def plot_patches(patchify_fn: Callable[[torch.Tensor, int], torch.Tensor], image: torch.Tensor,
                 patch_size: int = 2) -> None:
    """One digit cut into patches by the student's ``patchify``, and the patches as a
    sequence: each row of the output drawn back as a small square (one channel)."""
    if image.dim() != 3:
        raise ValueError(f"expected one image (C, H, W), got shape {tuple(image.shape)}")
    C, H, W = image.shape
    if patch_size < 1 or H % patch_size or W % patch_size:
        raise ValueError(f"patch_size must divide the image's height and width ({H} × {W}), "
                         f"got {patch_size}; for these digits use 1, 2, 4 or 8")
    patches = patchify_fn(image.unsqueeze(0), patch_size)[0]
    n_patches = (H // patch_size) * (W // patch_size)
    if tuple(patches.shape) != (n_patches, C * patch_size**2):
        raise ValueError(f"patchify returned patches of shape {tuple(patches.shape)} for one "
                         f"image; expected {(n_patches, C * patch_size**2)} (run its self-check)")
    fig = plt.figure(figsize=(13, 3.0))
    outer = fig.add_gridspec(1, 2, width_ratios=[1, 3.2])
    ax = fig.add_subplot(outer[0])
    ax.imshow(to_numpy(image[0]), cmap="gray_r", vmin=0, vmax=1)
    _grid(ax, H, patch_size)
    # A white outline keeps the numbers readable on dark ink as on blank paper.
    outline = [path_effects.withStroke(linewidth=3, foreground="white")]
    for k in range(len(patches)):
        i, j = divmod(k, W // patch_size)
        ax.text(j * patch_size + (patch_size - 1) / 2, i * patch_size + (patch_size - 1) / 2,
                str(k), color="C0", ha="center", va="center", fontsize=9, weight="bold",
                path_effects=outline)
    ax.set(title=f"{patch_size}×{patch_size} patches, numbered", xlabel="column", ylabel="row")
    ax.grid(False)
    # The sequence as one strip (one image, not one axes per patch: much faster to draw),
    # a blank column between patches and a light frame around each, blank ones included.
    strip = fig.add_subplot(outer[1])
    step = patch_size + 1
    canvas = np.full((patch_size, len(patches) * step - 1), np.nan)
    for k, patch in enumerate(patches):
        canvas[:, k * step:k * step + patch_size] = to_numpy(
            patch[: patch_size**2].reshape(patch_size, patch_size))
        strip.add_patch(Rectangle((k * step - 0.5, -0.5), patch_size, patch_size, fill=False,
                                  edgecolor="0.6", linewidth=0.8))
        strip.text(k * step + (patch_size - 1) / 2, -0.8, str(k), ha="center", va="bottom",
                   fontsize=8)
    strip.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
    strip.set_ylim(patch_size - 0.4, -1.6)
    strip.axis("off")
    strip.set_title("the sequence: patch 0, 1, 2, ... (each row of the output, channel 0)",
                    fontsize=10)
    fig.suptitle(f"patchify: {len(patches)} patches in a row, each a vector of "
                 f"{patches.shape[-1]} numbers (drawn back as squares, channel 0)")
    plt.show()


# ---- Section 2: a tiny Vision Transformer ------------------------------------------------------


class VisionTransformer(nn.Module):
    """Patch embedding (the student's class), PyTorch's own encoder layers, and a linear
    read-out of the class token (position 0) after a final layer norm."""

    def __init__(self, embedding_class: type[nn.Module], patch_size: int = 2,
                 image_size: int = 8, in_channels: int = 1, d_model: int = 32,
                 n_heads: int = 4, n_layers: int = 1, n_classes: int = 10) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"patch_size {patch_size} does not divide image_size {image_size}")
        self.n_patches = (image_size // patch_size) ** 2
        start = torch.get_rng_state()
        self.embed = embedding_class(patch_size, in_channels, d_model, self.n_patches)
        # Every correct embedding trains alike: its parameters are drawn again here, in one
        # fixed order and at one scale the exercise allows, from the generator's state
        # before the class was built (so the layers below start the same too).
        torch.set_rng_state(start)
        _initialise_embedding(self.embed)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=2 * d_model,
                                       dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(n_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h = self.embed(images)
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h[:, 0]))  # logits (B, n_classes)

    @torch.no_grad()
    def class_token_attention(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, n_patches)``: how much the class token attends to each patch in the last
        layer, averaged over the heads (the class token's own share left out)."""
        h = self.embed(images)
        for layer in self.layers[:-1]:
            h = layer(h)
        last = self.layers[-1]
        x = last.norm1(h) if last.norm_first else h
        _, weights = last.self_attn(x, x, x, need_weights=True, average_attn_weights=True)
        return weights[:, 0, 1:]


@torch.no_grad()
def _initialise_embedding(embed: nn.Module) -> None:
    """``proj`` as ``nn.Linear`` initialises itself, then ``cls_token`` and ``positions`` as
    ``0.02 * torch.randn``, in this order, from PyTorch's global generator. An embedding
    without these members is left as it is."""
    proj = getattr(embed, "proj", None)
    tables = [getattr(embed, name, None) for name in ("cls_token", "positions")]
    if not isinstance(proj, nn.Linear) or not all(isinstance(t, torch.Tensor) for t in tables):
        return
    proj.reset_parameters()
    for table in tables:
        table.copy_(0.02 * torch.randn(table.shape, dtype=table.dtype))


def mlp_baseline(n_hidden: int = 130, n_pixels: int = 64, n_classes: int = 10) -> nn.Module:
    """A one-hidden-layer MLP on the flattened pixels: no patches, no attention."""
    return nn.Sequential(nn.Flatten(), nn.Linear(n_pixels, n_hidden), nn.ReLU(),
                         nn.Linear(n_hidden, n_classes))


@uses_student_code
def train_digit_classifier(model: nn.Module, data: Sequence[torch.Tensor], *, epochs: int = 12,
                           lr: float = 3e-3, seed: int = 0, description: str = "training",
                           device: torch.device | str = "cpu") -> dict[str, list[float]]:
    """Adam on the training digits (a tqdm bar over epochs); test accuracy after each."""
    train_images, train_labels, test_images, test_labels = data
    return train(model, train_images, train_labels, task="multiclass", epochs=epochs, lr=lr,
                 batch_size=64, val_inputs=test_images, val_target=test_labels, seed=seed,
                 device=torch.device(device), description=description)


@uses_student_code
def build_vit(embedding_class: type[nn.Module], seed: int = 0, **sizes: int) -> VisionTransformer:
    """A freshly initialised ViT (its own seed; the notebook's random stream is unaffected).
    The embedding's parameters are drawn again in a fixed order, so any correct
    ``embedding_class`` gives the same model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VisionTransformer(embedding_class, **sizes)


def compare_sizes(models: Mapping[str, nn.Module]) -> None:
    """Print the number of trainable parameters of each model."""
    for name, model in models.items():
        print(f"{name:20s} {count_parameters(model):6d} parameters")


def plot_learning_curves(histories: Mapping[str, dict[str, list[float]]]) -> None:
    """Test accuracy per epoch of each model."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, history in histories.items():
        epochs = np.arange(1, len(history["val_acc"]) + 1)
        ax.plot(epochs, history["val_acc"], marker="o", ms=4, label=name)
    ax.set(title="Held-out digits classified correctly", xlabel="epoch",
           ylabel="test accuracy", ylim=(0, 1.02))
    ax.legend()
    plt.show()


@torch.no_grad()
def test_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` whose most likely class is their label."""
    model.eval()
    device = next(model.parameters()).device
    return float((model(images.to(device)).argmax(-1).cpu() == labels).float().mean())


@uses_student_code
@torch.no_grad()
def plot_class_token_attention(model: VisionTransformer, images: torch.Tensor,
                               labels: torch.Tensor, n: int = 4) -> None:
    """Each digit beside the class token's attention over its patches; a title in red marks
    a digit the model gets wrong."""
    model.eval()
    device = next(model.parameters()).device
    images = images[:n].to(device)
    weights = model.class_token_attention(images).cpu()
    predicted = model(images).argmax(-1).cpu()
    side = math.isqrt(weights.shape[-1])
    size = images.shape[-1]
    fig, axes = plt.subplots(1, 2 * n, figsize=(1.75 * 2 * n + 1.2, 2.5), layout="constrained")
    axes = np.atleast_1d(axes)
    for k in range(n):
        digit, attention = axes[2 * k], axes[2 * k + 1]
        right = int(predicted[k]) == int(labels[k])
        digit.imshow(to_numpy(images[k, 0]), cmap="gray_r", vmin=0, vmax=1)
        digit.set_title(f"label {int(labels[k])}, predicted {int(predicted[k])}"
                        + ("" if right else " ✗"), fontsize=9, color="black" if right else "#c0392b")
        shown = attention.imshow(to_numpy(weights[k].reshape(side, side)), cmap="viridis",
                                 vmin=0, vmax=float(weights.max()),
                                 extent=(-0.5, size - 0.5, size - 0.5, -0.5))
        attention.set_title("class token's attention", fontsize=8)
        for ax in (digit, attention):
            _frame(ax)
    fig.colorbar(shown, ax=list(axes), shrink=0.85, label="attention weight")
    fig.suptitle("Each digit (left) and where the class token looks in it (right; last layer, "
                 "mean over heads)")
    plt.show()


@uses_student_code
@torch.no_grad()
def plot_position_similarity(model: VisionTransformer, patches: Sequence[int] = (0, 5, 10, 15)
                             ) -> None:
    """Cosine similarity of the learned position of a few patches with every patch's."""
    positions = model.embed.positions.detach().cpu()[0, 1:]
    side = math.isqrt(len(positions))
    unit = positions / positions.norm(dim=-1, keepdim=True)
    similarity = unit @ unit.T
    fig, axes = plt.subplots(1, len(patches), figsize=(3.1 * len(patches) + 1, 3.0),
                             layout="constrained")
    for ax, k in zip(np.atleast_1d(axes), patches, strict=True):
        image = ax.imshow(to_numpy(similarity[k].reshape(side, side)), cmap="coolwarm",
                          vmin=-1, vmax=1)
        i, j = divmod(k, side)
        ax.plot(j, i, "k*", ms=12, label=f"patch {k}")
        ax.set(title=f"Similarity to patch {k}", xlabel="patch column", ylabel="patch row")
        ax.set_xticks(range(side))
        ax.set_yticks(range(side))
        ax.grid(False)
        ax.legend(loc="upper right", fontsize=7, frameon=True)
    fig.colorbar(image, ax=list(np.atleast_1d(axes)), shrink=0.8, label="cosine similarity")
    fig.suptitle("Learned positions: which patches the model treats as near each other")
    plt.show()


@torch.no_grad()
def position_similarity_summary(model: VisionTransformer) -> dict[str, float]:
    """Mean cosine similarity of the learned patch positions: between neighbouring patches
    (one step along a row or a column of the grid), between all other pairs, and between
    the four corners; printed rounded to one decimal, and returned."""
    positions = model.embed.positions.detach().cpu().double()[0, 1:]
    side = math.isqrt(len(positions))
    unit = positions / positions.norm(dim=-1, keepdim=True)
    similarity = unit @ unit.T
    index = torch.arange(side * side)
    rows, columns = index // side, index % side
    steps = (rows[:, None] - rows[None]).abs() + (columns[:, None] - columns[None]).abs()
    corners = torch.tensor([0, side - 1, side * (side - 1), side * side - 1])
    corner_pairs = similarity[corners][:, corners][~torch.eye(4, dtype=torch.bool)]
    summary = {"neighbours": float(similarity[steps == 1].mean()),
               "further apart": float(similarity[steps > 1].mean()),
               "corners": float(corner_pairs.mean())}
    shown = {name: round(value, 1) + 0.0 for name, value in summary.items()}  # no "-0.0"
    print(f"mean cosine similarity of the positions of neighbouring patches: "
          f"{shown['neighbours']:+.1f}, of patches further apart: {shown['further apart']:+.1f}, "
          f"of the four corner patches with each other: {shown['corners']:+.1f}")
    return summary


# ---- Section 3: where a preference comes from -------------------------------------------------

# How much each occupation leans towards "she" (+1), towards "he" (-1) or neither (0) in the
# generated corpus; `skew` scales the lean. Invented numbers that mimic a pattern measured in
# real text; they say nothing about any person.
LEANS: dict[str, int] = {"nurse": +1, "secretary": +1, "engineer": -1, "pilot": -1,
                         "teacher": 0, "doctor": 0}
TEMPLATES: tuple[str, ...] = ("the {occupation} said {pronoun} {ending} .",
                              "the {occupation} thinks {pronoun} {ending} .")
ENDINGS: tuple[str, ...] = ("was late", "was tired", "is ready", "would help")
PRONOUNS: tuple[str, str] = ("she", "he")
VOCAB: tuple[str, ...] = ("<s>", "the", *LEANS, "said", "thinks", *PRONOUNS, "was", "is",
                          "would", "late", "tired", "ready", "help", ".")
PRONOUN_POSITION = 4  # <s> the OCCUPATION said/thinks PRONOUN ...
OCCUPATION_POSITION = 2


def she_rate(occupation: str, skew: float) -> float:
    """P("she" | occupation) in the generated corpus: 0.5 + skew * lean / 2."""
    if not 0.0 <= skew <= 1.0:
        raise ValueError(f"skew must be between 0 (balanced) and 1 (one pronoun only), "
                         f"got {skew}")
    if occupation not in LEANS:
        raise ValueError(f"unknown occupation {occupation!r}; known: {list(LEANS)}")
    return 0.5 + skew * LEANS[occupation] / 2


def encode(sentence: str) -> list[int]:
    """Token ids of a sentence of the corpus, with ``<s>`` in front."""
    index = {word: i for i, word in enumerate(VOCAB)}
    words = sentence.split()
    unknown = [w for w in words if w not in index]
    if unknown:
        raise ValueError(f"words {unknown} are not in the vocabulary {list(VOCAB)}")
    return [index["<s>"]] + [index[w] for w in words]


def decode(ids: Sequence[int] | torch.Tensor) -> str:
    """The sentence of a row of token ids (without ``<s>``)."""
    return " ".join(VOCAB[int(i)] for i in ids if VOCAB[int(i)] != "<s>")


def make_corpus(skew: float = 0.8, n_sentences: int = 240, seed: int = 0) -> torch.Tensor:
    """``(n_sentences, 8)`` token ids: a template, an occupation and an ending drawn
    uniformly, and "she" with probability :func:`she_rate` (else "he")."""
    if n_sentences < 1:
        raise ValueError(f"n_sentences must be positive, got {n_sentences}")
    generator = torch.Generator().manual_seed(seed)
    occupations = list(LEANS)
    rows = []
    for _ in range(n_sentences):
        template = TEMPLATES[int(torch.randint(len(TEMPLATES), (1,), generator=generator))]
        occupation = occupations[int(torch.randint(len(occupations), (1,), generator=generator))]
        she = float(torch.rand(1, generator=generator)) < she_rate(occupation, skew)
        ending = ENDINGS[int(torch.randint(len(ENDINGS), (1,), generator=generator))]
        rows.append(encode(template.format(occupation=occupation, ending=ending,
                                           pronoun=PRONOUNS[0] if she else PRONOUNS[1])))
    return torch.tensor(rows)


def swap_pronouns(corpus: torch.Tensor) -> torch.Tensor:
    """The same sentences with "she" and "he" exchanged."""
    she, he = VOCAB.index("she"), VOCAB.index("he")
    swapped = corpus.clone()
    swapped[corpus == she], swapped[corpus == he] = he, she
    return swapped


def rebalance(corpus: torch.Tensor) -> torch.Tensor:
    """Counterfactual augmentation: every sentence plus its pronoun-swapped twin, so each
    occupation occurs equally often with both pronouns."""
    return torch.cat([corpus, swap_pronouns(corpus)])


def corpus_counts(corpus: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Occupation -> (sentences with "she", sentences with "he")."""
    counts = {}
    for occupation in LEANS:
        rows = corpus[:, OCCUPATION_POSITION] == VOCAB.index(occupation)
        she = int((corpus[rows, PRONOUN_POSITION] == VOCAB.index("she")).sum())
        counts[occupation] = (she, int(rows.sum()) - she)
    return counts


def data_log_odds(corpus: torch.Tensor) -> dict[str, float]:
    """Occupation -> log(#she / #he) in the corpus (half a count added to each, so that an
    occupation seen with one pronoun only gets a finite value)."""
    return {occupation: math.log((she + 0.5) / (he + 0.5))
            for occupation, (she, he) in corpus_counts(corpus).items()}


def show_corpus(corpus: torch.Tensor, skew: float, n_examples: int = 8) -> None:
    """Print everything the corpus is made of: templates, endings, rates, counts, examples."""
    print("templates:", " | ".join(TEMPLATES))
    print("endings:  ", " | ".join(ENDINGS))
    print(f"\nskew = {skew}: P(she | occupation) = 0.5 + skew * lean / 2\n")
    print(f"{'occupation':11s} {'lean':>5s} {'P(she)':>7s} {'P(he)':>6s}   in this corpus: "
          f"{'she':>4s} {'he':>4s}")
    for occupation, (she, he) in corpus_counts(corpus).items():
        rate = she_rate(occupation, skew)
        print(f"{occupation:11s} {LEANS[occupation]:+5d} {rate:7.2f} {1 - rate:6.2f}"
              f"   {'':15s} {she:4d} {he:4d}")
    print(f"\n{len(corpus)} sentences; the first {n_examples}:")
    for row in corpus[:n_examples]:
        print("  ", decode(row))


class TinyCausalLM(nn.Module):
    """Word embeddings plus learned positions, one PyTorch encoder layer with a causal mask,
    and a read-out: ``forward(tokens (B, T)) -> logits (B, T, V)``, position t predicting
    token t + 1."""

    def __init__(self, vocab_size: int = len(VOCAB), max_len: int = 8, d_model: int = 32,
                 n_heads: int = 2) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(max_len, d_model)
        self.layer = nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=2 * d_model,
                                                dropout=0.0, batch_first=True)
        self.readout = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]
        positions = torch.arange(T, device=tokens.device)
        h = self.token_embedding(tokens) + self.position_embedding(positions)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=tokens.device)
        return self.readout(self.layer(h, src_mask=mask, is_causal=True))


def train_language_model(corpus: torch.Tensor, steps: int = 50, lr: float = 0.03,
                         seed: int = 0, progress: bool = False,
                         device: torch.device | str = "cpu") -> TinyCausalLM:
    """Full-batch Adam on next-token cross-entropy, from its own seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyCausalLM(max_len=corpus.shape[1]).to(device)
    corpus = corpus.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    train_next_token(model, lambda: (corpus[:, :-1], corpus[:, 1:]), optimizer, steps,
                     description="language model", progress=progress)
    return model


def sentence_pairs(occupation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sentence of the corpus's form for ``occupation``, once with "she" and once with
    "he": two ``(n, 8)`` token tensors whose rows differ in the pronoun only."""
    pairs = [[encode(t.format(occupation=occupation, ending=e, pronoun=p)) for p in PRONOUNS]
             for t in TEMPLATES for e in ENDINGS]
    ids = torch.tensor(pairs)
    return ids[:, 0], ids[:, 1]


@torch.no_grad()
@uses_student_code
def pronoun_preference(model: nn.Module, sequence_log_prob: Callable[..., torch.Tensor]
                       ) -> dict[str, float]:
    """Occupation -> mean over its sentence pairs of log P(she-sentence) - log P(he-sentence),
    both scored with the student's ``sequence_log_prob``."""
    device = next(model.parameters()).device
    preference = {}
    for occupation in LEANS:
        she, he = (s.to(device) for s in sentence_pairs(occupation))
        difference = sequence_log_prob(model(she), she) - sequence_log_prob(model(he), he)
        preference[occupation] = float(difference.mean())
    return preference


@uses_student_code
def plot_pair(model: nn.Module, sequence_log_prob: Callable[..., torch.Tensor], first: str,
              second: str) -> None:
    """Two sentences scored word by word with the student's ``sequence_log_prob``: the
    running log-probability of every prefix, and which sentence the model prefers."""
    device = next(model.parameters()).device
    ids = torch.tensor([encode(first), encode(second)], device=device)
    if ids.shape[1] < 2:
        raise ValueError("the sentences need at least one word")
    with torch.no_grad():
        running = torch.stack([sequence_log_prob(model(ids[:, :t + 1]), ids[:, :t + 1])
                               for t in range(1, ids.shape[1])], dim=1).cpu()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for k, (sentence, marker) in enumerate(((first, "o"), (second, "s"))):
        ax.plot(range(1, ids.shape[1]), to_numpy(running[k]), marker=marker, label=sentence)
    words = [f"{a}/{b}" if a != b else a for a, b in zip(first.split(), second.split(),
                                                          strict=True)]
    ax.set_xticks(range(1, ids.shape[1]), words, rotation=20)
    ax.set(title="Scoring a pair, word by word", xlabel="sentence up to this word",
           ylabel="log P(sentence so far)")
    ax.legend()
    plt.show()
    preferred = first if float(running[0, -1]) > float(running[1, -1]) else second
    print(f"the model prefers: {preferred!r}")
    gap = (running[0] - running[1]).double()
    split = int((gap.abs() > 1e-6).int().argmax())  # the first word where the curves part
    if gap.abs().max() > 1e-6:
        drift = float((gap[split:] - gap[split]).abs().max())
        print(f"the curves part at {words[split]!r}; the words after it change the gap between "
              f"them by {'less' if drift < 0.3 else 'more'} than 0.3")


@uses_student_code
def skew_experiment(sequence_log_prob: Callable[..., torch.Tensor],
                    skews: Sequence[float] = (0.0, 0.45, 0.9), n_sentences: int = 240,
                    steps: int = 50, seed: int = 0, device: torch.device | str = "cpu",
                    rebalanced: bool = True) -> list[dict]:
    """One model per skew (and one on the rebalanced corpus of the largest skew): the data's
    log-odds and the learned preference of every occupation."""
    runs = [(f"skew {s}", s, make_corpus(s, n_sentences, seed)) for s in skews]
    if rebalanced:
        top = max(skews)
        runs.append((f"skew {top}, rebalanced", top, rebalance(make_corpus(top, n_sentences, seed))))
    results = []
    for name, skew, corpus in progress_bar(runs, desc="language models", leave=False):
        model = train_language_model(corpus, steps=steps, seed=seed, device=device)
        results.append({"name": name, "skew": skew, "data": data_log_odds(corpus),
                        "learned": pronoun_preference(model, sequence_log_prob)})
    return results


def majority_agreement(result: dict) -> float:
    """Share of leaning occupations whose learned preference has the sign of their lean (the
    pronoun the skewed corpus favours), CrowS-Pairs style: 0.5 means no side taken."""
    leaning = [o for o, lean in LEANS.items() if lean != 0]
    return sum((result["learned"][o] > 0) == (LEANS[o] > 0) for o in leaning) / len(leaning)


def plot_skew_experiment(results: Sequence[dict]) -> None:
    """Learned preference against the data's log-odds (one point per occupation and model),
    and the spread of the learned preferences per model."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    everything = []
    for k, result in enumerate(results):
        x = np.array(list(result["data"].values()))
        y = np.array(list(result["learned"].values()))
        everything += [*x, *y]
        marker = "x" if "rebalanced" in result["name"] else "o"
        left.scatter(x, y, color=f"C{k}", marker=marker, s=45, label=result["name"])
    limit = max(abs(v) for v in everything) * 1.1
    left.plot([-limit, limit], [-limit, limit], ls=":", color="0.4", label="learned = data")
    left.set(title="The model's preference follows its data",
             xlabel="data: log((#she + ½) / (#he + ½)) for the occupation",
             ylabel="model: mean log P(she-sentence)\n− log P(he-sentence)",
             xlim=(-limit, limit), ylim=(-limit, limit))
    left.legend(fontsize=8)
    names = [r["name"].replace(", ", "\n") for r in results]
    for occupation, marker in zip(LEANS, "os^vDP", strict=False):
        lean = LEANS[occupation]
        colour = {1: "C3", -1: "C0", 0: "0.5"}[lean]
        right.plot(range(len(results)), [r["learned"][occupation] for r in results],
                   marker=marker, color=colour, alpha=0.8,
                   label=f"{occupation} (lean {lean:+d})")
    right.axhline(0, color="0.4", ls=":")
    right.set_xticks(range(len(results)), names, fontsize=8)
    right.set(title="Learned preference, per occupation", xlabel="training corpus",
              ylabel="log P(she-sentence) − log P(he-sentence)")
    right.legend(fontsize=7, ncol=2)
    plt.show()


# ---- Longer budgets and more seeds: tables written by bench/beyond_words_budgets.py ----------

DIGIT_CURVES_CSV = DATA_DIR / "beyond_words_digit_curves.csv"  # provenance: .SOURCE.md beside it
SKEW_SEEDS_CSV = DATA_DIR / "beyond_words_skew_seeds.csv"
DIGIT_CURVE_FIELDS = ("model", "seed", "epoch", "test_accuracy")
SKEW_SEED_FIELDS = ("steps", "seed", "corpus", "skew", "occupation", "data_log_odds", "learned")


@uses_student_code
def digit_curves(embedding_class: type[nn.Module], data: Sequence[torch.Tensor], *,
                 seeds: Sequence[int], epochs: int, models: Sequence[str] = ("ViT", "MLP"),
                 device: torch.device | str = "cpu") -> list[dict]:
    """Test accuracy per epoch of the notebook's ViT and MLP, one fresh pair per seed, built
    and trained as the notebook does for seed 0 (so seed 0's first epochs are its curves)."""
    rows = []
    for seed in seeds:
        for name in models:
            if name == "ViT":
                model = build_vit(embedding_class, seed=seed, patch_size=2, d_model=32,
                                  n_heads=4, n_layers=1)
            else:
                torch.manual_seed(seed)
                model = mlp_baseline(n_hidden=130)
            history = train_digit_classifier(model, data, epochs=epochs, lr=3e-3, seed=seed,
                                             description=f"{name}, seed {seed}", device=device)
            rows += [{"model": name, "seed": seed, "epoch": epoch, "test_accuracy": accuracy}
                     for epoch, accuracy in enumerate(history["val_acc"], start=1)]
    return rows


@uses_student_code
def skew_seed_rows(sequence_log_prob: Callable[..., torch.Tensor], *, seeds: Sequence[int],
                   steps: Sequence[int], skews: Sequence[float] = (0.0, 0.45, 0.9),
                   n_sentences: int = 240, device: torch.device | str = "cpu") -> list[dict]:
    """The notebook's skew experiment for every seed (corpus and model) and number of
    training steps, one row per corpus and occupation."""
    rows = []
    for n_steps in steps:
        for seed in progress_bar(seeds, desc=f"seeds, {n_steps} steps"):
            for result in skew_experiment(sequence_log_prob, skews=skews, n_sentences=n_sentences,
                                          steps=n_steps, seed=seed, device=device):
                rows += [{"steps": n_steps, "seed": seed, "corpus": result["name"],
                          "skew": result["skew"], "occupation": occupation,
                          "data_log_odds": result["data"][occupation],
                          "learned": result["learned"][occupation]} for occupation in LEANS]
    return rows


def write_rows(rows: Sequence[dict], path: Path, fields: Sequence[str]) -> None:
    """A CSV with a header row; floats to 4 decimals (more than any claim needs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v
                             for k, v in row.items()})


def _read(path: Path | str) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def load_digit_curves(path: Path | str = DIGIT_CURVES_CSV) -> dict[str, np.ndarray]:
    """Model -> test accuracy, an array ``(seeds, epochs)`` (row k: the k-th smallest seed)."""
    curves: dict[str, dict[int, dict[int, float]]] = {}
    for row in _read(path):
        seeds = curves.setdefault(row["model"], {})
        seeds.setdefault(int(row["seed"]), {})[int(row["epoch"])] = float(row["test_accuracy"])
    table = {}
    for name, seeds in curves.items():
        epochs = sorted(next(iter(seeds.values())))
        if any(sorted(per_epoch) != epochs for per_epoch in seeds.values()) or \
                epochs != list(range(1, len(epochs) + 1)):
            raise ValueError(f"{path}: every seed of {name} needs epochs 1..N")
        table[name] = np.array([[seeds[s][e] for e in epochs] for s in sorted(seeds)])
    return table


def load_skew_seeds(path: Path | str = SKEW_SEEDS_CSV) -> list[dict]:
    """The rows of the skew table, numbers as numbers."""
    return [{**row, "steps": int(row["steps"]), "seed": int(row["seed"]),
             "skew": float(row["skew"]), "data_log_odds": float(row["data_log_odds"]),
             "learned": float(row["learned"])} for row in _read(path)]


def plot_long_budget(curves: Mapping[str, np.ndarray],
                     live: Mapping[str, dict[str, list[float]]] | None = None) -> None:
    """Mean test accuracy per epoch over the seeds, a band from the lowest to the highest
    seed, and (optionally) the notebook's own short run as dots."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for k, (name, table) in enumerate(curves.items()):
        epochs = np.arange(1, table.shape[1] + 1)
        ax.plot(epochs, table.mean(0), color=f"C{k}",
                label=f"{name}: mean of {len(table)} seeds")
        ax.fill_between(epochs, table.min(0), table.max(0), color=f"C{k}", alpha=0.2,
                        label=f"{name}: lowest to highest seed")
        if live and name in live:
            mine = live[name]["val_acc"]
            ax.plot(np.arange(1, len(mine) + 1), mine, "o", ms=4, color=f"C{k}",
                    markeredgecolor="k", label=f"{name}: this notebook's run")
    ax.set(title="Held-out digits classified correctly, trained until both curves are flat",
           xlabel="epoch", ylabel="test accuracy", ylim=(0, 1.02))
    ax.legend(fontsize=8, loc="lower right")
    plt.show()


def skew_summary(rows: Sequence[dict], steps: int) -> dict[tuple[str, str], dict[str, float]]:
    """(corpus, occupation) -> mean and standard deviation over seeds of the data's log-odds,
    the learned preference and their difference (learned - data), and the number of seeds."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["steps"] == steps:
            groups.setdefault((row["corpus"], row["occupation"]), []).append(row)
    summary = {}
    for key, group in groups.items():
        data = np.array([r["data_log_odds"] for r in group])
        learned = np.array([r["learned"] for r in group])
        summary[key] = {"data": data.mean(), "data_sd": data.std(ddof=1),
                        "learned": learned.mean(), "learned_sd": learned.std(ddof=1),
                        "excess": (learned - data).mean(),
                        "excess_sd": (learned - data).std(ddof=1), "n": len(group)}
    return summary


def plot_skew_over_seeds(rows: Sequence[dict], steps: Sequence[int]) -> None:
    """Learned preference against the data's log-odds, mean ± standard deviation over the
    seeds for every occupation and corpus (each seed a faint dot); one panel per number of
    training steps."""
    fig, axes = plt.subplots(1, len(steps), figsize=(5.4 * len(steps), 4.4), squeeze=False)
    limit = max(abs(r[k]) for r in rows for k in ("data_log_odds", "learned")) * 1.1
    for ax, n_steps in zip(axes[0], steps, strict=True):
        summary = skew_summary(rows, n_steps)
        corpora = list(dict.fromkeys(corpus for corpus, _ in summary))
        for k, corpus in enumerate(corpora):
            seeds = [r for r in rows if r["steps"] == n_steps and r["corpus"] == corpus]
            ax.scatter([r["data_log_odds"] for r in seeds], [r["learned"] for r in seeds],
                       color=f"C{k}", s=8, alpha=0.25, linewidths=0)
            points = [v for (c, _), v in summary.items() if c == corpus]
            ax.errorbar([p["data"] for p in points], [p["learned"] for p in points],
                        xerr=[p["data_sd"] for p in points],
                        yerr=[p["learned_sd"] for p in points], fmt="x" if "rebal" in corpus
                        else "o", color=f"C{k}", ms=5, capsize=3, label=corpus)
        ax.plot([-limit, limit], [-limit, limit], ls=":", color="0.4", label="learned = data")
        n = next(iter(summary.values()))["n"]
        ax.set(title=f"{n_steps} training steps, mean ± sd over {n} seeds",
               xlabel="data: log((#she + ½) / (#he + ½))",
               ylabel="model: log P(she-sentence) − log P(he-sentence)",
               xlim=(-limit, limit), ylim=(-limit, limit))
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("Learned preference against the data, one point per occupation and corpus")
    plt.show()


def amplification(rows: Sequence[dict], steps: int, corpus: str = "skew 0.9",
                  threshold: float = 0.5) -> dict:
    """How far the models of ``corpus`` go beyond their data, towards each occupation's
    majority pronoun: ``lean * (learned - data)`` for every leaning occupation and seed.

    Only seeds whose model learned the lean count: every leaning occupation's preference more
    than ``threshold`` on the side of its majority pronoun (a model that learned one
    preference for all occupations has learned the pronouns' overall rate, not the lean).
    Returns the seeds, those that learned, the per-(seed, occupation) values of those, and
    how many of them lie more than ``threshold`` beyond the data and short of it; under
    "all", the same counts over every seed (picking the seeds that learned the lean favours
    large preferences).
    """
    chosen = [r for r in rows if r["steps"] == steps and r["corpus"] == corpus
              and LEANS[r["occupation"]] != 0]
    if not chosen:
        raise ValueError(f"no rows for {corpus!r} at {steps} steps")
    seeds = sorted({r["seed"] for r in chosen})
    learned = [s for s in seeds if all(LEANS[r["occupation"]] * r["learned"] > threshold
                                       for r in chosen if r["seed"] == s)]
    beyond = {(r["seed"], r["occupation"]): LEANS[r["occupation"]]
              * (r["learned"] - r["data_log_odds"]) for r in chosen if r["seed"] in learned}
    values = np.array(list(beyond.values()))
    every = np.array([LEANS[r["occupation"]] * (r["learned"] - r["data_log_odds"])
                      for r in chosen])
    return {"seeds": seeds, "learned_seeds": learned, "beyond": beyond,
            "all": {"n": len(every), "n_beyond": int((every > threshold).sum()),
                    "n_short": int((every < -threshold).sum()), "mean": float(every.mean()),
                    "sd": float(every.std(ddof=1)) if len(every) > 1 else math.nan},
            "n_beyond": int((values > threshold).sum()),
            "n_short": int((values < -threshold).sum()),
            "mean": float(values.mean()) if len(values) else math.nan,
            "sd": float(values.std(ddof=1)) if len(values) > 1 else math.nan}


def long_budget_summary(curves: Mapping[str, np.ndarray], short: int = 7) -> dict[str, dict]:
    """Print and return, per model, the test accuracy after ``short`` epochs and after the
    last one (mean and standard deviation over the seeds) and how much the mean curve moves
    over its last 10 epochs; then by how much the MLP ends ahead of the ViT, seed by seed."""
    summary = {}
    for name, table in curves.items():
        early, final, tail = table[:, short - 1], table[:, -1], table[:, -10:].mean(0)
        summary[name] = {"early": early.mean(), "early_sd": early.std(ddof=1),
                         "final": final.mean(), "final_sd": final.std(ddof=1),
                         "tail_moves": tail.max() - tail.min()}
        print(f"{name}: epoch {short} {early.mean():.1%} ± {early.std(ddof=1):.1%}, epoch "
              f"{table.shape[1]} {final.mean():.1%} ± {final.std(ddof=1):.1%} (mean ± sd over "
              f"{len(table)} seeds); over the last 10 epochs the mean curve moves "
              f"{100 * (tail.max() - tail.min()):.1f} points")
    if {"ViT", "MLP"} <= set(curves):
        ahead = curves["MLP"][:, -1] - curves["ViT"][:, -1]
        summary["MLP ahead"] = {"mean": ahead.mean(), "sd": ahead.std(ddof=1),
                                "seeds": int((ahead > 0).sum())}
        print(f"after {curves['MLP'].shape[1]} epochs the MLP is ahead by "
              f"{100 * ahead.mean():.1f} ± {100 * ahead.std(ddof=1):.1f} points, on "
              f"{int((ahead > 0).sum())} of {len(ahead)} seeds")
    return summary


def print_amplification(rows: Sequence[dict], steps: int, corpus: str = "skew 0.9") -> dict:
    """Print :func:`amplification` for one budget, and the largest mean preference of the
    occupations without a lean over every corpus; return the amplification."""
    result = amplification(rows, steps, corpus)
    n_cases = len(result["beyond"])
    print(f"{steps} steps, {corpus}: {len(result['learned_seeds'])} of {len(result['seeds'])} "
          f"seeds learned the lean (every leaning occupation more than 0.5 towards its "
          f"majority pronoun)")
    if n_cases:
        print(f"  in those {len(result['learned_seeds'])} seeds only: more than 0.5 beyond "
              f"the data in {result['n_beyond']} of {n_cases} (seed, occupation) cases, more than 0.5 short of it in {result['n_short']}; "
              f"towards the majority pronoun, learned - data = {result['mean']:+.2f} ± "
              f"{result['sd']:.2f}")
    every = result["all"]
    print(f"  over all {len(result['seeds'])} seeds: more than 0.5 beyond the data in "
          f"{every['n_beyond']} of {every['n']} cases, more than 0.5 short of it in "
          f"{every['n_short']}; learned - data = {every['mean']:+.2f} ± {every['sd']:.2f}")
    neutral = [v["learned"] for (_, occupation), v in skew_summary(rows, steps).items()
               if LEANS[occupation] == 0]
    print(f"  teacher and doctor (no lean): mean preference between {min(neutral):+.2f} and "
          f"{max(neutral):+.2f} in every corpus")
    return result

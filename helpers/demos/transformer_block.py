"""Tutorial 04: a generated review corpus, the classifier around the student's block, figures.

Nothing here implements an exercise. The classifier takes the student's
``TransformerBlock`` class, ``sinusoidal_positional_encoding`` and ``mean_pool``
as arguments, so every result in the notebook comes from the student's code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from helpers.exercises import uses_student_code
from helpers.plotting import heatmap, to_numpy
from helpers.training import band, single_thread, train

# ---- the review corpus ---------------------------------------------------------------------

PAD = "<pad>"
NOUNS = ("food", "service", "waiter", "music", "room", "coffee", "dessert", "view")
POSITIVE = ("good", "great", "nice", "excellent", "lovely", "fine")
NEGATIVE = ("bad", "awful", "poor", "terrible", "dull", "horrible")
INTENSIFIERS = ("very", "really", "quite")
VOCAB = (PAD, "the", "was", "not", "but", *INTENSIFIERS, *NOUNS, *POSITIVE, *NEGATIVE)
WORD_ID = {word: i for i, word in enumerate(VOCAB)}
PAD_ID = WORD_ID[PAD]
LABELS = ("negative", "positive")
MAX_LEN = 13  # the longest review: two clauses of 6 words and "but"


@dataclass
class Reviews:
    """A labelled set of reviews: token ids padded with ``PAD_ID``, labels, the text."""

    tokens: torch.Tensor  # (N, MAX_LEN) int64
    labels: torch.Tensor  # (N,) int64, 1 = positive
    sentences: list[str]

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def padding_mask(self) -> torch.Tensor:
        """(N, MAX_LEN) bool, True where a position is padding."""
        return self.tokens == PAD_ID


def _pick(options: Sequence[str], generator: torch.Generator) -> str:
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def _coin(p: float, generator: torch.Generator) -> bool:
    return float(torch.rand(1, generator=generator)) < p


def _clause(sentiment: int, generator: torch.Generator) -> list[str]:
    """'the <noun> was [not] [very] <adjective>' with the given overall sentiment."""
    negated = _coin(0.5, generator)
    words = ["the", _pick(NOUNS, generator), "was"]
    if negated:
        words.append("not")
    if _coin(0.4, generator):
        words.append(_pick(INTENSIFIERS, generator))
    positive_word = (sentiment == 1) != negated  # "not" flips the adjective
    words.append(_pick(POSITIVE if positive_word else NEGATIVE, generator))
    return words


def encode(sentences: Sequence[str], max_len: int = MAX_LEN) -> torch.Tensor:
    """Token ids of whitespace-separated sentences, padded at the end with ``PAD_ID``."""
    tokens = torch.full((len(sentences), max_len), PAD_ID, dtype=torch.long)
    for row, sentence in enumerate(sentences):
        words = sentence.split()
        unknown = [w for w in words if w not in WORD_ID]
        if unknown:
            raise ValueError(f"unknown words {unknown}; the vocabulary is {list(VOCAB[1:])}")
        if len(words) > max_len:
            raise ValueError(f"{sentence!r} has {len(words)} words, more than max_len={max_len}")
        tokens[row, :len(words)] = torch.tensor([WORD_ID[w] for w in words])
    return tokens


def make_reviews(n: int, seed: int = 0, p_single: float = 0.2,
                 p_contrast: float = 0.75) -> Reviews:
    """``n`` generated restaurant reviews whose label needs word order to be read.

    A review is one clause ("the food was not good"), or two clauses joined by
    "but", and then **the clause after "but" decides**. "not" flips the
    adjective right after it (an intensifier may sit in between). With
    probability ``p_contrast`` the two clauses disagree, so swapping them flips
    the label while keeping exactly the same bag of words.
    """
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    generator = torch.Generator().manual_seed(seed)
    sentences, labels = [], []
    for _ in range(n):
        label = int(torch.randint(2, (1,), generator=generator))
        if _coin(p_single, generator):
            words = _clause(label, generator)
        else:
            first = 1 - label if _coin(p_contrast, generator) else label
            words = _clause(first, generator) + ["but"] + _clause(label, generator)
        sentences.append(" ".join(words))
        labels.append(label)
    return Reviews(encode(sentences), torch.tensor(labels), sentences)


def show_reviews(data: Reviews, k: int = 6) -> None:
    """Print ``k`` reviews, half of each label, in the order they come."""
    chosen = ([i for i, y in enumerate(data.labels.tolist()) if y == 1][: k // 2]
              + [i for i, y in enumerate(data.labels.tolist()) if y == 0][: k - k // 2])
    print("\n".join(f"{LABELS[int(data.labels[i])]:>8}  {data.sentences[i]}"
                    for i in sorted(chosen)))


def plot_length_histogram(data: Reviews) -> None:
    """How many real (non-padding) tokens the reviews have."""
    lengths = to_numpy((~data.padding_mask).sum(dim=1))
    fig, ax = plt.subplots(figsize=(6, 3))
    bins = np.arange(lengths.min() - 0.5, MAX_LEN + 1.5)
    labels = to_numpy(data.labels)
    # side by side, not overlapping: no mixed colour that the legend does not explain
    ax.hist([lengths[labels == label] for label in range(len(LABELS))], bins=bins,
            label=list(LABELS))
    ax.set(title="Review lengths (the rest of each row is padding)", xlabel="number of tokens",
           ylabel="number of reviews")
    ax.legend(title="label")
    plt.show()


# ---- Section 1: self-attention does not see order --------------------------------------------

@single_thread()
def plot_permutation_equivariance(d_model: int = 16, seed: int = 0) -> None:
    """Self-attention (PyTorch's own layer) on a sentence and on the same words shuffled."""
    sentence = "the food was not good but the service was great".split()
    generator = torch.Generator().manual_seed(seed)
    embedding = torch.randn(len(VOCAB), d_model, generator=generator)
    with torch.random.fork_rng(devices=[]):  # leave the notebook's random state alone
        torch.manual_seed(seed)
        attention = nn.MultiheadAttention(d_model, num_heads=2, batch_first=True).eval()
    order = torch.randperm(len(sentence), generator=generator)
    x = embedding[encode([" ".join(sentence)], len(sentence))]
    with torch.no_grad():
        out, _ = attention(x, x, x)
        shuffled = x[:, order]
        out_shuffled, _ = attention(shuffled, shuffled, shuffled)
    put_back = torch.empty_like(order)
    put_back[order] = torch.arange(len(order))
    restored = out_shuffled[0, put_back]
    gap = (restored - out[0]).abs().max().item()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    heatmap(axes[0], out[0], title="Attention output, original order", xlabel="feature",
            ylabel="token", yticklabels=sentence, colorbar_label="value")
    heatmap(axes[1], out_shuffled[0], title="Same words shuffled", xlabel="feature",
            ylabel="token", yticklabels=[sentence[i] for i in order], colorbar_label="value")
    heatmap(axes[2], restored, title="Shuffled output, rows put back", xlabel="feature",
            ylabel="token", yticklabels=sentence, colorbar_label="value")
    plt.show()
    shown = "below 1e-6 (rounding error)" if gap < 1e-6 else f"{gap:.1e}"
    print(f"largest difference between the first and the last panel: {shown}")


# ---- Section 2: sinusoidal positions ---------------------------------------------------------

@single_thread()
@uses_student_code
def plot_positional_encoding(positional_encoding: Callable[[int, int], torch.Tensor],
                             T: int = 64, d_model: int = 32) -> None:
    """The student's encoding matrix, the similarity of positions, and similarity vs offset."""
    pe = torch.as_tensor(positional_encoding(T, d_model)).detach().cpu().float()
    similarity = pe @ pe.T
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    heatmap(axes[0], pe, title="Positional encoding PE", xlabel="column (feature) $j$",
            ylabel="position $t$", cmap="RdBu_r", vmin=-1, vmax=1, colorbar_label="value")
    heatmap(axes[1], similarity, title="Similarity PE PEᵀ", xlabel="position $s$",
            ylabel="position $t$", colorbar_label="dot product")
    for t in (8, 32, 56):
        if t < T:
            axes[2].plot(to_numpy(similarity[t]), label=f"position {t}")
    axes[2].set(title="Dot product with one position", xlabel="other position $s$",
                ylabel="PE$_t$ · PE$_s$")
    axes[2].legend()
    plt.show()


@uses_student_code
def plot_encoding_columns(positional_encoding: Callable[[int, int], torch.Tensor],
                          T: int = 64, d_model: int = 32, columns: Sequence[int] = (0, 1, 6, 7, 20)
                          ) -> None:
    """A few columns of the encoding as waves over positions."""
    pe = torch.as_tensor(positional_encoding(T, d_model)).detach().cpu()
    fig, ax = plt.subplots(figsize=(8, 3.3))
    for j in columns:
        ax.plot(to_numpy(pe[:, j]), label=f"column {j} ({'sin' if j % 2 == 0 else 'cos'})")
    ax.set(title="Each column is a wave; the wavelength grows with the column",
           xlabel="position $t$", ylabel="PE$[t, j]$")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    plt.show()


# ---- Section 3: why add & norm -------------------------------------------------------------

WIRINGS = ("plain", "residual", "add & norm")


@single_thread()
def plot_residual_and_norm(depth: int = 24, d_model: int = 32, n_tokens: int = 64,
                           seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """A deep stack of random MLP layers wired three ways.

    plain: x <- f(x); residual: x <- x + f(x); add & norm: x <- LayerNorm(x + f(x)).
    Left: the size of each token's vector; right: how much of the input survives.
    Prints the numbers the figure shows and returns them: wiring -> {"size", "kept"}, one
    value per layer (the input's mean size under "input").
    """
    with torch.random.fork_rng(devices=[]):  # leave the notebook's random state alone
        torch.manual_seed(seed)
        layers = [nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(),
                                nn.Linear(2 * d_model, d_model)) for _ in range(depth)]
    norm = nn.LayerNorm(d_model, elementwise_affine=False)
    x0 = torch.randn(n_tokens, d_model, generator=torch.Generator().manual_seed(seed))
    steps = {"plain": lambda x, f: f(x), "residual": lambda x, f: x + f(x),
             "add & norm": lambda x, f: norm(x + f(x))}
    labels = {"plain": "plain  $x \\leftarrow f(x)$",
              "residual": "residual  $x \\leftarrow x + f(x)$",
              "add & norm": "add & norm  $x \\leftarrow \\mathrm{LN}(x + f(x))$"}
    curves: dict[str, dict[str, list[float]]] = {}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
    with torch.no_grad():
        for name in WIRINGS:
            x, sizes, kept = x0, [], []
            for f in layers:
                x = steps[name](x, f)
                sizes.append(x.norm(dim=-1).mean().item())
                kept.append(nn.functional.cosine_similarity(x, x0, dim=-1).mean().item())
            curves[name] = {"size": sizes, "kept": kept}
            left.plot(range(1, depth + 1), sizes, label=labels[name])
            right.plot(range(1, depth + 1), kept, label=labels[name])
    curves["input"] = {"size": [x0.norm(dim=-1).mean().item()], "kept": [1.0]}
    left.axhline(curves["input"]["size"][0], ls=":", color="0.4",
                 label=f"the input (size {curves['input']['size'][0]:.1f})")
    left.set(title="Size of a token's vector", xlabel="layer", ylabel="mean norm", yscale="log")
    left.legend()
    right.set(title="How much of the input is left", xlabel="layer",
              ylabel="cosine(output, input)")
    right.legend()
    plt.show()
    rows = [f"{'':<12}{'size after layer 1':>20}{f'after {depth}':>10}"
            f"{'cosine after layer 1':>22}{f'after {depth}':>10}"]
    for name in WIRINGS:
        size, kept = curves[name]["size"], curves[name]["kept"]
        rows.append(f"{name:<12}{size[0]:>20.1f}{size[-1]:>10.1f}{kept[0]:>22.2f}{kept[-1]:>10.2f}")
    rows.append(f"(the input: size {curves['input']['size'][0]:.1f}, cosine 1)")
    print("\n".join(rows))
    return curves


# ---- the classifier around the student's parts ---------------------------------------------

class TransformerClassifier(nn.Module):
    """Token embedding + positions + a stack of the student's blocks + pooling + linear head.

    ``block_class(d_model, n_heads, d_ff)`` builds each block;
    ``positional_encoding(T, d_model)`` gives the positions (skipped when
    ``use_positions`` is False, which turns the model into a bag of words);
    ``pool(h, padding_mask)`` turns the (B, T, d) outputs into one vector per review.
    """

    @uses_student_code
    def __init__(self, block_class: type[nn.Module],
                 positional_encoding: Callable[[int, int], torch.Tensor],
                 pool: Callable[..., torch.Tensor], *, use_positions: bool = True,
                 d_model: int = 32, n_heads: int = 2, d_ff: int = 64, n_layers: int = 2,
                 max_len: int = 64, n_classes: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(len(VOCAB), d_model)
        positions = torch.as_tensor(positional_encoding(max_len, d_model)).detach().float()
        if not use_positions:
            positions = torch.zeros_like(positions)
        self.register_buffer("positions", positions)
        self.blocks = nn.ModuleList(block_class(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.head = nn.Linear(d_model, n_classes)
        self.pool = pool

    @uses_student_code
    def hidden_states(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """The input of every block and the output of the last one."""
        padding_mask = tokens == PAD_ID
        h = self.embedding(tokens) + self.positions[: tokens.shape[1]]
        states = [h]
        for block in self.blocks:
            h = block(h, padding_mask=padding_mask)
            states.append(h)
        return states

    @uses_student_code
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.hidden_states(tokens)[-1]
        return self.head(self.pool(h, tokens == PAD_ID))


class BagOfWordsMLP(nn.Module):
    """The classic baseline: word counts into a small MLP. Word order is invisible to it."""

    def __init__(self, hidden: int = 64, n_classes: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(len(VOCAB), hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        counts = nn.functional.one_hot(tokens, len(VOCAB)).sum(dim=1).float()
        counts[:, PAD_ID] = 0.0
        return self.net(counts)


@uses_student_code
def fit(model: nn.Module, train_set: Reviews, test_set: Reviews, *, epochs: int = 5,
        lr: float = 3e-3, batch_size: int = 64, description: str = "training",
        device: torch.device | None = None) -> dict[str, list[float]]:
    """Train a classifier on the reviews (Adam, cross-entropy); history with test accuracy."""
    with single_thread():
        return train(model, train_set.tokens, train_set.labels, task="multiclass", epochs=epochs,
                     lr=lr, batch_size=batch_size, val_inputs=test_set.tokens,
                     val_target=test_set.labels, device=device, description=description)


@torch.no_grad()
def predict(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Probability of "positive" for each row of ``tokens``."""
    model.eval()
    device = next(model.parameters()).device
    with single_thread():
        return torch.softmax(model(tokens.to(device)), dim=-1)[:, 1].cpu()


def plot_test_accuracy(histories: dict[str, dict[str, list[float]]]) -> None:
    """Test accuracy per epoch and at the end, one colour per model."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8),
                                      gridspec_kw={"width_ratios": [3, 2]})
    names = list(histories)
    for i, name in enumerate(names):
        acc = histories[name]["val_acc"]
        left.plot(range(1, len(acc) + 1), acc, marker="o", color=f"C{i}", label=name)
    left.axhline(0.5, ls=":", color="0.4", label="chance")
    left.set_xticks(range(1, max(len(h["val_acc"]) for h in histories.values()) + 1))
    left.set(title="Test accuracy during training", xlabel="epoch", ylabel="test accuracy",
             ylim=(0.4, 1.02))
    left.legend()
    finals = [histories[name]["val_acc"][-1] for name in names]
    bars = right.bar(range(len(names)), finals, color=[f"C{i}" for i in range(len(names))])
    right.bar_label(bars, labels=[f"{a:.2f}" for a in finals])
    right.set_xticks(range(len(names)), [n.replace(", ", ",\n").replace(" + ", "\n+ ")
                                         .replace(" (", "\n(") for n in names])
    right.axhline(0.5, ls=":", color="0.4", label="chance")
    right.set(title="Final test accuracy", xlabel="model", ylabel="test accuracy",
              ylim=(0, 1.1))
    right.legend(loc="upper left")  # above the shortest bar, clear of the others
    plt.show()


@single_thread()
@uses_student_code
def plot_confusion_matrices(models: dict[str, nn.Module], test_set: Reviews) -> None:
    """Confusion matrices (rows: true label, columns: prediction) for each model."""
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.6))
    axes = np.atleast_1d(axes)
    for ax, (name, model) in zip(axes, models.items(), strict=True):
        predicted = (predict(model, test_set.tokens) > 0.5).long()
        matrix = torch.zeros(2, 2)
        for true, guess in zip(test_set.labels.tolist(), predicted.tolist(), strict=True):
            matrix[true, guess] += 1
        heatmap(ax, matrix / matrix.sum(dim=1, keepdim=True), title=name, xlabel="predicted",
                ylabel="true", xticklabels=LABELS, yticklabels=LABELS, vmin=0, vmax=1,
                annotate=True, colorbar_label="fraction of the true class")
    plt.show()


SWAP_EDGES = (0.1, 0.4, 0.6, 0.9)  # far from the probabilities tutorial 04's models give
SAME_TOLERANCE = 1e-4  # "the same probability": equal up to rounding (order-blind: ~1e-7)


@single_thread()
@uses_student_code
def print_swap_test(models: dict[str, nn.Module], sentences: Sequence[str], *,
                    banded: Sequence[str] = ()) -> None:
    """The swap test: ``sentences`` come in pairs (the same words in two orders).

    For every model and pair, whether both orders get the same probability of
    "positive" (to ``SAME_TOLERANCE``): an order-blind model does, by construction.
    For the models named in ``banded``, also the probability of every review, as a band
    between ``SWAP_EDGES`` (the digits of trained models differ between CPUs, the bands
    do not).
    """
    if len(sentences) % 2:
        raise ValueError(f"sentences come in pairs, got {len(sentences)} of them")
    unknown = [name for name in banded if name not in models]
    if unknown:
        raise ValueError(f"banded names {unknown} are not among the models {list(models)}")
    tokens = encode(sentences)
    probs = {name: predict(model, tokens) for name, model in models.items()}
    n_pairs = len(sentences) // 2
    width = max(len(s) for s in sentences)
    lines = []
    if banded:
        lines.append(f"{'review':<{width}}  "
                     + "  ".join(f"{name:>{max(len(name), 6)}}" for name in banded))
        for i, sentence in enumerate(sentences):
            cells = "  ".join(f"{band(probs[name][i].item(), SWAP_EDGES):>{max(len(name), 6)}}"
                              for name in banded)
            lines.append(f"{sentence:<{width}}  {cells}")
        lines.append("(bands of the model's probability that the review is positive)\n")
    header = "same probability for both orders?"
    name_width = max(len(header), *(len(name) for name in models)) + 2
    lines.append(f"{header:<{name_width}}"
                 + "".join(f"{f'pair {k + 1}':>8}" for k in range(n_pairs)))
    for name, p in probs.items():
        same = ["yes" if abs(p[2 * k] - p[2 * k + 1]).item() < SAME_TOLERANCE else "no"
                for k in range(n_pairs)]
        lines.append(f"{name:<{name_width}}" + "".join(f"{s:>8}" for s in same))
    print("\n".join(lines))  # one write: the table never arrives in pieces


def clause_sentiment(words: Sequence[str]) -> int:
    """1 if a clause ('the food was [not] [very] good') is positive, else 0."""
    return int((words[-1] in POSITIVE) != ("not" in words))


def review_kind(sentence: str) -> str:
    """'one clause', 'clauses agree' or 'clauses contrast'."""
    if " but " not in sentence:
        return "one clause"
    first, second = (part.split() for part in sentence.split(" but "))
    return "clauses agree" if clause_sentiment(first) == clause_sentiment(second) \
        else "clauses contrast"


def order_blind_features(sentence: str) -> tuple[int, int, int]:
    """All an order-blind model can know about a review's label: whether it has "but", how
    many "not"s and how many positive adjectives it holds. (Nouns, intensifiers and which
    adjective of a polarity is used are drawn independently of the label.)"""
    words = sentence.split()
    return int("but" in words), words.count("not"), sum(w in POSITIVE for w in words)


def order_blind_posterior(p_single: float = 0.2, p_contrast: float = 0.75
                          ) -> dict[tuple[int, int, int], tuple[float, float]]:
    """P(features, label) for every feature value, exactly, from how ``make_reviews``
    generates a review (label, clauses, "not"s): the knowledge of a perfect bag of words."""
    joint: dict[tuple[int, int, int], list[float]] = {}
    for label in (0, 1):
        for negated in (0, 1):  # one clause: the adjective's polarity is label XOR not
            key = (0, negated, label ^ negated)
            joint.setdefault(key, [0.0, 0.0])[label] += 0.5 * p_single * 0.5
        for contrast in (0, 1):
            first = 1 - label if contrast else label
            p = 0.5 * (1 - p_single) * (p_contrast if contrast else 1 - p_contrast) * 0.25
            for not_1 in (0, 1):
                for not_2 in (0, 1):
                    key = (1, not_1 + not_2, (first ^ not_1) + (label ^ not_2))
                    joint.setdefault(key, [0.0, 0.0])[label] += p
    return {key: (value[0], value[1]) for key, value in joint.items()}


def order_blind_best(sentences: Sequence[str]) -> torch.Tensor:
    """For each review, the probability that the best order-blind classifier gets it right:
    it answers the more likely label given the review's bag of words, max_y P(y | bag)."""
    joint = order_blind_posterior()
    best = []
    for sentence in sentences:
        p_negative, p_positive = joint[order_blind_features(sentence)]
        best.append(max(p_negative, p_positive) / (p_negative + p_positive))
    return torch.tensor(best)


# The accuracy bands of this tutorial's printouts: chance (0.5) and the best an order-blind
# model can expect (0.66) fall in different bands.
ACCURACY_EDGES = (0.4, 0.6, 0.75, 0.95)


@single_thread()
@uses_student_code
def print_accuracy_by_kind(models: dict[str, nn.Module], test_set: Reviews) -> None:
    """Test accuracy of every model on each kind of review, and the best any order-blind
    model can reach on the same reviews (on average over its unavoidable coin flips).
    Accuracies are printed as bands (:func:`helpers.training.band`): the digits
    of trained models differ between CPUs, the bands do not."""
    kinds = [review_kind(s) for s in test_set.sentences]
    names = ("one clause", "clauses agree", "clauses contrast")
    counts = "".join(f"{f'({kinds.count(k)} reviews)':>18}" for k in names)
    lines = [f"{'model':<28}" + "".join(f"{k:>18}" for k in names) + f"{'all':>11}",
             f"{'':<28}{counts}{f'({len(kinds)})':>11}"]
    rows = {name: ((predict(model, test_set.tokens) > 0.5).long() == test_set.labels).float()
            for name, model in models.items()}
    best = order_blind_best(test_set.sentences)
    rows["best order-blind model"] = best
    for name, correct in rows.items():
        cells = []
        for kind in names:
            chosen = torch.tensor([k == kind for k in kinds])
            cells.append(f"{band(correct[chosen].mean().item(), ACCURACY_EDGES):>18}")
        lines.append(f"{name:<28}" + "".join(cells)
                     + f"{band(correct.mean().item(), ACCURACY_EDGES):>11}")
    tied = best == 0.5
    contrast = torch.tensor([k == "clauses contrast" for k in kinds])
    agree = torch.tensor([k == "clauses agree" for k in kinds])
    lines.append(f"\nbest order-blind model, expected accuracy on these {len(kinds)} reviews: "
                 f"{best.mean().item():.2f}\n(a coin flip on the {tied.double().mean().item():.0%}"
                 f" of them whose words fit both labels equally well:\n"
                 f" {int((tied & contrast).sum())} with contrasting clauses, and "
                 f"{int((tied & agree).sum())} whose clauses agree but whose words leave\n"
                 " open which adjective a \"not\" belongs to)")
    print("\n".join(lines))  # one write: the table never arrives in pieces


@single_thread()
@torch.no_grad()
@uses_student_code
def plot_attention(model: TransformerClassifier, sentence: str) -> list[torch.Tensor]:
    """Head-averaged attention weights of every block of the trained model for one review;
    returns them, one (T, T) tensor (query, key) per block."""
    model.eval()
    device = next(model.parameters()).device
    words = sentence.split()
    tokens = encode([sentence], len(words)).to(device)
    states = model.hidden_states(tokens)
    prob = predict(model, tokens)[0].item()
    fig, axes = plt.subplots(1, len(model.blocks), figsize=(5.6 * len(model.blocks), 4.6))
    axes = np.atleast_1d(axes)
    shown = []
    for i, (ax, block) in enumerate(zip(axes, model.blocks, strict=True)):
        h = states[i]
        _, weights = block.attention(h, h, h, need_weights=True, average_attn_weights=True)
        heatmap(ax, weights[0], title=f"block {i + 1}: attention (mean over heads)",
                xlabel="key (attended to)", ylabel="query", xticklabels=words,
                yticklabels=words, vmin=0, colorbar_label="weight")
        shown.append(weights[0].cpu())
    fig.suptitle(f"“{sentence}”  →  P(positive) = {prob:.2f}")
    plt.show()
    return shown


@single_thread()
@torch.no_grad()
@uses_student_code
def plot_padding_effect(model: TransformerClassifier, sentence: str, max_extra: int = 40
                        ) -> dict[str, dict[str, list[float]]]:
    """One review with more and more padding appended, pooled with and without the mask.

    Left: how far the pooled sentence vector moves from its value without padding.
    Right: the model's log-odds that the review is positive. Returns both curves:
    "masked" / "unmasked" -> {"extra", "moved", "log_odds"}.
    """
    model.eval()
    device = next(model.parameters()).device
    n_words = len(sentence.split())
    if n_words + max_extra > len(model.positions):
        raise ValueError(f"the model has positions for {len(model.positions)} tokens; "
                         f"use max_extra <= {len(model.positions) - n_words}")
    extras = list(range(0, max_extra + 1, 4))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.0))
    curves: dict[str, dict[str, list[float]]] = {}
    for use_mask, name in ((True, "mean_pool with the padding mask"),
                           (False, "mean over every position (padding included)")):
        vectors, log_odds = [], []
        for extra in extras:
            tokens = encode([sentence], n_words + extra).to(device)
            h = model.hidden_states(tokens)[-1]
            pooled = model.pool(h, (tokens == PAD_ID) if use_mask else None)
            logits = model.head(pooled)[0]
            vectors.append(pooled[0].cpu())
            log_odds.append((logits[1] - logits[0]).item())
        moved = [((v - vectors[0]).norm() / vectors[0].norm()).item() for v in vectors]
        curves["masked" if use_mask else "unmasked"] = {"extra": extras, "moved": moved,
                                                        "log_odds": log_odds}
        left.plot(extras, moved, marker="o", ms=3, label=name)
        right.plot(extras, log_odds, marker="o", ms=3, label=name)
    left.set(title="How far the sentence vector moves", xlabel="padding tokens appended",
             ylabel="relative change of the\npooled vector")
    right.axhline(0.0, ls=":", color="0.4", label="decision boundary")
    right.set(title="The model's evidence", xlabel="padding tokens appended",
              ylabel="log-odds of positive")
    # one legend under both panels, where it cannot hide a curve or the boundary
    fig.set_layout_engine("tight", rect=(0, 0.1, 1, 1))
    fig.legend(*right.get_legend_handles_labels(), loc="lower center",
               bbox_to_anchor=(0.5, 0.0), ncol=3)
    fig.suptitle(f"“{sentence}”")
    plt.show()
    return curves


def parameter_summary(model: nn.Module) -> str:
    """'<n> parameters' for a model, for a one-line printout."""
    return f"{sum(p.numel() for p in model.parameters()):,} parameters"


def sinusoid_wavelengths(d_model: int) -> list[float]:
    """Wavelengths (in positions) of the Vaswani et al. encoding's column pairs."""
    return [2 * math.pi * 10000 ** (2 * i / d_model) for i in range(d_model // 2)]

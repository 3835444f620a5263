"""Tutorial 02: hand-made word vectors for the query/key/value demo, the variance argument
for the 1/sqrt(d_k) scale, mask pictures and the "more 2s than 4s" figures.

Nothing here implements an exercise: the word demo gets its attention weights from
PyTorch's own ``F.scaled_dot_product_attention``, and every figure about an exercise takes
the student's function or model as an argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import patheffects
from matplotlib.patches import Patch, Rectangle

from helpers.exercises import uses_student_code
from helpers.plotting import heatmap, to_numpy
from helpers.widgets import widget_frontend_available

# ---------------------------------------------------------------------------------------------
# Section 1: a tiny, hand-made word space (no corpus, no download)
# ---------------------------------------------------------------------------------------------

#: The meaning axes of the hand-made word space; two more axes hold small noise only.
AXES: tuple[str, ...] = ("money", "water", "sport", "animal", "food", "tech")
N_NOISE_AXES = 2

#: word -> strength on each meaning axis (missing axes are 0). Ambiguous words sit on two axes.
_MEANINGS: dict[str, dict[str, float]] = {
    # ambiguous words: two senses each
    "bank": {"money": 2.0, "water": 2.0},
    "bat": {"sport": 2.0, "animal": 2.0},
    "apple": {"food": 2.0, "tech": 2.0},
    # money
    "money": {"money": 3.0}, "loan": {"money": 3.0}, "cash": {"money": 2.8},
    "account": {"money": 2.5, "tech": 0.4}, "interest": {"money": 2.2},
    # water / nature
    "river": {"water": 3.0}, "water": {"water": 2.8, "food": 0.3}, "shore": {"water": 2.6},
    "fish": {"water": 1.8, "animal": 1.6, "food": 0.6}, "muddy": {"water": 2.0},
    # sport
    "ball": {"sport": 3.0}, "game": {"sport": 2.6, "tech": 0.3}, "swung": {"sport": 2.2},
    "baseball": {"sport": 3.0},
    # animals
    "cave": {"animal": 1.8, "water": 0.5}, "wings": {"animal": 2.8}, "flew": {"animal": 2.2},
    "night": {"animal": 1.0},
    # food
    "pie": {"food": 3.0}, "ate": {"food": 2.5}, "juice": {"food": 2.6, "water": 0.4},
    "tree": {"food": 1.4, "water": 0.6},
    # technology
    "phone": {"tech": 3.0}, "laptop": {"tech": 3.0}, "released": {"tech": 2.0},
}
#: words that carry (almost) no meaning here: small random vectors
_FUNCTION_WORDS = ("the", "a", "an", "of", "on", "at", "in", "from", "to", "we", "he", "i",
                   "me", "my", "out", "new", "gave", "sat", "need", "was", "his", "picked",
                   "and")

#: ambiguous query word -> (name of sense A, probe words), (name of sense B, probe words)
SENSES: dict[str, tuple[tuple[str, list[str]], tuple[str, list[str]]]] = {
    "bank": (("money", ["money", "loan", "cash"]), ("river", ["river", "shore", "water"])),
    "bat": (("sport", ["ball", "baseball", "game"]), ("animal", ["wings", "flew", "cave"])),
    "apple": (("food", ["pie", "juice", "ate"]), ("tech", ["phone", "laptop", "released"])),
}

#: ready-made contexts for each query word (the interactive demo also takes free text)
CONTEXTS: dict[str, list[str]] = {
    "bank": ["we sat on the bank of the river", "the bank gave me a loan",
             "i need cash from the bank", "the muddy shore of the bank"],
    "bat": ["the bat flew out of the cave at night", "he swung the bat at the ball",
            "the bat and the ball of the baseball game"],
    "apple": ["i ate an apple pie", "apple released a new phone",
              "we picked an apple from the tree"],
}


def word_vectors(seed: int = 0) -> tuple[list[str], torch.Tensor]:
    """The vocabulary and its embeddings, shape ``(V, len(AXES) + N_NOISE_AXES)``.

    Meaningful words point along their meaning axes; every word also gets a little seeded
    noise on all axes so that no two words are exactly orthogonal.
    """
    generator = torch.Generator().manual_seed(seed)
    words = list(_MEANINGS) + list(_FUNCTION_WORDS)
    d = len(AXES) + N_NOISE_AXES
    vectors = 0.25 * torch.randn(len(words), d, generator=generator)
    for i, word in enumerate(words):
        for axis, strength in _MEANINGS.get(word, {}).items():
            vectors[i, AXES.index(axis)] += strength
    return words, vectors


def embed_words(text: str, seed: int = 0) -> tuple[list[str], torch.Tensor, list[str]]:
    """Split ``text`` into words; return the known words, their vectors and the unknown words."""
    words, vectors = word_vectors(seed)
    index = {w: i for i, w in enumerate(words)}
    tokens = [t.strip(".,;:!?\"'").lower() for t in text.split()]
    known = [t for t in tokens if t in index]
    unknown = [t for t in tokens if t and t not in index]
    if not known:
        return [], torch.zeros(0, vectors.shape[1]), unknown
    return known, vectors[[index[t] for t in known]], unknown


def word_lookup(query: str, context: str) -> dict[str, object]:
    """Soft dictionary look-up of ``query`` in ``context`` (keys = values = word vectors).

    The weights come from ``F.scaled_dot_product_attention`` applied to one-hot values (the
    identity matrix), so the weights and the output both come from PyTorch's own function.
    """
    words, vectors = word_vectors()
    if query not in words:
        raise ValueError(f"unknown query word {query!r}; choose one of {sorted(SENSES)}")
    q = vectors[words.index(query)].reshape(1, -1)
    context_words, keys, unknown = embed_words(context)
    if not context_words:
        raise ValueError(f"no known word in the context {context!r}")
    weights = F.scaled_dot_product_attention(q, keys, torch.eye(len(context_words)))[0]
    output = F.scaled_dot_product_attention(q, keys, keys)[0]
    return {"query": q[0], "context_words": context_words, "weights": weights,
            "output": output, "unknown": unknown}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)).squeeze(0)


def draw_word_demo(query: str, context: str) -> None:
    """Weights over the context words, and which sense the attended output is closer to."""
    result = word_lookup(query, context)
    words, vectors = word_vectors()
    (name_a, probes_a), (name_b, probes_b) = SENSES[query]
    probes = probes_a + probes_b
    alone = [float(_cosine(result["query"], vectors[words.index(p)])) for p in probes]
    after = [float(_cosine(result["output"], vectors[words.index(p)])) for p in probes]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6),
                                      gridspec_kw={"width_ratios": [1.2, 1]})
    weights = to_numpy(result["weights"])
    colours = ["C1" if w == query else "C0" for w in result["context_words"]]
    left.bar(range(len(weights)), weights, color=colours)
    left.set_xticks(range(len(weights)), result["context_words"], rotation=30, ha="right")
    left.set(title=f'query "{query}" looks up the context', xlabel="context word (key)",
             ylabel="weight", ylim=(0, 1))
    left.legend(handles=[Patch(color="C0", label="other context word"),
                         Patch(color="C1", label="the query word itself")], loc="upper right")
    if result["unknown"]:
        left.text(0.01, 0.97, "skipped (not in vocabulary): " + ", ".join(result["unknown"]),
                  transform=left.transAxes, va="top", fontsize=8, color="0.4")

    positions = np.arange(len(probes))
    right.bar(positions - 0.2, alone, width=0.4, color="0.6", label=f'"{query}" alone')
    right.bar(positions + 0.2, after, width=0.4, color="C2", label="after attention")
    right.axvline(len(probes_a) - 0.5, color="0.3", lw=1, ls=":")
    right.set_xticks(positions, probes, rotation=30, ha="right")
    right.set(title=f"sense: {name_a} (left) or {name_b} (right)?", xlabel="probe word",
              ylabel="cosine similarity", ylim=(0, 1.3))
    right.legend(loc="upper center", ncol=2)
    fig.suptitle(f'context: "{context}"', fontsize=10)
    plt.show()


STATIC_SETTINGS: tuple[tuple[str, str], ...] = (
    ("bank", "we sat on the bank of the river"), ("bank", "the bank gave me a loan"))


def lookup_summary(query: str, context: str) -> dict[str, object]:
    """The numbers the prose about a look-up relies on: the weight on the query word itself,
    the other word with the most weight, and the mean cosine similarity of the output with
    the probe words of each sense."""
    result = word_lookup(query, context)
    words, vectors = word_vectors()
    weights = result["weights"]
    context_words = result["context_words"]
    own = sum(float(w) for w, word in zip(weights, context_words, strict=True) if word == query)
    others = [(float(w), word) for w, word in zip(weights, context_words, strict=True)
              if word != query]
    top_weight, top_word = max(others)
    senses = {name: float(torch.stack([_cosine(result["output"], vectors[words.index(p)])
                                       for p in probes]).mean())
              for name, probes in SENSES[query]}
    return {"own": own, "top_word": top_word, "top_weight": top_weight, "senses": senses}


def print_lookups(settings: Sequence[tuple[str, str]] = STATIC_SETTINGS) -> None:
    """One line per setting: where the weight went and which sense the output is closer to."""
    for query, context in settings:
        summary = lookup_summary(query, context)
        (sense_a, cos_a), (sense_b, cos_b) = summary["senses"].items()
        closer = sense_a if cos_a > cos_b else sense_b
        print(f'"{context}": weight on "{query}" {summary["own"]:.2f}, on '
              f'"{summary["top_word"]}" {summary["top_weight"]:.2f}; the output is closer to '
              f"the {closer} words (mean cosine {sense_a} {cos_a:.2f}, {sense_b} {cos_b:.2f})")


def word_demo(static: Sequence[tuple[str, str]] = STATIC_SETTINGS) -> None:
    """Pick a query word and a context (or type one); headless runs draw ``static`` settings."""
    if not widget_frontend_available():
        for query, context in static:
            draw_word_demo(query, context)
        return
    import ipywidgets as widgets
    from IPython.display import display

    query_box = widgets.Dropdown(options=sorted(SENSES), value=static[0][0], description="query")
    context_box = widgets.Combobox(options=CONTEXTS[static[0][0]], value=static[0][1],
                                   description="context", ensure_option=False,
                                   placeholder="type a sentence",
                                   layout=widgets.Layout(width="480px"))

    def new_query(change: dict) -> None:
        context_box.options = CONTEXTS[change["new"]]
        context_box.value = CONTEXTS[change["new"]][0]

    query_box.observe(new_query, names="value")

    def redraw(query: str, context: str) -> None:
        try:
            draw_word_demo(query, context)
        except ValueError as error:
            print(error)

    display(widgets.interactive(redraw, query=query_box, context=context_box))


def print_vocabulary() -> None:
    """The words the demo knows, grouped by their strongest meaning axis."""
    groups: dict[str, list[str]] = {axis: [] for axis in AXES}
    for word, meaning in _MEANINGS.items():
        groups[max(meaning, key=meaning.get)].append(word)
    groups["(little meaning)"] = list(_FUNCTION_WORDS)
    for key, members in groups.items():
        print(f"{key:>16}: {' '.join(members)}")


# ---------------------------------------------------------------------------------------------
# Section 2: why divide by sqrt(d_k)
# ---------------------------------------------------------------------------------------------

def score_statistics(dims: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
                     n_keys: int = 16, n_samples: int = 1000, seed: int = 0
                     ) -> dict[str, list[float]]:
    """Monte-Carlo statistics of scores q·k for random unit-variance q, k of width d.

    For each d: the standard deviation of raw and of scaled (÷ sqrt(d)) scores, the mean
    largest softmax weight over ``n_keys`` keys (1 = one-hot, 1/n_keys = uniform), and the
    mean size of the softmax's gradient (see :func:`softmax_gradient_size`).
    """
    generator = torch.Generator().manual_seed(seed)
    stats: dict[str, list[float]] = {"d": [], "std_raw": [], "std_scaled": [],
                                     "max_w_raw": [], "max_w_scaled": [],
                                     "grad_raw": [], "grad_scaled": []}
    for d in dims:
        q = torch.randn(n_samples, 1, d, generator=generator)
        k = torch.randn(n_samples, n_keys, d, generator=generator)
        raw = (q * k).sum(-1)  # (n_samples, n_keys): one dot product per key
        scaled = raw / math.sqrt(d)
        stats["d"].append(d)
        stats["std_raw"].append(float(raw.std()))
        stats["std_scaled"].append(float(scaled.std()))
        stats["max_w_raw"].append(float(torch.softmax(raw, -1).amax(-1).mean()))
        stats["max_w_scaled"].append(float(torch.softmax(scaled, -1).amax(-1).mean()))
        stats["grad_raw"].append(softmax_gradient_size(raw))
        stats["grad_scaled"].append(softmax_gradient_size(scaled))
    return stats


def softmax_gradient_size(scores: torch.Tensor) -> float:
    """The mean size (Frobenius norm) of the softmax's derivative ∂w_i/∂s_j = w_i(δ_ij - w_j)
    over the rows of ``scores``: how much the weights move when the scores move (0 for
    one-hot weights)."""
    w = torch.softmax(scores.double(), -1)
    # Σ_ij (w_i δ_ij - w_i w_j)², summed in closed form instead of building each matrix.
    squares = w.square().sum(-1)
    norm2 = squares - 2 * w.pow(3).sum(-1) + squares.square()
    return float(norm2.clamp_min(0.0).sqrt().mean())  # rounding can dip below 0 when one-hot


def print_score_statistics(stats: dict[str, list[float]], dims: Sequence[int] = (1, 16, 512)
                           ) -> None:
    """The numbers behind the two panels, for a few key widths."""
    for d, raw, scaled, w_raw, w_scaled, g_raw, g_scaled in zip(*(stats[k] for k in (
            "d", "std_raw", "std_scaled", "max_w_raw", "max_w_scaled", "grad_raw",
            "grad_scaled")), strict=True):
        if d in dims:
            print(f"d_k = {d:3d}: std of raw scores {raw:5.1f} (sqrt(d_k) = {math.sqrt(d):4.1f}), "
                  f"of scaled scores {scaled:.1f}; largest of 16 weights: raw {w_raw:.2f}, "
                  f"scaled {w_scaled:.2f}; softmax gradient size: raw {g_raw:.2f}, "
                  f"scaled {g_scaled:.2f}")


def plot_score_statistics(stats: dict[str, list[float]] | None = None) -> None:
    """Two panels: score spread grows like sqrt(d) unless scaled; softmax saturates with it."""
    stats = stats or score_statistics()
    d = np.array(stats["d"])
    n_keys = 16
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.6))
    left.loglog(d, np.sqrt(d), color="0.4", lw=7, alpha=0.25, label="$\\sqrt{d_k}$")
    left.loglog(d, stats["std_raw"], "o-", label="raw $q\\cdot k$")
    left.loglog(d, stats["std_scaled"], "s-", label="scaled $q\\cdot k/\\sqrt{d_k}$")
    left.set(title="Spread of the scores", xlabel="key width $d_k$",
             ylabel="standard deviation")
    left.legend()
    right.semilogx(d, stats["max_w_raw"], "o-", label="softmax of raw scores")
    right.semilogx(d, stats["max_w_scaled"], "s-", label="softmax of scaled scores")
    right.axhline(1 / n_keys, ls=":", color="0.4", label=f"uniform (1/{n_keys})")
    right.set(title=f"Largest weight among {n_keys} keys", xlabel="key width $d_k$",
              ylabel="mean largest weight", ylim=(0, 1.05))
    right.legend()
    plt.show()


# ---------------------------------------------------------------------------------------------
# Section 3: masks, drawn by the student's function
# ---------------------------------------------------------------------------------------------

def example_masks(T: int = 6, n_pad: int = 2) -> dict[str, torch.Tensor]:
    """Three boolean masks (True = may attend) for a length-``T`` sequence.

    ``causal``: each position sees itself and the past. ``padding``: the last ``n_pad``
    positions are padding; real queries may not look at them, and padding queries may look
    at nothing at all (their rows are fully masked).
    """
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    real = torch.arange(T) < T - n_pad
    padding = real[:, None] & real[None, :]
    return {"no mask": torch.ones(T, T, dtype=torch.bool), "causal": causal,
            "padding": padding}


@uses_student_code
def plot_masks(attention_fn: Callable[..., tuple], T: int = 6, seed: int = 3) -> None:
    """The weights that ``attention_fn`` returns for each example mask, as heatmaps."""
    generator = torch.Generator().manual_seed(seed)
    Q = torch.randn(T, 4, generator=generator)
    K = torch.randn(T, 4, generator=generator)
    V = torch.randn(T, 3, generator=generator)
    masks = example_masks(T)
    fig, axes = plt.subplots(1, len(masks), figsize=(13, 3.8))
    for ax, (name, mask) in zip(axes, masks.items(), strict=True):
        _, weights = attention_fn(Q, K, V, mask=mask)
        heatmap(ax, weights, title=f"{name} (hatched: mask False)" if name != "no mask"
                else name, xlabel="key position", ylabel="query position", vmin=0, vmax=1,
                annotate=True, colorbar_label="weight")
        for i, j in zip(*np.nonzero(to_numpy(~mask)), strict=True):
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                   edgecolor="0.55", linewidth=0))
    plt.show()


# ---------------------------------------------------------------------------------------------
# Section 4: more 2s than 4s
# ---------------------------------------------------------------------------------------------

@uses_student_code
def show_examples(make_batch_fn: Callable[..., tuple], n: int = 5, T: int = 10) -> None:
    """Print a few rows of the student's data with their counts of 2s and 4s and the label."""
    X, y = make_batch_fn(n, T)
    for row, label in zip(X.tolist(), y.reshape(-1).tolist(), strict=True):
        twos, fours = row.count(2), row.count(4)
        print(f"{' '.join(str(v) for v in row)}   2s: {twos}  4s: {fours}  ->  y = {label:.0f}")


@uses_student_code
def label_statistics(make_batch_fn: Callable[..., tuple], N: int = 20000, T: int = 10
                     ) -> dict[str, float]:
    """Share of positive labels and of ties (as many 2s as 4s) in a large batch."""
    X, y = make_batch_fn(N, T)
    ties = ((X == 2).sum(1) == (X == 4).sum(1)).float().mean()
    return {"positive": float(y.float().mean()), "ties": float(ties)}


@torch.no_grad()
def digit_profile(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Attention score (query·key / sqrt(d)) and value of each digit 0-9 for a trained model.

    The score is read off the model itself: it attends over a sequence of the ten digits.
    """
    device = next(model.parameters()).device
    digits = torch.arange(10, device=device).reshape(1, 10)
    e = model.embed(digits)
    weights = model.attention(e)[0, 0]  # softmax over the ten digits
    log_w = torch.log(weights.clamp_min(1e-30))
    values = model.values(e)[0, :, 0]
    return to_numpy(log_w - log_w.mean()), to_numpy(values)


@torch.no_grad()
@uses_student_code
def plot_where_it_attends(model: torch.nn.Module, make_batch_fn: Callable[..., tuple],
                          history: dict[str, list[float]], n: int = 12) -> None:
    """Attention over ``n`` fresh sequences (half of each label; 2s and 4s in red), the
    learned score and value of each digit, and the loss curves."""
    device = next(model.parameters()).device
    X_pool, y_pool = make_batch_fn(20 * n, 10)
    labels = y_pool.reshape(-1)
    chosen = torch.cat([(labels > 0.5).nonzero()[: n // 2, 0],
                        (labels <= 0.5).nonzero()[: n - n // 2, 0]])
    X, y = X_pool[chosen].to(device), labels[chosen]
    model.eval()
    weights = model.attention(model.embed(X))[:, 0, :]
    p = model(X).reshape(-1)
    fig, axes = plt.subplot_mosaic([["attention", "score", "loss"], ["attention", "value", "loss"]],
                                   figsize=(15, 5), width_ratios=[1.5, 1, 1])
    ax = axes["attention"]
    heatmap(ax, weights, title="Where the query attends", xlabel="position in sequence",
            ylabel="sequence (label y, model's p)", vmin=0, vmax=float(weights.max()),
            colorbar_label="attention weight")
    for i, row in enumerate(X.tolist()):
        for j, digit in enumerate(row):
            key = digit in (2, 4)  # red on a white halo: readable on dark and light cells
            ax.text(j, i, str(digit), ha="center", va="center", fontsize=10 if key else 9,
                    color="red" if key else "white", fontweight="bold" if key else "normal",
                    path_effects=[patheffects.withStroke(linewidth=2.5, foreground="white")]
                    if key else None)
    ax.set_yticks(range(len(chosen)), [f"y={t:.0f} p={q:.2f}" for t, q in
                                       zip(y.tolist(), p.tolist(), strict=True)], fontsize=8)

    scores, values = digit_profile(model)
    digits = np.arange(10)
    for key, data, colour, title, label in (
            ("score", scores, "C0", "Query's preference per digit", "score (centred)"),
            ("value", values, "C2", "Value per digit", "value $v$")):
        ax = axes[key]
        ax.bar(digits, data, color=colour, label=label)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xticks(digits)
        for tick in ax.get_xticklabels():
            if tick.get_text() in ("2", "4"):
                tick.set_color("red")
                tick.set_fontweight("bold")
        ax.set(title=title, xlabel="digit", ylabel=label)

    ax = axes["loss"]
    epochs = range(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], "o-", label="training")
    if history.get("val_loss"):
        ax.plot(epochs, history["val_loss"], "s--", label="validation")
    ax.set_yscale("log")
    ax.set(title="Binary cross-entropy", xlabel="epoch", ylabel="loss (log scale)")
    ax.legend()
    plt.show()

"""Tutorial 06: toy sequences, timing, the scaling demo and a toy next-token model."""

from __future__ import annotations

import math
import timeit
from collections.abc import Callable, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from helpers.exercises import uses_student_code
from helpers.plotting import heatmap, plain_log_ticks, to_numpy
from helpers.training import single_thread, train_next_token
from helpers.widgets import progress_bar, slider_demo, widget_frontend_available

TensorFn = Callable[[torch.Tensor], torch.Tensor]
# 0 (not allowed) white, 1 (allowed) a mid grey: the tick labels stay readable on it.
ALLOWED_COLOURS = mpl.colors.ListedColormap(["#ffffff", "#8c8c8c"])


# Where the course style's tight layout puts the panels of each figure, measured once: a
# figure of many small panels spends about half of its drawing time finding these numbers.
LAYOUTS: dict[str, dict[str, float]] = {
    "sequence_and_pattern": dict(left=0.074, right=0.975, bottom=0.167, top=0.900, wspace=0.14),
    "matmul_sums": dict(left=0.060, right=0.961, bottom=0.225, top=0.894, wspace=0.34),
    "masking_steps": dict(left=0.039, right=0.976, bottom=0.158, top=0.905, wspace=0.22),
    "causal_weights": dict(left=0.050, right=0.977, bottom=0.150, top=0.910, wspace=0.16),
    "scaling": dict(left=0.049, right=0.990, bottom=0.158, top=0.905, wspace=0.18),
    "toy_model": dict(left=0.070, right=0.990, bottom=0.129, top=0.957, wspace=0.34,
                      hspace=0.47),
    "queries_and_keys": dict(left=0.066, right=0.978, bottom=0.354, top=0.905, wspace=0.68),
    "positions": dict(left=0.064, right=0.981, bottom=0.167, top=0.900, wspace=0.13),
    "head_size_sweep": dict(left=0.060, right=0.986, bottom=0.158, top=0.905, wspace=0.16),
    "head_size_demo": dict(left=0.074, right=0.983, bottom=0.143, top=0.953, wspace=0.35,
                           hspace=0.55),
    "attention_kinds": dict(left=0.063, right=0.987, bottom=0.310, top=0.918, wspace=0.33),
}


def _place(fig: plt.Figure, layout: str) -> None:
    """Put the panels where :data:`LAYOUTS` says, instead of laying the figure out anew."""
    fig.set_layout_engine("none")
    fig.subplots_adjust(**LAYOUTS[layout])


# ---- Section 1-3: sequences of tokens and who may talk to whom -----------------------------


def toy_sequences(B: int = 4, T: int = 8, C: int = 2, seed: int = 0,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """A batch of ``B`` random sequences of ``T`` tokens with ``C`` channels each."""
    if min(B, T, C) < 1:
        raise ValueError(f"B, T and C must be positive, got B={B}, T={T}, C={C}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, C, generator=generator).to(device)


def causal_pattern(T: int) -> torch.Tensor:
    """``(T, T)`` boolean matrix, True where query position t may read key position s (s <= t)."""
    return torch.ones(T, T, dtype=torch.bool).tril()


def plot_sequence_and_pattern(x: torch.Tensor, batch: int = 0) -> None:
    """One sequence's channels over time, and the matrix of allowed connections."""
    T = x.shape[1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    for c in range(x.shape[2]):
        left.plot(range(T), to_numpy(x[batch, :, c]), marker="o", label=f"channel {c}")
    left.set(title=f"Sequence {batch}: one vector per token", xlabel="position $t$",
             ylabel="value $x_{t,c}$")
    left.legend()
    allowed_ticks(heatmap(right, causal_pattern(T).float(), title="Who may read whom",
                          xlabel="key position $s$ (read from)",
                          ylabel="query position $t$ (reads)", cmap=ALLOWED_COLOURS, vmin=0,
                          vmax=1, colorbar_label="allowed"))
    _place(fig, "sequence_and_pattern")
    plt.show()


@uses_student_code
def plot_running_mean(running_mean_fn: TensorFn, x: torch.Tensor, batch: int = 0,
                      channel: int = 0) -> None:
    """The tokens of one channel and the student's running mean of them."""
    means = running_mean_fn(x)
    T = x.shape[1]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(range(T), to_numpy(x[batch, :, channel]), "o", color="0.55", label="tokens $x_t$")
    ax.plot(range(T), to_numpy(means[batch, :, channel]), marker="s", color="C1",
            label=r"running mean $\bar{x}_t$")
    ax.axhline(float(x[batch, :, channel].mean()), ls=":", color="0.3",
               label="mean of the whole sequence")
    ax.set(title=f"Running mean, sequence {batch}, channel {channel}", xlabel="position $t$",
           ylabel="value")
    ax.legend()
    plt.show()


def plot_matmul_sums(T: int = 4, C: int = 2, seed: int = 42) -> None:
    """A lower-triangular matrix of ones times a matrix gives running *sums* of its rows."""
    generator = torch.Generator().manual_seed(seed)
    lower = causal_pattern(T).float()
    b = torch.randint(0, 10, (T, C), generator=generator).float()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), gridspec_kw={"width_ratios": [T, C, C]})
    labels = [f"t={t}" for t in range(T)]
    channels = [f"c={c}" for c in range(C)]
    allowed_ticks(heatmap(axes[0], lower, title="A = lower triangle of ones",
                          xlabel="column $s$", ylabel="row $t$", xticklabels=labels,
                          yticklabels=labels, cmap=ALLOWED_COLOURS, vmin=0, vmax=1,
                          annotate=True, fmt=".0f", colorbar_label="entry"), ("0", "1"))
    heatmap(axes[1], b, title="B (T×C)", xlabel="channel", ylabel="row $t$",
             xticklabels=channels, yticklabels=labels, cmap="Blues", annotate=True, fmt=".0f",
             colorbar_label="value")
    heatmap(axes[2], lower @ b, title="A @ B = running sums", xlabel="channel",
             ylabel="row $t$", xticklabels=channels, yticklabels=labels, cmap="Blues",
             annotate=True, fmt=".0f", colorbar_label="value")
    _place(fig, "matmul_sums")
    plt.show()


@uses_student_code
def plot_weight_matrix(running_mean_fn: TensorFn, T: int = 6) -> None:
    """Recover the matrix behind the student's running mean by feeding it the identity.

    If ``f(x) = W @ x`` then ``f(I) = W``: each column of the identity is a one-hot token.
    """
    identity = torch.eye(T).unsqueeze(0)
    weights = running_mean_fn(identity)[0]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    labels = [str(t) for t in range(T)]
    heatmap(ax, weights, title="The running mean's weight matrix W", xlabel="key position $s$",
             ylabel="query position $t$", xticklabels=labels, yticklabels=labels,
             cmap="Blues", vmin=0, vmax=1, annotate=True, colorbar_label="weight $W_{ts}$")
    plt.show()


def _best_time(fn: TensorFn, x: torch.Tensor, repeats: int) -> float:
    with single_thread():
        fn(x)  # warm up
        return min(timeit.repeat(lambda: fn(x), number=1, repeat=repeats))


@uses_student_code
def time_running_means(loop_fn: TensorFn, matmul_fn: TensorFn,
                       lengths: Sequence[int] = (4, 16, 64, 256), B: int = 4, C: int = 8,
                       repeats: int = 3, budget_s: float = 1.5) -> None:
    """Time both running means for growing sequence length T; plot on log axes.

    Stops early once ``budget_s`` seconds have been spent, so a slow loop cannot stall
    the notebook.
    """
    rows = []
    spent = 0.0
    for T in lengths:
        x = toy_sequences(B, T, C, seed=T)
        start = timeit.default_timer()
        rows.append((T, _best_time(loop_fn, x, repeats), _best_time(matmul_fn, x, repeats)))
        spent += timeit.default_timer() - start
        if spent > budget_s:
            break
    lengths_done, loop_s, matmul_s = (np.array(v) for v in zip(*rows, strict=True))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.loglog(lengths_done, loop_s * 1e3, marker="o", label="running_mean_loop")
    ax.loglog(lengths_done, matmul_s * 1e3, marker="s", label="running_mean_matmul")
    ax.set(title=f"Loop vs one matrix product (B={B}, C={C})", xlabel="sequence length $T$",
           ylabel="time per call (ms)")
    ax.legend()
    plt.show()
    for T, a, b in rows:
        print(f"T={T:4d}: loop {a * 1e3:8.2f} ms   matmul {b * 1e3:6.3f} ms   "
              f"ratio {a / max(b, 1e-9):6.0f}x")


def example_scores(T: int = 6, seed: int = 3) -> torch.Tensor:
    """A ``(T, T)`` matrix of made-up attention scores (not one-hot after softmax)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(T, T, generator=generator)


def plot_masking_steps(scores: torch.Tensor) -> None:
    """Raw scores, the causal pattern, and the scores with the future removed."""
    T = scores.shape[-1]
    future = ~causal_pattern(T)
    shown = scores.clone().masked_fill(future, float("nan"))  # nan is drawn as blank
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    common = {"xlabel": "key position $s$", "ylabel": "query position $t$"}
    heatmap(axes[0], scores, title="1. raw scores", cmap="coolwarm", vmin=-2.5, vmax=2.5,
             annotate=True, colorbar_label="score", **common)
    allowed_ticks(heatmap(axes[1], (~future).float(), title="2. allowed (s ≤ t)",
                          cmap=ALLOWED_COLOURS, vmin=0, vmax=1, colorbar_label="allowed",
                          **common))
    heatmap(axes[2], shown, title="3. future set to −inf (blank)", cmap="coolwarm",
             vmin=-2.5, vmax=2.5, annotate=True, colorbar_label="score", **common)
    _place(fig, "masking_steps")
    plt.show()


@uses_student_code
def plot_causal_weights(weights_fn: TensorFn, scores: torch.Tensor) -> None:
    """The student's causal weights for the example scores and for all-zero scores."""
    T = scores.shape[-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    common = {"xlabel": "key position $s$", "ylabel": "query position $t$", "cmap": "Blues",
              "vmin": 0, "vmax": 1, "annotate": True, "colorbar_label": "weight"}
    heatmap(axes[0], weights_fn(scores), title="Weights from the example scores", **common)
    heatmap(axes[1], weights_fn(torch.zeros(T, T)), title="Weights from all-zero scores",
             **common)
    _place(fig, "causal_weights")
    plt.show()


@uses_student_code
def compare_running_means(loop_fn: TensorFn, matmul_fn: TensorFn, weights_fn: TensorFn,
                          x: torch.Tensor, batch: int = 0, channel: int = 0) -> None:
    """The three running means side by side: loop, matmul, softmax of zero scores."""
    T = x.shape[1]
    versions = {
        "1. loop": loop_fn(x),
        "2. lower-triangular matmul": matmul_fn(x),
        "3. masked softmax of zero scores": weights_fn(torch.zeros(T, T, device=x.device)) @ x,
    }
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for (name, means), marker, size in zip(versions.items(), "os^", (9, 6, 3), strict=True):
        ax.plot(range(T), to_numpy(means[batch, :, channel]), marker=marker, ms=size, ls="-",
                label=name)
    ax.set(title="Three ways to compute the same running mean", xlabel="position $t$",
           ylabel=f"running mean, channel {channel}")
    ax.legend()
    plt.show()
    reference = versions["1. loop"]
    for name, means in versions.items():
        agree = torch.allclose(means, reference, atol=1e-5)
        print(f"{name:34s} agrees with the loop: {agree}")


# ---- Section 4: why scale by 1/sqrt(head_size) ----------------------------------------------


def score_statistics(head_sizes: Sequence[int], T: int = 16, n: int = 64,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Variance of q·k and how peaked softmax rows get, with and without the scale.

    q and k have unit-variance entries; ``max_weight`` is the mean of each softmax
    row's largest weight (1 = one-hot, 1/T = uniform).
    """
    generator = torch.Generator().manual_seed(seed)
    stats: dict[str, list[float]] = {"var_raw": [], "var_scaled": [], "max_raw": [],
                                     "max_scaled": []}
    for d in head_sizes:
        q = torch.randn(n, T, d, generator=generator)
        k = torch.randn(n, T, d, generator=generator)
        raw = q @ k.transpose(-2, -1)
        scaled = raw / math.sqrt(d)
        stats["var_raw"].append(raw.var().item())
        stats["var_scaled"].append(scaled.var().item())
        stats["max_raw"].append(torch.softmax(raw, dim=-1).amax(-1).mean().item())
        stats["max_scaled"].append(torch.softmax(scaled, dim=-1).amax(-1).mean().item())
    return {key: np.array(value) for key, value in stats.items()}


def plot_scaling(head_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256),
                 T: int = 16) -> None:
    """Unscaled scores grow with head size and saturate softmax; scaled ones do not."""
    stats = score_statistics(head_sizes, T=T)
    sizes = np.array(head_sizes)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    axes[0].loglog(sizes, stats["var_raw"], marker="o", label=r"$q\cdot k$")
    axes[0].loglog(sizes, stats["var_scaled"], marker="s", label=r"$q\cdot k/\sqrt{d}$")
    axes[0].loglog(sizes, sizes, ls=":", color="0.4", label="$d$")
    axes[0].set(title="Score variance", xlabel="head size $d$", ylabel="variance of scores")
    axes[0].legend()
    axes[1].semilogx(sizes, stats["max_raw"], marker="o", label="unscaled")
    axes[1].semilogx(sizes, stats["max_scaled"], marker="s", label="scaled")
    axes[1].axhline(1 / T, ls=":", color="0.4", label=f"uniform (1/{T})")
    axes[1].set(title="How one-hot softmax rows are", xlabel="head size $d$",
                ylabel="mean largest weight", ylim=(0, 1.05))
    axes[1].legend()
    plain_log_ticks(axes[0])
    plain_log_ticks(axes[1], "x")
    generator = torch.Generator().manual_seed(1)
    d = max(head_sizes)
    q, k = torch.randn(1, d, generator=generator), torch.randn(T, d, generator=generator)
    raw = (q @ k.T)[0]
    positions = np.arange(T)
    axes[2].bar(positions - 0.2, to_numpy(torch.softmax(raw, -1)), width=0.4,
                label="unscaled")
    axes[2].bar(positions + 0.2, to_numpy(torch.softmax(raw / math.sqrt(d), -1)), width=0.4,
                label="scaled")
    axes[2].set(title=f"One softmax row, d = {d}", xlabel="key position $s$", ylabel="weight")
    axes[2].legend()
    _place(fig, "scaling")
    plt.show()


# ---- Section 5: a causal head -----------------------------------------------------------------


@uses_student_code
def head_weights(head: nn.Module, x: torch.Tensor, weights_fn: TensorFn) -> torch.Tensor:
    """The attention weights inside a head with members ``query`` and ``key``.

    Scores are ``q k^T / sqrt(head_size)``; the causal softmax is the student's ``weights_fn``.
    """
    q, k = head.query(x), head.key(x)
    return weights_fn(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]))


@torch.no_grad()
@uses_student_code
def plot_head_weights(head: nn.Module, x: torch.Tensor, weights_fn: TensorFn) -> None:
    """Weights of one untrained head on two different sequences: they depend on the data."""
    weights = head_weights(head, x, weights_fn)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for b, ax in enumerate(axes):
        heatmap(ax, weights[b], title=f"Head weights, sequence {b}", xlabel="key position $s$",
                 ylabel="query position $t$", cmap="Blues", vmin=0, vmax=1, annotate=True,
                 colorbar_label="weight")
    _place(fig, "causal_weights")
    plt.show()


# ---- Section 6: a toy next-token model ------------------------------------------------------

VOCAB: tuple[str, ...] = ("<s>", "man", "woman", "ordered", "the", "chicken", "beef", ".")
SENTENCES: tuple[str, ...] = ("man ordered the chicken .", "woman ordered the beef .")


def toy_corpus(sentences: Sequence[str] = SENTENCES, vocab: Sequence[str] = VOCAB,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``<s> w1 ... w_{n-1}`` and next-token targets ``w1 ... w_n`` as token ids."""
    index = {word: i for i, word in enumerate(vocab)}
    rows = []
    for sentence in sentences:
        words = sentence.split()
        unknown = [w for w in words if w not in index]
        if unknown:
            raise ValueError(f"words {unknown} are not in the vocabulary {list(vocab)}")
        rows.append([index["<s>"]] + [index[w] for w in words])
    if len({len(r) for r in rows}) != 1:
        raise ValueError("every sentence needs the same number of words")
    ids = torch.tensor(rows, dtype=torch.long, device=device)
    return ids[:, :-1], ids[:, 1:]


def token_labels(ids: torch.Tensor, vocab: Sequence[str] = VOCAB) -> list[str]:
    return [f"{t}: {vocab[int(i)]}" for t, i in enumerate(ids)]


class NextTokenModel(nn.Module):
    """Token embeddings, one causal head, and a linear read-out to the vocabulary.

    The read-out sees the head's output next to the token's own embedding (a skip
    connection). ``head_class=None`` removes the head: each token then only sees itself.
    ``positions=True`` adds learned position embeddings (this corpus does not need them:
    every word occurs once per sentence).
    """

    def __init__(self, head_class: type[nn.Module] | None, vocab_size: int = len(VOCAB),
                 block_size: int = 8, n_embd: int = 16, head_size: int = 8,
                 positions: bool = False, embed_std: float = 0.3) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        nn.init.normal_(self.token_embedding.weight, std=embed_std)
        self.position_embedding = nn.Embedding(block_size, n_embd) if positions else None
        if self.position_embedding is not None:
            nn.init.normal_(self.position_embedding.weight, std=embed_std)
        self.head = head_class(n_embd, head_size) if head_class is not None else None
        extra = head_size if head_class is not None else 0
        self.readout = nn.Linear(n_embd + extra, vocab_size)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.token_embedding(idx)
        if self.position_embedding is not None:
            h = h + self.position_embedding(torch.arange(idx.shape[1], device=idx.device))
        return h

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.embed(idx)
        if self.head is not None:
            h = torch.cat([h, self.head(h)], dim=-1)
        return self.readout(h)  # logits (B, T, vocab)


@uses_student_code
def train_next_token_model(head_class: type[nn.Module] | None, head_size: int = 8,
                           n_embd: int = 16, steps: int = 100, lr: float = 0.01,
                           seed: int = 0, device: torch.device | str = "cpu",
                           progress: bool = True, positions: bool = False,
                           sentences: Sequence[str] = SENTENCES,
                           vocab: Sequence[str] = VOCAB) -> tuple[NextTokenModel, list[float]]:
    """Train on a toy corpus (full batch, Adam, cross-entropy on every position);
    ``positions=True`` gives the model learned position embeddings."""
    inputs, targets = toy_corpus(sentences, vocab, device=device)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = NextTokenModel(head_class, vocab_size=len(vocab), block_size=inputs.shape[1],
                           n_embd=n_embd, head_size=head_size, positions=positions).to(device)
    model.sentences, model.vocab = tuple(sentences), tuple(vocab)
    torch.random.set_rng_state(generator_state)  # the rest of the notebook is unaffected
    # foreach: one call per step for all parameters (the same numbers, fewer small steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    label = f"head size {head_size}" + (", learned positions" if positions else "")
    history = train_next_token(model, lambda: (inputs, targets), optimizer, steps,
                               description=label, progress=progress)
    return model, history


@torch.no_grad()
def next_token_probabilities(model: NextTokenModel) -> torch.Tensor:
    """``(B, T, vocab)`` predicted next-token distributions on the model's toy corpus."""
    inputs, _ = toy_corpus(getattr(model, "sentences", SENTENCES), getattr(model, "vocab", VOCAB),
                           device=next(model.parameters()).device)
    return torch.softmax(model(inputs), dim=-1)


def prediction_after(model: NextTokenModel, word: str) -> list[float]:
    """Probability of the right next token after ``word`` (its first place in sentence 1),
    per sentence of the model's corpus."""
    vocab = getattr(model, "vocab", VOCAB)
    inputs, targets = toy_corpus(getattr(model, "sentences", SENTENCES), vocab,
                                 device=next(model.parameters()).device)
    probs = next_token_probabilities(model)
    t = int((inputs[0] == vocab.index(word)).nonzero()[0])
    return [float(probs[b, t, targets[b, t]]) for b in range(len(inputs))]


def noun_after_the(model: NextTokenModel) -> list[float]:
    """Probability of the right noun ("chicken" / "beef") after "the", per sentence."""
    return prediction_after(model, "the")


def plot_loss(history: Sequence[float], floor: bool = True) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(history, label="training loss")
    if floor:
        n_tokens = toy_corpus()[0].shape[1]
        ax.axhline(math.log(2) / n_tokens, ls=":", color="0.4",
                   label="best possible (first word is a coin flip)")
    ax.set(title="Next-token training", xlabel="step", ylabel="cross-entropy (nats)")
    ax.legend()
    plt.show()


@torch.no_grad()
@uses_student_code
def plot_toy_model(model: NextTokenModel, weights_fn: TensorFn) -> None:
    """For each sentence: attention weights, values, and predicted next-token distributions."""
    device = next(model.parameters()).device
    inputs, _ = toy_corpus(device=device)
    h = model.embed(inputs)
    weights = head_weights(model.head, h, weights_fn)
    values = model.head.value(h)
    probs = next_token_probabilities(model)
    fig, axes = plt.subplots(len(inputs), 3, figsize=(17, 4.2 * len(inputs)),
                             gridspec_kw={"width_ratios": [1, 1.1, 1.3]})
    for b in range(len(inputs)):
        labels = token_labels(inputs[b])
        heatmap(axes[b, 0], weights[b], title=f"Attention weights, sentence {b + 1}",
                 xlabel="key token (read from)", ylabel="query token", xticklabels=labels,
                 yticklabels=labels, cmap="Blues", vmin=0, vmax=1, annotate=True,
                 colorbar_label="weight")
        limit = float(values.abs().max())
        heatmap(axes[b, 1], values[b], title=f"Values, sentence {b + 1}",
                 xlabel="value dimension", ylabel="token", yticklabels=labels, cmap="coolwarm",
                 vmin=-limit, vmax=limit, annotate=values.shape[-1] <= 8,
                 colorbar_label="value")
        heatmap(axes[b, 2], probs[b], title=f"Predicted next token, sentence {b + 1}",
                 xlabel="next token", ylabel="current token", xticklabels=list(VOCAB),
                 yticklabels=labels, cmap="Greens", vmin=0, vmax=1, annotate=True,
                 colorbar_label="probability")
    _place(fig, "toy_model")
    plt.show()


_TRAINED: dict[tuple, tuple[NextTokenModel, list[float]]] = {}


@uses_student_code
def trained_model(head_class: type[nn.Module] | None, head_size: int, steps: int = 60,
                  seed: int = 0, device: torch.device | str = "cpu"
                  ) -> tuple[NextTokenModel, list[float]]:
    """Train once per (class, head size, steps, seed, device); later calls reuse the model."""
    key = (head_class, head_size, steps, seed, str(device))
    if key not in _TRAINED:
        _TRAINED[key] = train_next_token_model(head_class, head_size=head_size, steps=steps,
                                               seed=seed, device=device, progress=False)
    return _TRAINED[key]


# A stored run of head_size_sweep with seeds=range(30) (90 models, a few minutes of CPU) and
# the course's solution head: head size -> seeds of 30 that learned the dish.
THIRTY_SEED_COUNTS = {1: 5, 4: 15, 16: 22}


@uses_student_code
def head_size_sweep(head_class: type[nn.Module], head_sizes: Sequence[int] = (1, 4, 16),
                    seeds: Sequence[int] = (0, 1, 2, 3), steps: int = 60,
                    device: torch.device | str = "cpu") -> None:
    """Train one model per head size and seed (same short budget) and compare them."""
    runs = [(d, s) for d in head_sizes for s in seeds]
    results: dict[int, list[tuple[list[float], float]]] = {d: [] for d in head_sizes}
    for d, s in progress_bar(runs, desc="models", leave=False):
        model, history = trained_model(head_class, d, steps=steps, seed=s, device=device)
        results[d].append((history, float(np.mean(noun_after_the(model)))))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, d in enumerate(head_sizes):
        for j, (history, _) in enumerate(results[d]):
            left.plot(history, color=f"C{i}", alpha=0.7, lw=1.2,
                      label=f"head size {d}" if j == 0 else None)
    left.set(title=f"Training loss, {steps} steps, {len(seeds)} seeds each", xlabel="step",
             ylabel="cross-entropy (nats)", yscale="log")
    plain_log_ticks(left, "y")
    left.legend()
    for i, d in enumerate(head_sizes):
        p = [r[1] for r in results[d]]
        right.scatter([d] * len(p), p, color=f"C{i}", alpha=0.7, label=f"head size {d}: seeds")
    right.plot(head_sizes, [np.mean([r[1] for r in results[d]]) for d in head_sizes], "k-",
               marker="D", label="mean over seeds")
    right.axhline(0.5, ls=":", color="0.4", label="guessing (0.5)")
    right.axhline(0.9, ls="--", color="0.4", label="learned the dish (> 0.9)")
    right.set(title="Does the model know which dish?", xlabel="head size", xscale="log",
              ylabel="P(right noun after 'the')", ylim=(0.4, 1.05))
    right.set_xticks(list(head_sizes), [str(d) for d in head_sizes])
    right.legend(loc="upper left")
    _place(fig, "head_size_sweep")
    plt.show()
    for d in head_sizes:
        solved = sum(r[1] > 0.9 for r in results[d])
        print(f"head size {d:2d}: {solved} of {len(seeds)} seeds learned the dish")
    if len(seeds) < 30 and all(d in THIRTY_SEED_COUNTS for d in head_sizes):
        print("stored run with seeds=range(30): " + ", ".join(
            f"head size {d}: {THIRTY_SEED_COUNTS[d]} of 30" for d in head_sizes))


@uses_student_code
def head_size_demo(head_class: type[nn.Module], weights_fn: TensorFn, steps: int = 60,
                   seed: int = 0, device: torch.device | str = "cpu") -> None:
    """Slider over log2(head size): one trained model's weights and predictions.

    Without a widget front end, head sizes 1 and 16 as the two rows of one figure."""
    def draw_row(axes: Sequence[plt.Axes], log2_head_size: float) -> None:
        d = 2 ** round(log2_head_size)
        model, _ = trained_model(head_class, d, steps=steps, seed=seed, device=device)
        inputs, _ = toy_corpus(device=device)
        with torch.no_grad():
            weights = head_weights(model.head, model.embed(inputs), weights_fn)
        probs = next_token_probabilities(model)
        for b in range(2):
            labels = token_labels(inputs[b])
            heatmap(axes[b], weights[b], title=f"Head size {d}: weights, sentence {b + 1}",
                    xlabel="key token", ylabel="query token", xticklabels=labels,
                    yticklabels=labels, cmap="Blues", vmin=0, vmax=1, annotate=True,
                    colorbar_label="weight")
        t = int((inputs[0] == VOCAB.index("the")).nonzero()[0])
        nouns = [VOCAB.index("chicken"), VOCAB.index("beef")]
        heatmap(axes[2], probs[:, t, nouns], title=f"Head size {d}: next word after 'the'",
                xlabel="next word", ylabel="sentence", xticklabels=["chicken", "beef"],
                yticklabels=["man ...", "woman ..."], cmap="Greens", vmin=0, vmax=1,
                annotate=True, colorbar_label="probability")

    def draw(log2_head_size: float) -> None:
        fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
        draw_row(axes, log2_head_size)

    if not widget_frontend_available():
        fig, axes = plt.subplots(2, 3, figsize=(16, 7.6))
        for row, log2_head_size in zip(axes, (0.0, 4.0), strict=True):
            draw_row(row, log2_head_size)
        _place(fig, "head_size_demo")
        plt.show()
        return
    slider_demo(draw, sliders={"log2_head_size": (0.0, 4.0, 1.0, 2.0)},
                static_settings=[{"log2_head_size": 0.0}, {"log2_head_size": 4.0}])


# ---- Section 6: inside the head, and positions -------------------------------------------


@torch.no_grad()
@uses_student_code
def plot_queries_and_keys(model: NextTokenModel) -> None:
    """The head's queries and keys for both sentences, where they differ, and the scores of
    the query "the" against every key."""
    device = next(model.parameters()).device
    inputs, _ = toy_corpus(device=device)
    h = model.embed(inputs)
    q, k = model.head.query(h), model.head.key(h)
    t = int((inputs[0] == VOCAB.index("the")).nonzero()[0])
    scores = (q[:, t].unsqueeze(1) @ k.transpose(-2, -1)).squeeze(1) / math.sqrt(q.shape[-1])
    scores[:, t + 1:] = float("nan")  # the future: masked
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8), gridspec_kw={"width_ratios": [1, 1, 1, 1.2]})
    labels = token_labels(inputs[0])
    both = [f"{i}: {VOCAB[int(a)]}/{VOCAB[int(b)]}" if a != b else f"{i}: {VOCAB[int(a)]}"
            for i, (a, b) in enumerate(zip(inputs[0], inputs[1], strict=True))]
    limit = float(torch.cat([q, k]).abs().max())
    common = {"xlabel": "dimension of the head", "cmap": "coolwarm", "vmin": -limit,
              "vmax": limit, "colorbar_label": "value"}
    heatmap(axes[0], q[0], title="Queries q (sentence 1)", ylabel="token", yticklabels=labels,
             **common)
    heatmap(axes[1], k[0], title="Keys k (sentence 1)", ylabel="token", yticklabels=labels,
             **common)
    heatmap(axes[2], k[1] - k[0], title="Keys: sentence 2 − sentence 1", ylabel="token",
             yticklabels=both, **common)
    heatmap(axes[3], scores, title=f"Scores of the query '{VOCAB[int(inputs[0, t])]}'",
             xlabel="key token", ylabel="sentence", xticklabels=both,
             yticklabels=["1: man ...", "2: woman ..."], cmap="coolwarm", annotate=True,
             colorbar_label="q·k / √d")
    _place(fig, "queries_and_keys")
    plt.show()


ORDER_VOCAB: tuple[str, ...] = ("<s>", "man", "woman", "and", "ordered", "chicken", "beef", ".")
ORDER_SENTENCES: tuple[str, ...] = ("man and woman ordered chicken .",
                                    "woman and man ordered beef .")


@uses_student_code
def positions_experiment(head_class: type[nn.Module], head_size: int = 8, steps: int = 100,
                         seed: int = 6, device: torch.device | str = "cpu",
                         trained: tuple[NextTokenModel, list[float]] | None = None) -> dict:
    """Learned positions or none, on the two-sentence corpus and on one where order matters.

    Prints the final losses and the probability of the right word where each corpus needs
    the past; returns the trained models and histories. ``trained``: the model without
    positions on the two sentences, if it was trained already with the same settings."""
    runs = {}
    for corpus, sentences, vocab, word in (
            ("chicken/beef", SENTENCES, VOCAB, "the"),
            ("man and woman", ORDER_SENTENCES, ORDER_VOCAB, "ordered")):
        for positions in (False, True):
            if trained is not None and corpus == "chicken/beef" and not positions:
                model, history = trained
            else:
                model, history = train_next_token_model(
                    head_class, head_size=head_size, steps=steps, seed=seed, device=device,
                    positions=positions, sentences=sentences, vocab=vocab, progress=False)
            runs[corpus, positions] = {"model": model, "history": history,
                                       "right": prediction_after(model, word), "word": word}
    print(f"{'corpus':<15}{'positions':<11}{'final loss':>11}   P(right next word) per sentence")
    for (corpus, positions), run in runs.items():
        right = ", ".join(f"{p:.2f}" for p in run["right"])
        print(f"{corpus:<15}{'learned' if positions else 'none':<11}{run['history'][-1]:>11.2f}"
              f"   after '{run['word']}': {right}")
    return runs


@torch.no_grad()
def plot_positions(runs: dict) -> None:
    """Loss with and without learned positions on the order corpus, and the learned table."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.6),
                                      gridspec_kw={"width_ratios": [1, 1.3]})
    for positions, style in ((False, "--"), (True, "-")):
        run = runs["man and woman", positions]
        left.plot(run["history"], style, label="learned positions" if positions else
                  "no positions")
    n_tokens = toy_corpus(ORDER_SENTENCES, ORDER_VOCAB)[0].shape[1]
    left.axhline(math.log(2) / n_tokens, ls=":", color="0.4", label="best possible")
    left.set(title="'man and woman ordered ...': training", xlabel="step",
             ylabel="cross-entropy (nats)")
    left.legend()
    model = runs["man and woman", True]["model"]
    table = model.position_embedding.weight
    limit = float(table.abs().max())
    heatmap(right, table, title="The learned position embeddings", xlabel="embedding dimension",
             ylabel="position", yticklabels=[str(t) for t in range(table.shape[0])],
             cmap="coolwarm", vmin=-limit, vmax=limit, colorbar_label="value")
    _place(fig, "positions")
    plt.show()


# ---- Section 7: kinds of attention ----------------------------------------------------------


def plot_attention_kinds() -> None:
    """Which connections exist in encoder self-, decoder self- and cross-attention: the
    cross-attention matrix has one column per token of the other sequence (7 here, against
    5 queries), so it is not square."""
    words = ["<s>", "man", "ordered", "the", "chicken"]
    source = ["l'", "homme", "a", "commandé", "le", "poulet", "."]
    T, S = len(words), len(source)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [T, T, S]})
    common = {"cmap": ALLOWED_COLOURS, "vmin": 0, "vmax": 1, "colorbar_label": "allowed",
              "yticklabels": words}
    images = [
        heatmap(axes[0], torch.ones(T, T), title=f"Encoder self-attention: {T} × {T}",
                xlabel="key (same sequence)", ylabel="query", xticklabels=words, **common),
        heatmap(axes[1], causal_pattern(T).float(), title=f"Decoder (causal): {T} × {T}",
                xlabel="key (same sequence)", ylabel="query", xticklabels=words, **common),
        heatmap(axes[2], torch.ones(T, S), title=f"Cross-attention: {T} × {S}",
                xlabel="key (another sequence:\nthe encoder's output)", ylabel="query",
                xticklabels=source, **common)]
    for image in images:
        allowed_ticks(image)
    _place(fig, "attention_kinds")
    plt.show()


def allowed_ticks(image: mpl.image.AxesImage, labels: Sequence[str] = ("no", "yes")) -> None:
    """Label the two halves of the colour bar of a 0/1 map."""
    image.colorbar.set_ticks([0.25, 0.75], labels=list(labels))

"""Tutorial 03: head bookkeeping pictures, cost tables and the two-offset copy task.

Nothing here splits or merges heads for the student: every picture of a split or of a
trained model is drawn by the student's own ``split_heads`` / ``MultiHeadSelfAttention``,
and the pictures drawn *before* the exercises use PyTorch's ``nn.MultiheadAttention``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from helpers.exercises import uses_student_code
from helpers.plotting import heatmap, to_numpy
from helpers.training import count_parameters, single_thread
from helpers.widgets import progress_bar

AttentionClass = Callable[[int, int], nn.Module]


# ---- Section 1: two relations at once -------------------------------------------------------

def offset_targets(T: int, offset: int) -> torch.Tensor:
    """The ideal attention map of "look ``offset`` places back": ones at (t, t - offset)."""
    target = torch.zeros(T, T)
    rows = torch.arange(offset, T)
    target[rows, rows - offset] = 1.0
    return target


def plot_two_relations(T: int = 10, offsets: tuple[int, int] = (1, 4)) -> None:
    """What two specialised heads would do, next to the best a single head can do."""
    k_1, k_2 = offsets
    first, second = offset_targets(T, k_1), offset_targets(T, k_2)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    common = dict(xlabel="key position (attended to)", ylabel="query position", vmin=0, vmax=1,
                  colorbar_label="attention weight")
    both = first + second
    shared = both / both.sum(dim=1, keepdim=True).clamp_min(1.0)
    heatmap(axes[0], first, title=f"Head A: {k_1} back", **common)
    heatmap(axes[1], second, title=f"Head B: {k_2} back", **common)
    heatmap(axes[2], shared, title="One head for both: split 50/50", **common)
    plt.show()


# ---- Section 2: the bookkeeping of heads ----------------------------------------------------

def coded_sequence(T: int = 4, d_model: int = 6, batch: int = 1) -> torch.Tensor:
    """A (batch, T, d_model) tensor whose entries spell out where they live.

    Entry ``[b, t, c]`` is ``1000 b + 10 t + c``: the tens digit is the position, the unit
    digit the channel. After any reshaping you can read off where a number came from.
    """
    if T > 9 or d_model > 10:
        raise ValueError(f"coded_sequence reads positions and channels off single digits: "
                         f"use T <= 9 and d_model <= 10, got T={T}, d_model={d_model}")
    b = torch.arange(batch).view(-1, 1, 1)
    t = torch.arange(T).view(1, -1, 1)
    c = torch.arange(d_model).view(1, 1, -1)
    return (1000 * b + 10 * t + c).float()


def _draw_codes(ax: plt.Axes, matrix: torch.Tensor, title: str, xlabel: str, ylabel: str,
                colours: np.ndarray | None = None, block: int | None = None) -> None:
    data = to_numpy(matrix)
    shown = colours if colours is not None else data
    ax.imshow(shown, cmap="tab10", vmin=0, vmax=9, aspect="auto", alpha=0.55)
    for (i, j), value in np.ndenumerate(data):
        ax.text(j, i, f"{int(value):02d}", ha="center", va="center", fontsize=10)
    if block:
        for edge in range(block, data.shape[1], block):
            ax.axvline(edge - 0.5, color="black", lw=2)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.set_xticks(range(data.shape[1]))
    ax.set_yticks(range(data.shape[0]))
    ax.grid(False)


def _position_colours(matrix: torch.Tensor) -> np.ndarray:
    """Colour each coded entry by the position it came from (its tens digit)."""
    return (to_numpy(matrix) // 10 % 10).astype(float)


def plot_head_layout(T: int = 4, d_model: int = 6, n_heads: int = 3) -> None:
    """The input with its channels grouped into heads, and the reshape-only trap."""
    dh = d_model // n_heads
    x = coded_sequence(T, d_model)
    trap = x.reshape(1, n_heads, T, dh)  # the mistake: no transpose
    fig, axes = plt.subplots(1, 1 + n_heads, figsize=(4.0 + 2.6 * n_heads, 3.4),
                             gridspec_kw={"width_ratios": [d_model] + [dh + 0.6] * n_heads})
    _draw_codes(axes[0], x[0], f"x: (T={T}, d_model={d_model})", "channel", "position t",
                colours=_position_colours(x[0]), block=dh)
    for h in range(n_heads):
        _draw_codes(axes[1 + h], trap[0, h], f"'head' {h}", "channel in head",
                    "row", colours=_position_colours(trap[0, h]))
    fig.suptitle("Reshaping straight to (B, H, T, d_head), no transpose. Colour = the position "
                 "an entry came from", fontsize=11)
    plt.show()


@uses_student_code
def plot_split_heads(split_heads: Callable[..., torch.Tensor], T: int = 4, d_model: int = 6,
                     n_heads: int = 3) -> None:
    """The student's ``split_heads`` applied to the coded sequence, one panel per head."""
    x = coded_sequence(T, d_model)
    heads = split_heads(x, n_heads)
    dh = heads.shape[-1]
    fig, axes = plt.subplots(1, 1 + n_heads, figsize=(4.0 + 2.6 * n_heads, 3.4),
                             gridspec_kw={"width_ratios": [d_model] + [dh + 0.6] * n_heads})
    _draw_codes(axes[0], x[0], f"x: (T={T}, d_model={d_model})", "channel", "position t",
                colours=_position_colours(x[0]), block=dh)
    for h in range(n_heads):
        _draw_codes(axes[1 + h], heads[0, h], f"your head {h}", "channel in head", "position t",
                    colours=_position_colours(heads[0, h]))
    fig.suptitle("Your split_heads: each head should keep every position in its own row "
                 "and take one block of channels", fontsize=11)
    plt.show()


# ---- Section 3: what nn.MultiheadAttention returns ------------------------------------------

def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) boolean mask, True = may attend: each position sees itself and the past."""
    return torch.tril(torch.ones(T, T, dtype=torch.bool, device=device))


def plot_builtin_heads(T: int = 8, d_model: int = 16, n_heads: int = 4, seed: int = 0) -> None:
    """Per-head weights of an untrained ``nn.MultiheadAttention`` with a causal mask."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    attention = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
    x = torch.randn(1, T, d_model, generator=generator)
    # nn.MultiheadAttention's boolean attn_mask means True = NOT allowed: invert ours.
    not_allowed = ~causal_mask(T)
    with torch.no_grad():
        _, weights = attention(x, x, x, attn_mask=not_allowed, need_weights=True,
                               average_attn_weights=False)
    fig, axes = plt.subplots(1, n_heads, figsize=(3.3 * n_heads, 3.2))
    for h, ax in enumerate(axes):
        heatmap(ax, weights[0, h], title=f"head {h}", xlabel="key position",
                ylabel="query position", vmin=0, vmax=1,
                colorbar_label="attention weight")
    fig.suptitle("nn.MultiheadAttention, untrained, causal mask: one (T, T) map per head",
                 fontsize=11)
    plt.show()


# ---- Section 4: cost ------------------------------------------------------------------------

def attention_cost(d_model: int, n_heads: int, T: int, *, wide: bool = False
                   ) -> tuple[int, int]:
    """Parameters and multiply-adds of one self-attention layer on T positions.

    ``wide=False``: the transformer's own convention (Vaswani et al. 2017), each head of width
    d_model // n_heads.
    ``wide=True``: the "wide heads" variant, each head of full width d_model, so the
    query/key/value maps go d_model -> n_heads * d_model and the output map back.
    """
    width = d_model * n_heads if wide else d_model  # total width of all heads together
    params = 3 * d_model * width + width * d_model + d_model  # Q, K, V, output (+ its bias)
    projections = 4 * T * d_model * width
    scores_and_mixing = 2 * T * T * width  # Q K^T and weights @ V, summed over heads
    return params, projections + scores_and_mixing


@uses_student_code
def print_cost_table(attention_cls: AttentionClass | None = None, d_model: int = 64,
                     T: int = 128, heads: tuple[int, ...] = (1, 2, 4, 8)) -> None:
    """A table of parameters and multiply-adds for both conventions.

    With ``attention_cls`` (the student's class) the parameter count of an actual
    instance is shown as well.
    """
    header = f"{'heads':>5} | {'params (d/H)':>12} | {'MACs (d/H)':>11} | " \
             f"{'params (wide)':>13} | {'MACs (wide)':>11}"
    if attention_cls is not None:
        header += f" | {'your class':>10}"
    print(f"d_model = {d_model}, T = {T}")
    print(header)
    print("-" * len(header))
    for n_heads in heads:
        params, macs = attention_cost(d_model, n_heads, T)
        wide_params, wide_macs = attention_cost(d_model, n_heads, T, wide=True)
        row = f"{n_heads:>5} | {params:>12,} | {macs:>11,} | {wide_params:>13,} | {wide_macs:>11,}"
        if attention_cls is not None:
            row += f" | {count_parameters(attention_cls(d_model, n_heads)):>10,}"
        print(row)


# ---- Section 5: the two-offset copy task ----------------------------------------------------

def make_offset_copy_data(n: int, T: int = 12, vocab: int = 8, offsets: tuple[int, int] = (1, 4),
                          seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences and, per position, the two tokens ``offsets`` places back.

    Returns ``X`` ``(n, T)`` int64 tokens in ``[0, vocab)`` and ``Y`` ``(n, T, 2)`` int64,
    ``Y[:, t] = (X[:, t - k_1], X[:, t - k_2])``; positions with too little past
    (``t < max(offsets)``) hold -100, the value ``F.cross_entropy`` ignores.
    """
    k_1, k_2 = offsets
    if not 0 < k_1 < T or not 0 < k_2 < T:
        raise ValueError(f"offsets must lie in 1..T-1, got {offsets} for T={T}")
    generator = torch.Generator().manual_seed(seed)
    X = torch.randint(0, vocab, (n, T), generator=generator)
    Y = torch.full((n, T, 2), -100, dtype=torch.long)
    start = max(k_1, k_2)
    for slot, k in enumerate(offsets):
        Y[:, start:, slot] = X[:, start - k:T - k]
    return X, Y


class OffsetCopier(nn.Module):
    """Token + learned position embeddings, ONE self-attention layer, a linear readout.

    The attention layer is built from the class you pass (the student's
    ``MultiHeadSelfAttention``). There is no residual path, so everything the readout
    knows about the past must come through the attention heads.
    """

    def __init__(self, attention_cls: AttentionClass, n_heads: int, vocab: int = 8, T: int = 12,
                 d_model: int = 32) -> None:
        super().__init__()
        self.vocab = vocab
        self.token_embedding = nn.Embedding(vocab, d_model)
        self.position_embedding = nn.Embedding(T, d_model)
        self.attention = attention_cls(d_model, n_heads)
        self.readout = nn.Linear(d_model, 2 * vocab)  # two answers: token k_1 and k_2 back
        self.register_buffer("mask", causal_mask(T))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T = x.shape[1]
        positions = torch.arange(T, device=x.device)
        h = self.token_embedding(x) + self.position_embedding(positions)
        out, weights = self.attention(h, mask=self.mask[:T, :T])
        logits = self.readout(out).unflatten(-1, (2, self.vocab))  # (B, T, 2, vocab)
        return logits, weights


@torch.no_grad()
def copy_accuracy(model: OffsetCopier, X: torch.Tensor, Y: torch.Tensor) -> float:
    """Fraction of scored positions where BOTH copied tokens are right."""
    was_training = model.training
    model.eval()
    logits, _ = model(X)
    model.train(was_training)
    scored = Y[..., 0] >= 0
    both = (logits.argmax(-1) == Y).all(-1)
    return both[scored].float().mean().item()


@uses_student_code
def train_offset_copier(attention_cls: AttentionClass, n_heads: int, *, steps: int = 40,
                        lr: float = 1e-2, batch_size: int = 128, T: int = 12, vocab: int = 8,
                        offsets: tuple[int, int] = (1, 4), d_model: int = 32, seed: int = 0,
                        device: torch.device | str = "cpu", eval_every: int = 5,
                        ) -> tuple[OffsetCopier, dict[str, list[float]]]:
    """Train an :class:`OffsetCopier` with Adam on fresh copies of a fixed training set.

    Returns the model and a history with ``step``, ``train_loss`` (per step) and
    ``val_acc`` (every ``eval_every`` steps, with ``val_step``).
    """
    with single_thread():  # tiny tensors: one thread is faster than several
        return _train_offset_copier(attention_cls, n_heads, steps, lr, batch_size, T, vocab,
                                    offsets, d_model, seed, device, eval_every)


def _train_offset_copier(attention_cls, n_heads, steps, lr, batch_size, T, vocab, offsets,
                         d_model, seed, device, eval_every):
    X, Y = make_offset_copy_data(2048, T, vocab, offsets, seed=seed)
    X_val, Y_val = make_offset_copy_data(512, T, vocab, offsets, seed=seed + 1)
    X, Y, X_val, Y_val = (t.to(device) for t in (X, Y, X_val, Y_val))
    torch.manual_seed(seed)
    model = OffsetCopier(attention_cls, n_heads, vocab, T, d_model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"train_loss": [], "val_step": [], "val_acc": []}
    bar = progress_bar(range(1, steps + 1), desc=f"{n_heads} head(s)", leave=False)
    for step in bar:
        idx = torch.randint(0, len(X), (batch_size,), generator=generator).to(device)
        logits, _ = model(X[idx])
        loss = F.cross_entropy(logits.reshape(-1, vocab), Y[idx].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history["train_loss"].append(loss.item())
        if step % eval_every == 0 or step == steps:
            history["val_step"].append(step)
            history["val_acc"].append(copy_accuracy(model, X_val, Y_val))
            bar.set_postfix(loss=f"{loss.item():.3f}", val_acc=f"{history['val_acc'][-1]:.2f}")
    model.eval()
    return model, history


# One head trained ten times longer than the notebook's 40 steps: the validation accuracy of
# train_offset_copier(<the solution of Exercise 3>, n_heads=1, steps=400, eval_every=50),
# seed 0, on a CPU. About 7 s of CPU time: too much for the notebook's 10-second budget, so
# the notebook prints it; tests/test_demos_multi_head_attention.py reruns it.
ONE_HEAD_400_STEPS: dict[str, list[float]] = {
    "val_step": [50, 100, 150, 200, 250, 300, 350, 400],
    "val_acc": [0.197, 0.236, 0.215, 0.255, 0.44, 0.813, 0.95, 0.991],
}


def print_long_run(history: dict[str, list[float]] | None = None) -> None:
    """The stored 400-step run of one head (or ``history``), as a small table."""
    history = ONE_HEAD_400_STEPS if history is None else history
    print("1 head, 400 steps (a stored run of this model, data and seed):")
    print("step          " + "".join(f"{step:>6}" for step in history["val_step"]))
    print("both right    " + "".join(f"{acc:>6.2f}" for acc in history["val_acc"]))


def plot_copy_training(histories: dict[str, dict[str, list[float]]], vocab: int = 8) -> None:
    """Loss and validation accuracy of several runs (e.g. one head vs two heads)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))
    for label, history in histories.items():
        left.plot(range(1, len(history["train_loss"]) + 1), history["train_loss"], label=label)
        right.plot(history["val_step"], history["val_acc"], marker="o", ms=3, label=label)
    left.set(title="Training loss", xlabel="step", ylabel="cross-entropy (per token)")
    left.legend()
    right.axhline(1 / vocab**2, ls=":", color="0.4", label="guessing both")
    right.set(title="Both tokens copied correctly", xlabel="step", ylabel="validation accuracy",
              ylim=(0, 1.02))
    right.legend()
    plt.show()


def _mean_maps(model: OffsetCopier, X: torch.Tensor) -> torch.Tensor:
    """Each head's attention map averaged over the sequences in X: (H, T, T)."""
    device = next(model.parameters()).device
    with torch.no_grad():
        _, weights = model(X.to(device))
    return weights.mean(dim=0)


def _offset_weight(mean_map: torch.Tensor, k: int, skip: int) -> float:
    """Mean weight a (T, T) map puts k places back, over query positions t >= skip."""
    T = mean_map.shape[-1]
    on_offset = offset_targets(T, k).to(mean_map.device).bool()
    on_offset[:skip] = False
    return float(mean_map[on_offset].mean())


@uses_student_code
def plot_head_maps(models: dict[str, OffsetCopier], X: torch.Tensor) -> None:
    """Every head of every model, its weights averaged over the sequences in ``X``."""
    panels = [(label, h, maps[h]) for label, model in models.items()
              for maps in [_mean_maps(model, X)] for h in range(maps.shape[0])]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.9), squeeze=False)
    for ax, (label, h, mean_map) in zip(axes[0], panels, strict=True):
        heatmap(ax, mean_map, title=f"{label}: head {h}", vmin=0, vmax=1,
                xlabel="key position (attended to)", ylabel="query position",
                colorbar_label="mean attention weight")
    fig.suptitle(f"Attention of each head, averaged over {len(X)} sequences", fontsize=11)
    plt.show()


@uses_student_code
def head_offset_table(models: dict[str, OffsetCopier], X: torch.Tensor,
                      offsets: tuple[int, int] = (1, 4)) -> None:
    """Print, for each head, its mean weight on each offset (over the scored positions).

    One decimal: trained weights differ in the last digits between CPUs."""
    for label, model in models.items():
        maps = _mean_maps(model, X)
        for h in range(maps.shape[0]):
            parts = [f"{k} back: {_offset_weight(maps[h], k, max(offsets)):.1f}" for k in offsets]
            print(f"{label}, head {h}: mean weight " + ", ".join(parts))


def scale_of_scores(d_head: int, n: int = 20000, seed: int = 0) -> tuple[float, float]:
    """Std of q·k for random unit-variance q, k of length ``d_head``, before and after /sqrt."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(n, d_head, generator=generator)
    k = torch.randn(n, d_head, generator=generator)
    dots = (q * k).sum(-1)
    return dots.std().item(), (dots / math.sqrt(d_head)).std().item()

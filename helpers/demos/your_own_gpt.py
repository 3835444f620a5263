"""Tutorial 09: the sonnets as batches, a bigram baseline, figures, and the stopwatch for
generation.

Nothing here is a model: the GPT, its training loop and its ``generate`` are the student's.
The functions that run them take them as arguments.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from torch import nn

from helpers.demos.generation_and_cost import CORPUS, CharTokenizer, load_corpus
from helpers.exercises import uses_student_code
from helpers.training import single_thread

Batch = tuple[torch.Tensor, torch.Tensor]
# The notebook's GPT after 2,000 steps on the sonnets (written by bench/gpt_long_run.py).
TRAINED_WEIGHTS = CORPUS.parent / "your_own_gpt_sonnets.pt"


# ---- Section 1: the text ---------------------------------------------------------------------

def load_sonnets() -> tuple[str, CharTokenizer]:
    """Shakespeare's sonnets (shipped in ``helpers/data``) and a character tokenizer."""
    return load_corpus()


def split_text(data: torch.Tensor, held_out: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The first part of the text for training, the last ``held_out`` share for measuring."""
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must lie between 0 and 1, got {held_out}")
    cut = int(len(data) * (1 - held_out))
    return data[:cut], data[cut:]


def batch_sampler(data: torch.Tensor, block_size: int, batch_size: int,
                  seed: int = 0) -> Callable[[], Batch]:
    """``get_batch()``: random windows of ``block_size`` tokens and the same windows shifted
    by one (the next token at every position), from a generator of its own."""
    if len(data) <= block_size + 1:
        raise ValueError(f"the text needs more than {block_size + 1} tokens, has {len(data)}")
    generator = torch.Generator().manual_seed(seed)

    def get_batch() -> Batch:
        starts = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
        offsets = starts[:, None] + torch.arange(block_size)
        return data[offsets], data[offsets + 1]

    return get_batch


def windows(data: torch.Tensor, block_size: int, max_windows: int | None = None) -> Batch:
    """Consecutive, non-overlapping windows of the text and their next tokens: every
    character of ``data`` (up to ``max_windows`` windows) is scored once."""
    count = (len(data) - 1) // block_size
    if count < 1:
        raise ValueError(f"the text needs more than {block_size} tokens, has {len(data)}")
    count = min(count, max_windows) if max_windows else count
    offsets = torch.arange(count)[:, None] * block_size + torch.arange(block_size)
    return data[offsets], data[offsets + 1]


@torch.no_grad()
@uses_student_code
def mean_loss(model: nn.Module, batch: Batch, chunk: int = 64) -> float:
    """The model's cross-entropy (nats per character) on a batch of windows, without
    gradients; ``model(tokens)`` returns ``(logits, caches)``."""
    inputs, targets = batch
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(inputs), chunk):
        logits, _ = model(inputs[start:start + chunk])
        total += F.cross_entropy(logits.flatten(0, 1), targets[start:start + chunk].flatten(),
                                 reduction="sum").item()
    model.train(was_training)
    return total / targets.numel()


def bigram_losses(train: torch.Tensor, held_out: torch.Tensor, vocab_size: int
                  ) -> dict[str, float]:
    """The cross-entropy of the bigram model (how often each character follows each other
    one in the training text, plus one) on the training and the held-out text."""
    counts = torch.ones(vocab_size, vocab_size, dtype=torch.float64)
    counts.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1, dtype=torch.float64),
                      accumulate=True)
    log_p = torch.log(counts / counts.sum(dim=1, keepdim=True))
    return {name: float(-log_p[text[:-1], text[1:]].mean())
            for name, text in (("train", train), ("held_out", held_out))}


# ---- Section 2: the mask with a cache -------------------------------------------------------

def plot_cache_masks(t: int = 4, T: int = 3) -> None:
    """Which keys each new query may read: T new positions after t cached ones. Left, a
    triangle anchored at the top left (PyTorch's ``is_causal=True``); right, the one a
    cache needs, shifted right by t."""
    rows = np.arange(T)[:, None]
    columns = np.arange(t + T)[None, :]
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
    for ax, allowed, title in (
            (axes[0], columns <= rows, "Top-left triangle (is_causal=True): wrong here"),
            (axes[1], columns <= rows + t, f"Shifted by the cache: query i reads keys ≤ {t} + i")):
        ax.imshow(allowed, cmap="Blues", vmin=-0.3, vmax=1.2, aspect="equal")
        ax.axvline(t - 0.5, color="C3", lw=2, label=f"end of the cache (t = {t})")
        ax.set_xticks(range(t + T), [f"c{j}" for j in range(t)] + [f"n{j}" for j in range(T)])
        ax.set_yticks(range(T), [f"n{i}" for i in range(T)])
        ax.set(title=title, xlabel="key: cached (c) and new (n) positions",
               ylabel="query (new position)")
        for i in range(T):
            for j in range(t + T):
                ax.text(j, i, "✓" if allowed[i, j] else "", ha="center", va="center")
        ax.legend(loc="lower left", fontsize=8)
    plt.show()


# ---- Section 3: the block -------------------------------------------------------------------

def plot_gelu() -> None:
    """GELU against ReLU: the smooth non-linearity GPT's MLP uses."""
    x = torch.linspace(-4, 3, 300)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(x.numpy(), F.relu(x).numpy(), "--", color="0.5", label="ReLU: max(0, x)")
    ax.plot(x.numpy(), F.gelu(x).numpy(), color="C0", label="GELU: x · Φ(x)")
    ax.axhline(0, color="0.85", lw=1, zorder=0)
    ax.set(title="The MLP's non-linearity", xlabel="input x", ylabel="output")
    ax.legend()
    plt.show()


# ---- Section 4: the model -------------------------------------------------------------------

def draw_gpt(n_layers: int = 2) -> None:
    """The model as a stack: embeddings in, a residual stream through the blocks, logits
    out, with the shape at every stage."""
    stages = [("tokens", "(B, T) integers"),
              ("token_embedding + position_embedding", "(B, T, d_model)"),
              *[(f"blocks[{i}]: h = x + attn(ln_1(x)); h + mlp(ln_2(h))", "(B, T, d_model)")
                for i in range(n_layers)],
              ("ln_f", "(B, T, d_model)"),
              ("head", "(B, T, vocab_size) logits")]
    fig, ax = plt.subplots(figsize=(8, 0.75 * len(stages) + 0.6))
    for i, (label, shape) in enumerate(stages):
        y = len(stages) - 1 - i
        colour = "C1" if label.startswith("blocks") else "C0"
        ax.add_patch(FancyBboxPatch((0.05, y + 0.15), 0.6, 0.55, boxstyle="round,pad=0.02",
                                    facecolor=colour, alpha=0.25, edgecolor=colour))
        ax.text(0.35, y + 0.42, label, ha="center", va="center", fontsize=9)
        ax.text(0.7, y + 0.42, shape, ha="left", va="center", fontsize=9, color="0.3")
        if i:
            ax.add_patch(FancyArrowPatch((0.35, y + 1.13), (0.35, y + 0.72), arrowstyle="-|>",
                                         mutation_scale=12, color="0.4"))
    ax.set(xlim=(0, 1), ylim=(-0.1, len(stages)), title="Your GPT, from tokens to logits")
    ax.axis("off")
    plt.show()


def reset_weights(model: nn.Module, seed: int = 0) -> None:
    """Give every layer PyTorch's default initial weights, drawn from ``seed`` layer by layer
    in the order of their names: the same start for every model with the course's member
    names, whatever order its ``__init__`` built them in or however it set them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _, module in sorted(model.named_modules(), key=lambda item: item[0]):
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def load_trained(model: nn.Module) -> nn.Module:
    """Put the weights of the 2,000-step run (``bench/gpt_long_run.py``) into ``model``, a GPT
    of the notebook's sizes with the course's member names; returns it in evaluation mode.
    Only your architecture decides what these weights compute."""
    state = torch.load(TRAINED_WEIGHTS, map_location="cpu", weights_only=True)
    mine = model.state_dict()
    missing, extra = sorted(set(state) - set(mine)), sorted(set(mine) - set(state))
    if missing or extra:
        raise ValueError(
            "the trained weights do not fit this model: it lacks "
            f"{', '.join(missing[:4]) or 'nothing'} and has "
            f"{', '.join(extra[:4]) or 'nothing'} more; build GPT(vocab_size, block_size, "
            "d_model, n_heads, n_layers) with the member names of the exercises")
    for name, tensor in state.items():
        if tuple(mine[name].shape) != tuple(tensor.shape):
            raise ValueError(f"the trained {name} has shape {tuple(tensor.shape)}, this "
                             f"model's {tuple(mine[name].shape)}: build the GPT with the "
                             "notebook's sizes")
    model.load_state_dict(state)  # copied into the model's own tensors: its dtype and device
    return model.eval()


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per part of a GPT built with the member names of this tutorial."""
    parts: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        head = name.split(".")[0]
        if head == "blocks":
            inner = name.split(".")[2]
            head = "attention" if inner == "attn" else "MLP" if inner == "mlp" else "norms"
        elif head == "ln_f":
            head = "norms"
        parts[head] = parts.get(head, 0) + parameter.numel()
    return parts


# ---- Section 5: training --------------------------------------------------------------------

def _visible(char: str) -> str:
    """A character as a tick label: a space and a line break would be invisible."""
    return {" ": "␣", "\n": "\\n"}.get(char, char)


@torch.no_grad()
@uses_student_code
def plot_next_character(model: nn.Module, tokenizer: CharTokenizer, context: str,
                        train: torch.Tensor, n_shown: int = 12) -> None:
    """The model's distribution of the character after ``context`` next to the bigram
    model's (which reads only the last character), for the bigram model's favourites."""
    ids = tokenizer.encode(context)[None, :]
    was_training = model.training
    model.eval()
    logits, _ = model(ids)
    model.train(was_training)
    mine = torch.softmax(logits[0, -1].double(), dim=-1)
    follows = train[1:][train[:-1] == ids[0, -1]]
    counts = torch.bincount(follows, minlength=tokenizer.vocab_size).double() + 1
    bigram = counts / counts.sum()
    order = torch.argsort(bigram, descending=True)[:n_shown]
    labels = [_visible(tokenizer.chars[i]) for i in order.tolist()]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(n_shown)
    ax.bar(x - 0.2, bigram[order].numpy(), width=0.4, color="0.6",
           label=f"bigram model (after {_visible(context[-1])!r})")
    ax.bar(x + 0.2, mine[order].numpy(), width=0.4, color="C0", label="your GPT")
    ax.axhline(1 / tokenizer.vocab_size, color="0.3", ls=":", lw=1,
               label=f"uniform: 1/{tokenizer.vocab_size}")
    ax.set_xticks(x, labels)
    ax.set(title=f"The next character after {context[-14:]!r}", xlabel="character",
           ylabel="probability")
    ax.legend()
    plt.show()


def plot_training(losses: Sequence[float], baselines: Mapping[str, float],
                  held_out: float | None = None) -> None:
    """The loss of every training step against the baselines (horizontal lines) and, at
    the end, the held-out loss of the trained model."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="C0", lw=1, alpha=0.5, label="your GPT, each step")
    if len(losses) >= 10:
        smooth = np.convolve(losses, np.ones(10) / 10, mode="valid")
        ax.plot(steps[9:], smooth, color="C0", lw=2, label="your GPT, mean of 10 steps")
    for (label, value), style in zip(baselines.items(), ("--", ":", "-."), strict=False):
        ax.axhline(value, color="0.4", ls=style, lw=1.2, label=f"{label}: {value:.2f}")
    if held_out is not None:
        ax.plot(steps[-1], held_out, "D", color="C3", ms=7, label="your GPT on held-out text")
    ax.set(title="Training your GPT on the sonnets", xlabel="step",
           ylabel="cross-entropy (nats per character)")
    ax.legend(fontsize=8)
    plt.show()


# ---- Section 6: writing, and what the cache saves -------------------------------------------

class StepTimer(nn.Module):
    """Wraps a model and notes the process's CPU time at every call, so that the time of
    each generated token can be read off any ``generate``: one model call per new token.
    CPU time, not the clock: a moment in which the machine runs something else does not
    count."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.block_size = getattr(model, "block_size", None)
        self.starts: list[float] = []

    def forward(self, tokens: torch.Tensor, caches: Any = None) -> Any:
        self.starts.append(time.process_time())
        return self.model(tokens) if caches is None else self.model(tokens, caches)


@dataclass
class GenerationTimes:
    positions: np.ndarray  # length of the text when the token was generated
    without_cache: np.ndarray  # CPU seconds per generated token
    with_cache: np.ndarray
    same_tokens: bool


@uses_student_code
def time_generation(generate_fn: Callable[..., torch.Tensor], model: nn.Module,
                    prompt: torch.Tensor, n_tokens: int, seed: int = 0) -> GenerationTimes:
    """Time every token of ``generate_fn`` with and without the cache (same seed), on one
    CPU thread: the CPU time from one model call to the next is the time of one token."""
    times, outputs = {}, {}
    with single_thread():
        for use_cache in (False, True):  # a first, short run: the first calls are slower
            generate_fn(model, prompt, min(4, n_tokens), use_cache=use_cache)
        for use_cache in (False, True):
            timer = StepTimer(model)
            out = generate_fn(timer, prompt, n_tokens, generator=torch.Generator().manual_seed(
                seed), use_cache=use_cache)
            end = time.process_time()
            if len(timer.starts) != n_tokens:
                raise ValueError(f"generate called the model {len(timer.starts)} times for "
                                 f"{n_tokens} tokens: one call per new token is expected")
            times[use_cache] = np.diff(np.array([*timer.starts, end]))
            outputs[use_cache] = out
    positions = np.arange(prompt.shape[1], prompt.shape[1] + n_tokens)
    return GenerationTimes(positions, times[False], times[True],
                           bool(torch.equal(outputs[False], outputs[True])))


def binned(times: GenerationTimes, bins: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median CPU time per token (seconds) in ``bins`` stretches of the text. Returns
    (positions, without cache, with cache)."""
    n = len(times.positions) // bins * bins
    def median(values: np.ndarray) -> np.ndarray:
        return np.median(values[:n].reshape(bins, -1), axis=1)
    return (times.positions[:n].reshape(bins, -1).mean(axis=1), median(times.without_cache),
            median(times.with_cache))


def quarters(times: GenerationTimes) -> dict[str, float]:
    """Median CPU time per token (seconds) over the first and the last quarter of the
    tokens, without and with the cache: a summary that a moment of load does not move."""
    q = max(1, len(times.positions) // 4)
    return {"without, first": float(np.median(times.without_cache[:q])),
            "without, last": float(np.median(times.without_cache[-q:])),
            "with, first": float(np.median(times.with_cache[:q])),
            "with, last": float(np.median(times.with_cache[-q:]))}


def plot_generation_times(times: GenerationTimes, bins: int = 8) -> None:
    """Time per generated token against the length of the text so far."""
    positions, without, cached = binned(times, bins)
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(positions, without * 1e3, "o-", label="without the cache: the whole text again")
    ax.plot(positions, cached * 1e3, "s-", label="with the cache: the newest token only")
    ax.set(title="Time to generate one more character", xlabel="length of the text so far",
           ylabel="CPU time per token (ms)", ylim=(0, None))
    ax.legend()
    plt.show()


def plot_work(prompt_length: int = 4, n_tokens: int = 8) -> None:
    """Which positions each model call computes while generating, without and with the cache
    (one row per call, one column per position)."""
    width = prompt_length + n_tokens - 1
    calls = np.arange(n_tokens)[:, None]
    columns = np.arange(width)[None, :]
    without = columns < prompt_length + calls
    cached = without & ((calls == 0) | (columns == prompt_length + calls - 1))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, work, title in ((axes[0], without, "Without the cache"),
                            (axes[1], cached, "With the cache")):
        ax.imshow(work, cmap="Blues", vmin=-0.3, vmax=1.2, aspect="equal")
        ax.axvline(prompt_length - 0.5, color="C3", lw=2, label="end of the prompt")
        ax.set(title=f"{title}: {int(work.sum())} positions computed",
               xlabel="position in the text", ylabel="model call (one per new token)")
        ax.legend(loc="lower left", fontsize=8)
    plt.show()


def print_samples(samples: Mapping[str, str], width: int = 66) -> None:
    """Texts under their titles."""
    for title, text in samples.items():
        print(f"--- {title} " + "-" * max(0, width - len(title) - 5))
        print(text)
    print("-" * width)

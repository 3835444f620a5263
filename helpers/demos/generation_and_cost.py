"""Tutorial 07: a small language model that writes, sampling, decoding cost and memory.

The model (:class:`TinyLM`) is a character-level causal transformer built from PyTorch's
own modules, written to be read: token and position embeddings, a stack of
``nn.TransformerEncoderLayer`` with a causal mask, a final norm and a linear read-out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator, NullLocator
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from helpers.exercises import uses_student_code
from helpers.plotting import to_numpy
from helpers.training import single_thread, train_next_token

CORPUS = Path(__file__).resolve().parents[1] / "data" / "shakespeare_sonnets.txt"
Cache = tuple[torch.Tensor, torch.Tensor]
StepFn = Callable[..., tuple[torch.Tensor, Cache]]


# ---- Section 1: the corpus and the model -------------------------------------------------

class CharTokenizer:
    """Characters <-> integer ids, one id per distinct character of a text."""

    def __init__(self, text: str) -> None:
        if not text:
            raise ValueError("CharTokenizer needs a non-empty text to build its vocabulary")
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown}")
        return torch.tensor([self.index[c] for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return "".join(self.chars[i] for i in values)


def load_corpus(path: Path = CORPUS) -> tuple[str, CharTokenizer]:
    """The text shipped in ``helpers/data`` (Shakespeare's sonnets) and its tokenizer."""
    text = path.read_text(encoding="ascii")
    return text, CharTokenizer(text)


class TinyLM(nn.Module):
    """A character-level causal transformer (pre-norm, learned positions)."""

    def __init__(self, vocab_size: int, block_size: int = 32, n_embd: int = 48,
                 n_head: int = 4, n_layer: int = 2) -> None:
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        layer = nn.TransformerEncoderLayer(n_embd, n_head, dim_feedforward=4 * n_embd,
                                           dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, T)`` with ``T <= block_size`` -> next-token logits ``(B, T, V)``."""
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"the model reads at most {self.block_size} tokens, got {T}")
        positions = torch.arange(T, device=idx.device)
        h = self.token_embedding(idx) + self.position_embedding(positions)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)
        h = self.blocks(h, mask=mask, is_causal=True)  # every position reads only its past
        return self.lm_head(self.norm(h))


def random_windows(data: torch.Tensor, block_size: int, batch_size: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of windows of the text and the same windows shifted by one (the targets)."""
    starts = torch.randint(len(data) - block_size - 1, (batch_size,), generator=generator)
    offsets = starts[:, None] + torch.arange(block_size)
    return data[offsets], data[offsets + 1]


def train_tiny_lm(text: str, tokenizer: CharTokenizer, steps: int = 160, batch_size: int = 16,
                  block_size: int = 32, lr: float = 1.2e-2, seed: int = 0,
                  progress: bool = True) -> tuple[TinyLM, list[float]]:
    """Train a :class:`TinyLM` on random windows of ``text`` (AdamW, cross-entropy)."""
    data = tokenizer.encode(text)
    if len(data) <= block_size + 1:
        raise ValueError(f"the text needs more than {block_size + 1} characters")
    with torch.random.fork_rng(devices=[]):  # the rest of the notebook is unaffected
        torch.manual_seed(seed)
        model = TinyLM(tokenizer.vocab_size, block_size=block_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = train_next_token(
        model, lambda: random_windows(data, block_size, batch_size, generator), optimizer,
        steps, progress=progress)
    return model, history


def untrained_model(tokenizer: CharTokenizer, seed: int = 0) -> TinyLM:
    """The same model before training (random weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyLM(tokenizer.vocab_size).eval()


def plot_loss(history: Sequence[float], vocab_size: int) -> None:
    """Training loss per step, with the loss of a uniform guess."""
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.plot(history, label="training loss")
    ax.axhline(math.log(vocab_size), color="0.5", ls="--",
               label=f"uniform guess: ln {vocab_size}")
    ax.set(title="Learning the sonnets, one character at a time", xlabel="step",
           ylabel="cross-entropy (nats)")
    ax.legend()
    plt.show()


@torch.no_grad()
def next_token_logits(model: TinyLM, tokenizer: CharTokenizer, prompt: str) -> torch.Tensor:
    """The model's logits ``(V,)`` for the character after ``prompt``."""
    idx = tokenizer.encode(prompt)[None, -model.block_size:]
    return model(idx)[0, -1]


@torch.no_grad()
@uses_student_code
def generate(model: TinyLM, tokenizer: CharTokenizer, sample_fn: Callable[..., torch.Tensor],
             prompt: str = "\n", n_tokens: int = 200, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0) -> str:
    """Continue ``prompt`` by ``n_tokens`` characters drawn with the student's sampler."""
    generator = torch.Generator().manual_seed(seed)
    idx = tokenizer.encode(prompt)[None]
    for _ in range(n_tokens):
        logits = model(idx[:, -model.block_size:])[:, -1]  # (1, V): only the last position
        token = sample_fn(logits, temperature=temperature, top_k=top_k, generator=generator)
        idx = torch.cat([idx, token.reshape(1, 1).to(idx.dtype)], dim=1)
    return tokenizer.decode(idx[0])


def print_samples(samples: dict[str, str], variety: bool = False) -> None:
    """Print labelled samples, each under a rule; ``variety``: with the number of different
    characters each one uses."""
    for label, text in samples.items():
        print(f"--- {label} " + "-" * max(0, 60 - len(label)))
        print(text.strip("\n"))
        if variety:
            print(f"    [{len(set(text.strip()))} different characters]")
    print("-" * 65)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def line_summary(sample: str, corpus: str) -> None:
    """How the lines of a sample compare with those of the corpus: how many, how long on
    average, how many start with a capital letter (blank lines left out)."""
    for label, text in (("sample", sample), ("sonnets", corpus)):
        lines = _lines(text)
        if not lines:
            print(f"{label}: no lines")
            continue
        mean = sum(len(line) for line in lines) / len(lines)
        capitals = sum(line.lstrip()[:1].isupper() for line in lines)
        print(f"{label:>8}: {len(lines):5,} lines, {mean:4.0f} characters each on average, "
              f"{capitals / len(lines):4.0%} starting with a capital letter")


# ---- Section 2: temperature ----------------------------------------------------------------

@torch.no_grad()
def tail_share(model: TinyLM, tokenizer: CharTokenizer, text: str, k: int = 5,
               n_windows: int = 64, seed: int = 0) -> float:
    """The mean probability the model gives to the tokens outside its k most likely ones,
    over every position of ``n_windows`` random windows of the text."""
    model.eval()
    data = tokenizer.encode(text)
    idx, _ = random_windows(data, model.block_size, n_windows,
                            torch.Generator().manual_seed(seed))
    probs = torch.softmax(model(idx), dim=-1)
    return float(1 - probs.topk(k, dim=-1).values.sum(-1).mean())


def entropy_bits(logits: torch.Tensor, temperature: float) -> float:
    """Entropy (bits) of softmax(logits / temperature)."""
    log_p = torch.log_softmax(logits.double() / temperature, dim=-1)
    return float(-(log_p.exp() * log_p).sum() / math.log(2))


def _visible(char: str) -> str:
    """A character as a tick label: a space and a line break would be invisible."""
    return {" ": "␣", "\n": "\\n", "\t": "\\t"}.get(char, char)


def plot_temperature(logits: torch.Tensor, tokenizer: CharTokenizer, prompt: str,
                     temperatures: Sequence[float] = (0.5, 1.0, 2.0), n_shown: int = 12) -> None:
    """Left: entropy of the next-character distribution against temperature. Right: the
    distribution itself at a few temperatures."""
    grid = np.logspace(-1.3, 1.3, 60)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.6))
    left.semilogx(grid, [entropy_bits(logits, float(t)) for t in grid], label="next character")
    left.axhline(math.log2(logits.numel()), color="0.5", ls="--",
                 label=f"uniform over {logits.numel()} characters")
    left.set(title="Temperature sets the entropy", xlabel="temperature $\\tau$ (log scale)",
             ylabel="entropy (bits)", ylim=(0, None))
    left.legend()
    order = torch.argsort(logits, descending=True)[:n_shown]
    labels = [_visible(tokenizer.chars[i]) for i in order.tolist()]
    width = 0.8 / len(temperatures)
    for j, t in enumerate(temperatures):
        p = torch.softmax(logits / t, dim=-1)[order]
        right.bar(np.arange(n_shown) + (j - (len(temperatures) - 1) / 2) * width, to_numpy(p),
                  width=width, label=f"$\\tau$ = {t:g}")
    right.set_xticks(range(n_shown), labels)
    right.set(title=f"Next character after {prompt[-12:]!r}", xlabel="character (most likely first)",
              ylabel="probability")
    right.legend()
    plt.show()


# ---- Section 3: the cost of decoding -------------------------------------------------------

class AttentionDecoder(nn.Module):
    """A stack of causal self-attention layers with random weights, for timing only.

    ``forward(x)`` recomputes every position (what generating without a cache does at each
    step); ``step(x_t, caches, step_fn)`` processes one new position with a cached step.
    """

    def __init__(self, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 seed: int = 0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of n_heads={n_heads}")
        self.n_heads = n_heads
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.qkv = nn.ModuleList(nn.Linear(d_model, 3 * d_model) for _ in range(n_layers))
            self.out = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(n_layers))

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        B, T, three_d = x.shape
        return tuple(t.reshape(B, T, self.n_heads, -1).transpose(1, 2)
                     for t in x.split(three_d // 3, dim=-1))

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        B, H, T, dh = y.shape
        return y.transpose(1, 2).reshape(B, T, H * dh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for qkv, out in zip(self.qkv, self.out, strict=True):
            q, k, v = self._heads(qkv(x))
            x = x + out(self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True)))
        return x

    def step(self, x_t: torch.Tensor, caches: list[Cache | None],
             step_fn: StepFn) -> torch.Tensor:
        """One new position ``x_t`` ``(B, 1, d_model)``; ``caches`` is updated in place."""
        for layer, (qkv, out) in enumerate(zip(self.qkv, self.out, strict=True)):
            q, k, v = self._heads(qkv(x_t))
            y, caches[layer] = step_fn(q, k, v, caches[layer])
            x_t = x_t + out(self._merge(y))
        return x_t


@dataclass
class DecodingTimes:
    positions: np.ndarray
    without_cache: np.ndarray  # seconds per generated token
    with_cache: np.ndarray
    agree: bool


@torch.no_grad()
@uses_student_code
def time_decoding(step_fn: StepFn, n_tokens: int = 128, d_model: int = 64, n_heads: int = 4,
                  n_layers: int = 2, repeats: int = 3, seed: int = 0,
                  warm_up: int = 8, tries: int = 3) -> DecodingTimes:
    """Time each generated position with and without a KV cache (same random inputs), the
    median of ``repeats`` runs of each step, after ``warm_up`` untimed steps (the first calls
    of PyTorch's kernels are slower). A machine busy with something else can still hide the
    trend (:func:`shows_trend`): then the whole timing runs again, at most ``tries`` times.

    Without a cache, position t runs the whole prefix 0..t through the model again; with a
    cache it runs position t only. The last outputs of both must agree.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(tries - 1):
        times = _time_decoding(step_fn, n_tokens, d_model, n_heads, n_layers, repeats, seed,
                               warm_up)
        if n_tokens < 8 + 2 * TREND_SPAN or shows_trend(times):
            return times
    return _time_decoding(step_fn, n_tokens, d_model, n_heads, n_layers, repeats, seed,
                          warm_up)


def _time_decoding(step_fn: StepFn, n_tokens: int, d_model: int, n_heads: int,
                   n_layers: int, repeats: int, seed: int, warm_up: int) -> DecodingTimes:
    """One timing of :func:`time_decoding`."""
    model = AttentionDecoder(d_model, n_heads, n_layers, seed=seed)
    x = torch.randn(1, n_tokens, d_model, generator=torch.Generator().manual_seed(seed))
    caches: list[Cache | None] = [None] * n_layers
    slow, fast, agree = [], [], True
    with single_thread():
        warm_caches: list[Cache | None] = [None] * n_layers
        for t in range(min(warm_up, n_tokens)):
            model(x[:, : t + 1])
            model.step(x[:, t: t + 1], warm_caches, step_fn)
        for t in range(n_tokens):
            slow_runs, fast_runs = [], []
            for _ in range(repeats):
                start = time.perf_counter()
                full = model(x[:, : t + 1])[:, -1]
                slow_runs.append(time.perf_counter() - start)
            for _ in range(repeats):  # every repeat starts from the same caches
                trial = list(caches)
                start = time.perf_counter()
                cached = model.step(x[:, t: t + 1], trial, step_fn)[:, -1]
                fast_runs.append(time.perf_counter() - start)
            caches = trial
            slow.append(float(np.median(slow_runs)))
            fast.append(float(np.median(fast_runs)))
            agree = agree and bool(torch.allclose(full, cached, atol=1e-4, rtol=1e-4))
    return DecodingTimes(np.arange(1, n_tokens + 1), np.array(slow), np.array(fast), agree)


TREND_SPAN = 32  # positions compared at each end (after the first 8): a median over
# 32 steps moves only when more than 16 of them are slow, never for one busy moment
TREND_FACTOR = 1.5  # the smallest ratio the cell asserts; a 2-core machine measures 2 to 3


def trend_ratios(times: DecodingTimes, span: int = TREND_SPAN) -> tuple[float, float]:
    """(how many times as long the last ``span`` steps took as steps 8 to 8 + span, without
    a cache; how many times as long they took without a cache as with one), on medians."""
    def median(values: np.ndarray, part: slice) -> float:
        return float(np.median(values[part]))

    early, late = slice(8, 8 + span), slice(-span, None)
    slow_late = median(times.without_cache, late)
    return (slow_late / median(times.without_cache, early),
            slow_late / median(times.with_cache, late))


def shows_trend(times: DecodingTimes, factor: float = TREND_FACTOR) -> bool:
    """Whether both ratios of :func:`trend_ratios` exceed ``factor``."""
    return min(trend_ratios(times)) > factor


def decoding_trend(times: DecodingTimes, span: int = TREND_SPAN,
                   factor: float = TREND_FACTOR) -> None:
    """Check the trends the figure shows and say them in a sentence; the ratios measured
    vary from run to run, so the sentence states the bar they passed (the figure shows the
    ratios themselves)."""
    growth, saving = trend_ratios(times, span)
    if not (growth > factor and saving > factor):
        raise AssertionError(
            f"The timings do not show the trend this cell is about: without a cache the last "
            f"steps took {growth:.1f} times as long as the early ones, and {saving:.1f} times "
            "as long as with the cache. The machine was probably busy with something else "
            "while it timed: run the cell again.")
    bar = "twice" if factor == 2 else f"{factor:g} times"
    print(f"Without a cache, the last {span} steps took more than {bar} as long as steps 8 to "
          f"{8 + span}, and more than {bar} as long as with the cache (the ratios of this "
          "run are written on the figure).")


def plot_decoding_times(times: DecodingTimes, bin_size: int = 8) -> None:
    """Time per generated token against the length of the text so far (median per bin)."""
    n = len(times.positions) // bin_size * bin_size
    centres = times.positions[:n].reshape(-1, bin_size).mean(axis=1)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    curves = []
    for values, label, marker in ((times.without_cache, "without a cache (recompute the prefix)",
                                   "o"), (times.with_cache, "with a KV cache", "s")):
        medians = np.median(values[:n].reshape(-1, bin_size), axis=1) * 1e3
        ax.plot(centres, medians, marker=marker, ms=4, label=label)
        curves.append(medians)
    # A moment when the machine was busy can make one bin many times slower than its
    # neighbours: the axis stops above the trend, not at such a spike.
    both = np.concatenate(curves)
    # each inner bin capped at the larger of its two neighbours: a lone spike is flattened
    trend = np.concatenate([np.minimum(c[1:-1], np.maximum(c[:-2], c[2:])) for c in curves
                            if len(c) >= 3] + [c[[0, -1]] for c in curves])
    top = 1.25 * float(trend.max())
    clipped = bool((both > top).any())
    ax.set(title="Time to generate one more token", xlabel="tokens generated so far $t$",
           ylabel="time per token (ms)", ylim=(0, top if clipped else None))
    ax.legend(loc="upper left")
    notes = []
    if len(times.positions) >= 8 + 2 * TREND_SPAN:
        growth, saving = trend_ratios(times)
        notes.append(f"this run, median of the last {TREND_SPAN} steps without a cache:\n"
                     f"{growth:.2g}× as long as steps 8 to {8 + TREND_SPAN}, "
                     f"{saving:.2g}× as long as with it")
    if clipped:
        notes.append("points above the axis: moments when the machine was busy")
    if notes:
        ax.text(0.02, 0.74, "\n".join(notes), transform=ax.transAxes, ha="left", va="top",
                fontsize=8)
    plt.show()


# ---- Section 4: memory, measured -----------------------------------------------------------

class LargestTensor(TorchDispatchMode):
    """Records the largest tensor that any PyTorch operation creates inside the block.

    Views and in-place results (which share storage with an input) are not new memory and
    are not counted. The measure is deterministic: it depends on shapes, not on timing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.numel = 0
        self.shape: tuple[int, ...] = ()
        self.op = ""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in _tensors(args) + _tensors(kwargs)}
        for tensor in _tensors(out):
            if tensor.untyped_storage().data_ptr() in inputs:
                continue
            size = tensor.numel() * tensor.element_size()
            if size > self.bytes:
                self.bytes, self.numel = size, tensor.numel()
                self.shape, self.op = tuple(tensor.shape), str(func)
        return out


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, tuple | list):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def largest_tensor(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> LargestTensor:
    """Run ``fn(*args, **kwargs)`` without gradients; return what :class:`LargestTensor` saw."""
    record = LargestTensor()
    with torch.no_grad(), record:
        fn(*args, **kwargs)
    return record


def attention_with_full_scores(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor,
                               causal: bool = False) -> torch.Tensor:
    """PyTorch's reference ("math") attention, which forms the whole score matrix."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(Q, K, V, is_causal=causal)


def _qkv(T: int, d: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, 1, T, d, generator=generator) for _ in range(3))


def score_memory(lengths: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
                 d: int = 16) -> dict[int, LargestTensor]:
    """The largest tensor of one head's causal attention (full scores), per length T."""
    return {T: largest_tensor(attention_with_full_scores, *_qkv(T, d), causal=True)
            for T in lengths}


def _plot_memory(lengths: Sequence[int], series: dict[str, Sequence[int]], title: str) -> None:
    """Log-log plot of measured bytes against T, one line per series, with the 4T^2 line."""
    lengths = np.array(lengths)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for (label, values), marker in zip(series.items(), "osd", strict=False):
        ax.loglog(lengths, values, marker=marker, label=label)
    ax.loglog(lengths, 4.0 * lengths**2, "k--", lw=1, label="$4T^2$ bytes (T×T float32)")
    ax.set(title=title, xlabel="sequence length $T$", ylabel="bytes")
    # ticks at the lengths measured, not at the powers of ten between them
    ax.set_xticks(lengths, [str(T) for T in lengths])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.legend()
    plt.show()


def plot_score_memory(records: dict[int, LargestTensor]) -> None:
    """The measured largest tensor against T, with the T^2 line."""
    _plot_memory(list(records), {"measured: largest tensor created":
                                 [r.bytes for r in records.values()]},
                 "One head's attention scores grow as $T^2$")


@uses_student_code
def blockwise_memory(blockwise_fn: Callable[..., torch.Tensor],
                     lengths: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
                     block_size: int = 64, d: int = 16) -> dict[str, list[int]]:
    """Largest tensor (bytes) per length: full scores, the student's blocks, PyTorch's SDPA."""
    result: dict[str, list[int]] = {"full score matrix": [], f"blockwise (block {block_size})": [],
                                    "F.scaled_dot_product_attention (default kernel)": []}
    for T in lengths:
        Q, K, V = _qkv(T, d)
        result["full score matrix"].append(
            largest_tensor(attention_with_full_scores, Q, K, V, causal=True).bytes)
        result[f"blockwise (block {block_size})"].append(
            largest_tensor(blockwise_fn, Q, K, V, block_size, causal=True).bytes)
        result["F.scaled_dot_product_attention (default kernel)"].append(
            largest_tensor(F.scaled_dot_product_attention, Q, K, V, is_causal=True).bytes)
    result["lengths"] = list(lengths)
    return result


def plot_blockwise_memory(result: dict[str, list[int]]) -> None:
    """The largest tensor of each way to compute attention against T."""
    _plot_memory(result["lengths"], {k: v for k, v in result.items() if k != "lengths"},
                 "Largest tensor created by one head's causal attention")


# ---- Section 5-6: online softmax and blocks -----------------------------------------------

@uses_student_code
def plot_online_softmax(online_softmax_fn: Callable[..., torch.Tensor], x: torch.Tensor,
                        block_size: int) -> None:
    """One row cut into blocks, and the student's online softmax against torch.softmax."""
    T = x.shape[-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.4))
    for start in range(0, T, block_size):
        for ax in (left, right):
            ax.axvspan(start - 0.5, min(start + block_size, T) - 0.5,
                       color="0.9" if (start // block_size) % 2 else "0.97", zorder=0,
                       label=f"one block of {block_size} (shading alternates)"
                       if start == block_size else None)
    left.bar(range(T), to_numpy(x), color="C0", label="logits $x_j$")
    left.set(title=f"A row of logits in blocks of {block_size}", xlabel="position $j$",
             ylabel="logit")
    left.legend()
    reference = torch.softmax(x, dim=-1)
    yours = online_softmax_fn(x, block_size)
    same = yours.shape == reference.shape and bool(
        torch.allclose(yours.double(), reference.double(), atol=1e-6, rtol=1e-5))
    right.bar(range(T), to_numpy(reference), color="0.6", label="torch.softmax")
    right.plot(range(T), to_numpy(yours.reshape(-1)[:T]), "o", color="C1",
               label="your online_softmax")
    right.set(title="One pass over the blocks, same softmax" if same else
              "Your online_softmax differs from torch.softmax", xlabel="position $j$",
              ylabel="probability")
    right.legend()
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    plt.show()


def sdpa_on_gpu(T: int = 8192, d: int = 64, heads: int = 16) -> None:
    """On a GPU: which fused kernels F.scaled_dot_product_attention can use, and what each
    costs in peak memory and time. On a CPU: one fixed sentence."""
    if not torch.cuda.is_available():
        print("No GPU here: the comparison of PyTorch's GPU attention kernels was skipped.")
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    generator = torch.Generator(device="cuda").manual_seed(0)
    Q, K, V = (torch.randn(1, heads, T, d, device="cuda", dtype=torch.float16,
                           generator=generator) for _ in range(3))
    backends = {"math (full score matrix)": SDPBackend.MATH,
                "memory-efficient": SDPBackend.EFFICIENT_ATTENTION,
                "flash": SDPBackend.FLASH_ATTENTION}
    print(f"one layer's causal attention, {heads} heads, T = {T}, d = {d}, float16:")
    for label, backend in backends.items():
        try:
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(Q, K, V, is_causal=True)  # warm up
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                start = time.perf_counter()
                F.scaled_dot_product_attention(Q, K, V, is_causal=True)
                torch.cuda.synchronize()
                seconds = time.perf_counter() - start
            extra = (torch.cuda.max_memory_allocated() - base) / 2**20
            print(f"  {label:26s} extra memory {extra:8.1f} MiB   time {seconds * 1e3:7.2f} ms")
        except RuntimeError as error:
            print(f"  {label:26s} not available here ({str(error).splitlines()[0][:60]})")



# ---- Section 6: why fused kernels are fast (a count of memory traffic) --------------------

@dataclass(frozen=True)
class Traffic:
    """Numbers moved between a GPU's main memory and its on-chip memory by one head's
    attention forward pass, and numbers kept in main memory for the backward pass (beyond
    Q, K, V and the output, which both ways keep)."""

    moved: int
    kept: int


def standard_traffic(T: int, d: int) -> Traffic:
    """Attention as three kernels (Dao et al. 2022, Algorithm 0): S = QK^T is written out,
    read back for the softmax, P written out and read back to multiply V. The backward
    pass needs P: T*T numbers kept."""
    scores = 2 * T * d + T * T  # read Q and K, write S
    softmax = 2 * T * T  # read S, write P
    output = T * T + T * d + T * d  # read P and V, write O
    return Traffic(moved=scores + softmax + output, kept=T * T)


def tiled_traffic(T: int, d: int, on_chip: int) -> Traffic:
    """FlashAttention's forward pass (Dao et al. 2022, Algorithm 1) with ``on_chip`` numbers
    of fast memory: K and V are read once in blocks of ``on_chip // (4 d)`` rows; for each
    such block every block of queries is read with its partial output and row statistics
    (running maximum and sum) and written back. Nothing T*T ever leaves the chip; the
    backward pass keeps only the two statistics per row and recomputes the scores."""
    key_block = max(1, on_chip // (4 * d))
    query_block = min(key_block, d)
    key_blocks, query_blocks = math.ceil(T / key_block), math.ceil(T / query_block)
    start = T * d + 2 * T  # O, maximum and sum set to their initial values
    keys_values = 2 * T * d  # each block of K and V read once
    per_pair = 3 * query_block * d + 4 * query_block  # read Q_i, O_i, stats; write O_i, stats
    return Traffic(moved=start + keys_values + key_blocks * query_blocks * per_pair,
                   kept=2 * T)


def attention_traffic(lengths: Sequence[int] = (256, 1024, 4096, 16384), d: int = 64,
                      on_chip_kb: int = 100, bytes_per_number: int = 2) -> dict[str, list]:
    """Megabytes moved and kept, standard against tiled, per length (float16 by default)."""
    on_chip = on_chip_kb * 1024 // bytes_per_number
    table: dict[str, list] = {"lengths": list(lengths), "standard moved": [],
                              "tiled moved": [], "standard kept": [], "tiled kept": []}
    for T in lengths:
        for name, traffic in (("standard", standard_traffic(T, d)),
                              ("tiled", tiled_traffic(T, d, on_chip))):
            table[f"{name} moved"].append(traffic.moved * bytes_per_number / 1e6)
            table[f"{name} kept"].append(traffic.kept * bytes_per_number / 1e6)
    print(f"one head, d = {d}, float16, {on_chip_kb} KB of on-chip memory; megabytes:")
    print(f"{'T':>7} {'moved: standard':>16} {'tiled':>8} {'ratio':>6}   "
          f"{'kept for backward: standard':>28} {'tiled':>7}")
    for i, T in enumerate(lengths):
        standard, tiled = table["standard moved"][i], table["tiled moved"][i]
        print(f"{T:7d} {standard:16.2f} {tiled:8.2f} {standard / tiled:6.1f}   "
              f"{table['standard kept'][i]:28.3f} {table['tiled kept'][i]:7.3f}")
    return table


def plot_attention_traffic(table: dict[str, list]) -> None:
    """Memory traffic and memory kept for the backward pass, standard against tiled."""
    lengths = np.array(table["lengths"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, what, title in ((axes[0], "moved", "Traffic to and from GPU memory (forward)"),
                            (axes[1], "kept", "Kept in GPU memory for the backward pass")):
        ax.loglog(lengths, table[f"standard {what}"], "o-", label="standard (three kernels)")
        ax.loglog(lengths, table[f"tiled {what}"], "s-", label="tiled (one fused kernel)")
        ax.set(title=title, xlabel="sequence length $T$", ylabel="megabytes")
        ax.set_xticks(lengths, [str(T) for T in lengths])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.legend()
    fig.tight_layout()
    plt.show()

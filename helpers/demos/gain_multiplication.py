"""Tutorial 01: signals, spotlights and the gain demo."""

from __future__ import annotations

import math
from collections.abc import Callable

import matplotlib.pyplot as plt
import torch

from helpers.exercises import uses_student_code
from helpers.plotting import to_numpy
from helpers.widgets import slider_demo

AttentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def spotlight_signal(T: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 1-D context and two spotlight patterns over it.

    Returns ``x`` (a noisy sine over ``T`` positions) and ``q_1``/``q_2``, two smooth
    bumps in [0, 1] that prefer the left and the right half of the context.
    """
    if T < 4:
        raise ValueError(f"the context needs at least 4 positions, got T={T}")
    generator = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, T)
    x = torch.sin(2 * math.pi * t) + 0.15 * torch.randn(T, generator=generator)
    q_1 = torch.exp(-((t - 0.25) ** 2) / (2 * 0.08**2))
    q_2 = torch.exp(-((t - 0.75) ** 2) / (2 * 0.08**2))
    return x, q_1, q_2


def plot_signal(x: torch.Tensor, q_1: torch.Tensor, q_2: torch.Tensor) -> None:
    """The context and the two spotlight patterns, side by side."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.plot(to_numpy(x), marker=".", label="input $x_t$")
    left.set(title="The context", xlabel="position $t$", ylabel="value")
    left.legend()
    right.plot(to_numpy(q_1), label="$q_1$ (left spotlight)")
    right.plot(to_numpy(q_2), label="$q_2$ (right spotlight)")
    right.set(title="Two spotlight patterns", xlabel="position $t$", ylabel="preference")
    right.legend()
    plt.show()


def plot_softmax_sharpening(scores: torch.Tensor, gains: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0)
                            ) -> None:
    """The scores (left) and softmax(g * scores) for several gains g (right): the larger the
    gain, the more of the weight goes to the best position."""
    fig, (left, ax) = plt.subplots(1, 2, figsize=(11, 3.5), width_ratios=(2, 3))
    positions = range(len(scores))
    best = int(scores.argmax())
    left.bar(positions, to_numpy(scores), color="0.6")
    left.bar([best], [float(scores[best])], color="C3", label=f"best position, t = {best}")
    left.set(title="The scores $s_t$", xlabel="position $t$", ylabel="score $s_t$")
    left.legend(loc="upper center")
    for gain in gains:
        ax.plot(positions, to_numpy(torch.softmax(gain * scores, dim=0)), marker="o", ms=3,
                label=f"gain {gain:g}")
    ax.set(title="Softmax sharpens as the gain grows", xlabel="position $t$",
           ylabel="weight $w_t$")
    ax.legend(title="softmax(gain · scores)")
    plt.show()


WEIGHT_AXIS_TOP = 0.4


@uses_student_code
def draw_gain_demo(attention_fn: AttentionFn, x: torch.Tensor, q_1: torch.Tensor,
                   q_2: torch.Tensor, z_1: float, z_2: float) -> None:
    """Weights and attended inputs for one setting of the two gains."""
    w, y = attention_fn(x, q_1, q_2, z_1, z_2)
    w, y = to_numpy(w), float(torch.as_tensor(y))
    positions = range(len(w))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    top.plot(to_numpy(q_1), "--", label="$q_1$")
    top.plot(to_numpy(q_2), "--", label="$q_2$")
    top.set(title=f"Attention for gains $z_1$={z_1:g}, $z_2$={z_2:g}", ylabel="preference $q$")
    weights_axis = top.twinx()
    weights_axis.fill_between(positions, w, color="black", alpha=0.25, label="weights $w$")
    # One weight scale for every setting (the sliders' largest weight is below 0.4), so
    # that the shaded areas of different gains can be compared.
    weights_axis.set(ylabel="weight $w_t$", ylim=(0, max(WEIGHT_AXIS_TOP, 1.05 * w.max())))
    weights_axis.grid(False)
    handles = top.get_legend_handles_labels()[0] + weights_axis.get_legend_handles_labels()[0]
    top.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.12, 1.0))
    bottom.plot(to_numpy(x), color="0.6", label="input $x_t$")
    bottom.scatter(positions, to_numpy(x), s=400 * w / w.max(), color="C1", alpha=0.7,
                   label="attended inputs\n(size ∝ $w_t$)")
    bottom.axhline(y, color="C2", label=f"output $y = w \\cdot x$\n= {y:.2f}")
    bottom.set(title="What the gains let through", xlabel="position $t$", ylabel="value")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.12, 1.0))
    plt.show()


@uses_student_code
def gain_demo(attention_fn: AttentionFn, T: int = 40) -> None:
    """Sliders for z_1 and z_2 driving the student's attention function."""
    x, q_1, q_2 = spotlight_signal(T)
    slider_demo(
        lambda z_1, z_2: draw_gain_demo(attention_fn, x, q_1, q_2, z_1, z_2),
        sliders={"z_1": (-10.0, 10.0, 0.5, 0.0), "z_2": (-10.0, 10.0, 0.5, 0.0)},
        static_settings=[{"z_1": 0.0, "z_2": 0.0}, {"z_1": 8.0, "z_2": 0.0},
                         {"z_1": 4.0, "z_2": 4.0}, {"z_1": -4.0, "z_2": -4.0}],
    )


def weight_entropy(w: torch.Tensor) -> float:
    """Entropy of a distribution in nats (0 = one-hot, log T = uniform)."""
    w = torch.as_tensor(w, dtype=torch.float64)
    return float(-(w * torch.log(w.clamp_min(1e-300))).sum())


TABLE_GAINS = (0, 1, 2, 4, 6, 10, 30)  # the gains whose entropy and output are printed


@uses_student_code
def plot_entropy_vs_gain(attention_fn: AttentionFn, T: int = 40) -> None:
    """How concentrated the weights become as one gain grows, the other held at 0: the
    entropy of the weights and the output, drawn for gains 0 to 30 and printed (rounded to
    two decimals) for :data:`TABLE_GAINS`."""
    x, q_1, q_2 = spotlight_signal(T)
    gains = torch.linspace(0, 30, 31)
    results = [attention_fn(x, q_1, q_2, float(g), 0.0) for g in gains]
    entropy = [weight_entropy(w) for w, _ in results]
    outputs = [float(torch.as_tensor(y)) for _, y in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.plot(to_numpy(gains), entropy, label="entropy of $w$")
    left.axhline(math.log(T), ls=":", color="0.4", label=f"uniform: log {T}")
    left.set(title="Gain concentrates attention", xlabel="gain $z_1$", ylabel="entropy (nats)")
    left.legend()
    right.plot(to_numpy(gains), outputs, color="C1", label="$y = w \\cdot x$")
    right.axhline(float(x.mean()), ls=":", color="0.4", label="mean of $x$ (gain 0)")
    right.set(title="...and moves the output", xlabel="gain $z_1$", ylabel="output $y$")
    right.legend()
    plt.show()
    table = {float(g): (e, y) for g, e, y in zip(gains.tolist(), entropy, outputs, strict=True)
             if g in TABLE_GAINS}
    print(f"{'gain z_1':15s}" + "".join(f"{g:>7g}" for g in table))
    print(f"{'entropy (nats)':15s}" + "".join(f"{_two(e):>7.2f}" for e, _ in table.values()))
    print(f"{'output y':15s}" + "".join(f"{_two(y):>7.2f}" for _, y in table.values()))


def _two(value: float) -> float:
    """Rounded to two decimals, without a "-0.00"."""
    return round(value, 2) + 0.0

"""Tutorial 05: sparse-AND data, an MLP baseline, the experiments and their figures.

Nothing here contains an exercise's solution: every function that needs the
sparse-AND generator or the self-attention classifier takes the student's own
function or class as an argument.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import cm
from matplotlib.colors import Normalize
from matplotlib.patches import Patch, Rectangle
from torch import nn

from helpers.exercises import uses_student_code
from helpers.plotting import to_numpy
from helpers.training import band, count_parameters, evaluate, single_thread, train
from helpers.widgets import progress_bar

DatasetFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
ModelFactory = Callable[[int], nn.Module]

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SAMPLE_COMPLEXITY_CSV = DATA_DIR / "sparse_and_inductive_bias_sample_complexity.csv"
MODEL_NAMES = ("attention", "MLP")
MODEL_COLOURS = {"attention": "C0", "MLP": "C1"}
# Learning rates used everywhere in this tutorial (chosen once, on separate seeds).
LEARNING_RATES = {"attention": 0.03, "MLP": 0.03}


# ---------------------------------------------------------------------------------------------
# Baseline and data that are not exercises
# ---------------------------------------------------------------------------------------------

class BinaryMLP(nn.Module):
    """The baseline: T input bits -> ``hidden`` ReLU units -> a probability.

    Its first layer holds one weight per (input position, hidden unit): which of the
    T positions matter has to be learned, weight by weight, from the data.
    """

    def __init__(self, T: int, hidden: int = 16) -> None:
        super().__init__()
        self.T = T
        self.net = nn.Sequential(nn.Linear(T, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x.float()))


def pick_positions(T: int, s: int, seed: int) -> list[int]:
    """``s`` distinct positions out of ``range(T)``, sorted, chosen by ``seed``."""
    if not 0 < s <= T:
        raise ValueError(f"need 0 < s <= T, got s={s}, T={T}")
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(T, generator=generator)[:s].tolist())


def dense_vote_dataset(m: int, T: int, weight_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A *dense* target: a weighted vote of all T bits.

    Bits are fair coins; ``y = 1`` iff ``sum_t w_t (2 x_t - 1) > 0`` with fixed weights of
    random sign and size between 0.5 and 1.5 (drawn from ``weight_seed``). Every position
    matters, none decides alone, and by symmetry half of the labels are positive (ties have
    probability zero). Samples use PyTorch's global generator.
    """
    generator = torch.Generator().manual_seed(10_000 + weight_seed)
    signs = torch.randint(0, 2, (T,), generator=generator) * 2 - 1
    weights = signs * (0.5 + torch.rand(T, generator=generator))
    X = torch.randint(0, 2, (m, T))
    y = (((2 * X - 1).float() @ weights) > 0).float().unsqueeze(1)
    return X, y


@uses_student_code
def rule_dataset(sparse_and_dataset: DatasetFn, m: int, T: int, idx_0: Sequence[int],
                 idx_1: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rule-token task, built from the student's generator.

    Each row has ``T - 1`` data bits and, at the last position, a *rule* bit ``r``.
    The label is the AND of the bits at ``idx_0`` when ``r = 0`` and at ``idx_1`` when
    ``r = 1``. Half of the rows follow each rule; each half is balanced by the generator.
    """
    if max(*idx_0, *idx_1) >= T - 1:
        raise ValueError("the relevant positions must lie among the T - 1 data bits")
    m_0 = m // 2
    X_0, y_0 = sparse_and_dataset(m_0, T - 1, list(idx_0))
    X_1, y_1 = sparse_and_dataset(m - m_0, T - 1, list(idx_1))
    rule = torch.cat([torch.zeros(m_0, 1), torch.ones(m - m_0, 1)]).long()
    X = torch.cat([torch.cat([X_0, X_1]).long(), rule], dim=1)
    y = torch.cat([y_0, y_1]).float().reshape(m, 1)
    order = torch.randperm(m)
    return X[order], y[order]


CLASSIFIER_TABLES = ("token_embedding", "position_embedding", "query", "key", "value")


@torch.no_grad()
def initialise_classifier(model: nn.Module, seed: int) -> nn.Module:
    """Draw the classifier's starting weights again, in one fixed order, from ``seed``.

    A correct ``__init__`` may draw its random numbers in any order, and a different order
    gives a different starting model, hence a different run. So the experiments redraw every
    parameter from a generator of their own: ``token_embedding``, ``position_embedding``,
    ``query``, ``key`` and ``value`` in this order with ``normal_(std=0.1)``, then the readout's
    weight and bias as ``nn.Linear`` draws them (uniform in +-1/sqrt(d)). Any correct class then
    gives the same run. A model without these members (the MLP) is left as it is.
    """
    members = [getattr(model, name, None) for name in CLASSIFIER_TABLES]
    readout = getattr(model, "readout", None)
    tables = [m.weight if isinstance(m, (nn.Linear, nn.Embedding)) else m for m in members]
    if not isinstance(readout, nn.Linear) or not all(
            isinstance(t, torch.Tensor) and t.is_floating_point() for t in tables):
        return model
    generator = torch.Generator().manual_seed(seed)

    def draw(tensor: torch.Tensor, sample: Callable[[torch.Tensor], torch.Tensor]) -> None:
        values = sample(torch.empty(tensor.shape, dtype=torch.float32))
        tensor.copy_(values.to(dtype=tensor.dtype, device=tensor.device))

    for table in tables:
        draw(table, lambda t: t.normal_(0.0, 0.1, generator=generator))
    bound = 1 / math.sqrt(readout.in_features)
    draw(readout.weight, lambda t: t.uniform_(-bound, bound, generator=generator))
    if readout.bias is not None:
        draw(readout.bias, lambda t: t.uniform_(-bound, bound, generator=generator))
    return model


# ---------------------------------------------------------------------------------------------
# Section 1 figures
# ---------------------------------------------------------------------------------------------

def plot_label_balance(s_values: Iterable[int] = (1, 2, 4, 8)) -> None:
    """P(y = 1) = p^s against the bit probability p, with the balanced p marked."""
    p = np.linspace(0.3, 1.0, 200)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, s in enumerate(s_values):
        colour = f"C{i}"
        ax.plot(p, p**s, color=colour, label=f"s = {s}")
        balanced = 0.5 ** (1 / s)
        ax.plot([balanced], [0.5], "o", color=colour)
        ax.annotate(f"{balanced:.2f}", (balanced, 0.5), textcoords="offset points",
                    xytext=(-14, 6 + 8 * (i % 2)), fontsize=8, color=colour)
    ax.axhline(0.5, ls=":", color="0.4", label="balanced labels")
    ax.axvline(0.5, ls="--", color="0.6", label="fair coins, p = 0.5")
    ax.set(title="Fraction of positive labels of an s-sparse AND", xlabel="bit probability p",
           ylabel="P(y = 1) = $p^s$", ylim=(0, 1.02))
    ax.legend(loc="upper left")
    plt.show()


@uses_student_code
def plot_samples(sparse_and_dataset: DatasetFn, T: int, idx: Sequence[int], n: int = 24,
                 seed: int = 0) -> None:
    """A few rows from the student's generator, the relevant columns boxed, labels beside."""
    torch.manual_seed(seed)
    X, y = sparse_and_dataset(n, T, list(idx))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8), width_ratios=[T, 3])
    left.imshow(to_numpy(X), cmap="Greys", vmin=0, vmax=1, aspect="auto")
    for i in idx:
        left.add_patch(Rectangle((i - 0.5, -0.5), 1, n, fill=False, edgecolor="C1", lw=2.5))
    left.set(title=f"Inputs (black = 1); relevant positions {list(idx)} boxed",
             xlabel="position t", ylabel="sample")
    left.set_xticks(range(0, T, 2 if T > 12 else 1))
    left.grid(False)
    right.imshow(to_numpy(y).reshape(n, 1), cmap="Greys", vmin=0, vmax=1, aspect="auto")
    right.set(title="label y", xlabel="y (black = 1)", ylabel="")
    right.set_xticks([])
    right.set_yticks(range(0, n, 4))
    right.grid(False)
    plt.show()


def plot_selection_margin(T_values: Sequence[int] = (4, 8, 16, 32, 64, 128, 256, 512, 1024),
                          s: int = 2, mass: float = 0.9) -> None:
    """Score margin softmax needs to put ``mass`` of its weight on s of T positions.

    With score ``a`` on the s chosen positions and 0 elsewhere, the chosen ones get
    ``s e^a / (s e^a + T - s)``; solving for ``mass`` gives ``a = log(mass/(1-mass) (T-s)/s)``,
    a logarithm of T. An MLP unit that must ignore ``T - s`` inputs needs one weight per input.
    """
    T = np.asarray(T_values, dtype=float)
    margin = np.log(mass / (1 - mass) * (T - s) / s)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot(T, margin, marker="o", label=f"score margin for {mass:.0%} of the weight")
    left.set_xscale("log", base=2)
    left.set(title="Softmax selects s positions with a log T margin", xlabel="context length T",
             ylabel="score margin a")
    left.legend()
    right.plot(T, T - s, marker="o", color="C1", label="weights to set to ~0 (one per input)")
    right.plot(T, np.full_like(T, s), marker="o", color="C2", label="weights to learn (s)")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set(title="A first MLP layer must zero T - s weights", xlabel="context length T",
              ylabel="number of weights")
    right.legend()
    plt.show()


def not_as_expected(what: str) -> str:
    """The message of a notebook cell whose result is not what the text describes."""
    return (f"{what}. The experiments train your SelfAttentionClassifier on data from your "
            "sparse_and_dataset; the starting weights are drawn by the experiment itself, so "
            "the order in which your __init__ draws them does not matter. If a self-check above "
            "failed, fix that first. If both passed, look for code that behaves differently in "
            "eval mode (validation runs under model.eval(); the checks run in training mode) or "
            "state kept between calls (a batch, T or d remembered from an earlier call). A "
            "correct generator that draws its bits in another way than torch.rand(m, T) < p "
            "(torch.bernoulli, say) gives other samples, hence another run, and these are single "
            "runs: then your numbers may differ from the text's without anything being wrong. "
            "The runs are seeded: running the cell again gives the same numbers.")


# ---------------------------------------------------------------------------------------------
# Experiment 1: attention versus MLP on sparse and dense targets
# ---------------------------------------------------------------------------------------------

@uses_student_code
def compare_models(attention_class: Callable[[int], nn.Module], sparse_and_dataset: DatasetFn,
                   *, T: int = 48, s: int = 2, m: int = 96, m_val: int = 300, epochs: int = 60,
                   batch_size: int | None = None, seed: int = 0,
                   device: torch.device | None = None) -> tuple[list[dict], dict]:
    """Train attention and the MLP on a sparse AND and on a dense vote, same loop, same data.

    Returns the table rows (task, model, samples, parameters, train and validation accuracy)
    and the trained models keyed by ``(task, model)``. ``batch_size=None`` means full batch.
    """
    idx = pick_positions(T, s, seed)
    torch.manual_seed(seed)
    datasets = {
        f"sparse AND (s={s})": (sparse_and_dataset(m, T, idx), sparse_and_dataset(m_val, T, idx)),
        "dense vote (all T)": (dense_vote_dataset(m, T, seed), dense_vote_dataset(m_val, T, seed)),
    }
    factories = {"attention": attention_class, "MLP": BinaryMLP}
    rows, models = [], {}
    for task, ((X, y), (X_val, y_val)) in datasets.items():
        for name, factory in factories.items():
            torch.manual_seed(seed)
            model = initialise_classifier(factory(T), seed)
            with single_thread():
                history = train(model, X, y, epochs=epochs, lr=LEARNING_RATES[name],
                                batch_size=batch_size or m, val_inputs=X_val, val_target=y_val,
                                device=device, seed=seed, description=f"{name}, {task}")
            rows.append({"task": task, "model": name, "samples": m,
                         "parameters": count_parameters(model),
                         "train_acc": history["train_acc"][-1], "val_acc": history["val_acc"][-1],
                         "val_curve": history["val_acc"]})
            models[(task, name)] = model
    return rows, {"models": models, "idx": idx, "T": T}


ACCURACY_EDGES = (0.5, 0.65, 0.77, 0.95)  # far from the accuracies tutorial 05 gets


def print_table(rows: Sequence[dict], edges: Sequence[float] = ACCURACY_EDGES) -> None:
    """The comparison as an aligned text table, accuracies as bands between ``edges``
    (:func:`helpers.training.band`: the same on every CPU)."""
    print(f"{'task':<20} {'model':<10} {'samples':>7} {'params':>7} {'train acc':>10} "
          f"{'val acc':>10}")
    for r in rows:
        print(f"{r['task']:<20} {r['model']:<10} {r['samples']:>7} {r['parameters']:>7} "
              f"{band(r['train_acc'], edges):>10} {band(r['val_acc'], edges):>10}")


def plot_comparison(rows: Sequence[dict]) -> None:
    """Validation accuracy per epoch (left) and final train/validation accuracy (right)."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(13, 3.6))
    for ax, task in zip(axes, tasks, strict=False):
        for r in rows:
            if r["task"] == task:
                ax.plot(range(1, len(r["val_curve"]) + 1), r["val_curve"],
                        color=MODEL_COLOURS[r["model"]],
                        label=f"{r['model']} ({r['parameters']} params)")
        ax.axhline(0.5, ls=":", color="0.5", label="chance")
        ax.set(title=f"{task}: validation", xlabel="epoch", ylabel="validation accuracy",
               ylim=(0.4, 1.2))
        ax.set_yticks(np.arange(0.4, 1.01, 0.1))
        ax.legend(loc="upper left", fontsize=8)
    bars = axes[-1]
    width = 0.2
    for r in rows:
        centre = tasks.index(r["task"]) + (-0.2 if r["model"] == "attention" else 0.2)
        colour = MODEL_COLOURS[r["model"]]
        for shift, value, alpha in ((-width / 2, r["train_acc"], 0.4), (width / 2, r["val_acc"], 1)):
            bars.bar(centre + shift, value, width, color=colour, alpha=alpha)
            bars.text(centre + shift, value + 0.01, f"{value:.2f}", ha="center", fontsize=7)
    handles = [Patch(color=MODEL_COLOURS[name], label=name) for name in MODEL_NAMES] + [
        Patch(color="0.6", alpha=0.4, label="light: train"), Patch(color="0.3", label="dark: validation")]
    bars.legend(handles=handles, loc="upper center", ncols=2, fontsize=7)
    bars.set_xticks(range(len(tasks)), tasks)
    bars.axhline(0.5, ls=":", color="0.5")
    bars.set(title=f"Final accuracy ({rows[0]['samples']} training samples)", xlabel="task",
             ylabel="accuracy", ylim=(0.4, 1.25))
    bars.set_yticks(np.arange(0.4, 1.01, 0.1))
    plt.show()


# ---------------------------------------------------------------------------------------------
# What attention learned
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def readout_attention(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Weights with which the last position (the readout) attends to each position, (B, T)."""
    device = next(model.parameters()).device
    weights = model.attention_weights(X.to(device))
    return weights[:, -1, :].cpu()


SHARE_EDGES = (0.3, 0.5, 0.7, 0.85)  # far from the shares tutorial 05's model gets
BIT_EDGES = (0.15, 0.5)


@uses_student_code
def plot_mean_attention(model: nn.Module, X: torch.Tensor, y: torch.Tensor,
                        idx: Sequence[int]) -> dict[str, float]:
    """Mean readout attention per position, split by label, relevant positions highlighted.

    Prints (as bands: the digits of a trained model differ between CPUs) and returns what
    the figure shows: the weight on the relevant positions for each label, the mean weight
    of a relevant position whose bit is 0 or 1 in samples labelled 0, and the largest mean
    weight of any other position, next to the uniform 1/T.
    """
    weights = readout_attention(model, X)
    T = weights.shape[1]
    labels, bits = y[:, 0].cpu(), X.cpu()
    positions = np.arange(T)
    fig, ax = plt.subplots(figsize=(10.5, 3.6), layout="constrained")
    for i in idx:
        ax.axvspan(i - 0.5, i + 0.5, color="C2", alpha=0.18,
                   label="relevant position" if i == idx[0] else None)
    for offset, label, colour in ((-0.15, 0.0, "C1"), (0.15, 1.0, "C0")):
        rows = weights[labels == label]
        ax.errorbar(positions + offset, to_numpy(rows.mean(0)), yerr=to_numpy(rows.std(0)),
                    fmt="o", ms=4, color=colour, label=f"samples with y = {label:g}")
    ax.axhline(1 / T, ls=":", color="0.5", label=f"uniform, 1/T = {1 / T:.3f}")
    ax.set(title="Where the trained readout attends (mean ± s.d. over samples)",
           xlabel="position t", ylabel="attention weight")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    plt.show()
    relevant = list(idx)
    others = [t for t in range(T) if t not in relevant]
    negative = labels == 0
    by_bit = {bit: torch.cat([weights[negative & (bits[:, i] == bit), i] for i in relevant])
              for bit in (0, 1)}
    stats = {
        "share_y0": weights[negative][:, relevant].sum(1).mean().item(),
        "share_y1": weights[labels == 1][:, relevant].sum(1).mean().item(),
        "relevant_bit_0": by_bit[0].mean().item(),
        "relevant_bit_1": by_bit[1].mean().item(),
        "other_max": weights[:, others].mean(0).max().item(),
        "uniform": 1 / T,
    }
    below = "below" if stats["other_max"] < stats["uniform"] else "not below"
    print(f"weight on the {len(relevant)} relevant positions: y = 0 samples "
          f"{band(stats['share_y0'], SHARE_EDGES)}, y = 1 samples "
          f"{band(stats['share_y1'], SHARE_EDGES)}\n"
          f"in y = 0 samples, a relevant position whose bit is 0 gets "
          f"{band(stats['relevant_bit_0'], BIT_EDGES)}, one whose bit is 1 "
          f"{band(stats['relevant_bit_1'], BIT_EDGES)}\n"
          f"every other position, averaged over all samples: {below} the uniform 1/T = "
          f"{1 / T:.3f}")
    return stats


# ---------------------------------------------------------------------------------------------
# Experiment 2: samples needed to reach a target accuracy
# ---------------------------------------------------------------------------------------------

def fit_quietly(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, lr: float,
                max_steps: int = 300, stop_loss: float = 1e-3) -> int:
    """Full-batch Adam until the training loss falls below ``stop_loss``; returns the steps."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCELoss()
    model.train()
    step = 0
    for step in range(1, max_steps + 1):  # noqa: B007 - the last step is returned
        loss = loss_fn(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < stop_loss:
            break
    model.eval()
    return step


def samples_to_target(factory: ModelFactory, model_name: str, sparse_and_dataset: DatasetFn, *,
                      T: int, s: int = 2, seed: int = 0, target: float = 0.95,
                      sizes: Sequence[int] = (8, 16, 32, 64, 128, 256, 512, 1024),
                      m_val: int = 1000, max_steps: int = 300,
                      device: torch.device | None = None) -> int | None:
    """Smallest training-set size in ``sizes`` whose trained model reaches ``target``.

    For each size (in increasing order) a fresh model is trained on fresh data (same
    relevant positions, chosen by ``seed``) and scored on ``m_val`` held-out samples.
    Returns ``None`` when even the largest size falls short.
    """
    device = device or torch.device("cpu")
    idx = pick_positions(T, s, seed)
    torch.manual_seed(1_000 + seed)
    X_val, y_val = sparse_and_dataset(m_val, T, idx)
    X_val, y_val = X_val.to(device), y_val.float().to(device)
    for m in sorted(sizes):
        torch.manual_seed(seed * 7919 + m)
        X, y = sparse_and_dataset(m, T, idx)
        model = initialise_classifier(factory(T), seed * 7919 + m).to(device)
        fit_quietly(model, X.to(device), y.float().to(device), lr=LEARNING_RATES[model_name],
                    max_steps=max_steps)
        _, accuracy = evaluate(model, X_val, y_val)
        if accuracy >= target:
            return m
    return None


@uses_student_code
def sample_complexity_sweep(attention_class: ModelFactory, sparse_and_dataset: DatasetFn, *,
                            T_values: Sequence[int], seeds: Sequence[int], target: float = 0.95,
                            s: int = 2, sizes: Sequence[int] = (8, 16, 32, 64, 128, 256, 512, 1024),
                            max_steps: int = 300, device: torch.device | None = None,
                            progress: bool = True) -> list[dict]:
    """Rows ``{T, model, seed, samples_to_target}`` for every T, model and seed."""
    factories = {"attention": attention_class, "MLP": BinaryMLP}
    jobs = [(T, name, seed) for T in T_values for name in factories for seed in seeds]
    rows = []
    for T, name, seed in progress_bar(jobs, desc="sample-complexity search", disable=not progress):
        with single_thread():
            found = samples_to_target(factories[name], name, sparse_and_dataset, T=T, s=s,
                                      seed=seed, target=target, sizes=sizes,
                                      max_steps=max_steps, device=device)
        rows.append({"T": T, "model": name, "seed": seed, "samples_to_target": found})
    return rows


def medians(rows: Sequence[dict]) -> list[dict]:
    """Median samples-to-target per (T, model); a search that never reached it counts as inf."""
    groups: dict[tuple[int, str], list[float]] = {}
    for r in rows:
        value = r["samples_to_target"]
        groups.setdefault((int(r["T"]), r["model"]), []).append(
            math.inf if value in (None, "", "None") else float(value))
    return [{"T": T, "model": name, "median": statistics.median(values), "n_seeds": len(values)}
            for (T, name), values in sorted(groups.items())]


def write_csv(rows: Sequence[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["T", "model", "seed", "samples_to_target"])
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "samples_to_target": "" if r["samples_to_target"] is None
                             else r["samples_to_target"]})


def read_csv(path: Path | str = SAMPLE_COMPLEXITY_CSV) -> list[dict]:
    """Rows of a sample-complexity CSV (an empty cell = target never reached)."""
    with open(path, newline="") as handle:
        return [{"T": int(r["T"]), "model": r["model"], "seed": int(r["seed"]),
                 "samples_to_target": int(r["samples_to_target"]) if r["samples_to_target"]
                 else None} for r in csv.DictReader(handle)]


def spreads(rows: Sequence[dict]) -> dict[tuple[int, str], tuple[float, float]]:
    """(T, model) -> the fewest and the most samples any seed needed (inf: never reached)."""
    groups: dict[tuple[int, str], list[float]] = {}
    for r in rows:
        value = r["samples_to_target"]
        groups.setdefault((int(r["T"]), r["model"]), []).append(
            math.inf if value in (None, "", "None") else float(value))
    return {key: (min(values), max(values)) for key, values in groups.items()}


def print_medians(rows: Sequence[dict]) -> None:
    """Median samples-to-target per (T, model), and the range over the seeds."""
    ranges = spreads(rows)
    print(f"{'T':>4} {'model':<10} {'median samples':>15} {'fewest-most over seeds':>24} "
          f"{'seeds':>6}")
    for r in medians(rows):
        shown = "not reached" if math.isinf(r["median"]) else f"{r['median']:g}"
        low, high = ranges[r["T"], r["model"]]
        spread = f"{low:g}-{'never' if math.isinf(high) else f'{high:g}'}"
        print(f"{r['T']:>4} {r['model']:<10} {shown:>15} {spread:>24} {r['n_seeds']:>6}")


def plot_sample_complexity(rows: Sequence[dict], *, target: float = 0.95,
                           title: str = "Samples needed vs context length",
                           live_rows: Sequence[dict] | None = None,
                           save_to: Path | None = None) -> None:
    """Median samples-to-target per model against T (log-log), individual seeds as dots."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name in MODEL_NAMES:
        mine = [r for r in rows if r["model"] == name]
        if not mine:
            continue
        colour = MODEL_COLOURS[name]
        reached = [r for r in mine if r["samples_to_target"] is not None]
        jitter = {"attention": 0.96, "MLP": 1.04}[name]
        ax.scatter([r["T"] * jitter for r in reached], [r["samples_to_target"] for r in reached],
                   color=colour, alpha=0.35, s=18,
                   label=f"{name}: one seed (faint dots; a number: that many seeds)")
        # Seeds that needed the same number of samples share a dot: say how many.
        counts = Counter((r["T"], r["samples_to_target"]) for r in reached)
        for (T, samples), n in counts.items():
            if n > 1:
                ax.annotate(str(n), (T * jitter, samples), xytext=(-3 if jitter < 1 else 3, 0),
                            textcoords="offset points", ha="right" if jitter < 1 else "left",
                            va="center", fontsize=7, color=colour)
        table = [r for r in medians(mine) if not math.isinf(r["median"])]
        ax.plot([r["T"] for r in table], [r["median"] for r in table], marker="o", color=colour,
                label=f"{name}: median over seeds")
        missed = [r for r in mine if r["samples_to_target"] is None]
        if missed:
            ax.scatter([r["T"] * jitter for r in missed],
                       [max(x["samples_to_target"] or 0 for x in rows) * 1.6] * len(missed),
                       marker="^", color=colour, label=f"{name}: not reached")
    if live_rows:
        ax.scatter([r["T"] for r in live_rows if r["samples_to_target"]],
                   [r["samples_to_target"] for r in live_rows if r["samples_to_target"]],
                   marker="*", s=160, facecolor="none", edgecolor="k", zorder=5,
                   label="your model, live run")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set(title=title, xlabel="context length T (log scale)",
           ylabel=f"training samples to reach {target:.0%}")
    ax.legend(loc="upper left", fontsize=8)
    if save_to is not None:
        save_to.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=120)
    plt.show()


# ---------------------------------------------------------------------------------------------
# The rule token: attention as routing
# ---------------------------------------------------------------------------------------------

@uses_student_code
def train_rule_model(attention_class: Callable[[int], nn.Module], sparse_and_dataset: DatasetFn,
                     *, T: int = 16, s: int = 2, m: int = 256, epochs: int = 80,
                     batch_size: int | None = None, seed: int = 0,
                     device: torch.device | None = None) -> dict:
    """Train the student's classifier on the rule-token task; returns model, data and history."""
    chosen = pick_positions(T - 1, 2 * s, seed)
    order = torch.randperm(2 * s, generator=torch.Generator().manual_seed(seed)).tolist()
    idx_0 = sorted(chosen[i] for i in order[:s])
    idx_1 = sorted(chosen[i] for i in order[s:])
    torch.manual_seed(seed)
    X, y = rule_dataset(sparse_and_dataset, m, T, idx_0, idx_1)
    X_val, y_val = rule_dataset(sparse_and_dataset, 300, T, idx_0, idx_1)
    model = initialise_classifier(attention_class(T), seed)
    with single_thread():
        history = train(model, X, y, epochs=epochs, lr=LEARNING_RATES["attention"],
                        batch_size=batch_size or m, val_inputs=X_val, val_target=y_val,
                        device=device, seed=seed, description="attention, rule task")
    return {"model": model, "X_val": X_val, "y_val": y_val, "idx_0": idx_0, "idx_1": idx_1,
            "history": history}


@uses_student_code
def plot_rule_graph(model: nn.Module, X: torch.Tensor, idx_0: Sequence[int],
                    idx_1: Sequence[int]) -> dict[str, float]:
    """For each rule value, lines from every input position to the readout, coloured and
    thickened by the mean attention the readout pays to that position. Returns, over both
    rules, the smallest share of the set that should be read and the largest mean weight of
    one position outside A, B and the rule token."""
    weights = readout_attention(model, X)
    T = weights.shape[1]
    rule = X[:, -1].cpu()
    means = [weights[rule == r].mean(0) for r in (0, 1)]
    top = max(float(m_.max()) for m_ in means)
    norm = Normalize(vmin=0.0, vmax=top)
    cmap = plt.get_cmap("plasma_r")
    fig, axes = plt.subplots(2, 1, figsize=(10, 7.0), layout="constrained")
    centre = (T - 1) / 2
    for r, (ax, mean) in enumerate(zip(axes, means, strict=True)):
        for t in range(T):
            w = float(mean[t])
            ax.plot([t, centre], [0, 1], color=cmap(norm(w)), lw=0.5 + 7 * w / top,
                    alpha=0.35 + 0.65 * w / top, zorder=1)
        colours = ["C1" if t in idx_0 else "C0" if t in idx_1 else "C2" if t == T - 1 else "0.6"
                   for t in range(T)]
        ax.scatter(range(T), [0] * T, c=colours, s=90, zorder=3)
        ax.scatter([centre], [1], c="k", s=160, zorder=3)
        ax.text(centre + 0.3, 1.0, "readout (last position's query)", va="center", fontsize=9)
        for t in range(T):
            name = "rule" if t == T - 1 else ("A" if t in idx_0 else "B" if t in idx_1 else "")
            if name:
                ax.text(t, -0.16, name, ha="center", fontsize=9, color=colours[t])
        share_0, share_1 = float(mean[list(idx_0)].sum()), float(mean[list(idx_1)].sum())
        share_rule = float(mean[T - 1])
        ax.set_title(f"Rule = {r}: the readout should read set {'A' if r == 0 else 'B'}\n"
                     f"weight on A: {share_0:.2f}, on B: {share_1:.2f}, on the rule token: "
                     f"{share_rule:.2f}, on the other {T - 1 - len(idx_0) - len(idx_1)} "
                     f"positions together: {1 - share_0 - share_1 - share_rule:.2f}",
                     fontsize=10)
        ax.set(xlabel="input position t", ylabel="", xlim=(-0.8, T - 0.2), ylim=(-0.3, 1.15))
        ax.set_yticks([])
        ax.grid(False)
        fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                     label="mean attention weight")
    plt.show()
    others = [t for t in range(T - 1) if t not in idx_0 and t not in idx_1]
    return {"read_share": min(float(means[0][list(idx_0)].sum()),
                              float(means[1][list(idx_1)].sum())),
            "other_max": max(float(m_[others].max()) for m_ in means)}

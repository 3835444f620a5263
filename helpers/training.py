"""Small, seeded training loops shared by the tutorials: :func:`train` for classifiers
(epochs over a data set), :func:`train_next_token` for language models (steps)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn

from helpers.seed import get_device
from helpers.widgets import progress_bar

Task = Literal["binary", "binary_logits", "multiclass"]
Inputs = torch.Tensor | Sequence[torch.Tensor]

_LOSSES: dict[str, Callable[[], nn.Module]] = {
    "binary": nn.BCELoss,  # the model outputs probabilities in [0, 1]
    "binary_logits": nn.BCEWithLogitsLoss,
    "multiclass": nn.CrossEntropyLoss,  # the model outputs logits (..., n_classes)
}


@contextmanager
def single_thread() -> Iterator[None]:
    """Run PyTorch on one CPU thread inside the block (or decorated function).

    The course's models are tiny: extra threads only add synchronisation, and on a busy
    machine they can make each step many times slower. One thread also fixes the order
    of floating-point reductions, so printed numbers do not depend on the core count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _as_tuple(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def _n_correct(output: torch.Tensor, target: torch.Tensor, task: Task) -> float:
    if task == "multiclass":
        return (output.argmax(dim=-1) == target).sum().item()
    threshold = 0.5 if task == "binary" else 0.0
    return ((output > threshold).float() == target).sum().item()


@torch.no_grad()
def evaluate(model: nn.Module, inputs: Inputs, target: torch.Tensor, *, task: Task = "binary",
             batch_size: int = 1024) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on a data set, without gradients."""
    device = next(model.parameters()).device
    inputs = tuple(t.to(device) for t in _as_tuple(inputs))
    target = target.to(device)
    loss_fn = _LOSSES[task](reduction="sum")
    was_training = model.training
    model.eval()
    total_loss = total_correct = 0.0
    for start in range(0, len(target), batch_size):
        batch = tuple(t[start:start + batch_size] for t in inputs)
        output = model(*batch)
        y = target[start:start + batch_size]
        total_loss += loss_fn(output, y).item()
        total_correct += _n_correct(output, y, task)
    model.train(was_training)
    n_items = target.numel()
    return total_loss / n_items, total_correct / n_items


Batch = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def train_next_token(model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer,
                     steps: int, *, description: str = "training",
                     progress: bool = True) -> list[float]:
    """Train a language model for ``steps`` steps and return the loss of each step.

    ``batch()`` gives ``(inputs, targets)`` of shape ``(B, T)``; the model maps inputs to
    logits ``(B, T, vocab)`` and every position is scored against its target with
    cross-entropy. The model is left in eval mode.
    """
    history = []
    model.train()
    with single_thread():
        for _ in progress_bar(range(steps), desc=description, disable=not progress,
                              leave=False):
            inputs, targets = batch()
            loss = nn.functional.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            history.append(loss.item())
    model.eval()
    return history


@single_thread()
def train(
    model: nn.Module,
    inputs: Inputs,
    target: torch.Tensor,
    *,
    task: Task = "binary",
    epochs: int = 20,
    lr: float = 1e-2,
    batch_size: int = 64,
    weight_decay: float = 0.0,
    val_inputs: Inputs | None = None,
    val_target: torch.Tensor | None = None,
    device: torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    description: str = "training",
) -> dict[str, list[float]]:
    """Train ``model`` with Adam and return its history.

    ``inputs`` is a tensor or a tuple of tensors passed to ``model(*batch)``;
    ``task`` picks the loss (see ``_LOSSES``). The history holds one value per
    epoch under ``train_loss``, ``train_acc`` and, with validation data,
    ``val_loss`` and ``val_acc``. A tqdm bar shows progress over epochs.
    """
    if task not in _LOSSES:
        raise ValueError(f"task must be one of {sorted(_LOSSES)}, got {task!r}")
    inputs = _as_tuple(inputs)
    if any(len(t) != len(target) for t in inputs):
        raise ValueError(
            "every input tensor needs one row per target; got lengths "
            f"{[len(t) for t in inputs]} for {len(target)} targets"
        )
    device = device or get_device()
    model.to(device)
    inputs = tuple(t.to(device) for t in inputs)
    target = target.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = _LOSSES[task]()
    generator = torch.Generator().manual_seed(seed)  # shuffling independent of global state
    history: dict[str, list[float]] = {"train_loss": [], "train_acc": []}
    if val_target is not None:
        history.update(val_loss=[], val_acc=[])

    bar = progress_bar(range(epochs), desc=description, disable=not progress, leave=False)
    for _ in bar:
        model.train()
        order = torch.randperm(len(target), generator=generator).to(device)
        for start in range(0, len(target), batch_size):
            idx = order[start:start + batch_size]
            loss = loss_fn(model(*(t[idx] for t in inputs)), target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        train_loss, train_acc = evaluate(model, inputs, target, task=task)
        history["train_loss"].append(train_loss)
        history["train_acc"].append(train_acc)
        postfix = {"loss": f"{train_loss:.3f}", "acc": f"{train_acc:.2f}"}
        if val_target is not None and val_inputs is not None:
            val_loss, val_acc = evaluate(model, val_inputs, val_target, task=task)
            history["val_loss"].append(val_loss)
            history["val_acc"].append(val_acc)
            postfix["val_acc"] = f"{val_acc:.2f}"
        bar.set_postfix(postfix)
    model.eval()
    return history


def band(value: float, edges: Sequence[float] = (0.4, 0.6, 0.8, 0.95)) -> str:
    """The band ``value`` (an accuracy, a probability) falls in: ``"0.60-0.80"``,
    ``"≥ 0.95"`` or ``"< 0.40"``.

    Trained models reach slightly different numbers on different CPUs (PyTorch's AVX2,
    AVX-512 and ARM kernels round differently, and training amplifies it). A notebook prints
    the band instead of the digits, with ``edges`` chosen far from the values it gets, so its
    output is the same everywhere.
    """
    edges = sorted(edges)
    if value < edges[0]:
        return f"< {edges[0]:.2f}"
    for low, high in zip(edges, edges[1:], strict=False):
        if value < high:
            return f"{low:.2f}-{high:.2f}"
    return f"≥ {edges[-1]:.2f}"


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

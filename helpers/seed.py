"""Reproducibility and device selection: one place every notebook goes through."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def set_seed(seed: int = 0, *, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and every CUDA device).

    With ``deterministic=True`` on a CUDA machine PyTorch is asked for deterministic
    kernels where they exist (a warning, not an error, where they do not), so a notebook
    prints the same numbers on every run on the same machine. On a CPU the course's
    kernels are deterministic already (one thread, see ``helpers.training``), and the
    switch would cost about a second of every notebook's start-up, so it is left off.

    Returns a ``torch.Generator`` seeded with ``seed`` for code that wants its
    own stream of random numbers.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"set_seed expects a non-negative integer seed, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic and torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def get_device(prefer: str | None = None) -> torch.device:
    """The device notebooks compute on: CUDA when present, else CPU.

    ``prefer`` (or the ``COURSE_DEVICE`` environment variable) overrides the
    choice, e.g. ``"cpu"`` to reproduce the committed CPU outputs on a GPU box.
    """
    choice = prefer or os.environ.get("COURSE_DEVICE")
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"Device {choice!r} was requested but CUDA is not available here; "
                "use 'cpu' or unset COURSE_DEVICE."
            )
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")

"""What a call of a student's function did besides returning: the arguments it changed in
place and, when observed, the torch functions it used.

The self-checks use these in the student's own process; the grader's probe uses the same
functions in the student's kernel. They only report: the checks decide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

MAX_DEPTH = 8
MAX_CHANGED = 20  # argument paths reported as changed in place
# Functions that take an index tensor and that a GPU refuses to run with a CPU index while
# PyTorch's meta device (the checks' stand-in for a GPU) lets it through.
INDEX_TAKERS = frozenset({"gather", "index_select", "take", "scatter", "scatter_", "scatter_add",
                          "scatter_add_", "scatter_reduce", "scatter_reduce_", "index_add",
                          "index_add_", "index_copy", "index_copy_", "index_fill", "index_fill_"})
# Methods that copy a tensor's numbers to the CPU (or NumPy, which holds CPU numbers only):
# applied to a tensor on a GPU, what follows computes on the CPU and returns CPU tensors.
COPIES_TO_CPU = frozenset({"cpu", "numpy", "__array__"})
# Methods that may copy to the CPU, depending on their device argument.
MAY_COPY_TO_CPU = frozenset({"to", "as_tensor"})
# Methods that read a tensor's numbers into Python: legal on a GPU (they wait for it), so
# they are only reported.
READS_VALUES = frozenset({"tolist", "item"})


@dataclass(frozen=True)
class Observation:
    """The torch functions a call used (name -> count), the ones that made a CPU tensor
    with values, the most elements of any tensor it made, the index-taking functions it
    gave a CPU index for an input elsewhere, and the methods it applied to a tensor held
    elsewhere to copy or read its numbers on the CPU ("cpu", "numpy", "to", "tolist"...)."""

    calls: dict[str, int] = field(default_factory=dict)
    cpu_tensors: tuple[str, ...] = ()
    largest: int = 0
    cpu_indices: tuple[str, ...] = ()
    off_device: tuple[str, ...] = ()

    @property
    def copied_to_cpu(self) -> tuple[str, ...]:
        """The methods among ``off_device`` that moved numbers to the CPU (not mere reads)."""
        return tuple(name for name in self.off_device if name not in READS_VALUES)


@dataclass(frozen=True)
class CallReport:
    """What a call did besides returning a value."""

    changed: tuple[str, ...] = ()  # argument paths changed in place: "args[1]", "mask", ...
    observed: Observation | None = None
    # A digest of the global generator's state right after the call ("" when unknown): two
    # calls started from different seeds that end in the same state reseeded it.
    rng_after: str = ""


def tensors_in(value: Any, path: str, depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor in an argument, inside tuples, lists and dicts too."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, tuple | list) and depth < MAX_DEPTH:
        for i, item in enumerate(value):
            yield from tensors_in(item, f"{path}[{i}]", depth + 1)
    elif isinstance(value, dict) and depth < MAX_DEPTH:
        for key, item in value.items():
            yield from tensors_in(item, f"{path}[{key!r}]", depth + 1)


def snapshot(args: tuple | list, kwargs: dict) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Copies of every argument tensor, to compare after the call (meta tensors hold no
    values to compare)."""
    named = [*(t for i, a in enumerate(args) for t in tensors_in(a, f"args[{i}]")),
             *(t for k, a in kwargs.items() for t in tensors_in(a, str(k)))]
    return [(path, t, t.detach().clone()) for path, t in named if not t.is_meta]


def changed(copies: list[tuple[str, torch.Tensor, torch.Tensor]]) -> tuple[str, ...]:
    """The paths of argument tensors whose values, shape or dtype changed since the copy."""
    found = []
    for path, tensor, before in copies:
        now = tensor.detach()
        same = (now.shape == before.shape and now.dtype == before.dtype
                and bool(((now == before) | ((now != now) & (before != before))).all()))
        if not same:
            found.append(path)
    return tuple(found[:MAX_CHANGED])


class Observer(TorchFunctionMode):
    """Counts the torch functions a call uses, notes which made a CPU tensor with values
    (a device bug when the inputs were elsewhere) and the most elements of any tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {}
        self.cpu: list[str] = []
        self.largest = 0
        self.cpu_index: list[str] = []
        self.off_device: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", type(func).__name__)
        if name in INDEX_TAKERS and len(self.cpu_index) < 50 and _cpu_index(args, kwargs):
            self.cpu_index.append(name)
        # Noted before the call: on the meta device these raise ("no data").
        if len(self.off_device) < 50 and _copies_off_device(name, args, kwargs):
            self.off_device.append(name)
        out = func(*args, **(kwargs or {}))
        if name != "__get__" and len(self.calls) < 500:
            self.calls[name] = self.calls.get(name, 0) + 1
        for tensor in out if isinstance(out, tuple | list) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
                if tensor.device.type == "cpu" and tensor.dim() > 0 and len(self.cpu) < 50:
                    self.cpu.append(name)
        return out

    def observation(self) -> Observation:
        return Observation(dict(self.calls), tuple(self.cpu), self.largest,
                           tuple(self.cpu_index), tuple(self.off_device))


def _copies_off_device(name: str, args: tuple, kwargs: dict | None) -> bool:
    """Whether a call copies (or reads) the numbers of a tensor held off the CPU to the CPU:
    ``.cpu()``, ``.numpy()``, ``.tolist()``, ``.item()``, ``.to("cpu")``..."""
    if name not in COPIES_TO_CPU | MAY_COPY_TO_CPU | READS_VALUES:
        return False
    if not (args and isinstance(args[0], torch.Tensor) and args[0].device.type != "cpu"):
        return False
    if name not in MAY_COPY_TO_CPU:
        return True
    for target in (*args[1:], (kwargs or {}).get("device")):
        if isinstance(target, torch.Tensor):
            if name == "to" and target.device.type == "cpu":
                return True  # x.to(other), with other on the CPU
        elif isinstance(target, str | torch.device):
            try:
                if torch.device(target).type == "cpu":
                    return True
            except (RuntimeError, TypeError):
                continue
    return False


def _cpu_index(args: tuple, kwargs: dict | None) -> bool:
    """Whether an index-taking call got a CPU tensor of indices for an input held elsewhere."""
    tensors = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
    return (len(tensors) > 1 and tensors[0].device.type != "cpu"
            and any(t.device.type == "cpu" and t.dim() > 0 for t in tensors[1:]))


# What ``torch.initial_seed()`` answers inside a seeded call. Were it the call's own seed,
# a call that "stays reproducible" with ``torch.manual_seed(torch.initial_seed())`` would
# restart the very stream it was given and look like a right answer to every check; this way
# it restarts one fixed stream, whatever the seed, like any other reseeding call, and the
# randomness checks (two seeds, two results) see it.
REPORTED_SEED = 0x5EED_C0DE


def _report_initial_seed(seed: int) -> None:
    """Make ``torch.initial_seed()`` answer ``seed`` without moving the random stream (the
    seed is the first 8 bytes of the CPU generator's state, stored only to be reported)."""
    state = torch.random.get_rng_state()
    patched = state.clone()
    patched[:8] = torch.frombuffer(bytearray(seed.to_bytes(8, "little")), dtype=torch.uint8)
    torch.random.set_rng_state(patched)
    if torch.initial_seed() != seed:  # another layout of the state: leave it alone
        torch.random.set_rng_state(state)


@contextmanager
def random_state_kept(seed: int | None = None) -> Iterator[None]:
    """Run a call with the global generator seeded (if ``seed`` is given), then put the
    generator back as it was: checking an answer never moves the student's random stream."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
            _report_initial_seed(REPORTED_SEED)
        yield


def rng_digest() -> str:
    """A short digest of the global (CPU) generator's state."""
    return hashlib.sha256(torch.random.get_rng_state().numpy().tobytes()).hexdigest()[:16]


def call_and_report(fn: Any, args: tuple | list, kwargs: dict, *, seed: int | None = None,
                    observe: bool = False) -> tuple[Any, CallReport]:
    """Call ``fn`` with the random state kept; return its value and what else it did."""
    copies = snapshot(args, kwargs)
    observer = Observer() if observe else None
    with random_state_kept(seed):
        try:
            if observer is None:
                value = fn(*args, **kwargs)
            else:
                try:
                    with observer:
                        value = fn(*args, **kwargs)
                except Exception as error:
                    error.observed = observer.observation()  # what it did before it failed
                    raise
        except Exception as error:
            # The arguments as they were passed in, and those the call changed before it
            # failed: a crash report must show the former and name the latter.
            error.arguments_before = {path: before for path, _, before in copies}
            error.changed_in_place = changed(copies)
            raise
        after = rng_digest()  # before the generator is put back
    observation = observer.observation() if observer is not None else None
    return value, CallReport(changed(copies), observation, after)

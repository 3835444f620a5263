"""Shared pieces of the hidden tests: the check class, and undoing tampering.

Hidden tests run in the student's kernel (that is how nbgrader works), after the
student's code. A submission may have replaced what the checks rely on:
``torch.allclose = lambda *a, **k: True``, a method of the check framework,
``AssertionError``... The grader's sandboxed kernel imports this package before any
student code runs, and :func:`trust_current_state` records the attributes of the
modules and classes the checks use. Every ``HiddenCheck`` puts them back first.
"""

from __future__ import annotations

import builtins
import sys
import types

import torch
import torch._dynamo  # noqa: F401 - first use of an optimizer imports it, and it rewraps
import torch.nn.functional  # torch.manual_seed: do that before the state is recorded

from helpers.checks.framework import SelfCheck

_BUILTIN_KINDS = (type, types.BuiltinFunctionType)
_KERNEL_OWNED = {"input", "breakpoint"}  # ipykernel swaps these in and out around each cell
_setattr, _delattr, _sorted, _print = setattr, delattr, sorted, print


def _watched_modules() -> list[types.ModuleType]:
    ours = [m for name, m in list(sys.modules.items())
            if name.split(".")[0] in ("helpers", "hidden_tests") and m is not None]
    return [torch, torch.nn, torch.nn.functional, torch.linalg, *ours]


def _watched_classes(modules: list[types.ModuleType]) -> list[type]:
    classes = [torch.Tensor, torch.nn.Module]
    for module in modules[4:]:  # the course's own classes
        classes += [v for v in vars(module).values()
                    if isinstance(v, type) and v.__module__ == module.__name__]
    return classes


class _Snapshot:
    """The attributes of builtins, torch and the course's modules and classes, as recorded."""

    def __init__(self) -> None:
        modules = _watched_modules()
        self.builtins = {k: v for k, v in vars(builtins).items()
                         if isinstance(v, _BUILTIN_KINDS) and k not in _KERNEL_OWNED}
        self.modules = [(m, dict(vars(m))) for m in modules]
        self.classes = [(c, dict(vars(c))) for c in dict.fromkeys(_watched_classes(modules))]

    def restore(self) -> list[str]:
        """Put back everything that changed; return the names put back."""
        changed = []
        current = vars(builtins)
        for key, value in self.builtins.items():
            if current.get(key) is not value:
                current[key] = value
                changed.append(key)
        for owner, recorded in self.modules + self.classes:
            now = dict(vars(owner))
            for key, value in recorded.items():
                if now.get(key, _MISSING) is not value:
                    _setattr(owner, key, value)
                    changed.append(f"{owner.__name__}.{key}")
            if isinstance(owner, type):  # an added attribute can shadow an inherited one
                for key in now.keys() - recorded.keys():
                    _delattr(owner, key)
                    changed.append(f"{owner.__name__}.{key}")
        return changed


_MISSING = object()
_trusted: list[_Snapshot] = []  # filled in place: rebinding would look like tampering


def trust_current_state() -> None:
    """Record the present state as the trusted one (the sandbox calls this before student code)."""
    _trusted[:] = [_Snapshot()]


trust_current_state()


def undo_tampering() -> None:
    """Restore the trusted state; tell the student when their code had changed it."""
    changed = _trusted[0].restore()
    if changed:
        _print("Note: the grader undid changes your code made to "
               + ", ".join(_sorted(changed)[:5]) + (", ..." if len(changed) > 5 else "")
               + " before running this test.")


class HiddenCheck(SelfCheck):
    """A SelfCheck whose messages say they come from the hidden tests."""

    def __init__(self, exercise: str) -> None:
        undo_tampering()
        super().__init__(f"{exercise} (hidden test)")

    def passed(self) -> None:  # hidden tests stay quiet on success
        pass

"""The small engine behind every self-check (and the grader's hidden tests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import torch

from helpers.exercises import not_finished, not_written, unfinished

# Captured when helpers is imported (the setup cell, before any student code runs), so a
# submission that replaces torch.allclose cannot make every comparison pass.
_allclose = torch.allclose
_isfinite = torch.isfinite
_isclose = torch.isclose


class CheckFailed(AssertionError):
    """A check failed. The message is meant for students: what, expected, got, likely mistake."""


def describe(value: Any, max_items: int = 6) -> str:
    """A short, readable description of a value for failure messages."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().flatten()
        shown = ", ".join(_fmt(v) for v in flat[:max_items].tolist())
        more = ", ..." if flat.numel() > max_items else ""
        return f"tensor of shape {tuple(value.shape)}, dtype {value.dtype}: [{shown}{more}]"
    if isinstance(value, tuple | list):
        return f"{type(value).__name__} of {len(value)}: (" + ", ".join(
            describe(v, 3) for v in value[:3]) + (", ..." if len(value) > 3 else "") + ")"
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _ranges(indices: list[int], at_most: int = 6) -> str | None:
    """[0, 1, 2, 5] -> "0-2, 5"; None when that takes more than ``at_most`` pieces."""
    parts, start = [], None
    for i, value in enumerate(indices):
        if start is None:
            start = value
        if i + 1 == len(indices) or indices[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts) if len(parts) <= at_most else None


def where_different(actual: torch.Tensor, expected: torch.Tensor, *, atol: float, rtol: float,
                    dims: Sequence[str] | None = None) -> str:
    """Where two same-shaped tensors differ: how many entries, the first one, and along
    which indices of each dimension (when the differences are confined to some of them)."""
    a, e = actual.double(), expected.double()
    bad = ~_isclose(a, e, atol=atol, rtol=rtol)
    if a.dim() == 0:
        return f"expected {_fmt(e.item())}, got {_fmt(a.item())}"
    n_bad, total = int(bad.sum()), bad.numel()
    if n_bad == 0:
        return ""
    first = tuple(bad.nonzero()[0].tolist())
    text = (f"{n_bad} of {total} entries differ; the first at index {list(first)}: "
            f"expected {_fmt(e[first].item())}, got {_fmt(a[first].item())}")
    confined = []
    for d in range(bad.dim()):
        if bad.shape[d] < 2:
            continue
        hit = bad.transpose(0, d).reshape(bad.shape[d], -1).any(dim=1).nonzero().flatten()
        hit = hit.tolist()
        listed = _ranges(hit)
        if len(hit) < bad.shape[d] and listed is not None:
            name = dims[d] if dims is not None and d < len(dims) else f"dimension {d}"
            confined.append(f"{name} {listed} only")
    if confined:
        text += "; differences at " + ", ".join(confined)
    return text


def shape_difference(got: tuple[int, ...], wanted: tuple[int, ...]) -> str | None:
    """A plain description of how two shapes relate, when there is a simple one."""
    if len(got) + 1 == len(wanted):
        for i in range(len(wanted)):
            if wanted[:i] + wanted[i + 1:] == got:
                return f"dimension {i} (of size {wanted[i]}) is missing"
    if len(got) == len(wanted) + 1:
        for i in range(len(got)):
            if got[:i] + got[i + 1:] == wanted and got[i] == 1:
                return f"an extra dimension of size 1 at position {i}"
    if len(got) == len(wanted) and sorted(got) == sorted(wanted) and got != wanted:
        return "the same sizes in a different order"
    return None


class SelfCheck:
    """Collects the checks of one exercise; fails at the first broken one.

    A failure says what was checked, what was expected, what came back and, for a
    comparison of tensors, where they differ. It names a *likely mistake* only when the
    result has that mistake's signature: it matches what the known wrong variant computes
    (``mistakes`` of :meth:`close`, ``diagnoses`` of :meth:`expect`), or the failed
    condition can have no other cause (the ``likely`` argument).

    >>> check = SelfCheck("stable_softmax")
    >>> check.expect(True, "output is a tensor", expected="a tensor", got="a tensor")
    >>> check.passed()
    ✅ stable_softmax: all 1 checks passed.
    """

    def __init__(self, exercise: str) -> None:
        self.exercise = exercise
        # The exercise's own name: subclasses decorate `exercise` ("... (hidden test)").
        self.name = exercise.split(" (")[0]
        self.n_passed = 0

    # -- failing -----------------------------------------------------------------
    def fail(self, check: str, *, expected: str, got: str, likely: str | None = None,
             where: str | None = None) -> None:
        lines = [
            f"{self.exercise}: check {self.n_passed + 1} failed: {check}",
            f"  expected: {expected}",
            f"  got:      {got}",
        ]
        if where:
            lines.append(f"  where:    {where}")
        if likely:
            lines.append(f"  likely mistake: {likely}")
        # `from None`: the student needs the message, not our traceback.
        raise CheckFailed("\n".join(lines)) from None

    def expect(self, condition: bool, check: str, *, expected: str, got: str,
               likely: str | None = None, where: str | None = None,
               diagnoses: Mapping[str, Any] | None = None) -> None:
        """Pass when ``condition`` holds; otherwise fail with the given words.

        ``likely`` is named only for a condition that identifies the mistake by itself.
        ``diagnoses`` maps a mistake to its signature (a bool, or a callable returning one,
        evaluated only on failure): the first signature that holds is named.
        """
        if not condition:
            for description, signature in (diagnoses or {}).items():
                if signature() if callable(signature) else signature:
                    likely = description
                    break
            self.fail(check, expected=expected, got=got, likely=likely, where=where)
        self.n_passed += 1

    # -- running the student's code ---------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the student's function; turn a crash into a readable failure.

        ``NotImplementedError`` from this exercise passes through unchanged: it means "not
        done yet". From another exercise's stub it says which exercise to finish first.
        """
        if not callable(fn):
            self.fail(f"{self.name} is callable", expected="a function or class",
                      got=describe(fn))
        try:
            return fn(*args, **kwargs)
        except NotImplementedError as error:
            self.not_implemented(error)
        except Exception as error:  # noqa: BLE001 - any crash is reported to the student
            shown = ", ".join([describe(a, 3) for a in args]
                              + [f"{k}={describe(v, 3)}" for k, v in kwargs.items()])
            self.fail(
                f"calling {getattr(fn, '__name__', self.name)} runs without an error",
                expected="a result",
                got=f"{type(error).__name__}: {error}",
                where=f"called with ({shown})",
            )

    def not_implemented(self, error: NotImplementedError) -> NoReturn:
        """Re-raise a stub's ``NotImplementedError`` saying which exercise to write first."""
        other = unfinished(error)
        if other is not None and other != self.name:
            raise not_finished(other, self.name) from None
        if other == self.name:
            raise not_written(other) from None
        raise error

    # -- common expectations ---------------------------------------------------------
    def tensor(self, value: Any, what: str) -> torch.Tensor:
        self.expect(isinstance(value, torch.Tensor), f"{what} is a torch.Tensor",
                    expected="a torch.Tensor", got=describe(value))
        return value

    def shape(self, value: torch.Tensor, shape: tuple[int, ...], what: str,
              likely: str | None = None) -> None:
        got = tuple(value.shape)
        self.expect(got == tuple(shape), f"{what} has shape {tuple(shape)}",
                    expected=f"shape {tuple(shape)}", got=f"shape {got}", likely=likely,
                    where=shape_difference(got, tuple(shape)))

    def finite(self, value: torch.Tensor, what: str, likely: str | None = None,
               diagnoses: Mapping[str, Any] | None = None) -> None:
        value = torch.as_tensor(value).detach()
        bad = ~_isfinite(value)
        where = None
        if bad.any() and value.dim() > 0:
            where = f"first at index {bad.nonzero()[0].tolist()}"
        self.expect(int(bad.sum()) == 0, f"{what} contains only finite numbers",
                    expected="no nan or inf", got=f"{int(bad.sum())} non-finite entries in "
                    f"{describe(value)}", likely=likely, where=where, diagnoses=diagnoses)

    def close(
        self,
        actual: torch.Tensor,
        expected: torch.Tensor,
        check: str,
        *,
        likely: str | None = None,
        mistakes: Mapping[str, torch.Tensor] | None = None,
        atol: float = 1e-5,
        rtol: float = 1e-4,
        dims: Sequence[str] | None = None,
        diagnoses: Mapping[str, Any] | None = None,
    ) -> None:
        """Compare with a tolerance (never ``==`` on floats).

        ``mistakes`` maps a description of a known mistake to the output that mistake would
        produce; when the actual output matches one of them (nan where it has nan), that
        description becomes the "likely mistake" of the message. ``likely`` is named only
        when this comparison cannot fail for another reason (e.g. "x is left unchanged").
        ``diagnoses`` (as for :meth:`expect`) name mistakes recognised by a property of the
        result rather than by its exact value. Otherwise the message says where the two
        differ (``dims`` names the dimensions).
        """
        actual = torch.as_tensor(actual).detach()
        expected = torch.as_tensor(expected).detach().to(actual.device)
        if actual.shape != expected.shape:
            self.shape(actual, tuple(expected.shape), check)
        ok = _allclose(actual.double(), expected.double(), atol=atol, rtol=rtol)
        if not ok:
            for description, wrong in (mistakes or {}).items():
                wrong = torch.as_tensor(wrong).detach().to(actual.device)
                if wrong.shape == actual.shape and _allclose(
                        actual.double(), wrong.double(), atol=atol, rtol=rtol, equal_nan=True):
                    likely = description
                    break
            else:
                for description, signature in (diagnoses or {}).items():
                    if signature() if callable(signature) else signature:
                        likely = description
                        break
            self.fail(check, expected=describe(expected), got=describe(actual), likely=likely,
                      where=where_different(actual, expected, atol=atol, rtol=rtol, dims=dims))
        self.n_passed += 1

    def passed(self) -> None:
        print(f"✅ {self.exercise}: all {self.n_passed} checks passed.")

"""The small engine behind every self-check (and the grader's hidden tests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

# Captured when helpers is imported (the setup cell, before any student code runs), so a
# submission that replaces torch.allclose cannot make every comparison pass.
_allclose = torch.allclose
_isfinite = torch.isfinite


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


class SelfCheck:
    """Collects the checks of one exercise; fails at the first broken one.

    >>> check = SelfCheck("stable_softmax")
    >>> check.expect(True, "output is a tensor", expected="a tensor", got="a tensor")
    >>> check.passed()
    ✅ stable_softmax: all 1 checks passed.
    """

    def __init__(self, exercise: str) -> None:
        self.exercise = exercise
        self.n_passed = 0

    # -- failing -----------------------------------------------------------------
    def fail(self, check: str, *, expected: str, got: str, likely: str | None = None) -> None:
        lines = [
            f"{self.exercise}: check {self.n_passed + 1} failed: {check}",
            f"  expected: {expected}",
            f"  got:      {got}",
        ]
        if likely:
            lines.append(f"  likely mistake: {likely}")
        # `from None`: the student needs the message, not our traceback.
        raise CheckFailed("\n".join(lines)) from None

    def expect(self, condition: bool, check: str, *, expected: str, got: str,
               likely: str | None = None) -> None:
        """Pass when ``condition`` holds; otherwise fail with the given words."""
        if not condition:
            self.fail(check, expected=expected, got=got, likely=likely)
        self.n_passed += 1

    # -- running the student's code ---------------------------------------------------
    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the student's function; turn a crash into a readable failure.

        ``NotImplementedError`` passes through unchanged: it means "not done yet".
        """
        if not callable(fn):
            self.fail(f"{self.exercise} is callable", expected="a function or class",
                      got=describe(fn))
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            raise
        except Exception as error:  # noqa: BLE001 - any crash is reported to the student
            shown = ", ".join([describe(a, 3) for a in args]
                              + [f"{k}={describe(v, 3)}" for k, v in kwargs.items()])
            self.fail(
                f"calling {getattr(fn, '__name__', self.exercise)} runs without an error",
                expected="a result",
                got=f"{type(error).__name__}: {error}",
                likely=f"the code fails for inputs ({shown}); run it on them and read the error",
            )

    # -- common expectations ---------------------------------------------------------
    def tensor(self, value: Any, what: str) -> torch.Tensor:
        self.expect(isinstance(value, torch.Tensor), f"{what} is a torch.Tensor",
                    expected="a torch.Tensor", got=describe(value),
                    likely="return a tensor (not a list, NumPy array or Python number)")
        return value

    def shape(self, value: torch.Tensor, shape: tuple[int, ...], what: str,
              likely: str | None = None) -> None:
        got = tuple(value.shape)
        self.expect(got == tuple(shape), f"{what} has shape {tuple(shape)}",
                    expected=f"shape {tuple(shape)}", got=f"shape {got}",
                    likely=likely or "check which dimensions you reduce, keep or transpose")

    def finite(self, value: torch.Tensor, what: str, likely: str | None = None) -> None:
        bad = (~_isfinite(value)).sum().item()
        self.expect(bad == 0, f"{what} contains only finite numbers",
                    expected="no nan or inf", got=f"{bad} non-finite entries in {describe(value)}",
                    likely=likely)

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
    ) -> None:
        """Compare with a tolerance (never ``==`` on floats).

        ``mistakes`` maps a description of a known mistake to the output that
        mistake would produce; when the actual output matches one of them, that
        description becomes the "likely mistake" of the message.
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
                        actual.double(), wrong.double(), atol=atol, rtol=rtol):
                    likely = description
                    break
            gap = (actual.double() - expected.double()).abs()
            gap = gap[_isfinite(gap)]
            worst = f"; largest difference {gap.max().item():.3g}" if gap.numel() else ""
            self.fail(check, expected=describe(expected), got=describe(actual) + worst,
                      likely=likely)
        self.n_passed += 1

    def passed(self) -> None:
        print(f"✅ {self.exercise}: all {self.n_passed} checks passed.")

"""Shared pieces of the hidden tests: the check class, fresh inputs, the student's code.

Hidden tests run on the trusted side: in the grader's own process while grading
(``pipeline.grading.verdicts``), never in the student's kernel. They reach the student's
definitions only through ``kernel_protocol.grader_side`` proxies, which send inputs and get
plain numbers back, so nothing a submission does to its own process (patched torch
functions, tensor subclasses, tracing hooks, replaced modules) reaches the checks.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from helpers.checks.calls import CallReport
from helpers.checks.framework import SelfCheck
from kernel_protocol.grader_side import global_seed, last_report, observing, student

_salt = [0]  # in place: the grader sets a fresh one for every hidden test it runs
F = TypeVar("F", bound=Callable[..., Any])


def set_salt(salt: int) -> None:
    """Make :func:`fresh_generator` draw inputs no submission can know in advance."""
    _salt[0] = salt % 2**62


def fresh_generator(seed: int) -> torch.Generator:
    """A generator for a hidden test's inputs: fixed in unit tests (salt 0), fresh while
    grading, so the inputs cannot be looked up in this file."""
    return torch.Generator().manual_seed((seed + 7919 * _salt[0]) % 2**63)


def hidden_test(grade: F) -> F:
    """Decorate ``grade_<exercise>(candidate)``: the candidate becomes a proxy
    (``kernel_protocol.grader_side.student``), whether it came from a kernel or this process,
    that rebuilds only the layers the exercise prescribes."""
    exercise = grade.__name__.removeprefix("grade_")

    @functools.wraps(grade)
    def wrapper(candidate: Any, *args: Any, **kwargs: Any) -> Any:
        return grade(student(candidate, exercise), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class HiddenCheck(SelfCheck):
    """A SelfCheck whose messages say they come from the hidden tests, and whose calls go
    through the proxies: the student's code runs where it lives, the trusted side gets the
    numbers and the kernel's report of what else the call did."""

    def __init__(self, exercise: str) -> None:
        super().__init__(f"{exercise} (hidden test)")

    def _run(self, fn: Callable[..., Any], args: tuple, kwargs: dict, *, seed: int | None,
             observe: bool) -> tuple[Any, CallReport]:
        with global_seed(seed) if seed is not None else contextlib.nullcontext(), \
                observing() if observe else contextlib.nullcontext():
            value = fn(*args, **kwargs)
        report = last_report()
        if report is None:  # not a proxy: a local object (a rebuilt PyTorch layer)
            report = CallReport()
        return value, report

    def passed(self) -> None:  # hidden tests stay quiet on success
        pass


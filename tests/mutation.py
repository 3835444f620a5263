"""Assertions for testing hidden tests and self-checks against wrong implementations.

A check may name a *likely mistake* only when the result has that mistake's signature. The
banks of the ``test_hidden_*`` files hold, per exercise (``BANKS``: :class:`ExerciseBanks`),
several different correct answers and, for the self-check and for the hidden test, wrong
variants with the diagnosis each must get (or ``None``: a wrong variant no diagnosis
describes, which must get none) and, optionally, the contract clause it breaks.
:func:`assert_bank` checks that every variant gets its own diagnosis, no variant gets
another one's, every diagnosis the check can name is named for some variant, and every
variant fails at the clause it names; it returns which clauses the check tests and which
variants fail at each (``tests/test_contracts.py`` requires every clause to have both).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from helpers.checks.framework import CheckFailed, SelfCheck

LIKELY = "likely mistake: "
# (exercise, "self-check" | "hidden test") -> what it tests; filled by tests/test_contracts.py
# and printed at the end of the run (conftest.pytest_terminal_summary).
COVERAGE: dict[tuple[str, str], Coverage] = {}


def assert_fails_naming(grade: Callable[[Any], None], candidate: Any, *keywords: str) -> str:
    """``grade(candidate)`` must raise an AssertionError whose message names the mistake.

    Every keyword must appear in the message (case-insensitive). Returns the message.
    """
    with pytest.raises(AssertionError) as info:
        grade(candidate)
    message = str(info.value)
    missing = [k for k in keywords if k.lower() not in message.lower()]
    assert not missing, f"message does not mention {missing}:\n{message}"
    return message


def diagnosis(message: str) -> str | None:
    """The text of the message's "likely mistake" line, or None when it names none."""
    for line in message.splitlines():
        if line.strip().startswith(LIKELY):
            return line.strip()[len(LIKELY):]
    return None


def family(text: str) -> str:
    """A diagnosis with its numbers blanked: "softmax over dim=2 ..." -> "softmax over dim=# ..."."""
    return re.sub(r"-?\d+(\.\d+)?", "#", text.strip())


@contextlib.contextmanager
def offered_diagnoses() -> Iterator[set[str]]:
    """Collect every diagnosis a check *could* name while it runs (passing or not)."""
    offered: set[str] = set()
    expect, close = SelfCheck.expect, SelfCheck.close

    def recording_expect(self, condition, check, *, likely=None, diagnoses=None, **kwargs):
        offered.update([likely] if likely else [])
        offered.update(diagnoses or {})
        return expect(self, condition, check, likely=likely, diagnoses=diagnoses, **kwargs)

    def recording_close(self, actual, expected, check, *, likely=None, mistakes=None,
                        diagnoses=None, **kwargs):
        offered.update([likely] if likely else [])
        offered.update(mistakes or {})
        offered.update(diagnoses or {})
        return close(self, actual, expected, check, likely=likely, mistakes=mistakes,
                     diagnoses=diagnoses, **kwargs)

    SelfCheck.expect, SelfCheck.close = recording_expect, recording_close
    try:
        yield offered
    finally:
        SelfCheck.expect, SelfCheck.close = expect, close


def failure(grade: Callable[[Any], None], candidate: Any) -> str:
    """The message with which ``grade(candidate)`` fails (the test fails if it passes)."""
    return failing(grade, candidate)[0]


def failing(grade: Callable[[Any], None], candidate: Any) -> tuple[str, str | None]:
    """The message with which ``grade(candidate)`` fails, and the clause it failed at."""
    try:
        grade(candidate)
    except CheckFailed as error:
        return str(error), error.clause
    except AssertionError as error:
        return str(error), None
    raise AssertionError(f"{getattr(candidate, '__name__', candidate)} passed {grade.__name__}")


# (candidate, diagnosis key) or (candidate, diagnosis key, the clause it breaks)
Bank = Sequence[tuple[Any, str | None] | tuple[Any, str | None, str]]


@dataclass(frozen=True)
class ExerciseBanks:
    """One exercise's answers for the tests: the solution, other correct answers, and the
    wrong variants the self-check (``check``) and the hidden test (``hidden``) must fail."""

    solution: Any
    correct: Sequence[Any]
    check: Bank
    hidden: Bank


@dataclass
class Coverage:
    """What a check tests: the clauses it runs checks under, and the variants failing at each."""

    checks: dict[str | None, int] = field(default_factory=dict)  # clause -> checks run
    failing: dict[str | None, list[str]] = field(default_factory=dict)  # clause -> variants
    arguments: set[str] = field(default_factory=set)  # parameters the checks pass


def assert_bank(grade: Callable[[Any], None], solution: Any, bank: Bank) -> Coverage:
    """Every wrong variant of ``bank`` fails ``grade``, the likely mistake it is told
    contains its own key (case-insensitive; ``None``: no likely mistake at all) and no other
    variant's key, and it fails at the clause it names (when it names one); every diagnosis
    ``grade`` can name is named for some variant. Returns what ``grade`` tests."""
    problems = []
    coverage = Coverage()
    with offered_diagnoses() as offered:
        SelfCheck.record, SelfCheck.arguments = [], coverage.arguments
        try:
            grade(solution)
            for _, clause, _ in SelfCheck.record:
                coverage.checks[clause] = coverage.checks.get(clause, 0) + 1
        finally:
            SelfCheck.record = SelfCheck.arguments = None
        told = {}
        for candidate, key, *clause in bank:
            name = getattr(candidate, "__name__", repr(candidate))
            try:
                message, failed_at = failing(grade, candidate)
            except AssertionError as error:
                problems.append(str(error))
                continue
            coverage.failing.setdefault(failed_at, []).append(name)
            told[name] = diagnosis(message)
            if key is None and told[name] is not None:
                problems.append(f"{name}: expected no likely mistake, got {told[name]!r}")
            elif key is not None and key.lower() not in (told[name] or "").lower():
                problems.append(f"{name}: expected a likely mistake with {key!r}, got:\n{message}")
            if clause and clause[0] != failed_at:
                problems.append(f"{name}: expected to fail the clause {clause[0]!r}, failed at "
                                f"{failed_at!r}:\n{message}")
    keys = {key for _, key, *_ in bank if key}
    for candidate, key, *_ in bank:
        name = getattr(candidate, "__name__", repr(candidate))
        for other in keys - {key}:
            if key is not None and other.lower() in key.lower():
                continue  # a key that contains another one (a narrower diagnosis)
            if other.lower() in (told.get(name) or "").lower():
                problems.append(f"{name} was told {told[name]!r}, the diagnosis of another "
                                f"variant ({other!r})")
    produced = {family(text) for text in told.values() if text}
    unnamed = sorted(text for text in offered if family(text) not in produced)
    problems += [f"no variant of the bank is told {text!r}" for text in unnamed]
    assert not problems, f"{grade.__name__}:\n" + "\n".join(problems)
    return coverage

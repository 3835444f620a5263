"""Assertions for testing hidden tests and self-checks against wrong implementations.

A check may name a *likely mistake* only when the result has that mistake's signature. The
banks of the ``test_hidden_*`` and ``test_demos_*`` files hold, per exercise, wrong variants
and the diagnosis each must get (or ``None``: a wrong variant no diagnosis describes, which
must get none). :func:`assert_bank` then checks three things: every variant gets its own
diagnosis, no variant gets another one's, and every diagnosis the check can name (recorded
while the check runs) is named for at least one variant of the bank.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from helpers.checks.framework import SelfCheck

LIKELY = "likely mistake: "


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
    try:
        grade(candidate)
    except AssertionError as error:
        return str(error)
    raise AssertionError(f"{getattr(candidate, '__name__', candidate)} passed {grade.__name__}")


Bank = Sequence[tuple[Any, str | None]]


def assert_bank(grade: Callable[[Any], None], solution: Any, bank: Bank) -> None:
    """Every wrong variant of ``bank`` ((candidate, key) pairs) fails ``grade``, the likely
    mistake it is told contains its own ``key`` (case-insensitive; ``None``: no likely
    mistake at all) and no other variant's key; and every diagnosis ``grade`` can name is
    named for some variant of the bank."""
    problems = []
    with offered_diagnoses() as offered:
        grade(solution)
        told = {}
        for candidate, key in bank:
            name = getattr(candidate, "__name__", repr(candidate))
            try:
                message = failure(grade, candidate)
            except AssertionError as error:
                problems.append(str(error))
                continue
            told[name] = diagnosis(message)
            if key is None and told[name] is not None:
                problems.append(f"{name}: expected no likely mistake, got {told[name]!r}")
            elif key is not None and key.lower() not in (told[name] or "").lower():
                problems.append(f"{name}: expected a likely mistake with {key!r}, got:\n{message}")
    keys = {key for _, key in bank if key}
    for candidate, key in bank:
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

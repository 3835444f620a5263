"""Every clause of every exercise's contract is tested, and fails the answers that break it.

For each exercise declared in ``helpers/syllabus.py``, its banks (``BANKS`` in
``tests/test_hidden_<topic>.py``) give the solution, several different correct answers and
wrong variants for the self-check and for the hidden test. Here:

- the solution and every correct answer pass both;
- the self-check runs checks under every clause and rule, the hidden test under every
  clause (rules are the self-check's alone), and neither runs a check outside a clause;
- for every clause (and, for the self-check, every rule) some wrong variant of the bank
  fails exactly there, with the diagnosis its bank entry names (``mutation.assert_bank``).

``make test`` prints the table of it at the end (``conftest.pytest_terminal_summary``).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from mutation import COVERAGE, ExerciseBanks, assert_bank

from helpers.checks.framework import SelfCheck
from helpers.syllabus import TUTORIALS

EXERCISES = [pytest.param(t, e, id=f"{t.id}-{e.name}") for t in TUTORIALS for e in t.exercises]


def _banks(tutorial, exercise) -> ExerciseBanks:
    module = importlib.import_module(f"test_hidden_{tutorial.topic}")
    banks = getattr(module, "BANKS", {})
    assert exercise.name in banks, (
        f"tests/test_hidden_{tutorial.topic}.py has no BANKS[{exercise.name!r}] "
        "(an ExerciseBanks with its solution, correct answers and wrong variants)")
    return banks[exercise.name]


def _checks(tutorial, exercise):
    check = getattr(importlib.import_module(f"helpers.checks.{tutorial.topic}"), exercise.check)
    grade = getattr(importlib.import_module(f"hidden_tests.{tutorial.topic}"),
                    exercise.hidden_test)
    return check, grade


@pytest.mark.parametrize(("tutorial", "exercise"), EXERCISES)
def test_correct_answers_pass_the_self_check_and_the_hidden_test(tutorial, exercise):
    banks = _banks(tutorial, exercise)
    check, grade = _checks(tutorial, exercise)
    assert len(banks.correct) >= 2, "at least two correct answers other than the solution"
    for answer in [banks.solution, *banks.correct]:
        check(answer)
        grade(answer)


def _assert_covered(exercise, side: str, coverage, clauses: list[str]) -> None:
    problems = []
    if coverage.checks.get(None):
        problems.append(f"{coverage.checks[None]} checks run outside any clause "
                        "(call check.clause(...) first)")
    for clause in clauses:
        if not coverage.checks.get(clause):
            problems.append(f"no check tests the clause {clause!r}")
        if not coverage.failing.get(clause):
            problems.append(f"no wrong variant of the bank fails at the clause {clause!r}")
    extra = sorted(c for c in coverage.checks if c is not None and c not in clauses)
    problems += [f"checks run under {c!r}, which is not for this side" for c in extra]
    assert not problems, f"{exercise.name} ({side}):\n" + "\n".join(problems)


@pytest.mark.parametrize(("tutorial", "exercise"), EXERCISES)
def test_the_self_check_tests_every_clause_and_rule(tutorial, exercise):
    banks = _banks(tutorial, exercise)
    check, _ = _checks(tutorial, exercise)
    coverage = assert_bank(check, banks.solution, banks.check)
    COVERAGE[exercise.name, "self-check"] = coverage
    _assert_covered(exercise, "self-check", coverage, [*exercise.contract, *exercise.rules])


@pytest.mark.parametrize(("tutorial", "exercise"), EXERCISES)
def test_the_hidden_test_tests_every_clause(tutorial, exercise):
    banks = _banks(tutorial, exercise)
    _, grade = _checks(tutorial, exercise)
    coverage = assert_bank(grade, banks.solution, banks.hidden)
    COVERAGE[exercise.name, "hidden test"] = coverage
    _assert_covered(exercise, "hidden test", coverage, list(exercise.contract))


def test_every_exercise_declares_a_contract():
    bare = [e.name for t in TUTORIALS for e in t.exercises if not e.contract]
    assert not bare, f"exercises without a contract in helpers/syllabus.py: {bare}"


def _parameters(signature: str) -> list[str]:
    return [p.split("=")[0].strip() for p in signature.split(",") if p.strip()]


@pytest.mark.parametrize(("tutorial", "exercise"), EXERCISES)
def test_every_declared_parameter_is_passed_by_the_checks(tutorial, exercise):
    """A parameter (or a method's) that no self-check and no hidden test ever passes is
    untested: adding an argument to the declaration needs checks that use it."""
    banks = _banks(tutorial, exercise)
    check, grade = _checks(tutorial, exercise)
    passed = set()
    for run in (check, grade):
        SelfCheck.arguments = passed
        try:
            run(banks.solution)
        finally:
            SelfCheck.arguments = None
    declared = {*_parameters(exercise.signature),
                *(p for signature in exercise.methods.values() for p in _parameters(signature))}
    missing = sorted(declared - passed)
    assert not missing, (f"{exercise.name}: no self-check and no hidden test passes "
                         f"{', '.join(missing)} (helpers/syllabus.py declares it)")


def test_a_parameter_no_check_passes_is_seen():
    """The recording behind the test above, on a made-up exercise: a check that never passes
    `dim` leaves it out of what was passed."""
    def softmax(x, dim=-1):
        return x.softmax(dim)

    passed: set[str] = set()
    SelfCheck.arguments = passed
    try:
        check = SelfCheck("made_up_exercise")
        check.call(softmax, torch.ones(3))
        assert passed == {"x"}
        check.call(softmax, torch.ones(2, 3), dim=0)
        assert passed == {"x", "dim"}
    finally:
        SelfCheck.arguments = None

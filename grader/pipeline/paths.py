"""Where things are. Everything is relative to the repository root."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"
GRADER = ROOT / "grader"  # the nbgrader course root
HIDDEN_TESTS = GRADER / "hidden_tests"
SAMPLE_CLASS = GRADER / "sample_submissions"
GRADES_CSV = GRADER / "grades.csv"


def assignment_ids() -> list[str]:
    """The assignment ids declared in ``helpers/syllabus.py``, in course order."""
    from helpers import syllabus

    return syllabus.ids()

"""A notebook's time is its own, graded as `make grade` does with small limits: a notebook
of many cells that each stay under the cell limit, one that ignores the interrupt and a
correct classmate, all in one batch; then a run that cannot grade the classmate, who keeps
the result, graded notebook and page it had."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from conftest import _misbehave
from misbehaving import (
    ATTENTION,
    ATTENTION_ALONE,
    ATTENTION_ONLY,
    BOTH,
    NOTEBOOK,
    SOFTMAX,
    SOFTMAX_ONLY,
)
from misbehaving.slow import IGNORES_INTERRUPT

pytestmark = pytest.mark.slow

CELL_TIMEOUT, NOTEBOOK_TIMEOUT = 5, 60
# 30 cells of 3 s each: every one under the cell limit, 90 s together
SLEEPS = "import time\ntime.sleep(3)\n"
STUDENTS = {
    "full_solution": BOTH,
    "sleeps_past_its_limit": SOFTMAX_ONLY,
    "ignores_interrupt": ATTENTION_ONLY,
}


def _results(course) -> dict:
    return {(r["student"], r["assignment"]): r for r in
            (json.loads(p.read_text()) for p in (course / "grader" / "results").glob("*.json"))}


def _scores(result: dict) -> dict:
    return {c["grade_id"]: c["score"] for c in result["cells"] if c["kind"] == "auto"}


@pytest.fixture(scope="module")
def limited(course_copy, run_in_course, tmp_path_factory):
    """The class graded with small limits in a copy of the course of its own.

    Returns (course folder, class folder, the grading run, results).
    """
    course = tmp_path_factory.mktemp("limits") / "course"
    shutil.copytree(course_copy, course, symlinks=True, ignore=shutil.ignore_patterns(
        "sample_submissions", "autograded", "feedback", "results", ".scratch", "summary",
        "grades.csv"))
    klass = course / "class"
    code = ("import sys; from pathlib import Path; from pipeline.classroom import sample_class; "
            "sample_class.build(out=Path(sys.argv[1]), ids=[sys.argv[2]])")
    run_in_course(["-c", code, str(course / "sample"), NOTEBOOK], course)
    shutil.copytree(course / "sample" / "full_solution", klass / "full_solution")
    _misbehave(klass, "sleeps_past_its_limit",
               {ATTENTION.name: [SLEEPS] * 30 + [ATTENTION_ALONE]}, {})
    _misbehave(klass, "ignores_interrupt", {SOFTMAX.name: IGNORES_INTERRUPT,
                                            ATTENTION.name: ATTENTION_ALONE}, {})
    run = run_in_course(["-m", "pipeline.grading", str(klass), "--jobs", "1",
                         "--cell-timeout", str(CELL_TIMEOUT), "--timeout", str(NOTEBOOK_TIMEOUT),
                         "--feedback-timeout", "60"], course)
    return course, klass, run, _results(course)


@pytest.mark.parametrize("student", sorted(STUDENTS))
def test_each_notebook_is_graded_for_what_it_earned_with_its_page(limited, student):
    course, _, _, results = limited
    result = results[student, NOTEBOOK]
    assert result["status"] == "graded", result
    assert _scores(result) == STUDENTS[student]
    page = course / "grader" / "feedback" / student / NOTEBOOK / f"{NOTEBOOK}.html"
    assert "could not be made" not in page.read_text()  # its own, full page


def test_the_notebook_past_its_limit_is_told_so_where_its_time_ran_out(limited):
    course, _, _, results = limited
    cells = {c["grade_id"]: c for c in results["sleeps_past_its_limit", NOTEBOOK]["cells"]}
    message = cells["test_gained_dot_product_attention"]["message"]
    assert message.startswith("NotebookTimeout: the notebook used up its time limit "
                              f"({NOTEBOOK_TIMEOUT} s for all its cells)"), message
    assert not any(c["needs_manual_grade"] for c in cells.values() if c["kind"] == "auto")
    page = (course / "grader" / "feedback" / "sleeps_past_its_limit" / NOTEBOOK
            / f"{NOTEBOOK}.html").read_text()
    assert "used up its time limit" in page


def test_nothing_of_the_batch_stays_behind(limited):
    course = limited[0]
    scratch = course / "grader" / ".scratch"
    assert not scratch.exists() or not os.listdir(scratch)


def test_a_submission_refused_for_what_it_is_keeps_nothing_of_before(limited, run_in_course):
    """A link handed in where a notebook belongs is refused, and, since the submission
    itself is at fault, the earlier result is not kept (else handing in something
    ungradable after a good grade would keep the good grade)."""
    course, klass, _, before = limited
    folders = {kind: course / "grader" / kind / "full_solution" / NOTEBOOK
               for kind in ("autograded", "feedback")}
    files = {path: path.read_bytes() for folder in folders.values()
             for path in folder.iterdir()}
    notebook = klass / "full_solution" / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    again = course / "again"
    (again / "full_solution" / NOTEBOOK).mkdir(parents=True)
    (again / "full_solution" / NOTEBOOK / f"{NOTEBOOK}.ipynb").symlink_to(notebook)
    assert files  # there was a graded notebook and a page to lose
    run_in_course(["-m", "pipeline.grading", str(again), "--jobs", "1"], course)
    result = _results(course)["full_solution", NOTEBOOK]
    assert result["status"].startswith("not graded: ") and "symbolic link" in result["status"]
    assert result["cells"] == [] and before["full_solution", NOTEBOOK]["cells"]
    assert "the earlier result is not kept" in result["log"]
    assert not any(os.path.lexists(path) for path in files)  # nor its notebook and page
    with (course / "grader" / "grades.csv").open() as handle:
        assert "previous result kept" not in handle.read()

"""Grade the sample class and a bank of misbehaving submissions, as `make grade` does."""

from __future__ import annotations

import csv
import json
import shutil

import nbformat
import pytest
from misbehaving import BANK, NOTEBOOK
from pipeline.paths import assignment_ids
from pipeline.sample_class import mistakes_for

pytestmark = pytest.mark.slow
IDS = assignment_ids()


def _misbehave(sample_dir, student, answers, tests):
    source = sample_dir / "full_solution" / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    notebook = nbformat.read(source, as_version=4)
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
        if tests.get(grade_id) is not None:
            cell.source = tests[grade_id]
    notebook.cells = [c for c in notebook.cells
                      if c.metadata.get("nbgrader", {}).get("grade_id") not in
                      {k for k, v in tests.items() if v is None}]
    target = sample_dir / student / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    target.parent.mkdir(parents=True)
    nbformat.write(notebook, target)


@pytest.fixture(scope="module")
def graded(course_copy, run_in_course):
    run_in_course(["-m", "pipeline.sample_class"], course_copy)
    sample = course_copy / "grader" / "sample_submissions"
    for student, (answers, tests, _) in BANK.items():
        _misbehave(sample, student, answers, tests)
    misnamed = sample / "misnamed" / NOTEBOOK
    misnamed.mkdir(parents=True)
    shutil.copy2(sample / "blank_release" / NOTEBOOK / f"{NOTEBOOK}.ipynb",
                 misnamed / "homework.ipynb")
    run = run_in_course(["-m", "pipeline.grading", str(sample), "--jobs", "2",
                         "--cell-timeout", "20"], course_copy)
    results = {}
    for path in (course_copy / "grader" / "results").glob("*.json"):
        result = json.loads(path.read_text())
        results[result["student"], result["assignment"]] = result
    return course_copy, run, results


def _auto(result):
    cells = [c for c in result["cells"] if c["kind"] == "auto"]
    return sum(c["score"] or 0 for c in cells), sum(c["max_score"] for c in cells)


@pytest.mark.parametrize("notebook_id", IDS)
def test_full_solution_gets_full_marks(graded, notebook_id):
    earned, available = _auto(graded[2]["full_solution", notebook_id])
    assert available > 0 and earned == available, graded[2]["full_solution", notebook_id]


@pytest.mark.parametrize("notebook_id", IDS)
def test_blank_release_gets_zero(graded, notebook_id):
    result = graded[2]["blank_release", notebook_id]
    assert _auto(result)[0] == 0
    assert all(c["score"] == 0 for c in result["cells"])  # unchanged Think! cells too


@pytest.mark.parametrize("notebook_id", IDS)
def test_typical_mistakes_lose_points_with_helpful_messages(graded, notebook_id):
    mistakes = mistakes_for(notebook_id)
    assert mistakes, f"grader/sample_mistakes/{notebook_id}.py is missing"
    result = graded[2]["typical_mistakes", notebook_id]
    earned, available = _auto(result)
    assert earned < available
    failed = [c for c in result["cells"] if c["kind"] == "auto" and c["score"] == 0]
    for cell in failed:
        assert "expected" in cell["message"] and "got" in cell["message"], cell


@pytest.mark.parametrize("student", sorted(BANK))
def test_misbehaving_submission_gets_only_what_it_earned(graded, student):
    result = graded[2][student, NOTEBOOK]
    scores = {c["grade_id"]: c["score"] for c in result["cells"] if c["kind"] == "auto"}
    assert scores == BANK[student][2], result


def test_wrong_layout_is_reported_by_name(graded):
    stderr = graded[1].stderr
    assert "misnamed" in stderr and f"expected {NOTEBOOK}.ipynb, found homework.ipynb" in stderr


def test_feedback_shows_messages_but_no_hidden_test_source(graded):
    feedback = sorted((graded[0] / "grader" / "feedback").rglob("*.html"))
    assert len(feedback) == len(graded[2])
    for page in feedback:
        html = page.read_text()
        for secret in ("BEGIN HIDDEN TESTS", "hidden_tests", "grade_stable_softmax"):
            assert secret not in html, f"{page} leaks {secret!r}"
    mistakes = (graded[0] / "grader" / "feedback" / "typical_mistakes" / NOTEBOOK
                / f"{NOTEBOOK}.html").read_text()
    assert "likely mistake" in mistakes


def test_grades_csv_has_one_row_per_student_and_assignment(graded):
    with (graded[0] / "grader" / "grades.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {"assignment", "student_id", "score", "max_score"} <= set(rows[0])
    assert len(rows) == len(graded[2])
    assert len({(r["student_id"], r["assignment"]) for r in rows}) == len(rows)
    table = graded[1].stdout
    assert "full_solution" in table and "blank_release" in table


def test_class_summary_shows_pass_rates_and_grade_distribution(graded):
    summary = graded[0] / "grader" / "summary"
    with (summary / "pass_rates.csv").open() as handle:
        rates = {(r["assignment"], r["exercise"]): r for r in csv.DictReader(handle)}
    softmax = rates[NOTEBOOK, "stable_softmax"]
    assert 0 < float(softmax["pass_rate"]) < 1
    assert (summary / "grade_distribution.png").stat().st_size > 1000
    assert "hardest first" in graded[1].stdout

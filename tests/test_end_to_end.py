"""Grade the sample class and a bank of misbehaving submissions, as `make grade` does."""

from __future__ import annotations

import csv
import json
import shutil

import nbformat
import pytest
from conftest import SANDBOXED
from misbehaving import BANK, NOTEBOOK, SANDBOX_ONLY, TAMPER_MARK

from pipeline.classroom.sample_class import mistakes_for
from pipeline.paths import assignment_ids

pytestmark = pytest.mark.slow
IDS = assignment_ids()
needs_sandbox = pytest.mark.skipif(not SANDBOXED, reason="Landlock is not available here")


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
    assert mistakes, f"grader/sample_mistakes/ has no answers for {notebook_id}"
    result = graded[2]["typical_mistakes", notebook_id]
    earned, available = _auto(result)
    assert earned < available
    failed = [c for c in result["cells"] if c["kind"] == "auto" and c["score"] == 0]
    for cell in failed:
        assert "expected" in cell["message"] and "got" in cell["message"], cell


@pytest.mark.parametrize("student", sorted(BANK))
def test_misbehaving_submission_gets_only_what_it_earned(graded, student):
    if student in SANDBOX_ONLY and not SANDBOXED:
        pytest.skip("Landlock is not available here")
    result = graded[2][student, NOTEBOOK]
    scores = {c["grade_id"]: c["score"] for c in result["cells"] if c["kind"] == "auto"}
    assert scores == BANK[student][2], result


def _printed(course, student, notebook_id=NOTEBOOK):
    """Everything the student's graded notebook printed."""
    notebook = nbformat.read(course / "grader" / "autograded" / student / notebook_id
                             / f"{notebook_id}.ipynb", as_version=4)
    return "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))


@needs_sandbox
def test_student_code_cannot_read_hidden_tests_solutions_or_gradebook(graded):
    printed = _printed(graded[0], "reads_hidden_tests")
    for name in ("gain_multiplication.py", "gradebook.db", "01_gain_multiplication.ipynb"):
        assert (f"could not read {name} PermissionError" in printed  # refused, or not there
                or f"could not read {name} FileNotFoundError" in printed)
    for secret in ("def grade_", "BEGIN HIDDEN TESTS", "SQLite format", "BEGIN SOLUTION"):
        assert secret not in printed, f"the submission read {secret!r}"


def test_output_a_cell_leaves_in_the_graded_notebook_is_bounded(graded):
    path = (graded[0] / "grader" / "autograded" / "floods_output" / NOTEBOOK
            / f"{NOTEBOOK}.ipynb")
    assert path.stat().st_size < 10 * 2**20
    assert "[output cut: this cell printed more than" in _printed(graded[0], "floods_output")


def test_nothing_of_the_hidden_tests_is_in_the_kernel(graded):
    printed = _printed(graded[0], "searches_memory")
    assert "hidden modules: []" in printed and "cached hidden source: []" in printed
    assert "hidden objects: 0" in printed


@needs_sandbox
def test_the_grader_reference_cannot_be_imported(graded):
    assert "no reference: ModuleNotFoundError" in _printed(graded[0], "calls_reference")


def test_feedback_shows_the_verdict_and_the_students_own_errors(graded):
    notebook = nbformat.read(graded[0] / "grader" / "autograded" / "typical_mistakes" / NOTEBOOK
                             / f"{NOTEBOOK}.ipynb", as_version=4)
    tests = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade")
             and c.cell_type == "code"]
    for cell in tests:  # the verdict is the only error; the self-check's words stay as text
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert len(errors) == 1 and "(hidden test)" in errors[0].evalue, cell.outputs
        assert any("[your code raised] CheckFailed" in o.get("text", "") for o in cell.outputs)
    full = nbformat.read(graded[0] / "grader" / "autograded" / "full_solution" / NOTEBOOK
                         / f"{NOTEBOOK}.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in full.cells for o in c.get("outputs", []))
    assert printed.count("Hidden tests: passed.") == 2


@needs_sandbox
def test_student_code_cannot_write_grades_or_touch_other_students(graded):
    course, _, results = graded
    printed = _printed(course, "writes_gradebook")
    assert "could not write" in printed and "could not list other students" in printed
    assert "wrote" not in printed.replace("could not write", "")
    marked = [path for path in (course / "grader").rglob("*") if path.is_file()
              and not {"sample_submissions", "writes_gradebook"} & set(path.parts)
              and TAMPER_MARK.encode() in path.read_bytes()]
    assert not marked, f"a submission wrote into {marked}"
    for (student, notebook_id), result in results.items():  # every notebook still there
        assert result["status"] == "graded", result
        assert (course / "grader" / "autograded" / student / notebook_id).is_dir()


def test_wrong_layout_is_reported_by_name(graded):
    stderr = graded[1].stderr
    assert "misnamed" in stderr and f"expected {NOTEBOOK}.ipynb, found homework.ipynb" in stderr


def test_feedback_shows_messages_but_no_hidden_test_source(graded):
    feedback = sorted((graded[0] / "grader" / "feedback").rglob("*.html"))
    assert len(feedback) == len(graded[2])
    for page in feedback:
        html = page.read_text()
        # lines of the hidden tests themselves (some submissions name the package in their
        # own code, which their feedback shows)
        for secret in ("BEGIN HIDDEN TESTS", "def grade_", "fresh_generator", "_reference_softmax"):
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


def test_sharded_serial_grading_gives_the_same_results(graded, run_in_course):
    """Two shards graded one notebook at a time, then merged = the parallel batched run."""
    course, _, parallel = graded
    subset = course / "shard_class"
    students = ("full_solution", "typical_mistakes", "kernel_crash")
    for student in students:
        shutil.copytree(course / "grader" / "sample_submissions" / student / NOTEBOOK,
                        subset / student / NOTEBOOK)
    shutil.rmtree(course / "grader" / "results")
    for shard in ("1/2", "2/2"):
        run_in_course(["-m", "pipeline.grading", str(subset), "--jobs", "1", "--shard", shard,
                       "--cell-timeout", "20"], course)
    merged = run_in_course(["-m", "pipeline.grading", "--merge"], course)
    serial = {path.stem: json.loads(path.read_text())
              for path in (course / "grader" / "results").glob("*.json")}
    assert len(serial) == len(students)
    def scores(result):  # messages quote fresh random inputs, so they differ between runs
        return [(c["grade_id"], c["score"], c["max_score"]) for c in result["cells"]]

    for student in students:
        assert scores(serial[f"{student}__{NOTEBOOK}"]) == scores(parallel[student, NOTEBOOK])
    assert all(student in merged.stdout for student in students)


@pytest.mark.parametrize(("student", "grade_id", "words"), [
    ("zeroes_its_inputs", "test_gained_dot_product_attention", "changed in place: q_1"),
    ("clamps_its_input", "test_stable_softmax", "changed in place: x"),
    ("huge_reply", "test_gained_dot_product_attention", "larger than 16 MB"),
])
def test_the_verdict_names_what_an_attack_did(graded, student, grade_id, words):
    cells = {c["grade_id"]: c for c in graded[2][student, NOTEBOOK]["cells"]}
    assert words in cells[grade_id]["message"], cells[grade_id]


def test_a_cell_that_ignores_the_interrupt_is_stopped_and_says_so(graded):
    notebook = nbformat.read(graded[0] / "grader" / "autograded" / "ignores_interrupt" / NOTEBOOK
                             / f"{NOTEBOOK}.ipynb", as_version=4)
    errors = [o.evalue for c in notebook.cells for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert any("did not stop when interrupted" in e and "restarted" in e for e in errors)


def test_markup_built_to_stall_the_sanitiser_is_left_out_of_a_page_made_in_time(graded):
    page = (graded[0] / "grader" / "feedback" / "nested_markup" / NOTEBOOK
            / f"{NOTEBOOK}.html").read_text()
    assert page.count("Not shown on this page") >= 3  # two Think! answers, one output
    assert "could not be made" not in page  # the full page, not the short stand-in
    assert graded[2]["nested_markup", NOTEBOOK]["status"] == "graded"

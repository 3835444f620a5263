"""The generated release: no drift from solutions/, no solutions or hidden tests, no outputs."""

from __future__ import annotations

import re

import nbformat
import pytest

from pipeline.paths import NOTEBOOKS, SOLUTIONS, assignment_ids

pytestmark = pytest.mark.slow
IDS = assignment_ids()


def test_every_solution_has_a_committed_student_notebook():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == IDS


@pytest.mark.parametrize("notebook_id", IDS)
def test_committed_student_notebook_matches_generation(course_copy, notebook_id):
    generated = (course_copy / "notebooks" / f"{notebook_id}.ipynb").read_text()
    committed = (NOTEBOOKS / f"{notebook_id}.ipynb").read_text()
    assert committed == generated, (
        f"notebooks/{notebook_id}.ipynb is out of date with solutions/: run `make assignments`")


def test_generation_is_deterministic(course_copy, run_in_course):
    before = {p.name: p.read_bytes() for p in (course_copy / "notebooks").glob("*.ipynb")}
    run_in_course(["-m", "pipeline.release.assignments"], course_copy)
    after = {p.name: p.read_bytes() for p in (course_copy / "notebooks").glob("*.ipynb")}
    assert before == after


@pytest.mark.parametrize("notebook_id", IDS)
def test_student_notebook_holds_no_solution_no_hidden_test_no_output(notebook_id):
    notebook = nbformat.read(NOTEBOOKS / f"{notebook_id}.ipynb", as_version=4)
    text = "\n".join(cell.source for cell in notebook.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "hidden_tests",
                   "grade_"):
        assert marker not in text, f"{notebook_id} student notebook contains {marker!r}"
    solution = nbformat.read(SOLUTIONS / f"{notebook_id}.ipynb", as_version=4)
    solution_code = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solution.cells
                     if c.metadata.get("nbgrader", {}).get("solution")}
    assert "widgets" not in notebook.metadata
    for cell in notebook.cells:
        assert cell.get("outputs", []) == [], f"{notebook_id}: a cell still has outputs"
        assert "execution" not in cell.metadata
        assert cell.get("execution_count") is None
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in solution_code and cell.cell_type == "code":
            assert "raise NotImplementedError()" in cell.source
            body = re.search(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION",
                             solution_code[grade_id], re.S)
            assert body and body.group(1).strip() not in cell.source


@pytest.mark.parametrize("notebook_id", IDS)
def test_student_notebook_starts_with_colab_badge_and_install_cell(notebook_id):
    notebook = nbformat.read(NOTEBOOKS / f"{notebook_id}.ipynb", as_version=4)
    badge, setup = notebook.cells[0], notebook.cells[1]
    assert f"notebooks/{notebook_id}.ipynb" in badge.source and "colab-badge.svg" in badge.source
    assert "google.colab" in setup.source and "pip" in setup.source


@pytest.mark.parametrize("notebook_id", IDS)
def test_solution_was_executed_top_to_bottom_in_one_kernel(notebook_id):
    notebook = nbformat.read(SOLUTIONS / f"{notebook_id}.ipynb", as_version=4)
    counts = [c.execution_count for c in notebook.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{notebook_id}: execution counts {counts}; re-run with `make execute`")
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, f"{notebook_id}: committed outputs contain errors"

"""The course's nbgrader preprocessors, on small notebooks (no kernel)."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from pipeline.grading.preprocessors import DeduplicateGradeIds, HideHiddenTests, StderrIsNotFailure
from pipeline.release.preprocessors import ClearRunState, ColabCells

TEST_CELL = """check_thing(thing)
### BEGIN HIDDEN TESTS
from hidden_tests.secret import grade_thing

grade_thing(thing)
### END HIDDEN TESTS
"""


def _graded_cell(source: str, outputs=()) -> nbformat.NotebookNode:
    cell = new_code_cell(source, outputs=list(outputs))
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "test_thing", "points": 2,
                                 "solution": False, "locked": True, "schema_version": 3}
    return cell


def test_hidden_tests_and_tracebacks_are_removed_from_feedback():
    error = new_output("error", ename="CheckFailed", evalue="thing: \x1b[31mmissing scale\x1b[0m",
                       traceback=["File hidden_tests/secret.py line 3", "grade_thing(thing)"])
    nb = new_notebook(cells=[_graded_cell(TEST_CELL, [error])])
    nb, _ = HideHiddenTests().preprocess(nb, {})
    cell = nb.cells[0]
    assert "check_thing(thing)" in cell.source
    assert "grade_thing" not in cell.source and "hidden_tests" not in cell.source
    assert cell.outputs[0].traceback == ["CheckFailed: thing: missing scale"]


def test_ungraded_cells_are_left_alone():
    cell = new_code_cell("### BEGIN HIDDEN TESTS\nx = 1\n### END HIDDEN TESTS")
    nb, _ = HideHiddenTests().preprocess(new_notebook(cells=[cell]), {})
    assert nb.cells[0].source == cell.source


def test_stderr_is_kept_but_moved_to_stdout():
    warning = new_output("stream", name="stderr", text="UserWarning: something\n")
    nb = new_notebook(cells=[_graded_cell("x = 1", [warning])])
    nb, _ = StderrIsNotFailure().preprocess(nb, {})
    output = nb.cells[0].outputs[0]
    assert output.name == "stdout" and "[stderr] UserWarning: something" in output.text


def test_colab_cells_are_added_once_and_point_at_the_repository():
    nb = new_notebook(cells=[new_code_cell("import torch")])
    colab = ColabCells(repository="someone/course", branch="dev")
    resources = {"unique_key": "01_demo"}
    nb, _ = colab.preprocess(nb, resources)
    nb, _ = colab.preprocess(nb, resources)
    assert [c.get("id") for c in nb.cells[:2]] == ["colab-badge", "colab-setup"]
    assert len(nb.cells) == 3
    assert "github/someone/course/blob/dev/notebooks/01_demo.ipynb" in nb.cells[0].source
    assert "git+https://github.com/someone/course@dev" in nb.cells[1].source
    compile(nb.cells[1].source, "colab-setup", "exec")


def test_colab_cells_refuse_an_unset_repository():
    import pytest

    with pytest.raises(ValueError, match="owner/name"):
        ColabCells(repository="").preprocess(new_notebook(), {"unique_key": "x"})


def test_run_state_is_dropped_from_the_release():
    cell = new_code_cell("x = 1")
    cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    nb = new_notebook(cells=[cell], metadata={"widgets": {"state": {}}, "language_info": {"name": "python"}})
    nb, _ = ClearRunState().preprocess(nb, {})
    assert "widgets" not in nb.metadata and "language_info" in nb.metadata
    assert nb.cells[0].metadata == {}


def test_duplicated_grade_ids_keep_the_last_copy_graded_and_the_rest_plain():
    first, last = _graded_cell("first copy"), _graded_cell("last copy")
    notebook = new_notebook(cells=[first, new_code_cell("other"), last])
    notebook, _ = DeduplicateGradeIds().preprocess(notebook, {})
    assert "nbgrader" not in notebook.cells[0].metadata  # nbgrader would leave {} and crash
    assert notebook.cells[2].metadata["nbgrader"]["grade_id"] == "test_thing"
    assert [c.source for c in notebook.cells] == ["first copy", "other", "last copy"]

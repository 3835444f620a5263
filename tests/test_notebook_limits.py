"""A notebook's time is its own: ResilientExecute's limits, on small notebooks run in a
plain kernel (no sandbox, no gradebook), with limits of a few seconds."""

from __future__ import annotations

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from helpers import syllabus
from pipeline.grading import preprocessors, verdicts
from pipeline.grading.preprocessors import ResilientExecute

pytestmark = pytest.mark.slow

IGNORES_SIGINT = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"


def _graded(source: str, grade_id: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": grade_id, "points": 1,
                                 "solution": False, "locked": True, "schema_version": 3}
    return cell


def _run(cells: list, tmp_path, **limits) -> list[nbformat.NotebookNode]:
    """Run ``cells`` as nbgrader's autograde would, in a plain kernel; the cells after."""
    executor = ResilientExecute(kernel_manager_class=AsyncKernelManager, kernel_name="python3",
                                startup_timeout=120, **limits)
    notebook, _ = executor.preprocess(new_notebook(cells=cells),
                                      {"metadata": {"path": str(tmp_path)}})
    return notebook.cells


def _errors(cell) -> list[tuple[str, str]]:
    return [(o.ename, o.evalue) for o in cell.get("outputs", []) if o.output_type == "error"]


def _printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.output_type == "stream")


def test_a_notebook_past_its_time_stops_and_fails_the_exercises_it_did_not_reach(tmp_path):
    cells = _run([new_code_cell("x = 41"),
                  *[new_code_cell("import time\ntime.sleep(2)") for _ in range(4)],
                  _graded("assert x == 41", "test_late"),
                  new_markdown_cell("a Think! answer"),
                  new_code_cell("print('never')")],
                 tmp_path, timeout=30, notebook_timeout=3, interrupt_grace=5)
    assert _errors(cells[0]) == []
    fates = []
    for cell in cells[1:5]:  # ran, stopped at the limit, or not run at all
        names = [name for name, _ in _errors(cell)]
        fates.append("stopped" if names else "not run" if "not run" in _printed(cell)
                     else "ran")
        assert names in ([], ["NotebookTimeout"], ["KeyboardInterrupt", "NotebookTimeout"])
    assert fates[0] == "ran" or fates[0] == "stopped"
    assert fates[-1] == "not run" and fates == sorted(fates, key=["ran", "stopped",
                                                                 "not run"].index)
    (name, message), = _errors(cells[5])
    assert name == "NotebookTimeout"
    assert "time limit (3 s for all its cells)" in message and "not run" in message
    assert cells[6].get("outputs") is None  # markdown: left as it was
    assert "never" not in _printed(cells[7]) and "not run" in _printed(cells[7])


def test_a_cell_that_ignores_the_interrupt_costs_only_itself(tmp_path):
    cells = _run([new_code_cell("x = 41"),
                  _graded(IGNORES_SIGINT + "time.sleep(120)", "test_stubborn"),
                  new_code_cell("print(x + 1)")],
                 tmp_path, timeout=2, interrupt_grace=2, notebook_timeout=None)
    (name, message), = _errors(cells[1])
    assert name == "CellTimeoutError" and "did not stop when interrupted" in message
    assert "restarted" in message
    assert _printed(cells[2]).strip() == "42"  # a fresh kernel, the cells before replayed
    assert _errors(cells[2]) == []


def test_a_cell_that_stops_when_interrupted_keeps_its_kernel(tmp_path):
    cells = _run([new_code_cell("import os\npid = os.getpid()"),
                  new_code_cell("import time\ntime.sleep(120)"),
                  new_code_cell("print(os.getpid() == pid)")],
                 tmp_path, timeout=2, interrupt_grace=5, notebook_timeout=None)
    assert ("CellTimeoutError", "this cell ran longer than 2 s and was stopped") in \
        _errors(cells[1])
    assert _printed(cells[2]).strip() == "True"


def test_a_hidden_test_call_that_ignores_the_interrupt_costs_only_that_exercise(
        tmp_path, monkeypatch):
    # a real hidden test, taken from the declaration: its answer never returns
    exercise = syllabus.tutorial("01_gain_multiplication").exercises[0]
    call = verdicts.HiddenCall("hidden_tests.gain_multiplication", f"grade_{exercise.name}",
                               exercise.name)
    monkeypatch.setattr(preprocessors, "_hidden_tests_from_gradebook",
                        lambda resources: {exercise.test_cell: [call]})
    cells = _run([new_code_cell("x = 41"),
                  new_code_cell(f"def {exercise.name}({exercise.signature}):\n"
                                + "".join(f"    {line}\n" for line in IGNORES_SIGINT.splitlines())
                                + "    time.sleep(120)\n"),
                  _graded("pass", exercise.test_cell),
                  new_code_cell("print(x + 1)")],
                 tmp_path, timeout=3, interrupt_grace=2, notebook_timeout=None)
    (_, message), = _errors(cells[2])  # the exercise fails, whatever the test calls it
    assert "did not return within 3 s" in message, message
    assert _printed(cells[3]).strip() == "42"

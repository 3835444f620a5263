"""nbgrader scores a test cell from its outputs (an error: no points; an ``execute_result``
that is a number: that many points; anything else: full marks). After the hidden tests,
the verdict must be the only thing that decides: nothing the kernel displayed may count."""

from __future__ import annotations

import pytest
from nbformat.v4 import new_code_cell, new_output
from nbgrader.utils import determine_grade

from pipeline.grading import verdicts

FAILED = ("CheckFailed", "f (hidden test): check 2 failed")


def _test_cell(*outputs):
    cell = new_code_cell("check_f(f)")
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "points": 2,
                                 "grade_id": "test_f", "locked": True}
    cell.outputs = list(outputs)
    return cell


@pytest.mark.parametrize("shown", [
    new_output("execute_result", data={"text/plain": "2"}, execution_count=1),
    new_output("execute_result", data={"text/plain": "'full marks'"}, execution_count=1),
    new_output("execute_result", data={"text/plain": "99"}, execution_count=1),
])
def test_a_displayed_value_never_scores_a_failed_test_cell(shown):
    """A kernel that displays a value (``sys.displayhook(2)``, or a self-check patched to
    display one) before the verdict earns nothing: the value becomes a plain display."""
    cell = _test_cell(shown)
    verdicts.record(cell, FAILED)
    assert determine_grade(cell) == (0, 2.0)
    assert not any(o.output_type == "execute_result" for o in cell.outputs)
    assert any(o.output_type == "display_data" for o in cell.outputs)


def test_a_passed_cell_gets_its_points_whatever_it_displayed_or_warned():
    """A number displayed by a passing cell is not partial credit, and a warning the
    student's code wrote to stderr does not cost the point."""
    cell = _test_cell(new_output("execute_result", data={"text/plain": "0.5"},
                                 execution_count=1),
                      new_output("stream", name="stderr", text="UserWarning: ...\n"))
    verdicts.record(cell, None)
    assert determine_grade(cell) == (2.0, 2.0)
    assert "UserWarning" in "".join(o.get("text", "") for o in cell.outputs)

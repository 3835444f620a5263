"""A newcomer's first run prints the course's progress and real warnings only."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from pipeline.release.execute import execute_notebook


def test_running_a_notebook_prints_no_transport_warning(tmp_path, capfd):
    path = tmp_path / "tiny.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("print(6 * 7)")]), path)
    execute_notebook(path, timeout=60)
    assert nbformat.read(path, as_version=4).cells[0].outputs[0].text == "42\n"
    printed = capfd.readouterr()
    assert "without encryption" not in printed.err + printed.out  # unix sockets, not TCP
    assert "Parent appears to have exited" not in printed.err  # the kernel was shut down

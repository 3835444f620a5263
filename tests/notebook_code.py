"""Load the solution code of a notebook without a kernel.

``solution_namespace("01_gain_multiplication")`` executes the notebook's
*answer* cells (nbgrader ``solution`` code cells) in full and, from the other
code cells, only their imports and function/class definitions, in one
namespace, and returns it; tests take the reference implementation from it.
Demos, self-checks and training never run.
"""

from __future__ import annotations

import ast
import functools
import linecache
from pathlib import Path

import nbformat

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions"


def _definitions(source: str) -> ast.Module:
    """The imports and function/class definitions of a cell, without anything it runs."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: such cells define nothing we need
        return ast.Module(body=[], type_ignores=[])
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)
    return ast.Module(body=[n for n in tree.body if isinstance(n, allowed)], type_ignores=[])


def answer_cells(notebook_id: str) -> dict[str, str]:
    """grade_id -> source of each autograded answer cell of a solution notebook."""
    notebook = nbformat.read(SOLUTIONS / f"{notebook_id}.ipynb", as_version=4)
    cells = {}
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution") and not meta.get("grade"):
            cells[meta["grade_id"]] = cell.source
    return cells


@functools.cache
def solution_namespace(notebook_id: str) -> dict:
    """Execute the answer cells, and the imports and definitions of other code cells."""
    notebook = nbformat.read(SOLUTIONS / f"{notebook_id}.ipynb", as_version=4)
    namespace: dict = {"__name__": f"solution_{notebook_id}"}
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        name = f"<{notebook_id}:{meta.get('grade_id', cell.get('id', 'cell'))}>"
        if meta.get("solution") and not meta.get("grade"):
            exec(compile(cell.source, name, "exec"), namespace)
        elif not meta.get("grade"):  # test cells run checks; skip them
            exec(compile(_definitions(cell.source), name, "exec"), namespace)
    return namespace


def as_cell(source: str, name: str, namespace: dict, cell: int = 1):
    """Define ``name`` from ``source`` as a notebook cell would (under a cell's file name, in
    a fresh copy of ``namespace``), so that the checks can show and read the student's line,
    as they do in a notebook."""
    filename = f"<ipython-input-{cell}-{name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = dict(namespace)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - the test's own code
    return namespace[name]

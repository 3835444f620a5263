"""Write into a solution notebook what its declaration in ``helpers/syllabus.py`` fixes.

Some parts of a tutorial follow from the declaration alone, so they are generated, not
typed: "tutorial N of M" in the notebook's header, the number in each "✏️ Exercise N" header (the exercise's place in the
declaration), each test cell's points and its hidden block (``consistency.hidden_block``),
and each Think! answer cell's points. ``make assignments`` runs :func:`sync` on every
solution before it generates the release, and says what it changed; everything else the
declaration implies is checked (``pipeline.release.consistency``), since only a person can write it.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from helpers import syllabus
from helpers.syllabus import Tutorial
from pipeline.markers import hidden_blocks, without_hidden_blocks
from pipeline.paths import SOLUTIONS
from pipeline.release.consistency import hidden_block
from pipeline.release.preprocessors import TUTORIAL_NUMBER

HEADER = re.compile(r"^(#+ ✏️ Exercise )(\d+)", re.MULTILINE)


def _renumber(cells: list, tutorial: Tutorial, changes: list[str], where: str) -> None:
    """Each exercise header takes the number of the answer cell that follows it."""
    numbers = {e.name: i for i, e in enumerate(tutorial.exercises, start=1)}
    header = None
    for cell in cells:
        if cell.cell_type == "markdown" and HEADER.search(cell.source):
            header = cell
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if header is not None and grade_id in numbers:
            found = int(HEADER.search(header.source).group(2))
            if found != numbers[grade_id]:
                header.source = HEADER.sub(rf"\g<1>{numbers[grade_id]}", header.source, count=1)
                changes.append(f"{where}: the header of {grade_id} says Exercise "
                               f"{numbers[grade_id]}, not {found}")
            header = None


def _course_header(cells: list, tutorial: Tutorial, changes: list[str], where: str) -> None:
    """The first "tutorial N of M" says the tutorial's place in the declared course."""
    wanted = f"tutorial {tutorial.number} of {len(syllabus.ids())}"
    for cell in cells:
        if cell.cell_type == "markdown" and (found := TUTORIAL_NUMBER.search(cell.source)):
            if found.group(0) != wanted:
                cell.source = TUTORIAL_NUMBER.sub(wanted, cell.source, count=1)
                changes.append(f"{where}: the header says {wanted}, not {found.group(0)}")
            return


def _test_cells(cells: list, tutorial: Tutorial, changes: list[str], where: str) -> None:
    """Points and hidden block of every test cell; points of every Think! cell."""
    by_id = {cell.metadata.get("nbgrader", {}).get("grade_id"): cell for cell in cells}
    for exercise in tutorial.exercises:
        cell = by_id.get(exercise.test_cell)
        if cell is None or not cell.metadata["nbgrader"].get("grade"):
            continue  # a missing test cell is for a person to write (consistency says so)
        if cell.metadata["nbgrader"].get("points") != exercise.points:
            cell.metadata["nbgrader"]["points"] = exercise.points
            changes.append(f"{where}: {exercise.test_cell} is worth {exercise.points} points")
        block = hidden_block(tutorial, exercise)
        if hidden_blocks(cell.source) != [block]:
            visible = without_hidden_blocks(cell.source).rstrip()
            cell.source = f"{visible}\n\n{block}" if visible else block
            changes.append(f"{where}: {exercise.test_cell} ends with the declared hidden block")
    for grade_id, points in tutorial.think.items():
        cell = by_id.get(grade_id)
        if cell is not None and cell.metadata["nbgrader"].get("points") != points:
            cell.metadata["nbgrader"]["points"] = points
            changes.append(f"{where}: {grade_id} is worth {points} points")


def sync(tutorial: Tutorial, *, write: bool = True, folder: Path = SOLUTIONS) -> list[str]:
    """Bring ``<folder>/<id>.ipynb`` in line with the declaration; return what changed
    (nothing is written when ``write`` is false, or when nothing changed)."""
    path = folder / f"{tutorial.id}.ipynb"
    if not path.exists():
        return []
    notebook = nbformat.read(path, as_version=4)
    changes: list[str] = []
    where = f"{folder.name}/{path.name}"
    _course_header(notebook.cells, tutorial, changes, where)
    _renumber(notebook.cells, tutorial, changes, where)
    _test_cells(notebook.cells, tutorial, changes, where)
    if changes and write:
        nbformat.write(notebook, path)
    return changes

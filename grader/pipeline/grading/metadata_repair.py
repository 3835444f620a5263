"""Grade a notebook against the gradebook, whatever its nbgrader metadata claims.

A submission's cell metadata is the student's to edit. nbgrader's own ``OverwriteCells``
puts back a known cell's type, locked flag, points (of a cell still marked as graded)
and locked source, and ``add_missing_cells`` restores deleted grade cells. It does not
cope with the rest: a cell whose ``grade_id`` the gradebook does not know keeps its
``grade``/``solution`` flags without an id, an answer cell marked ``grade`` has no graded
cell to look up, a test cell whose flags were cleared or whose id was renamed is no
longer graded, and malformed metadata fails ``CheckCellMetadata``. Each of these made
the whole notebook "autograde failed", 0 of 0 points.

:class:`RepairMetadata` runs first among ``Autograde.sanitize_preprocessors`` and leaves
nbgrader's steps nothing to trip on:

- a cell is matched to the gradebook by its ``grade_id``, else by its cell id in the
  release (a renamed ``grade_id``; a test cell whose metadata was stripped);
- a matched cell's nbgrader metadata is rebuilt from the gradebook (grade, solution,
  locked and task flags, points, cell type, checksum); ``OverwriteCells`` then restores
  its cell type and locked source as usual;
- a cell claiming anything the gradebook does not know becomes an ordinary cell: kept
  (a code cell still runs), never graded;
- a short markdown note at the top of the notebook says what was repaired, so the
  feedback shows it.

Duplicated cells are left to ``DeduplicateGradeIds``, which runs next.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.coursedir import CourseDirectory
from nbgrader.nbgraderformat import SCHEMA_VERSION
from nbgrader.preprocessors import NbGraderPreprocessor

NOTE_TITLE = "**A note from the grader.**"
FLAGS = ("grade", "solution", "locked", "task")


@dataclass(frozen=True)
class KnownCell:
    """What the gradebook records about one cell of the released notebook."""

    name: str
    cell_type: str
    locked: bool
    checksum: str | None
    grade: bool
    solution: bool
    task: bool
    points: float | None

    def metadata(self) -> dict:
        meta = {"schema_version": SCHEMA_VERSION, "grade_id": self.name, "grade": self.grade,
                "solution": self.solution, "locked": self.locked, "task": self.task,
                "cell_type": self.cell_type}
        if self.points is not None:
            meta["points"] = self.points
        if self.checksum and len(self.checksum) == 32:
            meta["checksum"] = self.checksum
        return meta


def known_cells(db_url: str, notebook: str, assignment: str) -> dict[str, KnownCell]:
    """grade_id -> :class:`KnownCell` for every cell the gradebook records for a notebook."""
    with Gradebook(db_url) as gb:
        released = gb.find_notebook(notebook, assignment)
        points = {c.name: c.max_score for c in released.grade_cells}
        points.update({c.name: c.max_score for c in released.task_cells})
        solutions = {c.name for c in released.solution_cells}
        tasks = {c.name for c in released.task_cells}
        return {c.name: KnownCell(c.name, c.cell_type, bool(c.locked), c.checksum,
                                  c.name in points and c.name not in tasks, c.name in solutions,
                                  c.name in tasks, points.get(c.name))
                for c in released.source_cells}


def _shown(value: object) -> str:
    """A student-controlled value, safe to put in markdown: a short run of plain characters."""
    text = re.sub(r"[^A-Za-z0-9_.-]", "?", str(value))
    return f"`{text[:60]}{'...' if len(text) > 60 else ''}`"


def _points(value: object) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class RepairMetadata(NbGraderPreprocessor):
    """Rebuild every cell's nbgrader metadata from the gradebook (see the module docstring)."""

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        info = resources["nbgrader"]
        try:
            known = known_cells(info["db_url"], info["notebook"], info["assignment"])
        except MissingEntry:  # not a notebook of this assignment: nbgrader skips it itself
            return nb, resources
        by_cell_id = self._release_cell_ids(info["assignment"], info["notebook"], known)
        repairs = []
        for cell in nb.cells:
            repairs += self._repair(cell, known, by_cell_id)
        order = list(dict.fromkeys([*by_cell_id.values(), *known]))  # the release's order
        repairs += self._put_back_answer_cells(nb, known, order)
        if repairs:
            for line in repairs:
                self.log.warning("nbgrader metadata repaired: %s", line)
            note = new_markdown_cell(
                f"{NOTE_TITLE} The nbgrader information of some cells in this notebook did "
                "not match the assignment, so it was graded against the course's own record "
                "of the assignment:\n\n" + "\n".join(f"- {line}" for line in repairs))
            note["id"] = f"grader-note-{uuid.uuid4().hex[:12]}"
            nb.cells.insert(0, note)
        return nb, resources

    def _put_back_answer_cells(self, nb: NotebookNode, known: dict[str, KnownCell],
                               order: list[str]) -> list[str]:
        """Put an empty cell where a deleted answer cell was.

        ``OverwriteCells.add_missing_cells`` restores deleted grade cells after the cell
        that precedes them in the release, and crashes (``KeyError``) when that one, an
        answer cell, was deleted too. An empty answer cell in its place lets it work; it
        defines nothing, so it cannot undo code the student wrote elsewhere.
        """
        def position(name: str) -> int | None:
            for index in range(len(nb.cells) - 1, -1, -1):
                if nb.cells[index].metadata.get("nbgrader", {}).get("grade_id") == name:
                    return index
            return None

        repairs = []
        for rank, name in enumerate(order):
            cell_known = known[name]
            if cell_known.grade or cell_known.task or position(name) is not None:
                continue
            before = next((p for p in map(position, reversed(order[:rank])) if p is not None), -1)
            text = f"(the cell {name} was missing from the submission; put back empty by the grader)"
            cell = (new_code_cell(f"# {text}") if cell_known.cell_type == "code"
                    else new_markdown_cell(text))
            cell["id"] = f"grader-{uuid.uuid4().hex[:12]}"
            cell.metadata["nbgrader"] = NotebookNode(cell_known.metadata())
            nb.cells.insert(before + 1, cell)
            repairs.append(f"the {'answer ' if cell_known.solution else ''}cell {_shown(name)} "
                           "was missing; an empty one was put in its place.")
        return repairs

    def _release_cell_ids(self, assignment: str, notebook: str,
                          known: dict[str, KnownCell]) -> dict[str, str]:
        """cell id -> grade_id of the released notebook's known cells (from its source)."""
        coursedir = CourseDirectory(config=self.config)
        path = Path(coursedir.format_path(coursedir.source_directory, ".", assignment),
                    f"{notebook}.ipynb")
        try:
            source = nbformat.read(path, as_version=4)
        except (OSError, ValueError) as error:
            self.log.warning("No cell ids to match renamed cells by (%s): %s", path, error)
            return {}
        ids = {}
        for cell in source.cells:
            grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            if grade_id in known and isinstance(cell.get("id"), str):
                ids[cell["id"]] = grade_id
        return ids

    def _repair(self, cell: NotebookNode, known: dict[str, KnownCell],
                by_cell_id: dict[str, str]) -> list[str]:
        """Make ``cell``'s nbgrader metadata what the gradebook says; what was repaired."""
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = NotebookNode()
        meta = cell["metadata"]
        claimed = meta.get("nbgrader")
        cell_id = cell.get("id")
        which = f"cell {_shown(cell_id)}" if isinstance(cell_id, str) else "a cell"
        grade_id = claimed.get("grade_id") if isinstance(claimed, dict) else None
        if isinstance(grade_id, str) and grade_id in known:
            name = grade_id
        elif isinstance(cell_id, str) and cell_id in by_cell_id:
            name = by_cell_id[cell_id]
        elif "nbgrader" not in meta:
            return []  # a plain cell
        else:
            del meta["nbgrader"]
            if isinstance(claimed, dict) and not any(claimed.get(flag) for flag in FLAGS) \
                    and grade_id is None:
                return []  # claimed nothing: it was a plain cell already
            what = (f"claimed grade id {_shown(grade_id)}, which this assignment does not have"
                    if grade_id is not None else "had nbgrader information without a known id")
            return [f"{which} {what}: kept as an ordinary cell, never graded."]
        cell_known = known[name]
        new = cell_known.metadata()
        meta["nbgrader"] = NotebookNode(new)
        changes = []
        if not isinstance(claimed, dict):
            changes.append("its nbgrader information was missing or unreadable")
        else:
            if grade_id is None:
                changes.append("it had no grade id")
            elif grade_id != name:
                changes.append(f"its grade id was {_shown(grade_id)}")
            for flag in FLAGS:
                if bool(claimed.get(flag, False)) != new[flag]:
                    changes.append(f"{flag} was {_shown(bool(claimed.get(flag, False)))}")
            if new.get("points") is not None and _points(claimed.get("points")) != new["points"]:
                changes.append(f"points were {_shown(claimed.get('points'))}")
            if new.get("points") is None and "points" in claimed:
                changes.append(f"it claimed {_shown(claimed['points'])} points")
        if cell.get("cell_type") != cell_known.cell_type:
            changes.append(f"it was a {_shown(cell.get('cell_type'))} cell")
        if not changes:
            return []
        role = (f"the graded cell {_shown(name)} ({cell_known.points:g} points)"
                if cell_known.grade else f"the answer cell {_shown(name)}"
                if cell_known.solution else f"the cell {_shown(name)}")
        return [f"{which} counts as {role}; {', '.join(changes)}."]

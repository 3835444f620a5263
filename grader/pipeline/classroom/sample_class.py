"""Build the sample class from the release: one full solution, one blank, one with mistakes.

``grader/sample_submissions/<student>/<id>/<id>.ipynb`` for three students:

- ``full_solution``: the release with every answer cell (and Think! answer) taken from
  ``solutions/`` — must get full auto-graded marks;
- ``blank_release``: the release untouched — must get zero;
- ``typical_mistakes``: the full solution, except the answers of
  ``grader/sample_mistakes/<topic>.py`` (one typical wrong answer per exercise, see
  :mod:`sample_mistakes`) — must lose points, with feedback naming the mistakes. Its Think!
  answers are left blank.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat

from helpers import syllabus
from pipeline.paths import GRADER, SAMPLE_CLASS, SOLUTIONS, assignment_ids, release_notebook
from sample_mistakes import sample_mistakes

SOLUTION_MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[^\n]*(\n|\Z)", re.MULTILINE)
STUDENTS = ("full_solution", "blank_release", "typical_mistakes")


def mistakes_for(notebook_id: str) -> dict[str, str]:
    """Exercise name -> the source of its sample mistake (declared exercises only)."""
    tutorial = syllabus.tutorial(notebook_id)
    found = sample_mistakes(tutorial.topic)
    return {e.name: found[e.name].source for e in tutorial.exercises if e.name in found}


def _answers(notebook_id: str) -> dict[str, str]:
    """grade_id -> what a perfect student writes, for answer and Think! cells."""
    solution = nbformat.read(SOLUTIONS / f"{notebook_id}.ipynb", as_version=4)
    answers = {}
    for cell in solution.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            answers[meta["grade_id"]] = SOLUTION_MARKERS.sub("", cell.source)
    return answers


def build(out: Path = SAMPLE_CLASS, ids: list[str] | None = None) -> None:
    shutil.rmtree(out, ignore_errors=True)
    for notebook_id in ids or assignment_ids():
        release = release_notebook(GRADER, notebook_id)
        answers, mistakes = _answers(notebook_id), mistakes_for(notebook_id)
        unknown = set(mistakes) - set(answers)
        if unknown:
            raise KeyError(f"grader/sample_mistakes has answers {sorted(unknown)} for cells "
                           f"that are not answer cells of {notebook_id}")
        for student in STUDENTS:
            notebook = nbformat.read(release, as_version=4)
            for cell in notebook.cells:
                meta = cell.metadata.get("nbgrader", {})
                grade_id = meta.get("grade_id")
                if not meta.get("solution") or student == "blank_release":
                    continue
                if student == "typical_mistakes" and cell.cell_type == "markdown":
                    continue  # leaves its Think! answers blank
                if student == "typical_mistakes" and grade_id in mistakes:
                    cell.source = mistakes[grade_id]
                else:
                    cell.source = answers[grade_id]
            target = out / student / notebook_id / f"{notebook_id}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, target)


if __name__ == "__main__":
    build()
    print(f"sample class written to {SAMPLE_CLASS}")

"""Find the submissions in a folder laid out ``<dir>/<student>/<id>/<id>.ipynb``.

Anything that does not fit the layout is reported by name with what was
expected; nothing is skipped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Submission:
    student: str
    assignment: str
    notebook: Path


def find_submissions(root: Path, assignment_ids: list[str]) -> tuple[list[Submission], list[str]]:
    """The well-formed submissions under ``root``, and a problem report for the rest."""
    if not root.is_dir():
        raise FileNotFoundError(f"submissions folder {root} does not exist; expected "
                                f"{root}/<student>/<assignment id>/<assignment id>.ipynb")
    found, problems = [], []
    for student_dir in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not student_dir.is_dir():
            problems.append(f"{student_dir}: a file where a student folder was expected "
                            f"(<student>/<assignment id>/<assignment id>.ipynb)")
            continue
        student = student_dir.name
        if not STUDENT_ID.match(student):
            problems.append(f"{student_dir}: student id {student!r} must use letters, digits, "
                            "'_', '.' or '-' only")
            continue
        for entry in sorted(p for p in student_dir.iterdir() if not p.name.startswith(".")):
            if not entry.is_dir():
                hint = (f" (move it to {student}/{entry.stem}/{entry.name})"
                        if entry.stem in assignment_ids else "")
                problems.append(f"{entry}: expected a folder named after an assignment{hint}")
                continue
            if entry.name not in assignment_ids:
                problems.append(f"{entry}: unknown assignment {entry.name!r}; expected one of "
                                f"{', '.join(assignment_ids)}")
                continue
            notebook = entry / f"{entry.name}.ipynb"
            if notebook.is_file():
                found.append(Submission(student, entry.name, notebook))
                others = sorted(p.name for p in entry.glob("*.ipynb") if p != notebook)
                if others:
                    problems.append(f"{entry}: ignored extra notebooks {others}; only "
                                    f"{notebook.name} is graded")
            else:
                present = sorted(p.name for p in entry.iterdir()) or ["nothing"]
                problems.append(f"{entry}: expected {notebook.name}, found {', '.join(present)}")
    return found, problems

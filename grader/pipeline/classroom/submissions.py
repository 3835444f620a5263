"""Find the submissions in a folder laid out ``<dir>/<student>/<id>/<id>.ipynb``.

Anything that does not fit the layout is reported by name with what was
expected; nothing is skipped silently.

Everything under the submissions folder, and everything a kernel leaves in its folder,
is untrusted: it is opened without following links (``O_NOFOLLOW``, walking from a folder
the grader trusts), a FIFO, device or socket is never opened for reading, and sizes are
capped. A notebook that is a link, a special file or too big is refused by name: it is
found (so that the student gets a result saying why) but never graded.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from pipeline.untrusted_files import MAX_NOTEBOOK_BYTES, describe, printable, refusal

STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")



@dataclass(frozen=True)
class Submission:
    student: str
    assignment: str
    notebook: Path
    refused: str = ""  # why the notebook is not graded (a link, a special file, too big)


def _entries(folder: Path) -> list[tuple[Path, os.stat_result]]:
    """The visible entries of ``folder`` with their lstat, sorted by name."""
    return [(folder / name, os.lstat(folder / name))
            for name in sorted(os.listdir(folder)) if not name.startswith(".")]


def find_submissions(root: Path, assignment_ids: list[str],
                     max_bytes: int = MAX_NOTEBOOK_BYTES) -> tuple[list[Submission], list[str]]:
    """The submissions under ``root``, and a problem report for everything else.

    A notebook that is a link, a special file or over ``max_bytes`` is returned with
    ``refused`` set (and reported): it gets a result that says why, and is never read.
    Links to student or assignment folders are reported and not followed; a folder that
    cannot be read is reported, and the others are still found.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"submissions folder {root} does not exist; expected "
                                f"{root}/<student>/<assignment id>/<assignment id>.ipynb")
    found, problems = [], []
    for student_dir, info in _entries(root):
        if stat.S_ISLNK(info.st_mode):
            problems.append(f"{student_dir}: a symbolic link where a student folder was "
                            "expected (links are never followed)")
            continue
        if not stat.S_ISDIR(info.st_mode):
            problems.append(f"{student_dir}: {describe(info.st_mode)} where a student folder "
                            "was expected (<student>/<assignment id>/<assignment id>.ipynb)")
            continue
        student = student_dir.name
        if not STUDENT_ID.match(student):
            problems.append(f"{student_dir}: student id {student!r} must use letters, digits, "
                            "'_', '.' or '-' only")
            continue
        try:
            entries = _entries(student_dir)
        except OSError as error:
            problems.append(f"{student_dir}: cannot be read ({error.strerror})")
            continue
        for entry, entry_info in entries:
            try:
                _look_at(entry, entry_info, student, assignment_ids, max_bytes, found, problems)
            except OSError as error:
                problems.append(f"{entry}: cannot be read ({error.strerror})")
    return found, [printable(problem) for problem in problems]


def _look_at(entry: Path, info: os.stat_result, student: str, assignment_ids: list[str],
             max_bytes: int, found: list[Submission], problems: list[str]) -> None:
    """Add what ``<student>/<entry>`` holds to ``found`` or ``problems``."""
    if stat.S_ISLNK(info.st_mode):
        problems.append(f"{entry}: a symbolic link where an assignment folder was "
                        "expected (links are never followed)")
        return
    if not stat.S_ISDIR(info.st_mode):
        hint = (f" (move it to {student}/{entry.stem}/{entry.name})"
                if entry.stem in assignment_ids else "")
        problems.append(f"{entry}: expected a folder named after an assignment{hint}")
        return
    if entry.name not in assignment_ids:
        problems.append(f"{entry}: unknown assignment {entry.name!r}; expected one of "
                        f"{', '.join(assignment_ids)}")
        return
    notebook = entry / f"{entry.name}.ipynb"
    names = os.listdir(entry)
    if notebook.name not in names:
        present = sorted(names) or ["nothing"]
        problems.append(f"{entry}: expected {notebook.name}, found {', '.join(present)}")
        return
    notebook_info = os.lstat(notebook)
    why = refusal(notebook_info.st_mode, notebook_info.st_size, max_bytes)
    found.append(Submission(student, entry.name, notebook, refused=why))
    if why:
        problems.append(f"{notebook} {why}; submit the notebook file itself")
    others = sorted(name for name in names if name.endswith(".ipynb")
                    and name != notebook.name and not name.startswith("."))
    if others:
        problems.append(f"{entry}: ignored extra notebooks {others}; only "
                        f"{notebook.name} is graded")

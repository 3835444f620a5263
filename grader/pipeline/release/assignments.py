"""Generate the nbgrader source and release, and notebooks/, from solutions/.

``solutions/<id>.ipynb`` is copied to ``<course>/source/<id>/<id>.ipynb``;
``nbgrader generate_assignment`` produces ``<course>/release/<id>/<id>.ipynb``
(solutions and hidden tests removed, outputs cleared, Colab cells added, cells
recorded in the gradebook), which is copied to ``notebooks/<id>.ipynb``.
Running it twice changes nothing. First, what the declaration in ``helpers/syllabus.py``
fixes is written into the solutions (``pipeline.release.from_syllabus``: exercise numbers, points,
hidden blocks); then nothing is generated while a tutorial disagrees with its declaration
in a way only a person can fix (``pipeline.release.consistency``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from helpers import syllabus
from pipeline.nbgrader_cli import nbgrader
from pipeline.paths import (
    GRADER,
    NOTEBOOKS,
    SOLUTIONS,
    assignment_ids,
    gradebook,
    release_notebook,
    source_folder,
)
from pipeline.release.consistency import require
from pipeline.release.from_syllabus import sync


def generate(course_root: Path = GRADER, notebooks_dir: Path | None = NOTEBOOKS,
             ids: list[str] | None = None) -> list[Path]:
    """Generate every assignment; return the student notebooks written."""
    everything = ids is None
    ids = ids or assignment_ids()
    for notebook_id in ids:
        if notebook_id in syllabus.ids():
            for change in sync(syllabus.tutorial(notebook_id)):
                print(f"from helpers/syllabus.py: {change}")
    require(ids)
    written = []
    for notebook_id in ids:
        source = source_folder(course_root, notebook_id)
        shutil.rmtree(source, ignore_errors=True)
        source.mkdir(parents=True)
        shutil.copy2(SOLUTIONS / f"{notebook_id}.ipynb", source / f"{notebook_id}.ipynb")
        nbgrader("generate_assignment", notebook_id, "--force",
                 course_root=None if course_root == GRADER else course_root)
        release = release_notebook(course_root, notebook_id)
        if notebooks_dir is not None:
            notebooks_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(release, notebooks_dir / release.name)
            written.append(notebooks_dir / release.name)
    if notebooks_dir is not None and everything:
        for stale in set(notebooks_dir.glob("*.ipynb")) - set(written):
            stale.unlink()  # its solution was removed or renamed
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("ids", nargs="*", help="assignment ids (default: all)")
    args = parser.parse_args()
    for path in generate(ids=args.ids or None):
        print(f"generated {path.relative_to(NOTEBOOKS.parent)}")


def ensure_release() -> None:
    """The gradebook must know every assignment; (re)generate when it is missing or stale."""
    db = gradebook(GRADER)
    newest_solution = max(p.stat().st_mtime for p in SOLUTIONS.glob("*.ipynb"))
    if not db.exists() or db.stat().st_mtime < newest_solution:
        generate()


if __name__ == "__main__":
    main()

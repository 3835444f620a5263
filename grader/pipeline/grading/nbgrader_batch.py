"""Autograde and write feedback for a batch of submissions in ONE nbgrader process.

    python -m pipeline.grading.nbgrader_batch COURSE_ROOT [--cell-timeout S] [--notebook-timeout S]
                                                  [--feedback-timeout S]

``COURSE_ROOT`` is a scratch course (gradebook, ``source/`` and
``submitted/<student>/<assignment>/``). The course's ``grader/nbgrader_config.py`` is
loaded and pointed at it, then every submission there is autograded through nbgrader's
own API, one at a time, and its feedback page made right after, each within its own time
limit (``ResilientExecute.notebook_timeout``, ``SafeFeedbackExporter.time_limit``). Once a
notebook is graded and has a page, ``done/<student>/<assignment>.json`` says so: the
grading side takes nothing else from the batch as graded, so a batch killed halfway
leaves no half-graded notebook behind. Starting nbgrader costs seconds, and so does
starting a kernel: nbgrader starts once per batch, and kernels are forked from a warm fork
server (``pipeline.kernels.kernel_forkserver``), which is what makes parallel grading pay off. One
student's failure is logged and the others are graded. Prints a JSON summary.

Whatever a kernel leaves in its folder is untrusted (:func:`harden_nbgrader`): nbgrader
here never writes through a link, never ``chmod``s one, and keeps nothing but the graded
notebook in the folder; what it removes is logged on stderr as ``REFUSED <student>/<id>: ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from traitlets.config import PyFileConfigLoader

from pipeline.grading.safe_feedback import gradebook_scores, minimal_page
from pipeline.kernels.kernel_forkserver import ForkServer
from pipeline.paths import GRADER, db_url, feedback_page
from pipeline.untrusted_files import purge_folder, write_new_file

# jsonschema imports rfc3987_syntax, which builds a grammar for two seconds, only to check
# the "iri" string formats nbformat never asks for: every batch would pay that at start-up.
sys.modules.setdefault("rfc3987_syntax", None)


def course_config(root: Path, cell_timeout: int | None = None,
                  notebook_timeout: int | None = None, feedback_timeout: float | None = None):
    """The course's nbgrader configuration, pointed at the course directory ``root``, with
    the time limits given (None: the configuration's own)."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(GRADER)).load_config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = db_url(root)
    if cell_timeout:
        config.Execute.timeout = cell_timeout
    if notebook_timeout:
        config.ResilientExecute.notebook_timeout = notebook_timeout
    if feedback_timeout:
        config.SafeFeedbackExporter.time_limit = feedback_timeout
    return config


DONE = "done"  # <root>/done/<student>/<assignment>.json: graded, with a feedback page
# What SafeFeedbackExporter logs when a short page stands in for one past its time limit.
STAND_IN = re.compile(r"A feedback page was not made \((.{0,200}?)\); a short page stands in")


def done_marker(root: Path, student: str, assignment: str) -> Path:
    return root / DONE / student / f"{assignment}.json"


def feedback(api, root: Path, student: str, assignment: str) -> str:
    """Make ``student``'s feedback page for ``assignment``; "" when it was made, else why
    not (and a short inert page that says so stands in for it)."""
    page = feedback_page(root, student, assignment)
    result = api.generate_feedback(assignment, student, force=True)
    if result["success"] and page.is_file() and not page.is_symlink():
        stand_in = STAND_IN.search(result.get("log") or "")  # the exporter's own, in time
        return stand_in.group(1) if stand_in else ""
    why = "nbgrader could not make it"
    print(f"feedback failed for {student}/{assignment}:\n{result.get('error', '')}",
          file=sys.stderr)
    info = {"db_url": db_url(root), "assignment": assignment,
            "notebook": assignment, "student": student}
    page.parent.mkdir(parents=True, exist_ok=True)
    write_new_file(page, minimal_page(assignment, why, gradebook_scores(info)).encode())
    return why


def harden_nbgrader() -> None:
    """Make nbgrader, in this process, treat the graded notebooks' folders as untrusted.

    A kernel runs in ``autograded/<student>/<id>/`` and may leave anything there: links to
    the gradebook, the solutions or another student's notebook, FIFOs, huge files, its own
    notebook replaced by a link. Stock nbgrader would write the graded notebook through
    such a link, ``chmod`` what links point at, and copy every file into feedback/. Here
    notebooks and feedback pages are written as new files, never through what was there;
    right after a notebook is graded (where nbgrader sets permissions) its folder is
    emptied of everything but the graded notebook, every removal logged as ``REFUSED``;
    and feedback copies no other file from the graded notebook's folder.
    """
    from nbconvert.writers import FilesWriter
    from nbgrader.converters import GenerateFeedback, base

    class NewFilesWriter(FilesWriter):
        """Writes each output as a new regular file, replacing any link or file there."""

        def write(self, output, resources, notebook_name=None, **kw):
            if notebook_name is None:
                raise TypeError("notebook_name")
            build = Path(self.build_directory or resources.get("metadata", {}).get("path", "."))
            build.mkdir(parents=True, exist_ok=True)
            for name, data in [*resources.get("outputs", {}).items(),
                               *resources.get("attachments", {}).items()]:
                (build / name).parent.mkdir(parents=True, exist_ok=True)
                write_new_file(build / name, data)
            dest = build / (notebook_name + (resources.get("output_extension") or ""))
            write_new_file(dest, output.encode("utf-8") if isinstance(output, str) else output)
            return str(dest)

    def set_permissions(self, assignment_id: str, student_id: str) -> None:
        dest = Path(self._format_dest(assignment_id, student_id))
        keep = {Path(notebook).stem + self.exporter.file_extension for notebook in self.notebooks}
        removed = purge_folder(dest, keep)
        if removed:
            print(f"REFUSED {student_id}/{assignment_id}: removed from the folder of "
                  f"{dest.parent.parent.name}/ (only {', '.join(sorted(keep))} is kept): "
                  + ", ".join(removed), file=sys.stderr, flush=True)
        mode = int(str(self.permissions), 8)
        for name in keep:  # what is left is a regular file; chmod it, never a link
            try:
                fd = os.open(dest / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    base.FilesWriter = NewFilesWriter
    base.BaseConverter.set_permissions = set_permissions
    GenerateFeedback.init_assignment = lambda self, assignment_id, student_id: None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--cell-timeout", type=int, default=None)
    parser.add_argument("--notebook-timeout", type=int, default=None)
    parser.add_argument("--feedback-timeout", type=float, default=None)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    server = ForkServer.start()  # warms up (imports torch, the hidden tests) meanwhile
    from nbgrader.apps import NbGraderAPI  # slow imports: after the server is on its way
    from nbgrader.coursedir import CourseDirectory

    harden_nbgrader()
    config = course_config(root, args.cell_timeout, args.notebook_timeout, args.feedback_timeout)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    submitted = sorted((p.parent.name, p.name) for p in root.glob("submitted/*/*") if p.is_dir())
    summary = {}
    for student, assignment in submitted:
        result = api.autograde(assignment, student, force=True, create=True)
        summary[f"{student}/{assignment}"] = result["success"]
        if not result["success"]:
            print(f"autograde failed for {student}/{assignment}:\n{result.get('log', '')}"
                  f"{result.get('error', '')}", file=sys.stderr)
            continue
        marker = done_marker(root, student, assignment)
        marker.parent.mkdir(parents=True, exist_ok=True)
        write_new_file(marker, json.dumps(
            {"feedback": feedback(api, root, student, assignment)}).encode())
    if server is not None:
        server.stop()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Autograde and write feedback for a batch of submissions in ONE nbgrader process.

    python -m pipeline.nbgrader_batch COURSE_ROOT [--cell-timeout N]

``COURSE_ROOT`` is a scratch course (gradebook, ``source/`` and
``submitted/<student>/<assignment>/``). The course's ``grader/nbgrader_config.py`` is
loaded and pointed at it, then every submission there is autograded through nbgrader's
own API, one at a time, and feedback is generated for each assignment. Starting nbgrader
costs seconds, and so does starting a kernel: nbgrader starts once per batch, and kernels
are forked from a warm fork server (``pipeline.kernel_forkserver``), which is what makes
parallel grading pay off. One student's failure is logged and the others are graded.
Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from traitlets.config import PyFileConfigLoader

from pipeline.kernel_forkserver import ForkServer
from pipeline.paths import GRADER

# jsonschema imports rfc3987_syntax, which builds a grammar for two seconds, only to check
# the "iri" string formats nbformat never asks for: every batch would pay that at start-up.
sys.modules.setdefault("rfc3987_syntax", None)


def course_config(root: Path, cell_timeout: int | None = None):
    """The course's nbgrader configuration, pointed at the course directory ``root``."""
    config = PyFileConfigLoader("nbgrader_config.py", path=str(GRADER)).load_config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    if cell_timeout:
        config.Execute.timeout = cell_timeout
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--cell-timeout", type=int, default=None)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    server = ForkServer.start()  # warms up (imports torch, the hidden tests) meanwhile
    from nbgrader.apps import NbGraderAPI  # slow imports: after the server is on its way
    from nbgrader.coursedir import CourseDirectory

    config = course_config(root, args.cell_timeout)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    submitted = sorted((p.parent.name, p.name) for p in root.glob("submitted/*/*") if p.is_dir())
    summary = {}
    for student, assignment in submitted:
        result = api.autograde(assignment, student, force=True, create=True)
        summary[f"{student}/{assignment}"] = result["success"]
        if not result["success"]:
            print(f"autograde failed for {student}/{assignment}:\n{result.get('log', '')}"
                  f"{result.get('error', '')}", file=sys.stderr)
    for assignment in sorted({a for _, a in submitted}):
        feedback = api.generate_feedback(assignment, force=True)
        if not feedback["success"]:
            print(f"feedback failed for {assignment}:\n{feedback.get('error', '')}",
                  file=sys.stderr)
    if server is not None:
        server.stop()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

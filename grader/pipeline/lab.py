"""JupyterLab for each audience: ``python -m pipeline.lab student|solutions|formgrader [ARGS]``.

- ``student`` (``make lab``): the student notebooks and nothing of the instructor's side:
  nbgrader's menu, "Create Assignment", "Validate" and formgrader are switched off, as a
  student's own Jupyter would have them.
- ``solutions`` (``make lab-solutions``): the instructor's solution notebooks.
- ``formgrader`` (``make formgrader``): JupyterLab in the nbgrader course root
  (``grader/``) with nbgrader's extensions, for grading Think! answers by hand.

Extra arguments go to ``jupyter lab`` (``--port=8890``, ``--no-browser``...). As root
(containers, cloud notebooks, CI images) JupyterLab refuses to start unless told
``--allow-root``; this adds it and says so.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from pipeline.environment import course_env, student_env
from pipeline.paths import GRADER, NOTEBOOKS, SOLUTIONS

NBGRADER_LAB_EXTENSIONS = ("@jupyter/nbgrader",)
NBGRADER_SERVER_EXTENSIONS = (
    "nbgrader.server_extensions.formgrader", "nbgrader.server_extensions.validate_assignment",
    "nbgrader.server_extensions.assignment_list", "nbgrader.server_extensions.course_list",
)
FOLDERS = {"student": NOTEBOOKS, "solutions": SOLUTIONS, "formgrader": GRADER}


def student_config_dir(where: Path) -> Path:
    """A Jupyter config folder that switches nbgrader's lab and server extensions off."""
    (where / "labconfig").mkdir(parents=True, exist_ok=True)
    (where / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {name: True for name in NBGRADER_LAB_EXTENSIONS}}, indent=1))
    (where / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {name: False for name in
                                               NBGRADER_SERVER_EXTENSIONS}}}, indent=1))
    return where


def command(audience: str, extra: list[str]) -> tuple[list[str], dict[str, str]]:
    """The ``jupyter lab`` command line and environment for ``audience``."""
    if audience not in FOLDERS:
        raise SystemExit(f"unknown audience {audience!r}: expected one of {', '.join(FOLDERS)}")
    env = course_env()
    args = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={FOLDERS[audience]}",
            *extra]
    if audience == "student":
        config = student_config_dir(Path(tempfile.mkdtemp(prefix="course-student-lab-")))
        # JUPYTER_CONFIG_DIR comes first on Jupyter's config path: these settings win over
        # the environment's, where nbgrader's extensions are switched on. A student's
        # kernel has no business with the grader's modules (student_env).
        env = {**student_env(), "JUPYTER_CONFIG_DIR": str(config)}
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in extra:
        print("Running as root: starting JupyterLab with --allow-root.", flush=True)
        args.append("--allow-root")
    return args, env


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        raise SystemExit(__doc__)
    args, env = command(argv[0], argv[1:])
    os.execve(args[0], args, env)  # the lab owns the terminal: Ctrl-C reaches it directly


if __name__ == "__main__":
    main()

"""JupyterLab for each audience: ``python -m pipeline.lab student|solutions|formgrader [ARGS]``.

- ``student`` (``make lab``): the student notebooks and nothing of the instructor's side:
  nbgrader's menu, "Create Assignment", "Validate" and formgrader are switched off, as a
  student's own Jupyter would have them.
- ``solutions`` (``make lab-solutions``): the instructor's solution notebooks.
- ``formgrader`` (``make formgrader``): JupyterLab in the nbgrader course root
  (``grader/``) with nbgrader's extensions, for grading Think! answers by hand. It starts
  in ``grader/``, where nbgrader finds the course's ``nbgrader_config.py`` (and through it
  the gradebook), and serves formgrader through ``pipeline.grading.safe_formgrader`` instead of
  nbgrader's own, so that every submission shows inert.

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
from typing import NamedTuple

from pipeline.environment import course_env, student_env
from pipeline.paths import GRADER, NOTEBOOKS, SOLUTIONS

NBGRADER_LAB_EXTENSIONS = ("@jupyter/nbgrader",)
NBGRADER_FORMGRADER = "nbgrader.server_extensions.formgrader"
NBGRADER_SERVER_EXTENSIONS = (
    NBGRADER_FORMGRADER, "nbgrader.server_extensions.validate_assignment",
    "nbgrader.server_extensions.assignment_list", "nbgrader.server_extensions.course_list",
)
SAFE_FORMGRADER = "pipeline.grading.safe_formgrader"
FOLDERS = {"student": NOTEBOOKS, "solutions": SOLUTIONS, "formgrader": GRADER}


class Launch(NamedTuple):
    """How to start JupyterLab for an audience."""

    args: list[str]
    env: dict[str, str]
    cwd: Path


def student_config_dir(where: Path) -> Path:
    """A Jupyter config folder that switches nbgrader's lab and server extensions off."""
    (where / "labconfig").mkdir(parents=True, exist_ok=True)
    (where / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {name: True for name in NBGRADER_LAB_EXTENSIONS}}, indent=1))
    (where / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {name: False for name in
                                               NBGRADER_SERVER_EXTENSIONS}}}, indent=1))
    return where


# Every page of the instructor's server, JupyterLab's included: a submission opened there
# ("open live notebook") may show only what this server and the notebook itself hold, so a
# remote image, video or style in a student's answer cannot tell them it was opened, when
# and from where. (Jupyter's own default: frame-ancestors 'self'.)
INSTRUCTOR_POLICY = ("frame-ancestors 'self'; img-src 'self' data: blob:; "
                     "media-src 'self' data: blob:; font-src 'self' data:")


def formgrader_config_dir(where: Path) -> Path:
    """A Jupyter config folder that serves formgrader through :data:`SAFE_FORMGRADER`
    (nbgrader's formgrader switched off, its other extensions left as they are)."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"jpserver_extensions": {NBGRADER_FORMGRADER: False,
                                               SAFE_FORMGRADER: True},
                       "tornado_settings": {"headers": {
                           "Content-Security-Policy": INSTRUCTOR_POLICY}}}}, indent=1))
    return where


def command(audience: str, extra: list[str]) -> Launch:
    """The ``jupyter lab`` command line, environment and working folder for ``audience``."""
    if audience not in FOLDERS:
        raise SystemExit(f"unknown audience {audience!r}: expected one of {', '.join(FOLDERS)}")
    env = course_env()
    args = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={FOLDERS[audience]}",
            *extra]
    # JUPYTER_CONFIG_DIR comes first on Jupyter's config path: the settings written below
    # win over the environment's, where nbgrader's extensions are switched on.
    if audience == "student":
        config = student_config_dir(Path(tempfile.mkdtemp(prefix="course-student-lab-")))
        # A student's kernel has no business with the grader's modules (student_env).
        env = {**student_env(), "JUPYTER_CONFIG_DIR": str(config)}
    if audience == "formgrader":
        config = formgrader_config_dir(Path(tempfile.mkdtemp(prefix="course-formgrader-")))
        env = {**env, "JUPYTER_CONFIG_DIR": str(config)}
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in extra:
        print("Running as root: starting JupyterLab with --allow-root.", flush=True)
        args.append("--allow-root")
    # nbgrader reads nbgrader_config.py from the folder it starts in: the course's, for
    # formgrader (the course root, the gradebook, the course's exporters).
    return Launch(args, env, FOLDERS[audience])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        raise SystemExit(__doc__)
    launch = command(argv[0], argv[1:])
    os.chdir(launch.cwd)
    # the lab owns the terminal: Ctrl-C reaches it directly
    os.execve(launch.args[0], launch.args, launch.env)


if __name__ == "__main__":
    main()

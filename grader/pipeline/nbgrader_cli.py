"""Run nbgrader's command line inside the course root, with the venv first on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.paths import GRADER


def nbgrader_env() -> dict[str, str]:
    """Environment for nbgrader and the kernels it starts.

    nbgrader shells out to ``alembic`` (next to this Python) and graded kernels import
    ``hidden_tests`` from the course root; widgets fall back to static figures.
    """
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(GRADER), env.get("PYTHONPATH", "")) if p)
    env["COURSE_WIDGETS"] = "0"
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def nbgrader(*args: str, course_root: Path | None = None, check: bool = True,
             quiet: bool = True) -> subprocess.CompletedProcess:
    """``nbgrader <args>`` run from ``grader/`` (where nbgrader_config.py lives).

    ``course_root`` points nbgrader at another course directory and gradebook
    (used to generate into a scratch folder, e.g. for the drift test).
    """
    command = [sys.executable, "-m", "nbgrader", *args]
    if course_root is not None:
        command += [f"--CourseDirectory.root={course_root}",
                    f"--CourseDirectory.db_url=sqlite:///{course_root / 'gradebook.db'}"]
    result = subprocess.run(command, cwd=GRADER, env=nbgrader_env(), text=True,
                            capture_output=quiet)
    if check and result.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed ({result.returncode}):\n"
                           f"{(result.stderr or '')[-4000:]}")
    return result

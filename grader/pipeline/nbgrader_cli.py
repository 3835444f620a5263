"""Run nbgrader's command line inside the course root, with the venv first on PATH."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from pipeline.paths import GRADER


def nbgrader_env() -> dict[str, str]:
    """Environment for nbgrader and the kernels it starts.

    nbgrader shells out to ``alembic`` (next to this Python). It runs in ``grader/``, so
    the pipeline and the hidden tests are importable from there: ``grader/`` is taken off
    ``PYTHONPATH``, so that no kernel inherits it (sandboxed kernels keep only a few
    whitelisted variables anyway, see ``pipeline.sandbox``). Widgets fall back to static
    figures.
    """
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and Path(p).resolve() != GRADER.resolve()]
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path)
    else:
        env.pop("PYTHONPATH", None)
    env["COURSE_WIDGETS"] = "0"
    env.setdefault("PYTHONHASHSEED", "0")
    env.setdefault("OMP_NUM_THREADS", "1")  # parallel workers must not fight over cores
    return env


def _limit_memory(limit_bytes: int | None):
    def apply() -> None:
        if limit_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return apply


def run_limited(command: list[str], *, timeout: float | None = None,
                memory_limit: int | None = None, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess:
    """Run ``command`` from ``grader/`` in :func:`nbgrader_env` (plus ``env``), bounded.

    ``timeout`` bounds the whole run: on expiry the process group (the command and the
    kernels it started) is killed and ``TimeoutExpired`` raised. ``memory_limit``
    (bytes) caps the address space of the command and of each kernel it starts.
    """
    process = subprocess.Popen(command, cwd=GRADER, env={**nbgrader_env(), **(env or {})},
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True, preexec_fn=_limit_memory(memory_limit))
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise
    finally:
        try:  # a kernel left behind by a crashed nbgrader must not outlive it
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def nbgrader(*args: str, course_root: Path | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
    """``nbgrader <args>`` run from ``grader/`` (where nbgrader_config.py lives).

    ``course_root`` points nbgrader at another course directory and gradebook (the
    drift test's scratch copy).
    """
    command = [sys.executable, "-m", "nbgrader", *args]
    if course_root is not None:
        command += [f"--CourseDirectory.root={course_root}",
                    f"--CourseDirectory.db_url=sqlite:///{course_root / 'gradebook.db'}"]
    result = run_limited(command)
    if check and result.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed ({result.returncode}):\n"
                           f"{(result.stderr or '')[-4000:]}")
    return result

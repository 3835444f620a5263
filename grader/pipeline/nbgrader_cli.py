"""Run nbgrader's command line inside the course root, with the venv first on PATH."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from pipeline import environment
from pipeline.paths import GRADER, db_url

# Sets the limits in the child and becomes the command: run_limited is called from the
# grading threads, where subprocess's preexec_fn is unsafe (Python documents that it may
# deadlock the child), so the child runs this instead, before anything else. -I -S: no
# site, no user paths, nothing of the environment reads here; the command gets it whole.
_LIMIT_AND_EXEC = (
    "import os, resource, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def limited(command: list[str], memory_limit: int | None) -> list[str]:
    """``command``, run under an address-space limit of ``memory_limit`` bytes (None: as is).

    The limit is set by a tiny Python that then execs ``command``; every process the
    command starts (nbgrader's kernels, the fork server) inherits it.
    """
    if not memory_limit:
        return list(command)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:  # never ask for more than we may have
        memory_limit = min(memory_limit, hard)
    return [sys.executable, "-I", "-S", "-c", _LIMIT_AND_EXEC, str(memory_limit), *command]


def run_limited(command: list[str], *, timeout: float | None = None,
                memory_limit: int | None = None, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess:
    """Run ``command`` from ``grader/`` in ``environment.nbgrader_env()`` (plus ``env``), bounded.

    ``timeout`` bounds the whole run: on expiry the process group (the command and the
    kernels it started) is killed and ``TimeoutExpired`` raised. ``memory_limit``
    (bytes) caps the address space of the command and of each process it starts.
    Safe to call from several threads at once: nothing runs in the child between
    ``fork`` and ``exec`` but what ``subprocess`` itself does (``start_new_session``).
    """
    process = subprocess.Popen(limited(command, memory_limit), cwd=GRADER,
                               env={**environment.nbgrader_env(), **(env or {})},
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
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
                    f"--CourseDirectory.db_url={db_url(course_root)}"]
    result = run_limited(command)
    if check and result.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed ({result.returncode}):\n"
                           f"{(result.stderr or '')[-4000:]}")
    return result

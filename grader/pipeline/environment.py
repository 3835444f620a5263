"""The environment of every process that runs the course's code, defined once.

    python -m pipeline.environment COMMAND [ARG...]   run COMMAND in course_env()
    python -m pipeline.environment                    print what course_env() sets

The Makefile runs every command that runs course code the first way (with ``grader/`` on
``PYTHONPATH``, so that this module is found; ruff, build and twine need none of it);
pytest makes ``grader/`` importable through its ``pythonpath`` setting. Nothing else puts
``grader/`` on a path or sets these variables.

- :data:`SETTINGS`: what every process that runs course code gets, whoever starts it and
  whatever the caller's environment says: one thread (the models are tiny: one thread is
  faster, gives the same numbers every run, and parallel graders do not fight over cores)
  and a fixed hash seed.
- :func:`course_env`: the instructor's side (every make target, the tests, the benchmarks,
  nbval's kernels on ``solutions/``): the settings, the virtual environment first on
  ``PATH`` (nbgrader shells out to ``alembic``, Jupyter starts its kernels by name) and
  ``grader/`` first on ``PYTHONPATH`` (the pipeline; the hidden tests the solutions import).
- :func:`headless_env`: kernels that run notebooks with no widget front end
  (``make execute``, ``make demo``): :func:`course_env`, widgets drawn as static figures.
- :func:`nbgrader_env`: nbgrader and what it starts: the settings, static widgets, the
  virtual environment first on ``PATH``, and ``grader/`` *off* ``PYTHONPATH``, so that no
  kernel inherits it (nbgrader runs in ``grader/``, where the pipeline is importable).
- :func:`student_env`: a student's JupyterLab (``make lab``): live widgets, ``grader/`` off
  ``PYTHONPATH``.
- :func:`graded_kernel_env`: the whole environment of a sandboxed graded kernel: the
  locale it is given (:data:`KEPT_VARIABLES`), the settings, static widgets, its own folders.
- :func:`fork_server_env`: the kernels' fork server's (``pipeline.kernels.kernel_forkserver``), and
  :func:`sandbox_launcher_env` a kernel's started without one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from pipeline.paths import GRADER

# Every process that runs course code.
SETTINGS = {
    "OMP_NUM_THREADS": "1",  # OpenMP (torch) and, without a setting of its own, OpenBLAS
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
}
# Kernels with no widget front end (helpers.widgets): static figures instead of sliders.
HEADLESS = {"COURSE_WIDGETS": "0"}
# What a graded kernel keeps of the environment it is given; everything else is dropped
# (the settings above are its own anyway).
KEPT_VARIABLES = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "TZ",
                  *SETTINGS, *HEADLESS)
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def bin_dir() -> str:
    """The folder of this Python (the virtual environment's ``bin/``)."""
    return str(Path(sys.executable).parent)


def _split(value: str | None) -> list[str]:
    return [entry for entry in (value or "").split(os.pathsep) if entry]


def _is_grader(entry: str, graders: list[Path]) -> bool:
    try:
        return Path(entry).resolve() in graders
    except OSError:
        return False


def _pythonpath(env: dict[str, str], first: list[str], drop: list[Path]) -> dict[str, str]:
    """``env`` with ``first`` at the front of PYTHONPATH and the folders ``drop`` off it."""
    graders = [Path(g).resolve() for g in drop]
    entries = first + [e for e in _split(env.get("PYTHONPATH")) if not _is_grader(e, graders)]
    env = dict(env)
    if entries:
        env["PYTHONPATH"] = os.pathsep.join(entries)
    else:
        env.pop("PYTHONPATH", None)
    return env


def _venv_first(env: dict[str, str]) -> dict[str, str]:
    rest = [p for p in _split(env.get("PATH")) if p != bin_dir()]
    return {**env, "PATH": os.pathsep.join([bin_dir(), *rest])}


def course_env(base: Mapping[str, str] | None = None, *,
               grader: Path = GRADER) -> dict[str, str]:
    """The instructor's side: ``base`` (default: ours) with :data:`SETTINGS`, the venv first
    on PATH and ``grader`` (a course copy's, in the tests) first on PYTHONPATH, instead of
    any other course's ``grader/``."""
    env = _venv_first({**(os.environ if base is None else base), **SETTINGS})
    return _pythonpath(env, [str(grader)], [GRADER, grader])


def headless_env(base: Mapping[str, str] | None = None, *,
                 grader: Path = GRADER) -> dict[str, str]:
    """:func:`course_env` for kernels with no widget front end (``make execute``)."""
    return {**course_env(base, grader=grader), **HEADLESS}


def nbgrader_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """nbgrader's, run from ``grader/``: the settings, static widgets, the venv first on
    PATH, ``grader/`` off PYTHONPATH."""
    env = _venv_first({**(os.environ if base is None else base), **SETTINGS, **HEADLESS})
    return _pythonpath(env, [], [GRADER])


def student_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A student's JupyterLab (``make lab``): the settings and the venv first on PATH, with
    widgets live and ``grader/`` off PYTHONPATH (a student's kernel cannot import it)."""
    env = _venv_first({**(os.environ if base is None else base), **SETTINGS})
    return _pythonpath(env, [], [GRADER])


def kept(env: Mapping[str, str]) -> dict[str, str]:
    """What a graded kernel may keep of ``env``: :data:`KEPT_VARIABLES`, nothing else."""
    return {name: env[name] for name in KEPT_VARIABLES if name in env}


def sandbox_launcher_env(env: Mapping[str, str]) -> dict[str, str]:
    """``python -m pipeline.kernels.sandbox_kernel`` started directly (no fork server): what a
    kernel keeps of ``env``, the settings, and the pipeline importable (the kernel forgets
    it)."""
    return {**kept(env), **SETTINGS, **HEADLESS, "PYTHONPATH": str(GRADER)}


def graded_kernel_env(env: Mapping[str, str], home: str,
                      bin_folder: str | None = None) -> dict[str, str]:
    """The whole environment of a sandboxed kernel: the locale of ``env``, the settings,
    static widgets, and its own folders under ``home``."""
    kept_ = kept(env)
    return {**kept_, **SETTINGS, **HEADLESS,
            "PATH": os.pathsep.join([bin_folder or bin_dir(), "/usr/local/bin", "/usr/bin",
                                     "/bin"]),
            "HOME": home, "TMPDIR": str(Path(home) / ".tmp"),
            "MPLBACKEND": INLINE_BACKEND, "MPLCONFIGDIR": str(Path(home) / ".config/matplotlib"),
            "IPYTHONDIR": str(Path(home) / ".ipython"),
            "JUPYTER_RUNTIME_DIR": str(Path(home) / ".local/share/jupyter/runtime"),
            "PYDEVD_DISABLE_FILE_VALIDATION": "1", "LANG": kept_.get("LANG", "C.UTF-8")}


def fork_server_env(home: str, code: str) -> dict[str, str]:
    """The whole environment of a fork server: the settings, the locale, its home, and
    ``code`` (the folder that holds ``pipeline``) as its only PYTHONPATH."""
    return {"PATH": os.pathsep.join([bin_dir(), "/usr/bin", "/bin"]),
            "HOME": home, "LANG": os.environ.get("LANG", "C.UTF-8"), **SETTINGS,
            "MPLBACKEND": INLINE_BACKEND, "MPLCONFIGDIR": str(Path(home) / ".matplotlib"),
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": code}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--"]:
        argv = argv[1:]
    env = course_env()
    if not argv:
        for name in sorted(env):
            if env[name] != os.environ.get(name):
                print(f"{name}={env[name]}")
        return
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as error:
        raise SystemExit(f"pipeline.environment: cannot run {argv[0]}: {error}") from None


if __name__ == "__main__":
    main()

"""Start a graded notebook's kernel in a sandbox.

    python -m pipeline.sandbox_kernel <the kernel's own command: python -m ipykernel_launcher -f F>

Before any student code runs, this process
1. imports the hidden tests (and through them torch and the self-check framework) and
   records the state of what they rely on, which every hidden test puts back before it
   checks anything (``hidden_tests.common``);
2. takes ``grader/`` off ``sys.path`` and gives the kernel a fresh private home;
3. restricts itself with Landlock: it may read the Python installation, the ``helpers``
   package, system folders and its own notebook folder, and write only that folder and
   its private home. The hidden-test files, the solutions, the gradebook, the results
   and other students' folders can be neither read nor written, and the kernel cannot
   signal the grader;
4. runs the kernel in this same process, so the restriction covers every thread.

A batch's fork server (``pipeline.kernel_forkserver``) does step 1 once (``preload``) and
steps 2–4 in every kernel it forks (``become_kernel``).

Where Landlock is missing (not Linux, an old kernel) the kernel runs unsandboxed after
a warning on stderr, which the grading log shows. ``COURSE_SANDBOX=0`` turns it off.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys
import tempfile
from pathlib import Path

SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys",
               "/dev", "/opt")


def _preload_hidden_tests() -> Path:
    """Import every hidden-test module; return the folder that holds the package."""
    # ipykernel chooses this backend itself, but only once it starts: matplotlib, imported
    # now through the helpers, must pick the inline backend too.
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # Hidden tests run in the grader's process now: the kernel only preloads what the
    # notebooks import anyway.
    importlib.import_module("torch")
    importlib.import_module("helpers")
    return Path(__file__).resolve().parents[1]


def _readable(grader: Path) -> list[Path]:
    """Everything a kernel needs to read; nothing under the grader's course folder."""
    import helpers  # the course's own package: readable, it is public

    places = {Path(p) for p in SYSTEM_DIRS}
    places |= {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    places |= {Path(p).resolve() for p in helpers.__path__}
    places |= {Path(entry or ".").resolve() for entry in sys.path}
    return sorted(carve_out({p for p in places if p.is_dir()}, grader.parent, grader))


def carve_out(places: set[Path], root: Path, grader: Path) -> set[Path]:
    """``places`` minus ``grader``, and minus the course ``root`` where a place holds it.

    A place inside the grader's folder is dropped. A place that holds the course (a course
    cloned under /opt, say) is replaced by its other children, all the way down, so the
    course's folders are not readable through it; places inside the course but outside
    ``grader/`` (the venv, ``helpers``) stay.
    """
    kept = set()
    for place in places:
        if place == grader or place.is_relative_to(grader):
            continue
        if root == place or root.is_relative_to(place):
            current = place
            for part in root.relative_to(place).parts:
                kept |= {child for child in current.iterdir() if child.name != part}
                current = current / part
        else:
            kept.add(place)
    return kept


def _private_home() -> Path:
    """A fresh folder per kernel for IPython, matplotlib and temporary files."""
    home = Path(tempfile.mkdtemp(prefix="kernel-home-", dir=os.environ.get("COURSE_KERNEL_HOMES")))
    for variable in ("HOME", "IPYTHONDIR", "MPLCONFIGDIR", "TMPDIR"):
        os.environ[variable] = str(home)
    tempfile.tempdir = str(home)
    return home


def preload() -> Path:
    """Step 1, plus the kernel's own imports; returns the grader folder (the hidden tests' home)."""
    grader = _preload_hidden_tests()
    importlib.import_module("ipykernel.kernelapp")
    return grader


def confine(grader: Path, connection_file: Path | None) -> None:
    """Steps 2–3 of the module docstring, in the process that is about to become the kernel."""
    from pipeline import landlock

    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != grader]
    readable = _readable(grader)
    home = _private_home()
    try:
        landlock.restrict(read=readable, write=[Path.cwd(), home, Path("/dev")],
                          files=[connection_file] if connection_file else [])
    except OSError as error:
        print(f"WARNING: student kernel NOT sandboxed: {error}", file=sys.stderr)


def kernel_arguments(command: list[str]) -> list[str]:
    """The arguments after ``-m ipykernel_launcher`` in ``command``; a clear error otherwise."""
    for i in range(len(command) - 1):
        if command[i:i + 2] == ["-m", "ipykernel_launcher"]:
            return command[i + 2:]
    raise ValueError(f"expected `-m ipykernel_launcher ...` in the kernel command, got "
                     f"{' '.join(command)!r}")


def become_kernel(arguments: list[str]) -> None:
    """Steps 1–4 (step 1 is skipped where already done): sandbox this process, run ipykernel."""
    connection = Path(arguments[arguments.index("-f") + 1]) if "-f" in arguments else None
    if sandboxed():
        grader = _preload_hidden_tests()  # modules already imported (a fork server) cost nothing
        confine(grader, connection)
    sys.argv = ["ipykernel_launcher", *arguments]
    runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)


def sandboxed() -> bool:
    """Whether kernels are sandboxed (``COURSE_SANDBOX=0`` turns it off)."""
    return os.environ.get("COURSE_SANDBOX", "1") != "0"


def main() -> None:
    try:
        arguments = kernel_arguments(sys.argv[1:])
    except ValueError as error:
        raise SystemExit(str(error)) from None
    become_kernel(arguments)


if __name__ == "__main__":
    main()

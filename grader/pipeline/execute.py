"""Execute solution notebooks top to bottom in one fresh kernel each, in place.

This is how a maintainer refreshes the committed outputs after editing a
solution (``make execute``); nbval later checks that a re-run reproduces them.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from pipeline.paths import GRADER, ROOT


def execute_notebook(path: Path, *, timeout: int = 300) -> float:
    """Run ``path`` in a fresh python3 kernel, write outputs back, return seconds."""
    notebook = nbformat.read(path, as_version=4)
    # Kernels inherit the environment: hidden tests must be importable, widgets drawn static.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(GRADER), os.environ.get("PYTHONPATH", "")) if p)
    os.environ.setdefault("COURSE_WIDGETS", "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: faster, repeatable
    for cell in notebook.cells:  # timing metadata would make every re-run a diff
        cell.metadata.pop("execution", None)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    elapsed = time.perf_counter() - start
    nbformat.write(notebook, path)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args()
    for path in args.notebooks:
        seconds = execute_notebook(path.resolve())
        print(f"{path.relative_to(ROOT) if path.is_absolute() else path}: {seconds:.1f} s")


if __name__ == "__main__":
    main()

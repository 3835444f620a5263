"""Execute solution notebooks top to bottom in one fresh kernel each, in place.

This is how a maintainer refreshes the committed outputs after editing a
solution (``make execute``); nbval later checks that a re-run reproduces them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient

from pipeline.environment import headless_env
from pipeline.paths import ROOT


def execute_notebook(path: Path, *, timeout: int = 300) -> float:
    """Run ``path`` in a fresh python3 kernel, write outputs back, return seconds."""
    notebook = nbformat.read(path, as_version=4)
    # Kernels inherit the environment: the course's, widgets drawn static (pipeline.environment).
    os.environ.update(headless_env())
    for cell in notebook.cells:  # timing metadata would make every re-run a diff
        cell.metadata.pop("execution", None)
    # Widget state holds random model ids: never stored (widgets are drawn static here).
    notebook.metadata.pop("widgets", None)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-kernel-") as sockets:
        # Unix sockets, not TCP: nothing else on the machine can connect, and the kernel
        # has no reason to warn that its traffic is unencrypted.
        kernel = AsyncKernelManager(kernel_name="python3", transport="ipc",
                                    ip=str(Path(sockets) / "kernel"))
        try:
            NotebookClient(notebook, km=kernel, timeout=timeout, record_timing=False,
                           store_widget_state=False,
                           resources={"metadata": {"path": str(path.parent)}}).execute()
        finally:  # a kernel manager passed in is ours to stop
            if run_sync(kernel.is_alive)():
                run_sync(kernel.shutdown_kernel)(now=False)
    elapsed = time.perf_counter() - start
    nbformat.write(notebook, path)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    args = parser.parse_args()
    for path in args.notebooks:
        seconds = execute_notebook(path.resolve())
        shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
        print(f"{shown}: {seconds:.1f} s")


if __name__ == "__main__":
    main()

"""Shared fixtures: the grader's hidden tests and the pipeline are importable from grader/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "grader"))
sys.path.insert(0, str(ROOT / "tests"))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(cwd / "grader"),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, text=True,
                            capture_output=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def course_copy(tmp_path_factory) -> Path:
    """A scratch copy of the course (pipeline code + solutions) with the release generated.

    Tests grade and regenerate here, never in the real grader/ folder.
    """
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(ROOT / "solutions", root / "solutions")
    (root / "grader").mkdir()
    for name in ("nbgrader_config.py", "pipeline", "hidden_tests", "sample_mistakes"):
        source = ROOT / "grader" / name
        copy = shutil.copytree if source.is_dir() else shutil.copy2
        copy(source, root / "grader" / name)
    _run(["-m", "pipeline.assignments"], root)
    return root


@pytest.fixture(scope="session")
def run_in_course():
    """Run ``python <args>`` inside a course copy, failing the test on a non-zero exit."""
    return _run


@pytest.fixture(autouse=True)
def headless_figures(monkeypatch):
    """Demos draw static figures, nothing is shown, and every figure is closed afterwards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setenv("COURSE_WIDGETS", "0")
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: None)
    yield
    plt.close("all")

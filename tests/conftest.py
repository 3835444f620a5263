"""Shared fixtures. grader/ (the pipeline, the hidden tests) and tests/ are importable through
pytest's `pythonpath` setting (pyproject.toml); subprocesses get the course's environment
from pipeline.environment."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from misbehaving import BANK, NOTEBOOK, SANDBOX_ONLY
from mutation import COVERAGE

from pipeline.environment import course_env
from pipeline.kernels import landlock

ROOT = Path(__file__).resolve().parents[1]
SANDBOXED = landlock.abi_version() > 0


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python <args>`` in the course copy ``cwd``, in its own course environment."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=course_env(grader=cwd / "grader"),
                            text=True, capture_output=True)
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
    for name in ("nbgrader_config.py", "pipeline", "kernel_protocol", "hidden_tests",
                 "sample_mistakes"):
        source = ROOT / "grader" / name
        copy = shutil.copytree if source.is_dir() else shutil.copy2
        copy(source, root / "grader" / name)
    _run(["-m", "pipeline.release.assignments"], root)
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


def _misbehave(sample_dir, student, answers, tests, tamper=None):
    """The full solution of NOTEBOOK with cells replaced, deleted or duplicated (see BANK)."""
    source = sample_dir / "full_solution" / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    notebook = nbformat.read(source, as_version=4)
    cells = []
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        new = answers.get(grade_id, tests.get(grade_id, cell.source))
        for text in new if isinstance(new, list) else [] if new is None else [new]:
            cells.append(copy.deepcopy(cell))
            cells[-1].source = text
    notebook.cells = cells
    target = sample_dir / student / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    target.parent.mkdir(parents=True)
    notebook = json.loads(json.dumps(notebook))  # plain dicts for `tamper`
    if tamper is not None:
        tamper(notebook, target.parent)
    # json, not nbformat.write: nbformat would refuse (or repair) the duplicated cell ids
    if not target.is_symlink():
        target.write_text(json.dumps(notebook, indent=1))


@pytest.fixture(scope="session")
def graded(course_copy, run_in_course):
    """The sample class plus the misbehaving bank, graded as `make grade` does (JOBS=2).

    Returns (course folder, the grading run, results by (student, assignment)).
    """
    run_in_course(["-m", "pipeline.classroom.sample_class"], course_copy)
    sample = course_copy / "grader" / "sample_submissions"
    for student, (answers, tests, _, *tamper) in BANK.items():
        if SANDBOXED or student not in SANDBOX_ONLY:
            _misbehave(sample, student, answers, tests, *tamper)
    misnamed = sample / "misnamed" / NOTEBOOK
    misnamed.mkdir(parents=True)
    shutil.copy2(sample / "blank_release" / NOTEBOOK / f"{NOTEBOOK}.ipynb",
                 misnamed / "homework.ipynb")
    run = run_in_course(["-m", "pipeline.grading", str(sample), "--jobs", "2",
                         "--cell-timeout", "20"], course_copy)
    results = {}
    for path in (course_copy / "grader" / "results").glob("*.json"):
        result = json.loads(path.read_text())
        results[result["student"], result["assignment"]] = result
    return course_copy, run, results


@pytest.fixture
def grading_course(tmp_path, monkeypatch) -> Path:
    """An empty course folder (``grader/`` with a source and a gradebook file) that the
    grading module works in, so its batch and retry logic can be tested with fakes."""
    from pipeline.grading import autograde

    grader = tmp_path / "grader"
    (grader / "source" / "01_a").mkdir(parents=True)
    (grader / "gradebook.db").write_bytes(b"")
    for name, value in {"GRADER": grader, "SCRATCH": grader / ".scratch",
                        "RESULTS": grader / "results"}.items():
        monkeypatch.setattr(autograde, name, value)
    return grader


def pytest_terminal_summary(terminalreporter) -> None:
    """The contract table: per exercise and clause, the checks that test it and the wrong
    variants that fail there, in the self-check and in the hidden test."""
    if not COVERAGE:
        return
    from helpers.syllabus import TUTORIALS

    write = terminalreporter.write_line
    terminalreporter.section("contracts: checks and failing wrong variants per clause")
    write(f"{'exercise':<31} {'clause':<15} {'self-check':<30} {'hidden test':<30}")
    for tutorial in TUTORIALS:
        for exercise in tutorial.exercises:
            if not any(name == exercise.name for name, _ in COVERAGE):
                continue
            for clause in [*exercise.contract, *exercise.rules]:
                cells = []
                for side in ("self-check", "hidden test"):
                    coverage = COVERAGE.get((exercise.name, side))
                    if coverage is None or (side == "hidden test" and clause in exercise.rules):
                        cells.append("-" if coverage is not None else "not run")
                        continue
                    variants = coverage.failing.get(clause, [])
                    cells.append(f"{coverage.checks.get(clause, 0):>3} checks, "
                                 f"{len(variants):>2} wrong answers fail")
                rule = "*" if clause in exercise.rules else ""
                write(f"{exercise.name[:31]:<31} {(clause + rule)[:15]:<15} {cells[0]:<30} "
                      f"{cells[1]}")

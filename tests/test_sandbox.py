"""The grading sandbox and batching, without nbgrader: Landlock rules, kernel command, retries."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pipeline import grading, landlock, sandbox_kernel
from pipeline.preprocessors import SandboxedKernelManager
from pipeline.submissions import Submission

needs_landlock = pytest.mark.skipif(landlock.abi_version() < 1,
                                    reason="Landlock is not available here")


@needs_landlock
def test_landlock_allows_only_the_listed_folders(tmp_path):
    readable, writable, secret = (tmp_path / n for n in ("readable", "writable", "secret"))
    for folder in (readable, writable, secret):
        folder.mkdir()
        (folder / "file.txt").write_text("content")
    probe = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from pipeline import landlock
        landlock.restrict(read=[Path(p) for p in sys.path if p] + [Path("{readable}")],
                          write=[Path("{writable}")])
        def attempt(action):
            try:
                action()
                return "allowed"
            except PermissionError:
                return "denied"
        print(json.dumps({{
            "read readable": attempt(lambda: Path("{readable}/file.txt").read_text()),
            "write readable": attempt(lambda: Path("{readable}/new.txt").write_text("x")),
            "read writable": attempt(lambda: Path("{writable}/file.txt").read_text()),
            "write writable": attempt(lambda: Path("{writable}/new.txt").write_text("x")),
            "read secret": attempt(lambda: Path("{secret}/file.txt").read_text()),
            "write secret": attempt(lambda: Path("{secret}/file.txt").write_text("x")),
            "list secret": attempt(lambda: list(Path("{secret}").iterdir())),
        }}))
    """)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "read readable": "allowed", "write readable": "denied",
        "read writable": "allowed", "write writable": "allowed",
        "read secret": "denied", "write secret": "denied", "list secret": "denied",
    }
    assert (secret / "file.txt").read_text() == "content"


def test_a_course_installed_under_a_readable_folder_stays_unreadable(tmp_path):
    opt = tmp_path / "opt"
    course = opt / "srv" / "course"
    for folder in ("grader/hidden_tests", "solutions", "helpers", ".venv"):
        (course / folder).mkdir(parents=True)
    (opt / "other").mkdir()
    (opt / "srv" / "lib").mkdir()
    places = {opt, course / ".venv", course / "helpers", course / "grader" / "hidden_tests"}
    kept = sandbox_kernel.carve_out(places, course, course / "grader")
    assert kept == {opt / "other", opt / "srv" / "lib", course / ".venv", course / "helpers"}


def test_kernels_start_through_the_sandbox():
    manager = SandboxedKernelManager(kernel_name="python3")
    command = manager.format_kernel_cmd()
    wrapper = command.index("pipeline.sandbox_kernel")
    assert command[wrapper - 1] == "-m"
    assert command[wrapper + 1:wrapper + 3] == ["-m", "ipykernel_launcher"]


# ---- batches ------------------------------------------------------------------------------

def _subs(assignment: str, n: int) -> list[Submission]:
    return [Submission(f"s{i}", assignment, Path(f"/nowhere/s{i}.ipynb")) for i in range(n)]


def test_batches_are_even_mixes_of_assignments_a_multiple_of_the_jobs():
    subs = _subs("01_a", 6) + _subs("06_f", 3)
    batches = grading.make_batches(subs, jobs=2, batch_size=8)
    assert sorted(len(b) for b in batches) == [4, 5]
    assert all({s.assignment for s in b} == {"01_a", "06_f"} for b in batches)
    assert sorted(s.student + s.assignment for b in batches for s in b) == sorted(
        s.student + s.assignment for s in subs)
    big = grading.make_batches(_subs("01_a", 40) + _subs("02_b", 40), jobs=2, batch_size=8)
    assert len(big) == 10 and {len(b) for b in big} == {8}
    assert grading.make_batches(_subs("01_a", 1), jobs=4, batch_size=8) == [_subs("01_a", 1)]
    assert grading.make_batches([], jobs=2, batch_size=8) == []


def test_a_batch_that_times_out_is_graded_again_one_by_one(tmp_path, monkeypatch):
    grader = tmp_path / "grader"
    (grader / "source" / "01_a").mkdir(parents=True)
    (grader / "gradebook.db").write_bytes(b"")
    for name, value in {"GRADER": grader, "SCRATCH": grader / ".scratch",
                        "RESULTS": grader / "results"}.items():
        monkeypatch.setattr(grading, name, value)
    notebooks = tmp_path / "class"
    notebooks.mkdir()
    subs = [Submission(f"s{i}", "01_a", notebooks / f"s{i}.ipynb") for i in range(3)]
    for sub in subs:
        sub.notebook.write_text("{}")
    runs = []

    def hangs(command, *, timeout, memory_limit, env):
        runs.append(sorted(p.name for p in (Path(command[3]) / "submitted").iterdir()))
        raise subprocess.TimeoutExpired(command, timeout)

    monkeypatch.setattr(grading, "run_limited", hangs)
    results = grading.grade_batch(subs, timeout=10, memory_limit=None)
    assert runs == [["s0", "s1", "s2"], ["s0"], ["s1"], ["s2"]]
    assert [r["status"] for r in results] == ["timed out after 10 s"] * 3
    assert sorted(p.name for p in (grader / "results").iterdir()) == [
        "s0__01_a.json", "s1__01_a.json", "s2__01_a.json"]
    assert not list((grader / ".scratch").iterdir())  # scratch courses are cleaned up

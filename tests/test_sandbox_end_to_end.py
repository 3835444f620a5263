"""Grade the escape attempts of ``tests/misbehaving/escapes.py`` as `make grade` does.

Each attempt must get nowhere, and each student must still get the points their correct
answers earn. Uses the class graded by the ``graded`` fixture (``tests/conftest.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from misbehaving import BANK, NOTEBOOK
from misbehaving.escapes import BANK as ESCAPES
from misbehaving.escapes import BOMB, FLOOD_BYTES, LISTENER, MARK, SECRET, SLEEP
from test_kernel_forkserver import processes_running

from pipeline.environment import course_env
from pipeline.kernels import sandbox

_BWRAP, _WHY = sandbox.bwrap_path()
_WHY = _WHY or (sandbox.bwrap_usable(_BWRAP) if _BWRAP else "")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(_WHY or sandbox.userns_usable()),
                                 reason=f"no bubblewrap sandbox here: {_WHY or sandbox.userns_usable()}")]


def _printed(course: Path, student: str) -> str:
    """Everything the student's graded notebook printed."""
    notebook = nbformat.read(course / "grader" / "autograded" / student / NOTEBOOK
                             / f"{NOTEBOOK}.ipynb", as_version=4)
    return "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))


@pytest.mark.parametrize("student", sorted(ESCAPES))
def test_an_escaping_student_still_gets_the_points_their_answers_earn(graded, student):
    result = graded[2][student, NOTEBOOK]
    scores = {c["grade_id"]: c["score"] for c in result["cells"] if c["kind"] == "auto"}
    assert scores == BANK[student][2], result
    assert "escape:" in _printed(graded[0], student)  # the attempt ran


def test_no_process_outlives_grading(graded):
    course = graded[0]
    assert "escape: started two detached sleepers" in _printed(course, "escape_sleepers")
    assert "escape: started" in _printed(course, "escape_fork_bomb")
    assert processes_running(SLEEP) == []  # the sleepers, the daemon, the fork bomb's
    leftovers = processes_running(str(course))  # no kernel, server or bubblewrap either
    assert leftovers == [], [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in leftovers]


def test_a_fork_bomb_stops_at_the_process_limit(graded):
    printed = _printed(graded[0], "escape_fork_bomb")
    assert "escape: the fork bomb stopped BlockingIOError" in printed
    started = int(printed.split("escape: started ")[1].split()[0])
    assert started < min(BOMB, sandbox.Limits().tasks)


def test_kernels_leave_no_message_for_each_other(graded):
    course = graded[0]
    for student in ("escape_messages_a", "escape_messages_b"):
        printed = _printed(course, student)
        assert "escape: left a message in /dev/shm" in printed  # its own /dev/shm...
        assert "escape: found" not in printed  # ...where nobody else's message is
        assert "escape: could not write in /" in printed
    for folder in ("/dev/shm", "/tmp", "/var/tmp", Path.home()):  # nothing reached the machine
        assert not [name for name in os.listdir(folder) if name.startswith(MARK)], folder


def test_a_kernel_reaches_no_network(graded):
    printed = _printed(graded[0], "escape_network")
    assert "escape: connected" not in printed
    assert "escape: no connection to the grader's machine" in printed
    assert "escape: no connection to the internet" in printed
    with pytest.raises(BlockingIOError):
        LISTENER.accept()  # nobody ever came


def test_no_kernel_sees_the_graders_environment(graded):
    course = graded[0]
    assert os.environ["COURSE_ESCAPE_SECRET"] == SECRET  # the grader had it
    printed = _printed(course, "escape_environment")
    assert "escape: environment" in printed
    assert "COURSE_ESCAPE_SECRET" not in printed and SECRET not in printed
    for page in (course / "grader").rglob("*"):
        if page.is_file() and page.suffix in (".ipynb", ".html", ".json", ".csv"):
            assert SECRET.encode() not in page.read_bytes(), page


def test_disk_writes_stop_at_the_cap(graded):
    course = graded[0]
    printed = _printed(course, "escape_disk")
    written = int(printed.split("escape: wrote ")[1].split()[0])
    assert written <= sandbox.Limits().disk_mb
    assert "escape: no sparse file: File too large" in printed
    big = [path for path in course.rglob("*") if path.is_file()
           and path.stat().st_blocks * 512 > 50 * 2**20]
    assert big == []


def test_a_stderr_flood_stays_out_of_the_grader(graded, tmp_path):
    course, run, _ = graded
    assert f"escape: wrote {FLOOD_BYTES} bytes to its stderr" in _printed(course,
                                                                          "escape_stderr_flood")
    assert len(run.stdout) + len(run.stderr) < 2**20
    # the grading process alone (in a copy of the course), grading the flood and, to compare,
    # an honest notebook: the flood adds nothing worth speaking of to its memory
    copy = tmp_path / "course"
    shutil.copytree(course, copy, symlinks=True, ignore=shutil.ignore_patterns(
        "sample_submissions", "autograded", "feedback", "results", ".scratch", "summary"))
    peak = {student: _peak_memory_grading(course, copy, tmp_path, student)
            for student in ("escape_stderr_flood", "full_solution")}
    print(f"the grading process's peak memory (MiB): {peak}")
    assert peak["escape_stderr_flood"] - peak["full_solution"] < 64, peak  # 300 MB written


def _peak_memory_grading(course: Path, copy: Path, tmp_path: Path, student: str) -> int:
    """MiB the grading process itself peaked at, grading ``student``'s notebook alone."""
    klass = tmp_path / f"class-{student}"
    notebook = course / "grader" / "sample_submissions" / student / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    (klass / student / NOTEBOOK).mkdir(parents=True)
    (klass / student / NOTEBOOK / f"{NOTEBOOK}.ipynb").write_bytes(notebook.read_bytes())
    measure = ("import atexit, resource, runpy, sys\n"
               "atexit.register(lambda: print('MAXRSS', resource.getrusage("
               "resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr))\n"
               f"sys.argv = ['grading', {str(klass)!r}, '--jobs', '1', '--cell-timeout', '60']\n"
               "runpy.run_module('pipeline.grading.autograde', run_name='__main__')\n")
    measured = subprocess.run([sys.executable, "-c", measure], cwd=copy,
                              env=course_env(grader=copy / "grader"), text=True,
                              capture_output=True, timeout=900)
    assert measured.returncode == 0, measured.stderr[-3000:]
    assert len(measured.stdout) + len(measured.stderr) < 2**20
    return int(measured.stderr.split("MAXRSS ")[-1].split()[0]) // 1024

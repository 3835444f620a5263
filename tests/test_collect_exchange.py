"""A JupyterHub course through nbgrader's own exchange, in a local exchange folder: `make
release` runs `nbgrader release_assignment`, students fetch and submit with nbgrader's own
`fetch_assignment` and `submit` (one of them twice, one with a link in the submission), and
`make collect` takes the class in with `nbgrader collect`: each student's latest submission,
with nbgrader's timestamp, and nothing a link points at."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from pipeline.classroom.deadlines import read_timestamp

pytestmark = pytest.mark.slow
NOTEBOOK = "01_gain_multiplication"
COURSE = "attention-course"


def _nbgrader(*args: str, cwd, home) -> subprocess.CompletedProcess:
    """A student's `nbgrader ...`, run in their own folder with their own Jupyter data."""
    env = {**os.environ, "HOME": str(home), "JUPYTER_DATA_DIR": str(home / ".jupyter-data")}
    env.pop("PYTHONPATH", None)
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def hub(course_copy, run_in_course, tmp_path_factory):
    """A course copy, an exchange, and three students who fetched and submitted."""
    root = tmp_path_factory.mktemp("hub")
    course = root / "course"
    shutil.copytree(course_copy, course, symlinks=True, ignore=shutil.ignore_patterns(
        "sample_submissions", "submitted", "autograded", "feedback", "results", ".scratch",
        "summary", "grades.csv", "lms", "export"))
    due = datetime.now(timezone.utc) + timedelta(days=1)
    (course / "grader" / "roster.csv").write_text(
        "student_id,first_name,last_name,email\nada,Ada,Lovelace,ada@x\n"
        "alan,Alan,Turing,alan@x\ngrace,Grace,Hopper,grace@x\nkatherine,Katherine,Johnson,k@x\n")
    (course / "grader" / "deadlines.csv").write_text(
        f"assignment,due\n{NOTEBOOK},{due:%Y-%m-%dT%H:%M:%S+00:00}\n")
    exchange = root / "exchange"
    exchange.mkdir()
    released = run_in_course(["-m", "pipeline.classroom.collect", str(exchange), "--release",
                              "--assignment", NOTEBOOK], course)
    flags = [f"--Exchange.root={exchange}", f"--course={COURSE}"]
    for student in ("ada", "alan", "grace", "visitor"):
        home = root / "home" / student
        home.mkdir(parents=True)
        _nbgrader("fetch_assignment", NOTEBOOK, *flags, f"--Exchange.cache={home}/cache",
                  cwd=home, home=home)
        fetched = home / NOTEBOOK / f"{NOTEBOOK}.ipynb"
        assert fetched.is_file()
        _nbgrader("submit", NOTEBOOK, *flags, f"--student={student}",
                  f"--Exchange.cache={home}/cache", cwd=home, home=home)
        if student == "grace":  # puts a link into her (writable) inbound folder afterwards
            [mine] = (exchange / COURSE / "inbound").glob("grace+*")
            (mine / "answers.ipynb").symlink_to("/etc/passwd")
        if student == "alan":  # changes the notebook and submits again
            fetched.write_text(fetched.read_text().replace("YOUR CODE HERE", "second try"))
            _nbgrader("submit", NOTEBOOK, *flags, f"--student={student}",
                      f"--Exchange.cache={home}/cache", cwd=home, home=home)
    collected = run_in_course(["-m", "pipeline.classroom.collect", str(exchange)], course)
    return course, exchange, released.stdout, collected.stdout


def test_release_puts_the_release_in_the_exchange(hub):
    course, exchange, released, _ = hub
    outbound = exchange / COURSE / "outbound" / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    assert outbound.read_bytes() == (course / "notebooks" / f"{NOTEBOOK}.ipynb").read_bytes()
    assert f"released {NOTEBOOK}" in released


def test_collect_takes_each_students_latest_submission_with_its_time(hub):
    course, exchange, _, collected = hub
    submitted = course / "grader" / "submitted"
    assert sorted(p.name for p in submitted.iterdir()) == ["ada", "alan", "grace"]
    inbound = sorted(os.listdir(exchange / COURSE / "inbound"))
    alans = [name for name in inbound if name.startswith("alan+")]
    assert len(alans) == 2
    alan = submitted / "alan" / NOTEBOOK
    assert "second try" in (alan / f"{NOTEBOOK}.ipynb").read_text()
    latest = max(read_timestamp(name.split("+")[2]) for name in alans)
    assert read_timestamp((alan / "timestamp.txt").read_text()) == latest
    assert "an earlier submission of alan; nbgrader collect kept inbound/alan+" in collected
    assert "katherine" in collected.splitlines()[-1]  # on the roster, nothing handed in


def test_collect_names_what_it_could_not_place(hub):
    _, _, _, collected = hub
    assert "answers.ipynb: is a symbolic link, not a file (links are never followed)" in collected
    assert "'visitor' is not on the roster" in collected
    for line in collected.splitlines():
        assert "root:" not in line  # nothing of what the link points at


def test_nbgraders_timestamp_makes_the_submission_on_time(hub, run_in_course):
    course, _, _, _ = hub
    run = run_in_course(["-m", "pipeline.grading", "grader/submitted", "--jobs", "1",
                         "--cell-timeout", "30"], course)
    grades = {line.split(",")[1]: line for line in
              (course / "grader" / "grades.csv").read_text().splitlines()[1:]}
    assert set(grades) == {"ada", "alan", "grace", "katherine"}
    assert ",missing," in grades["katherine"]
    assert "Missing (1): katherine" in run.stdout and "Late (0): nobody" in run.stdout
    page = course / "grader" / "feedback" / "ada" / NOTEBOOK / f"{NOTEBOOK}.html"
    assert "before the deadline" in page.read_text()

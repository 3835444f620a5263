"""What the submissions of ``tests/misbehaving/untrusted_files.py`` could not reach, once the
class is graded as `make grade` does (the session fixture ``graded``), and once a small
class of them is graded with unsandboxed kernels, which can then reach the folder nbgrader
writes graded notebooks to (fixture ``unsandboxed``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import _misbehave
from misbehaving import BANK, NOTEBOOK
from misbehaving.untrusted_files import BANK as UNTRUSTED
from misbehaving.untrusted_files import FOLDER, LINKED_NOTEBOOK, MADE, REFUSED, VICTIM

from pipeline.classroom.sample_class import STUDENTS
from pipeline.environment import course_env
from pipeline.grading.metadata_repair import NOTE_TITLE

pytestmark = pytest.mark.slow
KINDS = {"autograded": ".ipynb", "feedback": ".html"}
KERNEL_ATTACKS = ("kernel_links_in_its_folder", "kernel_replaces_its_notebook",
                  "kernel_special_files")


def _scores(result: dict) -> dict:
    return {c["grade_id"]: c["score"] for c in result["cells"] if c["kind"] == "auto"}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("student", sorted(UNTRUSTED))
def test_each_student_is_graded_against_the_gradebook_for_what_it_earned(graded, student):
    result = graded[2][student, NOTEBOOK]
    assert _scores(result) == UNTRUSTED[student][2], result
    assert result["status"] == "graded", result
    ids = {c["grade_id"] for c in result["cells"]}
    assert ids == {c["grade_id"] for c in graded[2]["full_solution", NOTEBOOK]["cells"]}


def _graded_notebook(course: Path, student: str) -> nbformat.NotebookNode:
    return nbformat.read(course / "grader" / "autograded" / student / NOTEBOOK
                         / f"{NOTEBOOK}.ipynb", as_version=4)


@pytest.mark.parametrize("student", sorted(s for s in UNTRUSTED if s.startswith("meta_")))
def test_repaired_metadata_is_explained_in_the_feedback(graded, student):
    course = graded[0]
    first = _graded_notebook(course, student).cells[0]
    assert first.cell_type == "markdown" and first.source.startswith(NOTE_TITLE), first
    page = (course / "grader" / "feedback" / student / NOTEBOOK / f"{NOTEBOOK}.html").read_text()
    assert "A note from the grader." in page
    assert "<b>" not in first.source  # a forged id is never rendered as markup


def test_honest_notebooks_get_no_note(graded):
    for student in ("full_solution", VICTIM, "files_links_next_to_notebook"):
        assert not _graded_notebook(graded[0], student).cells[0].source.startswith(NOTE_TITLE)


def _check_folders(course: Path, results: dict) -> None:
    """autograded/ and feedback/ hold, per student and notebook, only the graded notebook
    or its feedback page, as a regular file of reasonable size."""
    for kind, extension in KINDS.items():
        top = course / "grader" / kind
        for student in os.listdir(top):
            assert stat.S_ISDIR(os.lstat(top / student).st_mode), top / student
            for notebook_id in os.listdir(top / student):
                folder = top / student / notebook_id
                assert stat.S_ISDIR(os.lstat(folder).st_mode), folder
                assert os.listdir(folder) == [f"{notebook_id}{extension}"], folder
                info = os.lstat(folder / f"{notebook_id}{extension}")
                assert stat.S_ISREG(info.st_mode) and info.st_size < 16 * 2**20, folder
        graded_here = {(s, i) for s in os.listdir(top) for i in os.listdir(top / s)}
        assert graded_here >= {key for key, r in results.items() if r["status"] == "graded"}
        assert not graded_here & {key for key, r in results.items() if r["status"] != "graded"}


def test_graded_and_feedback_folders_hold_only_the_notebook_and_its_page(graded):
    _check_folders(graded[0], graded[2])


def _course_files(course: Path) -> dict[str, Path]:
    """digest -> path of every file a submission must not get a copy of."""
    places = [course / "solutions", course / "grader" / "source", course / "grader" / "release",
              course / "grader" / "hidden_tests", course / "grader" / "kernel_protocol",
              course / "grader" / "sample_submissions",
              course / "grader" / "results"]
    files = {}
    for place in places:
        for path in place.rglob("*"):
            if path.is_file() and not path.is_symlink() and stat.S_ISREG(path.stat().st_mode):
                if path.stat().st_size < 2**26:
                    files[_digest(path.read_bytes())] = path
    for name in ("gradebook.db", "grades.csv"):
        path = course / "grader" / name
        files[_digest(path.read_bytes())] = path
    return files


def _check_no_course_file_copied(course: Path) -> None:
    secrets = _course_files(course)
    for kind in KINDS:
        for path in (course / "grader" / kind).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert _digest(data) not in secrets, f"{path} is a copy of {secrets[_digest(data)]}"
                assert not data.startswith(b"SQLite format 3"), f"{path} is a gradebook"
    for path in (course / "grader").rglob("*"):  # nothing the grader wrote is a link
        if "sample_submissions" not in path.relative_to(course).parts:
            assert not path.is_symlink(), path


def test_no_course_file_was_copied_into_any_graded_or_feedback_folder(graded):
    _check_no_course_file_copied(graded[0])


def test_no_submission_was_changed_by_grading(graded, tmp_path, run_in_course):
    """Every submitted notebook is byte for byte what was handed in."""
    course = graded[0]
    sample = course / "grader" / "sample_submissions"
    again = tmp_path / "again"
    code = ("import sys; from pathlib import Path; from pipeline.classroom import sample_class; "
            "sample_class.build(out=Path(sys.argv[1]), ids=[sys.argv[2]])")
    run_in_course(["-c", code, str(again), NOTEBOOK], course)
    for student, (answers, tests, _, *tamper) in BANK.items():
        if (sample / student).is_dir():
            _misbehave(again, student, answers, tests, *tamper)
    for student in sorted(set(STUDENTS) | set(BANK)):
        submitted = sample / student / NOTEBOOK / f"{NOTEBOOK}.ipynb"
        if not os.path.lexists(submitted):
            continue
        expected = again / student / NOTEBOOK / f"{NOTEBOOK}.ipynb"
        if submitted.is_symlink():
            assert os.readlink(submitted) == os.readlink(expected), submitted
        else:
            assert submitted.read_bytes() == expected.read_bytes(), f"{submitted} changed"


def test_the_victim_of_every_attack_is_graded_on_its_own_notebook(graded):
    course, _, results = graded
    assert _scores(results[VICTIM, NOTEBOOK]) == UNTRUSTED[VICTIM][2]
    assert MADE not in _printed(course, VICTIM)  # it is not the attacker's graded notebook


def _printed(course: Path, student: str) -> str:
    return "".join(o.get("text", "") for c in _graded_notebook(course, student).cells
                   for o in c.get("outputs", []))


def _check_kernel_leftovers(course: Path, run: subprocess.CompletedProcess,
                            results: dict) -> None:
    """What a kernel left where nbgrader writes the graded notebook was logged and dropped."""
    for student in KERNEL_ATTACKS:
        printed = _printed(course, student)
        assert printed.count(FOLDER) == 1, printed  # the attack ran
        left = [line for line in printed.splitlines()
                if line.startswith(MADE) and line.endswith(" in autograded")
                and "in place of the notebook" not in line]
        if left:
            assert f"REFUSED {student}/{NOTEBOOK}: removed" in results[student, NOTEBOOK]["log"]
            assert f"REFUSED {student}/{NOTEBOOK}: removed" in run.stderr


def test_what_a_kernel_left_in_its_folder_is_logged_and_dropped(graded):
    _check_kernel_leftovers(*graded)


def test_no_scratch_course_or_run_folder_is_left_behind(graded):
    scratch = graded[0] / "grader" / ".scratch"
    assert not scratch.exists() or not os.listdir(scratch)


def _snapshot(course: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for kind in ("results", *KINDS)
            for path in (course / "grader" / kind).rglob("*") if path.is_file()}


def test_an_interrupted_regrade_leaves_the_earlier_results_as_they_were(graded, tmp_path):
    """A re-grade killed once it has graded something changes nothing: results, graded
    notebooks and feedback are replaced only when the new ones all exist."""
    course = graded[0]
    klass = tmp_path / "class"
    for student in ("full_solution", "blank_release"):
        shutil.copytree(course / "grader" / "sample_submissions" / student / NOTEBOOK,
                        klass / student / NOTEBOOK)
    before = _snapshot(course)
    scratch = course / "grader" / ".scratch"
    env = course_env(grader=course / "grader")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.grading", str(klass), "--jobs", "1",
         "--batch-size", "1", "--cell-timeout", "20"], cwd=course, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while not list(scratch.glob("run-*/results/*.json")):
            assert process.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "the first notebook took too long"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    try:
        assert _snapshot(course) == before
    finally:  # what a killed run leaves behind (the next run does not need it)
        for leftover in scratch.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)


@pytest.fixture(scope="module")
def unsandboxed(graded, tmp_path_factory):
    """A small class graded with plain, unsandboxed kernels (as where no sandbox is
    available): the victim, the kernel attacks and a linked notebook.

    Returns (course folder, the grading run, results, the submitted notebooks' bytes).
    """
    course = tmp_path_factory.mktemp("unsandboxed") / "course"
    shutil.copytree(graded[0], course, symlinks=True, ignore=shutil.ignore_patterns(
        "sample_submissions", "autograded", "feedback", "results", ".scratch", "summary",
        "shard_class", "grades.csv"))
    sample = course / "grader" / "sample_submissions"
    full = graded[0] / "grader" / "sample_submissions" / "full_solution" / NOTEBOOK
    shutil.copytree(full, sample / "full_solution" / NOTEBOOK)
    for student, (answers, tests, _, *tamper) in {**REFUSED, **{
            s: UNTRUSTED[s] for s in (VICTIM, *KERNEL_ATTACKS)}}.items():
        _misbehave(sample, student, answers, tests, *tamper)
    submitted = {path: path.read_bytes() for path in sample.rglob("*.ipynb")
                 if not path.is_symlink()}
    env = {**course_env(grader=course / "grader"), "COURSE_SANDBOX": "0"}
    run = subprocess.run([sys.executable, "-m", "pipeline.grading", str(sample), "--jobs", "1",
                          "--cell-timeout", "20"], cwd=course, env=env, text=True,
                         capture_output=True)
    assert run.returncode == 0, run.stderr[-5000:]
    results = {}
    for path in (course / "grader" / "results").glob("*.json"):
        result = json.loads(path.read_text())
        results[result["student"], result["assignment"]] = result
    return course, run, results, submitted


def test_a_linked_notebook_is_reported_by_name_and_not_graded(unsandboxed):
    _, run, results, _ = unsandboxed
    line = next(line for line in run.stderr.splitlines() if LINKED_NOTEBOOK in line)
    assert line.startswith("NOT GRADED: ") and "symbolic link" in line
    result = results[LINKED_NOTEBOOK, NOTEBOOK]
    assert result["status"] == ("not graded: the notebook is a symbolic link "
                                "(links are never followed)"), result
    assert result["cells"] == []


def test_unsandboxed_kernels_reach_the_graded_notebooks_folder_and_gain_nothing(unsandboxed):
    course, run, results, _ = unsandboxed
    for student in (VICTIM, *KERNEL_ATTACKS):
        assert results[student, NOTEBOOK]["status"] == "graded"
        assert _scores(results[student, NOTEBOOK]) == UNTRUSTED[student][2]
    for student in KERNEL_ATTACKS:
        made = [line for line in _printed(course, student).splitlines() if line.startswith(MADE)]
        assert any(line.endswith(" in autograded") for line in made), made  # it got there
    _check_kernel_leftovers(course, run, results)
    assert MADE not in _printed(course, VICTIM)


def test_unsandboxed_kernels_change_no_submission_and_copy_out_no_course_file(unsandboxed):
    course, _, results, submitted = unsandboxed
    assert {path: path.read_bytes() for path in submitted} == submitted
    _check_folders(course, results)
    _check_no_course_file_copied(course)

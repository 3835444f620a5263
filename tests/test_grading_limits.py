"""A batch that is killed or fails costs no one but itself, and a published result is never
replaced by less: the grading module with nbgrader's batch replaced by a fake that records
submissions in a real (scratch) gradebook as nbgrader does, graded to the end or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_notebook
from nbgrader.api import Gradebook

from pipeline.classroom.submissions import find_submissions
from pipeline.grading import autograde
from pipeline.grading.nbgrader_batch import done_marker
from pipeline.grading.safe_feedback import CONTENT_SECURITY_POLICY
from pipeline.kernels.kernel_forkserver import KERNELS_BASE

pytestmark = pytest.mark.slow  # (every gradebook nbgrader opens runs alembic: seconds)
STUDENTS = ("s0", "s1", "s2")


@pytest.fixture
def course(grading_course, tmp_path, monkeypatch):
    """A course with a real gradebook (one assignment, one graded cell) and a class of
    three; ``make grade``'s other steps switched off."""
    grader = grading_course
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    (grader / "gradebook.db").unlink()
    with Gradebook(f"sqlite:///{grader / 'gradebook.db'}") as gradebook:  # (nbgrader's alembic)
        gradebook.add_assignment("01_a")
        gradebook.add_notebook("01_a", "01_a")
        gradebook.add_grade_cell("test_x", "01_a", "01_a", max_score=2, cell_type="code")
        gradebook.add_source_cell("test_x", "01_a", "01_a", cell_type="code", source="pass",
                                  locked=True, checksum="")
    monkeypatch.setattr(autograde, "ensure_release", lambda: None)
    monkeypatch.setattr(autograde, "assignment_ids", lambda: ["01_a"])
    monkeypatch.setattr(autograde, "finish", lambda results: None)
    klass = tmp_path / "class"
    for student in STUDENTS:
        (klass / student / "01_a").mkdir(parents=True)
        nbformat.write(new_notebook(), klass / student / "01_a" / "01_a.ipynb")
    return grader, klass


class FakeBatch:
    """Stands in for ``pipeline.grading.nbgrader_batch`` under ``run_limited``: each submission is
    recorded in the scratch gradebook when its grading starts (as nbgrader does), and only
    those ``finishes`` picks are graded to the end (2 points, notebook, page, marker)
    before the batch ends or, ``killed``, is killed."""

    def __init__(self, finishes=lambda students: students, killed=lambda students: False,
                 page=True, score: float = 2, printed: int = 0) -> None:
        self.finishes, self.killed, self.page = finishes, killed, page
        self.score, self.printed = score, printed  # points; bytes of output in the notebook
        self.runs: list[list[str]] = []
        self.kernel_bases: list[Path] = []  # the batch's COURSE_KERNELS_BASE
        self.label = "run 1"

    def __call__(self, command, *, timeout, memory_limit, env):
        scratch = Path(command[3])
        students = sorted(p.name for p in (scratch / "submitted").iterdir())
        self.runs.append(students)
        kernels = Path(env[KERNELS_BASE]) / "ck-4242-x" / "a1b2c3"  # what kernels leave
        kernels.mkdir(parents=True)
        (kernels / "kernel.json").write_text("{}")
        self.kernel_bases.append(kernels.parents[1])
        finished = self.finishes(students)
        with Gradebook(f"sqlite:///{scratch / 'gradebook.db'}") as gradebook:
            for student in students:
                gradebook.update_or_create_student(student)
                gradebook.add_submission("01_a", student)
                if student not in finished:
                    continue
                grade = gradebook.find_grade("test_x", "01_a", "01_a", student)
                grade.auto_score, grade.needs_manual_grade = self.score, False
                gradebook.db.commit()
                for kind, name in (("autograded", "01_a.ipynb"), ("feedback", "01_a.html")):
                    if kind == "feedback" and not self.page:
                        continue
                    folder = scratch / kind / student / "01_a"
                    folder.mkdir(parents=True)
                    if kind == "autograded":
                        nbformat.write(new_notebook(metadata={
                            "run": self.label, "printed": "x" * self.printed}), folder / name)
                    else:
                        (folder / name).write_text(f"page of {student}, {self.label}")
                marker = done_marker(scratch, student, "01_a")
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(json.dumps({"feedback": ""}))
        if self.killed(students):
            raise subprocess.TimeoutExpired(command, timeout)
        return subprocess.CompletedProcess(command, 0, "", "")


def _subs(klass: Path):
    return find_submissions(klass, ["01_a"])[0]


def _scores(result: dict) -> list:
    return [(c["grade_id"], c["score"], c["needs_manual_grade"]) for c in result["cells"]]


def test_a_killed_batch_keeps_what_it_finished_and_grades_the_others_alone(course,
                                                                          monkeypatch):
    """The others: not "graded 0/2, to grade" from a half-filled gradebook."""
    grader, klass = course
    fake = FakeBatch(finishes=lambda students: students[:1] if len(students) > 1 else students,
                     killed=lambda students: len(students) > 1)
    monkeypatch.setattr(autograde, "run_limited", fake)
    results = autograde.grade_batch(_subs(klass), timeout=10, memory_limit=None)
    assert fake.runs == [["s0", "s1", "s2"], ["s1"], ["s2"]]
    for result in results:
        assert result["status"] == "graded", result
        assert _scores(result) == [("test_x", 2, False)]
        page = grader / "feedback" / result["student"] / "01_a" / "01_a.html"
        assert page.read_text() == f"page of {result['student']}, run 1"
    assert len(fake.kernel_bases) == 3  # each batch had its own, and it is gone
    assert not any(os.path.lexists(base) for base in fake.kernel_bases)
    assert not list((grader / ".scratch").iterdir())


def test_a_notebook_never_graded_to_the_end_is_not_a_grade(course, monkeypatch):
    grader, klass = course
    fake = FakeBatch(finishes=lambda students: [s for s in students if s != "s1"],
                     killed=lambda students: "s1" in students)
    monkeypatch.setattr(autograde, "run_limited", fake)
    results = autograde.grade_batch(_subs(klass), timeout=10, memory_limit=None)
    assert fake.runs == [["s0", "s1", "s2"], ["s1"]]
    assert [r["status"] for r in results] == ["graded", "timed out after 10 s", "graded"]
    assert results[1]["cells"] == []
    assert not (grader / "autograded" / "s1").exists()
    assert not (grader / "feedback" / "s1").exists()


def test_a_graded_notebook_without_a_page_gets_a_short_inert_one(course, monkeypatch):
    grader, klass = course
    monkeypatch.setattr(autograde, "run_limited", FakeBatch(page=False))
    results = autograde.grade_batch(_subs(klass)[:1], timeout=10, memory_limit=None)
    assert results[0]["status"] == "graded"
    assert "a short page with the points stands in" in results[0]["log"]
    page = (grader / "feedback" / "s0" / "01_a" / "01_a.html").read_text()
    assert CONTENT_SECURITY_POLICY in page and "could not be made" in page
    assert "<code>test_x</code>" in page and "2 / 2" in page and "<script" not in page


def test_a_student_this_run_cannot_grade_keeps_the_previous_result(course, monkeypatch):
    grader, klass = course
    first = FakeBatch()
    monkeypatch.setattr(autograde, "run_limited", first)
    assert autograde.main([str(klass), "--jobs", "1"]) == 0
    before = {path: path.read_bytes() for kind in ("autograded", "feedback")
              for path in (grader / kind / "s1").rglob("*") if path.is_file()}
    previous = json.loads((grader / "results" / "s1__01_a.json").read_text())
    (klass / "newcomer" / "01_a").mkdir(parents=True)
    nbformat.write(new_notebook(), klass / "newcomer" / "01_a" / "01_a.ipynb")

    second = FakeBatch(finishes=lambda students: [s for s in students
                                                  if s not in ("s1", "newcomer")],
                       killed=lambda students: "s1" in students or "newcomer" in students)
    second.label = "run 2"
    monkeypatch.setattr(autograde, "run_limited", second)
    assert autograde.main([str(klass), "--jobs", "1"]) == 0
    assert sorted(second.runs) == sorted([["newcomer", "s0", "s1", "s2"], ["newcomer"],
                                          ["s1"]])
    kept = json.loads((grader / "results" / "s1__01_a.json").read_text())
    assert kept["status"] == "previous result kept (this run: timed out after 900 s)"
    assert kept["cells"] == previous["cells"] and autograde.is_graded(kept)
    assert {path: path.read_bytes() for path in before} == before  # notebook and page too
    assert "run 2" in (grader / "feedback" / "s0" / "01_a" / "01_a.html").read_text()
    newcomer = json.loads((grader / "results" / "newcomer__01_a.json").read_text())
    assert newcomer["status"] == "timed out after 900 s" and newcomer["cells"] == []
    assert not (grader / "feedback" / "newcomer").exists()

    third = FakeBatch(finishes=lambda students: [s for s in students if s != "s1"],
                      killed=lambda students: "s1" in students)
    third.label = "run 3"
    monkeypatch.setattr(autograde, "run_limited", third)
    assert autograde.main([str(klass), "--jobs", "1"]) == 0  # kept again, from the kept one
    again = json.loads((grader / "results" / "s1__01_a.json").read_text())
    assert again["status"] == kept["status"] and again["cells"] == previous["cells"]
    assert {path: path.read_bytes() for path in before} == before

    monkeypatch.setattr(autograde, "run_limited", FakeBatch())  # graded again: replaced
    assert autograde.main([str(klass), "--jobs", "1"]) == 0
    assert json.loads((grader / "results" / "s1__01_a.json").read_text())["status"] == "graded"


def test_a_graded_notebook_over_the_limit_is_graded_from_the_gradebook(course, monkeypatch):
    """A notebook that turns wrong after its first grading and prints enough to make its
    graded copy too large to read back is graded all the same (the points are nbgrader's,
    in the gradebook), never "not graded" with its earlier full marks kept."""
    grader, klass = course
    monkeypatch.setattr(autograde, "run_limited", FakeBatch())
    assert autograde.main([str(klass), "--jobs", "1"]) == 0
    bloated = FakeBatch(score=0, printed=2**20)
    bloated.label = "run 2"
    monkeypatch.setattr(autograde, "run_limited", bloated)
    assert autograde.main([str(klass), "--jobs", "1", "--max-notebook-mb", "0.5"]) == 0
    result = json.loads((grader / "results" / "s1__01_a.json").read_text())
    assert result["status"] == "graded" and _scores(result) == [("test_x", 0, False)]
    assert "the graded notebook was refused (it is 1.0 MiB, over the " in result["log"]
    assert "graded from the gradebook; its messages and feedback page are not shown" in \
        result["log"]
    page = (grader / "feedback" / "s1" / "01_a" / "01_a.html").read_text()
    assert "run 2" not in page and CONTENT_SECURITY_POLICY in page and "0 / 2" in page


def test_a_refused_submission_does_not_keep_an_earlier_result(course, monkeypatch):
    """Only a failure of the grading keeps what was published; a submission that cannot be
    graded through its own doing (here: a link in place of the notebook) does not."""
    grader, klass = course
    monkeypatch.setattr(autograde, "run_limited", FakeBatch())
    assert autograde.main([str(klass), "--jobs", "1"]) == 0
    notebook = klass / "s1" / "01_a" / "01_a.ipynb"
    notebook.rename(klass / "elsewhere.ipynb")
    notebook.symlink_to(klass / "elsewhere.ipynb")
    assert autograde.main([str(klass), "--jobs", "1"]) == 0
    result = json.loads((grader / "results" / "s1__01_a.json").read_text())
    assert result["status"].startswith("not graded: the notebook is a symbolic link")
    assert result["cells"] == [] and not autograde.is_graded(result)
    assert "the earlier result is not kept: this submission itself could not be graded" in \
        result["log"]
    assert not (grader / "feedback" / "s1" / "01_a").exists()  # nor its earlier page


def test_a_feedback_page_that_could_not_be_made_is_said_in_the_log(course, monkeypatch):
    grader, klass = course
    fake = FakeBatch()

    def slow_page(command, **kwargs):
        completed = fake(command, **kwargs)
        marker = done_marker(Path(command[3]), "s0", "01_a")
        marker.write_text(json.dumps({"feedback": "it took longer than 5 s to make"}))
        return completed

    monkeypatch.setattr(autograde, "run_limited", slow_page)
    result = autograde.grade_batch(_subs(klass)[:1], timeout=10, memory_limit=None)[0]
    assert result["status"] == "graded"
    assert "the feedback page could not be made (it took longer than 5 s to make)" in \
        result["log"]


def test_a_batch_is_never_killed_before_each_notebook_could_use_its_own_limits():
    for count in (1, 3, 8):
        assert autograde.batch_limit(count, 900, 60) > count * (900 + 60)
        assert autograde.batch_limit(count, 5, 2) > count * (5 + 2)


class FakeAPI:
    """nbgrader's API as the batch calls it for one feedback page."""

    def __init__(self, result: dict, page: str | None = None) -> None:
        self.result, self.page = result, page

    def generate_feedback(self, assignment, student, force):
        if self.page is not None:
            page = self.root / "feedback" / student / assignment / f"{assignment}.html"
            page.parent.mkdir(parents=True)
            page.write_text(self.page)
        return self.result


def test_the_batch_says_when_a_page_could_not_be_made_and_puts_a_short_one_there(course):
    from pipeline.grading import nbgrader_batch

    grader, _ = course
    api = FakeAPI({"success": False, "error": "Traceback ... RecursionError"})
    api.root = grader
    assert nbgrader_batch.feedback(api, grader, "s0", "01_a") == "nbgrader could not make it"
    page = (grader / "feedback" / "s0" / "01_a" / "01_a.html").read_text()
    assert CONTENT_SECURITY_POLICY in page and "nbgrader could not make it" in page

    api = FakeAPI({"success": True, "log": "[WARNING] A feedback page was not made (it took "
                                           "longer than 5 s to make); a short page stands in"},
                  page="the exporter's short page")
    api.root = grader / "other"
    assert nbgrader_batch.feedback(api, api.root, "s1", "01_a") == \
        "it took longer than 5 s to make"
    api = FakeAPI({"success": True, "log": ""}, page="a page")
    api.root = grader / "third"
    assert nbgrader_batch.feedback(api, api.root, "s1", "01_a") == ""

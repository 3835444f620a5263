"""A whole term, as an instructor runs it, with nothing edited by hand: a class of 30
generated students hands in tutorial 01 through a Canvas download, a Moodle download (with its
grading worksheet) and a JupyterHub's nbgrader exchange, with late, missing, resubmitted and
misnamed notebooks and files that cannot be placed among them; `make collect` lays the class
out, `make grade` grades it, `make return` and `make export` write what Canvas and Moodle take
back. Every roster student must be in every table.

The class is graded once (a module fixture, in a course copy of its own) and every test reads
that one run. Only tutorial 01 is handed in: its notebooks grade quickly.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import zipfile

import pytest
from bs4 import BeautifulSoup

from pipeline.classroom import lms
from pipeline.classroom.roster import parse as parse_roster
from pipeline.classroom.sample_term import build

pytestmark = pytest.mark.slow
NOTEBOOK = "01_gain_multiplication"
STUDENTS = 30


@pytest.fixture(scope="module")
def season(course_copy, run_in_course, tmp_path_factory):
    """The term, run from collect to export. Returns (course, term, outputs by step)."""
    course = tmp_path_factory.mktemp("term") / "course"
    shutil.copytree(course_copy, course, symlinks=True, ignore=shutil.ignore_patterns(
        "sample_submissions", "submitted", "autograded", "feedback", "results", ".scratch",
        "summary", "grades.csv", "lms", "export", "roster.csv", "deadlines.csv"))
    code = ("import sys; from pathlib import Path; from pipeline.classroom import sample_term; "
            "t = sample_term.build(Path(sys.argv[1]), students=int(sys.argv[2])); "
            "sample_term.install(t)")
    downloads = course / "downloads"
    run_in_course(["-c", code, str(downloads), str(STUDENTS)], course)
    term = build(tmp_path_factory.mktemp("expected") / "downloads", students=STUDENTS)
    out = {
        "canvas": run_in_course(["-m", "pipeline.classroom.collect", str(
            downloads / "canvas" / term.canvas_zip.name)], course).stdout,
        "moodle": run_in_course(["-m", "pipeline.classroom.collect", str(
            downloads / "moodle" / term.moodle_zip.name), "--worksheet", str(
            downloads / "moodle" / term.worksheet.name)], course).stdout,
        "exchange": run_in_course(["-m", "pipeline.classroom.collect", str(downloads / "exchange")],
                                  course).stdout,
    }
    out["grade"] = run_in_course(["-m", "pipeline.grading", "grader/submitted", "--jobs", "2",
                                  "--cell-timeout", "30"], course).stdout
    for kind in ("canvas", "moodle", "plain"):
        out[f"return {kind}"] = run_in_course(["-m", "pipeline.grading.export", "feedback", "--lms", kind],
                                              course).stdout
    for kind in ("canvas", "moodle"):
        out[f"export {kind}"] = run_in_course(["-m", "pipeline.grading.export", "grades", "--lms", kind],
                                              course).stdout
    return course, term, out


def _grades(course) -> dict[str, dict]:
    with (course / "grader" / "grades.csv").open() as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)
                if row["assignment"] == NOTEBOOK}


def _result(course, student: str) -> dict:
    return json.loads((course / "grader" / "results" / f"{student}__{NOTEBOOK}.json").read_text())


def test_the_generated_class_is_the_one_collected(season):
    course, term, _ = season
    roster = parse_roster((course / "grader" / "roster.csv").read_text())
    assert roster.ids() == [s.student_id for s in term.students] and len(roster.ids()) >= 30


def test_collect_places_every_notebook_and_names_every_file_it_could_not(season):
    course, term, out = season
    for kind in ("canvas", "moodle", "exchange"):
        for student in term.ids(lms=kind):
            placed = f"placed      {student}/{NOTEBOOK}  <- " in out[kind]
            assert placed == (term.role[student] != "missing"), (kind, student)
        for name in term.not_placeable[kind]:
            assert re.search(rf"NOT PLACED  [^\n]*{re.escape(name)}: \S", out[kind]), (kind, name)
    assert "nbgrader collect kept" in out["exchange"]  # the earlier submission was left


def test_every_roster_student_is_in_every_table(season):
    course, term, out = season
    everyone = set(term.ids())
    table = out["grade"][out["grade"].index("Auto-graded points"):].split("\n\n")[0]
    assert {line.split()[0] for line in table.splitlines()[2:]} == everyone
    assert set(_grades(course)) == everyone
    page = BeautifulSoup((course / "grader" / "summary" / "index.html").read_text(),
                         "html.parser").get_text()
    missing = term.ids(role="missing")
    assert all(student in page for student in missing)
    canvas = list(csv.reader(io.StringIO(
        (course / "grader" / "export" / "canvas-grades.csv").read_text())))
    ids = {row[3] for row in canvas[2:]}  # SIS Login ID
    assert ids == set(term.ids(lms="canvas"))
    sheet = lms.read_worksheet(
        (course / "grader" / "export" / f"moodle-{NOTEBOOK}-grades.csv").read_bytes())
    assert {row["Email address"].split("@")[0] for row in sheet.rows} == set(
        term.ids(lms="moodle"))


def test_missing_students_are_missing_everywhere(season):
    course, term, _ = season
    grades = _grades(course)
    canvas = {row[3]: row[5] for row in csv.reader(io.StringIO(
        (course / "grader" / "export" / "canvas-grades.csv").read_text()))}
    for student in term.ids(role="missing"):
        assert grades[student]["status"] == "missing"
        assert not (course / "grader" / "results" / f"{student}__{NOTEBOOK}.json").exists()
        if term.lms_of[student] == "canvas":
            assert canvas[student] == ""  # a blank cell leaves Canvas's grade as it is


def test_late_students_lose_points_in_the_table_the_files_and_their_feedback(season):
    course, term, out = season
    grades = _grades(course)
    expected = {"canvas": 0.4, "moodle": 0.8, "exchange": 0.8}  # 1 day begun; 2 days begun
    for student in term.ids(role="late"):
        row = grades[student]
        penalty = expected[term.lms_of[student]]
        assert float(row["late_penalty"]) == pytest.approx(penalty), student
        assert float(row["score"]) == pytest.approx(float(row["raw_score"]) - penalty)
        assert re.search(rf"^{student} +{4 - penalty:g}/4 late$", out["grade"], re.M)
        page = (course / "grader" / "feedback" / student / NOTEBOOK / f"{NOTEBOOK}.html")
        text = BeautifulSoup(page.read_text(), "html.parser").get_text()
        assert "after the deadline" in text and "Late penalty" in text
        assert "Late submission penalty" in text  # nbgrader's own line in the scores
    on_time = term.ids(lms="moodle", role="on time")[0]
    page = course / "grader" / "feedback" / on_time / NOTEBOOK / f"{NOTEBOOK}.html"
    assert "before the deadline" in page.read_text()
    assert float(grades[on_time]["late_penalty"]) == 0


def test_the_latest_of_two_submissions_is_graded_and_misnamed_ones_too(season):
    course, term, _ = season
    for student in term.ids(role="twice"):  # the earlier one was blank, the later complete
        result = _result(course, student)
        auto = [c for c in result["cells"] if c["kind"] == "auto"]
        assert sum(c["score"] for c in auto) == sum(c["max_score"] for c in auto), student
    for student in term.ids(role="copy name") + term.ids(role="other name"):
        assert _result(course, student)["status"] == "graded", student


def test_feedback_goes_back_as_canvas_and_moodle_take_it(season):
    course, term, out = season
    export = course / "grader" / "export"
    with zipfile.ZipFile(export / f"canvas-feedback-{NOTEBOOK}.zip") as archive:
        names = archive.namelist()
    roster = parse_roster((course / "grader" / "roster.csv").read_text())
    canvas = [s for s in term.ids(lms="canvas") if term.role[s] != "missing"]
    assert len(names) == len(canvas)
    users = {[p for p in name.split("_") if p.isdigit()][0] for name in names}
    assert users == {roster.get(s).canvas_user_id for s in canvas}
    with zipfile.ZipFile(export / f"moodle-feedback-{NOTEBOOK}.zip") as archive:
        folders = {name.split("/")[0] for name in archive.namelist()}
    with zipfile.ZipFile(course / "downloads" / "moodle" / term.moodle_zip.name) as archive:
        downloaded = {name.split("/")[0] for name in archive.namelist()}
    assert len(folders) == len([s for s in term.ids(lms="moodle")
                                if term.role[s] != "missing"])
    assert folders <= downloaded  # named as in Moodle's download
    for kind in ("canvas", "moodle"):
        assert "feedback pages" in out[f"return {kind}"]


def test_the_moodle_worksheet_keeps_moodles_columns_and_fills_in_grades(season):
    course, term, _ = season
    sheet = lms.read_worksheet(
        (course / "grader" / "export" / f"moodle-{NOTEBOOK}-grades.csv").read_bytes())
    assert sheet.header == lms.WORKSHEET_COLUMNS
    grades = _grades(course)
    for row in sheet.rows:
        student = row["Email address"].split("@")[0]
        if term.role[student] == "missing":
            assert row["Grade"] == ""
        else:
            expected = 100 * float(grades[student]["score"]) / float(grades[student]["max_score"])
            assert float(row["Grade"]) == pytest.approx(expected, abs=0.01), student
            assert row["Last modified (grade)"] not in ("", "-")


def test_the_summary_names_the_commonest_mistakes_and_the_hardest_exercise(season):
    course, _, _ = season
    page = BeautifulSoup((course / "grader" / "summary" / "index.html").read_text(),
                         "html.parser")
    assert page.find(id="mistakes") and page.find(id="hardest")
    assert len(page.find_all("svg")) >= 2
    assert "likely mistake" in page.get_text()

"""The roster, the deadlines and the late policy, and the files handed back to the LMSs, on
small hand-made results (no kernels): every roster student in every table, late penalties
shown, Canvas's and Moodle's import formats."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import datetime, timezone

import pytest
from nbgrader.api import Gradebook
from traitlets.config import PyFileConfigLoader

from pipeline.classroom import collect, lms, term
from pipeline.classroom import deadlines as deadlines_module
from pipeline.classroom import roster as roster_module
from pipeline.classroom.deadlines import LateNote, PercentPerDay
from pipeline.grading import autograde, export
from pipeline.paths import GRADER

NOTEBOOK = "01_gain_multiplication"
ROSTER = """student_id,first_name,last_name,email,canvas_user_id,sis_user_id,sis_login_id,section
ada,Ada,Lovelace,ada@uni.example.edu,1001,S1,ada,Tue
alan,Alan,Turing,alan@uni.example.edu,1002,S2,alan,Tue
grace,Grace,Hopper,grace@uni.example.edu,,,,Thu
"""


# ---- roster and deadlines ---------------------------------------------------------------------

def test_a_roster_is_read_and_its_students_found_by_every_lms_name():
    roster = roster_module.parse(ROSTER)
    assert roster.ids() == ["ada", "alan", "grace"]
    assert roster.find("canvas", "1002")[0].student_id == "alan"
    assert roster.find("email", "GRACE@uni.example.edu")[0].student_id == "grace"
    assert roster.find("name", "grace  HOPPER")[0].student_id == "grace"
    assert roster.find("canvas_name", "lovelaceada")[0].student_id == "ada"
    assert roster.get("ada").sortable_name == "Lovelace, Ada"


def test_a_roster_with_problems_names_each_line():
    text = ROSTER + "ada,Again,Twice,x@y,1003,,,\nbad id,B,C,b@c,12x,,,\n"
    with pytest.raises(roster_module.RosterError) as raised:
        roster_module.parse(text)
    message = str(raised.value)
    assert "line 5: student_id 'ada' is already on line 2" in message
    assert "line 6: student_id 'bad id' must use letters" in message
    with pytest.raises(roster_module.RosterError, match="unknown column"):
        roster_module.parse("student_id,nickname\nada,A\n")


def test_a_name_with_markup_is_refused():
    """formgrader writes names into its pages unescaped: a student who set their LMS name
    to a script would run it in the instructor's browser."""
    text = ROSTER + "eve,<script>alert(1)</script>Eve,E,e@f,1009,,,\n"
    with pytest.raises(roster_module.RosterError, match="line 5: first_name .* holds '<'"):
        roster_module.parse(text)


def test_deadlines_need_a_zone_and_a_known_assignment():
    dues = deadlines_module.parse(
        "assignment,due,canvas_assignment_id,title\n"
        f"{NOTEBOOK},2025-03-07 23:59 Europe/Berlin,4821,Tutorial 1\n", [NOTEBOOK])
    assert dues[NOTEBOOK].due.astimezone(timezone.utc) == datetime(2025, 3, 7, 22, 59,
                                                                   tzinfo=timezone.utc)
    assert dues[NOTEBOOK].canvas_assignment_id == "4821"
    iso = deadlines_module.parse(f"assignment,due\n{NOTEBOOK},2025-03-07T23:59:00+01:00\n",
                                 [NOTEBOOK])
    assert iso[NOTEBOOK].due == dues[NOTEBOOK].due
    with pytest.raises(deadlines_module.DeadlineError) as raised:
        deadlines_module.parse(f"assignment,due\n{NOTEBOOK},2025-03-07 23:59\nnope,2025-03-01"
                               " 10:00 UTC\n", [NOTEBOOK])
    assert "line 2: due '2025-03-07 23:59': no time zone" in str(raised.value)
    assert "line 3: unknown assignment 'nope'" in str(raised.value)


def test_the_late_policy_takes_a_share_per_day_begun_after_the_grace():
    policy = PercentPerDay(percent_per_day=10, grace_minutes=15, zero_after_days=3)
    day = 86400
    assert policy.late_submission_penalty("s", 4.0, 10 * 60) is None  # within the grace
    assert policy.late_submission_penalty("s", 4.0, 16 * 60) == pytest.approx(0.4)
    assert policy.late_submission_penalty("s", 4.0, day + 15 * 60 + 1) == pytest.approx(0.8)
    assert policy.late_submission_penalty("s", 4.0, 3 * day + 15 * 60) == pytest.approx(1.2)
    assert policy.late_submission_penalty("s", 4.0, 3 * day + 16 * 60) == 4.0  # zero after 3
    assert "10% of the score per day late" in policy.describe()


def test_the_course_config_names_the_late_policy_and_the_feedback_note():
    config = PyFileConfigLoader("nbgrader_config.py", path=str(GRADER)).load_config()
    assert config.AssignLatePenalties.plugin_class is PercentPerDay
    assert config.PercentPerDay.percent_per_day > 0
    assert LateNote in config.GenerateFeedback.preprocessors
    assert "AssignLatePenalties" in str(config.Autograde.autograde_preprocessors)


def test_the_gradebook_gets_the_roster_and_the_deadlines(tmp_path):
    db = f"sqlite:///{tmp_path / 'gradebook.db'}"
    roster_module.load_into_gradebook(roster_module.parse(ROSTER), db)
    dues = deadlines_module.parse(f"assignment,due\n{NOTEBOOK},2025-03-07 23:59 UTC\n",
                                  [NOTEBOOK])
    deadlines_module.load_into_gradebook(dues, db)
    with Gradebook(db) as gb:
        assert sorted(s.id for s in gb.students) == ["ada", "alan", "grace"]
        assert gb.find_student("ada").lms_user_id == "1001"
        assert gb.find_student("grace").email == "grace@uni.example.edu"
        assert gb.find_assignment(NOTEBOOK).duedate == datetime(2025, 3, 7, 23, 59)


# ---- results with a roster ------------------------------------------------------------------

def _cell(grade_id: str, score: float, max_score: float = 2.0, kind: str = "auto",
          message: str = "") -> dict:
    return {"grade_id": grade_id, "kind": kind, "score": score, "max_score": max_score,
            "auto_score": score, "needs_manual_grade": kind == "manual", "message": message}


def _results() -> list[dict]:
    late = {"submitted": "2025-03-09T01:23:00+00:00", "due": "2025-03-07T22:59:00+00:00",
            "seconds_late": 95040.0, "penalty": 0.8}
    return [
        {"student": "ada", "assignment": NOTEBOOK, "status": "graded", "log": "",
         "cells": [_cell("test_stable_softmax", 2), _cell("test_gained_dot_product_attention", 2),
                   _cell("think_fixed_vs_gain", None, 1.0, "manual")]},
        {"student": "alan", "assignment": NOTEBOOK, "status": "graded", "log": "", "late": late,
         "cells": [_cell("test_stable_softmax", 2),
                   _cell("test_gained_dot_product_attention", 0, message=(
                       "CheckFailed: ...\n  likely mistake: the gains were added"))]},
    ]


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A course folder of its own: roster, deadlines, results, collect's record, export."""
    grader = tmp_path / "grader"
    grader.mkdir()
    (grader / "roster.csv").write_text(ROSTER)
    (grader / "deadlines.csv").write_text(
        f"assignment,due,canvas_assignment_id,title\n{NOTEBOOK},2025-03-07 23:59 Europe/Berlin,"
        "4821,Tutorial 1: gains\n")
    for module, name, value in ((roster_module, "ROSTER", grader / "roster.csv"),
                                (deadlines_module, "DEADLINES", grader / "deadlines.csv"),
                                (autograde, "RESULTS", grader / "results"),
                                (autograde, "GRADER", grader),
                                (collect, "LMS_FOLDER", grader / "lms"),
                                (collect, "MANIFEST", grader / "lms" / "collected.csv"),
                                (export, "EXPORT", grader / "export"),
                                (export, "GRADER", grader)):
        monkeypatch.setattr(module, name, value)
    for result in _results():
        autograde._write_result(grader / "results", result)
    return grader


def test_every_roster_student_is_in_the_tables_missing_where_nothing_came(course, tmp_path):
    results = term.with_roster(_results())
    assert [(r["student"], r["status"]) for r in results] == [
        ("ada", "graded"), ("alan", "graded"), ("grace", "missing")]
    table = autograde.grade_table(results)
    assert re.search(r"^grace +missing$", table, re.M)
    assert re.search(r"^alan +1\.2/4 late$", table, re.M)  # 2 points less the 0.8 penalty
    autograde.write_grades_csv(results, tmp_path / "grades.csv")
    rows = {r["student_id"]: r for r in csv.DictReader((tmp_path / "grades.csv").open())}
    assert set(rows) == {"ada", "alan", "grace"}
    assert (rows["grace"]["status"], rows["grace"]["max_score"]) == ("missing", "5.0")
    assert (rows["alan"]["score"], rows["alan"]["raw_score"], rows["alan"]["late_penalty"]) == (
        "1.2", "2", "0.8")
    assert rows["alan"]["seconds_late"] == "95040" and rows["ada"]["submitted"] == ""
    header = next(csv.reader((tmp_path / "grades.csv").open()))
    # one column per graded cell, in the order the course declares them (not alphabetical)
    assert header[-3:] == ["stable_softmax", "gained_dot_product_attention", "think_fixed_vs_gain"]
    line = term.summary_line(results)
    assert "Missing (1): grace (01_gain_multiplication)" in line
    assert "Late (1): alan (01_gain_multiplication, -0.8)" in line


def test_the_canvas_gradebook_has_canvas_columns_and_every_canvas_student(course, capsys):
    assert export.main(["grades", "--lms", "canvas"]) == 0
    rows = list(csv.reader(io.StringIO((course / "export" / "canvas-grades.csv").read_text())))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section",
                       "Tutorial 1: gains (4821)"]
    assert rows[1][0].strip() == "Points Possible" and rows[1][5] == "5"
    assert rows[2:] == [["Lovelace, Ada", "1001", "S1", "ada", "Tue", "4"],
                        ["Turing, Alan", "1002", "S2", "alan", "Tue", "1.2"]]
    out = capsys.readouterr().out
    assert "1 Think! answers are still to be graded" in out


def test_the_moodle_worksheet_is_filled_in_and_scaled(course, capsys):
    sheet = lms.Worksheet(list(lms.WORKSHEET_COLUMNS), [
        {"Identifier": "Participant 7001", "Full name": "Grace Hopper",
         "Email address": "grace@uni.example.edu", "Status": "No submission",
         "Maximum Grade": "100.00", "Last modified (grade)": "-"},
        {"Identifier": "Participant 7002", "Full name": "Alan Turing",
         "Email address": "alan@uni.example.edu", "Status": "Submitted for grading",
         "Maximum Grade": "100.00", "Last modified (grade)": "-"}])
    kept = collect.worksheet_path(NOTEBOOK)
    kept.parent.mkdir(parents=True)
    kept.write_text(lms.write_worksheet(sheet))
    assert export.main(["grades", "--lms", "moodle"]) == 0
    rows = list(csv.DictReader((course / "export" / f"moodle-{NOTEBOOK}-grades.csv").open()))
    assert list(rows[0]) == lms.WORKSHEET_COLUMNS  # Moodle's own columns, in its order
    grace, alan = rows
    assert grace["Grade"] == "" and grace["Last modified (grade)"] == "-"  # left as it was
    assert alan["Grade"] == "24.00"  # 1.2 of 5 points, out of Moodle's 100
    assert "Late penalty: -0.8" in alan["Feedback comments"]
    assert lms.moodle_time(alan["Last modified (grade)"], "Europe/Berlin").year >= 2025


def test_feedback_zips_are_named_as_each_lms_takes_them_back(course, capsys):
    for student in ("ada", "alan"):
        page = course / "feedback" / student / NOTEBOOK / f"{NOTEBOOK}.html"
        page.parent.mkdir(parents=True)
        page.write_text(f"<p>{student}</p>")
    manifest = {
        ("ada", NOTEBOOK): {"student_id": "ada", "assignment": NOTEBOOK, "lms": "canvas",
                            "lms_name": f"lovelaceada_1001_30000227_{NOTEBOOK}-1.ipynb"},
        ("alan", NOTEBOOK): {"student_id": "alan", "assignment": NOTEBOOK, "lms": "moodle",
                             "lms_folder": "Alan Turing_7002_assignsubmission_file"}}
    collect._write_manifest(manifest)
    for kind in ("canvas", "moodle", "plain"):
        assert export.main(["feedback", "--lms", kind]) == 0
    with zipfile.ZipFile(course / "export" / f"canvas-feedback-{NOTEBOOK}.zip") as archive:
        [name] = archive.namelist()
        assert archive.read(name) == b"<p>ada</p>"
    # Canvas reads the first two numbers between underscores as the user and the file id
    assert [p for p in name.split("_") if p.isdigit()][:2] == ["1001", "30000227"]
    with zipfile.ZipFile(course / "export" / f"moodle-feedback-{NOTEBOOK}.zip") as archive:
        [name] = archive.namelist()
    # Moodle: the folder as in the download (participant id second between underscores)
    folder = name.split("/")[0]
    assert folder.split("_")[:4] == ["Alan Turing", "7002", "assignsubmission", "file"]
    with zipfile.ZipFile(course / "export" / f"feedback-{NOTEBOOK}.zip") as archive:
        assert sorted(archive.namelist()) == [f"ada/{NOTEBOOK}.html", f"alan/{NOTEBOOK}.html"]
    out = capsys.readouterr().out
    assert "1 pages of students who handed in elsewhere (1 moodle)" in out


def test_the_readme_walks_one_term_in_order():
    """Release, collect, grade, feedback and return, export, look: each step's command, in
    that order, in the instructors' section, and each names a target that exists."""
    readme = (GRADER.parent / "README.md").read_text()
    section = readme[readme.index("## For instructors"):readme.index("**How a verdict")]
    steps = ["make release EXCHANGE=", "make collect FROM=", "make grade SUBMISSIONS=grader/submitted",
             "make return LMS=", "make export LMS=", "grader/summary/index.html"]
    where = [section.index(step) for step in steps]
    assert where == sorted(where)
    makefile = (GRADER.parent / "Makefile").read_text()
    for target in ("release", "collect", "grade", "return", "export"):
        assert re.search(rf"^{target}: ", makefile, re.M), target
    for printed in ("NOT PLACED", "placed      ", "Missing (", "Late (", "feedback pages",
                    "canvas-grades.csv"):
        assert printed in section, printed

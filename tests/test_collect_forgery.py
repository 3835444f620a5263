"""`make collect` places a notebook for the student the LMS names, never for the one a student
names: a file a student uploads or a folder a student writes cannot pass for someone else's
submission, nor carry a time of the student's choosing.

Runs without kernels; nbgrader's ``collect`` is replaced by a stand-in that does what it does
(each student's latest inbound folder, copied to ``submitted/``), so the exchange's own checks
are tested in-process.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pipeline import nbgrader_cli
from pipeline.classroom import collect, lms, sample_term
from pipeline.classroom import deadlines as deadlines_module
from pipeline.classroom import roster as roster_module
from pipeline.classroom.deadlines import read_timestamp

NOTEBOOK = "01_gain_multiplication"
ROSTER = ("student_id,first_name,last_name,email\nvictim,Victim,Name,victim@uni.edu\n"
          "mallory,Mallory,Evil,mallory@uni.edu\n")
WORKSHEET = (
    "Identifier,Full name,Email address,Status,Grade,Maximum Grade,Grade can be changed,"
    "Last modified (submission),Last modified (grade),Feedback comments\n"
    'Participant 1234,Victim Name,victim@uni.edu,Submitted,,100,Yes,"Friday, 7 March 2025, '
    '11:32 PM",-,\n'
    'Participant 5555,Mallory Evil,mallory@uni.edu,Submitted,,100,Yes,"Friday, 7 March 2025, '
    '11:30 PM",-,\n')


@pytest.fixture
def course(tmp_path, monkeypatch) -> Path:
    """The course files collect reads and writes, in a temporary folder."""
    grader = tmp_path / "grader"
    grader.mkdir()
    for module, name, value in ((roster_module, "ROSTER", grader / "roster.csv"),
                                (deadlines_module, "DEADLINES", grader / "deadlines.csv"),
                                (collect, "LMS_FOLDER", grader / "lms"),
                                (collect, "MANIFEST", grader / "lms" / "collected.csv")):
        monkeypatch.setattr(module, name, value)
    (grader / "roster.csv").write_text(ROSTER)
    (grader / "deadlines.csv").write_text(f"assignment,due\n{NOTEBOOK},2025-03-08T00:00:00+00:00\n")
    return grader


def _notebook(answer: str) -> bytes:
    return sample_term.notebook_bytes(NOTEBOOK, {}, think=False).replace(
        b"YOUR CODE HERE", answer.encode(), 1)


# ---- Moodle: the participant is the download's own folder ---------------------------------

def test_a_file_named_like_another_participants_is_not_theirs():
    inner = "Victim Name_1234_assignsubmission_file_01_gain_multiplication-9.ipynb"
    for path in (f"Mallory Evil_5555_assignsubmission_file/{inner}",
                 f"Mallory Evil_5555_assignsubmission_file/sub/{inner}",
                 f"Mallory Evil_5555_assignsubmission_file_{inner}",  # before Moodle 3.1
                 "Mallory Evil_5555_assignsubmission_file/Victim Name_1234_assignsubmission_file"
                 "/x.ipynb"):
        why = lms.parse_moodle(path)
        assert isinstance(why, str), path
        assert ("named like the Moodle files of participant 1234 (Victim Name) but uploaded "
                "into the folder of Mallory Evil (participant 5555)") in why
    own = lms.parse_moodle(f"Victim Name_1234_assignsubmission_file/{inner}")  # her own prefix
    assert (own.participant, own.original) == ("1234", inner)


def test_a_moodle_upload_never_replaces_another_participants_submission(course, tmp_path,
                                                                       capsys):
    honest, planted = _notebook("honest = 1"), _notebook("planted = 1")
    download = tmp_path / "moodle.zip"
    with zipfile.ZipFile(download, "w") as archive:
        archive.writestr(f"Victim Name_1234_assignsubmission_file/{NOTEBOOK}.ipynb", honest)
        archive.writestr("Mallory Evil_5555_assignsubmission_file/Victim Name_1234_"
                         f"assignsubmission_file_{NOTEBOOK}-9.ipynb", planted)
        archive.writestr(f"Mallory Evil_5555_assignsubmission_file/{NOTEBOOK}.ipynb", honest)
    (tmp_path / "sheet.csv").write_text(WORKSHEET)
    into = tmp_path / "submitted"
    assert collect.main([str(download), "--lms", "moodle", "--worksheet",
                         str(tmp_path / "sheet.csv"), "--assignment", NOTEBOOK,
                         "--into", str(into)]) == 0
    out = capsys.readouterr().out
    for student in ("victim", "mallory"):
        assert (into / student / NOTEBOOK / f"{NOTEBOOK}.ipynb").read_bytes() == honest, student
    assert (f"NOT PLACED  moodle.zip:Mallory Evil_5555_assignsubmission_file/Victim Name_1234_"
            f"assignsubmission_file_{NOTEBOOK}-9.ipynb: named like the Moodle files of "
            "participant 1234") in out


def test_a_canvas_name_inside_a_folder_is_not_canvass():
    """Canvas's downloads are flat: a file in a folder was not named by Canvas."""
    why = lms.parse_canvas("mallory_5555_1_x/victim_1234_2_01_gain_multiplication.ipynb")
    assert isinstance(why, str) and "Canvas's downloads are flat" in why
    assert lms.parse_canvas("victim_1234_2_01_gain_multiplication.ipynb").user_id == "1234"


# ---- the exchange: whose the folder is, and when it came in -------------------------------

def _fake_nbgrader_collect(*args: str, course_root: Path, **_) -> None:
    """``nbgrader collect <id> --Exchange.root=...``: each student's latest inbound folder
    (by the time in its name) copied to ``submitted/<student>/<id>/``."""
    assert args[0] == "collect"
    assignment = args[1]
    root = Path(next(a for a in args if a.startswith("--Exchange.root=")).split("=", 1)[1])
    inbound = root / collect.COURSE_ID / "inbound"
    latest: dict[str, tuple[datetime, str]] = {}
    for name in os.listdir(inbound):
        match = collect.INBOUND_NAME.match(name)
        if match and match["assignment"] == assignment:
            when = read_timestamp(match["stamp"])
            if match["user"] not in latest or when > latest[match["user"]][0]:
                latest[match["user"]] = (when, name)
    for user, (_, name) in latest.items():
        shutil.copytree(inbound / name, course_root / "submitted" / user / assignment)


@pytest.fixture
def exchange(course, tmp_path, monkeypatch) -> Path:
    """An exchange root, collected with the stand-in for nbgrader collect."""
    (course / "gradebook.db").write_bytes(b"")
    monkeypatch.setattr(collect, "GRADER", course)
    monkeypatch.setattr(collect, "SCRATCH", course / ".scratch")
    monkeypatch.setattr(collect, "ensure_release", lambda: None)
    monkeypatch.setattr(nbgrader_cli, "nbgrader", _fake_nbgrader_collect)
    root = tmp_path / "exchange"
    (root / collect.COURSE_ID / "inbound").mkdir(parents=True)
    return root


def _submit(root: Path, user: str, stamp: str) -> Path:
    """What ``nbgrader submit`` leaves: ``<user>+<id>+<time>+<random>/`` with timestamp.txt."""
    folder = root / collect.COURSE_ID / "inbound" / f"{user}+{NOTEBOOK}+{stamp}+a1b2"
    folder.mkdir()
    (folder / f"{NOTEBOOK}.ipynb").write_bytes(_notebook(f"{user} = 1"))
    (folder / "timestamp.txt").write_text(stamp)
    return folder


def _run(root: Path, into: Path, capsys) -> str:
    assert collect.main([str(root), "--lms", "exchange", "--into", str(into)]) == 0
    return capsys.readouterr().out


def test_a_submission_in_another_students_name_is_refused(exchange, tmp_path, capsys,
                                                          monkeypatch):
    """On a shared hub, Mallory's ``nbgrader submit --student=victim`` makes a folder named
    after Victim, but owned by Mallory's account."""
    monkeypatch.setattr(collect, "_account", lambda uid: "mallory", raising=False)
    monkeypatch.setattr(collect, "_collector", lambda: -1, raising=False)  # not the instructor
    folder = _submit(exchange, "victim", "2025-03-07 23:00:00.000000 UTC")
    into = tmp_path / "submitted"
    out = _run(exchange, into, capsys)
    assert not (into / "victim").exists()
    assert (f"NOT PLACED  inbound/{folder.name}: made by 'mallory', not by 'victim' whose name "
            "it bears") in out


def test_a_students_own_submission_counts_from_when_its_files_were_written(exchange, tmp_path,
                                                                           capsys, monkeypatch):
    """A student writes their own timestamp.txt (any time), but not their files' ctime."""
    monkeypatch.setattr(collect, "_account", lambda uid: "victim", raising=False)
    monkeypatch.setattr(collect, "_collector", lambda: -1, raising=False)
    folder = _submit(exchange, "victim", "2025-03-01 12:00:00.000000 UTC")  # a week early
    into = tmp_path / "submitted"
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    out = _run(exchange, into, capsys)
    when = read_timestamp((into / "victim" / NOTEBOOK / "timestamp.txt").read_text())
    assert before <= when <= datetime.now(timezone.utc)
    assert (f"note        inbound/{folder.name}: its timestamp.txt says 2025-03-01 12:00:00 UTC, "
            "but its files were written at ") in out
    assert "counted as handed in then" in out


def test_an_exchange_only_the_instructor_writes_keeps_its_timestamps(exchange, tmp_path,
                                                                     capsys):
    """A single-user or test exchange: every folder is the collecting user's own."""
    _submit(exchange, "victim", "2025-03-01 12:00:00.000000 UTC")
    into = tmp_path / "submitted"
    out = _run(exchange, into, capsys)
    assert read_timestamp((into / "victim" / NOTEBOOK / "timestamp.txt").read_text()) == \
        datetime(2025, 3, 1, 12, tzinfo=timezone.utc)
    assert "its files were written at" not in out

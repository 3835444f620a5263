"""`make collect`: Canvas's and Moodle's real file names, the generated downloads, and a class
laid out from them, with every file that cannot be placed named, and nothing trusted.

Everything here runs without kernels or nbgrader's command line: the downloads are generated
by ``pipeline.classroom.sample_term`` into a temporary folder and collected into another, with the
course files (roster, deadlines, what collect records) pointed at temporary paths.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import stat
import struct
import subprocess
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_make_targets import make_n

from pipeline.classroom import collect, lms, sample_term
from pipeline.classroom import deadlines as deadlines_module
from pipeline.classroom import roster as roster_module
from pipeline.classroom.deadlines import read_timestamp
from pipeline.classroom.roster import Student, canvas_name
from pipeline.paths import ROOT

NOTEBOOK = "01_gain_multiplication"


# ---- the LMSs' file names -------------------------------------------------------------------

@pytest.mark.parametrize(("name", "user", "file", "original", "late"), [
    ("lovelaceada_12345_67890_01_gain_multiplication.ipynb", "12345", 67890,
     "01_gain_multiplication.ipynb", False),
    ("lovelaceada_LATE_12345_67890_01_gain_multiplication-1.ipynb", "12345", 67890,
     "01_gain_multiplication-1.ipynb", True),
    ("lovelaceada_late_12345_67890_Copy of 01_gain_multiplication.ipynb", "12345", 67890,
     "Copy of 01_gain_multiplication.ipynb", True),
    ("o_brien_sen_12345_67890_homework_2_final.ipynb", "12345", 67890,
     "homework_2_final.ipynb", False),
    ("garcíaingrid_725252_30000786_notes.pdf", "725252", 30000786, "notes.pdf", False),
])
def test_canvas_file_names_give_user_file_id_original_name_and_late(name, user, file, original,
                                                                    late):
    parsed = lms.parse_canvas(name)
    assert (parsed.user_id, parsed.file_id, parsed.original, parsed.late) == (
        user, file, original, late)


def test_canvas_names_that_are_no_students_file_say_why():
    anonymous = lms.parse_canvas("LATE_anon_x7Rq2_30001_01_gain_multiplication.ipynb")
    assert anonymous.anonymous == "x7Rq2" and anonymous.late and not anonymous.user_id
    assert "text entry" in lms.parse_canvas("lovelaceada_12345_text.html")
    assert "URL entry" in lms.parse_canvas("lovelaceada_LATE_12345_link.html")
    assert "not named as Canvas" in lms.parse_canvas("01_gain_multiplication.ipynb")


def test_canvas_names_students_as_its_download_does():
    """Canvas: the sortable name, lower case, only letters, digits and '_' (the ids' digits
    between underscores are taken out of a name, so they cannot pass for ids)."""
    assert canvas_name(Student("x", "Ada", "Lovelace")) == "lovelaceada"
    assert canvas_name(Student("x", "Siobhan", "Ní Bhriain")) == "níbhriainsiobhan"
    assert canvas_name(Student("x", "Sean", "O'Brien-Smith")) == "obriensmithsean"
    assert canvas_name(Student("x", "Al", "X_12_Y")) == "x12yal"


@pytest.mark.parametrize(("path", "folder", "original"), [
    ("Ada Lovelace_1234567_assignsubmission_file/01_gain_multiplication.ipynb",  # 4.1 and later
     "Ada Lovelace_1234567_assignsubmission_file", "01_gain_multiplication.ipynb"),
    ("Ada Lovelace_1234567_assignsubmission_file_/01_gain_multiplication.ipynb",  # 3.1 to 4.0
     "Ada Lovelace_1234567_assignsubmission_file_", "01_gain_multiplication.ipynb"),
    ("Ada Lovelace_1234567_assignsubmission_file_01_gain_multiplication.ipynb",  # before 3.1
     "Ada Lovelace_1234567_assignsubmission_file_", "01_gain_multiplication.ipynb"),
    ("download/Ada Lovelace_1234567_assignsubmission_file/sub/x.ipynb",
     "Ada Lovelace_1234567_assignsubmission_file", "sub/x.ipynb"),
])
def test_moodle_paths_give_participant_folder_and_file(path, folder, original):
    parsed = lms.parse_moodle(path)
    assert (parsed.full_name, parsed.participant, parsed.kind) == ("Ada Lovelace", "1234567",
                                                                   "file")
    assert (parsed.folder, parsed.original) == (folder, original)


def test_moodle_paths_that_hold_no_file_say_why():
    text = lms.parse_moodle("Ada Lovelace_1234567_assignsubmission_onlinetext/onlinetext.html")
    assert text.kind == "onlinetext"
    assert "not in a folder named as Moodle" in lms.parse_moodle("Ada/01.ipynb")


@pytest.mark.parametrize(("name", "stem", "copy"), [
    ("01_gain_multiplication.ipynb", "01_gain_multiplication", 0),
    ("01_gain_multiplication-1.ipynb", "01_gain_multiplication", 1),
    ("01_gain_multiplication (2).ipynb", "01_gain_multiplication", 2),
    ("Copy of 01_gain_multiplication.ipynb", "01_gain_multiplication", 0),
    ("Copy of 01_gain_multiplication (3).ipynb", "01_gain_multiplication", 3),
])
def test_the_marks_of_copies_come_off_a_name(name, stem, copy):
    assert (lms.plain_stem(name), lms.copy_number(name)) == (stem, copy)


def test_moodle_worksheet_times_are_read_in_the_courses_zone():
    when = lms.moodle_time("Friday, 7 March 2025, 11:32 PM", "Europe/Berlin")
    assert when.astimezone(timezone.utc) == datetime(2025, 3, 7, 22, 32, tzinfo=timezone.utc)
    assert lms.moodle_time("-", "Europe/Berlin") is None
    assert lms.moodle_time(lms.format_moodle_time(when), "Europe/Berlin") == when


# ---- the generated term -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def term(tmp_path_factory) -> sample_term.Term:
    return sample_term.build(tmp_path_factory.mktemp("term") / "downloads", students=30)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_sample_term_is_the_same_for_the_same_seed(term, tmp_path):
    again = sample_term.build(tmp_path / "again", students=30)
    for mine, theirs in ((term.canvas_zip, again.canvas_zip), (term.moodle_zip, again.moodle_zip),
                         (term.worksheet, again.worksheet), (term.roster, again.roster)):
        assert _digest(mine) == _digest(theirs), mine.name
    assert sorted(os.listdir(term.exchange / collect.COURSE_ID / "inbound")) == sorted(
        os.listdir(again.exchange / collect.COURSE_ID / "inbound"))


def test_the_sample_downloads_are_named_as_the_lmss_name_them(term):
    roster = roster_module.parse(term.roster.read_text())
    assert len(roster.students) == 30
    with zipfile.ZipFile(term.canvas_zip) as archive:
        names = archive.namelist()
    for s in (s for s in roster.students if term.lms_of[s.student_id] == "canvas"):
        mine = [lms.parse_canvas(n) for n in names if f"_{s.canvas_user_id}_" in n]
        if term.role[s.student_id] == "missing":
            assert mine == []
            continue
        assert mine and all(m.name == canvas_name(s) for m in mine if not isinstance(m, str))
        assert any(getattr(m, "late", False) for m in mine) == (term.role[s.student_id] == "late")
    with zipfile.ZipFile(term.moodle_zip) as archive:
        folders = {lms.parse_moodle(n).full_name for n in archive.namelist()}
    sheet = lms.read_worksheet(term.worksheet.read_bytes())
    assert {row["Full name"] for row in sheet.rows} == {
        s.full_name for s in roster.students if term.lms_of[s.student_id] == "moodle"}
    assert folders - {row["Full name"] for row in sheet.rows} == {"Guest Auditor"}
    inbound = term.exchange / collect.COURSE_ID / "inbound"
    for name in os.listdir(inbound):
        match = collect.INBOUND_NAME.match(name)
        assert match and (inbound / name / "timestamp.txt").read_text() == match["stamp"]


@pytest.fixture
def course(tmp_path, monkeypatch, term) -> Path:
    """The course files collect reads and writes, in a temporary folder."""
    grader = tmp_path / "grader"
    grader.mkdir()
    for module, name, value in ((roster_module, "ROSTER", grader / "roster.csv"),
                                (deadlines_module, "DEADLINES", grader / "deadlines.csv"),
                                (collect, "LMS_FOLDER", grader / "lms"),
                                (collect, "MANIFEST", grader / "lms" / "collected.csv")):
        monkeypatch.setattr(module, name, value)
    (grader / "roster.csv").write_bytes(term.roster.read_bytes())
    (grader / "deadlines.csv").write_bytes(term.deadlines.read_bytes())
    return grader


def _collect(capsys, *args: str) -> tuple[str, dict[tuple[str, str], dict]]:
    assert collect.main([*map(str, args)]) == 0
    return capsys.readouterr().out, collect.read_manifest()


def test_a_canvas_download_is_laid_out_for_grading(term, course, tmp_path, capsys):
    into = tmp_path / "submitted"
    out, manifest = _collect(capsys, term.canvas_zip, "--into", into)
    assert "(canvas)" in out.splitlines()[0]  # recognised by its names
    handed_in = [s for s in term.ids(lms="canvas") if term.role[s] != "missing"]
    assert sorted(p.name for p in into.iterdir()) == sorted(handed_in)
    for student in handed_in:
        notebook = into / student / NOTEBOOK / f"{NOTEBOOK}.ipynb"
        assert notebook.is_file() and manifest[student, NOTEBOOK]["lms"] == "canvas"
    late = term.ids(lms="canvas", role="late")[0]
    due = deadlines_module.load()[NOTEBOOK].due
    stamp = read_timestamp((into / late / NOTEBOOK / "timestamp.txt").read_text())
    assert stamp == due.astimezone(timezone.utc) + timedelta(seconds=1)  # Canvas: only "late"
    on_time = term.ids(lms="canvas", role="on time")[0]
    assert not (into / on_time / NOTEBOOK / "timestamp.txt").exists()  # Canvas does not say
    twice = term.ids(lms="canvas", role="twice")[0]
    assert manifest[twice, NOTEBOOK]["original"] == f"{NOTEBOOK}-1.ipynb"  # the later upload
    with zipfile.ZipFile(term.canvas_zip) as archive:
        later = archive.read(manifest[twice, NOTEBOOK]["lms_name"])
    assert (into / twice / NOTEBOOK / f"{NOTEBOOK}.ipynb").read_bytes() == later
    assert f"superseded  {term.canvas_zip.name}:" in out
    other = term.ids(lms="canvas", role="other name")[0]
    assert manifest[other, NOTEBOOK]["original"] == "attention_homework_final.ipynb"
    assert "recognised as 01_gain_multiplication by its cells" in out
    for name in term.not_placeable["canvas"]:
        assert f"NOT PLACED  {term.canvas_zip.name}:{name}: " in out, name
    assert "Canvas user id" in out and "symbolic link" in out and "(.pdf)" in out
    missing = term.ids(lms="canvas", role="missing")[0]
    assert missing in out.splitlines()[-1]  # "Nothing collected yet ... from ...: <names>"


def test_a_moodle_download_with_its_worksheet_gives_times_and_participants(term, course,
                                                                          tmp_path, capsys):
    into = tmp_path / "submitted"
    out, manifest = _collect(capsys, term.moodle_zip, "--worksheet", term.worksheet,
                             "--into", into)
    handed_in = [s for s in term.ids(lms="moodle") if term.role[s] != "missing"]
    assert sorted(p.name for p in into.iterdir()) == sorted(handed_in)
    sheet = lms.read_worksheet(term.worksheet.read_bytes())
    roster = roster_module.load()
    for row in sheet.rows:
        student = roster.find("email", row["Email address"])[0].student_id
        if student not in handed_in:
            continue
        assert manifest[student, NOTEBOOK]["lms_user"] == sheet.participant(row)
        assert manifest[student, NOTEBOOK]["lms_folder"].startswith(row["Full name"])
        stamp = read_timestamp((into / student / NOTEBOOK / "timestamp.txt").read_text())
        assert stamp == lms.moodle_time(row["Last modified (submission)"], "Europe/Berlin")
    twice = term.ids(lms="moodle", role="twice")[0]
    assert manifest[twice, NOTEBOOK]["original"] == f"{NOTEBOOK} (1).ipynb"
    for name in term.not_placeable["moodle"]:
        assert f"NOT PLACED  {term.moodle_zip.name}:{name}: " in out, name
    assert collect.worksheet_path(NOTEBOOK).read_bytes() == term.worksheet.read_bytes()


def test_a_moodle_download_without_worksheet_is_matched_by_name(term, course, tmp_path, capsys):
    into = tmp_path / "submitted"
    _, manifest = _collect(capsys, term.moodle_zip, "--lms", "moodle", "--into", into)
    handed_in = [s for s in term.ids(lms="moodle") if term.role[s] != "missing"]
    assert sorted(p.name for p in into.iterdir()) == sorted(handed_in)
    assert not any((into / s / NOTEBOOK / "timestamp.txt").exists() for s in handed_in)


def test_an_older_download_never_replaces_a_newer_notebook(term, course, tmp_path, capsys):
    into = tmp_path / "submitted"
    _collect(capsys, term.moodle_zip, "--worksheet", term.worksheet, "--into", into)
    student = term.ids(lms="moodle", role="on time")[0]
    notebook = into / student / NOTEBOOK / f"{NOTEBOOK}.ipynb"
    before = notebook.read_bytes()
    # the same student, an hour earlier, through a plain folder
    plain = tmp_path / "plain" / student
    plain.mkdir(parents=True)
    (plain / "old.ipynb").write_bytes(b'{"cells": [], "metadata": {}}')
    stamp = read_timestamp((into / student / NOTEBOOK / "timestamp.txt").read_text())
    (plain / "timestamp.txt").write_text(deadlines_module.timestamp_text(stamp - timedelta(hours=1)))
    out, _ = _collect(capsys, tmp_path / "plain", "--lms", "plain", "--assignment", NOTEBOOK,
                      "--trust-timestamps", "--into", into)
    assert f"kept        {student}/{NOTEBOOK}: an earlier collect placed a newer notebook" in out
    assert notebook.read_bytes() == before


def test_a_plain_folder_per_student_is_laid_out_with_its_timestamps(term, course, tmp_path,
                                                                    capsys):
    roster = roster_module.load()
    source = tmp_path / "plain"
    first, second = roster.students[:2]
    data = sample_term.notebook_bytes(NOTEBOOK, {}, think=False)
    (source / first.student_id).mkdir(parents=True)
    (source / first.student_id / f"{NOTEBOOK}.ipynb").write_bytes(data)
    (source / first.student_id / "timestamp.txt").write_text("2025-03-07 10:00:00.000000 UTC")
    (source / second.email).mkdir()  # a folder named by email
    (source / second.email / "my work.ipynb").write_bytes(data)
    (source / "stranger").mkdir()
    (source / "stranger" / f"{NOTEBOOK}.ipynb").write_bytes(data)
    (source / "loose.ipynb").write_bytes(data)
    into = tmp_path / "submitted"
    out, _ = _collect(capsys, source, "--trust-timestamps", "--into", into)
    assert (into / first.student_id / NOTEBOOK / "timestamp.txt").read_text().startswith(
        "2025-03-07 10:00:00")
    assert (into / second.student_id / NOTEBOOK / f"{NOTEBOOK}.ipynb").read_bytes() == data
    assert "NOT PLACED  plain:stranger/01_gain_multiplication.ipynb: 'stranger' is not on the " \
           "roster" in out
    assert "NOT PLACED  plain:loose.ipynb: not in a folder named after a student" in out


def test_a_plain_folders_timestamp_is_ignored_unless_trusted(term, course, tmp_path, capsys):
    """Whoever handed the notebook in may have written the timestamp.txt beside it (any
    time, to dodge the late penalty): believed only with --trust-timestamps."""
    student = roster_module.load().students[0].student_id
    source = tmp_path / "plain"
    (source / student).mkdir(parents=True)
    (source / student / f"{NOTEBOOK}.ipynb").write_bytes(
        sample_term.notebook_bytes(NOTEBOOK, {}, think=False))
    (source / student / "timestamp.txt").write_text("2020-01-01 00:00:00.000000 UTC")
    into = tmp_path / "submitted"
    out, manifest = _collect(capsys, source, "--into", into)
    assert not (into / student / NOTEBOOK / "timestamp.txt").exists()
    assert manifest[student, NOTEBOOK]["timestamp"] == "" and "handed in 2020" not in out
    assert (f"note        plain:{student}/{NOTEBOOK}.ipynb: the timestamp.txt next to it was "
            "ignored: whoever handed the notebook in may have written it; collect with "
            "--trust-timestamps") in out


# ---- nothing in a download is trusted -------------------------------------------------------

def test_links_special_files_and_escaping_paths_are_refused_by_name(course, tmp_path, capsys,
                                                                    term):
    student = roster_module.load().students[0].student_id
    source = tmp_path / "plain"
    (source / student).mkdir(parents=True)
    secret = tmp_path / "secret.ipynb"
    secret.write_bytes(sample_term.notebook_bytes(NOTEBOOK, {}, think=False))
    (source / student / f"{NOTEBOOK}.ipynb").symlink_to(secret)
    os.mkfifo(source / student / "pipe.ipynb")
    (source / "linked").symlink_to(source / student, target_is_directory=True)
    into = tmp_path / "submitted"
    out, _ = _collect(capsys, source, "--lms", "plain", "--into", into)
    assert f"NOT PLACED  plain:{student}/{NOTEBOOK}.ipynb: is a symbolic link" in out
    assert f"NOT PLACED  plain:{student}/pipe.ipynb: is a named pipe (FIFO)" in out
    assert "NOT PLACED  plain:linked: is a symbolic link" in out
    assert not into.exists() or not any(into.iterdir())

    archive = tmp_path / "evil.zip"
    data = sample_term.notebook_bytes(NOTEBOOK, {}, think=False)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"../{student}/{NOTEBOOK}.ipynb", data)
        zf.writestr(f"/abs/{student}/{NOTEBOOK}.ipynb", data)
        link = zipfile.ZipInfo(f"{student}/{NOTEBOOK}.ipynb")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, str(secret))
    out, _ = _collect(capsys, archive, "--lms", "plain", "--into", into)
    assert out.count("has an absolute or '..' path") == 2
    assert f"evil.zip:{student}/{NOTEBOOK}.ipynb: is a symbolic link in the archive" in out
    assert not (tmp_path / student).exists()  # nothing written outside the target
    assert not into.exists() or not any(into.iterdir())


def _forge_size(archive: Path, size: int) -> None:
    """Make the archive's one member claim to unpack to ``size`` bytes (both headers)."""
    data = bytearray(archive.read_bytes())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22:local + 26] = struct.pack("<I", size)
    data[central + 24:central + 28] = struct.pack("<I", size)
    archive.write_bytes(bytes(data))


def test_an_archive_is_never_trusted_about_sizes(course, tmp_path, capsys):
    """A member is read only up to the limit, whatever the archive says it holds: one that
    unpacks past it is refused, and so is one whose stated size is a lie."""
    student = roster_module.load().students[0].student_id
    into = tmp_path / "submitted"
    for name, claimed in (("big.zip", None), ("lying.zip", 10)):
        archive = tmp_path / name
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{student}/{NOTEBOOK}.ipynb", b" " * (3 * 2**20))  # 3 MiB of spaces
        if claimed is not None:
            _forge_size(archive, claimed)
            with zipfile.ZipFile(archive) as zf:
                assert zf.infolist()[0].file_size == claimed
        out, _ = _collect(capsys, archive, "--lms", "plain", "--assignment", NOTEBOOK,
                          "--max-notebook-mb", "1", "--into", into)
        line = next(line for line in out.splitlines() if line.startswith("NOT PLACED"))
        assert line.startswith(f"NOT PLACED  {name}:{student}/{NOTEBOOK}.ipynb: ")
        assert ("over the 1.0 MiB limit" if claimed is None else "cannot be unpacked") in line
    assert not into.exists() or not any(into.iterdir())


def test_canvas_and_moodle_need_a_roster(course, term, tmp_path):
    roster_module.ROSTER.unlink()
    with pytest.raises(SystemExit, match="roster"):
        collect.main([str(term.canvas_zip), "--into", str(tmp_path / "x")])


# ---- the make targets -----------------------------------------------------------------------

def _args(lines: list[str], module: str) -> list[str]:
    line = next(line for line in lines if f"-m {module}" in line)
    words = shlex.split(line)
    assert words[words.index("-m") - 1].endswith("python")
    assert "pipeline.environment" in line  # run in the course's environment
    return words[words.index(module) + 1:]


def test_collect_export_and_return_pass_their_variables_on():
    args = _args(make_n("collect", "FROM=my download.zip", "LMS=moodle", f"ASSIGNMENT={NOTEBOOK}",
                        "WORKSHEET=Grades sheet.csv"), "pipeline.classroom.collect")
    parsed = collect.build_parser().parse_args(args)
    assert (str(parsed.source), parsed.lms, parsed.assignment, str(parsed.worksheet)) == (
        "my download.zip", "moodle", NOTEBOOK, "Grades sheet.csv")
    assert collect.build_parser().parse_args(
        _args(make_n("collect", "FROM=x.zip"), "pipeline.classroom.collect")).lms is None  # recognised
    assert _args(make_n("export", "LMS=canvas"), "pipeline.grading.export") == ["grades", "--lms", "canvas"]
    assert _args(make_n("return", "LMS=moodle"), "pipeline.grading.export") == [
        "feedback", "--lms", "moodle"]
    release = _args(make_n("release", "EXCHANGE=/srv/exchange"), "pipeline.classroom.collect")
    assert collect.build_parser().parse_args(release).release
    text = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    for name in ("FROM", "LMS", "ASSIGNMENT", "WORKSHEET", "EXCHANGE"):
        assert re.search(rf"^  {name} +make ", text, re.M), name
    for target in ("collect", "return", "export", "release"):
        assert re.search(rf"^  make {target} +\S", text, re.M), target

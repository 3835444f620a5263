"""A generated term: a class, its roster and deadline, and what three LMSs hand over.

    python -m pipeline.classroom.sample_term DIR [--students 36] [--assignment ID] [--seed 0] [--course]

writes into ``DIR``:

- ``roster.csv`` and ``deadlines.csv`` (``--course``: also into ``grader/``, refusing to
  replace files already there);
- ``canvas/<course>-<assignment>_submissions.zip``: Canvas's "Download Submissions" zip, one
  file per upload named as Canvas names them (``lastfirst_[LATE_]userid_fileid_name``);
- ``moodle/<course>-<assignment>-<cmid>.zip``: Moodle's "Download all submissions" zip (a
  folder per participant, ``Full Name_participantid_assignsubmission_file``) and
  ``moodle/Grades-<course>-<assignment>-<cmid>.csv``, the assignment's grading worksheet;
- ``exchange/``: a JupyterHub's nbgrader exchange root whose ``inbound`` folder holds
  submissions laid out as ``nbgrader submit`` lays them out.

The class is split in three sections, one per LMS. In each: students on time, one late, one
who handed in twice, one whose notebook was saved under a copy's name, one whose notebook
has another name altogether, one who handed in nothing, and files that cannot be placed (a
PDF, an online-text entry, someone not on the roster, a link posing as a notebook). Answers
are the solution's, the sample mistakes' (``grader/sample_mistakes``) or left blank, mixed
per exercise (all the solution's for the late and for those who handed in twice, so that
their grades show the penalty and which notebook was graded). Everything is drawn from ``--seed``: the same seed writes the same files.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
import re
import shutil
import stat
import sys
import unicodedata
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dateutil.tz
import nbformat

from helpers import syllabus
from pipeline.classroom import lms
from pipeline.classroom.collect import COURSE_ID
from pipeline.classroom.deadlines import DEADLINES, TIMESTAMP_FORMAT
from pipeline.classroom.roster import ROSTER, Student, canvas_name
from pipeline.classroom.sample_class import SOLUTION_MARKERS, mistakes_for
from pipeline.paths import NOTEBOOKS, SOLUTIONS

ZONE = "Europe/Berlin"
DUE = datetime(2025, 3, 7, 23, 59, tzinfo=dateutil.tz.gettz(ZONE))
DOWNLOADED = DUE + timedelta(days=4, hours=10)  # when the instructor downloads everything
FIRST = ["Ada", "Grace", "Alan", "Zoë", "José", "Amara", "Chidi", "Mei", "Søren", "Priya",
         "Kwame", "Lucía", "Noor", "Tomás", "Aoife", "Yusuf", "Ingrid", "Hiroshi", "Fatima",
         "Mateo", "Olga", "Ravi", "Siobhan", "Dmitri", "Leila", "Björn", "Nia", "Kenji",
         "Ana", "Emeka", "Freya", "Luca", "Imani", "Jae", "Marta", "Omar", "Elif", "Pablo"]
LAST = ["Lovelace", "Hopper", "Turing", "Müller", "García", "Okafor", "Nwosu", "Chen",
        "Kierkegaard", "Patel", "Mensah", "Fernández", "Haddad", "O'Brien", "Ní Bhriain",
        "Yilmaz", "Larsen", "Tanaka", "Al-Sayed", "Rossi", "Ivanova", "Sharma", "Kelly",
        "Petrov", "Karimi", "Andersson", "Van der Berg", "Sato", "Silva", "Eze", "Smith-Jones",
        "Bianchi", "Diallo", "Kim", "Kowalska", "Farouk", "Demir", "Ruiz"]
SECTIONS = {"canvas": "Tuesday (Canvas)", "moodle": "Thursday (Moodle)",
            "exchange": "Friday (JupyterHub)"}
# The role of each of the first students of a section; the others hand in on time.
ROLES = ("late", "twice", "copy name", "other name", "missing")


@dataclass
class Term:
    """What was written, and what the class did (for the tests)."""

    folder: Path
    assignment: str
    students: list[Student]
    lms_of: dict[str, str]  # student id -> canvas, moodle or exchange
    role: dict[str, str]  # student id -> on time, late, twice, copy name, other name, missing
    answers: dict[str, dict[str, str]]  # student id -> exercise -> solution, mistake, blank
    canvas_zip: Path = Path()
    moodle_zip: Path = Path()
    worksheet: Path = Path()
    exchange: Path = Path()
    roster: Path = Path()
    deadlines: Path = Path()
    not_placeable: dict[str, list[str]] = field(default_factory=dict)  # lms -> names

    def ids(self, *, lms: str | None = None, role: str | None = None) -> list[str]:
        return [s.student_id for s in self.students
                if lms in (None, self.lms_of[s.student_id]) and role in (None, self.role[s.student_id])]


def _answers(notebook_id: str) -> dict[str, str]:
    """grade_id -> what a perfect student writes, for answer and Think! cells."""
    solution = nbformat.read(SOLUTIONS / f"{notebook_id}.ipynb", as_version=4)
    return {cell.metadata["nbgrader"]["grade_id"]: SOLUTION_MARKERS.sub("", cell.source)
            for cell in solution.cells if cell.metadata.get("nbgrader", {}).get("solution")}


def notebook_bytes(assignment: str, choice: dict[str, str], think: bool) -> bytes:
    """The released notebook with each exercise answered as ``choice`` says (solution,
    mistake or blank) and the Think! answers written when ``think``."""
    notebook = nbformat.read(NOTEBOOKS / f"{assignment}.ipynb", as_version=4)
    answers, mistakes = _answers(assignment), mistakes_for(assignment)
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if not meta.get("solution"):
            continue
        if cell.cell_type == "markdown":
            if think:
                cell.source = answers[grade_id]
        elif choice.get(grade_id) == "solution":
            cell.source = answers[grade_id]
        elif choice.get(grade_id) == "mistake" and grade_id in mistakes:
            cell.source = mistakes[grade_id]
    return nbformat.writes(notebook).encode()


def _students(rng: random.Random, count: int) -> tuple[list[Student], dict[str, str]]:
    firsts, lasts = rng.sample(FIRST, len(FIRST)), rng.sample(LAST, len(LAST))
    students, lms_of, used = [], {}, set()
    channels = ("canvas", "moodle", "exchange")
    for i in range(count):
        first, last = firsts[i % len(firsts)], lasts[(i * 7) % len(lasts)]
        plain = unicodedata.normalize("NFKD", f"{first[0]}{last}".lower())
        base = re.sub(r"[^a-z]", "", plain.encode("ascii", "ignore").decode())
        student_id = base
        n = 1
        while student_id in used:
            n += 1
            student_id = f"{base}{n}"
        used.add(student_id)
        channel = channels[i % 3]
        canvas = channel == "canvas"
        students.append(Student(
            student_id, first, last, f"{student_id}@uni.example.edu",
            canvas_user_id=str(rng.randrange(100000, 999999)) if canvas else "",
            sis_user_id=f"S{rng.randrange(10**6, 10**7)}" if canvas else "",
            sis_login_id=student_id if canvas else "", section=SECTIONS[channel]))
        lms_of[student_id] = channel
    return students, lms_of


def _write_roster(path: Path, students: list[Student]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["student_id", "first_name", "last_name", "email", "canvas_user_id",
                     "sis_user_id", "sis_login_id", "section"])
    for s in students:
        writer.writerow([s.student_id, s.first_name, s.last_name, s.email, s.canvas_user_id,
                         s.sis_user_id, s.sis_login_id, s.section])
    path.write_text(out.getvalue())


def _zip_write(archive: zipfile.ZipFile, name: str, data: bytes, when: datetime) -> None:
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    archive.writestr(info, data)


def _zip_link(archive: zipfile.ZipFile, name: str, target: str, when: datetime) -> None:
    """A member that is a symbolic link (as `zip --symlinks` stores one)."""
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive.writestr(info, target)


def build(folder: Path, *, students: int = 36, assignment: str = "01_gain_multiplication",
          seed: int = 0) -> Term:
    """Write the term into ``folder`` (replacing what was there); see the module's doc."""
    if students < 3 * (len(ROLES) + 1):
        raise ValueError(f"a term needs at least {3 * (len(ROLES) + 1)} students")
    rng = random.Random(seed)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    tutorial = syllabus.tutorial(assignment)
    exercises = [e.name for e in tutorial.exercises]
    has_mistake = set(mistakes_for(assignment))
    klass, lms_of = _students(rng, students)
    term = Term(folder, assignment, klass, lms_of, {}, {})
    for channel in ("canvas", "moodle", "exchange"):
        ids = [s.student_id for s in klass if lms_of[s.student_id] == channel]
        for i, student_id in enumerate(ids):
            term.role[student_id] = ROLES[i] if i < len(ROLES) else "on time"
    for s in klass:
        options = ["solution", "solution", "mistake", "blank"]
        term.answers[s.student_id] = {
            e: rng.choice([o for o in options if o != "mistake" or e in has_mistake])
            for e in exercises}
    for s in klass:  # whose grade shows what happened to them: they answered everything
        if term.role[s.student_id] in ("late", "twice") or s is klass[len(ROLES) * 3]:
            term.answers[s.student_id] = dict.fromkeys(exercises, "solution")

    def submitted_at(student_id: str) -> datetime:
        if term.role[student_id] == "late":
            return DUE + timedelta(hours=26, minutes=rng.randrange(60))
        return DUE - timedelta(minutes=rng.randrange(30, 3 * 24 * 60))

    def notebook(student_id: str, blank: bool = False) -> bytes:
        choice = dict.fromkeys(exercises, "blank") if blank else term.answers[student_id]
        return notebook_bytes(assignment, choice, think=not blank and rng.random() < 0.7)

    def original_name(student_id: str) -> str:
        role = term.role[student_id]
        return {"copy name": f"Copy of {assignment}.ipynb",
                "other name": "attention_homework_final.ipynb"}.get(role, f"{assignment}.ipynb")

    term.roster, term.deadlines = folder / "roster.csv", folder / "deadlines.csv"
    _write_roster(term.roster, klass)
    canvas_assignment_id = str(rng.randrange(10000, 99999))
    term.deadlines.write_text(
        "assignment,due,canvas_assignment_id,title\n"
        f"{assignment},{DUE.strftime('%Y-%m-%d %H:%M')} {ZONE},{canvas_assignment_id},"
        f"Tutorial {tutorial.number}: {tutorial.topic.replace('_', ' ')}\n")

    # ---- Canvas -----------------------------------------------------------------------
    (folder / "canvas").mkdir()
    term.canvas_zip = folder / "canvas" / f"attn101-{assignment.replace('_', '-')}_submissions.zip"
    file_id = 30_000_000
    term.not_placeable["canvas"] = []
    with zipfile.ZipFile(term.canvas_zip, "w") as archive:
        for s in (s for s in klass if lms_of[s.student_id] == "canvas"):
            role = term.role[s.student_id]
            if role == "missing":
                continue
            prefix = canvas_name(s) + ("_LATE" if role == "late" else "")
            uploads = [(original_name(s.student_id), notebook(s.student_id))]
            if role == "twice":  # the first upload, then the same name again: Canvas adds -1
                uploads = [(f"{assignment}.ipynb", notebook(s.student_id, blank=True)),
                           (f"{assignment}-1.ipynb", notebook(s.student_id))]
            for name, data in uploads:
                file_id += rng.randrange(1, 500)
                _zip_write(archive, f"{prefix}_{s.canvas_user_id}_{file_id}_{name}", data,
                           DOWNLOADED)
        on_time = [s for s in klass if lms_of[s.student_id] == "canvas"
                   and term.role[s.student_id] == "on time"]
        pdf = f"{canvas_name(on_time[0])}_{on_time[0].canvas_user_id}_{file_id + 7}_report.pdf"
        _zip_write(archive, pdf, b"%PDF-1.4\n%%EOF\n", DOWNLOADED)
        stranger = f"studenttest_{rng.randrange(100000, 999999)}_{file_id + 9}_{assignment}.ipynb"
        _zip_write(archive, stranger, notebook(on_time[0].student_id), DOWNLOADED)
        text = f"{canvas_name(on_time[1])}_{on_time[1].canvas_user_id}_text.html"
        _zip_write(archive, text, b"<p>see my notebook</p>", DOWNLOADED)
        link = (f"{canvas_name(on_time[2])}_{on_time[2].canvas_user_id}_{file_id + 11}_"
                f"{assignment}-2.ipynb")
        _zip_link(archive, link, "/etc/passwd", DOWNLOADED)
        term.not_placeable["canvas"] = [pdf, stranger, text, link]

    # ---- Moodle -----------------------------------------------------------------------
    (folder / "moodle").mkdir()
    cmid = rng.randrange(1000, 9999)
    stem = f"ATTN101-Tutorial {assignment[:2]}-{cmid}"
    term.moodle_zip = folder / "moodle" / f"{stem}.zip"
    term.worksheet = folder / "moodle" / f"Grades-{stem}.csv"
    sheet = lms.Worksheet(lms.WORKSHEET_COLUMNS)
    moodle = [s for s in klass if lms_of[s.student_id] == "moodle"]
    participants = rng.sample(range(1_000_000, 9_999_999), len(moodle) + 1)
    with zipfile.ZipFile(term.moodle_zip, "w") as archive:
        for s, participant in zip(moodle, participants, strict=False):
            role = term.role[s.student_id]
            when = submitted_at(s.student_id) if role != "missing" else None
            sheet.rows.append({
                "Identifier": f"{lms.PARTICIPANT}{participant}", "Full name": s.full_name,
                "Email address": s.email,
                "Status": "No submission" if when is None else "Submitted for grading",
                "Grade": "", "Maximum Grade": "100.00", "Grade can be changed": "Yes",
                "Last modified (submission)": "-" if when is None else
                lms.format_moodle_time(when.astimezone(dateutil.tz.gettz(ZONE))),
                "Last modified (grade)": "-", "Feedback comments": ""})
            if when is None:
                continue
            folder_name = f"{s.full_name.replace('_', ' ')}_{participant}_assignsubmission_file"
            files = [(original_name(s.student_id), notebook(s.student_id))]
            if role == "twice":  # uploaded again; the browser had renamed the newer copy
                files = [(f"{assignment}.ipynb", notebook(s.student_id, blank=True)),
                         (f"{assignment} (1).ipynb", notebook(s.student_id))]
            for name, data in files:
                _zip_write(archive, f"{folder_name}/{name}", data, DOWNLOADED)
        on_time = [s for s in moodle if term.role[s.student_id] == "on time"]
        pid = dict(zip((s.student_id for s in moodle), participants, strict=False))
        text = (f"{on_time[0].full_name}_{pid[on_time[0].student_id]}_assignsubmission_"
                "onlinetext/onlinetext.html")
        _zip_write(archive, text, b"<p>my answers are in the notebook</p>", DOWNLOADED)
        script = (f"{on_time[1].full_name}_{pid[on_time[1].student_id]}_assignsubmission_file/"
                  f"{assignment}.py")
        _zip_write(archive, script, b"print('hello')\n", DOWNLOADED)
        guest = f"Guest Auditor_{participants[-1]}_assignsubmission_file/{assignment}.ipynb"
        _zip_write(archive, guest, notebook(on_time[0].student_id), DOWNLOADED)
        term.not_placeable["moodle"] = [text, script, guest]
    term.worksheet.write_text("\ufeff" + lms.write_worksheet(sheet))

    # ---- a JupyterHub's nbgrader exchange --------------------------------------------
    term.exchange = folder / "exchange"
    inbound = term.exchange / COURSE_ID / "inbound"
    inbound.mkdir(parents=True)

    def submit(user: str, when: datetime, files: dict[str, bytes]) -> str:
        """What `nbgrader submit` leaves in the inbound folder."""
        stamp = when.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)
        name = f"{user}+{assignment}+{stamp}+{rng.getrandbits(48):012x}"
        (inbound / name).mkdir()
        for file_name, data in files.items():
            (inbound / name / file_name).write_bytes(data)
        (inbound / name / "timestamp.txt").write_text(stamp)
        return name

    hub = [s for s in klass if lms_of[s.student_id] == "exchange"]
    latest = {}
    for s in hub:
        role = term.role[s.student_id]
        if role == "missing":
            continue
        when = submitted_at(s.student_id)
        if role == "twice":
            submit(s.student_id, when - timedelta(hours=5),
                   {f"{assignment}.ipynb": notebook(s.student_id, blank=True)})
        latest[s.student_id] = submit(s.student_id, when, {original_name(s.student_id):
                                                           notebook(s.student_id)})
    on_time = [s for s in hub if term.role[s.student_id] == "on time"]
    visitor = submit("visitor", DUE - timedelta(hours=2),
                     {f"{assignment}.ipynb": notebook(on_time[0].student_id)})
    hostile = f"{latest[on_time[1].student_id]}/solutions.ipynb"  # next to a real notebook
    (inbound / hostile).symlink_to("/etc/passwd")
    term.not_placeable["exchange"] = [visitor, hostile]
    return term


def install(term: Term, *, force: bool = False) -> list[Path]:
    """Copy the term's roster and deadlines into ``grader/`` (never over the course's own
    files unless ``force``)."""
    written = []
    for source, target in ((term.roster, ROSTER), (term.deadlines, DEADLINES)):
        if target.exists() and not force:
            raise FileExistsError(f"{target} exists: the sample term does not replace it "
                                  "(--force does)")
        shutil.copyfile(source, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--students", type=int, default=36)
    parser.add_argument("--assignment", default="01_gain_multiplication")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--course", action="store_true",
                        help="also write grader/roster.csv and grader/deadlines.csv")
    parser.add_argument("--force", action="store_true", help="with --course: replace them")
    args = parser.parse_args(argv)
    term = build(args.folder, students=args.students, assignment=args.assignment,
                 seed=args.seed)
    print(f"{len(term.students)} students, {args.assignment} due {DUE:%Y-%m-%d %H:%M} {ZONE}:")
    for path in (term.roster, term.deadlines, term.canvas_zip, term.moodle_zip, term.worksheet,
                 term.exchange):
        print(f"  {path}")
    if args.course:
        try:
            for path in install(term, force=args.force):
                print(f"  {path} (the course's)")
        except FileExistsError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What Canvas and Moodle downloads look like, and the files they import.

**Canvas** ("Download Submissions" of an assignment: one zip, flat). Each file is named
``<name>_[LATE_]<user id>_<file id>_<original name>``: ``name`` is the student's sortable
name ("Last, First") lower-cased with everything but letters, digits and ``_`` left out,
``LATE`` is there when Canvas counted the submission late, the user id is Canvas's, the file
id is Canvas's id of the uploaded file (it grows with every upload, so the larger is the
newer), and the original name is what the student uploaded, with ``-1``, ``-2``... added by
Canvas when a file of that name was uploaded before. Anonymous grading names files
``[LATE_]anon_<anonymous id>_<file id>_<original name>``, and text or URL entries
``<name>_<user id>_text.html`` / ``_link.html``. The download says *that* a submission was
late, never when it came in. Canvas's "Re-upload submissions" takes back a zip of files whose
names start the same way (it reads the first two numbers between underscores as the user
and the file id), and its gradebook import takes a CSV with the columns ``Student, ID, SIS
User ID, SIS Login ID, Section`` and one column per assignment named ``Title (id)``.

**Moodle** ("Download all submissions" of an assignment: one zip). Since Moodle 3.1 each
participant's files are in a folder ``<Full Name>_<participant id>_assignsubmission_file``
(a trailing ``_`` before 4.1), holding the files as uploaded; before 3.1 the files themselves
were named ``<Full Name>_<participant id>_assignsubmission_file_<original name>``. The full
name has ``_`` replaced by spaces. The participant id is Moodle's id of the student *in this
assignment* (``assign_user_mapping``), the number in the grading worksheet's ``Identifier``
column ("Participant 1234567"). The worksheet ("Download grading worksheet", a CSV with
``Identifier, Full name, Email address, Status, Grade, Maximum Grade, Grade can be changed,
Last modified (submission), Last modified (grade), Feedback comments``) maps participants to
emails and says when each submission was last modified; uploaded back with grades filled in,
Moodle imports it (it needs the columns Identifier, Grade and Last modified (grade)). Its
"Upload multiple feedback files in a zip" takes folders named as in the download.

The file-name parsers are nbgrader collector plugins (:class:`CanvasCollector`,
:class:`MoodleCollector`, subclasses of nbgrader's ``FileNameCollectorPlugin``, whose
``collect`` gives nbgrader's ``student_id``, ``file_id`` and ``timestamp``); ``make collect``
(``pipeline.classroom.collect``) uses them in place of ``nbgrader zip_collect``, whose extractor
copies files through links and unpacks archive members whole, whatever their size, and which
stops at two files of one student that carry no times.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath

import dateutil.parser
import dateutil.tz
from nbgrader.plugins import FileNameCollectorPlugin
from traitlets import Unicode

from pipeline.classroom import roster as roster_module
from pipeline.classroom.roster import Roster, Student

LMS_KINDS = ("canvas", "moodle", "plain", "exchange")

# ---- names of submitted files ---------------------------------------------------------------

CANVAS_FILE = re.compile(r"^(?P<name>\w*?)_(?:(?P<late>late)_)?(?P<user_id>\d+)_(?P<file_id>\d+)_"
                         r"(?P<original>.+)$", re.IGNORECASE)
CANVAS_ANONYMOUS = re.compile(r"^(?:(?P<late>late)_)?anon_(?P<anon>[A-Za-z0-9]+)_(?P<file_id>\d+)_"
                              r"(?P<original>.+)$", re.IGNORECASE)
CANVAS_ENTRY = re.compile(r"^(?P<name>\w*?)_(?:late_)?(?P<user_id>\d+)_(?P<kind>text|link)\.html$",
                          re.IGNORECASE)
MOODLE_PART = re.compile(r"^(?P<name>[^/]+?)_(?P<participant>\d+)_(?P<plugin>assignsubmission)_"
                         r"(?P<kind>[a-z]+)(?:_(?P<rest>.*))?$")
# What browsers, Colab and LMSs add to a file name that was saved or uploaded before.
COPY_MARKS = (re.compile(r"^copy[ _]of[ _]", re.IGNORECASE), re.compile(r"[ _]?\((\d+)\)$"),
              re.compile(r"-(\d+)$"))


@dataclass(frozen=True)
class CanvasName:
    name: str  # as in the file name ("lovelaceada"); "" when anonymous
    user_id: str  # Canvas user id; "" when anonymous
    file_id: int
    original: str
    late: bool
    anonymous: str = ""


@dataclass(frozen=True)
class MoodleName:
    full_name: str
    participant: str
    kind: str  # the submission plugin: "file", "onlinetext", ...
    original: str
    folder: str  # the download's folder (or, before Moodle 3.1, file-name prefix)


def parse_canvas(name: str) -> CanvasName | str:
    """The parts of a Canvas download's file name, or why it is not one."""
    if len(PurePosixPath(name).parts) > 1:  # the name is Canvas's only where Canvas made it
        return ("in a folder: Canvas's downloads are flat (each file named by Canvas), so a "
                "folder's name or a file in it says nothing of who handed it in; give the "
                "folder that holds the downloaded files themselves")
    base = PurePosixPath(name).name
    entry = CANVAS_ENTRY.match(base)
    if entry:
        return (f"a Canvas online {'text' if entry['kind'].lower() == 'text' else 'URL'} entry, "
                "not a notebook file")
    anonymous = CANVAS_ANONYMOUS.match(base)
    if anonymous:
        return CanvasName("", "", int(anonymous["file_id"]), anonymous["original"],
                          bool(anonymous["late"]), anonymous["anon"])
    match = CANVAS_FILE.match(base)
    if not match:
        return ("not named as Canvas names submitted files "
                "(<name>_[LATE_]<user id>_<file id>_<file name>)")
    return CanvasName(match["name"], match["user_id"], int(match["file_id"]), match["original"],
                      bool(match["late"]))


def parse_moodle(path: str) -> MoodleName | str:
    """The parts of a Moodle download's path, or why it is not one.

    The participant is the one the download's own folder names: the *outermost* part that
    looks like Moodle's. What lies inside it was named by the student who uploaded it, so a
    file there named like another participant's (``Victim_1234_assignsubmission_file_x``)
    is refused rather than taken as theirs."""
    parts = PurePosixPath(path).parts
    for i, part in enumerate(parts):
        match = MOODLE_PART.match(part)
        if not match:
            continue
        rest = match["rest"] or ""
        inside = "/".join(parts[i + 1:])
        if inside:  # 3.1 and later: a folder per participant and plugin
            original, folder = inside, part
        elif rest:  # before 3.1: the prefix is part of the file name
            original, folder = rest, part[:len(part) - len(rest)]
        else:
            return "an empty Moodle submission folder"
        forged = _other_participant((rest, *parts[i + 1:]), match["participant"])
        if forged:
            return (f"named like the Moodle files of participant {forged} but uploaded into "
                    f"the folder of {match['name']} (participant {match['participant']}): "
                    "Moodle never makes that (look at it by hand)")
        return MoodleName(match["name"], match["participant"], match["kind"], original, folder)
    return ("not in a folder named as Moodle names them "
            "(<Full Name>_<participant id>_assignsubmission_file)")


def _other_participant(inside: tuple[str, ...], participant: str) -> str:
    """A participant other than ``participant`` that a name inside its folder claims to be
    (``<Full Name>_<id>``), or ""."""
    for part in inside:
        match = MOODLE_PART.match(part)
        if match and match["participant"] != participant:
            return f"{match['participant']} ({match['name']})"
    return ""


def copy_number(name: str) -> int:
    """How many times a file of this name was saved before, going by its marks: 0 for
    ``x.ipynb``, 1 for ``x-1.ipynb`` or ``x (1).ipynb``."""
    stem = PurePosixPath(name).stem
    for mark in COPY_MARKS[1:]:
        found = mark.search(stem)
        if found:
            return int(found.group(1))
    return 0


def plain_stem(name: str) -> str:
    """A file name's stem without the marks of copies ("Copy of x (1).ipynb" -> "x")."""
    stem = PurePosixPath(name).stem.strip()
    changed = True
    while changed:
        changed = False
        for mark in COPY_MARKS:
            new = mark.sub("", stem).strip()
            changed, stem = changed or new != stem, new
    return stem


# ---- the Moodle grading worksheet ---------------------------------------------------------

WORKSHEET_COLUMNS = ["Identifier", "Full name", "Email address", "Status", "Grade",
                     "Maximum Grade", "Grade can be changed", "Last modified (submission)",
                     "Last modified (grade)", "Feedback comments"]
PARTICIPANT = "Participant "  # Moodle's get_string('hiddenuser', 'assign')
MOODLE_TIME = "%A, %d %B %Y, %I:%M %p"  # Moodle's strftimedatetime, as worksheets show times


@dataclass
class Worksheet:
    header: list[str]
    rows: list[dict[str, str]] = field(default_factory=list)

    def participant(self, row: dict[str, str]) -> str:
        return row.get("Identifier", "").removeprefix(PARTICIPANT).strip()

    def by_participant(self) -> dict[str, dict[str, str]]:
        return {self.participant(row): row for row in self.rows if self.participant(row)}


def read_worksheet(data: bytes) -> Worksheet:
    """A Moodle grading worksheet (CSV; Moodle may start it with a byte-order mark)."""
    text = data.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = list(reader.fieldnames or [])
    if "Identifier" not in header:
        raise ValueError("not a Moodle grading worksheet: no Identifier column")
    return Worksheet(header, [{k: v or "" for k, v in row.items() if k is not None}
                              for row in reader])


def write_worksheet(sheet: Worksheet) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, sheet.header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(sheet.rows)
    return out.getvalue()


def moodle_time(text: str, zone: str | None) -> datetime | None:
    """A worksheet time ("Friday, 7 March 2025, 11:32 PM", shown in the zone ``zone``; left
    without a zone when None), or None for "-" or an empty cell."""
    text = text.strip()
    if text in ("", "-"):
        return None
    when = dateutil.parser.parse(text, fuzzy=True)
    if when.tzinfo is None and zone:
        tz = dateutil.tz.gettz(zone)
        if tz is None:
            raise ValueError(f"unknown time zone {zone!r}")
        when = when.replace(tzinfo=tz)
    return when


def format_moodle_time(when: datetime) -> str:
    return when.strftime(MOODLE_TIME).replace(" 0", " ", 1)


# ---- collector plugins ----------------------------------------------------------------------

class RosterCollector(FileNameCollectorPlugin):
    """A collector that maps what a file name says to a student of the roster."""

    roster_file = Unicode("", help="the roster (default: grader/roster.csv)").tag(config=True)

    def __init__(self, *args, roster: Roster | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._roster = roster

    @property
    def roster(self) -> Roster:
        if self._roster is None:
            from pathlib import Path

            loaded = roster_module.load(Path(self.roster_file) if self.roster_file else None)
            if loaded is None:
                raise FileNotFoundError(f"{self.roster_file or roster_module.ROSTER} does not "
                                        "exist: the roster maps LMS names to student ids")
            self._roster = loaded
        return self._roster

    def explain(self, path: str) -> dict | str:
        """What the file at ``path`` says: nbgrader's collected data (student_id, file_id,
        timestamp) and more, or why it cannot be placed."""
        raise NotImplementedError

    def collect(self, submitted_file: str) -> dict | None:
        if PurePosixPath(submitted_file).suffix not in self.valid_ext:
            return None
        info = self.explain(submitted_file)
        if isinstance(info, str):
            self.log.warning("Skipped %s: %s", submitted_file, info)
            return None
        return info


def _one(found: list[Student], what: str) -> Student | str:
    if len(found) == 1:
        return found[0]
    if not found:
        return f"no student on the roster has {what}"
    return f"{len(found)} students on the roster have {what}: " + ", ".join(
        s.student_id for s in found)


class CanvasCollector(RosterCollector):
    """Canvas's file names: the Canvas user id (or, failing that, the name) -> a student."""

    def explain(self, path: str) -> dict | str:
        parsed = parse_canvas(path)
        if isinstance(parsed, str):
            return parsed
        if parsed.anonymous:
            return (f"anonymous (Canvas's anonymous grading, id {parsed.anonymous}): it cannot "
                    "be matched to a student; turn anonymous grading off to download names")
        student = _one(self.roster.find("canvas", parsed.user_id),
                       f"Canvas user id {parsed.user_id}")
        if isinstance(student, str):
            by_name = self.roster.find("canvas_name", parsed.name.lower())
            if len(by_name) == 1 and not by_name[0].canvas_user_id:
                student = by_name[0]
            else:
                student += f" (the file is named after {parsed.name!r})"
        if isinstance(student, str):
            return student
        return {"student_id": student.student_id, "file_id": parsed.original, "timestamp": None,
                "late": parsed.late, "lms_user": parsed.user_id, "lms_file": str(parsed.file_id),
                "order": parsed.file_id, "original": parsed.original}


class MoodleCollector(RosterCollector):
    """Moodle's folders: the participant id (through the grading worksheet, when there is
    one) or the full name -> a student; the worksheet also gives the submission's time."""

    worksheet_file = Unicode("", help="Moodle's grading worksheet of the assignment (CSV)").tag(
        config=True)
    timezone = Unicode("", help="the time zone the worksheet's times are in (default UTC)").tag(
        config=True)

    def __init__(self, *args, worksheet: Worksheet | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._worksheet = worksheet

    @property
    def worksheet(self) -> Worksheet | None:
        if self._worksheet is None and self.worksheet_file:
            from pipeline.untrusted_files import read_untrusted

            self._worksheet = read_worksheet(read_untrusted(self.worksheet_file, 64 * 2**20))
        return self._worksheet

    def explain(self, path: str) -> dict | str:
        parsed = parse_moodle(path)
        if isinstance(parsed, str):
            return parsed
        if parsed.kind != "file":
            return f"a Moodle {parsed.kind} entry, not a notebook file"
        row = (self.worksheet.by_participant().get(parsed.participant)
               if self.worksheet is not None else None)
        student: Student | str = f"no participant {parsed.participant} in the grading worksheet"
        if row is not None and row.get("Email address"):
            student = _one(self.roster.find("email", row["Email address"]),
                           f"the email {row['Email address']}")
        if isinstance(student, str):
            student = _one(self.roster.find("name", parsed.full_name),
                           f"the name {parsed.full_name!r}")
        if isinstance(student, str):
            return student
        timestamp = None
        if row is not None:
            try:
                timestamp = moodle_time(row.get("Last modified (submission)", ""),
                                        self.timezone or None)
            except (ValueError, OverflowError):
                timestamp = None
        return {"student_id": student.student_id, "file_id": PurePosixPath(parsed.original).name,
                "timestamp": timestamp, "late": False, "lms_user": parsed.participant,
                "lms_folder": parsed.folder, "order": 0, "original": parsed.original}


# ---- files the LMSs import ----------------------------------------------------------------

CANVAS_COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


def canvas_gradebook(columns: list[tuple[str, float]], rows: list[tuple[Student, list[str]]]
                     ) -> str:
    """Canvas's gradebook CSV: the five student columns, one column per assignment
    (``columns``: its header and points possible), the "Points Possible" row, one row per
    student. A blank grade leaves Canvas's as it is."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CANVAS_COLUMNS + [name for name, _ in columns])
    writer.writerow(["    Points Possible", "", "", "", ""] + [f"{p:g}" for _, p in columns])
    for student, grades in rows:
        writer.writerow([student.sortable_name, student.canvas_user_id, student.sis_user_id,
                         student.sis_login_id, student.section, *grades])
    return out.getvalue()

"""`make collect FROM=... [LMS=canvas|moodle|exchange|plain]`: lay out a class for grading.

    python -m pipeline.classroom.collect FROM [--lms KIND] [--assignment ID] [--worksheet CSV]
                                    [--timezone ZONE] [--into DIR] [--trust-timestamps]

``FROM`` is what the LMS gave: Canvas's or Moodle's "download all submissions" zip (or the
folder it was unpacked into), a JupyterHub's nbgrader exchange (``Exchange.root``), or a
plain folder with one folder per student (``<student>/<anything>.ipynb``, a ``timestamp.txt``
next to it if known). Each notebook goes to ``DIR/<student>/<id>/<id>.ipynb`` (default
``grader/submitted``, nbgrader's own ``submitted`` folder, which ``make grade`` reads), with
nbgrader's ``timestamp.txt`` when the LMS says when it came in; ``grader/lms/collected.csv``
records where each came from, for returning feedback and exporting grades
(``pipeline.grading.export``).

- **Who**: the LMS's names and ids are mapped to student ids through the roster
  (``pipeline.classroom.roster``), by the collector plugins of ``pipeline.classroom.lms`` (nbgrader's
  ``FileNameCollectorPlugin``): Canvas's user id, Moodle's participant id (through its grading
  worksheet, ``--worksheet``) or full name, the exchange's username.
- **Which assignment**: ``--assignment``, else the file's name (without the marks of copies:
  ``Copy of ...``, ``-1``, `` (2)``), else its cells: a notebook keeps the grade ids of the
  release it was made from.
- **When**: Canvas says only *that* a file came in late (``LATE``); it then counts as
  handed in just after the deadline (``grader/deadlines.csv``). Moodle's worksheet has each
  submission's time; the exchange has nbgrader's ``timestamp.txt``, written by the student's
  own ``nbgrader submit``: a submission the student's account made counts as handed in when
  its files were last written (their newest ctime, which no student can set back)
  whenever its ``timestamp.txt`` says earlier, with a note if by more than a few minutes. A
  plain folder's ``timestamp.txt`` was written by whoever handed the notebook in: it is
  ignored (with a note) unless ``--trust-timestamps`` says the times are the instructor's.
- **Whose, in an exchange**: the folder name ``<student>+<assignment>+<time>`` is written by
  whoever submitted. On a shared JupyterHub each student submits as their own Unix account,
  so a folder owned by an account other than the student it names, or than the one running
  collect (a single-user or test exchange, which only the instructor writes), is refused:
  another student submitted in that name (nbgrader's own ``check_owner`` only warns).
- **Several of one student**: the latest is kept (by time, then the LMS's own order: Canvas's
  file ids grow with every upload, then the copy marks); an earlier collect's newer notebook
  is never replaced by an older one.

Every file that could not be placed is reported by name, with why; so is every roster
student with nothing handed in. Nothing in ``FROM`` is trusted (``pipeline.untrusted_files``):
links and special files are never followed or opened, archive members that are links, have
absolute or ``..`` names or are encrypted are refused, and no size is trusted (each file is
read up to ``--max-notebook-mb``, whatever an archive says it holds).

A JupyterHub course goes through nbgrader's own commands: ``python -m pipeline.classroom.collect
--release EXCHANGE`` runs ``nbgrader release_assignment`` for each assignment; collecting
from an exchange copies its ``inbound`` folder (regular files only) to a scratch exchange and
runs ``nbgrader collect`` there, which keeps each student's latest submission with its
``timestamp.txt``.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import pwd
import re
import shutil
import stat
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

from pipeline.classroom import deadlines as deadlines_module
from pipeline.classroom import lms
from pipeline.classroom import roster as roster_module
from pipeline.classroom.submissions import STUDENT_ID
from pipeline.paths import GRADER, NOTEBOOKS, SCRATCH, assignment_ids, gradebook, submitted_folder
from pipeline.release.assignments import ensure_release
from pipeline.untrusted_files import (
    MAX_NOTEBOOK_BYTES,
    UntrustedFileError,
    describe,
    printable,
    read_untrusted,
    write_new_file,
)

SUBMITTED = GRADER / "submitted"
LMS_FOLDER = GRADER / "lms"
MANIFEST = LMS_FOLDER / "collected.csv"
MANIFEST_COLUMNS = ["student_id", "assignment", "lms", "source", "original", "lms_name",
                    "lms_user", "lms_file", "lms_folder", "timestamp", "late", "order"]
MAX_ENTRIES = 100_000  # members of one archive, files of one folder tree
COURSE_ID = "attention-course"  # grader/nbgrader_config.py's CourseDirectory.course_id
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def worksheet_path(assignment: str) -> Path:
    """Where collect keeps the Moodle grading worksheet of ``assignment``."""
    return LMS_FOLDER / "moodle" / f"{assignment}-worksheet.csv"


# ---- reading what the LMS gave, trusting nothing ------------------------------------------

@dataclass
class Entry:
    """A file in an archive or folder: its path there, and how to read it (bounded)."""

    name: str
    read: Callable[[], bytes]
    refused: str = ""  # why it is never read


def _zip_entries(path: Path, max_bytes: int) -> Iterator[Entry]:
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        if len(members) > MAX_ENTRIES:
            raise UntrustedFileError(f"{path} holds {len(members)} members, over the "
                                     f"{MAX_ENTRIES} limit")
        for info in members:
            name = info.filename.replace("\\", "/")
            if name.endswith("/"):
                continue
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            parts = PurePosixPath(name).parts
            why = ""
            if name.startswith("/") or ".." in parts or re.match(r"^[A-Za-z]:", name):
                why = "has an absolute or '..' path in the archive"
            elif kind and kind != stat.S_IFREG:
                why = f"is {describe(mode)} in the archive, not a file (never followed)"
            elif info.flag_bits & 0x1:
                why = "is encrypted"

            def read(info: zipfile.ZipInfo = info, name: str = name) -> bytes:
                try:  # the size the archive states is not trusted: read just past the limit
                    with archive.open(info) as handle:
                        data = handle.read(max_bytes + 1)
                except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError,
                        RuntimeError) as error:
                    raise UntrustedFileError(f"{name} cannot be unpacked ({error})") from None
                if len(data) > max_bytes:
                    raise UntrustedFileError(f"{name} is over the {max_bytes / 2**20:.1f} MiB "
                                             "limit")
                return data

            yield Entry(name, read, why)


def _folder_entries(root: Path, max_bytes: int) -> Iterator[Entry]:
    count = 0
    stack = [PurePosixPath()]
    while stack:
        relative = stack.pop()
        try:
            names = sorted(os.listdir(root / relative))
        except OSError as error:
            yield Entry(str(relative), lambda: b"", f"cannot be read ({error.strerror})")
            continue
        for name in names:
            count += 1
            if count > MAX_ENTRIES:
                raise UntrustedFileError(f"{root} holds over {MAX_ENTRIES} files")
            path = relative / name
            mode = os.lstat(root / path).st_mode
            if stat.S_ISDIR(mode):
                stack.append(path)
            elif stat.S_ISREG(mode):
                yield Entry(str(path), lambda p=path: read_untrusted(root / p, max_bytes,
                                                                        base=root))
            else:
                yield Entry(str(path), lambda: b"", f"is {describe(mode)}, not a file "
                            "(links are never followed)")


def entries(source: Path, max_bytes: int) -> Iterator[Entry]:
    """Every file of the zip archive or folder ``source``."""
    mode = os.lstat(source).st_mode
    if stat.S_ISLNK(mode):
        raise UntrustedFileError(f"{source} is a symbolic link (links are never followed)")
    if stat.S_ISDIR(mode):
        yield from _folder_entries(source, max_bytes)
    elif stat.S_ISREG(mode) and zipfile.is_zipfile(source):
        yield from _zip_entries(source, max_bytes)
    else:
        raise UntrustedFileError(f"{source} is neither a folder nor a zip archive")


# ---- which assignment a notebook is ---------------------------------------------------------

def _key(name: str) -> str:
    return re.sub(r"[\s_-]+", "_", name.strip().lower())


def release_grade_ids(ids: list[str] | None = None) -> dict[str, set[str]]:
    """assignment id -> the grade ids of its released notebook (``notebooks/<id>.ipynb``)."""
    found = {}
    for assignment in ids or assignment_ids():
        try:
            notebook = json.loads((NOTEBOOKS / f"{assignment}.ipynb").read_text())
        except (OSError, ValueError):
            continue
        found[assignment] = {cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
                             for cell in notebook.get("cells", [])} - {None}
    return found


def notebook_grade_ids(data: bytes) -> set[str] | None:
    """The grade ids in a notebook's cells, or None when it is not a notebook at all."""
    try:
        notebook = json.loads(data.decode("utf-8"))
        cells = notebook["cells"]
        return {str(cell["metadata"]["nbgrader"]["grade_id"]) for cell in cells
                if isinstance(cell, dict) and isinstance(cell.get("metadata"), dict)
                and isinstance(cell["metadata"].get("nbgrader"), dict)
                and "grade_id" in cell["metadata"]["nbgrader"]}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError):
        return None


def by_cells(grade_ids: set[str], releases: dict[str, set[str]]) -> str | None:
    """The assignment whose release shares most of its grade ids with the notebook (at
    least half), or None."""
    scores = sorted(((len(grade_ids & ids) / len(ids), assignment)
                     for assignment, ids in releases.items() if ids), reverse=True)
    if not scores or scores[0][0] < 0.5 or (len(scores) > 1 and scores[1][0] == scores[0][0]):
        return None
    return scores[0][1]


def identify(original: str, data: bytes, releases: dict[str, set[str]],
             forced: str | None) -> tuple[str | None, str]:
    """(assignment, a note for the report) of a notebook named ``original``."""
    named = {_key(a): a for a in releases}.get(_key(lms.plain_stem(original)))
    grade_ids = notebook_grade_ids(data)
    cells = by_cells(grade_ids, releases) if grade_ids else None
    if forced:
        if cells and cells != forced:
            return forced, f"its cells are {cells}'s: is it the right notebook?"
        return forced, ""
    if named:
        return named, "" if grade_ids is not None else "not a readable notebook (graded as is)"
    if cells:
        return cells, f"named {original!r}, recognised as {cells} by its cells"
    if grade_ids is None:
        return None, "not a notebook (no cells in JSON)"
    return None, "its name and cells match no assignment (use ASSIGNMENT=<id>)"


# ---- candidates, the report -----------------------------------------------------------------

@dataclass
class Candidate:
    student: str
    assignment: str
    data: bytes
    source: str  # for the report: where it is in FROM
    lms: str
    timestamp: datetime | None = None
    order: int = 0  # the LMS's own order (Canvas's file ids)
    copy: int = 0
    info: dict = field(default_factory=dict)
    note: str = ""

    def rank(self) -> tuple:
        return (self.timestamp or EPOCH, self.order, self.copy, self.source)


@dataclass
class Report:
    placed: list[Candidate] = field(default_factory=list)
    kept_earlier: list[tuple[Candidate, str]] = field(default_factory=list)
    superseded: list[tuple[Candidate, Candidate]] = field(default_factory=list)
    not_placed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def refuse(self, source: str, why: str) -> None:
        self.not_placed.append((printable(source), why))


def _canvas_late_time(candidate: Candidate, dues: dict, report: Report) -> None:
    """Canvas says only that it is late: count it as handed in just after the deadline."""
    deadline = dues.get(candidate.assignment)
    if deadline is None:
        report.notes.append(f"{candidate.source}: Canvas marked it late, but "
                            f"grader/deadlines.csv has no deadline for {candidate.assignment}: "
                            "no penalty")
        return
    candidate.timestamp = deadline.due.astimezone(timezone.utc) + timedelta(seconds=1)
    candidate.note = ("Canvas marked it late; its download does not say when: counted as "
                      "handed in just after the deadline")


def gather(source: Path, kind: str, *, roster: roster_module.Roster | None,
           assignment: str | None, worksheet: lms.Worksheet | None, zone: str | None,
           max_bytes: int, report: Report, trust_timestamps: bool = False) -> list[Candidate]:
    """The notebooks in a Canvas or Moodle download or a plain folder, as candidates; a
    plain folder's ``timestamp.txt`` only with ``trust_timestamps``."""
    releases = release_grade_ids()
    dues = deadlines_module.load()
    zones = {a: d.due.tzinfo for a, d in dues.items()}
    if kind in ("canvas", "moodle") and roster is None:
        raise SystemExit(f"{roster_module.ROSTER} does not exist: the roster maps {kind}'s "
                         "names to student ids (see pipeline/classroom/roster.py for its columns)")
    collector: lms.RosterCollector | None = None
    if kind == "canvas":
        collector = lms.CanvasCollector(roster=roster)
    elif kind == "moodle":
        collector = lms.MoodleCollector(roster=roster, worksheet=worksheet, timezone=zone or "")
    found = []
    for entry in entries(source, max_bytes):
        where = f"{source.name}:{entry.name}"
        base = PurePosixPath(entry.name).name
        if base == "timestamp.txt" and kind == "plain":
            continue
        if entry.refused:
            report.refuse(where, entry.refused)
            continue
        info = collector.explain(entry.name) if collector else _plain(entry.name, roster)
        if isinstance(info, str):
            report.refuse(where, info)
            continue
        if PurePosixPath(info["original"]).suffix.lower() != ".ipynb":
            suffix = PurePosixPath(info["original"]).suffix or "no extension"
            report.refuse(where, f"not a notebook ({suffix}); students hand in the .ipynb file")
            continue
        try:
            data = entry.read()
        except OSError as error:
            report.refuse(where, str(error))
            continue
        which, note = identify(info["original"], data, releases, assignment)
        if which is None:
            report.refuse(where, note)
            continue
        info["lms_name"] = base  # the file's name in the download: Canvas takes it back
        candidate = Candidate(info["student_id"], which, data, where, kind,
                              info.get("timestamp"), info.get("order", 0),
                              lms.copy_number(info["original"]), info, note)
        if kind == "plain":
            candidate.timestamp = _plain_timestamp(source, entry.name, max_bytes, report, where,
                                                   trust_timestamps)
        elif candidate.timestamp is not None and candidate.timestamp.tzinfo is None:
            # a worksheet's time, shown in the course's zone: the deadline's, unless given
            candidate.timestamp = candidate.timestamp.replace(
                tzinfo=zones.get(which) or timezone.utc)
        if info.get("late") and candidate.timestamp is None:
            _canvas_late_time(candidate, dues, report)
        found.append(candidate)
    return found


def _plain(name: str, roster: roster_module.Roster | None) -> dict | str:
    """A plain folder: ``<student>/<...>.ipynb``; the student by id, email or name."""
    parts = PurePosixPath(name).parts
    if len(parts) < 2:
        return "not in a folder named after a student (<student>/<notebook>.ipynb)"
    who = parts[0]
    if roster is None:
        if not STUDENT_ID.match(who):
            return f"folder {who!r} is not a student id (letters, digits, '_', '.', '-')"
        student = who
    else:
        found = (roster.find("id", who) or roster.find("email", who)
                 or roster.find("name", who))
        if len(found) != 1:
            return (f"{who!r} is not on the roster" if not found else
                    f"{who!r} names {len(found)} students of the roster")
        student = found[0].student_id
    return {"student_id": student, "file_id": parts[-1], "timestamp": None, "late": False,
            "lms_user": who, "order": 0, "original": parts[-1]}


def _plain_timestamp(source: Path, name: str, max_bytes: int, report: Report,
                     where: str, trust: bool) -> datetime | None:
    """nbgrader's ``timestamp.txt`` next to a notebook of a plain folder, if there is one and
    the instructor said its times are to be believed (``trust``)."""
    stamp = PurePosixPath(name).parent / "timestamp.txt"
    if not source.is_dir() or not os.path.lexists(source / stamp):
        return None
    if not trust:  # whoever handed the notebook in could write it, with any time in it
        report.notes.append(f"{where}: the timestamp.txt next to it was ignored: whoever "
                            "handed the notebook in may have written it; collect with "
                            "--trust-timestamps when the folder's times are yours (e.g. a "
                            "copy of nbgrader's own submitted/ folder)")
        return None
    try:
        return deadlines_module.read_timestamp(
            read_untrusted(source / stamp, 4096, base=source).decode("utf-8", "replace"))
    except (OSError, ValueError, OverflowError) as error:
        report.notes.append(f"{where}: its timestamp.txt was not used ({error})")
        return None


# ---- a JupyterHub's nbgrader exchange -------------------------------------------------------

INBOUND_NAME = re.compile(r"^(?P<user>[^+]+)\+(?P<assignment>[^+]+)\+(?P<stamp>[^+]+)(\+.*)?$")
CLOCK_SLACK = timedelta(minutes=5)  # timestamp.txt and the files' ctimes may differ this much


def _account(uid: int) -> str:
    """The user name of ``uid`` (``uid N`` where it has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _collector() -> int:
    """The user id running collect."""
    return os.geteuid()


def _submitter(folder: Path, user: str) -> str:
    """Who made the inbound folder ``folder`` that names ``user``: "student" (``user``'s own
    account, as on a JupyterHub where each student submits as themselves), "collector"
    (the account running collect: a single-user or test exchange that only it writes to),
    else why it is refused: on a shared hub anyone can write a folder under any name."""
    uid = os.lstat(folder).st_uid
    owner = _account(uid)
    if owner == user:
        return "student"
    if uid == _collector():
        return "collector"
    return (f"made by {owner!r}, not by {user!r} whose name it bears (nor by "
            f"{_account(_collector())!r}, who runs collect): a submission in another "
            "student's name")


def _newest_change(folder: Path, depth: int = 0) -> datetime | None:
    """The latest ctime of the regular files under ``folder`` (never following a link): when
    they were last written, which no student can set back."""
    newest = None
    for name in os.listdir(folder):
        info = os.lstat(folder / name)
        if stat.S_ISDIR(info.st_mode) and depth < 4:
            found = _newest_change(folder / name, depth + 1)
        elif stat.S_ISREG(info.st_mode):
            found = datetime.fromtimestamp(info.st_ctime, timezone.utc)
        else:
            continue
        if found is not None and (newest is None or found > newest):
            newest = found
    return newest


def _submission_time(stamp: datetime | None, changed: datetime | None, where: str,
                     report: Report) -> datetime | None:
    """When a student's own submission came in: its ``timestamp.txt`` (``stamp``, which the
    student wrote), but never before its files were last written (``changed``)."""
    if changed is None:
        return stamp
    if stamp is None or changed - stamp > CLOCK_SLACK:
        said = _utc_words(stamp) if stamp else "no time"
        report.notes.append(f"{where}: its timestamp.txt says {said}, but its files were "
                            f"written at {_utc_words(changed)}: counted as handed in then")
    return changed if stamp is None or changed > stamp else stamp


def _utc_words(when: datetime) -> str:
    """``when`` as the report shows times."""
    return f"{when.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def _copy_tree(source: Path, target: Path, max_bytes: int, report: Report, where: str,
               depth: int = 0) -> None:
    """Copy the regular files of ``source`` (never a link) to ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in sorted(os.listdir(source)):
        mode = os.lstat(source / name).st_mode
        if stat.S_ISDIR(mode) and depth < 4:
            _copy_tree(source / name, target / name, max_bytes, report, f"{where}/{name}",
                       depth + 1)
        elif stat.S_ISREG(mode):
            try:
                write_new_file(target / name, read_untrusted(source / name, max_bytes,
                                                             base=source))
            except OSError as error:
                report.refuse(f"{where}/{name}", str(error))
        else:
            report.refuse(f"{where}/{name}", f"is {describe(mode)}, not a file "
                          "(links are never followed)")


def release_to_exchange(root: Path, ids: list[str]) -> list[str]:
    """``nbgrader release_assignment`` of each assignment into the exchange ``root``."""
    from pipeline.nbgrader_cli import nbgrader

    ensure_release()
    root.mkdir(parents=True, exist_ok=True)
    done = []
    for assignment in ids:
        nbgrader("release_assignment", assignment, f"--Exchange.root={root}", "--force")
        done.append(assignment)
    return done


def gather_exchange(root: Path, *, roster: roster_module.Roster | None, assignment: str | None,
                    max_bytes: int, report: Report) -> list[Candidate]:
    """The latest submission of each student in the exchange ``root``, by nbgrader collect."""
    from pipeline.nbgrader_cli import nbgrader

    inbound = root / COURSE_ID / "inbound"
    if not inbound.is_dir() or inbound.is_symlink():
        raise SystemExit(f"{inbound} is not a folder: FROM must be the exchange's root "
                         f"(nbgrader's Exchange.root), holding {COURSE_ID}/inbound")
    ensure_release()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="collect-", dir=SCRATCH))
    try:
        copy = scratch / "exchange" / COURSE_ID / "inbound"
        copy.mkdir(parents=True)
        submissions: dict[tuple[str, str], list[tuple[str, str]]] = {}
        changed: dict[str, datetime | None] = {}  # inbound folder -> its files' newest ctime
        for name in sorted(os.listdir(inbound)):
            where = f"inbound/{name}"
            match = INBOUND_NAME.match(name)
            mode = os.lstat(inbound / name).st_mode
            if not stat.S_ISDIR(mode):
                report.refuse(where, f"is {describe(mode)}, not a submission folder")
                continue
            if not match or (assignment and match["assignment"] != assignment):
                if not match:
                    report.refuse(where, "not named as nbgrader names submissions "
                                  "(<student>+<assignment>+<time>)")
                continue
            if match["assignment"] not in assignment_ids():
                report.refuse(where, f"unknown assignment {match['assignment']!r}")
                continue
            try:  # (a student can make their own folder unreadable: that costs only them)
                submitter = _submitter(inbound / name, match["user"])
                if submitter not in ("student", "collector"):
                    report.refuse(where, submitter)
                    continue
                if submitter == "student":  # its timestamp.txt is the student's word:
                    changed[name] = _newest_change(inbound / name)  # the originals' ctimes
                _copy_tree(inbound / name, copy / name, max_bytes, report, where)
            except OSError as error:
                report.refuse(where, f"cannot be read ({error.strerror or error})")
                shutil.rmtree(copy / name, ignore_errors=True)
                continue
            submissions.setdefault((match["user"], match["assignment"]), []).append(
                (match["stamp"], name))
        course = scratch / "course"
        course.mkdir()
        shutil.copy2(gradebook(GRADER), gradebook(course))
        for which in sorted({a for _, a in submissions}):
            nbgrader("collect", which, f"--Exchange.root={scratch / 'exchange'}",
                     "--ExchangeCollect.check_owner=False", course_root=course)
        releases = release_grade_ids()
        found = []
        for (user, which), stamps in sorted(submissions.items()):
            latest = max(stamps, key=lambda s: deadlines_module.read_timestamp(s[0]))
            for _stamp, name in stamps:
                if name != latest[1]:
                    report.notes.append(f"inbound/{name}: an earlier submission of {user}; "
                                        f"nbgrader collect kept inbound/{latest[1]}")
            folder = submitted_folder(course, user, which)
            where = f"inbound/{latest[1]}"
            student = user
            if roster is not None:
                match = roster.find("id", user) or roster.find("email", user)
                if len(match) != 1:
                    report.refuse(where, f"{user!r} is not on the roster")
                    continue
                student = match[0].student_id
            elif not STUDENT_ID.match(user):
                report.refuse(where, f"{user!r} is not a student id")
                continue
            try:
                stamp = deadlines_module.read_timestamp(
                    read_untrusted(folder / "timestamp.txt", 4096, base=course).decode())
            except (OSError, ValueError, OverflowError):
                stamp = None
            if latest[1] in changed:
                stamp = _submission_time(stamp, changed[latest[1]], where, report)
            notebooks = sorted(n for n in os.listdir(folder) if n.endswith(".ipynb")) \
                if folder.is_dir() else []
            if not notebooks:
                report.refuse(where, "holds no notebook")
                continue
            preferred = [n for n in notebooks if n == f"{which}.ipynb"] or notebooks
            for name in notebooks:
                if name not in preferred[:1]:
                    report.refuse(f"{where}/{name}", f"another notebook of {user}'s "
                                  f"submission; {preferred[0]} is the one graded")
            name = preferred[0]
            try:
                data = read_untrusted(folder / name, max_bytes, base=course)
            except OSError as error:
                report.refuse(f"{where}/{name}", str(error))
                continue
            _, note = identify(name, data, releases, which)
            if name != f"{which}.ipynb" and not note:
                note = f"named {name!r}"
            found.append(Candidate(student, which, data, f"{where}/{name}", "exchange", stamp,
                                   0, 0, {"lms_user": user, "original": name,
                                          "lms_folder": latest[1]}, note))
        return found
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---- placing --------------------------------------------------------------------------------

def read_manifest() -> dict[tuple[str, str], dict[str, str]]:
    """(student, assignment) -> where its placed notebook came from."""
    if not MANIFEST.exists():
        return {}
    text = read_untrusted(MANIFEST, 64 * 2**20).decode("utf-8")
    return {(row["student_id"], row["assignment"]): row for row in csv.DictReader(io.StringIO(text))}


def _write_manifest(rows: dict[tuple[str, str], dict[str, str]]) -> None:
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    writer = csv.DictWriter(out, MANIFEST_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for key in sorted(rows):
        writer.writerow(rows[key])
    write_new_file(MANIFEST, out.getvalue().encode())


def _real_folder(path: Path) -> None:
    """Make ``path`` (``<into>/<student>/<id>``) a real folder, replacing a link or file in
    the place of it or of its student's folder (never following one); ``<into>`` is yours."""
    for parent in (path.parent, path):
        if os.path.lexists(parent) and not stat.S_ISDIR(os.lstat(parent).st_mode):
            os.unlink(parent)
        parent.mkdir(exist_ok=True)


def _newer(candidate: Candidate, previous: dict[str, str]) -> bool:
    """Whether ``candidate`` is at least as new as what an earlier collect placed."""
    try:
        before = datetime.fromisoformat(previous["timestamp"]) if previous.get("timestamp") \
            else None
    except ValueError:
        before = None
    if candidate.timestamp is not None and before is not None:
        return candidate.timestamp >= before
    if previous.get("lms") == candidate.lms and previous.get("order", "").isdigit():
        return candidate.order >= int(previous["order"])
    return True


def place(candidates: list[Candidate], into: Path, report: Report) -> None:
    """Put the latest candidate of each student and assignment into ``into``."""
    best: dict[tuple[str, str], Candidate] = {}
    for candidate in candidates:
        key = (candidate.student, candidate.assignment)
        other = best.get(key)
        if other is None or candidate.rank() > other.rank():
            if other is not None:
                report.superseded.append((other, candidate))
            best[key] = candidate
        else:
            report.superseded.append((candidate, other))
    manifest = read_manifest()
    for key, candidate in sorted(best.items()):
        previous = manifest.get(key)
        folder = into / candidate.student / candidate.assignment
        if previous is not None and (folder / f"{candidate.assignment}.ipynb").exists() \
                and not _newer(candidate, previous):
            report.kept_earlier.append((candidate, previous.get("source", "")))
            continue
        _real_folder(folder)
        for name in os.listdir(folder):  # the folder holds what this collect places, only
            path = folder / name
            if stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path)
            else:
                path.unlink()
        write_new_file(folder / f"{candidate.assignment}.ipynb", candidate.data)
        if candidate.timestamp is not None:
            write_new_file(folder / "timestamp.txt",
                           deadlines_module.timestamp_text(candidate.timestamp).encode())
        info = candidate.info
        manifest[key] = {
            "student_id": candidate.student, "assignment": candidate.assignment,
            "lms": candidate.lms, "source": candidate.source,
            "original": info.get("original", ""), "lms_name": info.get("lms_name", ""),
            "lms_user": info.get("lms_user", ""),
            "lms_file": info.get("lms_file", ""), "lms_folder": info.get("lms_folder", ""),
            "timestamp": candidate.timestamp.isoformat() if candidate.timestamp else "",
            "late": "yes" if info.get("late") else "", "order": str(candidate.order)}
        report.placed.append(candidate)
    _write_manifest(manifest)


# ---- the command ----------------------------------------------------------------------------

def detect(source: Path) -> str:
    """Which LMS ``source`` came from, by its names."""
    if source.is_dir() and (source / COURSE_ID / "inbound").is_dir():
        return "exchange"
    names = [e.name for e in itertools.islice(entries(source, 1), 200)]
    if any(lms.MOODLE_PART.match(part) for name in names for part in PurePosixPath(name).parts):
        return "moodle"
    if names and sum(not isinstance(lms.parse_canvas(n), str) for n in names) > len(names) / 2:
        return "canvas"
    return "plain"


def print_report(report: Report, roster: roster_module.Roster | None, into: Path,
                 assignments: set[str]) -> None:
    for candidate in report.placed:
        when = (f", handed in {candidate.timestamp.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"
                if candidate.timestamp else "")
        note = f"  ({candidate.note})" if candidate.note else ""
        print(f"placed      {candidate.student}/{candidate.assignment}  <- "
              f"{printable(candidate.source)}{when}{note}")
    for old, new in report.superseded:
        print(f"superseded  {printable(old.source)}: {old.student} handed in "
              f"{printable(new.source)} later")
    for candidate, source in report.kept_earlier:
        print(f"kept        {candidate.student}/{candidate.assignment}: an earlier collect placed "
              f"a newer notebook ({printable(source)}); {printable(candidate.source)} not used")
    for note in report.notes:
        print(f"note        {printable(note)}")
    for source, why in report.not_placed:
        print(f"NOT PLACED  {source}: {why}")
    placed = {(c.student, c.assignment) for c in report.placed}
    print(f"\n{len(report.placed)} notebooks placed in {into}/<student>/<id>/<id>.ipynb; "
          f"{len(report.not_placed)} files not placed (listed above).")
    if roster is not None and assignments:
        manifest = read_manifest()
        for assignment in sorted(assignments):
            nothing = [s.student_id for s in roster.students
                       if (s.student_id, assignment) not in placed
                       and (s.student_id, assignment) not in manifest]
            if nothing:
                print(f"Nothing collected yet for {assignment} from {len(nothing)} of "
                      f"{len(roster.students)} roster students: {', '.join(nothing)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the LMS's download (zip or folder) or the "
                        "exchange's root")
    parser.add_argument("--lms", choices=lms.LMS_KINDS, default=None,
                        help="where it comes from (default: recognised by its file names)")
    parser.add_argument("--assignment", default=None, help="the assignment every notebook "
                        "in it belongs to (default: by each file's name, else its cells)")
    parser.add_argument("--worksheet", type=Path, default=None,
                        help="Moodle: the assignment's grading worksheet (CSV): participants' "
                             "emails and submission times; kept for make export")
    parser.add_argument("--timezone", default=None,
                        help="Moodle: the time zone of the worksheet's times (default: the "
                             "deadline's)")
    parser.add_argument("--into", type=Path, default=SUBMITTED,
                        help="where the class is laid out (default: %(default)s)")
    parser.add_argument("--max-notebook-mb", type=float, default=MAX_NOTEBOOK_BYTES / 2**20)
    parser.add_argument("--trust-timestamps", action="store_true",
                        help="plain: believe the timestamp.txt next to each notebook (only when "
                             "you wrote them, e.g. a copy of nbgrader's own submitted/ folder; "
                             "by default they are ignored, since whoever handed a notebook in "
                             "could write one)")
    parser.add_argument("--release", action="store_true", help="release the assignments "
                        "(all, or --assignment) into the exchange SOURCE instead, with "
                        "nbgrader release_assignment")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ids = [args.assignment] if args.assignment else assignment_ids()
    if args.assignment and args.assignment not in assignment_ids():
        raise SystemExit(f"unknown assignment {args.assignment!r}; expected one of "
                         f"{', '.join(assignment_ids())}")
    if args.release:
        for assignment in release_to_exchange(args.source.resolve(), ids):
            print(f"released {assignment} to {args.source}/{COURSE_ID}/outbound/{assignment}")
        return 0
    if not os.path.lexists(args.source):
        raise SystemExit(f"{args.source} does not exist")
    roster = roster_module.load()
    kind = args.lms or detect(args.source)
    max_bytes = int(args.max_notebook_mb * 2**20)
    report = Report()
    worksheet = None
    if args.worksheet is not None:
        worksheet = lms.read_worksheet(read_untrusted(args.worksheet, 64 * 2**20))
    zone = args.timezone
    print(f"Collecting {args.source} ({kind}) into {args.into}")
    if kind == "exchange":
        candidates = gather_exchange(args.source, roster=roster, assignment=args.assignment,
                                     max_bytes=max_bytes, report=report)
    else:
        candidates = gather(args.source, kind, roster=roster, assignment=args.assignment,
                            worksheet=worksheet, zone=zone, max_bytes=max_bytes, report=report,
                            trust_timestamps=args.trust_timestamps)
    args.into.mkdir(parents=True, exist_ok=True)
    place(candidates, args.into, report)
    assignments = {c.assignment for c in candidates}
    if worksheet is not None:
        if len(assignments) != 1:
            raise SystemExit("a grading worksheet belongs to one assignment: give ASSIGNMENT=<id>")
        target = worksheet_path(next(iter(assignments)))
        target.parent.mkdir(parents=True, exist_ok=True)
        write_new_file(target, read_untrusted(args.worksheet, 64 * 2**20))
        print(f"kept Moodle's grading worksheet as {target}")
    print_report(report, roster, args.into, assignments)
    return 0


if __name__ == "__main__":
    sys.exit(main())

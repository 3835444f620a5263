"""The class list: ``grader/roster.csv``, one row per student.

Columns (a header row, in any order; only ``student_id`` is required)::

    student_id,first_name,last_name,email,canvas_user_id,sis_user_id,sis_login_id,section

- ``student_id``: the id everything of the course uses (folders, results, the gradebook):
  letters, digits, ``_ . -``. A JupyterHub course's usernames are these ids.
- ``first_name``, ``last_name``: Moodle's download names a student "First Last", Canvas's
  "lastfirst"; both are matched against these when no LMS id says more.
- ``email``: Moodle's grading worksheet names students by email.
- ``canvas_user_id``, ``sis_user_id``, ``sis_login_id``, ``section``: Canvas's ids (its
  download names each file after the Canvas user id) and the columns of its gradebook.

The roster is loaded into nbgrader's gradebook (``Student``: names, email, and the Canvas id
as ``lms_user_id``) before every grading run, and every table after grading has a row for
every student on it: ``missing`` where nothing came in (:func:`with_missing`). Without a
roster, the tables list the students who handed something in, as before.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.classroom.submissions import STUDENT_ID
from pipeline.paths import GRADER
from pipeline.untrusted_files import read_untrusted

ROSTER = GRADER / "roster.csv"
COLUMNS = ("student_id", "first_name", "last_name", "email", "canvas_user_id", "sis_user_id",
           "sis_login_id", "section")
MISSING = "missing"  # the status of a roster student with nothing handed in


class RosterError(ValueError):
    """The roster file cannot be used as it is (the message says where and why)."""


@dataclass(frozen=True)
class Student:
    student_id: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    canvas_user_id: str = ""
    sis_user_id: str = ""
    sis_login_id: str = ""
    section: str = ""

    @property
    def full_name(self) -> str:
        """"First Last", as Moodle shows it (the id when the roster has no name)."""
        return " ".join(part for part in (self.first_name, self.last_name) if part) \
            or self.student_id

    @property
    def sortable_name(self) -> str:
        """"Last, First", as Canvas's gradebook shows it."""
        if self.last_name and self.first_name:
            return f"{self.last_name}, {self.first_name}"
        return self.full_name


def name_key(name: str) -> str:
    """A name compared loosely: accents, case, ``_`` and spacing do not matter."""
    decomposed = unicodedata.normalize("NFKD", name.replace("_", " "))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


def canvas_name(student: Student) -> str:
    """The name Canvas puts at the start of a download's file names: the sortable name,
    lower case, with everything but letters, digits and ``_`` left out."""
    name = re.sub(r"_(\d+)_", r"\1", student.sortable_name).lower()
    return re.sub(r"[^\w]", "", name)


@dataclass
class Roster:
    students: list[Student]
    path: Path | None = None
    _by: dict[str, dict[str, list[Student]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        keys = {"id": lambda s: s.student_id, "canvas": lambda s: s.canvas_user_id,
                "email": lambda s: s.email.casefold(), "name": lambda s: name_key(s.full_name),
                "canvas_name": canvas_name,
                "sis_login": lambda s: s.sis_login_id.casefold()}
        for kind, key in keys.items():
            index: dict[str, list[Student]] = {}
            for student in self.students:
                value = key(student)
                if value:
                    index.setdefault(value, []).append(student)
            self._by[kind] = index

    def ids(self) -> list[str]:
        return [s.student_id for s in self.students]

    def get(self, student_id: str) -> Student | None:
        found = self._by["id"].get(student_id, [])
        return found[0] if found else None

    def find(self, kind: str, value: str) -> list[Student]:
        """The students whose ``kind`` (id, canvas, email, name, canvas_name, sis_login) is
        ``value``: none, one, or several when the roster repeats it (names may repeat)."""
        if kind == "name":
            value = name_key(value)
        elif kind in ("email", "sis_login"):
            value = value.casefold()
        return list(self._by[kind].get(value, [])) if value else []


def parse(text: str, path: Path | None = None) -> Roster:
    """A roster from CSV text; :class:`RosterError` names the line of every problem."""
    where = str(path or "roster")
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [name.strip() for name in reader.fieldnames or []]
    if "student_id" not in header:
        raise RosterError(f"{where}: the first line must name the columns, student_id among "
                          f"them (known: {', '.join(COLUMNS)})")
    unknown = [name for name in header if name not in COLUMNS]
    if unknown:
        raise RosterError(f"{where}: unknown column(s) {', '.join(unknown)}; known: "
                          f"{', '.join(COLUMNS)}")
    students, problems, seen = [], [], {}
    for line, row in enumerate(reader, start=2):
        values = {key.strip(): (value or "").strip() for key, value in row.items()
                  if key is not None}
        if not any(values.values()):
            continue
        student = Student(**{name: values.get(name, "") for name in COLUMNS})
        if not STUDENT_ID.match(student.student_id):
            problems.append(f"line {line}: student_id {student.student_id!r} must use letters, "
                            "digits, '_', '.' or '-' only")
            continue
        for kind, value in (("student_id", student.student_id),
                            ("canvas_user_id", student.canvas_user_id),
                            ("email", student.email.casefold())):
            if value and (kind, value) in seen:
                problems.append(f"line {line}: {kind} {value!r} is already on line "
                                f"{seen[kind, value]}")
            seen.setdefault((kind, value), line)
        for kind in ("first_name", "last_name", "email"):
            # formgrader's template writes names into its pages unescaped: a name with
            # markup (an LMS lets students edit their own) would run in the instructor's
            # browser
            if any(char in getattr(student, kind) for char in "<>"):
                problems.append(f"line {line}: {kind} {getattr(student, kind)!r} holds '<' or "
                                "'>': no name of a person does, and formgrader would show it "
                                "as markup")
        if student.canvas_user_id and not student.canvas_user_id.isdigit():
            problems.append(f"line {line}: canvas_user_id {student.canvas_user_id!r} must be "
                            "a number (Canvas's user id)")
        students.append(student)
    if problems:
        raise RosterError(f"{where}:\n  " + "\n  ".join(problems))
    return Roster(students, path)


def load(path: Path | None = None) -> Roster | None:
    """The course's roster, or None when there is none."""
    path = ROSTER if path is None else path
    if not path.exists():
        return None
    return parse(read_untrusted(path, 16 * 2**20).decode("utf-8"), path)


def load_into_gradebook(roster: Roster, db_url: str) -> None:
    """Every roster student becomes (or updates) a student of nbgrader's gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        for s in roster.students:
            gb.update_or_create_student(s.student_id, first_name=s.first_name or None,
                                        last_name=s.last_name or None, email=s.email or None,
                                        lms_user_id=s.canvas_user_id or None)


def missing_result(student: str, assignment: str) -> dict:
    """The result of a roster student who handed nothing in for ``assignment``."""
    return {"student": student, "assignment": assignment, "status": MISSING, "cells": [],
            "log": ""}


def with_missing(results: list[dict], roster: Roster | None) -> list[dict]:
    """``results`` plus a ``missing`` row for every roster student and assignment of the
    results that has none; sorted by student and assignment."""
    if roster is None:
        return list(results)
    assignments = sorted({r["assignment"] for r in results})
    have = {(r["student"], r["assignment"]) for r in results}
    extra = [missing_result(student, assignment) for student in roster.ids()
             for assignment in assignments if (student, assignment) not in have]
    return sorted([*results, *extra], key=lambda r: (r["student"], r["assignment"]))

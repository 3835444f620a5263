"""Deadlines and the late policy.

``grader/deadlines.csv`` has one row per assignment (a header row, columns in any order)::

    assignment,due,canvas_assignment_id,title
    01_gain_multiplication,2025-03-07T23:59:00+01:00,48213,Tutorial 1: gains

- ``due``: ISO 8601 with its UTC offset (``2025-03-07T23:59:00+01:00``) or a time and a zone
  name (``2025-03-07 23:59 Europe/Berlin``); a time without a zone is refused.
- ``canvas_assignment_id``, ``title`` (optional): the assignment's id and name in Canvas, for
  the column ``title (id)`` of the Canvas gradebook file (``pipeline.grading.export``).

The deadlines go into nbgrader's gradebook (each assignment's ``duedate``) before every
grading run. nbgrader then does the rest: autograde reads each submission's
``timestamp.txt`` (written by ``make collect`` from the LMS, or by nbgrader's own exchange),
and its ``AssignLatePenalties`` step asks the late-submission plugin that
``grader/nbgrader_config.py`` names for the penalty (:class:`PercentPerDay` as shipped). The
feedback page shows the penalty (nbgrader's template) and, at the top, when the notebook came
in against the deadline (:class:`LateNote`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dateutil.parser
import dateutil.tz
from nbformat.v4 import new_markdown_cell
from nbgrader.plugins import LateSubmissionPlugin
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Float

from pipeline.paths import GRADER
from pipeline.untrusted_files import read_untrusted

DEADLINES = GRADER / "deadlines.csv"
COLUMNS = ("assignment", "due", "canvas_assignment_id", "title")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f UTC"  # nbgrader's own, in timestamp.txt


class DeadlineError(ValueError):
    """The deadlines file cannot be used as it is (the message says where and why)."""


@dataclass(frozen=True)
class Deadline:
    assignment: str
    due: datetime  # aware, in the zone it was written in
    canvas_assignment_id: str = ""
    title: str = ""


def parse_time(text: str) -> datetime:
    """An aware datetime from ISO 8601 with an offset, or ``date time Zone/Name``."""
    parts = text.split()
    if len(parts) == 3 and "/" in parts[2] or parts[-1:] == ["UTC"]:
        zone = dateutil.tz.gettz(parts[-1])
        if zone is None:
            raise ValueError(f"unknown time zone {parts[-1]!r}")
        return dateutil.parser.parse(" ".join(parts[:-1])).replace(tzinfo=zone)
    when = dateutil.parser.isoparse(text) if "T" in text else dateutil.parser.parse(text)
    if when.tzinfo is None:
        raise ValueError("no time zone: write it as 2025-03-07T23:59:00+01:00 or "
                         "'2025-03-07 23:59 Europe/Berlin'")
    return when


def parse(text: str, known: list[str], path: Path | None = None) -> dict[str, Deadline]:
    """assignment id -> its deadline; :class:`DeadlineError` names the line of each problem."""
    where = str(path or "deadlines")
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [name.strip() for name in reader.fieldnames or []]
    if not {"assignment", "due"} <= set(header):
        raise DeadlineError(f"{where}: the first line must name the columns assignment and due "
                            f"(known: {', '.join(COLUMNS)})")
    deadlines, problems = {}, []
    for line, row in enumerate(reader, start=2):
        values = {key.strip(): (value or "").strip() for key, value in row.items()
                  if key is not None}
        if not any(values.values()):
            continue
        assignment = values.get("assignment", "")
        if assignment not in known:
            problems.append(f"line {line}: unknown assignment {assignment!r}")
            continue
        if assignment in deadlines:
            problems.append(f"line {line}: {assignment} has a deadline already")
            continue
        try:
            due = parse_time(values.get("due", ""))
        except (ValueError, OverflowError) as error:
            problems.append(f"line {line}: due {values.get('due', '')!r}: {error}")
            continue
        deadlines[assignment] = Deadline(assignment, due, values.get("canvas_assignment_id", ""),
                                         values.get("title", ""))
    if problems:
        raise DeadlineError(f"{where}:\n  " + "\n  ".join(problems))
    return deadlines


def load(path: Path | None = None, known: list[str] | None = None) -> dict[str, Deadline]:
    """The course's deadlines (none when there is no file)."""
    from pipeline.paths import assignment_ids

    path = DEADLINES if path is None else path
    if not path.exists():
        return {}
    return parse(read_untrusted(path, 2**20).decode("utf-8"),
                 assignment_ids() if known is None else known, path)


def utc_naive(when: datetime) -> datetime:
    """``when`` as nbgrader stores times: UTC, without a zone."""
    return when.astimezone(timezone.utc).replace(tzinfo=None)


def load_into_gradebook(deadlines: dict[str, Deadline], db_url: str) -> None:
    """Each assignment's deadline becomes its ``duedate`` in nbgrader's gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        for deadline in deadlines.values():
            gb.update_or_create_assignment(deadline.assignment, duedate=utc_naive(deadline.due))


def timestamp_text(when: datetime) -> str:
    """What goes in a submission's ``timestamp.txt`` (nbgrader's format, in UTC)."""
    return when.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)


def read_timestamp(text: str) -> datetime:
    """An aware UTC time from a ``timestamp.txt`` (nbgrader's parser, as autograde reads it)."""
    from nbgrader.utils import parse_utc

    return parse_utc(text.strip()).replace(tzinfo=timezone.utc)


def duration(seconds: float) -> str:
    """``seconds`` in words, to the minute: "2 days 3 hours", "40 minutes"."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "less than a minute"
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [(days, "day"), (hours, "hour")] if days else [(hours, "hour"), (minutes, "minute")]
    return " ".join(f"{n} {unit}{'s' if n != 1 else ''}" for n, unit in parts if n) \
        or f"{minutes} minutes"


# ---- the late policy: a plugin of nbgrader's AssignLatePenalties ----------------------------

class PercentPerDay(LateSubmissionPlugin):
    """A share of the score per day (or part of a day) late, after a grace period; the whole
    score after ``zero_after_days``. nbgrader caps a penalty at the notebook's score."""

    percent_per_day = Float(10.0, help="percent of the score taken per day late, or part of "
                                       "a day").tag(config=True)
    grace_minutes = Float(0.0, help="minutes after the deadline that do not count").tag(
        config=True)
    zero_after_days = Float(7.0, help="days late after which the score is zero").tag(
        config=True)

    def days_late(self, total_seconds_late: float) -> int:
        """Days (or parts of a day) late once the grace period is over; 0 within it."""
        counted = total_seconds_late - 60 * self.grace_minutes
        return math.ceil(counted / 86400) if counted > 0 else 0

    def late_submission_penalty(self, student_id: str, score: float,
                                total_seconds_late: float) -> float | None:
        days = self.days_late(total_seconds_late)
        if days == 0:
            return None
        if days > self.zero_after_days:
            return score
        return round(score * min(1.0, days * self.percent_per_day / 100), 4)

    def describe(self) -> str:
        grace = (f"after {self.grace_minutes:g} minutes' grace, " if self.grace_minutes
                 else "")
        return (f"{grace}{self.percent_per_day:g}% of the score per day late (a day begun "
                f"counts), the whole score after {self.zero_after_days:g} days")


# ---- the note at the top of a feedback page ------------------------------------------------

def _shown(when: datetime, zone: timezone | None) -> str:
    local = when.astimezone(zone) if zone is not None else when
    return local.strftime("%d %B %Y, %H:%M ").lstrip("0") + (local.tzname()
                                                              or local.strftime("UTC%z"))


class LateNote(NbGraderPreprocessor):
    """Feedback: a note at the top saying when the notebook came in against its deadline,
    and the late penalty with the policy behind it. Nothing when either time is unknown."""

    def preprocess(self, nb, resources):
        from nbgrader.api import Gradebook, MissingEntry
        from nbgrader.preprocessors import AssignLatePenalties

        info = resources.get("nbgrader", {})
        if not all(info.get(key) for key in ("db_url", "assignment", "student", "notebook")):
            return nb, resources  # not a graded submission's page
        try:
            with Gradebook(info["db_url"]) as gb:
                submission = gb.find_submission(info["assignment"], info["student"])
                submitted, due = submission.timestamp, submission.duedate
                seconds = submission.total_seconds_late
                notebook = gb.find_submission_notebook(info["notebook"], info["assignment"],
                                                       info["student"])
                penalty = notebook.late_submission_penalty or 0.0
        except MissingEntry:
            return nb, resources
        if submitted is None or due is None:
            return nb, resources
        try:
            deadline = load().get(info["assignment"])
        except (ValueError, OSError):
            deadline = None
        zone = deadline.due.tzinfo if deadline is not None else timezone.utc
        submitted = submitted.replace(tzinfo=timezone.utc)
        due = due.replace(tzinfo=timezone.utc)
        if seconds <= 0:
            text = (f"**Handed in** {_shown(submitted, zone)}, before the deadline "
                    f"({_shown(due, zone)}).")
        else:
            if seconds <= 1:  # only known to be late (Canvas's mark): collect's stand-in time
                text = f"**Handed in** after the deadline ({_shown(due, zone)})."
            else:
                text = (f"**Handed in** {_shown(submitted, zone)}, {duration(seconds)} after "
                        f"the deadline ({_shown(due, zone)}).")
            plugin = AssignLatePenalties(config=self.config).plugin_class(config=self.config)
            policy = plugin.describe() if hasattr(plugin, "describe") else ""
            text += (f" **Late penalty: {penalty:g} points**" if penalty
                     else " No late penalty") + (f" (the course's policy: {policy})."
                                                 if policy else ".")
        cell = new_markdown_cell(text)
        cell["id"] = "grader-deadline-note"
        nb.cells.insert(0, cell)
        return nb, resources

    def preprocess_cell(self, cell, resources, index):
        return cell, resources


def seconds_late(submitted: datetime | None, due: datetime | None) -> float:
    if submitted is None or due is None:
        return 0.0
    return max(0.0, (submitted - due) / timedelta(seconds=1))

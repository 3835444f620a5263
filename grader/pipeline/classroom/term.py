"""What grading takes from the term: the roster, the deadlines, each submission's time.

The hooks ``pipeline.grading.autograde`` calls: before a run, the roster's students and the deadlines
go into the course gradebook (which every batch's scratch course copies); each submission's
``timestamp.txt`` goes into its scratch course next to the notebook, where nbgrader's
autograde reads it and its late-submission plugin sets the penalty; each result records
when it came in, the deadline and the penalty (``result["late"]``); and the tables after
grading list every roster student, ``missing`` where nothing came in.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.classroom import deadlines as deadlines_module
from pipeline.classroom import roster as roster_module
from pipeline.classroom.submissions import Submission
from pipeline.untrusted_files import read_untrusted, write_new_file

MISSING = roster_module.MISSING
LATE_COLUMNS = ["raw_score", "late_penalty", "submitted", "due", "seconds_late"]


def prepare_gradebook(db_url: str) -> None:
    """Put the roster's students and the deadlines into the gradebook at ``db_url``; a
    roster or deadlines file that cannot be used stops the run before anything is graded."""
    try:
        roster = roster_module.load()
        dues = deadlines_module.load()
    except (roster_module.RosterError, deadlines_module.DeadlineError) as error:
        raise SystemExit(f"fix this first: {error}") from None
    if roster is not None:
        roster_module.load_into_gradebook(roster, db_url)
    if dues:
        deadlines_module.load_into_gradebook(dues, db_url)


def copy_timestamp(sub: Submission, target: Path) -> int:
    """Copy the ``timestamp.txt`` next to ``sub``'s notebook into ``target`` (a scratch
    course's submission folder), rewritten in nbgrader's format; its size, or 0 when there is
    none or it is not a time."""
    try:
        text = read_untrusted(sub.notebook.parent / "timestamp.txt", 4096).decode("utf-8")
        when = deadlines_module.read_timestamp(text)
    except (OSError, ValueError, OverflowError, UnicodeDecodeError):
        return 0
    data = deadlines_module.timestamp_text(when).encode()
    write_new_file(target / "timestamp.txt", data)
    return len(data)


def without_own_timestamp(lines: list[str], size: int) -> list[str]:
    """The batch's REFUSED lines of one submission, less the ``timestamp.txt`` the grader put
    there itself (nbgrader copies it next to the graded notebook, where only the notebook is
    kept): that one is no kernel's doing. Anything else, a timestamp.txt of another size
    included, is still reported."""
    if not size:
        return lines
    own = f"'timestamp.txt' (a file, {size} bytes)"
    kept = []
    for line in lines:
        head, sep, removed = line.partition("is kept): ")
        if sep and own in removed.split(", "):
            rest = [entry for entry in removed.split(", ") if entry != own]
            if not rest:
                continue
            line = head + sep + ", ".join(rest)
        kept.append(line)
    return kept


def late_info(gb, student: str, assignment: str) -> dict:
    """``{"late": {...}}`` for a graded submission whose time is known, else ``{}``: when it
    came in, the deadline (ISO, UTC), seconds late and the penalty nbgrader set."""
    from nbgrader.api import MissingEntry

    try:
        submission = gb.find_submission(assignment, student)
        notebook = gb.find_submission_notebook(assignment, assignment, student)
    except MissingEntry:
        return {}
    if submission.timestamp is None:
        return {}
    return {"late": {
        "submitted": submission.timestamp.isoformat() + "+00:00",
        "due": submission.duedate.isoformat() + "+00:00" if submission.duedate else "",
        "seconds_late": submission.total_seconds_late,
        "penalty": float(notebook.late_submission_penalty or 0.0)}}


def record_late(gb, result: dict) -> None:
    """Put a result's submission time and late penalty into the course gradebook."""
    late = result.get("late")
    if not late or not late.get("submitted"):
        return
    gb.update_or_create_submission(result["assignment"], result["student"],
                                   timestamp=late["submitted"])
    notebook = gb.find_submission_notebook(result["assignment"], result["assignment"],
                                           result["student"])
    notebook.late_submission_penalty = late.get("penalty") or None


def penalty(result: dict) -> float:
    return float((result.get("late") or {}).get("penalty") or 0.0)


def score(result: dict) -> float:
    """Points after the late penalty (never below zero), as nbgrader's export counts them."""
    raw = sum(c["score"] or 0 for c in result["cells"])
    return max(0.0, raw - penalty(result)) if penalty(result) else raw


def late_columns(result: dict) -> list:
    late = result.get("late") or {}
    raw = sum(c["score"] or 0 for c in result["cells"])
    return [f"{raw:g}", f"{penalty(result):g}", late.get("submitted", ""), late.get("due", ""),
            f"{late['seconds_late']:.0f}" if late.get("seconds_late") is not None else ""]


def max_scores(results: list[dict]) -> dict[str, float]:
    """assignment -> its points, from any result that has cells (for rows that have none)."""
    found = {}
    for result in results:
        if result["cells"]:
            found.setdefault(result["assignment"], sum(c["max_score"] for c in result["cells"]))
    return found


def with_roster(results: list[dict]) -> list[dict]:
    """``results`` and a ``missing`` row for every roster student with nothing handed in."""
    try:
        roster = roster_module.load()
    except (ValueError, OSError) as error:
        print(f"the roster was not used: {error}")
        return results
    return roster_module.with_missing(results, roster)


def summary_line(results: list[dict]) -> str:
    """Who is missing and who was late, in one paragraph."""
    missing = sorted(f"{r['student']} ({r['assignment']})" for r in results
                     if r["status"] == roster_module.MISSING)
    late = sorted(f"{r['student']} ({r['assignment']}, -{penalty(r):g})" for r in results
                  if (r.get("late") or {}).get("seconds_late"))
    lines = []
    if missing or roster_module.ROSTER.exists():
        lines.append(f"Missing ({len(missing)}): {', '.join(missing) or 'nobody'}")
    if late or any(r.get("late") for r in results):
        lines.append(f"Late ({len(late)}): {', '.join(late) or 'nobody'}")
    return "\n".join(lines)

"""Hand grades and feedback back to the LMS: `make export` and `make return`.

    python -m pipeline.grading.export grades   --lms canvas|moodle
    python -m pipeline.grading.export feedback --lms canvas|moodle|plain

Both read the published results (``grader/results``), the roster, the deadlines and what
``make collect`` recorded (``grader/lms/collected.csv``), and write into ``grader/export/``:

- ``grades --lms canvas``: ``canvas-grades.csv``, Canvas's gradebook CSV (Grades > Import):
  ``Student, ID, SIS User ID, SIS Login ID, Section`` and one column per graded assignment,
  ``Title (canvas id)`` as ``grader/deadlines.csv`` names it, after a "Points Possible" row;
  one row per roster student with a Canvas id, SIS user id or SIS login id. A grade is the
  points after the late penalty; a blank cell (nothing handed in, not graded) leaves Canvas's
  grade as it is.
- ``grades --lms moodle``: ``moodle-<id>-grades.csv`` per assignment, Moodle's grading
  worksheet (Assignment > "Upload grading worksheet"): the worksheet ``make collect`` kept
  (every participant, Moodle's own columns and order) with ``Grade`` (scaled to the
  worksheet's ``Maximum Grade``), ``Last modified (grade)`` and ``Feedback comments``
  filled in; without one, the rows of the students collected from Moodle.
- ``feedback --lms canvas``: ``canvas-feedback-<id>.zip`` for "Re-upload submissions": each
  page named like the file the student handed in (``lastfirst_userid_fileid_name.html``),
  which is how Canvas finds the submission it comments on.
- ``feedback --lms moodle``: ``moodle-feedback-<id>.zip`` for "Upload multiple feedback files
  in a zip": each page in a folder named like the student's folder in the download.
- ``feedback --lms plain``: ``feedback-<id>.zip``, ``<student>/<id>.html`` (to mail, or to
  share).

Everyone that a file leaves out is named, with why.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import dateutil.tz

from pipeline.classroom import collect, lms, term
from pipeline.classroom import deadlines as deadlines_module
from pipeline.classroom import roster as roster_module
from pipeline.grading.autograde import is_graded, read_results
from pipeline.paths import GRADER, ROOT, feedback_page
from pipeline.untrusted_files import MAX_NOTEBOOK_BYTES, read_untrusted, write_new_file

EXPORT = GRADER / "export"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _results() -> dict[tuple[str, str], dict]:
    results = read_results()
    if not results:
        raise SystemExit("no results in grader/results: run `make grade` first")
    return {(r["student"], r["assignment"]): r for r in results}


def _points(result: dict | None) -> float | None:
    """The points of a graded result after its late penalty; None when it holds no grade."""
    return term.score(result) if result is not None and is_graded(result) else None


def _needs_hand(results: Iterable[dict]) -> int:
    return sum(c["needs_manual_grade"] for r in results for c in r["cells"])


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_new_file(path, text.encode("utf-8"))


# ---- grades ---------------------------------------------------------------------------------

def canvas_grades(results: dict[tuple[str, str], dict], roster: roster_module.Roster,
                  dues: dict[str, deadlines_module.Deadline]) -> tuple[str, list[str]]:
    """Canvas's gradebook CSV, and what the file leaves out (in words)."""
    assignments = sorted({a for _, a in results})
    maxima = term.max_scores(list(results.values()))
    columns, left_out = [], []
    for assignment in assignments:
        deadline = dues.get(assignment)
        title = (deadline.title if deadline and deadline.title else assignment)
        if deadline and deadline.canvas_assignment_id:
            columns.append((f"{title} ({deadline.canvas_assignment_id})", maxima.get(assignment, 0)))
        else:
            columns.append((title, maxima.get(assignment, 0)))
            left_out.append(f"{assignment}: no canvas_assignment_id in grader/deadlines.csv: "
                            "Canvas makes a new assignment of its column")
    rows = []
    for student in roster.students:
        if not (student.canvas_user_id or student.sis_user_id or student.sis_login_id):
            continue
        grades = []
        for assignment in assignments:
            points = _points(results.get((student.student_id, assignment)))
            grades.append("" if points is None else f"{points:g}")
        rows.append((student, grades))
    others = sorted({s for s, _ in results} - {s.student_id for s, _ in rows})
    if others:
        left_out.append(f"{len(others)} graded students without a Canvas id in the roster: "
                        + ", ".join(others))
    return lms.canvas_gradebook(columns, rows), left_out


def _feedback_comment(result: dict | None) -> str:
    if result is None or not is_graded(result):
        return ""
    auto = [c for c in result["cells"] if c["kind"] == "auto"]
    text = (f"Auto-graded: {sum(c['score'] or 0 for c in auto):g} of "
            f"{sum(c['max_score'] for c in auto):g} points.")
    if term.penalty(result):
        text += f" Late penalty: -{term.penalty(result):g}."
    waiting = sum(c["needs_manual_grade"] for c in result["cells"])
    if waiting:
        text += f" {waiting} written answers still to be graded."
    return text + " Details: the attached feedback page."


def moodle_grades(assignment: str, results: dict[tuple[str, str], dict],
                  roster: roster_module.Roster | None,
                  manifest: dict[tuple[str, str], dict[str, str]],
                  now: datetime) -> tuple[str, list[str]]:
    """Moodle's grading worksheet of ``assignment``, filled in; and who it leaves out."""
    maximum = term.max_scores(list(results.values())).get(assignment, 0)
    by_participant = {row["lms_user"]: key[0] for key, row in manifest.items()
                      if key[1] == assignment and row.get("lms") == "moodle"}
    stamp = lms.format_moodle_time(now)
    left_out = []
    kept = collect.worksheet_path(assignment)
    if kept.exists():
        sheet = lms.read_worksheet(read_untrusted(kept, 64 * 2**20))
    else:
        sheet = lms.Worksheet(list(lms.WORKSHEET_COLUMNS))
        for (student, which), row in sorted(manifest.items()):
            if which != assignment or row.get("lms") != "moodle":
                continue
            known = roster.get(student) if roster else None
            sheet.rows.append({
                "Identifier": f"{lms.PARTICIPANT}{row['lms_user']}",
                "Full name": known.full_name if known else student,
                "Email address": known.email if known else "", "Status": "",
                "Maximum Grade": f"{maximum:.2f}", "Grade can be changed": "Yes",
                "Last modified (submission)": "-", "Last modified (grade)": "-"})
        left_out.append(f"{assignment}: no grading worksheet was collected (WORKSHEET=...): "
                        "only students collected from Moodle are in the file, and Moodle's "
                        f"maximum grade must be {maximum:g}")
    for column in ("Grade", "Last modified (grade)", "Feedback comments"):
        if column not in sheet.header:
            sheet.header.append(column)
    for row in sheet.rows:
        student = None
        if roster is not None and row.get("Email address"):
            found = roster.find("email", row["Email address"])
            student = found[0].student_id if len(found) == 1 else None
        student = student or by_participant.get(sheet.participant(row))
        if student is None and roster is not None:
            found = roster.find("name", row.get("Full name", ""))
            student = found[0].student_id if len(found) == 1 else None
        result = results.get((student, assignment)) if student else None
        points = _points(result)
        if points is None:
            if student is None:
                left_out.append(f"{row.get('Full name', '?')} ({row.get('Identifier', '')}): "
                                "not on the roster, grade left blank")
            continue
        try:
            scale = float(row.get("Maximum Grade") or maximum) / maximum if maximum else 1.0
        except ValueError:
            scale = 1.0
        row["Grade"] = f"{points * scale:.2f}"
        row["Last modified (grade)"] = stamp
        row["Feedback comments"] = _feedback_comment(result)
    return lms.write_worksheet(sheet), left_out


# ---- feedback ---------------------------------------------------------------------------------

def feedback_zip(kind: str, assignment: str, manifest: dict[tuple[str, str], dict[str, str]],
                 students: Iterable[str], target: Path) -> tuple[int, list[str]]:
    """Write the feedback pages of ``assignment`` into the zip ``target`` as the LMS ``kind``
    takes them back; (pages written, who was left out and why)."""
    written, left_out, elsewhere = 0, [], Counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for student in sorted(students):
            page = feedback_page(GRADER, student, assignment)
            if not page.exists():
                continue
            row = manifest.get((student, assignment), {})
            if kind == "plain":
                name = f"{student}/{assignment}.html"
            elif row.get("lms") != kind:
                elsewhere[row.get("lms") or "not make collect"] += 1
                continue
            elif kind == "canvas" and row.get("lms_name"):
                name = f"{PurePosixPath(row['lms_name']).stem}.html"
            elif kind == "moodle" and row.get("lms_folder"):
                name = f"{row['lms_folder'].rstrip('/')}/{assignment}-feedback.html"
            else:
                left_out.append(f"{student}: grader/lms/collected.csv lacks the name it had "
                                f"in {kind}'s download (collect it again)")
                continue
            archive.writestr(name, read_untrusted(page, MAX_NOTEBOOK_BYTES))
            written += 1
    temporary.replace(target)
    if elsewhere:
        left_out.append(f"{assignment}: {sum(elsewhere.values())} pages of students who handed "
                        "in elsewhere (" + ", ".join(f"{n} {k}" for k, n in sorted(
                            elsewhere.items())) + "); make return LMS=... for each")
    return written, left_out


# ---- the command ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("grades", "feedback"))
    parser.add_argument("--lms", required=True, choices=("canvas", "moodle", "plain"))
    args = parser.parse_args(argv)
    results = _results()
    roster = roster_module.load()
    manifest = collect.read_manifest()
    assignments = sorted({a for _, a in results})
    left_out: list[str] = []
    if args.what == "grades" and args.lms == "canvas":
        if roster is None:
            raise SystemExit(f"{roster_module.ROSTER} does not exist: Canvas's gradebook names "
                             "students by their Canvas ids, which the roster holds")
        text, left_out = canvas_grades(results, roster, deadlines_module.load())
        path = EXPORT / "canvas-grades.csv"
        _write(path, text)
        rows = text.count("\n") - 2
        print(f"{_shown(path)}: {rows} students x {len(assignments)} assignments "
              f"({', '.join(assignments)}); Canvas: Grades > Import")
    elif args.what == "grades" and args.lms == "moodle":
        dues = deadlines_module.load()
        for assignment in assignments:
            deadline = dues.get(assignment)
            zone = deadline.due.tzinfo if deadline else dateutil.tz.UTC
            text, missed = moodle_grades(assignment, results, roster, manifest,
                                         datetime.now(timezone.utc).astimezone(zone))
            path = EXPORT / f"moodle-{assignment}-grades.csv"
            _write(path, text)
            left_out += missed
            print(f"{_shown(path)}: {text.count(chr(10)) - 1} participants; Moodle: the "
                  "assignment's Grading action > Upload grading worksheet")
    elif args.what == "grades":
        raise SystemExit("grades go to canvas or moodle; grader/grades.csv has them all")
    else:
        for assignment in assignments:
            name = {"canvas": "canvas-feedback", "moodle": "moodle-feedback",
                    "plain": "feedback"}[args.lms]
            path = EXPORT / f"{name}-{assignment}.zip"
            students = {s for s, a in results if a == assignment}
            count, missed = feedback_zip(args.lms, assignment, manifest, students, path)
            left_out += missed
            where = {"canvas": "Canvas: the assignment's Re-upload submissions",
                     "moodle": "Moodle: Upload multiple feedback files in a zip",
                     "plain": "one folder per student"}[args.lms]
            print(f"{_shown(path)}: {count} feedback pages; {where}")
    waiting = _needs_hand(results.values())
    if waiting and args.what == "grades":
        print(f"{waiting} Think! answers are still to be graded (make formgrader): their "
              "points are not in the file yet")
    for line in left_out:
        print(f"left out: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Autograde a class: ``python -m pipeline.grading DIR [--jobs N] [--shard i/N]``.

Submissions are graded by nbgrader in batches (a few notebooks, mixed over the
assignments), each batch in its own scratch course directory (a copy of the gradebook), ``--jobs`` batches
at a time, under a wall-clock and a memory limit; every kernel runs sandboxed
(``pipeline.sandbox_kernel``). Each submission's result is a small JSON file; the
results are then merged into the course gradebook (for formgrader),
``grader/autograded/``, ``grader/feedback/`` and ``grader/grades.csv``. A submission
that hangs, crashes or cheats costs only itself: what a batch did not grade is graded
again alone. ``--shard i/N`` grades every N-th submission and stops after writing the
JSON results, so shards can run on separate machines; ``--merge`` combines them.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy.exc import SAWarning
from tqdm.auto import tqdm

from pipeline.assignments import generate
from pipeline.nbgrader_cli import run_limited
from pipeline.paths import GRADER, GRADES_CSV, SOLUTIONS, assignment_ids
from pipeline.submissions import Submission, find_submissions
from pipeline.summary import SUMMARY, write_summary

DB_URL = f"sqlite:///{GRADER / 'gradebook.db'}"
SCRATCH = GRADER / ".scratch"
RESULTS = GRADER / "results"
NBGRADER_COLUMNS = ["assignment", "student_id", "score", "max_score"]


def ensure_release() -> None:
    """The gradebook must know every assignment; (re)generate when it is missing or stale."""
    db = GRADER / "gradebook.db"
    newest_solution = max(p.stat().st_mtime for p in SOLUTIONS.glob("*.ipynb"))
    if not db.exists() or db.stat().st_mtime < newest_solution:
        generate()


# ---- one submission -----------------------------------------------------------------------

def _messages(notebook_path: Path) -> dict[str, str]:
    """grade_id -> the error message of each failed test cell of an autograded notebook."""
    notebook = nbformat.read(notebook_path, as_version=4)
    messages = {}
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        for output in cell.get("outputs", []):
            if grade_id and output.output_type == "error":
                messages[grade_id] = (
                    "not answered yet (NotImplementedError)" if output.ename == "NotImplementedError"
                    else f"{output.ename}: {output.evalue}".strip())
    return messages


def _collect(scratch: Path, sub: Submission) -> dict:
    """The result of one submission graded in ``scratch``: scores and messages per cell."""
    result = {"student": sub.student, "assignment": sub.assignment, "status": "not graded",
              "cells": [], "log": ""}
    notebook = scratch / "autograded" / sub.student / sub.assignment / f"{sub.assignment}.ipynb"
    if not notebook.exists():
        return result
    messages = _messages(notebook)
    with Gradebook(f"sqlite:///{scratch / 'gradebook.db'}") as gb:
        try:
            submitted = gb.find_submission_notebook(sub.assignment, sub.assignment, sub.student)
        except MissingEntry:
            return result
        for grade in sorted(submitted.grades, key=lambda g: g.name):
            result["cells"].append({
                "grade_id": grade.name,
                "kind": "auto" if grade.cell.cell_type == "code" else "manual",
                "score": grade.score,
                "max_score": grade.max_score, "auto_score": grade.auto_score,
                "needs_manual_grade": grade.needs_manual_grade,
                "message": messages.get(grade.name, ""),
            })
    result["status"] = "graded"
    return result


def grade_batch(subs: list[Submission], *, timeout: float, memory_limit: int | None,
                cell_timeout: int | None = None) -> list[dict]:
    """Autograde submissions with one nbgrader process in a scratch course of their own.

    One process (``pipeline.nbgrader_batch``) autogrades the whole batch and writes its
    feedback, so nbgrader's start-up is paid once. The run may take ``timeout`` seconds
    per notebook. A submission the batch did not grade (its notebook took nbgrader down,
    or the batch ran out of time) is graded again on its own, so it cannot cost the
    others anything.
    """
    SCRATCH.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="batch-", dir=SCRATCH))
    shutil.copy2(GRADER / "gradebook.db", scratch / "gradebook.db")
    for assignment in {s.assignment for s in subs}:
        shutil.copytree(GRADER / "source" / assignment, scratch / "source" / assignment)
    for sub in subs:
        target = scratch / "submitted" / sub.student / sub.assignment
        target.mkdir(parents=True)
        shutil.copy2(sub.notebook, target / f"{sub.assignment}.ipynb")
    for private in ("kernel-homes", "runtime"):  # nothing a kernel of another batch can see
        (scratch / private).mkdir()
    env = {"COURSE_KERNEL_HOMES": str(scratch / "kernel-homes"),
           "JUPYTER_RUNTIME_DIR": str(scratch / "runtime")}
    command = [sys.executable, "-m", "pipeline.nbgrader_batch", str(scratch)]
    command += [f"--cell-timeout={cell_timeout}"] if cell_timeout else []
    status, log = "graded", ""
    try:
        run = run_limited(command, timeout=timeout * len(subs), memory_limit=memory_limit, env=env)
        if run.returncode != 0 or "failed" in run.stderr:
            status, log = "autograde failed", run.stderr[-3000:]
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout:.0f} s"
    results = [_collect(scratch, sub) for sub in subs]
    for sub, result in zip(subs, results, strict=True):
        if result["status"] != "graded":
            continue
        for kind in ("autograded", "feedback"):
            target = GRADER / kind / sub.student / sub.assignment
            shutil.rmtree(target, ignore_errors=True)
            if (scratch / kind / sub.student / sub.assignment).exists():
                shutil.copytree(scratch / kind / sub.student / sub.assignment, target)
    shutil.rmtree(scratch, ignore_errors=True)
    for i, (sub, result) in enumerate(zip(subs, results, strict=True)):
        if result["status"] == "graded":
            continue
        if len(subs) > 1:  # alone, it gets the whole time and memory to itself
            results[i] = grade_batch([sub], timeout=timeout, memory_limit=memory_limit,
                                     cell_timeout=cell_timeout)[0]
        else:
            result.update(status="not graded" if status == "graded" else status, log=log)
    RESULTS.mkdir(exist_ok=True)
    for result in results:
        name = f"{result['student']}__{result['assignment']}.json"
        (RESULTS / name).write_text(json.dumps(result, indent=1))
    return results


def make_batches(subs: list[Submission], jobs: int, batch_size: int) -> list[list[Submission]]:
    """Deal the submissions into batches of at most ``batch_size``, a multiple of ``jobs`` of
    them, round-robin over the assignments so that every batch holds a similar mix."""
    jobs = max(1, jobs)
    count = min(len(subs), jobs * math.ceil(len(subs) / (jobs * max(1, batch_size))))
    ordered = sorted(subs, key=lambda s: (s.assignment, s.student))
    return [ordered[i::count] for i in range(count)]


def grade_all(subs: list[Submission], *, jobs: int, timeout: float, memory_limit: int | None,
              cell_timeout: int | None = None, batch_size: int = 8) -> list[dict]:
    """Grade submissions in batches, ``jobs`` batches at a time (threads driving nbgrader)."""
    results = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(subs), desc="grading", unit="notebook") as progress:
        futures = [pool.submit(grade_batch, batch, timeout=timeout, memory_limit=memory_limit,
                               cell_timeout=cell_timeout)
                   for batch in make_batches(subs, jobs, batch_size)]
        for future in as_completed(futures):
            batch = future.result()
            results += batch
            progress.update(len(batch))
    return sorted(results, key=lambda r: (r["student"], r["assignment"]))


# ---- merging ------------------------------------------------------------------------------

def merge_into_gradebook(results: list[dict]) -> None:
    """Record every result in the course gradebook, as nbgrader's SaveAutoGrades would."""
    with Gradebook(DB_URL) as gb, warnings.catch_warnings():
        # nbgrader's add_submission builds objects SQLAlchemy warns about; harmless here
        warnings.simplefilter("ignore", SAWarning)
        for result in results:
            gb.update_or_create_student(result["student"])
            gb.update_or_create_submission(result["assignment"], result["student"])
            for cell in result["cells"]:
                grade = gb.find_grade(cell["grade_id"], result["assignment"],
                                      result["assignment"], result["student"])
                grade.auto_score = cell["auto_score"]
                grade.needs_manual_grade = cell["needs_manual_grade"]
            gb.db.commit()


def exercise_name(grade_id: str) -> str:
    return grade_id.removeprefix("test_")


def write_grades_csv(results: list[dict], path: Path = GRADES_CSV) -> None:
    """One row per student and assignment: nbgrader's columns, status, one column per exercise."""
    exercises = sorted({exercise_name(c["grade_id"]) for r in results for c in r["cells"]})
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(NBGRADER_COLUMNS + ["auto_score", "auto_max_score",
                                            "needs_manual_grade", "status"] + exercises)
        for r in results:
            cells = {exercise_name(c["grade_id"]): c for c in r["cells"]}
            auto = [c for c in r["cells"] if c["kind"] == "auto"]
            writer.writerow([
                r["assignment"], r["student"],
                sum(c["score"] or 0 for c in r["cells"]), sum(c["max_score"] for c in r["cells"]),
                sum(c["score"] or 0 for c in auto), sum(c["max_score"] for c in auto),
                sum(c["needs_manual_grade"] for c in r["cells"]), r["status"],
            ] + [_cell_text(cells.get(e)) for e in exercises])


def _cell_text(cell: dict | None) -> str:
    if cell is None:
        return ""
    if cell["needs_manual_grade"]:
        return "to grade"
    return f"{cell['score'] or 0:g}"


def grade_table(results: list[dict]) -> str:
    """Students × assignments, auto-graded points earned / available."""
    ids = sorted({r["assignment"] for r in results})
    students = sorted({r["student"] for r in results})
    cell = {(r["student"], r["assignment"]): r for r in results}
    width = max([len(s) for s in students] + [7])
    col = max([len(i) for i in ids] + [14])
    lines = [f"{'student':<{width}}  " + "  ".join(f"{i:>{col}}" for i in ids)]
    for student in students:
        row = []
        for i in ids:
            r = cell.get((student, i))
            if r is None:
                row.append(f"{'—':>{col}}")
                continue
            auto = [c for c in r["cells"] if c["kind"] == "auto"]
            text = (f"{sum(c['score'] or 0 for c in auto):g}/{sum(c['max_score'] for c in auto):g}"
                    if r["cells"] else r["status"][:col])
            row.append(f"{text:>{col}}")
        lines.append(f"{student:<{width}}  " + "  ".join(row))
    return "\n".join(lines)


def finish(results: list[dict]) -> None:
    merge_into_gradebook(results)
    write_grades_csv(results)
    print("\nAuto-graded points (Think! answers are graded by hand in formgrader):")
    print(grade_table(results))
    manual = sum(c["needs_manual_grade"] for r in results for c in r["cells"])
    print(f"\n{len(results)} notebooks graded; {manual} Think! answers wait for manual grading.")
    print(f"Grades:   {GRADES_CSV.relative_to(GRADER.parent)}")
    print(f"Feedback: {(GRADER / 'feedback').relative_to(GRADER.parent)}/<student>/<id>/<id>.html")
    table = write_summary(results)
    print(f"\nExercises, hardest first (class summary and plot in "
          f"{SUMMARY.relative_to(GRADER.parent)}/):")
    print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", type=Path, nargs="?")
    parser.add_argument("--jobs", type=int, default=2, help="parallel workers")
    parser.add_argument("--timeout", type=float, default=900,
                        help="wall-clock seconds allowed per notebook")
    parser.add_argument("--cell-timeout", type=int, default=None,
                        help="seconds per cell (default: nbgrader_config.py's Execute.timeout)")
    parser.add_argument("--memory-gb", type=float, default=8.0,
                        help="address-space limit per grading process (0 = none)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="most notebooks graded by one nbgrader process")
    parser.add_argument("--shard", default="1/1", help="grade only slice i of N (i/N)")
    parser.add_argument("--merge", action="store_true",
                        help="merge the JSON results in grader/results/ (after sharded runs)")
    args = parser.parse_args(argv)
    ensure_release()
    if args.merge:
        results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
        finish(results)
        return 0
    if args.submissions is None:
        parser.error("give the submissions folder (or --merge)")
    index, count = (int(n) for n in args.shard.split("/"))
    if not 1 <= index <= count:
        parser.error(f"--shard must be i/N with 1 <= i <= N, got {args.shard}")
    subs, problems = find_submissions(args.submissions, assignment_ids())
    for problem in problems:
        print(f"NOT GRADED: {problem}", file=sys.stderr)
    subs = subs[index - 1::count]
    if count == 1:
        shutil.rmtree(RESULTS, ignore_errors=True)  # a full re-grade replaces old results
    memory = int(args.memory_gb * 2**30) or None
    results = grade_all(subs, jobs=args.jobs, timeout=args.timeout, memory_limit=memory,
                        cell_timeout=args.cell_timeout, batch_size=args.batch_size)
    if count == 1:
        finish(results)
    else:
        print(f"shard {index}/{count}: {len(results)} results in {RESULTS}; "
              "run with --merge when every shard is done")
    return 0


if __name__ == "__main__":
    sys.exit(main())

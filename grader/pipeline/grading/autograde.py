"""Autograde a class: ``python -m pipeline.grading DIR [--jobs N] [--shard i/N]``.

Submissions are graded by nbgrader in batches (a few notebooks, mixed over the
assignments), each batch in its own scratch course directory (a copy of the gradebook), ``--jobs`` batches
at a time, under a memory limit; every kernel runs sandboxed
(``pipeline.kernels.sandbox_kernel``). Each notebook has time limits of its own, enforced where it
runs: per cell (``--cell-timeout``), for all its cells (``--timeout``) and for its feedback
page (``--feedback-timeout``); the batch's wall-clock limit is only their sum plus some,
for what no other limit catches. Each submission's result is a small JSON file; the
results are then merged into the course gradebook (for formgrader),
``grader/autograded/``, ``grader/feedback/`` and ``grader/grades.csv``. A submission
that hangs, crashes or cheats costs only itself: a batch's notebook counts as graded only
once nbgrader has graded it to the end and made its page, and every other is graded again
alone. ``--shard i/N`` grades every N-th submission and stops after writing the
JSON results, so shards can run on separate machines; ``--merge`` combines them.

Nothing a submission or a kernel made is trusted (``pipeline.untrusted_files``): links are
never followed, special files never opened, sizes capped. Only the submitted notebook
goes into the scratch course, and only the graded notebook and its feedback page come
out of it. The scores come from the scratch gradebook (nbgrader's); the graded notebook,
which holds what the submission printed, is read only for messages, so one over the size
limit or unreadable is still graded (without its messages and page). A run writes into a
fresh folder and replaces the earlier results, graded notebooks and feedback only at the
end, so a crashed or interrupted run leaves them as they were; and a student this run could
not grade because the grading failed keeps the earlier result, graded notebook and page (its
status says so), never less than it had. A submission that was itself refused keeps nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from sqlalchemy.exc import SAWarning
from tqdm.auto import tqdm

from helpers.syllabus import grade_column, in_course_order
from pipeline.classroom import term
from pipeline.classroom.submissions import Submission, find_submissions
from pipeline.grading.nbgrader_batch import done_marker
from pipeline.grading.safe_feedback import minimal_page
from pipeline.grading.summary import SUMMARY, format_columns, write_summary
from pipeline.kernels import sandbox
from pipeline.kernels.kernel_forkserver import KERNELS_BASE, new_kernels_base
from pipeline.nbgrader_cli import run_limited
from pipeline.paths import (
    GRADER,
    GRADES_CSV,
    SCRATCH,
    assignment_ids,
    autograded_notebook,
    db_url,
    feedback_page,
    gradebook,
    source_folder,
    submitted_folder,
)
from pipeline.release.assignments import ensure_release
from pipeline.untrusted_files import (
    MAX_NOTEBOOK_BYTES,
    UntrustedFileError,
    copy_untrusted,
    describe,
    list_folder,
    read_untrusted,
    write_new_file,
)

DB_URL = db_url(GRADER)
RESULTS = GRADER / "results"
NBGRADER_COLUMNS = ["assignment", "student_id", "score", "max_score"]
KEPT = "previous result kept"  # the status of a student this run could not grade
# A result's flag: the submission itself could not be graded (it was refused), so it never
# keeps an earlier result; only failures of the grading itself do.
OWN_FAULT = "caused_by_submission"
# What a batch may take per notebook besides the notebook's own limits (a kernel's start
# and restarts, nbgrader's steps), and once (nbgrader's start, the fork server's warm-up).
NOTEBOOK_SLACK, BATCH_SLACK = 120.0, 120.0


# ---- one submission -----------------------------------------------------------------------

KINDS = {"autograded": ".ipynb", "feedback": ".html"}  # all that comes out of a scratch course


def _outputs(out: Path | None) -> dict[str, Path]:
    """Where results, graded notebooks and feedback pages go: the folders of a run ``out``,
    or (None) the course's own."""
    if out is None:
        return {"results": RESULTS, "autograded": GRADER / "autograded",
                "feedback": GRADER / "feedback"}
    return {kind: out / kind for kind in ("results", *KINDS)}


def _result(sub: Submission, status: str = "not graded", log: str = "") -> dict:
    return {"student": sub.student, "assignment": sub.assignment, "status": status,
            "cells": [], "log": log}


def _failure(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return f"grading failed ({text[:300]})"


def _messages(notebook: nbformat.NotebookNode) -> dict[str, str]:
    """grade_id -> the error message of each failed test cell of an autograded notebook."""
    messages = {}
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        for output in cell.get("outputs", []):
            if grade_id and output.output_type == "error":
                messages[grade_id] = (
                    "not answered yet (NotImplementedError)" if output.ename == "NotImplementedError"
                    else f"{output.ename}: {output.evalue}".strip())
    return messages


def _graded_messages(scratch: Path, sub: Submission, max_bytes: int) -> tuple[dict, str]:
    """The messages of ``sub``'s graded notebook in ``scratch``, or none and why not.

    The graded notebook holds what the submission printed, so it may be anything: over the
    size limit, not readable. Its messages are then left out, and so is its feedback page
    (made from it), which a short page with the points replaces; the grades do not depend on
    it (they are in the gradebook, where nbgrader put them)."""
    notebook = autograded_notebook(scratch, sub.student, sub.assignment)
    try:
        data = read_untrusted(notebook, max_bytes, base=scratch)
        return _messages(nbformat.reads(data.decode("utf-8", errors="replace"),
                                        as_version=4)), ""
    except FileNotFoundError:
        why = "no graded notebook came out of the grading"
    except UntrustedFileError as error:  # (its scratch path says nothing to the instructor)
        why = f"the graded notebook was refused ({str(error).replace(str(notebook), 'it')})"
    except Exception as error:  # noqa: BLE001 - whatever the submission printed into it
        why = f"the graded notebook could not be read ({type(error).__name__})"
    _remove(feedback_page(scratch, sub.student, sub.assignment).parent)
    return {}, (f"{why}: graded from the gradebook; its messages and feedback page are not "
                "shown")


def _collect(scratch: Path, sub: Submission, max_bytes: int = MAX_NOTEBOOK_BYTES) -> dict:
    """The result of one submission graded in ``scratch``: scores (from the scratch
    gradebook) and messages (from the graded notebook, when it can be read) per cell.

    Only a notebook the batch graded to the end and made a page for (its ``done`` marker,
    ``pipeline.grading.nbgrader_batch``) counts: what a batch killed halfway left in the gradebook
    is not a grade.
    """
    result = _result(sub)
    messages, problem = _graded_messages(scratch, sub, max_bytes)
    with Gradebook(db_url(scratch)) as gb:
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
        result.update(term.late_info(gb, sub.student, sub.assignment))
    try:
        done = json.loads(read_untrusted(done_marker(scratch, sub.student, sub.assignment),
                                         2**16, base=scratch))
    except (OSError, ValueError):
        return _result(sub)
    result["status"] = "graded"
    if problem:
        result["log"] = problem
    elif isinstance(done, dict) and done.get("feedback"):
        result["log"] = (f"the feedback page could not be made ({str(done['feedback'])[:200]}); "
                         "a short page with the points stands in")
    return result


def _remove(path: Path) -> None:
    """Remove a file, link or folder tree, never following a link."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def copy_out(scratch: Path, sub: Submission, outputs: dict[str, Path],
             max_bytes: int = MAX_NOTEBOOK_BYTES) -> list[str]:
    """Copy ``sub``'s graded notebook and feedback page out of the scratch course; nothing else.

    ``<kind>/<student>/<id>/`` of ``outputs`` is made afresh and receives ``<id>.ipynb``
    (autograded) or ``<id>.html`` (feedback), each only as a regular file of at most
    ``max_bytes``, read without following links. Returns one log line for everything
    refused: a link or special file in its place, an oversized file, any other entry.
    """
    refused = []
    for kind, extension in KINDS.items():
        name = f"{sub.assignment}{extension}"
        where = f"{kind}/{sub.student}/{sub.assignment}"
        target = outputs[kind] / sub.student / sub.assignment
        _remove(target)
        try:
            entries = list_folder(scratch / kind / sub.student / sub.assignment, base=scratch)
        except FileNotFoundError:
            continue
        except OSError as error:
            refused.append(f"REFUSED {where}: {error}")
            continue
        for other, mode in entries.items():
            if other != name:
                refused.append(f"REFUSED {where}/{other!r}: {describe(mode)}, not copied "
                               f"(only {name} is)")
        if name not in entries:
            continue
        target.mkdir(parents=True)
        try:
            copy_untrusted(scratch / kind / sub.student / sub.assignment / name,
                           target / name, max_bytes, base=scratch)
        except OSError as error:
            refused.append(f"REFUSED {where}/{name}: {error}")
    return refused


def _write_result(folder: Path, result: dict) -> None:
    """``<student>__<id>.json`` in ``folder``, written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{result['student']}__{result['assignment']}.json"
    temporary = folder / f".{name}.{os.getpid()}.tmp"
    write_new_file(temporary, json.dumps(result, indent=1).encode())
    os.replace(temporary, folder / name)


def batch_limit(count: int, timeout: float, feedback_timeout: float) -> float:
    """Seconds one nbgrader process may run for ``count`` notebooks: their own limits and
    some to spare, so that it is killed only when something no other limit covers hangs."""
    return count * (timeout + feedback_timeout + NOTEBOOK_SLACK) + BATCH_SLACK


def _stand_in_page(result: dict, outputs: dict[str, Path]) -> None:
    """Give a graded result that came out without a feedback page a short inert one."""
    folder = outputs["feedback"] / result["student"] / result["assignment"]
    if (folder / f"{result['assignment']}.html").exists():
        return
    _remove(folder)
    folder.mkdir(parents=True)
    scores = [(c["grade_id"], c["score"], c["max_score"]) for c in result["cells"]]
    write_new_file(folder / f"{result['assignment']}.html", minimal_page(
        result["assignment"], "its page did not come out of the grading", scores).encode())
    result["log"] = "\n".join([result["log"], "no feedback page came out of the grading; "
                               "a short page with the points stands in"]).strip()


def _grade_together(subs: list[Submission], *, timeout: float, memory_limit: int | None,
                    cell_timeout: int | None, outputs: dict[str, Path], max_bytes: int,
                    feedback_timeout: float = 60.0) -> tuple[list[dict], list[bool]]:
    """Grade ``subs`` with one nbgrader process; their results, and which are final (a
    refused notebook: grading it again alone would not change that)."""
    results = [_result(sub) for sub in subs]
    final = [False] * len(subs)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="batch-", dir=SCRATCH))
    kernels = new_kernels_base()  # the batch's kernel folders and sockets: all go with it
    try:
        shutil.copy2(gradebook(GRADER), gradebook(scratch))
        for assignment in {s.assignment for s in subs}:
            shutil.copytree(source_folder(GRADER, assignment), source_folder(scratch, assignment))
        copied, stamps = [], [0] * len(subs)
        for i, sub in enumerate(subs):  # the notebook alone, never what lies next to it
            target = submitted_folder(scratch, sub.student, sub.assignment)
            target.mkdir(parents=True)  # (a student has one submission per assignment)
            laid_out = (sub.notebook.parent.name, sub.notebook.parent.parent.name) == (
                sub.assignment, sub.student)
            try:
                if sub.refused:
                    raise UntrustedFileError(f"the notebook {sub.refused}")
                copy_untrusted(sub.notebook, target / f"{sub.assignment}.ipynb", max_bytes,
                               base=sub.notebook.parents[2] if laid_out else None)
                stamps[i] = term.copy_timestamp(sub, target)  # for the late policy
            except OSError as error:
                shutil.rmtree(target)  # nothing of it goes to nbgrader
                if not os.listdir(target.parent):
                    target.parent.rmdir()
                results[i] = {**_result(sub, f"not graded: {error}"), OWN_FAULT: True}
                final[i] = True
                continue
            copied.append(i)
        if not copied:
            return results, final
        for private in ("kernel-homes", "runtime"):  # nothing a kernel of another batch can see
            (scratch / private).mkdir()
        env = {"COURSE_KERNEL_HOMES": str(scratch / "kernel-homes"),
               "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"), KERNELS_BASE: str(kernels)}
        command = [sys.executable, "-m", "pipeline.grading.nbgrader_batch", str(scratch),
                   f"--notebook-timeout={math.ceil(timeout)}",
                   f"--feedback-timeout={feedback_timeout:g}"]
        command += [f"--cell-timeout={cell_timeout}"] if cell_timeout else []
        status, log, refusals = "graded", "", []
        try:
            run = run_limited(command, timeout=batch_limit(len(copied), timeout,
                                                           feedback_timeout),
                              memory_limit=memory_limit, env=env)
            failed = any(line.startswith("autograde failed for")
                         for line in run.stderr.splitlines())
            if run.returncode != 0 or failed:
                status, log = "autograde failed", run.stderr[-3000:]
            refusals = [line for line in run.stderr.splitlines() if line.startswith("REFUSED ")]
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
        for i in copied:
            sub = subs[i]
            try:
                results[i] = _collect(scratch, sub, max_bytes)
                lines = term.without_own_timestamp(
                    [line for line in refusals
                     if line.startswith(f"REFUSED {sub.student}/{sub.assignment}:")], stamps[i])
                if results[i]["status"] == "graded":
                    lines += copy_out(scratch, sub, outputs, max_bytes)
                    _stand_in_page(results[i], outputs)
            except Exception as error:  # noqa: BLE001 - a broken scratch course costs a retry
                results[i] = _result(sub, _failure(error), traceback.format_exc()[-3000:])
                for kind in KINDS:
                    _remove(outputs[kind] / sub.student / sub.assignment)
                continue
            for line in lines:
                tqdm.write(line, file=sys.stderr)
            if results[i]["status"] != "graded" and status != "graded" and not results[i]["log"]:
                results[i].update(status=status, log=log)
            results[i]["log"] = "\n".join([results[i]["log"], *lines]).strip()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(kernels, ignore_errors=True)
    return results, final


def grade_batch(subs: list[Submission], *, timeout: float, memory_limit: int | None,
                cell_timeout: int | None = None, out: Path | None = None,
                max_bytes: int = MAX_NOTEBOOK_BYTES,
                feedback_timeout: float = 60.0) -> list[dict]:
    """Autograde submissions with one nbgrader process in a scratch course of their own.

    One process (``pipeline.grading.nbgrader_batch``) autogrades the whole batch and writes its
    feedback, so nbgrader's start-up is paid once. Each notebook may run ``timeout``
    seconds (its cells stop there, its later exercises fail) and its page may take
    ``feedback_timeout``; the process as a whole only the sum of these and some to spare
    (:func:`batch_limit`). A submission the batch did not grade to the end (its notebook
    took nbgrader down, the batch was killed, its results could not be read: a broken
    scratch course) is graded again on its own, so it cannot cost the others anything;
    what still fails alone is that student's status. Results, graded notebooks and
    feedback pages go into the run folder ``out`` (default: the course's own folders).
    """
    outputs = _outputs(out)
    try:
        results, final = _grade_together(subs, timeout=timeout, memory_limit=memory_limit,
                                         cell_timeout=cell_timeout, outputs=outputs,
                                         max_bytes=max_bytes, feedback_timeout=feedback_timeout)
    except Exception as error:  # noqa: BLE001 - whatever broke, nobody in the batch is lost
        log = traceback.format_exc()[-3000:]
        results, final = [_result(sub, _failure(error), log) for sub in subs], [False] * len(subs)
    for i, sub in enumerate(subs):
        if results[i]["status"] != "graded" and not final[i] and len(subs) > 1:
            # alone, it gets the whole time and memory to itself
            results[i] = grade_batch([sub], timeout=timeout, memory_limit=memory_limit,
                                     cell_timeout=cell_timeout, out=out, max_bytes=max_bytes,
                                     feedback_timeout=feedback_timeout)[0]
    for result in results:
        _write_result(outputs["results"], result)
    return results


def default_jobs() -> int:
    """The cores this process may use (what ``nproc`` prints): one batch at a time each."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def make_batches(subs: list[Submission], jobs: int, batch_size: int) -> list[list[Submission]]:
    """Deal the submissions into batches of at most ``batch_size``, a multiple of ``jobs`` of
    them, round-robin over the assignments so that every batch holds a similar mix."""
    jobs = max(1, jobs)
    count = min(len(subs), jobs * math.ceil(len(subs) / (jobs * max(1, batch_size))))
    ordered = sorted(subs, key=lambda s: (s.assignment, s.student))
    return [ordered[i::count] for i in range(count)]


def grade_all(subs: list[Submission], *, jobs: int, timeout: float, memory_limit: int | None,
              cell_timeout: int | None = None, batch_size: int = 8, out: Path | None = None,
              max_bytes: int = MAX_NOTEBOOK_BYTES, feedback_timeout: float = 60.0) -> list[dict]:
    """Grade submissions in batches, ``jobs`` batches at a time (threads driving nbgrader)."""
    results = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, \
            tqdm(total=len(subs), desc="grading", unit="notebook") as progress:
        futures = {pool.submit(grade_batch, batch, timeout=timeout, memory_limit=memory_limit,
                               cell_timeout=cell_timeout, out=out, max_bytes=max_bytes,
                               feedback_timeout=feedback_timeout): batch
                   for batch in make_batches(subs, jobs, batch_size)}
        for future in as_completed(futures):
            try:
                batch = future.result()
            except Exception as error:  # noqa: BLE001 - grade_batch contains its own failures;
                batch = [_result(sub, _failure(error)) for sub in futures[future]]  # last resort
                for result in batch:
                    _write_result(_outputs(out)["results"], result)
            results += batch
            progress.update(len(batch))
    return sorted(results, key=lambda r: (r["student"], r["assignment"]))


# ---- publishing ---------------------------------------------------------------------------

def is_graded(result: dict) -> bool:
    """Whether ``result`` holds grades: graded by this run, or kept from an earlier one."""
    status = str(result.get("status", ""))
    return bool(result.get("cells")) and (status == "graded" or status.startswith(KEPT))


def _previous(student: str, assignment: str) -> dict | None:
    """The published result of ``student``'s ``assignment``, if it holds grades."""
    try:
        result = json.loads(read_untrusted(RESULTS / f"{student}__{assignment}.json",
                                           MAX_NOTEBOOK_BYTES))
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or (result.get("student"), result.get("assignment")) != (
            student, assignment) or not isinstance(result.get("cells"), list):
        return None
    return result if is_graded(result) else None


def publish(run: Path, results: list[dict], *, replace_all: bool) -> list[dict]:
    """Move what the run folder ``run`` holds into the course's results, autograded/ and
    feedback/ folders, once all of it exists; the results as published.

    Each student and assignment of ``results`` gets exactly what the run made for it,
    except that a published result is never replaced by less: one this run could not
    grade keeps its earlier result, graded notebook and feedback page, with the status
    ``previous result kept (this run: ...)``. That is for failures of the grading (a
    killed batch, a broken scratch course); a submission that was itself refused
    (:data:`OWN_FAULT`) keeps nothing, or handing in something ungradable after a good
    grade would keep the good grade. A folder is swapped by renaming, so it is
    never half-written. A full run (``replace_all``) replaces ``results/`` as a whole; a
    shard replaces only the result files of its own students, so shards can share one
    ``grader/``.
    """
    published, kept = [], set()
    for result in results:
        previous = None if result["status"] == "graded" else _previous(result["student"],
                                                                      result["assignment"])
        if previous is not None and result.get(OWN_FAULT):
            result = {**result, "log": "\n".join([result.get("log", ""), (
                "the earlier result is not kept: this submission itself could not be graded")
            ]).strip()}
            _write_result(run / "results", result)
            previous = None
        if previous is not None:
            result = {**previous, "status": f"{KEPT} (this run: {result['status']})",
                      "log": result.get("log", "")}
            _write_result(run / "results", result)
            kept.add((result["student"], result["assignment"]))
        published.append(result)
    trash = Path(tempfile.mkdtemp(prefix="replaced-", dir=run))
    count = iter(range(10**9))

    def swap(new: Path, target: Path) -> None:
        if os.path.lexists(target):
            shutil.move(target, trash / str(next(count)))
        if os.path.lexists(new):  # a rename; a copy where results/ etc. are on another disk
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(new, target)

    for kind in KINDS:
        for result in published:
            if (result["student"], result["assignment"]) not in kept:
                swap(run / kind / result["student"] / result["assignment"],
                     GRADER / kind / result["student"] / result["assignment"])
    (run / "results").mkdir(exist_ok=True)
    if replace_all and not RESULTS.is_symlink():
        swap(run / "results", RESULTS)
    else:  # a shard; or results/ is a link to a shared folder: file by file
        RESULTS.mkdir(parents=True, exist_ok=True)
        new = {path.name for path in (run / "results").glob("*.json")}
        for name in sorted(new):
            shutil.move(run / "results" / name, RESULTS / name)
        for stale in RESULTS.glob("*.json") if replace_all else ():
            if stale.name not in new:
                stale.unlink()
    shutil.rmtree(trash, ignore_errors=True)
    return published


def read_results(folder: Path | None = None) -> list[dict]:
    """The JSON results in ``folder`` (default: results/); one that cannot be read is
    reported and left out."""
    folder = RESULTS if folder is None else folder
    results = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            result = json.loads(read_untrusted(path, MAX_NOTEBOOK_BYTES))
            if not {"student", "assignment", "status", "cells"} <= set(result):
                raise ValueError("not a grading result")
        except (OSError, ValueError) as error:
            print(f"NOT MERGED: {path}: {error}", file=sys.stderr)
            continue
        results.append(result)
    return results


# ---- merging ------------------------------------------------------------------------------

def merge_into_gradebook(results: list[dict]) -> None:
    """Record every result in the course gradebook, as nbgrader's SaveAutoGrades would."""
    with Gradebook(DB_URL) as gb, warnings.catch_warnings():
        # nbgrader's add_submission builds objects SQLAlchemy warns about; harmless here
        warnings.simplefilter("ignore", SAWarning)
        for result in results:
            try:
                gb.update_or_create_student(result["student"])
                gb.update_or_create_submission(result["assignment"], result["student"])
                for cell in result["cells"]:
                    grade = gb.find_grade(cell["grade_id"], result["assignment"],
                                          result["assignment"], result["student"])
                    grade.auto_score = cell["auto_score"]
                    grade.needs_manual_grade = cell["needs_manual_grade"]
                term.record_late(gb, result)
                gb.db.commit()
            except (MissingEntry, KeyError, TypeError) as error:  # one bad result file
                gb.db.rollback()
                print(f"NOT MERGED: {result.get('student')}/{result.get('assignment')}: "
                      f"{type(error).__name__}: {error}", file=sys.stderr)


def write_grades_csv(results: list[dict], path: Path = GRADES_CSV) -> None:
    """One row per student and assignment: nbgrader's columns (``score`` after the late
    penalty, as nbgrader's export has it), status, the late penalty and times, one column
    per graded cell, in course order."""
    exercises = in_course_order({grade_column(c["grade_id"]) for r in results for c in r["cells"]})
    maxima = term.max_scores(results)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(NBGRADER_COLUMNS + ["auto_score", "auto_max_score",
                                            "needs_manual_grade", "status"]
                        + term.LATE_COLUMNS + exercises)
        for r in results:
            cells = {grade_column(c["grade_id"]): c for c in r["cells"]}
            auto = [c for c in r["cells"] if c["kind"] == "auto"]
            writer.writerow([
                r["assignment"], r["student"], term.score(r),
                sum(c["max_score"] for c in r["cells"]) or maxima.get(r["assignment"], 0),
                sum(c["score"] or 0 for c in auto), sum(c["max_score"] for c in auto),
                sum(c["needs_manual_grade"] for c in r["cells"]), r["status"],
            ] + term.late_columns(r) + [_cell_text(cells.get(e)) for e in exercises])


def _cell_text(cell: dict | None) -> str:
    if cell is None:
        return ""
    if cell["needs_manual_grade"]:
        return "to grade"
    return f"{cell['score'] or 0:g}"


def grade_table(results: list[dict]) -> str:
    """Students × assignments, auto-graded points earned / available (or the status)."""
    ids = sorted({r["assignment"] for r in results})
    students = sorted({r["student"] for r in results})
    cell = {(r["student"], r["assignment"]): r for r in results}

    def text(student: str, assignment: str) -> str:
        r = cell.get((student, assignment))
        if r is None:
            return "—"
        auto = [c for c in r["cells"] if c["kind"] == "auto"]
        if not r["cells"]:
            return r["status"][:max(len(assignment), 14)]  # the column stays narrow
        earned = sum(c["score"] or 0 for c in auto) - term.penalty(r)
        late = " late" if term.penalty(r) else ""
        return f"{max(0, earned):g}/{sum(c['max_score'] for c in auto):g}{late}"

    rows = [["student", *ids]] + [[s, *(text(s, i) for i in ids)] for s in students]
    return format_columns(rows, align="<" + ">" * len(ids))



def finish(results: list[dict]) -> None:
    merge_into_gradebook(results)
    results = term.with_roster(results)  # every roster student, "missing" where nothing came
    write_grades_csv(results)
    print("\nAuto-graded points (Think! answers are graded by hand in formgrader):")
    print(grade_table(results))
    manual = sum(c["needs_manual_grade"] for r in results for c in r["cells"])
    handed_in = sum(r["status"] != term.MISSING for r in results)
    print(f"\n{handed_in} notebooks graded; {manual} Think! answers wait for manual grading.")
    if term.summary_line(results):
        print(term.summary_line(results))
    print(f"Grades:   {GRADES_CSV.relative_to(GRADER.parent)}")
    print(f"Feedback: {(GRADER / 'feedback').relative_to(GRADER.parent)}/<student>/<id>/<id>.html")
    table = write_summary(results)
    print(f"\nExercises, hardest first (class summary and plot in "
          f"{SUMMARY.relative_to(GRADER.parent)}/):")
    print(table)


def build_parser() -> argparse.ArgumentParser:
    """The command line (``make grade`` passes JOBS, SHARD, CELL_TIMEOUT and MEMORY_GB on)."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("submissions", type=Path, nargs="?")
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help="batches graded at a time (default: the cores, %(default)s here)")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds all the cells of one notebook may run (its own limit: "
                             "the cells after it are not run, their exercises fail)")
    parser.add_argument("--feedback-timeout", type=float, default=60,
                        help="seconds one feedback page may take to make (a short page "
                             "with the points stands in for one that takes longer)")
    parser.add_argument("--cell-timeout", type=int, default=None,
                        help="seconds per cell (default: nbgrader_config.py's Execute.timeout)")
    parser.add_argument("--memory-gb", type=float, default=8.0,
                        help="address-space limit of each grading process and of each kernel "
                             "and process it starts, GiB (0 = none; default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="most notebooks graded by one nbgrader process")
    parser.add_argument("--shard", default="1/1", help="grade only slice i of N (i/N)")
    parser.add_argument("--merge", action="store_true",
                        help="merge the JSON results in grader/results/ (after sharded runs)")
    parser.add_argument("--max-notebook-mb", type=float, default=MAX_NOTEBOOK_BYTES / 2**20,
                        help="largest submitted notebook, graded notebook or feedback page")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    print(sandbox.report(), file=sys.stderr)  # which kernel protections are on, which are off
    ensure_release()
    term.prepare_gradebook(DB_URL)  # the roster's students, the deadlines
    if args.merge:
        finish(read_results())
        return 0
    if args.submissions is None:
        parser.error("give the submissions folder (or --merge)")
    index, count = (int(n) for n in args.shard.split("/"))
    if not 1 <= index <= count:
        parser.error(f"--shard must be i/N with 1 <= i <= N, got {args.shard}")
    max_bytes = int(args.max_notebook_mb * 2**20)
    subs, problems = find_submissions(args.submissions, assignment_ids(), max_bytes)
    for problem in problems:
        print(f"NOT GRADED: {problem}", file=sys.stderr)
    subs = subs[index - 1::count]
    memory = int(args.memory_gb * 2**30) or None
    SCRATCH.mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="run-", dir=SCRATCH))  # the old results stay until
    try:                                                      # the new ones all exist
        results = grade_all(subs, jobs=args.jobs, timeout=args.timeout, memory_limit=memory,
                            cell_timeout=args.cell_timeout, batch_size=args.batch_size,
                            out=run, max_bytes=max_bytes,
                            feedback_timeout=args.feedback_timeout)
        results = publish(run, results, replace_all=count == 1)  # a full re-grade replaces
    finally:
        shutil.rmtree(run, ignore_errors=True)
    if count == 1:
        finish(results)
    else:
        print(f"shard {index}/{count}: {len(results)} results in {RESULTS}; "
              "run with --merge when every shard is done")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Grading throughput: plain serial `nbgrader autograde` against `make grade` with 1 and 2 jobs.

    python bench/grading_throughput.py [--students 6] [--ids 01_gain_multiplication ...]

Builds a synthetic class in a scratch copy of the course (students cycle through a full
solution, typical mistakes and the blank release, so runs are a realistic mix), grades
it three ways in one run and prints submissions per minute, the speed-up over plain
nbgrader, and the fixed cost per notebook (nbgrader start-up and kernel start-up,
measured on a blank notebook).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("full_solution", "typical_mistakes", "blank_release")


def _env(course: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(course / "grader"),
                PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))


def _run(args: list[str], course: Path, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd or course, env=_env(course), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def make_course(where: Path, ids: list[str] | None) -> Path:
    course = where / "course"
    (course / "grader").mkdir(parents=True)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    if ids:
        for path in (course / "solutions").glob("*.ipynb"):
            if path.stem not in ids:
                path.unlink()
    for name in ("nbgrader_config.py", "pipeline", "hidden_tests", "sample_mistakes"):
        source = ROOT / "grader" / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, course / "grader" / name)
    _run([sys.executable, "-m", "pipeline.assignments"], course)
    _run([sys.executable, "-m", "pipeline.sample_class"], course)
    return course


def make_class(course: Path, students: int) -> Path:
    sample = course / "grader" / "sample_submissions"
    klass = course / "class"
    for i in range(students):
        shutil.copytree(sample / VARIANTS[i % len(VARIANTS)], klass / f"student{i:03d}")
    return klass


def plain_nbgrader(course: Path, klass: Path, ids: list[str]) -> float:
    """nbgrader's own serial autograde over one shared gradebook."""
    submitted = course / "grader" / "submitted"
    shutil.rmtree(submitted, ignore_errors=True)
    shutil.copytree(klass, submitted)
    config = [f"--CourseDirectory.root={course / 'grader'}"]
    return sum(_run([sys.executable, "-m", "nbgrader", "autograde", i, "--force", *config],
                    course, cwd=course / "grader") for i in ids)


def course_grade(course: Path, klass: Path, jobs: int) -> float:
    return _run([sys.executable, "-m", "pipeline.grading", str(klass), "--jobs", str(jobs)],
                course)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=6)
    parser.add_argument("--ids", nargs="*", help="assignments to grade (default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        course = make_course(Path(scratch), args.ids)
        ids = sorted(p.stem for p in (course / "solutions").glob("*.ipynb"))
        klass = make_class(course, args.students)
        n = args.students * len(ids)
        blank = course / "one_blank"
        shutil.copytree(course / "grader" / "sample_submissions" / "blank_release" / ids[0],
                        blank / "blank" / ids[0])
        overhead = course_grade(course, blank, 1)
        timings = {
            "plain nbgrader autograde (serial)": plain_nbgrader(course, klass, ids),
            "make grade JOBS=1": course_grade(course, klass, 1),
            "make grade JOBS=2": course_grade(course, klass, 2),
        }
    base = timings["plain nbgrader autograde (serial)"]
    print(f"class: {args.students} students x {len(ids)} notebooks = {n} submissions "
          f"on {os.cpu_count()} cores\n")
    print(f"{'how':<36}{'seconds':>9}{'subs/min':>10}{'speed-up':>10}")
    for how, seconds in timings.items():
        print(f"{how:<36}{seconds:>9.1f}{60 * n / seconds:>10.1f}{base / seconds:>9.2f}x")
    print(f"\nfixed cost per notebook (nbgrader + kernel start-up, one blank {ids[0]}): "
          f"{overhead:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

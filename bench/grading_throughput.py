"""Grading throughput: plain serial `nbgrader autograde` against `make grade` with 1 and 2 jobs.

    make bench-grading [BENCH_ARGS="--students 6 --ids 01_gain_multiplication ..."]

Builds a synthetic class in a scratch copy of the course (students cycle through a full
solution, typical mistakes and the blank release, so runs are a realistic mix), grades
it five ways in one run and prints submissions per minute and the speed-up over plain
serial ``nbgrader autograde`` with the course's configuration (sandboxed kernels, hidden
tests deciding in nbgrader's process): the baseline the speed target is measured against.
``make grade`` also writes feedback, so plain nbgrader with ``generate_feedback`` is
shown too, and so is plain nbgrader with unsandboxed kernels, as stock nbgrader runs
them. Then the fixed costs that every notebook or batch pays, measured on their own:
starting nbgrader, and starting a kernel plain, sandboxed (it imports torch and the
helpers before it is ready; the plain row includes ``import torch, helpers`` to
compare) or forked from a batch's warm fork server.
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

from pipeline.environment import course_env
from pipeline.paths import ROOT

VARIANTS = ("full_solution", "typical_mistakes", "blank_release")


def _env(course: Path, **extra: str) -> dict[str, str]:
    # Every row gets the course's environment (one thread per kernel...), in the copy ``course``.
    return {**course_env(grader=course / "grader"), **extra}


def _run(args: list[str], course: Path, cwd: Path | None = None, **extra: str) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd or course, env=_env(course, **extra), check=True,
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
    for name in ("nbgrader_config.py", "pipeline", "kernel_protocol", "hidden_tests",
                 "sample_mistakes"):
        source = ROOT / "grader" / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, course / "grader" / name)
    _run([sys.executable, "-m", "pipeline.release.assignments"], course)
    _run([sys.executable, "-m", "pipeline.classroom.sample_class"], course)
    return course


def make_class(course: Path, students: int) -> Path:
    sample = course / "grader" / "sample_submissions"
    klass = course / "class"
    for i in range(students):
        shutil.copytree(sample / VARIANTS[i % len(VARIANTS)], klass / f"student{i:03d}")
    return klass


def plain_nbgrader(course: Path, klass: Path, ids: list[str], feedback: bool = False,
                   sandbox: bool = True) -> float:
    """nbgrader's own serial autograde (and feedback) over one shared gradebook.

    With the course's configuration, so kernels start sandboxed, one fresh process per
    notebook; ``sandbox=False`` starts them plain, as stock nbgrader would.
    """
    submitted = course / "grader" / "submitted"
    shutil.rmtree(submitted, ignore_errors=True)
    shutil.copytree(klass, submitted)
    config = [f"--CourseDirectory.root={course / 'grader'}"]
    steps = ["autograde", "generate_feedback"] if feedback else ["autograde"]
    return sum(_run([sys.executable, "-m", "nbgrader", step, i, "--force", *config],
                    course, cwd=course / "grader", COURSE_SANDBOX="1" if sandbox else "0")
               for i in ids for step in steps)


KERNEL_STARTUP = """
import asyncio, sys, time
from jupyter_client.manager import AsyncKernelManager
from pipeline.kernels.kernel_forkserver import ForkServer
from pipeline.grading.preprocessors import SandboxedKernelManager

async def startup(manager_class, code):
    manager = manager_class(kernel_name="python3")
    start = time.perf_counter()
    await manager.start_kernel()
    client = manager.client()
    client.start_channels()
    await client.wait_for_ready(timeout=120)
    if code:
        await client.execute_interactive(code, timeout=120)
    elapsed = time.perf_counter() - start
    client.stop_channels()
    await manager.shutdown_kernel(now=True)
    return elapsed

plain = asyncio.run(startup(AsyncKernelManager, "import torch, helpers"))
sandboxed = asyncio.run(startup(SandboxedKernelManager, ""))
server = ForkServer.start()
asyncio.run(startup(SandboxedKernelManager, ""))  # the first one waits for the server's imports
forked = asyncio.run(startup(SandboxedKernelManager, ""))
server.stop()
print(plain, sandboxed, forked)
"""


def fixed_costs(course: Path) -> dict[str, float]:
    """Seconds to start nbgrader, a plain kernel (+ imports), a sandboxed and a forked kernel."""
    nbgrader = _run([sys.executable, "-m", "nbgrader", "--version"], course)
    homes = course / "kernel-homes"
    homes.mkdir(exist_ok=True)
    out = subprocess.run([sys.executable, "-c", KERNEL_STARTUP], cwd=course, check=True,
                         env=dict(_env(course), COURSE_KERNEL_HOMES=str(homes)),
                         capture_output=True, text=True).stdout.split()
    return {"nbgrader start-up (once per process)": nbgrader,
            "plain kernel start-up + import torch, helpers": float(out[0]),
            "sandboxed kernel start-up (torch, helpers preloaded)": float(out[1]),
            "sandboxed kernel forked from a warm fork server": float(out[2])}


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
        fixed_costs(course)  # a warm-up, so no row pays for a cold disk cache
        timings = {}
        for how, grade in [
            ("plain nbgrader autograde (serial)", lambda: plain_nbgrader(course, klass, ids)),
            ("plain nbgrader + generate_feedback", lambda: plain_nbgrader(course, klass, ids,
                                                                           feedback=True)),
            ("plain nbgrader, unsandboxed kernels", lambda: plain_nbgrader(course, klass, ids,
                                                                            sandbox=False)),
            ("make grade JOBS=1", lambda: course_grade(course, klass, 1)),
            ("make grade JOBS=2", lambda: course_grade(course, klass, 2)),
        ]:
            print(f"grading with {how} ...", file=sys.stderr, flush=True)
            timings[how] = grade()
        fixed = fixed_costs(course)
    base = timings["plain nbgrader autograde (serial)"]
    print(f"class: {args.students} students x {len(ids)} notebooks = {n} submissions "
          f"on {os.cpu_count()} cores\n")
    print(f"{'how':<38}{'seconds':>9}{'subs/min':>10}{'speed-up':>10}")
    for how, seconds in timings.items():
        print(f"{how:<38}{seconds:>9.1f}{60 * n / seconds:>10.1f}{base / seconds:>9.2f}x")
    print(f"\n{'fixed costs':<48}{'seconds':>9}")
    for what, seconds in fixed.items():
        print(f"{what:<48}{seconds:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""nbgrader runs bounded (pipeline.nbgrader_cli.run_limited) without subprocess's preexec_fn,
which is unsafe in the grading threads: the memory limit is set by an exec wrapper, the
session by subprocess itself, and both still reach every process a batch starts."""

from __future__ import annotations

import ast
import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.nbgrader_cli import limited, run_limited
from pipeline.paths import GRADER, ROOT

LIMIT = 3 * 2**30
REPORT = ("import json, os, resource; print(json.dumps({'as': resource.getrlimit("
          "resource.RLIMIT_AS), 'sid': os.getsid(0), 'pid': os.getpid()}))")


KERNEL_REPORT = ("import json, resource; print(json.dumps({'as': resource.getrlimit("
                 "resource.RLIMIT_AS), 'fsize': resource.getrlimit(resource.RLIMIT_FSIZE)}))")
TESTS = Path(__file__).resolve().parent


def _report(command: list[str], **kwargs) -> dict:
    run = run_limited(command, timeout=60, **kwargs)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def test_no_preexec_fn_anywhere():
    files = [p for p in ROOT.rglob("*.py")
             if not p.relative_to(ROOT).parts[0].startswith((".", "build", "dist"))]
    used = [f"{p.relative_to(ROOT)}:{node.lineno}" for p in files
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
            if isinstance(node, ast.keyword) and node.arg == "preexec_fn"]
    assert used == []


def test_the_command_runs_under_the_memory_limit_in_a_session_of_its_own():
    seen = _report([sys.executable, "-c", REPORT], memory_limit=LIMIT)
    assert seen["as"] == [LIMIT, LIMIT]
    assert seen["sid"] == seen["pid"]  # start_new_session: killpg reaches all of it


def test_no_limit_leaves_the_limit_alone():
    seen = _report([sys.executable, "-c", REPORT])
    assert seen["as"] == list(resource.getrlimit(resource.RLIMIT_AS))
    assert limited(["x"], None) == ["x"]


def test_every_process_the_command_starts_inherits_the_limit():
    child = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {REPORT!r}])"
    assert _report([sys.executable, "-c", child], memory_limit=LIMIT)["as"] == [LIMIT, LIMIT]


def test_the_limit_stops_an_allocation_beyond_it():
    run = run_limited([sys.executable, "-c", "bytearray(2 * 2**30)"], timeout=60,
                      memory_limit=2**30)
    assert run.returncode != 0 and "MemoryError" in run.stderr


def test_the_wrapper_passes_arguments_and_exit_codes_through_unchanged():
    run = run_limited([sys.executable, "-c", "import sys; print(sys.argv[1:]); sys.exit(3)",
                       "a b", "", "--x"], timeout=60, memory_limit=LIMIT)
    assert run.returncode == 3 and run.stdout.strip() == "['a b', '', '--x']"
    assert run.args[0] == sys.executable  # the command as given, not the wrapper


def test_a_timeout_kills_the_command_and_everything_it_started(tmp_path):
    marker = tmp_path / "alive"
    sleeper = textwrap.dedent(f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c",
                          "import time; time.sleep(3); open({str(marker)!r}, 'w').write('x')"])
        time.sleep(60)
    """)
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_limited([sys.executable, "-c", sleeper], timeout=1, memory_limit=LIMIT)
    assert time.monotonic() - start < 30
    time.sleep(4)
    assert not marker.exists()  # the grandchild was killed with its group


def test_many_threads_at_once_each_get_their_limit():
    """As autograde.grade_all does: run_limited from a thread pool."""
    limits = [2**30 * (2 + i) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        seen = list(pool.map(lambda n: _report([sys.executable, "-c", REPORT], memory_limit=n),
                             limits))
    assert [s["as"] for s in seen] == [[n, n] for n in limits]


@pytest.mark.slow
def test_a_graded_kernel_runs_under_the_memory_limit_and_its_own_limits(tmp_path):
    """What a batch (pipeline.grading.nbgrader_batch) does under run_limited: a fork server, and a
    kernel forked from it with the sandbox's own limits on top of the memory limit."""
    script = tmp_path / "batch.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio
        from test_kernel_forkserver import printed, start_kernel, stop_kernel
        from pipeline.kernels.kernel_forkserver import ForkServer

        async def main():
            manager, client = await start_kernel()
            try:
                return await printed(client, {KERNEL_REPORT!r})
            finally:
                await stop_kernel(manager, client)

        server = ForkServer.start()
        try:
            print(asyncio.run(main()).strip().splitlines()[-1])
        finally:
            if server is not None:
                server.stop()
    """))
    run = run_limited([sys.executable, str(script)], timeout=300, memory_limit=LIMIT,
                      env={"PYTHONPATH": os.pathsep.join([str(GRADER), str(TESTS)])})
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.splitlines()[-1])
    assert seen["as"] == [LIMIT, LIMIT]
    assert seen["fsize"] == [256 * 2**20] * 2  # sandbox.Limits.disk_mb


@pytest.mark.slow
def test_nothing_of_a_batch_that_dies_stays_behind(grading_course, tmp_path, monkeypatch):
    """A batch killed with its kernel running (as the memory limit or a timeout kills it)
    leaves its kernel's folder (connection file, sockets) where the batch was told to put
    them; grading removes that folder, and the scratch course, whatever became of it."""
    from pipeline.classroom.submissions import Submission
    from pipeline.grading import autograde
    from pipeline.kernels.kernel_forkserver import KERNELS_BASE

    report = tmp_path / "kernel-folder"
    script = tmp_path / "batch.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, os, signal
        from test_kernel_forkserver import start_kernel
        from pipeline.kernels.kernel_forkserver import ForkServer

        async def main():
            manager, client = await start_kernel()
            folder = manager.provisioner.folder if manager.provisioner else None
            open({str(report)!r}, "w").write(str(folder or manager.connection_file))
            os.kill(os.getpid(), signal.SIGKILL)  # dies, its kernel still running

        ForkServer.start()
        asyncio.run(main())
    """))
    seen = {}

    def dying_batch(command, *, timeout, memory_limit, env):
        seen["base"] = env[KERNELS_BASE]
        run = run_limited([sys.executable, str(script)], timeout=300, env={
            **env, "PYTHONPATH": os.pathsep.join([str(GRADER), str(TESTS)])})
        seen["left"] = os.listdir(report.read_text())  # what the dead batch left behind
        return run

    monkeypatch.setattr(autograde, "run_limited", dying_batch)
    (tmp_path / "s0.ipynb").write_text("{}")
    result = autograde.grade_batch([Submission("s0", "01_a", tmp_path / "s0.ipynb")],
                                 timeout=10, memory_limit=None)[0]
    assert result["status"] == "autograde failed"
    folder = Path(report.read_text())
    assert "kernel.json" in seen["left"]
    assert Path(seen["base"]) in folder.parents  # the kernel's folder was the batch's
    assert not os.path.lexists(folder) and not os.path.lexists(seen["base"])
    assert not list((grading_course / ".scratch").iterdir())

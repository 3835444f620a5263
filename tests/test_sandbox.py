"""The kernel sandbox, without nbgrader: Landlock rules, bubblewrap's file system, what a
sandboxed kernel can and cannot do, the log when a protection is off, batches and retries.

The kernel tests start a real sandboxed kernel (forked from a fork server, as in a batch)
and run a small probe in it; they are marked slow.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from test_kernel_forkserver import (
    fork_server,
    printed,
    processes_running,
    run_in_kernel,
    start_kernel,
    stop_kernel,
)

from pipeline.classroom.submissions import Submission
from pipeline.environment import course_env
from pipeline.grading import autograde
from pipeline.grading.preprocessors import SandboxedKernelManager
from pipeline.kernels import landlock, sandbox
from pipeline.paths import GRADER, HIDDEN_TESTS, ROOT

needs_landlock = pytest.mark.skipif(landlock.abi_version() < 1,
                                    reason="Landlock is not available here")
BWRAP, NO_BWRAP = sandbox.bwrap_path()
NO_BWRAP = NO_BWRAP or (sandbox.bwrap_usable(BWRAP) if BWRAP else "")
needs_bwrap = pytest.mark.skipif(bool(NO_BWRAP), reason=f"no bubblewrap: {NO_BWRAP}")
needs_userns = pytest.mark.skipif(bool(sandbox.userns_usable()),
                                  reason=f"no user namespaces: {sandbox.userns_usable()}")
SECRET = secrets.token_hex(16)
LIMITS = {"COURSE_KERNEL_DISK_MB": "32", "COURSE_KERNEL_TASKS": "64",
          "COURSE_KERNEL_OUTPUT_KB": "16"}


@needs_landlock
def test_landlock_allows_only_the_listed_folders(tmp_path):
    readable, writable, secret = (tmp_path / n for n in ("readable", "writable", "secret"))
    for folder in (readable, writable, secret):
        folder.mkdir()
        (folder / "file.txt").write_text("content")
    probe = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from pipeline.kernels import landlock
        landlock.restrict(read=[Path(p) for p in sys.path if p] + [Path("{readable}")],
                          write=[Path("{writable}")])
        def attempt(action):
            try:
                action()
                return "allowed"
            except PermissionError:
                return "denied"
        print(json.dumps({{
            "read readable": attempt(lambda: Path("{readable}/file.txt").read_text()),
            "write readable": attempt(lambda: Path("{readable}/new.txt").write_text("x")),
            "read writable": attempt(lambda: Path("{writable}/file.txt").read_text()),
            "write writable": attempt(lambda: Path("{writable}/new.txt").write_text("x")),
            "read secret": attempt(lambda: Path("{secret}/file.txt").read_text()),
            "write secret": attempt(lambda: Path("{secret}/file.txt").write_text("x")),
            "list secret": attempt(lambda: list(Path("{secret}").iterdir())),
        }}))
    """)
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=tmp_path, env=course_env())
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "read readable": "allowed", "write readable": "denied",
        "read writable": "allowed", "write writable": "allowed",
        "read secret": "denied", "write secret": "denied", "list secret": "denied",
    }
    assert (secret / "file.txt").read_text() == "content"


@pytest.mark.skipif(landlock.abi_version() < 4, reason="Landlock has no TCP rules here")
def test_landlock_can_forbid_every_tcp_connection():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        probe = textwrap.dedent(f"""
            import socket
            from pipeline.kernels import landlock
            landlock.restrict(read=[__import__("pathlib").Path("/")], deny_tcp=True)
            try:
                socket.create_connection(("127.0.0.1", {listener.getsockname()[1]}), timeout=5)
                print("connected")
            except OSError as error:
                print(type(error).__name__)
        """)
        run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             env=course_env())
    assert run.stdout.strip() == "PermissionError", run.stderr


def test_a_course_installed_under_a_readable_folder_stays_unreadable(tmp_path):
    opt = tmp_path / "opt"
    course = opt / "srv" / "course"
    for folder in ("grader/hidden_tests", "solutions", "helpers", ".venv"):
        (course / folder).mkdir(parents=True)
    (opt / "other").mkdir()
    (opt / "srv" / "lib").mkdir()
    places = {opt, course / ".venv", course / "helpers", course / "grader" / "hidden_tests"}
    kept = sandbox.carve_out(places, course, course / "grader")
    assert kept == {opt / "other", opt / "srv" / "lib", course / ".venv", course / "helpers"}


def test_kernels_start_through_the_sandbox():
    manager = SandboxedKernelManager(kernel_name="python3")
    command = manager.format_kernel_cmd()
    wrapper = command.index("pipeline.kernels.sandbox_kernel")
    assert command[wrapper - 1] == "-m"
    assert command[wrapper + 1:wrapper + 3] == ["-m", "ipykernel_launcher"]


def test_bubblewrap_shows_the_server_python_and_helpers_but_nothing_of_the_course(tmp_path):
    argv, fds = sandbox.bwrap_command("bwrap", course_root=ROOT, grader=GRADER, kroot=tmp_path,
                                      command=["python"], env={"HOME": "/tmp/home"})
    for fd in fds:
        os.close(fd)
    sources = [argv[i + 1] for i, word in enumerate(argv) if word in ("--ro-bind", "--bind")]
    assert str(GRADER / "pipeline") in sources  # the server's code (each kernel covers it)
    assert str(tmp_path) in sources  # the kernels' connection folders
    for source in sources:
        path = Path(source)
        assert path == GRADER / "pipeline" or not path.is_relative_to(GRADER), source
        assert not (ROOT / "solutions").is_relative_to(path), source
        assert path != ROOT and not ROOT.is_relative_to(path) or path == Path("/usr"), source
    assert "--clearenv" in argv and "--unshare-net" in argv and "--die-with-parent" in argv


def test_the_report_names_each_protection_that_is_off(monkeypatch):
    monkeypatch.setenv("COURSE_BWRAP", "0")
    report = sandbox.report()
    assert "OFF: a minimal read-only file system (bubblewrap)" in report
    assert "COURSE_BWRAP=0" in report
    monkeypatch.setenv("COURSE_BWRAP", "/nowhere/bwrap")
    assert "/nowhere/bwrap is not an executable" in sandbox.report()
    lines = sandbox.describe(sandbox.Limits(), {"network": "no user namespace"}).splitlines()
    assert lines[1] == ("WARNING: kernel sandbox: OFF: no network (own network namespace) -- "
                        "no user namespace")
    assert "network" not in lines[0] and "filesystem" in lines[0]


# ---- a sandboxed kernel -------------------------------------------------------------------

@pytest.fixture(scope="module")
def limited_server():
    """A fork server (bubblewrap) with small limits; a secret in the grader's environment."""
    os.environ["COURSE_TEST_SECRET"] = SECRET
    try:
        with fork_server(**LIMITS) as server:
            yield server
    finally:
        del os.environ["COURSE_TEST_SECRET"]


def _json(code: str) -> dict:
    return json.loads(run_in_kernel(textwrap.dedent(code))[0])


@pytest.mark.slow
@needs_bwrap
def test_a_kernel_has_no_network(limited_server):
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.socket(socket.AF_UNIX) as abstract:
        abstract.bind(f"\0course-test-{SECRET}")
        abstract.listen()
        listener.setblocking(False)
        seen = _json(f"""
            import json, socket
            def attempt(connect):
                try:
                    connect()
                    return "connected"
                except OSError as error:
                    return type(error).__name__
            def unix():
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect("\\0course-test-{SECRET}")
            print(json.dumps({{
                "host": attempt(lambda: socket.create_connection(
                    ("127.0.0.1", {listener.getsockname()[1]}), timeout=5)),
                "public": attempt(lambda: socket.create_connection(("1.1.1.1", 53), timeout=5)),
                "dns": attempt(lambda: socket.getaddrinfo("example.com", 80)),
                "abstract": attempt(unix),
            }}))
        """)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody came
    assert "connected" not in seen.values(), seen


@pytest.mark.slow
@needs_bwrap
def test_two_kernels_share_no_file_and_see_no_process_of_each_other(limited_server):
    write = textwrap.dedent("""
        import os, json, pathlib
        for folder in ("/tmp", "/dev/shm", os.environ["HOME"]):
            pathlib.Path(folder, "course-marker-{name}").write_text("{name} was here")
        print(json.dumps({"pid": os.getpid(), "proc": sorted(p for p in os.listdir("/proc")
                                                             if p.isdigit())}))
    """)
    look = textwrap.dedent("""
        import os, json
        print(json.dumps(sorted(f"{folder}/{name}" for folder in ("/tmp", "/dev/shm",
                                                                  os.environ["HOME"])
                                for name in os.listdir(folder) if "course-marker" in name)))
    """)

    async def scenario():
        first = await start_kernel()
        second = await start_kernel()
        try:
            a = json.loads(await printed(first[1], write.replace("{name}", "a")))
            b = json.loads(await printed(second[1], write.replace("{name}", "b")))
            seen_by_a = json.loads(await printed(first[1], look))
            seen_by_b = json.loads(await printed(second[1], look))
        finally:
            await stop_kernel(*first)
            await stop_kernel(*second)
        return a, b, seen_by_a, seen_by_b

    a, b, seen_by_a, seen_by_b = asyncio.run(scenario())
    assert all("marker-a" in path for path in seen_by_a) and len(seen_by_a) == 3
    assert all("marker-b" in path for path in seen_by_b) and len(seen_by_b) == 3
    assert a["proc"] == b["proc"] == ["1", "2"]  # its init and itself, nobody else
    later = json.loads(run_in_kernel(look)[0])
    assert later == []  # nothing outlives a kernel
    for folder in ("/tmp", "/dev/shm"):  # and nothing reached the machine's own folders
        assert not [n for n in os.listdir(folder) if n.startswith("course-marker")]


@pytest.mark.slow
@needs_bwrap
def test_a_kernel_gets_a_whitelisted_environment(limited_server):
    seen = _json(f"""
        import json, os
        found = [name for name, value in os.environ.items() if "{SECRET}" in value]
        for pid in [p for p in os.listdir("/proc") if p.isdigit()] + ["self"]:
            try:
                if b"{SECRET}" in open(f"/proc/{{pid}}/environ", "rb").read():
                    found.append(pid)
            except OSError:
                pass
        print(json.dumps({{"found": found, "names": sorted(os.environ)}}))
    """)
    assert os.environ["COURSE_TEST_SECRET"] == SECRET  # the grader has it
    assert seen["found"] == [], seen
    assert not {"COURSE_TEST_SECRET", "PYTHONPATH", "COURSE_KERNEL_HOMES"} & set(seen["names"])


@pytest.mark.slow
@needs_bwrap
def test_grader_solutions_and_sandbox_code_are_absent(limited_server):
    paths = [GRADER, HIDDEN_TESTS / "common.py", ROOT / "solutions", GRADER / "gradebook.db",
             GRADER / "pipeline" / "kernels" / "sandbox.py", ROOT / "Makefile"]
    seen = _json(f"""
        import importlib, json, os
        def imports(name):
            try:
                importlib.import_module(name)
                return "imported"
            except ImportError as error:
                return type(error).__name__
        print(json.dumps({{"exists": [p for p in {[str(p) for p in paths]!r} if os.path.exists(p)],
                           "run": os.listdir("{sandbox.CODE_MOUNT}"),
                           "hidden_tests": imports("hidden_tests"),
                           "pipeline": imports("pipeline.kernels.sandbox")}}))
    """)
    assert seen == {"exists": [], "run": [], "hidden_tests": "ModuleNotFoundError",
                    "pipeline": "ModuleNotFoundError"}


@pytest.mark.slow
@needs_bwrap
def test_a_fork_bomb_stops_at_the_process_limit(limited_server):
    bomb, after = run_in_kernel(textwrap.dedent("""
        import json, subprocess, threading, time
        children, refused = [], None
        try:
            for _ in range(500):
                children.append(subprocess.Popen(["sleep", "60"]))
        except OSError as error:
            refused = type(error).__name__
        threads = 0
        try:
            for _ in range(500):
                threading.Thread(target=time.sleep, args=(5,), daemon=True).start()
                threads += 1
        except RuntimeError:
            pass
        for child in children:
            child.kill()
            child.wait()
        print(json.dumps({"processes": len(children), "refused": refused, "threads": threads}))
    """), "print('still here')")
    bomb = json.loads(bomb)
    limit = int(LIMITS["COURSE_KERNEL_TASKS"])
    assert bomb["refused"] == "BlockingIOError" and bomb["processes"] < limit, bomb
    assert bomb["threads"] < limit, bomb
    assert after.strip() == "still here"


@pytest.mark.slow
@needs_bwrap
def test_every_descendant_dies_with_its_kernel(limited_server):
    def sleepers():
        return processes_running("sleep\x004243.5") + processes_running("sleep\x004244.5")

    async def scenario():
        manager, client = await start_kernel()
        await printed(client, textwrap.dedent("""
            import os, subprocess
            subprocess.Popen(["setsid", "sleep", "4243.5"], start_new_session=True)
            child = os.fork()
            if child == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execvp("sleep", ["sleep", "4244.5"])
                os._exit(0)
            os.waitpid(child, 0)
        """))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(sleepers()) < 2:  # (exec takes a moment)
            await asyncio.sleep(0.1)
        running = sleepers()
        await stop_kernel(manager, client)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sleepers():
            await asyncio.sleep(0.1)
        return running, sleepers()

    running, left = asyncio.run(scenario())
    assert len(running) == 2, running  # both detached sleepers ran...
    assert left == []  # ...and died with the kernel


@pytest.mark.slow
@needs_bwrap
def test_writing_past_the_disk_cap_fails(limited_server):
    seen = _json("""
        import json, os
        def fill(path):
            written = 0
            try:
                with open(path, "wb") as handle:
                    for _ in range(100):
                        handle.write(b"x" * 2**20)
                        handle.flush()
                        written += 1
            except OSError as error:
                return written, error.strerror
            finally:
                if os.path.exists(path):
                    os.remove(path)
            return written, None
        folder = os.path.dirname(__import__("ipykernel").get_connection_file())
        print(json.dumps({"home": fill(os.path.expanduser("~/big")), "tmp": fill("/tmp/big"),
                          "shm": fill("/dev/shm/big"),
                          "connection folder": fill(os.path.join(folder, "big"))}))
    """)
    cap = int(LIMITS["COURSE_KERNEL_DISK_MB"])
    for where in ("home", "tmp", "shm"):
        written, error = seen[where]
        assert written <= cap and error in ("No space left on device", "File too large"), seen
    assert seen["connection folder"] == [0, "Permission denied"]  # on the host's disk: Landlock


@pytest.mark.slow
@needs_bwrap
def test_a_kernels_own_stderr_reaches_the_log_only_up_to_its_cap():
    with tempfile.TemporaryFile() as log:
        with fork_server(stderr=log, **LIMITS):
            done = run_in_kernel(textwrap.dedent("""
                import os, sys
                for _ in range(64):
                    os.write(2, b"E" * 2**20)
                sys.__stderr__.write("S" * 2**24)
                sys.__stderr__.flush()
                print("done")
            """), timeout=120)
        log.seek(0)
        text = log.read()
    assert done == ["done\n"]
    assert len(text) < 4 * int(LIMITS["COURSE_KERNEL_OUTPUT_KB"]) * 1024, len(text)
    assert b"more bytes of the kernel's own output dropped" in text


# ---- where a protection is missing ----------------------------------------------------------

@pytest.mark.slow
@needs_landlock
def test_without_bubblewrap_the_log_says_so_and_the_kernel_is_still_confined():
    with tempfile.TemporaryFile() as log:
        with fork_server(stderr=log, COURSE_BWRAP="0"):
            seen = _json(f"""
                import json, os
                def attempt(action):
                    try:
                        action()
                        return "allowed"
                    except OSError as error:
                        return type(error).__name__
                print(json.dumps({{"hidden": attempt(lambda: open("{HIDDEN_TESTS / 'common.py'}")),
                                   "grader": attempt(lambda: os.listdir("{GRADER}")),
                                   "solutions": attempt(lambda: os.listdir("{ROOT / 'solutions'}")),
                                   "tmp": attempt(lambda: open("/tmp/course-probe", "w")),
                                   "proc": sorted(p for p in os.listdir("/proc") if p.isdigit())}}))
            """)
        log.seek(0)
        text = log.read().decode()
    assert "OFF: a minimal read-only file system (bubblewrap)" in text and "COURSE_BWRAP=0" in text
    assert seen["hidden"] in ("FileNotFoundError", "PermissionError")
    # refused, or not even there (a course cloned under /tmp is covered by the kernel's /tmp)
    assert seen["solutions"] in ("PermissionError", "FileNotFoundError")
    assert seen["grader"] != "allowed"
    if not sandbox.userns_usable():
        assert seen["tmp"] == "allowed" and not Path("/tmp/course-probe").exists()  # its own
        assert seen["proc"] == ["1", "2"]


@pytest.mark.slow
@needs_landlock
def test_without_namespaces_grading_still_works_and_the_log_names_each_protection_off():
    with socket.create_server(("127.0.0.1", 0)) as listener, tempfile.TemporaryFile() as log:
        with fork_server(stderr=log, COURSE_BWRAP="0", COURSE_SANDBOX_NAMESPACES="0"):
            seen = _json(f"""
                import json, socket
                def attempt(action):
                    try:
                        action()
                        return "allowed"
                    except OSError as error:
                        return type(error).__name__
                print(json.dumps({{
                    "answer": 6 * 7, "pid": __import__("os").getpid(),
                    "tcp": attempt(lambda: socket.create_connection(
                        ("127.0.0.1", {listener.getsockname()[1]}), timeout=5)),
                    "tmp": attempt(lambda: open("/tmp/course-probe", "w")),
                    "shm": attempt(lambda: open("/dev/shm/course-probe", "w"))}}))
            """)
        log.seek(0)
        text = log.read().decode()
    assert seen["answer"] == 42
    deadline = time.monotonic() + 10  # no pid namespace: the kernel dies with its init
    while time.monotonic() < deadline and os.path.exists(f"/proc/{seen['pid']}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{seen['pid']}")
    assert seen["tmp"] == seen["shm"] == "PermissionError"  # nothing shared: not writable
    if landlock.abi_version() >= 4:
        assert seen["tcp"] == "PermissionError"
    for name in ("network", "private", "pid", "proc", "ipc", "tasks"):
        words = sandbox.PROTECTIONS[name].format(**vars(sandbox.Limits.from_env()))
        assert f"OFF: {words} -- COURSE_SANDBOX_NAMESPACES=0" in text, (name, text)


# ---- batches ------------------------------------------------------------------------------

def _subs(assignment: str, n: int) -> list[Submission]:
    return [Submission(f"s{i}", assignment, Path(f"/nowhere/s{i}.ipynb")) for i in range(n)]


def test_batches_are_even_mixes_of_assignments_a_multiple_of_the_jobs():
    subs = _subs("01_a", 6) + _subs("06_f", 3)
    batches = autograde.make_batches(subs, jobs=2, batch_size=8)
    assert sorted(len(b) for b in batches) == [4, 5]
    assert all({s.assignment for s in b} == {"01_a", "06_f"} for b in batches)
    assert sorted(s.student + s.assignment for b in batches for s in b) == sorted(
        s.student + s.assignment for s in subs)
    big = autograde.make_batches(_subs("01_a", 40) + _subs("02_b", 40), jobs=2, batch_size=8)
    assert len(big) == 10 and {len(b) for b in big} == {8}
    assert autograde.make_batches(_subs("01_a", 1), jobs=4, batch_size=8) == [_subs("01_a", 1)]
    assert autograde.make_batches([], jobs=2, batch_size=8) == []


def test_a_batch_that_times_out_is_graded_again_one_by_one(grading_course, tmp_path,
                                                           monkeypatch):
    grader = grading_course
    notebooks = tmp_path / "class"
    notebooks.mkdir()
    subs = [Submission(f"s{i}", "01_a", notebooks / f"s{i}.ipynb") for i in range(3)]
    for sub in subs:
        sub.notebook.write_text("{}")
    runs = []

    def hangs(command, *, timeout, memory_limit, env):
        runs.append(sorted(p.name for p in (Path(command[3]) / "submitted").iterdir()))
        raise subprocess.TimeoutExpired(command, timeout)

    monkeypatch.setattr(autograde, "run_limited", hangs)
    results = autograde.grade_batch(subs, timeout=10, memory_limit=None)
    assert runs == [["s0", "s1", "s2"], ["s0"], ["s1"], ["s2"]]
    assert [r["status"] for r in results] == ["timed out after 10 s"] * 3
    assert sorted(p.name for p in (grader / "results").iterdir()) == [
        "s0__01_a.json", "s1__01_a.json", "s2__01_a.json"]
    assert not list((grader / ".scratch").iterdir())  # scratch courses are cleaned up

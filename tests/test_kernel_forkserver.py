"""Kernels forked from a warm fork server: sandboxed, watched, signalled, replaceable.

The helpers here (a fork server with chosen settings, a kernel that runs code and
returns what it printed) are shared with ``tests/test_sandbox.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from pipeline import environment
from pipeline.grading.preprocessors import SandboxedKernelManager
from pipeline.kernels import kernel_forkserver, kernel_manager
from pipeline.kernels.kernel_forkserver import (
    KERNELS_BASE,
    ForkedKernel,
    ForkServer,
    kernels_root,
    new_kernels_base,
)
from pipeline.paths import GRADER, HIDDEN_TESTS

pytestmark = pytest.mark.slow

PROBE = f"""
import json, os, random, socket, sys
def _readable(path):
    try:
        open(path).read()
        return "read"
    except OSError as error:
        return type(error).__name__
def _link(fd):
    try:
        return os.readlink(f"/proc/self/fd/{{fd}}")
    except OSError:  # the descriptor listdir itself used
        return None
def _kind(fd):  # the fork server's control socket is the only SOCK_SEQPACKET one
    try:
        with socket.socket(fileno=os.dup(int(fd))) as sock:
            return int(sock.type)
    except OSError:
        return None
_fds = [_link(fd) for fd in os.listdir("/proc/self/fd")]
_kinds = [_kind(fd) for fd in os.listdir("/proc/self/fd")]
print(json.dumps({{"ppid": os.getppid(), "pid": os.getpid(), "cwd": os.getcwd(),
                  "home": os.environ["HOME"], "torch_preloaded": "torch" in sys.modules,
                  "pipeline_loaded": [m for m in sys.modules if m.startswith("pipeline")],
                  "grader_on_path": [p for p in sys.path
                                     if p.startswith(({str(GRADER)!r}, "/run/course"))],
                  "hidden_tests": _readable({str(HIDDEN_TESTS / "common.py")!r}),
                  "random": random.random(), "fds": _fds, "sockets": _kinds}}))
"""


# ---- helpers (also used by test_sandbox.py) ------------------------------------------------

@contextlib.contextmanager
def fork_server(stderr=None, **env: str):
    """A batch's fork server, started with ``env`` set (limits, COURSE_BWRAP...)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    server = None
    try:
        server = ForkServer.start(stderr=stderr)
        assert server is not None, "this Linux cannot run the fork server"
        yield server
    finally:
        if server is not None:
            server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def printed(client, code: str, timeout: float = 60) -> str:
    """Execute ``code``; return everything it printed (and the error, if it raised)."""
    out = []

    def collect(message):
        if message["msg_type"] == "stream":
            out.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            out.append(f"ERROR {message['content']['ename']}: {message['content']['evalue']}")

    await client.execute_interactive(code, timeout=timeout, output_hook=collect)
    return "".join(out)


async def start_kernel(cwd=None) -> tuple[SandboxedKernelManager, object]:
    manager = SandboxedKernelManager(kernel_name="python3")
    await manager.start_kernel(cwd=str(cwd or Path.cwd()))
    client = manager.client()
    client.start_channels()
    await client.wait_for_ready(timeout=120)
    return manager, client


async def stop_kernel(manager, client) -> None:
    client.stop_channels()
    await manager.shutdown_kernel(now=True)


def run_in_kernel(*codes: str, timeout: float = 60) -> list[str]:
    """Start a sandboxed kernel, run each of ``codes`` in it, stop it; what each printed."""
    async def scenario():
        manager, client = await start_kernel()
        try:
            return [await printed(client, code, timeout) for code in codes]
        finally:
            await stop_kernel(manager, client)

    return asyncio.run(scenario())


def processes_running(marker: str) -> list[int]:
    """Pids on this machine whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


# ---- tests --------------------------------------------------------------------------------

@pytest.fixture
def server():
    with fork_server() as started:
        yield started


def test_forked_kernels_are_watched_sandboxed_and_sealed_off_from_the_server(server):
    async def scenario():
        seen = []
        for _ in range(2):
            manager, client = await start_kernel()
            assert isinstance(manager.provisioner.process, ForkedKernel)
            assert manager.transport == "ipc"  # no TCP: kernels have no network
            seen.append(json.loads(await printed(client, PROBE)))
            await stop_kernel(manager, client)
        return seen

    first, second = asyncio.run(scenario())
    for probe in (first, second):
        assert (probe["pid"], probe["ppid"]) == (2, 1)  # pid 2 of its own pid namespace
        assert probe["cwd"] == probe["home"]  # a working folder of its own
        assert probe["torch_preloaded"]
        assert probe["pipeline_loaded"] == [] and probe["grader_on_path"] == []
        assert probe["hidden_tests"] in ("FileNotFoundError", "PermissionError")
        assert socket.SOCK_STREAM in probe["sockets"]  # (the probe sees sockets: zmq's)
        assert socket.SOCK_SEQPACKET not in probe["sockets"]  # but not the server's
    assert first["random"] != second["random"]  # each fork draws its own random numbers


def test_a_forked_kernel_can_be_interrupted_restarted_and_its_death_is_seen(server):
    async def scenario():
        manager, client = await start_kernel()
        client.execute("import time\nwhile True: time.sleep(0.01)")
        await asyncio.sleep(1)
        await manager.interrupt_kernel()
        reply = await client.get_shell_msg(timeout=30)
        interrupted = reply["content"].get("ename")
        client.execute("import os; os._exit(3)")
        for _ in range(300):
            if not await manager.is_alive():
                break
            await asyncio.sleep(0.1)
        code = await manager.provisioner.poll()
        await manager.restart_kernel(now=True)
        await client.wait_for_ready(timeout=120)
        after = await printed(client, "print(6 * 7)")
        await stop_kernel(manager, client)
        return interrupted, code, after

    interrupted, code, after = asyncio.run(scenario())
    assert interrupted == "KeyboardInterrupt"
    assert code == 3
    assert after.strip() == "42"


def test_a_kernel_and_everything_it_started_end_with_the_server(server):
    async def scenario():
        manager, client = await start_kernel()
        await printed(client, "import subprocess\n"
                              "subprocess.Popen(['setsid', 'sleep', '4241.5'], start_new_session=True)")
        running = processes_running("sleep\x004241.5")
        server.stop()
        for _ in range(100):
            if not processes_running("sleep\x004241.5") and not await manager.is_alive():
                break
            await asyncio.sleep(0.1)
        left = processes_running("sleep\x004241.5")
        alive = await manager.is_alive()
        client.stop_channels()
        return running, left, alive

    running, left, alive = asyncio.run(scenario())
    assert running and not left and not alive


def test_without_the_batch_server_a_kernel_gets_a_private_one(server):
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    assert ForkServer.current() is None

    async def scenario():
        manager, client = await start_kernel()
        private = manager.provisioner._private
        forked = isinstance(manager.provisioner.process, ForkedKernel)
        probe = json.loads(await printed(client, PROBE))
        await stop_kernel(manager, client)
        return private, forked, probe

    private, forked, probe = asyncio.run(scenario())
    assert forked and private is not None
    assert private.process.poll() is not None  # stopped with its kernel
    assert (probe["pid"], probe["ppid"]) == (2, 1)
    assert probe["hidden_tests"] in ("FileNotFoundError", "PermissionError")


def test_without_any_server_a_kernel_starts_directly_and_still_sandboxed(monkeypatch, capfd,
                                                                          tmp_path):
    monkeypatch.setattr(kernel_manager.ForkServer, "start", classmethod(lambda cls, **_: None))
    marker = Path("/tmp") / f"host-marker-{os.getpid()}"
    marker.write_text("on the host")
    try:
        probe, folders = run_in_kernel(PROBE, "import os; print(os.listdir('/tmp'))")
    finally:
        marker.unlink()
    probe = json.loads(probe)
    assert (probe["pid"], probe["ppid"]) == (2, 1)
    assert probe["pipeline_loaded"] == [] and probe["grader_on_path"] == []
    assert probe["hidden_tests"] in ("FileNotFoundError", "PermissionError")  # no bubblewrap
    assert marker.name not in folders  # its own /tmp
    log = capfd.readouterr().err
    assert "OFF: a minimal read-only file system" in log  # the log names what is off
    assert str(GRADER) not in json.dumps(probe)


def test_a_sandboxed_kernel_gets_only_whitelisted_settings():
    env = environment.graded_kernel_env({"LANG": "de_DE.UTF-8", "SECRET_TOKEN": "x",
                                         "PYTHONPATH": "/g", "OMP_NUM_THREADS": "8"},
                                        "/home/student", "/venv/bin")
    assert env["LANG"] == "de_DE.UTF-8"
    assert env.items() >= {**environment.SETTINGS, **environment.HEADLESS}.items()  # always
    assert "SECRET_TOKEN" not in env and "PYTHONPATH" not in env
    assert env["HOME"] == "/home/student" and env["PATH"].startswith("/venv/bin:")


def test_a_batchs_kernel_folders_go_where_it_is_told(monkeypatch):
    """In the folder its grader made (and removes, whatever becomes of the batch; the next
    grader removes one a killed grader left), reachable but not listable by the kernels'
    user; without one, in /var/tmp as before."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = Path(tempfile.mkdtemp(prefix=f"cb-{dead.pid}-", dir=kernel_forkserver._base()))
    base = new_kernels_base()
    try:
        assert not left.exists()
        assert base.name.startswith(f"cb-{os.getpid()}-")
        assert (base.stat().st_mode & 0o777) == 0o711
        monkeypatch.setenv(KERNELS_BASE, str(base))
        root = kernels_root()
        assert root.parent == base and root.name.startswith(f"ck-{os.getpid()}-")
        monkeypatch.delenv(KERNELS_BASE)
        elsewhere = kernels_root()
        assert elsewhere.parent != base
        elsewhere.rmdir()
    finally:
        shutil.rmtree(base)

"""Kernels forked from a batch's warm fork server: sandboxed, adopted, signalled, replaceable."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from pipeline import landlock
from pipeline.kernel_forkserver import ForkedKernel, ForkServer
from pipeline.paths import HIDDEN_TESTS
from pipeline.preprocessors import SandboxedKernelManager

pytestmark = pytest.mark.slow

PROBE = f"""
import json, os, random, sys
def _readable(path):
    try:
        open(path).read()
        return True
    except PermissionError:
        return False
def _link(fd):
    try:
        return os.readlink(f"/proc/self/fd/{{fd}}")
    except OSError:  # the descriptor listdir itself used
        return None
_fds = [_link(fd) for fd in os.listdir("/proc/self/fd")]
print(json.dumps({{"ppid": os.getppid(), "pid": os.getpid(), "cwd": os.getcwd(),
                  "folder_importable": "" in sys.path, "torch_preloaded": "torch" in sys.modules,
                  "hidden_tests_readable": _readable({str(HIDDEN_TESTS / "common.py")!r}),
                  "random": random.random(), "fds": _fds}}))
"""


async def _printed(client, code: str, timeout: float = 60) -> str:
    """Execute ``code``; return everything it printed."""
    printed = []

    def collect(message):
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])

    await client.execute_interactive(code, timeout=timeout, output_hook=collect)
    return "".join(printed)


async def _kernel(cwd) -> tuple[SandboxedKernelManager, object]:
    manager = SandboxedKernelManager(kernel_name="python3")
    await manager.start_kernel(cwd=str(cwd))
    client = manager.client()
    client.start_channels()
    await client.wait_for_ready(timeout=120)
    return manager, client


async def _stop(manager, client) -> None:
    client.stop_channels()
    await manager.shutdown_kernel(now=True)


@pytest.fixture
def server():
    started = ForkServer.start()
    assert started is not None, "this Linux cannot run the fork server"
    yield started
    started.stop()


def test_forked_kernels_are_adopted_sandboxed_and_sealed_off_from_the_server(server, tmp_path):
    control = os.readlink(f"/proc/{server.process.pid}/fd/{server.process.args[-1]}")

    async def scenario():
        seen = []
        for name in ("first", "second"):
            (tmp_path / name).mkdir()
            manager, client = await _kernel(tmp_path / name)
            assert isinstance(manager.provisioner.process, ForkedKernel)
            seen.append(json.loads(await _printed(client, PROBE)))
            await _stop(manager, client)
        return seen

    first, second = asyncio.run(scenario())
    for probe, name in ((first, "first"), (second, "second")):
        assert probe["ppid"] == os.getpid()  # our child: jupyter_client can wait for it
        assert probe["cwd"] == str((tmp_path / name).resolve()) and probe["folder_importable"]
        assert probe["torch_preloaded"]
        assert control.startswith("socket:") and control not in probe["fds"]
        if landlock.abi_version() >= 1:
            assert not probe["hidden_tests_readable"]
    assert first["random"] != second["random"]  # each fork draws its own random numbers


def test_a_forked_kernel_can_be_interrupted_and_its_death_is_seen(server, tmp_path):
    async def scenario():
        manager, client = await _kernel(tmp_path)
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
        await _stop(manager, client)
        return interrupted, code

    interrupted, code = asyncio.run(scenario())
    assert interrupted == "KeyboardInterrupt"
    assert code == 3


def test_without_its_server_a_kernel_starts_the_ordinary_way(server, tmp_path):
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    assert ForkServer.current() is None

    async def scenario():
        manager, client = await _kernel(tmp_path)
        forked = isinstance(manager.provisioner.process, ForkedKernel)
        probe = json.loads(await _printed(client, PROBE))
        await _stop(manager, client)
        return forked, probe

    forked, probe = asyncio.run(scenario())
    assert not forked
    assert probe["ppid"] == os.getpid()
    if landlock.abi_version() >= 1:
        assert not probe["hidden_tests_readable"]

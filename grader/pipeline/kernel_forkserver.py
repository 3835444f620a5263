"""Sandboxed kernels forked from a warm process instead of started from scratch.

A fresh kernel spends about six seconds importing torch, the helpers and the hidden tests
before it runs a single cell: as long as many notebooks take to execute. A batch
(``pipeline.nbgrader_batch``) therefore starts one *fork server* that does those imports
once; every kernel of the batch is then a fork of it that sandboxes itself
(``pipeline.sandbox_kernel``) and runs ipykernel, ready in a fraction of a second.

- The server talks to the batch over a private socket pair, never a path, so no kernel
  can reach it to ask for an unsandboxed sibling; a kernel closes its copy at birth.
- The batch is a child subreaper and the server double-forks, so every kernel is the
  batch's own child: jupyter_client waits for it, signals and kills it as it would a
  kernel it had spawned (``ForkProvisioner``).
- Anything wrong with the server (it crashed, it holds threads a fork would break)
  means the kernel is started the ordinary way, with a warning in the log.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from jupyter_client.provisioning import LocalProvisioner

from pipeline import sandbox_kernel
from pipeline.paths import GRADER

PR_SET_CHILD_SUBREAPER = 36


# ---- the server: runs in its own process, started by ForkServer.start() ----

def _become_kernel(request: dict, batch_pid: int) -> None:
    """In the forked child: take the kernel's session, environment and folder, then run it."""
    os.setsid()  # its own process group, as jupyter_client gives any kernel
    for signum in (signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()  # as `python -m` in the kernel's folder would have it
    random.seed()  # every fork would otherwise draw the same "random" numbers
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    deadline = time.monotonic() + 2  # the middle process exits at once; the batch adopts us
    while os.getppid() != batch_pid and time.monotonic() < deadline:
        time.sleep(0.001)
    # ipykernel read JPY_PARENT_PID when the server imported it: say it again
    parent = f"--IPKernelApp.parent_handle={batch_pid}"
    sandbox_kernel.become_kernel([*request["arguments"], parent])


def _fork_kernel(request: dict, control_fd: int, batch_pid: int) -> int:
    """Fork twice; the grandchild becomes the kernel. Returns its pid."""
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(control_fd)  # the kernel must have no way to the server
        os.close(read_end)
        kernel = os.fork()
        if kernel:
            os.write(write_end, str(kernel).encode())
            os._exit(0)
        os.close(write_end)
        code = 1
        try:
            _become_kernel(request, batch_pid)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:  # noqa: BLE001 - a kernel must never fall back into the server loop
            import traceback
            traceback.print_exc()
        finally:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        pid = int(pipe.read())
    os.waitpid(middle, 0)
    return pid


def serve(control: socket.socket) -> None:
    """Preload, then fork a kernel for every request until the batch hangs up."""
    batch_pid = os.getppid()
    sandbox_kernel.preload()
    threads = len(os.listdir("/proc/self/task"))  # native ones (OpenMP, torch) count too
    with control, control.makefile("rwb", buffering=0) as stream:
        for line in stream:
            request = json.loads(line)
            if threads > 1:  # forking a process with threads can deadlock the child
                reply = {"error": f"the fork server runs {threads} threads"}
            else:
                reply = {"pid": _fork_kernel(request, control.fileno(), batch_pid)}
            stream.write(json.dumps(reply).encode() + b"\n")


def main() -> None:
    serve(socket.socket(fileno=int(sys.argv[1])))


# ---- the client: runs in the batch process ----

class ForkedKernel:
    """The part of ``subprocess.Popen`` jupyter_client uses, for a kernel the server forked."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: it is gone all the same
                self.returncode = -1
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # not reaped, so the pid is still this kernel's
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkServer:
    """The batch's handle on its fork server."""

    _current: ForkServer | None = None

    def __init__(self, process: subprocess.Popen, control: socket.socket, libc) -> None:
        self.process, self.control, self.libc = process, control, libc
        self.stream = control.makefile("rwb", buffering=0)
        self.lock = threading.Lock()

    @classmethod
    def start(cls) -> ForkServer | None:
        """Start this process's fork server (None where Linux cannot give it one)."""
        if os.environ.get("COURSE_FORKSERVER", "1") == "0":
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
        except (OSError, AttributeError) as error:
            print(f"kernels start the ordinary way: {error}", file=sys.stderr)
            return None
        ours, theirs = socket.socketpair()
        path = os.pathsep.join(filter(None, [str(GRADER), os.environ.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.kernel_forkserver", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONPATH=path))
        theirs.close()
        cls._current = cls(process, ours, libc)
        return cls._current

    @classmethod
    def current(cls) -> ForkServer | None:
        """The running fork server of this process, if any."""
        return cls._current if cls._current and cls._current.process.poll() is None else None

    def spawn(self, arguments: list[str], env: dict[str, str], cwd: str) -> int:
        """Fork a sandboxed kernel with ipykernel ``arguments``; returns its pid."""
        request = {"arguments": arguments, "env": env, "cwd": str(Path(cwd).resolve())}
        with self.lock:
            self.stream.write(json.dumps(request).encode() + b"\n")
            line = self.stream.readline()
        if not line:
            raise ConnectionError("the fork server hung up")
        reply = json.loads(line)
        if "error" in reply:
            raise ConnectionError(reply["error"])
        return reply["pid"]

    def stop(self) -> None:
        """Hang up (the server exits) and stop adopting orphans."""
        self.stream.close()
        self.control.close()
        self.process.wait(timeout=30)
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        if ForkServer._current is self:
            ForkServer._current = None


class ForkProvisioner(LocalProvisioner):
    """Launches the kernel as a fork of the batch's fork server, or the ordinary way."""

    async def launch_kernel(self, cmd: list[str], **kwargs):
        server = ForkServer.current()
        if server is not None:
            try:
                pid = server.spawn(sandbox_kernel.kernel_arguments(cmd), kwargs["env"],
                                   kwargs.get("cwd") or os.getcwd())
            except (OSError, ValueError) as error:
                self.log.warning("fork server failed (%s); starting the kernel the ordinary "
                                 "way", error)
            else:
                self.process = ForkedKernel(pid)
                self.pid = self.pgid = pid
                self.cwd = kwargs.get("cwd", Path.cwd())
                return self.connection_info
        return await super().launch_kernel(cmd, **kwargs)


if __name__ == "__main__":
    main()

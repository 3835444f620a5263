"""Sandboxed kernels forked from a warm, sandboxed process instead of started from scratch.

A fresh kernel spends seconds importing torch, the helpers and ipykernel before it runs
a single cell: as long as many notebooks take to execute. A batch
(``pipeline.grading.nbgrader_batch``) therefore starts one *fork server* that does those imports
once, inside bubblewrap (``pipeline.kernels.sandbox``); every kernel of the batch is then a fork
of it that gives itself namespaces, a tmpfs and limits of its own and runs ipykernel
(``pipeline.kernels.sandbox_kernel``), ready in a fraction of a second. A kernel manager with
no batch server starts a private one for its kernel (``COURSE_FORKSERVER=0`` does that
in a batch too); if even that is impossible, the kernel is started directly, with a
warning.

- The server talks to its client over a private socket pair, never a path, so no
  kernel can reach it to ask for another kernel; a kernel's monitor closes every
  descriptor of the server at birth.
- The server is the parent of every kernel's monitor. It hands the client a pidfd of the
  monitor (to signal it, wherever the pid namespaces put it) and the read end of a
  pipe on which it writes the monitor's exit code (``ForkedKernel``), which is all
  jupyter_client needs to watch, interrupt and kill the kernel.
- When the client hangs up, the server exits; the kernels' monitors die with it, and
  every kernel and descendant with them. bubblewrap dies with the batch
  (``--die-with-parent``).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pipeline import environment
from pipeline.kernels import sandbox, sandbox_kernel
from pipeline.kernels.sandbox import Setup

# ---- the server: runs in its own process, started by ForkServer.start() ----


def _drop_root(uid: int) -> None:
    """bubblewrap ran as root: undo its covers over /proc (a kernel could then not mount
    its own), then become ``uid`` for good."""
    for cover in ("sys", "sysrq-trigger", "irq", "bus"):
        try:
            sandbox.umount(f"/proc/{cover}")
        except OSError:
            pass  # not covered here
    sandbox.drop_to(uid)


def serve(control: socket.socket, setup: Setup) -> None:
    """Preload, then fork a kernel for every request until the client hangs up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the batch's Ctrl-C is the batch's business
    Path(os.environ.get("HOME", "/tmp")).mkdir(parents=True, exist_ok=True)
    sandbox_kernel.preload()
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    statuses: dict[int, int] = {}  # monitor pid -> write end of its status pipe
    with control:
        while True:
            ready = select.select([control, wake_read], [], [])[0]
            if wake_read in ready:
                while _drained(wake_read):
                    pass
                _reap(statuses)
            if control in ready:
                message = control.recv(1 << 20)
                if not message:
                    return
                request = json.loads(message)
                reply, fds = _spawn(request, setup, control, statuses, (wake_read, wake_write))
                socket.send_fds(control, [json.dumps(reply).encode()], fds)
                for fd in fds:
                    os.close(fd)


def _drained(fd: int) -> bool:
    try:
        return bool(os.read(fd, 4096))
    except BlockingIOError:
        return False


def _reap(statuses: dict[int, int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        write = statuses.pop(pid, None)
        if write is not None:
            try:
                os.write(write, str(os.waitstatus_to_exitcode(status)).encode())
            finally:
                os.close(write)


def _spawn(request: dict, setup: Setup, control: socket.socket, statuses: dict[int, int],
           wake: tuple[int, int]) -> tuple[dict, list[int]]:
    """Fork one kernel's monitor; the reply and the descriptors that go with it."""
    threads = len(os.listdir("/proc/self/task"))  # native ones (OpenMP, torch) count too
    if threads > 1:  # forking a process with threads can deadlock the child
        return {"error": f"the fork server runs {threads} threads"}, []
    status_read, status_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:  # nothing of the server stays with the kernel
            os.close(control.detach())
            for fd in (*wake, status_read, status_write, *statuses.values()):
                os.close(fd)
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sandbox_kernel.run_kernel(request, setup)
        finally:
            os._exit(1)
    statuses[pid] = status_write
    return {"pid": pid}, [os.pidfd_open(pid), status_read]


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    setup = Setup.from_json(json.loads(sys.argv[2]))
    if len(sys.argv) > 3:
        _drop_root(int(sys.argv[3]))
    serve(control, setup)


# ---- the client: runs in the batch process ----

class ForkedKernel:
    """The part of ``subprocess.Popen`` jupyter_client uses, for a kernel's monitor."""

    stdin = stdout = stderr = None

    def __init__(self, pidfd: int, status: int) -> None:
        self.pidfd, self.status = pidfd, status
        os.set_blocking(status, False)
        self.returncode: int | None = None
        self.pid = _pid(pidfd)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                data = os.read(self.status, 64)
            except BlockingIOError:
                return None
            # no code: the server went away, and the kernel with it
            self.returncode = int(data) if data.strip() else -signal.SIGKILL
            self._close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                signal.pidfd_send_signal(self.pidfd, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def _close(self) -> None:
        for fd in (self.pidfd, self.status):
            try:
                os.close(fd)
            except OSError:
                pass
        self.pidfd = self.status = -1

    def __del__(self) -> None:
        if self.pidfd >= 0:
            self._close()


def _pid(pidfd: int) -> int | None:
    """The pid (in our own pid namespace) of the process a pidfd refers to."""
    try:
        for line in Path(f"/proc/self/fdinfo/{pidfd}").read_text().splitlines():
            if line.startswith("Pid:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


KERNELS_BASE = "COURSE_KERNELS_BASE"  # where kernels_root() makes its folders, if set


def _base() -> Path:
    """Where kernels' folders go by default: short, as socket paths must be."""
    base = "/var/tmp"  # not /tmp: a kernel's parent folders are read-only to it
    if not (os.path.isdir(base) and os.access(base, os.W_OK)):
        base = tempfile.gettempdir()
    return Path(base)


def _fresh_folder(kind: str, base: Path) -> Path:
    """A new folder ``<kind>-<this pid>-*`` in ``base``, after removing those of processes
    that ended before they could remove their own (a grader or a batch that was killed)."""
    for stale in base.glob(f"{kind}-*-*"):
        try:
            os.kill(int(stale.name.split("-")[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (ValueError, PermissionError):
            pass
    return Path(tempfile.mkdtemp(prefix=f"{kind}-{os.getpid()}-", dir=base))


def new_kernels_base() -> Path:
    """A fresh folder to hold a batch's kernel folders (the batch gets its path as
    ``COURSE_KERNELS_BASE``): whoever started the batch removes it afterwards, so that
    nothing of the batch's kernels (connection files, sockets) stays behind, whatever
    became of the batch."""
    base = _fresh_folder("cb", _base())
    base.chmod(0o711)  # kernels running as another user reach their folder through it
    return base


def kernels_root() -> Path:
    """A fresh folder for kernels' connection folders: short, as socket paths must be.

    In ``COURSE_KERNELS_BASE`` when it is set (a batch's, removed with it); otherwise in
    ``/var/tmp``. Named after this process, so that the folders of one that was killed
    before it could remove them are removed by the next one.
    """
    given = os.environ.get(KERNELS_BASE, "")
    root = _fresh_folder("ck", Path(given) if given and os.path.isdir(given) else _base())
    uid = sandbox.kernel_uid()
    if uid is not None:
        os.chown(root, uid, uid)
    return root


class ForkServer:
    """The handle on a fork server: the batch's (``current``) or a kernel manager's own."""

    _current: ForkServer | None = None

    def __init__(self, process: subprocess.Popen, control: socket.socket, root: Path,
                 uid: int | None, setup: Setup) -> None:
        self.process, self.control, self.root = process, control, root
        self.uid, self.setup = uid, setup
        self.lock = threading.Lock()

    @classmethod
    def start(cls, *, private: bool = False, stderr=None) -> ForkServer | None:
        """Start a fork server (None where none can run, or COURSE_FORKSERVER=0 for a batch's).

        The batch's (``private=False``) becomes :meth:`current`. Its sandbox is reported
        on stderr, naming each protection that is off. ``stderr``: where the server and
        its kernels write (default: ours).
        """
        if not sandbox.sandboxed() or not hasattr(os, "pidfd_open") or (
                not private and os.environ.get("COURSE_FORKSERVER", "1") == "0"):
            return None
        from pipeline.paths import GRADER

        limits, off = sandbox.Limits.from_env(), {}
        namespaces = os.environ.get("COURSE_SANDBOX_NAMESPACES", "1") != "0"
        if not namespaces:  # (to try the fallback that a machine without them gets)
            off.update(dict.fromkeys(sandbox_kernel.NAMESPACED, "COURSE_SANDBOX_NAMESPACES=0"))
        bwrap, why = sandbox.bwrap_path()
        why = why or sandbox.bwrap_usable(bwrap)
        root = kernels_root()
        uid = sandbox.kernel_uid()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        data_fds = []
        if not why:
            setup = Setup(bwrap=True, namespaces=namespaces, home=sandbox.HOME,
                          hide=[sandbox.CODE_MOUNT], limits=limits, off=off)
            command = [sys.executable, "-m", "pipeline.kernels.kernel_forkserver", str(theirs.fileno()),
                       json.dumps(setup.to_json())] + ([str(uid)] if uid is not None else [])
            env = environment.fork_server_env("/tmp/home", sandbox.CODE_MOUNT)
            argv, data_fds = sandbox.bwrap_command(
                bwrap, course_root=GRADER.parent, grader=GRADER, kroot=root, command=command,
                env=env)
        else:
            off["filesystem"] = why
            uid = None  # no bubblewrap: the kernels stay the grader's user
            os.chown(root, os.getuid(), os.getgid())
            setup = Setup(bwrap=False, namespaces=namespaces, hide=[str(GRADER)], limits=limits,
                          readable=[str(p) for p in sandbox.readable_places(GRADER.parent, GRADER)],
                          off=off)
            argv = [sys.executable, "-m", "pipeline.kernels.kernel_forkserver", str(theirs.fileno()),
                    json.dumps(setup.to_json())]
            env = environment.fork_server_env(str(root / ".home"), str(GRADER))
        try:
            process = subprocess.Popen(argv, pass_fds=[theirs.fileno(), *data_fds],
                                       stdin=subprocess.DEVNULL, stderr=stderr, env=env,
                                       umask=0o022)
        except OSError as error:
            print(f"WARNING: kernel sandbox: no fork server ({error})", file=sys.stderr)
            ours.close()
            shutil.rmtree(root, ignore_errors=True)
            return None
        finally:
            theirs.close()
            for fd in data_fds:
                os.close(fd)
        if not private:
            fd = stderr if isinstance(stderr, int) else (stderr or sys.stderr).fileno()
            sys.stderr.flush()
            os.write(fd, f"{sandbox.describe(limits, off)}\n".encode())
        server = cls(process, ours, root, uid, setup)
        if not private:
            cls._current = server
        return server

    @classmethod
    def current(cls) -> ForkServer | None:
        """The running fork server of this process's batch, if any."""
        return cls._current if cls._current and cls._current.process.poll() is None else None

    def spawn(self, request: dict) -> ForkedKernel:
        """Fork a sandboxed kernel (``request``: see ``sandbox_kernel.run_kernel``)."""
        with self.lock:
            self.control.send(json.dumps(request).encode())
            message, fds, _, _ = socket.recv_fds(self.control, 1 << 16, 2)
        if not message:
            raise ConnectionError(f"the fork server hung up (exit code {self.process.poll()})")
        reply = json.loads(message)
        if "error" in reply or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            raise ConnectionError(reply.get("error", "the fork server sent no kernel"))
        return ForkedKernel(*fds)

    def stop(self) -> None:
        """Hang up: the server exits, and every kernel it forked with it."""
        self.control.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
        if ForkServer._current is self:
            ForkServer._current = None


if __name__ == "__main__":
    main()

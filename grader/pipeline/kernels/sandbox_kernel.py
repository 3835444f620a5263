"""Run a graded notebook's kernel in a sandbox of its own (see ``pipeline.kernels.sandbox``).

    python -m pipeline.kernels.sandbox_kernel -m ipykernel_launcher -f KERNEL_FOLDER/kernel.json ...

starts one kernel directly; that is the fallback for when no fork server can run. A
fork server (``pipeline.kernels.kernel_forkserver``) calls :func:`run_kernel` in a fresh fork of
its warm, already sandboxed process instead. Either way a kernel is three processes:

1. the **monitor**, which makes the kernel's user, mount, network, IPC, UTS and pid
   namespaces, passes signals on (interrupts; ``KILL_REQUEST`` kills the kernel), keeps
   the first ``COURSE_KERNEL_OUTPUT_KB`` of the kernel's own stdout/stderr (the
   descriptors, which ipykernel leaves alone here) for the grader's log and drops the
   rest, and exits with the kernel's exit code. The grader watches and signals this
   process.
2. the **init**, pid 1 of the kernel's pid namespace: mounts its own ``/proc`` and one
   size-capped tmpfs (its home, which is also its working folder, ``/tmp`` and
   ``/dev/shm``), covers the sandbox code and every other kernel's folder, sets the
   limits, drops every capability and locks itself with Landlock, then forks the kernel
   and reaps orphans. When the kernel exits, the init exits, and Linux kills everything
   left in the namespace.
3. the **kernel**: a whitelisted environment, its home as working folder (whose parents
   it can neither write nor list), nothing of the grader on ``sys.path`` or in
   ``sys.modules``, then ipykernel.

Each step that the machine refuses is named on stderr (``WARNING: kernel sandbox:
OFF: ...``) and grading goes on without it. ``COURSE_SANDBOX=0`` runs plain kernels.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import random
import resource
import runpy
import select
import signal
import sys
import tempfile
import traceback
from pathlib import Path

from pipeline import environment
from pipeline.kernels import landlock, sandbox
from pipeline.kernels.sandbox import Setup

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)
KILL_REQUEST = signal.SIGUSR2  # to the monitor: kill the kernel, keep its last words, exit
NAMESPACED = ("network", "private", "pid", "proc", "ipc", "tasks")
CODE = Path(__file__).resolve().parents[2]  # the folder that holds `pipeline`


def preload() -> None:
    """Import what every notebook imports, so that a forked kernel need not."""
    # ipykernel chooses this backend itself, but only once it starts: matplotlib, imported
    # now through the helpers, must pick the inline backend too.
    os.environ.setdefault("MPLBACKEND", environment.INLINE_BACKEND)
    for name in ("numpy", "torch", "torch.nn.functional", "torch._dynamo", "matplotlib.pyplot",
                 "matplotlib_inline.backend_inline", "tqdm.auto", "ipykernel.kernelapp",
                 "ipykernel.ipkernel"):
        importlib.import_module(name)
    helpers = importlib.import_module("helpers")
    for module in pkgutil.walk_packages(helpers.__path__, "helpers."):
        importlib.import_module(module.name)


def kernel_arguments(command: list[str]) -> list[str]:
    """The arguments after ``-m ipykernel_launcher`` in ``command``; a clear error otherwise."""
    for i in range(len(command) - 1):
        if command[i:i + 2] == ["-m", "ipykernel_launcher"]:
            return command[i + 2:]
    raise ValueError(f"expected `-m ipykernel_launcher ...` in the kernel command, got "
                     f"{' '.join(command)!r}")


# ---- 1. the monitor -----------------------------------------------------------------------

def run_kernel(request: dict, setup: Setup) -> None:
    """Become a sandboxed kernel's monitor; never returns (exits with the kernel's code).

    ``request``: ``folder`` (the kernel's folder: ``kernel.json`` and its sockets),
    ``arguments`` (ipykernel's), ``env`` (what the grader would give a kernel; only
    :data:`environment.KEPT_VARIABLES` survive) and ``name`` (for the log).
    """
    code = 1
    try:
        os.setsid()  # a session of its own: no terminal, no group shared with the grader
    except OSError:
        pass  # already a session leader (started directly)
    try:
        sandbox.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)  # the server gone: gone too
        off = dict(setup.off)
        namespaces = setup.namespaces and _unshare(off)
        output, kernel_output = os.pipe()
        init = os.fork()
        if init == 0:
            os.close(output)
            _run_init(request, setup, namespaces, off, kernel_output, os.getppid())
        os.close(kernel_output)
        code = _monitor(init, output, request.get("name", "?"), setup.limits.output_kb)
    except BaseException:  # noqa: BLE001 - the monitor must end here, whatever happened
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def _unshare(off: dict[str, str]) -> bool:
    """Enter the kernel's own namespaces (all but pid, which its children get)."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        sandbox.unshare(sandbox.CLONE_NEWUSER | sandbox.CLONE_NEWNS | sandbox.CLONE_NEWNET
                        | sandbox.CLONE_NEWIPC | sandbox.CLONE_NEWUTS | sandbox.CLONE_NEWPID)
        sandbox.map_own_ids(uid, gid)
    except OSError as error:
        for name in NAMESPACED:
            off.setdefault(name, f"no user namespace ({error.strerror or error})")
        return False
    if uid == 0:
        off.setdefault("tasks", "the kernel runs as root (a root grader without bubblewrap)")
    return True


def _monitor(init: int, output: int, name: str, limit_kb: int) -> int:
    """Pass signals on, keep the kernel's output within bounds, wait; the exit code."""
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, _frame: _send(init, signum))
    signal.signal(KILL_REQUEST, lambda *_: _send(init, signal.SIGKILL))
    sink = _Sink(name, limit_kb * 1024)
    watched = [output, wake_read]
    while True:
        pid, status = os.waitpid(init, os.WNOHANG)
        if pid:
            break
        for ready in select.select(watched, [], [], 5.0)[0]:
            data = os.read(ready, 1 << 16)
            if ready == output:
                sink.write(data)
                if not data:
                    watched.remove(output)
    os.set_blocking(output, False)
    try:  # what the kernel wrote last (its writers are gone: this ends)
        while data := os.read(output, 1 << 16):
            sink.write(data)
    except BlockingIOError:
        pass
    sink.close()
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


class _Sink:
    """The kernel's own stdout/stderr: the first ``limit`` bytes go to the log, line by line."""

    def __init__(self, name: str, limit: int) -> None:
        self.prefix, self.limit = f"[kernel {name}] ".encode(), limit
        self.kept = self.dropped = 0
        self.partial = b""

    def write(self, data: bytes) -> None:
        room = max(0, self.limit - self.kept)
        self.kept += min(room, len(data))
        self.dropped += len(data) - min(room, len(data))
        lines = (self.partial + data[:room]).split(b"\n")
        self.partial = lines.pop()
        if lines:
            self._emit(b"".join(self.prefix + line + b"\n" for line in lines))

    def close(self) -> None:
        tail = self.prefix + self.partial + b"\n" if self.partial else b""
        if self.dropped:
            tail += self.prefix + (f"... {self.dropped} more bytes of the kernel's own output "
                                   f"dropped (at most {self.limit // 1024} KiB are kept)\n").encode()
        self._emit(tail)

    @staticmethod
    def _emit(data: bytes) -> None:
        while data:
            try:
                data = data[os.write(2, data):]
            except OSError:
                return


# ---- 2. the init ---------------------------------------------------------------------------

def _run_init(request: dict, setup: Setup, namespaces: bool, off: dict[str, str],
              output: int, monitor: int) -> None:
    """Finish the sandbox, fork the kernel, reap; never returns."""
    code = 1
    try:
        for signum in (*FORWARDED, KILL_REQUEST):  # nothing to pass them on to yet
            signal.signal(signum, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)
        sandbox.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != monitor:
            return
        folder = Path(request["folder"])
        home = Path(setup.home) if setup.bwrap and namespaces else folder / "home"
        if namespaces:
            _mount(setup, folder, home, off)
        else:
            home.mkdir(exist_ok=True)
        for sub in (".tmp", ".shm", ".config", ".ipython"):
            (home / sub).mkdir(exist_ok=True)
        _limit(setup.limits, namespaces and "tasks" not in off)
        if namespaces:
            sandbox.drop_capabilities()
        _lock(setup, folder, home, namespaces, off)
        if off:
            print(sandbox.describe(setup.limits, off).split("\n", 1)[-1], file=sys.stderr,
                  flush=True)
        init = os.getpid()
        kernel = os.fork()
        if kernel == 0:
            _run_kernel_process(request, home, output, init)
        os.close(output)
        code = _reap(kernel)
    except BaseException:  # noqa: BLE001 - never fall back into the caller's code
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def python_under_tmp(hidden: list[str]) -> list[str]:
    """Python's installation, the venv and ``helpers`` where they live under /tmp (a course
    cloned there), outermost first; never a hidden folder (the grader's) or one inside it."""
    helpers = importlib.util.find_spec("helpers")
    places = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                          *(helpers.submodule_search_locations or ()))}
    places = {p for p in places if p.is_relative_to("/tmp") and p.is_dir()
              and not any(p.is_relative_to(h) or Path(h).is_relative_to(p) for h in hidden)}
    return [str(p) for p in sorted(places)
            if not any(p != q and p.is_relative_to(q) for q in places)]


def _mount(setup: Setup, folder: Path, home: Path, off: dict[str, str]) -> None:
    """The kernel's own /proc, tmpfs and folders; everything of other kernels covered."""
    hidden = sandbox.MS_NOSUID | sandbox.MS_NODEV | sandbox.MS_NOEXEC
    sandbox.mount(None, "/", None, sandbox.MS_REC | sandbox.MS_PRIVATE)
    try:
        sandbox.mount("proc", "/proc", "proc", hidden)
    except OSError as error:
        off["proc"] = f"a new /proc was refused ({error.strerror})"
    own = os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        home.mkdir(exist_ok=True)
        limits = setup.limits
        sandbox.mount("tmpfs", str(home), "tmpfs", sandbox.MS_NOSUID | sandbox.MS_NODEV,
                      f"size={limits.disk_mb}m,nr_inodes={max(1024, limits.disk_mb * 256)},"
                      "mode=0700")
        # Python itself may live under /tmp (a course cloned there): keep a handle on it
        # before /tmp is covered, and bind it back, read-only, on top of the kernel's /tmp
        kept = [(place, os.open(place, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
                for place in python_under_tmp(setup.hide)]
        for target, sub in (("/dev/shm", ".shm"), ("/tmp", ".tmp")):  # /tmp last: it may hold home
            (home / sub).mkdir()
            if os.path.isdir(target):
                sandbox.mount(str(home / sub), target, None, sandbox.MS_BIND)
        for place, handle in kept:
            os.makedirs(place, exist_ok=True)
            sandbox.mount(f"/proc/self/fd/{handle}", place, None, sandbox.MS_BIND)
            sandbox.mount(None, place, None, sandbox.MS_REMOUNT | sandbox.MS_BIND
                          | sandbox.MS_RDONLY | sandbox.MS_NOSUID | sandbox.MS_NODEV)
            os.close(handle)
        for path in setup.hide:
            if os.path.isdir(path):
                sandbox.mount("tmpfs", path, "tmpfs", hidden | sandbox.MS_RDONLY, "size=4k")
        # the kernel's own folder (connection file, sockets) at its path; its siblings,
        # the other kernels' folders, covered
        root = folder.parent
        root.mkdir(parents=True, exist_ok=True)  # (gone if it was under the old /tmp)
        sandbox.mount("tmpfs", str(root), "tmpfs", hidden, "size=64k,mode=0755")
        folder.mkdir()
        sandbox.mount(f"/proc/self/fd/{own}", str(folder), None,
                      sandbox.MS_BIND | sandbox.MS_REC)
        sandbox.mount(None, str(root), None,
                      sandbox.MS_REMOUNT | sandbox.MS_BIND | sandbox.MS_RDONLY | hidden)
    finally:
        os.close(own)
    try:  # its own pseudo-terminals, if it makes any
        sandbox.mount("devpts", "/dev/pts", "devpts", sandbox.MS_NOSUID | sandbox.MS_NOEXEC,
                      "newinstance,ptmxmode=0666,mode=0620")
    except OSError:
        pass
    for step in (sandbox.loopback_up, lambda: sandbox.sethostname("sandbox")):
        try:
            step()
        except OSError:
            pass


def _limit(limits: sandbox.Limits, tasks: bool) -> None:
    size = limits.disk_mb * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if tasks:  # counted in the kernel's own user namespace: its processes and threads only
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.tasks, limits.tasks))


def _lock(setup: Setup, folder: Path, home: Path, namespaces: bool, off: dict[str, str]) -> None:
    """Landlock: read what the kernel may read, write only its own folders."""
    if setup.bwrap:  # everything in sight but "/" and "/home" themselves (nothing to list)
        read = [Path("/", name) for name in os.listdir("/") if name != "home"]
    else:
        read = [*map(Path, setup.readable), folder]
    rules = [(p, landlock.READ) for p in read]
    rules += [(home, landlock.EVERYTHING)]
    if namespaces:  # /tmp and /dev/shm are the kernel's own
        rules += [(Path("/tmp"), landlock.EVERYTHING), (Path("/dev/shm"), landlock.EVERYTHING)]
    rules += [(folder, landlock.READ | landlock.MAKE_SOCK | landlock.REMOVE_FILE)]
    rules += [(Path(device), landlock.DEVICE) for device in sandbox.DEVICES]
    try:
        landlock.restrict(rules=rules, deny_tcp="network" in off)
    except OSError as error:
        off["landlock"] = str(error)


def _reap(kernel: int) -> int:
    """Pass signals to the kernel, reap every orphan; the kernel's exit code."""
    for signum in FORWARDED:
        signal.signal(signum, lambda signum, _frame: _send(kernel, signum))
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 1
        if pid == kernel:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


# ---- 3. the kernel -------------------------------------------------------------------------

def _run_kernel_process(request: dict, home: Path, output: int, init: int) -> None:
    code = 1
    try:
        # the init gone (killed), the kernel goes too, pid namespace or not
        sandbox.prctl(sandbox.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != init:
            return
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in (*FORWARDED[1:], KILL_REQUEST, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        code = become_kernel(request["arguments"], request.get("env", {}), home)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001 - a kernel must never fall back into the server loop
        traceback.print_exc()
    finally:
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(code)


def become_kernel(arguments: list[str], env: dict[str, str], home: Path) -> int:
    """Forget the grader (environment, paths, modules), then run ipykernel here."""
    os.environ.clear()
    os.environ.update(environment.graded_kernel_env(env, str(home)))
    os.chdir(home)  # its parents: read-only, unlistable
    hidden = {str(CODE), sandbox.CODE_MOUNT, "", "/"}  # (IPython puts "", the home, back)
    sys.path[:] = [p for p in sys.path if p not in hidden]
    for name in [n for n in sys.modules if n == "pipeline" or n.startswith("pipeline.")]:
        del sys.modules[name]
    tempfile.tempdir = None
    random.seed()  # every fork would otherwise draw the same "random" numbers
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:
        sys.modules["torch"].seed()
    # parent_handle=1: no parent polling (its parent is its pid namespace's init) and no
    # connection banner; capture_fd_output=False: what is written to the descriptors 1 and
    # 2 themselves (sys.__stderr__, C code, child processes) stays in the bounded log and
    # is not copied into the notebook
    sys.argv = ["ipykernel_launcher", *arguments, "--IPKernelApp.parent_handle=1",
                "--IPKernelApp.capture_fd_output=False"]
    runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
    return 0


# ---- started directly ----------------------------------------------------------------------

def local_setup() -> Setup:
    """How a kernel started without a fork server (so without bubblewrap) is confined."""
    from pipeline.paths import GRADER

    off = {"filesystem": "the kernel was started without its fork server"}
    namespaces = os.environ.get("COURSE_SANDBOX_NAMESPACES", "1") != "0"
    if not namespaces:
        off.update(dict.fromkeys(NAMESPACED, "COURSE_SANDBOX_NAMESPACES=0"))
    return Setup(bwrap=False, namespaces=namespaces, hide=[str(GRADER)],
                 readable=[str(p) for p in sandbox.readable_places(GRADER.parent, GRADER)],
                 limits=sandbox.Limits.from_env(), off=off)


def main() -> None:
    try:
        arguments = kernel_arguments(sys.argv[1:])
    except ValueError as error:
        raise SystemExit(str(error)) from None
    if not sandbox.sandboxed():
        sys.argv = ["ipykernel_launcher", *arguments]
        runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
        return
    connection = Path(arguments[arguments.index("-f") + 1]).resolve()
    request = {"folder": str(connection.parent), "arguments": arguments,
               "env": dict(os.environ), "name": connection.parent.name}
    run_kernel(request, local_setup())


if __name__ == "__main__":
    main()

"""The student-kernel sandbox: its policy, and the Linux calls that enforce it.

Every graded kernel runs in two nested sandboxes (``pipeline.kernels.sandbox_kernel`` builds the
inner one, ``pipeline.kernels.kernel_forkserver`` starts the outer one):

- **Per batch, bubblewrap** (``bwrap``, Debian package ``bubblewrap``; ``make
  setup-sandbox`` installs it). The batch's fork server runs in a file system of its own
  (:func:`bwrap_command`): the system folders, the Python installation, the virtual
  environment, the course's public ``helpers`` package and the sandbox code itself, all
  read-only; nothing else of the host (no ``grader/`` with its hidden tests and
  gradebook, no ``solutions/``, no other student's folder, no home folder). It has no
  network, its own pid, IPC and UTS namespaces and an empty environment plus a few
  settings. Run as root, bubblewrap keeps no user namespace, so the server drops to an
  unprivileged user (``COURSE_SANDBOX_UID``, default 65534) before it imports anything.
- **Per kernel, namespaces of its own**, made by the forked kernel itself in a user
  namespace (so that it may mount) and then sealed with Landlock: its own network
  namespace (nothing but a loopback of its own), pid namespace (every descendant dies
  with the kernel), IPC and UTS namespaces, its own ``/proc``, and one size-capped tmpfs
  that is its home and working folder, ``/tmp`` and ``/dev/shm``, gone with the kernel. ``RLIMIT_NPROC`` caps its processes and threads (counted per user
  namespace, so one kernel's fork bomb costs no other kernel anything), ``RLIMIT_FSIZE``
  any file it writes, and its own stdout/stderr go through a pipe of which only the
  first ``COURSE_KERNEL_OUTPUT_KB`` reach the grader's log.

Where something is unavailable (no bubblewrap, no unprivileged user namespaces, no
Landlock, not Linux) grading still works: every kernel still gets what the machine
allows, and a line on stderr names each protection that is off (:func:`report`, or
``python -m pipeline.kernels.sandbox``). ``COURSE_BWRAP=0`` leaves bubblewrap out;
``COURSE_BWRAP=/path/to/bwrap`` picks one; ``COURSE_SANDBOX_NAMESPACES=0`` leaves the
per-kernel namespaces out (to try what a machine without them gets). Limits:
``COURSE_KERNEL_DISK_MB`` (256), ``COURSE_KERNEL_TASKS`` (256),
``COURSE_KERNEL_OUTPUT_KB`` (64).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import importlib.util
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

# ---- the policy ---------------------------------------------------------------------------

HOME = "/home/student"  # a sandboxed kernel's home, inside bubblewrap
CODE_MOUNT = "/run/course"  # where the server finds `pipeline` inside bubblewrap (kernels: empty)
SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys",
               "/dev", "/opt")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "fonts", "localtime",
       "timezone", "nsswitch.conf", "mime.types", "host.conf", "gai.conf")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

PROTECTIONS = {  # name -> what it gives; the report says which are on and why one is off
    "filesystem": "a minimal read-only file system (bubblewrap): grader/, solutions/, the "
                  "gradebook and other students' folders absent",
    "network": "no network (own network namespace)",
    "private": "own /tmp, /dev/shm, home and working folder (tmpfs of {disk_mb} MiB)",
    "pid": "every descendant killed with the kernel (own pid namespace)",
    "proc": "own /proc",
    "ipc": "own IPC namespace",
    "tasks": "at most {tasks} processes and threads",
    "landlock": "Landlock: writes only to its own folders, no signal or ptrace beyond itself",
    "environment": "whitelisted environment",
    "output": "its own stdout/stderr capped at {output_kb} KiB in the grader's log",
    "file_size": "files capped at {disk_mb} MiB each",
}


@dataclass
class Limits:
    """What one kernel may use."""

    disk_mb: int = 256
    tasks: int = 256
    output_kb: int = 64

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        return cls(disk_mb=int(env.get("COURSE_KERNEL_DISK_MB", cls.disk_mb)),
                   tasks=int(env.get("COURSE_KERNEL_TASKS", cls.tasks)),
                   output_kb=int(env.get("COURSE_KERNEL_OUTPUT_KB", cls.output_kb)))


@dataclass
class Setup:
    """How the kernels of one fork server (or one directly started kernel) are confined."""

    bwrap: bool = False  # inside bubblewrap's file system
    namespaces: bool = True  # try a user namespace (and the rest) per kernel
    home: str = HOME  # inside bubblewrap; elsewhere <kernel folder>/home
    hide: list[str] = field(default_factory=list)  # folders each kernel covers with an empty tmpfs
    readable: list[str] = field(default_factory=list)  # Landlock's readable folders ([] = all)
    limits: Limits = field(default_factory=Limits)
    off: dict[str, str] = field(default_factory=dict)  # protections known to be off, and why

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Setup:
        return cls(**{**data, "limits": Limits(**data["limits"])})


def sandboxed() -> bool:
    """Whether kernels are sandboxed at all (``COURSE_SANDBOX=0`` turns it off)."""
    return os.environ.get("COURSE_SANDBOX", "1") != "0"


def kernel_uid() -> int | None:
    """The user a root grader's kernels run as (None when the grader is not root)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    return int(os.environ.get("COURSE_SANDBOX_UID", "65534"))


def describe(limits: Limits, off: Mapping[str, str]) -> str:
    """One line naming the protections that are on, then one per protection that is off."""
    words = asdict(limits)
    on = [name for name in PROTECTIONS if name not in off]
    lines = [f"kernel sandbox: on: {', '.join(on) or 'nothing'}"]
    lines += [f"WARNING: kernel sandbox: OFF: {PROTECTIONS[name].format(**words)} -- {why}"
              for name, why in off.items()]
    return "\n".join(lines)


# ---- what the machine offers --------------------------------------------------------------

def bwrap_path() -> tuple[str | None, str]:
    """bubblewrap's path, or None and why it is not used."""
    choice = os.environ.get("COURSE_BWRAP", "")
    if choice == "0":
        return None, "COURSE_BWRAP=0"
    if platform.system() != "Linux":
        return None, f"bubblewrap needs Linux, this is {platform.system()}"
    path = choice or shutil.which("bwrap") or ""
    if not path or not os.access(path, os.X_OK):
        return None, (f"{choice} is not an executable" if choice else
                      "bubblewrap is not installed (`make setup-sandbox`, or apt-get install "
                      "bubblewrap)")
    return path, ""


@functools.cache
def bwrap_usable(path: str) -> str:
    """'' when ``path`` can build the fork server's sandbox here, else why not."""
    probe = [path, *_namespace_flags(), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
             "--", "true"]
    try:
        run = subprocess.run(probe, capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{path} could not run: {error}"
    return "" if run.returncode == 0 else f"{path} refused to start: {run.stderr.strip()[-300:]}"


@functools.cache
def userns_usable() -> str:
    """'' when an unprivileged process may make the namespaces a kernel needs, else why not."""
    if platform.system() != "Linux":
        return f"namespaces need Linux, this is {platform.system()}"
    pid = os.fork()
    if pid == 0:
        try:
            if kernel_uid() is not None:
                drop_to(kernel_uid())
            unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC)
            code = 0
        except OSError as error:
            code = error.errno or 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return "" if code == 0 else f"unshare(CLONE_NEWUSER) refused: {os.strerror(code)}"


def report() -> str:
    """What a kernel started now would get, in the words of :func:`describe`."""
    from pipeline.kernels import landlock

    limits, off = Limits.from_env(), {}
    if not sandboxed():
        return "WARNING: kernel sandbox: OFF entirely (COURSE_SANDBOX=0)"
    path, why = bwrap_path()
    why = why or bwrap_usable(path)
    if why:
        off["filesystem"] = why
    userns = userns_usable() if platform.system() == "Linux" else "not Linux"
    if userns:
        for name in ("network", "private", "pid", "proc", "ipc", "tasks"):
            off[name] = userns
    elif why and kernel_uid() is not None:
        off["tasks"] = "a root grader without bubblewrap keeps its kernels root"
    if landlock.abi_version() < 1:
        off["landlock"] = "Landlock is not available (Linux >= 5.13 with Landlock enabled)"
    return describe(limits, off)


# ---- bubblewrap: the per-batch file system ------------------------------------------------

def _namespace_flags() -> list[str]:
    flags = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
             "--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    if kernel_uid() is None:
        return [*flags, "--unshare-user"]
    # root: no user namespace, so that the server can drop to an unprivileged user itself
    return [*flags, "--cap-drop", "ALL", "--cap-add", "CAP_SYS_ADMIN", "--cap-add",
            "CAP_SETUID", "--cap-add", "CAP_SETGID"]


def python_places(course_root: Path, grader: Path) -> list[Path]:
    """The folders the kernel's Python needs: the installation, the venv, ``helpers``.

    Nothing under ``grader/``, and no folder that holds the course (its other children
    are listed instead, see :func:`carve_out`).
    """
    # the course's own package, readable (it is public); found, not imported: importing it
    # imports numpy, whose thread pool would forbid a later unshare(CLONE_NEWUSER)
    helpers = importlib.util.find_spec("helpers")
    places = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    places.add(Path(sys.executable).resolve().parent)
    places |= {Path(p).resolve() for p in helpers.submodule_search_locations or ()}
    places |= {Path(entry).resolve() for entry in sys.path if entry and Path(entry).is_dir()}
    system = {Path("/", name) for name in SYSTEM} | {Path("/etc")}
    places = {p for p in places if p.is_dir() and not any(p == s or p.is_relative_to(s)
                                                          for s in system)}
    kept = carve_out(places, course_root, grader)
    return sorted(p for p in kept if not any(p != q and p.is_relative_to(q) for q in kept))


def readable_places(course_root: Path, grader: Path) -> list[Path]:
    """Without bubblewrap, what Landlock lets a kernel read: system folders and Python."""
    places = {Path(p) for p in SYSTEM_DIRS if Path(p).is_dir()}
    places |= set(python_places(course_root, grader))
    return sorted(carve_out(places, course_root, grader))


def carve_out(places: set[Path], root: Path, grader: Path) -> set[Path]:
    """``places`` minus ``grader``, and minus the course ``root`` where a place holds it.

    A place inside the grader's folder is dropped. A place that holds the course (a course
    cloned under /opt, say) is replaced by its other children, all the way down, so the
    course's folders are not readable through it; places inside the course but outside
    ``grader/`` (the venv, ``helpers``) stay.
    """
    kept = set()
    for place in places:
        if place == grader or place.is_relative_to(grader):
            continue
        if root == place or root.is_relative_to(place):
            current = place
            for part in root.relative_to(place).parts:
                kept |= {child for child in current.iterdir() if child.name != part}
                current = current / part
        else:
            kept.add(place)
    return kept


def _data_fd(text: str) -> int:
    """A pipe holding ``text`` (small), for bubblewrap's --ro-bind-data."""
    read, write = os.pipe()
    os.write(write, text.encode())
    os.close(write)
    return read


def bwrap_command(bwrap: str, *, course_root: Path, grader: Path, kroot: Path,
                  command: list[str], env: Mapping[str, str]) -> tuple[list[str], list[int]]:
    """bubblewrap's command line for a fork server, and the descriptors it must inherit."""
    args, fds, made = [bwrap, *_namespace_flags(), "--hostname", "sandbox"], [], set()

    def folder(path: Path) -> None:  # every ancestor made traversable for an unprivileged user
        for ancestor in reversed([path, *path.parents]):
            if str(ancestor) != "/" and ancestor not in made:
                made.add(ancestor)
                args.extend(["--perms", "0755", "--dir", str(ancestor)])

    for name in SYSTEM:
        path = Path("/", name)
        if path.is_symlink():
            args.extend(["--symlink", os.readlink(path), str(path)])
        elif path.is_dir():
            args.extend(["--ro-bind", str(path), str(path)])
            made.add(path)
    folder(Path("/etc"))
    for name in ETC:
        args.extend(["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"])
    if Path("/sys/devices/system/cpu").is_dir():  # how many cores there are
        folder(Path("/sys/devices/system"))
        args.extend(["--ro-bind", *["/sys/devices/system/cpu"] * 2])
    uid, gid = os.getuid(), os.getgid()
    users = {0: "root", uid: "grader", kernel_uid() or uid: "student"}
    for name, text in (
            ("passwd", "".join(f"{n}:x:{u}:{u}::{HOME}:/bin/sh\n" for u, n in users.items())),
            ("group", "".join(f"{n}:x:{u}:\n" for u, n in {0: "root", gid: "grader",
                                                            kernel_uid() or gid: "student"}.items())),
            ("hosts", "127.0.0.1 localhost\n::1 localhost\n")):
        fds.append(_data_fd(text))
        args.extend(["--ro-bind-data", str(fds[-1]), f"/etc/{name}"])
    # /proc, /dev and /tmp first: a course cloned under /tmp is bound on top of the tmpfs
    args.extend(["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
                 "--perms", "1777", "--size", str(64 * 2**20), "--tmpfs", "/tmp"])
    made |= {Path("/proc"), Path("/dev"), Path("/tmp")}
    for place in python_places(course_root, grader):
        folder(place.parent)
        args.extend(["--ro-bind", str(place), str(place)])
        made.add(place)
    folder(Path(CODE_MOUNT))
    args.extend(["--ro-bind", str(grader / "pipeline"), f"{CODE_MOUNT}/pipeline"])
    folder(Path(HOME))
    folder(kroot.parent)
    args.extend(["--bind", str(kroot), str(kroot), "--remount-ro", "/", "--chdir", "/",
                 "--clearenv"])
    for name, value in env.items():
        args.extend(["--setenv", name, value])
    return [*args, "--", *command], fds


# ---- Linux calls --------------------------------------------------------------------------

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_CAPABILITY_VERSION_3 = 0x20080522
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

_libc = ctypes.CDLL(None, use_errno=True) if platform.system() == "Linux" else None


def _check(result: int, what: str) -> int:
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")
    return result


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def mount(source: str | None, target: str, kind: str | None, flags: int = 0,
          options: str | None = None) -> None:
    def encode(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    _check(_libc.mount(encode(source), encode(target), encode(kind), ctypes.c_ulong(flags),
                       encode(options)), f"mount {target}")


def umount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"umount {target}")


def prctl(option: int, value: int = 0) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0), f"prctl({option})")


def sethostname(name: str) -> None:
    _check(_libc.sethostname(name.encode(), len(name)), "sethostname")


def map_own_ids(uid: int, gid: int) -> None:
    """In a fresh user namespace: be ``uid``/``gid`` there too (the only ids mapped)."""
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def drop_to(uid: int) -> None:
    """root -> ``uid`` for good (all capabilities go), still able to make namespaces."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    prctl(PR_SET_DUMPABLE, 1)  # a changed uid clears it; /proc/self/uid_map needs it


def drop_capabilities() -> None:
    """No capability left, and none that could come back (bounding and ambient sets)."""
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:  # past the last capability
                break
    _libc.prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capset(header, data), "capset")


def loopback_up() -> None:
    """Bring up ``lo`` of a fresh network namespace (it reaches nothing but itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


if __name__ == "__main__":
    print(report())

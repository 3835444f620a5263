"""Linux Landlock through ctypes: a process takes away its own file-system and TCP rights.

Landlock (Linux >= 5.13) needs no privileges and no extra package: a process lists the
folders it may still read, the folders it may still write (and how), and from then on
it and every child it starts can touch nothing else, whatever user it runs as. It also
forbids mounts, ptrace of processes outside the sandbox, signals to them (ABI >= 6) and,
on request, every TCP bind and connect (ABI >= 4).

In the kernel sandbox (``pipeline.kernels.sandbox_kernel``) it is the last lock: inside
bubblewrap it limits writes to the kernel's own tmpfs (its connection folder, on the
host's disk, takes sockets only) and keeps sibling kernels from tracing or signalling
each other; without bubblewrap it is also what keeps the course's files unreadable.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Iterable
from pathlib import Path

_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Access rights, and the ABI version that introduced each.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
_WRITE_RIGHTS_V1 = sum(1 << bit for bit in range(4, 13))  # remove, make dir/file/sock/...
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = EXECUTE | READ_FILE | READ_DIR
EVERYTHING = (1 << 16) - 1  # cut down to what the running kernel handles
DEVICE = READ_FILE | WRITE_FILE | IOCTL_DEV  # /dev/null and the like
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # the kernel's struct is __attribute__((packed))
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The Landlock ABI the running kernel offers; 0 where there is none."""
    numbers = _SYSCALLS.get(platform.machine())
    if platform.system() != "Linux" or numbers is None:
        return 0
    version = _libc.syscall(numbers[0], None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(version, 0)


def handled_rights(abi: int) -> int:
    rights = EXECUTE | WRITE_FILE | READ_FILE | READ_DIR | _WRITE_RIGHTS_V1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"landlock: {what}: {os.strerror(errno)}")
    return result


def restrict(*, read: Iterable[Path] = (), write: Iterable[Path] = (),
             files: Iterable[Path] = (), rules: Iterable[tuple[Path, int]] = (),
             deny_tcp: bool = False) -> int:
    """Allow reading (and executing) only beneath ``read``, writing only beneath ``write``.

    ``files`` are single files that stay readable; ``rules`` are further (path, rights)
    pairs (rights from this module: ``READ``, ``EVERYTHING``, ``MAKE_SOCK``...; rights on
    a path add up with those of the folders above it). ``deny_tcp`` forbids every TCP
    bind and connect (ABI >= 4; ignored below). Applies to the calling thread and every
    process it starts, for good. Also forbids signals to processes outside the sandbox
    and connecting to abstract unix sockets made outside it where the kernel supports it
    (ABI >= 6). Returns the ABI version used; raises ``OSError`` where Landlock is
    unavailable.
    """
    abi = abi_version()
    if abi < 1:
        raise OSError("landlock is not available (Linux >= 5.13 with Landlock enabled needed)")
    create, add_rule, restrict_self = _SYSCALLS[platform.machine()]
    handled = handled_rights(abi)
    net = NET_BIND_TCP | NET_CONNECT_TCP if deny_tcp and abi >= 4 else 0
    scoped = SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET if abi >= 6 else 0
    attr = _RulesetAttr(handled, net, scoped)
    size = 24 if scoped else 16 if net else 8
    ruleset = _check(_libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), 0),
                     "create_ruleset")
    try:
        every = [(p, READ) for p in read]
        every += [(p, EVERYTHING) for p in write]
        every += [(p, EXECUTE | READ_FILE) for p in files]
        every += list(rules)
        for path, rights in every:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                rights &= handled
                if not os.path.isdir(path):
                    rights &= _FILE_ONLY
                if not rights:
                    continue
                rule = _PathBeneathAttr(rights, fd)
                _check(_libc.syscall(add_rule, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0),
                       f"add_rule({path})")
            finally:
                os.close(fd)
        _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        _check(_libc.syscall(restrict_self, ruleset, 0), "restrict_self")
    finally:
        os.close(ruleset)
    return abi

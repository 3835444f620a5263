"""Read and write files nobody vouches for.

Everything under a submissions folder or an exchange, and everything a kernel leaves in
its folder, is untrusted: it is opened without following links (``O_NOFOLLOW``, walking
from a folder the grader trusts), a FIFO, device or socket is never opened for reading,
and sizes are capped. Files the grader writes next to untrusted ones are created new,
never through a name a student could have placed.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

MAX_NOTEBOOK_BYTES = 64 * 2**20  # a submitted notebook; a graded notebook or feedback page

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UntrustedFileError(OSError):
    """A file the grader will not read: a link, a special file, or one over the size cap."""


def describe(mode: int) -> str:
    """What a ``stat`` mode is, in words."""
    for test, words in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISREG, "a file")):
        if test(mode):
            return words
    return "a special file"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def refusal(mode: int, size: int, max_bytes: int) -> str:
    """Why a file with this lstat mode and size is refused ("" when it is acceptable)."""
    if stat.S_ISLNK(mode):
        return "is a symbolic link (links are never followed)"
    if not stat.S_ISREG(mode):
        return f"is {describe(mode)}, not a regular file"
    if size > max_bytes:
        return f"is {_size(size)}, over the {_size(max_bytes)} limit"
    return ""


def _open_dir(base: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of ``base/parts...``, never following a link below ``base``."""
    fd = os.open(base, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for part in parts:
            if part in ("", ".", ".."):
                raise UntrustedFileError(f"path component {part!r} refused")
            try:
                child = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    mode = os.lstat(part, dir_fd=fd).st_mode
                    raise UntrustedFileError(f"{part} is {describe(mode)}, "
                                             "not a folder") from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _split(path: Path, base: Path | None) -> tuple[Path, tuple[str, ...], str]:
    path = Path(path)
    if base is None:
        return path.parent, (), path.name
    relative = path.relative_to(base)
    return Path(base), relative.parts[:-1], relative.parts[-1]


def open_untrusted(path: Path, max_bytes: int, *, base: Path | None = None) -> int:
    """A read-only descriptor of the regular file ``path``, at most ``max_bytes`` long.

    Refuses (``UntrustedFileError``) a link, a FIFO, a device, a socket, a folder or a file
    over ``max_bytes``. With ``base`` (a folder the caller trusts, above ``path``), no
    folder between ``base`` and ``path`` may be a link either. The caller closes the
    descriptor.
    """
    top, folders, name = _split(path, base)
    dir_fd = _open_dir(top, folders)
    try:
        before = os.lstat(name, dir_fd=dir_fd)  # a special file is never even opened
        why = refusal(before.st_mode, before.st_size, max_bytes)
        if why:
            raise UntrustedFileError(f"{path} {why}")
        try:  # O_NONBLOCK: should it have become a FIFO, opening it must not wait
            fd = os.open(name, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
                         | getattr(os, "O_NOCTTY", 0), dir_fd=dir_fd)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UntrustedFileError(f"{path} "
                                         + refusal(stat.S_IFLNK, 0, max_bytes)) from None
            raise
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    why = refusal(info.st_mode, info.st_size, max_bytes)
    if not why and (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino):
        why = "was replaced while it was being opened"
    if why:
        os.close(fd)
        raise UntrustedFileError(f"{path} {why}")
    os.set_blocking(fd, True)
    return fd


def read_untrusted(path: Path, max_bytes: int = MAX_NOTEBOOK_BYTES, *,
                   base: Path | None = None) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_untrusted`)."""
    fd = open_untrusted(path, max_bytes, base=base)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew after the check
        raise UntrustedFileError(f"{path} is over the {_size(max_bytes)} limit")
    return data


def write_new_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` as a new regular file, replacing whatever entry is there (a link, a
    FIFO, a folder) without ever writing through it."""
    dir_fd = os.open(path.parent, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for _ in range(10):  # something may keep putting a link back: try a few times
            _remove_entry(path.name, dir_fd)
            try:
                fd = os.open(path.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
                             | _CLOEXEC, mode, dir_fd=dir_fd)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return
        raise UntrustedFileError(f"{path}: something keeps re-creating it")
    finally:
        os.close(dir_fd)


def copy_untrusted(source: Path, target: Path, max_bytes: int = MAX_NOTEBOOK_BYTES, *,
                   base: Path | None = None) -> None:
    """Copy the regular file ``source`` (see :func:`open_untrusted`) to a new file ``target``."""
    write_new_file(target, read_untrusted(source, max_bytes, base=base))


def list_folder(folder: Path, *, base: Path | None = None) -> dict[str, int]:
    """name -> lstat mode of every entry of ``folder``, which must be a real folder (with
    ``base``, no folder between ``base`` and it may be a link)."""
    if base is None:
        top, parts = folder.parent, (folder.name,)
    else:
        top, parts = Path(base), Path(folder).relative_to(base).parts
    dir_fd = _open_dir(top, parts)
    try:
        return {name: os.lstat(name, dir_fd=dir_fd).st_mode for name in sorted(os.listdir(dir_fd))}
    finally:
        os.close(dir_fd)


def _remove_entry(name: str, dir_fd: int) -> str:
    """Remove ``name`` from the folder ``dir_fd`` without following it; what it was, or ""."""
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except FileNotFoundError:
        return ""
    if stat.S_ISDIR(mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # never follows the links inside
    else:
        os.unlink(name, dir_fd=dir_fd)
    return describe(mode)


def purge_folder(folder: Path, keep: set[str], max_bytes: int = MAX_NOTEBOOK_BYTES) -> list[str]:
    """Remove everything in ``folder`` except the regular files named in ``keep`` that are
    at most ``max_bytes`` long; return what was removed, in words."""
    removed = []
    try:
        dir_fd = os.open(folder, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        return removed
    try:
        for name in sorted(os.listdir(dir_fd)):
            info = os.lstat(name, dir_fd=dir_fd)
            if name in keep and not refusal(info.st_mode, info.st_size, max_bytes):
                continue
            what = _remove_entry(name, dir_fd)
            if what:
                removed.append(f"{name!r} ({what}" + (f", {_size(info.st_size)})"
                                                      if stat.S_ISREG(info.st_mode) else ")"))
    finally:
        os.close(dir_fd)
    return removed


def printable(text: str) -> str:
    """``text`` with control characters (a file name's newlines, terminal escapes) as '?'."""
    return "".join(c if c.isprintable() else "?" for c in text)

"""Crash-safe file writing and checksums shared by the cache writer and reader (and the trainer)."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

_READ_CHUNK = 1 << 20


def atomic_write(path: Path, data: bytes, tag: str = "") -> None:
    """Write ``data`` to ``path`` all at once or not at all (``atomic_save``)."""
    atomic_save(path, lambda handle: handle.write(data), tag)


def temp_name(name: str, tag: str = "") -> str:
    """``<name>.tmp-<pid>[-<tag>]``: the pid keeps concurrent writers apart; the tag (a run's token)
    lets its owner tell its own leftovers from a user's file of a similar name."""
    return f"{name}.tmp-{os.getpid()}" + (f"-{tag}" if tag else "")


def atomic_save(path: Path, write: Callable[[BinaryIO], object], tag: str = "") -> None:
    """``write`` into a temp file beside ``path`` -> fsync -> rename -> fsync the folder.

    Readers (and a rerun after SIGKILL) see either the old state or the whole new file, never a
    prefix. Whatever stops the write (a full disk reported by any library, an interrupt), the temp file
    (``temp_name``) is removed; a failed write is a ``WriteFailedError``.
    """
    temporary = path.with_name(temp_name(path.name, tag))
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except BaseException as err:
        temporary.unlink(missing_ok=True)  # never leave a half-written temp file behind
        failure = write_failure(err, path)
        if failure is None:
            raise
        raise failure from None


class WriteFailedError(RuntimeError):
    """The OS refused a write (a full disk, a quota, permissions); the message names the path and what to do."""

    def __init__(self, path: Path, err: OSError):
        self.path, self.errno = path, err.errno
        hint = {errno.ENOSPC: "free space on that disk", errno.EDQUOT: "free space within your disk quota",
                errno.EACCES: "make the folder writable", errno.EPERM: "make the folder writable",
                errno.EROFS: "choose a writable folder"}.get(
            err.errno, "fix the cause")
        super().__init__(f"cannot write {path}: {err.strerror or err}; {hint} and rerun (what was saved before "
                         "is complete and is kept)")


_OS_ERROR_CODE = re.compile(r"os error (\d+)|errno[ =:]+(\d+)", re.IGNORECASE)
_WRITER_FAILED = ("write failed", "PytorchStreamWriter failed", "inline_container.cc", "No space left")


def write_failure(err: BaseException, path: Path) -> WriteFailedError | None:
    """``err`` as the project's one-line ``WriteFailedError`` when it is a failed write, else None.

    Libraries report a full disk in their own types: ``OSError`` from Python (also as the context of
    another error), ``SafetensorError`` with "os error 28" in its text, torch's zip writer a
    ``RuntimeError`` from ``inline_container.cc`` without a code (then a disk with under 16 MiB free is
    taken as full)."""
    if isinstance(err, WriteFailedError):
        return err
    if not isinstance(err, Exception):
        return None
    cause = err
    while cause is not None:  # torch's zip writer raises its own error while an OSError is being handled
        if isinstance(cause, OSError):
            return WriteFailedError(path, cause)
        cause = cause.__cause__ or cause.__context__
    text = str(err)
    code_match = _OS_ERROR_CODE.search(text)
    if code_match:
        code = int(code_match.group(1) or code_match.group(2))
    elif any(marker in text for marker in _WRITER_FAILED):
        code = errno.ENOSPC if free_bytes(path) < 16 << 20 else errno.EIO
    else:
        return None
    return WriteFailedError(path, OSError(code, os.strerror(code)))


def free_bytes(path: Path) -> int:
    """Free bytes on the disk holding ``path`` (or its nearest existing parent)."""
    for folder in [Path(path), *Path(path).parents]:
        if folder.exists():
            return shutil.disk_usage(folder).free
    return 0


def write_if_changed(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        atomic_write(path, data)


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_READ_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def json_bytes(record: dict[str, Any]) -> bytes:
    """Deterministic JSON (sorted keys), so identical builds write identical manifests."""
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()


def inside(root: Path, relative: str | Path) -> Path | None:
    """``root / relative`` when it stays inside ``root``, else None (absolute, or ``..`` climbing out).

    Normalised lexically, not with ``resolve()``: a data folder whose images are a symlink to another
    disk is legitimate, a file name that walks out of its folder is not.
    """
    candidate = Path(root) / relative
    normalised = Path(os.path.normpath(candidate))
    base = Path(os.path.normpath(root))
    if Path(relative).is_absolute() or not normalised.is_relative_to(base) or normalised == base:
        return None
    return candidate


def stat_identity(path: Path) -> list[int]:
    """[size, mtime_ns, inode]: what a cheap "unchanged since last time" check compares.

    The inode makes a copied folder count as new, so a copy is verified once in its new place.
    """
    info = path.stat()
    return [info.st_size, info.st_mtime_ns, info.st_ino]


class FolderBusyError(RuntimeError):
    """Another process holds the folder's lock; the message names it and its pid."""


LOCK_FILE = ".lock"
_HELD: dict[Path, list] = {}  # lock file -> [open handle, depth]: this process's locks, re-entrant


@contextmanager
def folder_lock(folder: Path, purpose: str, wait: bool = False, name: str = LOCK_FILE) -> Iterator[None]:
    """Hold ``folder/name`` exclusively for ``purpose`` (e.g. "training"): ``flock``, so the kernel
    releases it when the process dies and a kill never leaves it stuck. Another holder: with ``wait``,
    say so and block until it is done; else ``FolderBusyError`` naming the holder's pid. Re-entrant
    within one process (the demo holds its run folder and the trainer inside it takes it again)."""
    path = (folder / name).resolve()
    if path in _HELD:
        _HELD[path][1] += 1
        try:
            yield
        finally:
            _HELD[path][1] -= 1
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = _locked_handle(path, purpose, wait)
    except OSError as err:  # a read-only or foreign folder: one line, not a traceback from open()
        raise WriteFailedError(path, err) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {purpose}\n")
        handle.flush()
        _HELD[path] = [handle, 1]
        yield
    finally:
        _HELD.pop(path, None)
        handle.close()  # closing the descriptor releases the lock


def _locked_handle(path: Path, purpose: str, wait: bool):
    """An open handle on ``path`` holding its lock. A holder may delete the lock file with its folder
    (``remove_if_unused``); a process that waited on the deleted file then locks the path anew."""
    while True:
        handle = open(path, "a+")
        try:
            _acquire(handle, path, purpose, wait)
        except BaseException:
            handle.close()
            raise
        if path.is_file() and os.fstat(handle.fileno()).st_ino == path.stat().st_ino:
            return handle
        handle.close()
        path.parent.mkdir(parents=True, exist_ok=True)


def remove_if_unused(folder: Path, bookkeeping: frozenset[str] = frozenset()) -> None:
    """Delete ``folder`` when it holds nothing but its lock file and the ``bookkeeping`` files its owner
    writes at start (a run that stopped before writing anything), so a failed start leaves no empty
    folder behind. Call it while holding the lock."""
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= {LOCK_FILE, *bookkeeping}:
        for name in (*bookkeeping, LOCK_FILE):
            (folder / name).unlink(missing_ok=True)
        folder.rmdir()


def _acquire(handle, path: Path, purpose: str, wait: bool) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
    if not wait:
        raise FolderBusyError(f"{path.parent} is in use by process {holder} (lock {path}); wait for it to "
                              f"finish or choose another folder for this {purpose}")
    print(f"waiting for process {holder}, which holds {path}", file=sys.stderr, flush=True)
    fcntl.flock(handle, fcntl.LOCK_EX)

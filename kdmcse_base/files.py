"""Crash-safe file writing and checksums shared by the cache writer and reader (and the trainer)."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

_READ_CHUNK = 1 << 20


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all at once or not at all (``atomic_save``)."""
    atomic_save(path, lambda handle: handle.write(data))


def atomic_save(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write`` into a temp file beside ``path`` -> fsync -> rename -> fsync the folder.

    Readers (and a rerun after SIGKILL) see either the old state or the whole new file, never a
    prefix. The temp name (``<name>.tmp-<pid>``) carries the pid so concurrent writers never share one.
    """
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except OSError as err:
        temporary.unlink(missing_ok=True)  # never leave a half-written temp file behind
        raise WriteFailedError(path, err) from None


class WriteFailedError(RuntimeError):
    """The OS refused a write (a full disk, a quota, permissions); the message names the path and what to do."""

    def __init__(self, path: Path, err: OSError):
        self.path, self.errno = path, err.errno
        hint = {errno.ENOSPC: "free space on that disk", errno.EDQUOT: "free space within your disk quota",
                errno.EACCES: "make the folder writable", errno.EROFS: "choose a writable folder"}.get(
            err.errno, "fix the cause")
        super().__init__(f"cannot write {path}: {err.strerror or err}; {hint} and rerun (what was saved before "
                         "is complete and is kept)")


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
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / name).resolve()
    if path in _HELD:
        _HELD[path][1] += 1
        try:
            yield
        finally:
            _HELD[path][1] -= 1
        return
    handle = _locked_handle(path, purpose, wait)
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


def remove_if_unused(folder: Path) -> None:
    """Delete ``folder`` when it holds nothing but its lock file (a run that stopped before writing
    anything), so a failed start leaves no empty folder behind. Call it while holding the lock."""
    if folder.is_dir() and {p.name for p in folder.iterdir()} <= {LOCK_FILE}:
        (folder / LOCK_FILE).unlink(missing_ok=True)
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

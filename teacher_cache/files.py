"""Crash-safe file writing and checksums shared by the cache writer and reader (and the trainer)."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
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
    with open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


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

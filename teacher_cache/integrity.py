"""Is the cache on disk the cache its manifest describes? Checked on every open, cheaply.

Three layers, from cheapest to dearest:

1. *Layout* (every open): each file the manifest names stays inside the cache folder and has the
   byte size the manifest recorded, so a truncated shard is named instead of failing inside numpy.
2. *Checksums* (once per build or copy): every sha256 is recomputed, and the result is stamped in
   ``<cache root>/.verified/<cache name>.json`` with each file's size, mtime and inode. Later opens
   compare only those; a file rewritten or copied since (new mtime or inode) triggers a full
   verification again. The stamp lives beside the cache, not in it, so caches stay byte-identical.
3. *Content, per process* (``reader``): the rows files and id indexes are hashed (streamed) when a
   process opens the cache, and each shard the first time a process reads from it, against the
   manifest's sha256. Damage after the
   last stamp (a changed value with the size and mtime kept, e.g. a doubled coordinate) stops the read
   naming the file before any row of it is used. A shard costs one sha256 pass per process (about
   0.2 s per 100 MB); a trainer hashes every shard when it starts (``TeacherCache.check_every_shard``),
   so its forked loader workers inherit the checks and no training step waits on a hash.
4. *Rows* (every lookup, see ``reader``): the rows a batch reads are finite and unit-norm.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kdmcse_base.files import WriteFailedError, atomic_write, file_sha256, inside, json_bytes, stat_identity

log = logging.getLogger(__name__)

STAMP_FOLDER = ".verified"


class CacheIntegrityError(RuntimeError):
    """A cache file is missing, truncated or does not match its checksum."""


def how_to_fix(path: Path) -> str:
    return (f"run `python scripts/cache_teacher.py --verify {path}` to list every damaged file, then delete {path} "
            "and rebuild it (scripts/cache_teacher.py with the run's config, or start training again)")


def manifest_files(manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every checksummed file of a manifest: ``{"file", "sha256", "bytes"}``."""
    for entry in manifest["modalities"].values():
        for name in ("rows", "index"):  # the modality's rows file and its id index
            yield {"file": entry[f"{name}_file"], "sha256": entry[f"{name}_sha256"], "bytes": entry[f"{name}_bytes"]}
        yield from ({"file": s["file"], "sha256": s["sha256"], "bytes": s["bytes"]} for s in entry["shards"])


def cache_file(path: Path, relative: str) -> Path:
    """A file named by the manifest, refused when the name leads outside the cache folder."""
    located = inside(path, relative)
    if located is None:
        raise CacheIntegrityError(f"{path / 'manifest.json'} names {relative!r}, which lies outside the cache "
                                  f"folder; the manifest is not one this writer produced: {how_to_fix(path)}")
    return located


def check_content(path: Path, located: Path, sha256: str, data: bytes | None = None) -> None:
    """``located`` (a file of the cache at ``path``; or ``data``, its bytes as already read) hashes to the
    manifest's ``sha256``."""
    actual = file_sha256(located) if data is None else hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise CacheIntegrityError(f"{located} does not match its checksum in the manifest (changed since it was "
                                  f"written or verified): {how_to_fix(path)}")


def check_layout(path: Path, manifest: dict[str, Any]) -> None:
    """Every file present, inside the folder and of the recorded size (no hashing)."""
    for entry in manifest_files(manifest):
        located = cache_file(path, entry["file"])
        size = located.stat().st_size if located.is_file() else None
        if size != entry["bytes"]:
            state = "is missing" if size is None else f"has {size} bytes, the manifest says {entry['bytes']} (truncated?)"
            raise CacheIntegrityError(f"{located} {state}: {how_to_fix(path)}")


def verify_cache(path: Path | str) -> list[str]:
    """Recompute every checksum of a finished cache; returns one line per problem (empty = sound)."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        entries = list(manifest_files(manifest))
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [f"{path / 'manifest.json'}: unreadable or not a cache manifest ({err})"]
    problems = []
    for entry in entries:
        located = inside(path, entry["file"])
        if located is None:
            problems.append(f"{path / 'manifest.json'}: names {entry['file']!r}, outside the cache folder")
            continue
        actual = file_sha256(located)
        if actual != entry["sha256"]:
            problems.append(f"{located}: {'missing' if actual is None else 'checksum mismatch (corrupt)'}")
    return problems


def ensure_verified(path: Path, manifest: dict[str, Any]) -> bool:
    """Full checksum verification unless a stamp shows nothing changed since the last one; True when
    it verified (every file hashed just now)."""
    stamp = _stamp_file(path)
    if stamp.is_file() and _read_stamp(stamp) == _current_state(path, manifest):
        return False
    problems = verify_cache(path)
    if problems:
        listed = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        raise CacheIntegrityError(f"teacher cache {path} is damaged: {listed}. {how_to_fix(path)}")
    record_verified(path, manifest)
    return True


def record_verified(path: Path, manifest: dict[str, Any]) -> None:
    """Stamp the current sizes/mtimes/inodes as verified; a read-only cache root just re-verifies next time."""
    stamp = _stamp_file(path)
    try:
        stamp.parent.mkdir(exist_ok=True)
        atomic_write(stamp, json_bytes({"cache": path.name, "files": _current_state(path, manifest)}))
    except (OSError, WriteFailedError) as err:
        log.warning("cannot record the verification of %s (%s); it will be verified again on the next open", path, err)


def _stamp_file(path: Path) -> Path:
    return path.parent / STAMP_FOLDER / f"{path.name}.json"


def _current_state(path: Path, manifest: dict[str, Any]) -> dict[str, list[int]]:
    names = ["manifest.json", *(entry["file"] for entry in manifest_files(manifest))]
    return {name: stat_identity(cache_file(path, name)) for name in names}


def _read_stamp(stamp: Path) -> dict[str, list[int]] | None:
    try:
        return json.loads(stamp.read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return None

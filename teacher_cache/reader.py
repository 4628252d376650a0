"""Read a finished teacher cache: its rows (ids, texts, caption -> image pairing) and their vectors.

Rows and vectors alike are memory-mapped (:mod:`teacher_cache.rows`, float16 shards): opening a cache
of any size costs checksums and a few maps, and a process holds only the rows it reads.

Opening checks the cache cheaply (:mod:`teacher_cache.integrity`: file sizes every time, checksums
once per build or copy). Shards are opened as read-only memory maps and only the requested rows are
copied out, each checked finite and unit-norm, so a trainer's memory does not grow with the corpus
and a damaged row stops training instead of steering it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from .integrity import (CacheIntegrityError, cache_file, check_content, check_layout, ensure_verified, how_to_fix,
                        verify_cache)
from .rows import MappedRows, StringColumn

# float16 storage moves a unit vector's norm by well under 1e-3; a damaged value moves it far more.
ROW_NORM_TOLERANCE = 1e-2

FORMAT = "teacher-cache/3"  # the manifest format this reader knows (the writer writes it)


def read_json_file(path: Path) -> Any:
    """A cache file's JSON; damage is a ``CacheFormatError`` naming the file, not a traceback."""
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheFormatError(f"{path} is not valid JSON ({err}); delete {path.parent} to rebuild the cache") \
            from None


class CacheFormatError(ValueError):
    """The directory is not a complete cache of this format (no manifest, or files disagree with it)."""


_MODALITY_KEYS = ("count", "dim", "rows_file", "rows_sha256", "rows_bytes", "index_file", "index_sha256",
                  "index_bytes", "shards")
_SHARD_KEYS = ("file", "sha256", "bytes")


def check_manifest_shape(path: Path, manifest: Any) -> None:
    """A manifest of the wrong shape (valid JSON, e.g. ``[]`` or no ``image`` section) is a one-line
    ``CacheFormatError`` naming the first missing key, not a ``KeyError`` deep in the reader."""
    def need(value: Any, kind: type, where: str) -> None:
        if not isinstance(value, kind):
            raise CacheFormatError(f"{path}: {where} is missing or not a {kind.__name__}; not a manifest this "
                                   "writer produced: rebuild the cache with scripts/cache_teacher.py")

    need(manifest, dict, "the top level")
    need(manifest.get("teacher"), dict, "'teacher'")
    need(manifest.get("modalities"), dict, "'modalities'")
    for modality in ("text", "image"):
        section = manifest["modalities"].get(modality)
        need(section, dict, f"'modalities.{modality}'")
        for key in _MODALITY_KEYS:
            need(section.get(key), list if key == "shards" else (str if key.endswith(("_file", "_sha256")) else int),
                 f"'modalities.{modality}.{key}'")
        for n, shard in enumerate(section["shards"]):
            need(shard, dict, f"'modalities.{modality}.shards[{n}]'")
            for key in _SHARD_KEYS:
                need(shard.get(key), int if key == "bytes" else str, f"'modalities.{modality}.shards[{n}].{key}'")


class _Modality:
    """One modality's shards behind a single row index."""

    def __init__(self, root: Path, entry: dict[str, Any], hashed: bool):
        self.root = root
        self.dim = int(entry["dim"])
        self.rows_table = _open_rows(root, entry, hashed)
        self.ids = self.rows_table.ids
        if len(self.ids) != entry["count"]:
            raise CacheFormatError(f"{root / entry['rows_file']} has {len(self.ids)} rows, manifest says {entry['count']}")
        self.starts = np.array([shard["rows"][0] for shard in entry["shards"]], dtype=np.int64)
        self.files = [shard["file"] for shard in entry["shards"]]
        self.checksums = [shard["sha256"] for shard in entry["shards"]]
        self.shards = [self._open(shard) for shard in entry["shards"]]
        self.content_checked = [hashed] * len(self.shards)  # per process: hashed before its first read

    def _open(self, shard: dict[str, Any]) -> np.ndarray:
        path = cache_file(self.root, shard["file"])
        array = np.load(path, mmap_mode="r")
        expected = (shard["rows"][1] - shard["rows"][0], self.dim)
        if array.shape != expected or array.dtype != np.float16:
            raise CacheFormatError(f"{path}: {array.dtype}{array.shape}, manifest says float16{expected}")
        return array

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """float32 copies of the requested rows, in the requested order (repeats allowed)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.ids)):
            raise IndexError(f"row index out of range [0, {len(self.ids)})")
        out = np.empty((idx.size, self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self.starts, idx, side="right") - 1
        for shard in np.unique(shard_of):
            self.check_shard(shard)
            mask = shard_of == shard
            out[mask] = self.shards[shard][idx[mask] - self.starts[shard]]
        self._check_rows(out, idx, shard_of)
        return out

    def check_shard(self, shard: int) -> None:
        """The shard's sha256, once per process, before any row of it is used."""
        if not self.content_checked[shard]:
            check_content(self.root, cache_file(self.root, self.files[shard]), self.checksums[shard])
            self.content_checked[shard] = True

    def _check_rows(self, out: np.ndarray, idx: np.ndarray, shard_of: np.ndarray) -> None:
        with np.errstate(over="ignore", invalid="ignore"):
            norms = np.linalg.norm(out, axis=1)
        broken = ~np.isfinite(norms) | (np.abs(norms - 1.0) > ROW_NORM_TOLERANCE)
        if broken.any():
            first = int(np.flatnonzero(broken)[0])
            raise CacheIntegrityError(
                f"{self.root / self.files[shard_of[first]]}: row {self.ids[idx[first]]!r} has norm {norms[first]:.4g} "
                f"(stored rows are unit vectors): the shard is damaged. {how_to_fix(self.root)}")


class TeacherCache:
    """A complete cache directory written by :mod:`teacher_cache.writer`."""

    def __init__(self, path: Path, manifest: dict[str, Any], hashed: bool = False):
        """``hashed``: every file was hashed by this process just now (a full verification), so the
        per-process content checks are already done."""
        self.path = path
        self.manifest = manifest
        self._modalities = {modality: _Modality(path, manifest["modalities"][modality], hashed)
                            for modality in ("text", "image")}
        text_rows = self._modalities["text"].rows_table
        self.texts: StringColumn = text_rows.strings("text")
        """``texts[i]``: the sentence of text row i (``texts.take(rows)`` for many)."""
        self.caption_image_rows: np.ndarray = text_rows.integers("image_row")
        """Per text row, the cached image row the caption describes (captions of image sources), else -1."""

    @classmethod
    def open(cls, path: Path | str) -> "TeacherCache":
        """Open a complete cache, checked: sizes always, checksums unless verified since the last change."""
        path = Path(path)
        manifest_file = path / "manifest.json"
        if not manifest_file.is_file():
            raise CacheFormatError(f"{path} has no manifest.json: not a cache, or its build has not finished")
        manifest = read_json_file(manifest_file)
        found = manifest.get("format") if isinstance(manifest, dict) else FORMAT  # not a dict: the shape says so
        if found != FORMAT:
            raise CacheFormatError(f"{manifest_file}: format {found!r}, this reader knows {FORMAT!r}; "
                                   "rebuild the cache with scripts/cache_teacher.py")
        check_manifest_shape(manifest_file, manifest)
        check_layout(path, manifest)
        return cls(path, manifest, hashed=ensure_verified(path, manifest))

    # --- rows --------------------------------------------------------------------------------------

    @property
    def text_ids(self) -> StringColumn:
        return self._modalities["text"].ids

    @property
    def image_ids(self) -> StringColumn:
        return self._modalities["image"].ids

    @property
    def skipped_rows(self) -> list[dict[str, Any]]:
        """Rows left out as bad input (``data.skip_bad``): ``{"row_id", "path", "line", "problem"}`` each."""
        return list(self.manifest.get("skipped", []))

    @property
    def shared_space(self) -> bool:
        return bool(self.manifest["teacher"]["shared_space"])

    @property
    def text_dim(self) -> int:
        return self._modalities["text"].dim

    @property
    def image_dim(self) -> int:
        return self._modalities["image"].dim

    def text_index(self, ids: Iterable[str]) -> np.ndarray:
        return self._lookup("text", ids)

    def image_index(self, ids: Iterable[str]) -> np.ndarray:
        return self._lookup("image", ids)

    def _lookup(self, modality: str, ids: Iterable[str]) -> np.ndarray:
        try:
            return self._modalities[modality].rows_table.find(ids)
        except KeyError as err:
            raise KeyError(f"{modality} row {err.args[0]!r} is not in cache {self.path}{self._skip_note(err.args[0])}") from None

    def _skip_note(self, row_id: str) -> str:
        for skipped in self.skipped_rows:
            if skipped["row_id"] == row_id:
                return f" (it was skipped as bad input: {skipped['problem']})"
        return ""

    # --- vectors -----------------------------------------------------------------------------------

    def text(self, idx: Sequence[int] | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Stored text vectors (float16 on disk) as float32 on ``device``."""
        return _on_device(self._modalities["text"].rows(np.asarray(idx)), device)

    def image(self, idx: Sequence[int] | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        return _on_device(self._modalities["image"].rows(np.asarray(idx)), device)

    def verify(self) -> list[str]:
        return verify_cache(self.path)

    def check_every_shard(self) -> None:
        """Hash every shard not yet hashed by this process now (about 0.2 s per 100 MB), instead of at its
        first read: a trainer does it before forking loader workers, which inherit the checks, so no
        training step waits on a hash (at 10M rows each worker hashed 0.6 GB of shards within its steps)."""
        for modality in self._modalities.values():
            for shard in range(len(modality.shards)):
                modality.check_shard(shard)


def _on_device(rows: np.ndarray, device: torch.device | str) -> torch.Tensor:
    """Rows copied to ``device``; to a GPU from pinned memory without blocking, so the copy overlaps
    the step before it."""
    tensor = torch.from_numpy(rows)
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _open_rows(root: Path, entry: dict[str, Any], hashed: bool) -> MappedRows:
    """A modality's rows file and id index, mapped after their checksums are checked in this process
    (a streamed read: the files are never held in memory whole), unless it has just ``hashed`` them."""
    located = {name: cache_file(root, entry[f"{name}_file"]) for name in ("rows", "index")}
    if not hashed:
        for name, path in located.items():
            check_content(root, path, entry[f"{name}_sha256"])
    try:
        return MappedRows(located["rows"], located["index"])
    except (OSError, ValueError, KeyError, pa.ArrowException) as err:
        raise CacheFormatError(f"{located['rows']}: not a rows file of this format ({err}); {how_to_fix(root)}") from None

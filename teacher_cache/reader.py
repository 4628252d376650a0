"""Read a finished teacher cache: rows by id, and teacher similarity matrices for a batch.

Shards are opened as read-only memory maps and only the requested rows are copied out, so a
trainer's memory does not grow with the corpus; only the id -> row dictionaries are held in RAM.
"""
from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .towers.base import CrossModalUnavailableError
from .files import atomic_write
from .writer import FORMAT, MODALITIES, verify_cache


class CacheFormatError(ValueError):
    """The directory is not a complete cache of this format (no manifest, or files disagree with it)."""


@dataclass(frozen=True)
class SoftTargets:
    """Teacher cosine similarities for one batch, on the requested device.

    ``s_cc[i, j]``: text row i vs text row j (KDMCSE's caption-caption s^cc).
    ``s_vv[i, j]``: image i vs image j (s^vv); None when no images were asked for.
    ``s_cv[i, j]``: text row i vs image j; None unless the teacher has one shared space (CLIP).
    """

    s_cc: torch.Tensor
    s_vv: torch.Tensor | None = None
    s_cv: torch.Tensor | None = None


class _Modality:
    """One modality's shards behind a single row index."""

    def __init__(self, root: Path, entry: dict[str, Any]):
        self.dim = int(entry["dim"])
        self.ids = (root / entry["ids_file"]).read_text().splitlines()
        if len(self.ids) != entry["count"]:
            raise CacheFormatError(f"{root / entry['ids_file']} has {len(self.ids)} ids, manifest says {entry['count']}")
        self.index = {row_id: row for row, row_id in enumerate(self.ids)}
        self.starts = np.array([shard["rows"][0] for shard in entry["shards"]], dtype=np.int64)
        self.shards = [self._open(root, shard) for shard in entry["shards"]]

    def _open(self, root: Path, shard: dict[str, Any]) -> np.ndarray:
        array = np.load(root / shard["file"], mmap_mode="r")
        expected = (shard["rows"][1] - shard["rows"][0], self.dim)
        if array.shape != expected or array.dtype != np.float16:
            raise CacheFormatError(f"{root / shard['file']}: {array.dtype}{array.shape}, manifest says float16{expected}")
        return array

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """float32 copies of the requested rows, in the requested order (repeats allowed)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.ids)):
            raise IndexError(f"row index out of range [0, {len(self.ids)})")
        out = np.empty((idx.size, self.dim), dtype=np.float32)
        shard_of = np.searchsorted(self.starts, idx, side="right") - 1
        for shard in np.unique(shard_of):
            mask = shard_of == shard
            out[mask] = self.shards[shard][idx[mask] - self.starts[shard]]
        return out


class TeacherCache:
    """A complete cache directory written by :mod:`teacher_cache.writer`."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self._modalities = {m: _Modality(path, manifest["modalities"][m]) for m in MODALITIES}

    @classmethod
    def open(cls, path: Path | str) -> "TeacherCache":
        path = Path(path)
        manifest_file = path / "manifest.json"
        if not manifest_file.is_file():
            raise CacheFormatError(f"{path} has no manifest.json: not a cache, or its build has not finished")
        manifest = json.loads(manifest_file.read_text())
        if manifest.get("format") != FORMAT:
            raise CacheFormatError(f"{manifest_file}: format {manifest.get('format')!r}, this reader knows {FORMAT!r}")
        return cls(path, manifest)

    # --- ids ---------------------------------------------------------------------------------------

    @property
    def text_ids(self) -> list[str]:
        return self._modalities["text"].ids

    @property
    def image_ids(self) -> list[str]:
        return self._modalities["image"].ids

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
        index = self._modalities[modality].index
        try:
            return np.fromiter((index[row_id] for row_id in ids), dtype=np.int64)
        except KeyError as err:
            raise KeyError(f"{modality} row {err.args[0]!r} is not in cache {self.path}{self._skip_note(err.args[0])}") from None

    def _skip_note(self, row_id: str) -> str:
        for skipped in self.manifest.get("skipped", []):
            if skipped["row_id"] == row_id:
                return f" (it was skipped as bad input: {skipped['problem']})"
        return ""

    # --- vectors -----------------------------------------------------------------------------------

    def text(self, idx: Sequence[int] | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Stored text vectors (float16 on disk) as float32 on ``device``."""
        return torch.from_numpy(self._modalities["text"].rows(np.asarray(idx))).to(device)

    def image(self, idx: Sequence[int] | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.from_numpy(self._modalities["image"].rows(np.asarray(idx))).to(device)

    def targets(
        self,
        text_idx: Sequence[int] | np.ndarray,
        image_idx: Sequence[int] | np.ndarray | None = None,
        device: torch.device | str = "cpu",
    ) -> SoftTargets:
        """Cosine matrices among the given rows (re-normalised after the float16 round trip)."""
        text = F.normalize(self.text(text_idx, device), dim=-1)
        if image_idx is None:
            return SoftTargets(s_cc=text @ text.T)
        image = F.normalize(self.image(image_idx, device), dim=-1)
        cross = text @ image.T if self.shared_space else None
        return SoftTargets(s_cc=text @ text.T, s_vv=image @ image.T, s_cv=cross)

    def cross_modal(self, text_idx, image_idx, device: torch.device | str = "cpu") -> torch.Tensor:
        """Text-image cosines; refused for a composite teacher, whose spaces are unrelated."""
        if not self.shared_space:
            raise CrossModalUnavailableError(
                f"cache {self.path.name} comes from teacher {self.manifest['teacher']['name']!r}, whose text and "
                "image towers live in unrelated spaces: text-image similarities would be meaningless. Build the "
                "cache with a CLIP teacher (backend open_clip or hf_clip) for cross-modal scores."
            )
        text = F.normalize(self.text(text_idx, device), dim=-1)
        return text @ F.normalize(self.image(image_idx, device), dim=-1).T

    def verify(self) -> list[str]:
        return verify_cache(self.path)

    # --- neighbours --------------------------------------------------------------------------------

    def top_k_neighbours(
        self, modality: str, k: int, device: torch.device | str = "cpu", block_rows: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row's k most similar other rows (int64 indices, float32 cosines), best first.

        Computed in query x key blocks so memory stays at two blocks, and stored as
        ``neighbours/<modality>-top<k>.npz`` in the cache directory so the next call only loads it.
        """
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}")
        stored = self.path / "neighbours" / f"{modality}-top{k}.npz"
        if stored.is_file():
            with np.load(stored) as saved:
                return saved["indices"], saved["scores"]
        indices, scores = _blockwise_top_k(self._modalities[modality], k, torch.device(device), block_rows)
        stored.parent.mkdir(exist_ok=True)
        buffer = _npz_bytes(indices=indices, scores=scores)
        atomic_write(stored, buffer)
        return indices, scores


def _blockwise_top_k(modality: _Modality, k: int, device: torch.device, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    total = len(modality.ids)
    if not 0 < k < total:
        raise ValueError(f"k must be in [1, {total - 1}] for {total} rows")
    all_indices = np.empty((total, k), dtype=np.int64)
    all_scores = np.empty((total, k), dtype=np.float32)
    for q_start in range(0, total, block_rows):
        q_idx = np.arange(q_start, min(q_start + block_rows, total))
        queries = F.normalize(torch.from_numpy(modality.rows(q_idx)).to(device), dim=-1)
        best_scores = torch.full((len(q_idx), k), -float("inf"), device=device)
        best_indices = torch.zeros((len(q_idx), k), dtype=torch.long, device=device)
        for k_start in range(0, total, block_rows):
            k_idx = np.arange(k_start, min(k_start + block_rows, total))
            keys = F.normalize(torch.from_numpy(modality.rows(k_idx)).to(device), dim=-1)
            scores = queries @ keys.T
            is_self = torch.from_numpy(q_idx[:, None] == k_idx[None, :]).to(device)
            scores.masked_fill_(is_self, -float("inf"))
            candidate_scores = torch.cat([best_scores, scores], dim=1)
            candidate_indices = torch.cat([best_indices, torch.from_numpy(k_idx).to(device).expand(len(q_idx), -1)], dim=1)
            best_scores, order = candidate_scores.topk(k, dim=1)
            best_indices = candidate_indices.gather(1, order)
        all_indices[q_idx] = best_indices.cpu().numpy()
        all_scores[q_idx] = best_scores.cpu().numpy()
    return all_indices, all_scores


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()

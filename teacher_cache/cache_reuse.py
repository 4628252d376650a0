"""Rows a new cache copies from a finished cache of the same teacher instead of encoding them: texts by
their text, images by their file's sha256, whatever their ids (teacher_cache/writer.py, "Rows reused")."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .cache_shards import MODALITIES, STORAGE_DTYPE
from .corpora import TextRow
from .integrity import CacheIntegrityError
from .reader import FORMAT, CacheFormatError, TeacherCache

log = logging.getLogger(__name__)

IMAGE_SHA256_FILE = "image_sha256.txt"


class PlannedRows(Protocol):
    """What the search needs of a cache plan (``cache_plan.CachePlan``)."""

    directory: Path
    teacher_identity: dict[str, Any]
    dims: dict[str, int]
    texts: list[TextRow]
    image_sha256: list[str | None]

    def count(self, modality: str) -> int: ...


@dataclass
class RowReuse:
    """Rows a new cache copies from a finished cache (the donor) instead of encoding them."""

    donor: Path
    rows: dict[str, np.ndarray]
    """Per modality, the donor row holding each new row's vector; -1 where the row must be encoded."""

    def count(self, modality: str) -> int:
        return int((self.rows[modality] >= 0).sum())

    def record(self) -> dict[str, Any]:
        return {"cache": self.donor.name, "rows": {modality: self.count(modality) for modality in MODALITIES}}


def rows_phrase(counts: dict[str, int]) -> str:
    return f"{counts['text']:,} text rows and {counts['image']:,} images"


def find_reusable_rows(plan: PlannedRows) -> RowReuse | None:
    """The finished cache of the same teacher under the cache root that holds most of the plan's rows.

    Each candidate is opened as a trainer would open it (checksums verified unless stamped), so a
    damaged cache is passed over with a warning, never copied from. None when no cache holds a row.
    """

    best: RowReuse | None = None
    for manifest_file in sorted(plan.directory.parent.glob("*/manifest.json")):
        if manifest_file.parent == plan.directory or not _same_teacher(manifest_file, plan):
            continue
        try:
            donor = TeacherCache.open(manifest_file.parent)
        except (CacheIntegrityError, CacheFormatError, OSError, ValueError, KeyError) as err:
            log.warning("not reusing rows of %s: %s", manifest_file.parent, err)
            continue
        candidate = RowReuse(donor.path, {"text": _text_rows_in(donor, plan), "image": _image_rows_in(donor, plan)})
        total = sum(candidate.count(modality) for modality in MODALITIES)
        if total and (best is None or total > sum(best.count(modality) for modality in MODALITIES)):
            best = candidate
    if best is not None:
        log.info("reusing %s of %s; encoding %s", rows_phrase({m: best.count(m) for m in MODALITIES}), best.donor,
                 rows_phrase({m: plan.count(m) - best.count(m) for m in MODALITIES}))
    return best


def _same_teacher(manifest_file: Path, plan: PlannedRows) -> bool:
    """Whether a cache's stored vectors came from this very teacher (weights, preprocessing, precision)."""
    try:
        manifest = json.loads(manifest_file.read_text())
        return (manifest.get("format") == FORMAT and manifest.get("dtype") == np.dtype(STORAGE_DTYPE).name
                and manifest.get("dims") == plan.dims
                and manifest["teacher"]["identity"] == json.loads(json.dumps(plan.teacher_identity)))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _text_rows_in(donor: TeacherCache, plan: PlannedRows) -> np.ndarray:
    """The donor row of each planned text row with the same text, whatever its id (the teacher's vector
    depends on the text alone, so a renamed source or a deleted line re-encodes nothing); -1 for the others."""
    stored: dict[str, int] = {}
    for row, text in enumerate(donor.texts):
        stored.setdefault(text, row)
    return np.array([stored.get(row.text, -1) for row in plan.texts], dtype=np.int64)


def _image_rows_in(donor: TeacherCache, plan: PlannedRows) -> np.ndarray:
    """The donor row of each planned image with the same file sha256, whatever its id; -1 for the others.

    A cache without ``image_sha256.txt`` (or with one that does not match its rows) offers no images.
    """
    try:
        hashes = (donor.path / IMAGE_SHA256_FILE).read_text().splitlines()
    except OSError:
        hashes = []
    if len(hashes) != len(donor.image_ids):
        return np.full(len(plan.images), -1, dtype=np.int64)
    stored: dict[str, int] = {}
    for row, sha256 in enumerate(hashes):
        stored.setdefault(sha256, row)
    return np.array([stored.get(sha256, -1) if sha256 else -1 for sha256 in plan.image_sha256], dtype=np.int64)

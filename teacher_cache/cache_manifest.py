"""Finishing a cache: every shard checked against its recorded checksum, then the manifest, whose presence
means the cache is complete (teacher_cache/writer.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .cache_plan import CachePlan, plan_record
from .cache_shards import MODALITIES, recorded_checksum
from kdmcse_base.files import atomic_write, file_sha256, json_bytes
from .index import library_versions
from .integrity import CacheIntegrityError, record_verified
from .rows import ID_INDEX_FILES, ROWS_FILES


def finalise(plan: CachePlan) -> None:
    """Rank 0: check every shard against the checksum its writer recorded, then write the manifest.

    Every file is hashed here, so the cache is stamped as verified (:mod:`teacher_cache.integrity`).
    """
    modalities = {}
    for modality in MODALITIES:
        shards = []
        for spec in plan.shards(modality):
            recorded = recorded_checksum(plan.directory, spec)
            if file_sha256(plan.directory / spec.file) != recorded:
                raise CacheIntegrityError(f"{plan.directory / spec.file} does not match its checksum; delete it and rerun")
            shards.append({"file": spec.file, "rows": [spec.start, spec.stop], "sha256": recorded,
                           "bytes": (plan.directory / spec.file).stat().st_size})
        modalities[modality] = {
            "count": plan.count(modality),
            "dim": plan.dims[modality],
            **_file_record("rows", plan.directory, ROWS_FILES[modality]),
            **_file_record("index", plan.directory, ID_INDEX_FILES[modality]),
            "shards": shards,
        }
    manifest = {**plan_record(plan), "modalities": modalities, "versions": library_versions()}
    atomic_write(plan.directory / "manifest.json", json_bytes(manifest))
    record_verified(plan.directory, manifest)


def _file_record(name: str, directory: Path, file: str) -> dict[str, Any]:
    """The manifest's ``<name>_file``, ``<name>_sha256`` and ``<name>_bytes`` of a cache file."""
    return {f"{name}_file": file, f"{name}_sha256": file_sha256(directory / file),
            f"{name}_bytes": (directory / file).stat().st_size}

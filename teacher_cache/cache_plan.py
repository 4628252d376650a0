"""The plan of a cache build: the corpora read once, the rows checked, the folder named by the
fingerprint, the donor of reused rows and the shards still to write; the same on every rank and on
every rerun (teacher_cache/writer.py)."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cache_reuse import IMAGE_SHA256_FILE, RowReuse, find_reusable_rows
from .cache_shards import MODALITIES, STORAGE_DTYPE, ShardSpec, shard_is_complete
from .corpora import BadRow, ImageRow, TextRow
from .data import CacheDataConfig, CacheRows, collect_rows, data_dir_for, dataset_fingerprint, find_bad_images, image_sha256s
from kdmcse_base.files import json_bytes, write_if_changed
from .index import index_key
from .integrity import CacheIntegrityError
from .reader import FORMAT, check_manifest_shape, read_json_file
from .rows import ID_INDEX_FILES, NO_IMAGE, ROWS_FILES, id_index_bytes, rows_file_bytes
from .towers import Teacher, TeacherConfig

NORMALISATION = "L2-normalised in float32, then cast to float16 (re-normalise after loading for exact cosines)"


class BadInputError(ValueError):
    """Rows that cannot be encoded; lists every one of them, not just the first."""

    def __init__(self, problems: Sequence[BadRow]):
        self.problems = list(problems)
        listing = "\n".join(f"  - {problem.describe()}" for problem in self.problems)
        super().__init__(
            f"{len(self.problems)} bad input row(s); fix them, or leave them out and record them in the manifest "
            f"(scripts/cache_teacher.py --skip-bad; training: data.skip_bad=true):\n{listing}"
        )


@dataclass(frozen=True)
class CollectedData:
    """The corpora, read once: rows in cache order, their fingerprint, the folder they came from and
    the sha256 of every image file (by image id)."""

    rows: CacheRows
    fingerprint: str
    data_dir: Path
    image_sha256: dict[str, str | None] = field(default_factory=dict)


def collect_data(data_cfg: CacheDataConfig, data_dir: Path | str | None) -> CollectedData:
    resolved = data_dir_for(data_cfg, data_dir)
    rows = collect_rows(data_cfg, resolved)
    hashes = image_sha256s(rows.images)
    return CollectedData(rows, dataset_fingerprint(rows, hashes), resolved,
                         {image.image_id: sha256 for image, sha256 in zip(rows.images, hashes)})


@dataclass
class CachePlan:
    """Everything decided before encoding; the same on every rank and on every rerun."""

    directory: Path
    fingerprint: str
    index_key: str
    dataset_fingerprint: str
    teacher_name: str
    teacher_identity: dict[str, Any]
    shared_space: bool
    dims: dict[str, int]
    texts: list[TextRow]
    images: list[ImageRow]
    skipped: list[BadRow]
    shard_rows: int
    batch_size: int
    provenance: dict[str, Any]
    image_sha256: list[str | None] = field(default_factory=list)
    reuse: RowReuse | None = None
    complete: bool = False
    todo: list[ShardSpec] = field(default_factory=list)

    def count(self, modality: str) -> int:
        return len(self.texts) if modality == "text" else len(self.images)

    def shards(self, modality: str) -> list[ShardSpec]:
        total = self.count(modality)
        return [
            ShardSpec(modality, index, start, min(start + self.shard_rows, total))
            for index, start in enumerate(range(0, total, self.shard_rows))
        ]

    def all_shards(self) -> list[ShardSpec]:
        return [spec for modality in MODALITIES for spec in self.shards(modality)]

    def ids(self, modality: str) -> list[str]:
        return self.ids_at(modality, range(self.count(modality)))

    def ids_at(self, modality: str, rows: Iterable[int]) -> list[str]:
        """The ids of some rows (a shard's batch: listing every id there cost a pass over the corpus a batch)."""
        if modality == "text":
            return [self.texts[row].row_id for row in rows]
        return [self.images[row].image_id for row in rows]

    def donor_rows(self, spec: ShardSpec) -> np.ndarray:
        """The donor row of each row of the shard (-1: encode it)."""
        if self.reuse is None:
            return np.full(spec.stop - spec.start, -1, dtype=np.int64)
        return self.reuse.rows[spec.modality][spec.start : spec.stop]

    def rows_file_bytes(self, modality: str) -> bytes:
        """The modality's rows file (:mod:`teacher_cache.rows`): ids and, for text rows, the text and the
        image row of a caption whose image is cached too: the pairing the trainer's pools and retrieval read."""
        if modality == "image":
            return rows_file_bytes(self.ids("image"))
        image_row = {image_id: row for row, image_id in enumerate(self.ids("image"))}
        return rows_file_bytes(self.ids("text"), [row.text for row in self.texts],
                               [image_row.get(row.image_id, NO_IMAGE) for row in self.texts])


def cache_name(teacher_name: str, fingerprint: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", teacher_name).strip("-") or "teacher"
    return f"{slug}-{fingerprint[:12]}"


def make_plan(teacher: Teacher, teacher_cfg: TeacherConfig, data_cfg: CacheDataConfig, cache_root: Path,
               data: CollectedData, shard_rows: int) -> CachePlan:
    """Rank 0 only: check rows, name the directory, and list the shards still to do."""
    fingerprint = cache_fingerprint(teacher, teacher_cfg, data.fingerprint, shard_rows)
    directory = cache_root / cache_name(teacher.name, fingerprint)
    plan = CachePlan(
        directory=directory, fingerprint=fingerprint, index_key=index_key(teacher_cfg, data.fingerprint, shard_rows, FORMAT),
        dataset_fingerprint=data.fingerprint, teacher_name=teacher.name, teacher_identity=teacher.identity,
        shared_space=teacher.shared_space, dims={"text": teacher.text_dim, "image": teacher.image_dim},
        texts=data.rows.texts, images=data.rows.images, skipped=[], shard_rows=shard_rows,
        batch_size=teacher_cfg.batch_size,
        provenance={"teacher_config": teacher_cfg.recorded_dict(), "data_config": data_cfg.to_dict(),
                    "data_dir": str(data.data_dir)},
    )
    manifest = read_manifest(directory)
    if manifest is not None:
        if manifest.get("fingerprint") != fingerprint:
            raise CacheIntegrityError(f"{directory / 'manifest.json'} belongs to fingerprint "
                                      f"{manifest.get('fingerprint')}, expected {fingerprint}")
        refuse_skipped_rows_unless_allowed(manifest, data_cfg.skip_bad)
        plan.complete = True
        return plan
    problems = data.rows.problems + find_bad_images(data.rows.images)
    if problems and not data_cfg.skip_bad:
        raise BadInputError(problems)
    bad_images = {problem.row_id for problem in problems}
    plan.images = [image for image in data.rows.images if image.image_id not in bad_images]
    plan.image_sha256 = [data.image_sha256.get(image.image_id) for image in plan.images]
    plan.skipped = problems
    if data_cfg.reuse_rows:
        plan.reuse = find_reusable_rows(plan)
    prepare_directory(plan)
    plan.todo = [spec for spec in plan.all_shards() if not shard_is_complete(directory, spec)]
    return plan


def cache_fingerprint(teacher: Teacher, teacher_cfg: TeacherConfig, data_fingerprint: str, shard_rows: int) -> str:
    """Everything that decides the stored vectors. The device is left out on purpose: a CPU trainer
    must find the cache a GPU built (the vectors agree to rounding, not bit for bit)."""
    key = {
        "format": FORMAT,
        "teacher": teacher.identity,
        "dataset": data_fingerprint,
        "batch_size": teacher_cfg.batch_size,
        "shard_rows": shard_rows,
        "dtype": np.dtype(STORAGE_DTYPE).name,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / "manifest.json"
    if not path.is_file():
        return None
    manifest = read_json_file(path)
    if not isinstance(manifest, dict) or manifest.get("format") == FORMAT:  # another format: callers compare it
        check_manifest_shape(path, manifest)
    return manifest


def refuse_skipped_rows_unless_allowed(manifest: dict[str, Any], skip_bad: bool) -> None:
    skipped = manifest.get("skipped", [])
    if skipped and not skip_bad:
        raise BadInputError([BadRow(s["row_id"], Path(s["path"]), s["line"], s["problem"]) for s in skipped])


def prepare_directory(plan: CachePlan) -> None:
    """Create the layout, drop temporaries of killed runs, and write the plan and the row files.

    Shards of an interrupted run that copied rows from another donor (or none) are dropped: a shard
    must not mix two plans.
    """
    directory = plan.directory
    for modality in MODALITIES:
        (directory / modality).mkdir(parents=True, exist_ok=True)
    for stale in directory.rglob("*.tmp-*"):
        stale.unlink()
    earlier = _read_json(directory / "plan.json")
    if earlier is not None and earlier.get("reused_from") != plan_record(plan)["reused_from"]:
        for spec in plan.all_shards():
            (directory / spec.checksum_file).unlink(missing_ok=True)
            (directory / spec.file).unlink(missing_ok=True)
    for modality in MODALITIES:
        write_if_changed(directory / ROWS_FILES[modality], plan.rows_file_bytes(modality))
        write_if_changed(directory / ID_INDEX_FILES[modality], id_index_bytes(plan.ids(modality)))
    write_if_changed(directory / IMAGE_SHA256_FILE, "".join(f"{sha256}\n" for sha256 in plan.image_sha256).encode())
    write_if_changed(directory / "plan.json", json_bytes(plan_record(plan)))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def plan_record(plan: CachePlan) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "fingerprint": plan.fingerprint,
        "dataset_fingerprint": plan.dataset_fingerprint,
        "teacher": {"name": plan.teacher_name, "identity": plan.teacher_identity, "shared_space": plan.shared_space},
        "batch_size": plan.batch_size,
        "shard_rows": plan.shard_rows,
        "dtype": np.dtype(STORAGE_DTYPE).name,
        "normalisation": NORMALISATION,
        "dims": plan.dims,
        "counts": {modality: plan.count(modality) for modality in MODALITIES},
        "skipped": [_bad_row_record(problem) for problem in plan.skipped],
        "reused_from": None if plan.reuse is None else plan.reuse.record(),
        **plan.provenance,
    }


def _bad_row_record(problem: BadRow) -> dict[str, Any]:
    return {"row_id": problem.row_id, "path": str(problem.path), "line": problem.line, "problem": problem.problem}

"""Build a teacher cache: every row encoded once, stored as checksummed float16 shards.

Layout of ``<cache_root>/<teacher name>-<12 hex of fingerprint>/``::

    plan.json                    what is being built (fingerprint, teacher identity, shard table)
    text_rows.arrow              row i = text row i: id, text, image_row (the cached image a caption
                                 describes, -1 for none), so pools and retrieval need no corpus reads
    text_id_index.npy            the ids' hashes sorted, with their rows: finds an id's row (rows.py)
    image_rows.arrow             row i = row i of the image matrix: its id
    image_id_index.npy
    image_sha256.txt             line i = sha256 of image i's file: lets a later build reuse row i
    text/shard-00000.npy         float16 [rows, dim] (.npy, so np.load(..., mmap_mode="r") reads it)
    text/shard-00000.npy.sha256  sha256sum-style checksum, written after the shard: marks it complete
    image/shard-00000.npy ...
    manifest.json                written last: its presence means the cache is complete; records
                                 every file's sha256 and byte size

Beside the cache folders, ``<cache root>/index/`` maps configs to caches (:mod:`teacher_cache.index`)
and ``<cache root>/.verified/`` stamps verified caches (:mod:`teacher_cache.integrity`).

Why it is built this way:

- *Fingerprinted name.* The fingerprint hashes the teacher identity (weights, preprocessing,
  precision), the dataset content (ids, texts, image bytes), the batch size and the shard size, so
  another teacher or changed data lands in another directory instead of overwriting or, worse,
  being mistaken for a valid cache.
- *Atomic shards.* A shard is written to a temporary file, fsynced and renamed; its checksum file
  follows the same way. A process killed at any instant leaves either a complete shard or a
  temporary file that the next run deletes; the rerun encodes only shards without a checksum file.
- *Bit-identical resume.* A shard's batches depend on its rows alone (``shard_batches``), so a
  resumed or distributed build runs the very same forwards as an uninterrupted one and writes the
  same bytes, provided the kernels are configured alike: same device type and, on CPU, the same
  number of intra-op threads per process (BLAS sums in a thread-count-dependent order; 1 against 2
  threads moves fp16 values by an ulp or so, cosine to each other > 0.9999). torchrun gives each
  CPU worker one thread, which is what ``OMP_NUM_THREADS=1`` gives a single process.
- *Rows reused, not re-encoded.* With ``data.reuse_rows`` (the default) a new cache looks for a
  finished cache of the same teacher identity (weights, preprocessing, precision) under the same
  cache root and copies the stored float16 rows of every text it holds and every image whose file
  sha256 it holds, whatever their ids (renaming a source or deleting a line re-encodes nothing); only the other rows go through the teacher, and a shard with
  nothing to encode is written without a forward. The donor is verified before use and named in
  the manifest (``reused_from``). A reused row was encoded in another batch, so it may differ from
  a fresh encoding in the last bits: a rebuild with reuse is not byte-identical to a fresh build
  (``reuse_rows: false`` / ``--no-reuse`` gives the fresh one).
- *Inputs prepared in workers.* Tokenising and JPEG decoding run in ``teacher.num_workers``
  DataLoader processes (the teacher's ``prepare_*`` stage) while this process runs the model
  (``forward_*``). They walk the planned batches in order, so the same tensors reach the same
  forwards as with 0 workers: the bytes written do not depend on the number of workers, which is
  why neither the fingerprint, the index key nor the manifest records it.
- *Distributed.* Under ``torchrun`` (any initialised ``torch.distributed`` group) every rank first
  reads its own share of the WebDataset input tars into per-shard indexes (``index_input_shards``:
  images stored, checked and hashed there, once); then rank 0 collects the rows from those indexes,
  plans and broadcasts the plan, ranks take unfinished cache shards round-robin, and rank 0 verifies
  every shard and writes the manifest. A killed build reads again only the input tars without an
  index, and encodes only the cache shards without a checksum file.
- *Bad input.* Unreadable or undecodable images and empty captions are all listed before any
  encoding starts; with ``data.skip_bad`` they are left out and recorded in the manifest. No row
  is ever stored as a zero or garbage vector.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .corpora import BadRow, ImageRow, TextRow
from .data import (
    DEFAULT_CACHE_ROOT,
    DEFAULT_SHARD_ROWS,
    CacheDataConfig,
    CacheRows,
    collect_rows,
    data_dir_for,
    dataset_fingerprint,
    find_bad_images,
    image_sha256s,
    index_input_shards,
)
from kdmcse_base.process_group import DistEnv, loader_worker_init
from kdmcse_base.files import atomic_write, file_sha256, folder_lock, json_bytes, write_if_changed
from .index import find_indexed, index_key, library_versions, record_in_index
from .integrity import CacheIntegrityError, record_verified
from .reader import FORMAT, CacheFormatError, TeacherCache, check_manifest_shape, read_json_file
from .rows import ID_INDEX_FILES, NO_IMAGE, ROWS_FILES, id_index_bytes, rows_file_bytes
from .towers import Teacher, TeacherConfig, build_teacher, resolve_device
from .towers.base import StagedTeacher, load_rgb

log = logging.getLogger(__name__)

MODALITIES = ("text", "image")
STORAGE_DTYPE = np.float16
NORMALISATION = "L2-normalised in float32, then cast to float16 (re-normalise after loading for exact cosines)"
IMAGE_SHA256_FILE = "image_sha256.txt"
_UNIT_NORM_TOLERANCE = 1e-3


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


@dataclass(frozen=True)
class ShardSpec:
    modality: str
    index: int
    start: int
    stop: int

    @property
    def file(self) -> str:
        return f"{self.modality}/shard-{self.index:05d}.npy"

    @property
    def checksum_file(self) -> str:
        return f"{self.file}.sha256"


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


@dataclass
class BuildReport:
    """What one call did; ``summary()`` is what the CLI prints."""

    path: Path
    encoded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    """Rows this process ran through the teacher, per modality."""
    reused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    """Rows this process copied from ``reused_from`` instead of encoding them, per modality."""
    reused_from: Path | None = None
    shards_written: int = 0
    shards_reused: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    already_complete: bool = False

    @property
    def rows_encoded(self) -> int:
        return sum(self.encoded.values())

    def summary(self) -> str:
        if self.already_complete:
            return f"cache {self.path} is already complete: nothing to do ({self.seconds:.1f} s)"
        reused = (f"reused {_rows_phrase(self.reused)} from {self.reused_from}, "
                  if self.reused_from is not None else "")
        encoded = f"encoded {_rows_phrase(self.encoded)}" if self.rows_encoded else "encoded nothing"
        rate = f" ({self.rows_encoded / self.seconds:.1f} rows/s)" if self.rows_encoded and self.seconds > 0 else ""
        return (
            f"cache {self.path}: {reused}{encoded} in {self.seconds:.1f} s{rate}, {self.shards_written} shards "
            f"written ({self.bytes_written / 2**20:.1f} MiB), {self.shards_reused} already written by an earlier run"
        )


def _rows_phrase(counts: dict[str, int]) -> str:
    return f"{counts['text']:,} text rows and {counts['image']:,} images"


# --- public entry points ---------------------------------------------------------------------------


def ensure_cache(
    teacher_cfg: TeacherConfig,
    data_cfg: CacheDataConfig,
    cache_root: Path | str = DEFAULT_CACHE_ROOT,
    data_dir: Path | str | None = None,
    *,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    progress: bool = True,
) -> Path:
    """The directory of the complete cache for this teacher and data, building what is missing.

    This is what a trainer calls before training. The corpora are read once (on rank 0); a cache the
    index knows (:mod:`teacher_cache.index`) is returned without loading the teacher. Under an
    initialised ``torch.distributed`` group every rank must call it (the ranks share the encoding).
    """
    group = DistEnv.current()
    _index_my_input_shards(group, data_cfg)
    data = collect_data(data_cfg, data_dir) if group.rank == 0 else None
    found = _computed_on_rank0(group, lambda: find_complete_cache(teacher_cfg, data_cfg, Path(cache_root), data,
                                                                  shard_rows))
    if found is not None:
        return found
    return build_cache(teacher_cfg, data_cfg, cache_root, data_dir, shard_rows=shard_rows, progress=progress,
                       data=data).path


def open_cache(teacher_cfg: TeacherConfig, data_cfg: CacheDataConfig, cache_root: Path | str = DEFAULT_CACHE_ROOT,
               data_dir: Path | str | None = None, *, named: Path | str | None = None,
               progress: bool = True, shard_rows: int = DEFAULT_SHARD_ROWS) -> TeacherCache:
    """The cache of this teacher and data, opened: the ``named`` finished cache folder, checked against
    the configs without reading the corpora (what a corpus of millions of rows needs: reading and
    fingerprinting it costs minutes per start), else the one :func:`ensure_cache` finds or builds."""
    if named is None:
        return TeacherCache.open(ensure_cache(teacher_cfg, data_cfg, cache_root, data_dir, shard_rows=shard_rows,
                                              progress=progress))
    cache = TeacherCache.open(named)
    check_built_from(cache, teacher_cfg, data_cfg)
    return cache


class CacheMismatchError(ValueError):
    """A cache named by the user was built from another teacher or other data than the config's."""


def check_built_from(cache: TeacherCache, teacher_cfg: TeacherConfig, data_cfg: CacheDataConfig) -> None:
    """The cache's manifest records these very ``teacher`` and ``data`` sections (device and workers aside); else a
    one-line error naming the first key that differs. The data files themselves are not read: a file
    edited since the build goes unnoticed (an unnamed cache is found by the data's fingerprint instead)."""
    manifest = cache.manifest
    for section, recorded, wanted in (("teacher", manifest.get("teacher_config"), teacher_cfg.recorded_dict()),
                                      ("data", manifest.get("data_config"), data_cfg.to_dict())):
        recorded, wanted = recorded or {}, json.loads(json.dumps(wanted))  # as stored: tuples are lists
        for key in sorted((set(wanted) | set(recorded)) - {"device"}):  # a GPU's cache serves a CPU run
            if recorded.get(key) != wanted.get(key):
                raise CacheMismatchError(
                    f"teacher cache {cache.path} was built with {section}.{key}={recorded.get(key)!r}, this config "
                    f"has {wanted.get(key)!r}: use the config it was built from, or leave train.teacher_cache unset "
                    "to find or build the matching cache")


def find_complete_cache(teacher_cfg: TeacherConfig, data_cfg: CacheDataConfig, cache_root: Path,
                        data: CollectedData, shard_rows: int = DEFAULT_SHARD_ROWS) -> Path | None:
    """The complete cache the index records for these configs and data, or None; loads no teacher.

    A cache holding skipped rows is refused unless ``data_cfg.skip_bad`` allows it.
    """
    entry = find_indexed(cache_root, index_key(teacher_cfg, data.fingerprint, shard_rows, FORMAT))
    if entry is None:
        return None
    directory = cache_root / entry["cache"]
    manifest = _read_manifest(directory)
    if manifest is None or manifest.get("format") != FORMAT or manifest.get("fingerprint") != entry["fingerprint"]:
        return None
    _refuse_skipped_rows_unless_allowed(manifest, data_cfg.skip_bad)
    return directory


def build_cache(
    teacher_cfg: TeacherConfig,
    data_cfg: CacheDataConfig,
    cache_root: Path | str = DEFAULT_CACHE_ROOT,
    data_dir: Path | str | None = None,
    *,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    progress: bool = True,
    teacher: Teacher | None = None,
    data: CollectedData | None = None,
) -> BuildReport:
    """Build or resume the cache (on every rank of an initialised process group) and report.

    ``teacher``, when given, is an already-loaded teacher built from ``teacher_cfg`` (saves loading
    it twice); its ``identity`` is what fingerprints the cache. ``data``: the corpora already read
    by the caller (rank 0), so they are not read twice. Every rank first indexes its share of the
    WebDataset input shards (a stat per shard when a caller did so already).
    """
    started = time.perf_counter()
    group = DistEnv.current()
    cache_root = Path(cache_root)
    _index_my_input_shards(group, data_cfg)
    with _random_state_kept():
        teacher = teacher or build_teacher(teacher_cfg)
    with _lock_on_rank0(group, cache_root):
        plan = _computed_on_rank0(group, lambda: _make_plan(
            teacher, teacher_cfg, data_cfg, cache_root, data or collect_data(data_cfg, data_dir), shard_rows))
        report = BuildReport(path=plan.directory, already_complete=plan.complete,
                             reused_from=None if plan.reuse is None else plan.reuse.donor)
        if not plan.complete:
            report.shards_reused = len(plan.all_shards()) - len(plan.todo)
            sources = _RowSources(teacher, _open_donor(plan), teacher_cfg.resolved_num_workers(),
                                  pin_memory=resolve_device(teacher_cfg.device).type == "cuda")
            with _random_state_kept():
                _encode_my_shards(sources, plan, plan.todo[group.rank :: group.world_size], report,
                                  progress and group.rank == 0)
            group.barrier()
            if group.rank == 0:
                _finalise(plan)
            group.barrier()
        if group.rank == 0:
            record_in_index(cache_root, plan.index_key, plan.directory.name, plan.fingerprint)
    report.seconds = time.perf_counter() - started
    return report  # the caller says what it did (scripts/cache_teacher.py prints report.summary())


def locate_cache(
    teacher: Teacher,
    teacher_cfg: TeacherConfig,
    data_cfg: CacheDataConfig,
    cache_root: Path | str = DEFAULT_CACHE_ROOT,
    data_dir: Path | str | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
) -> Path:
    """Where the cache for this teacher and data lives (whether or not it exists yet)."""
    fingerprint = _cache_fingerprint(teacher, teacher_cfg, collect_data(data_cfg, data_dir).fingerprint, shard_rows)
    return Path(cache_root) / cache_name(teacher.name, fingerprint)


def cache_name(teacher_name: str, fingerprint: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", teacher_name).strip("-") or "teacher"
    return f"{slug}-{fingerprint[:12]}"


# --- planning ------------------------------------------------------------------------------------


def _make_plan(teacher: Teacher, teacher_cfg: TeacherConfig, data_cfg: CacheDataConfig, cache_root: Path,
               data: CollectedData, shard_rows: int) -> CachePlan:
    """Rank 0 only: check rows, name the directory, and list the shards still to do."""
    fingerprint = _cache_fingerprint(teacher, teacher_cfg, data.fingerprint, shard_rows)
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
    manifest = _read_manifest(directory)
    if manifest is not None:
        if manifest.get("fingerprint") != fingerprint:
            raise CacheIntegrityError(f"{directory / 'manifest.json'} belongs to fingerprint "
                                      f"{manifest.get('fingerprint')}, expected {fingerprint}")
        _refuse_skipped_rows_unless_allowed(manifest, data_cfg.skip_bad)
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
        plan.reuse = _find_reusable_rows(plan)
    _prepare_directory(plan)
    plan.todo = [spec for spec in plan.all_shards() if not _shard_is_complete(directory, spec)]
    return plan


def _cache_fingerprint(teacher: Teacher, teacher_cfg: TeacherConfig, data_fingerprint: str, shard_rows: int) -> str:
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


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / "manifest.json"
    if not path.is_file():
        return None
    manifest = read_json_file(path)
    if not isinstance(manifest, dict) or manifest.get("format") == FORMAT:  # another format: callers compare it
        check_manifest_shape(path, manifest)
    return manifest


def _refuse_skipped_rows_unless_allowed(manifest: dict[str, Any], skip_bad: bool) -> None:
    skipped = manifest.get("skipped", [])
    if skipped and not skip_bad:
        raise BadInputError([BadRow(s["row_id"], Path(s["path"]), s["line"], s["problem"]) for s in skipped])


def _find_reusable_rows(plan: CachePlan) -> RowReuse | None:
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
        log.info("reusing %s of %s; encoding %s", _rows_phrase({m: best.count(m) for m in MODALITIES}), best.donor,
                 _rows_phrase({m: plan.count(m) - best.count(m) for m in MODALITIES}))
    return best


def _same_teacher(manifest_file: Path, plan: CachePlan) -> bool:
    """Whether a cache's stored vectors came from this very teacher (weights, preprocessing, precision)."""
    try:
        manifest = json.loads(manifest_file.read_text())
        return (manifest.get("format") == FORMAT and manifest.get("dtype") == np.dtype(STORAGE_DTYPE).name
                and manifest.get("dims") == plan.dims
                and manifest["teacher"]["identity"] == json.loads(json.dumps(plan.teacher_identity)))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _text_rows_in(donor: TeacherCache, plan: CachePlan) -> np.ndarray:
    """The donor row of each planned text row with the same text, whatever its id (the teacher's vector
    depends on the text alone, so a renamed source or a deleted line re-encodes nothing); -1 for the others."""
    stored: dict[str, int] = {}
    for row, text in enumerate(donor.texts):
        stored.setdefault(text, row)
    return np.array([stored.get(row.text, -1) for row in plan.texts], dtype=np.int64)


def _image_rows_in(donor: TeacherCache, plan: CachePlan) -> np.ndarray:
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


def _prepare_directory(plan: CachePlan) -> None:
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
    if earlier is not None and earlier.get("reused_from") != _plan_record(plan)["reused_from"]:
        for spec in plan.all_shards():
            (directory / spec.checksum_file).unlink(missing_ok=True)
            (directory / spec.file).unlink(missing_ok=True)
    for modality in MODALITIES:
        write_if_changed(directory / ROWS_FILES[modality], plan.rows_file_bytes(modality))
        write_if_changed(directory / ID_INDEX_FILES[modality], id_index_bytes(plan.ids(modality)))
    write_if_changed(directory / IMAGE_SHA256_FILE, "".join(f"{sha256}\n" for sha256 in plan.image_sha256).encode())
    write_if_changed(directory / "plan.json", json_bytes(_plan_record(plan)))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _plan_record(plan: CachePlan) -> dict[str, Any]:
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


# --- encoding ------------------------------------------------------------------------------------


@dataclass
class _RowSources:
    """Where a shard's vectors come from: the teacher, and the donor cache of reused rows (if any).

    ``workers`` processes prepare the teacher's inputs (``teacher.num_workers``, 0: this process);
    ``pin_memory`` hands them over in page-locked memory (a CUDA teacher)."""

    teacher: Teacher
    donor: TeacherCache | None = None
    workers: int = 0
    pin_memory: bool = False


def _open_donor(plan: CachePlan) -> TeacherCache | None:

    return None if plan.reuse is None else TeacherCache.open(plan.reuse.donor)


def _encode_my_shards(sources: _RowSources, plan: CachePlan, shards: list[ShardSpec], report: BuildReport,
                      progress: bool) -> None:
    for modality in MODALITIES:
        mine = [spec for spec in shards if spec.modality == modality]
        batches = {spec: _row_batches(plan, spec) for spec in mine}
        prepared = _prepared_batches(sources, plan, modality, [batch for spec in mine for batch in batches[spec]])
        total = sum(len(batch) for spec in mine for batch in batches[spec])
        with tqdm(total=total, desc=f"teacher {modality}", unit="rows", disable=not progress or total == 0) as bar:
            for spec in mine:
                embeddings = _encode_shard(sources, plan, spec, batches[spec], _Progress(prepared, bar))
                encoded = sum(len(batch) for batch in batches[spec])
                report.bytes_written += _write_shard(plan.directory, spec, embeddings)
                report.shards_written += 1
                report.encoded[modality] += encoded
                report.reused[modality] += spec.stop - spec.start - encoded


def _row_batches(plan: CachePlan, spec: ShardSpec) -> list[list[int]]:
    """The plan rows of each batch of the shard's rows to encode. The batches depend on the shard's
    rows and the plan's donor alone (the resume guarantee); reused rows are in none of them."""
    missing = np.flatnonzero(plan.donor_rows(spec) < 0) + spec.start
    by_length = spec.modality == "text"
    inputs: Sequence = [plan.texts[row].text for row in missing] if by_length else missing
    return [[int(missing[i]) for i in batch] for batch in shard_batches(inputs, plan.batch_size, by_length)]


def _prepared_batches(sources: _RowSources, plan: CachePlan, modality: str, batches: list[list[int]]) -> Iterator:
    """The teacher's inputs of each batch, in order, prepared by ``sources.workers`` processes.

    A :class:`StagedTeacher` tokenises / decodes and transforms there (its ``prepare_*``); any other
    teacher receives the texts, or the images decoded to RGB. The DataLoader walks the very batches
    given, so what reaches the model is what an in-process build feeds it.
    """
    teacher = sources.teacher
    staged = isinstance(teacher, StagedTeacher)
    if modality == "text":
        inputs: list = [row.text for row in plan.texts]
        prepare = teacher.prepare_text if staged else list
    else:
        inputs = [row.path for row in plan.images]
        prepare = teacher.prepare_image if staged else _decode_images
    if not batches:
        return iter(())
    return iter(DataLoader(inputs, batch_sampler=batches, collate_fn=prepare, pin_memory=sources.pin_memory,
                           num_workers=min(sources.workers, len(batches)), worker_init_fn=loader_worker_init))


@dataclass
class _Progress:
    """The prepared batches still to come, and the bar that counts the rows encoded."""

    prepared: Iterator
    bar: tqdm


def _encode_shard(sources: _RowSources, plan: CachePlan, spec: ShardSpec, batches: list[list[int]],
                  progress: _Progress) -> np.ndarray:
    """One shard's vectors: reused rows are the donor's stored float16 rows, the rows of ``batches``
    go through the teacher, one forward per batch (their inputs come from ``progress.prepared``)."""
    donor_rows = plan.donor_rows(spec)
    out = np.empty((spec.stop - spec.start, plan.dims[spec.modality]), dtype=STORAGE_DTYPE)
    reused = donor_rows >= 0
    if reused.any():
        stored = sources.donor.text if spec.modality == "text" else sources.donor.image
        # float16 -> float32 -> float16 is exact: these are the donor's bytes.
        out[reused] = stored(donor_rows[reused]).numpy().astype(STORAGE_DTYPE)
    forward = _forward(sources.teacher, spec.modality)
    for batch in batches:
        embeddings = forward(next(progress.prepared))
        _check_embeddings(embeddings, plan.ids_at(spec.modality, batch), plan.dims[spec.modality])
        out[np.array(batch) - spec.start] = embeddings.numpy().astype(STORAGE_DTYPE)
        progress.bar.update(len(batch))
    return out


def _forward(teacher: Teacher, modality: str) -> Callable[[Any], torch.Tensor]:
    """The device stage of a :class:`StagedTeacher`; the whole encoding of any other teacher."""
    if isinstance(teacher, StagedTeacher):
        return teacher.forward_text if modality == "text" else teacher.forward_image
    return teacher.encode_text if modality == "text" else teacher.encode_image


def _decode_images(paths: Iterable[Path]) -> list[Image.Image]:
    return [load_rgb(path) for path in paths]


def shard_batches(inputs: Sequence, batch_size: int, by_length: bool) -> list[list[int]]:
    """Row positions of each batch. Texts are grouped by character length (longest first) so a batch
    pads to similar lengths; the order depends only on the texts, so reruns cut the same batches."""
    order = list(range(len(inputs)))
    if by_length:
        order.sort(key=lambda i: (-len(inputs[i]), i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _check_embeddings(embeddings: torch.Tensor, ids: list[str], dim: int) -> None:
    """A teacher that returns NaNs or non-unit rows is a bug; never store its output silently."""
    if tuple(embeddings.shape) != (len(ids), dim):
        raise RuntimeError(f"teacher returned shape {tuple(embeddings.shape)} for {len(ids)} rows of dim {dim}")
    norms = embeddings.float().norm(dim=-1)
    broken = ~torch.isfinite(embeddings).all(dim=-1) | ((norms - 1).abs() > _UNIT_NORM_TOLERANCE)
    if broken.any():
        rows = [ids[i] for i in torch.nonzero(broken).flatten().tolist()]
        raise RuntimeError(f"teacher produced non-finite or non-unit embeddings for rows {rows[:10]}")


def _write_shard(directory: Path, spec: ShardSpec, embeddings: np.ndarray) -> int:
    """Write the shard, then its checksum file; each goes temp file -> fsync -> rename."""
    buffer = io.BytesIO()
    np.save(buffer, embeddings, allow_pickle=False)
    data = buffer.getvalue()
    atomic_write(directory / spec.file, data)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(directory / spec.checksum_file, f"{digest}  {Path(spec.file).name}\n".encode())
    return len(data)


def _shard_is_complete(directory: Path, spec: ShardSpec) -> bool:
    return (directory / spec.file).is_file() and (directory / spec.checksum_file).is_file()


def _recorded_checksum(directory: Path, spec: ShardSpec) -> str:
    return (directory / spec.checksum_file).read_text().split()[0]


# --- finishing -----------------------------------------------------------------------------------


def _finalise(plan: CachePlan) -> None:
    """Rank 0: check every shard against the checksum its writer recorded, then write the manifest.

    Every file is hashed here, so the cache is stamped as verified (:mod:`teacher_cache.integrity`).
    """
    modalities = {}
    for modality in MODALITIES:
        shards = []
        for spec in plan.shards(modality):
            recorded = _recorded_checksum(plan.directory, spec)
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
    manifest = {**_plan_record(plan), "modalities": modalities, "versions": library_versions()}
    atomic_write(plan.directory / "manifest.json", json_bytes(manifest))
    record_verified(plan.directory, manifest)


def _file_record(name: str, directory: Path, file: str) -> dict[str, Any]:
    """The manifest's ``<name>_file``, ``<name>_sha256`` and ``<name>_bytes`` of a cache file."""
    return {f"{name}_file": file, f"{name}_sha256": file_sha256(directory / file),
            f"{name}_bytes": (directory / file).stat().st_size}


# --- process group -------------------------------------------------------------------------------


class InputShardError(ValueError):
    """Another rank could not index its input shards (that rank printed the cause; this one names it)."""


def _index_my_input_shards(group: DistEnv, data_cfg: CacheDataConfig) -> None:
    """This rank's share of the WebDataset input shards read into indexes; returns once every rank's
    share is done (a barrier), so rank 0's collection finds every index. An error on any rank is raised
    on every rank: none waits forever."""
    def index() -> None:
        done = index_input_shards(data_cfg, group.rank, group.world_size)
        if any(getattr(source, "shards", None) for source in data_cfg.own_sources):
            log.info("rank %d of %d: %s", group.rank, group.world_size, done.summary())

    if group.world_size == 1:
        index()
        return
    error = None
    try:
        index()
    except Exception as err:  # raised below, after every rank said how it went
        error = err
    said: list[str | None] = [None] * group.world_size
    dist.all_gather_object(said, None if error is None else str(error))
    if error is not None:
        raise error
    failed = [(rank, message) for rank, message in enumerate(said) if message is not None]
    if failed:
        raise InputShardError(f"rank {failed[0][0]} could not index its input shards: {failed[0][1]}")


def _computed_on_rank0(group: DistEnv, compute: Callable[[], Any]) -> Any:
    """Rank 0 computes, the others receive its result; an error is raised on every rank, so no rank
    waits forever."""
    if group.world_size == 1:
        return compute()
    result, error = None, None
    if group.rank == 0:
        try:
            result = compute()
        except Exception as err:
            error = err
    payload = [result, None if error is None else f"{type(error).__name__}: {error}"]
    dist.broadcast_object_list(payload, src=0)
    if error is not None:
        raise error
    if payload[1] is not None:
        raise RuntimeError(f"rank 0 could not plan the cache: {payload[1]}")
    return payload[0]


@contextmanager
def _random_state_kept() -> Iterator[None]:
    """Loading a teacher may draw random numbers (weights initialised before the checkpoint is read).
    A trainer that found its cache complete loads none, so the draws are undone: a run that built
    its cache and one that did not train the very same student."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


@contextmanager
def _lock_on_rank0(group: DistEnv, cache_root: Path) -> Iterator[None]:
    """Serialise independent builders of one cache root (a second one waits, saying for whom);
    ranks of one group share rank 0's lock."""
    if group.rank != 0:
        yield
        return
    with folder_lock(cache_root, "cache build", wait=True, name=".build.lock"):
        yield

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

This module holds the entry points and the process-group steps; each job of a build has its module:
:mod:`.cache_plan` (read the corpora, check rows, name the folder, list the shards to do),
:mod:`.cache_reuse` (rows copied from a finished cache), :mod:`.cache_encode` (the encode loop),
:mod:`.cache_shards` (a shard file and its checksum, written atomically) and :mod:`.cache_manifest`
(verify every shard, write the manifest).

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

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .cache_encode import BuildReport, RowSources, encode_my_shards, open_donor, shard_batches
from .cache_manifest import finalise
from .cache_plan import (
    BadInputError,
    CollectedData,
    cache_fingerprint,
    cache_name,
    collect_data,
    make_plan,
    read_manifest,
    refuse_skipped_rows_unless_allowed,
)
from .cache_shards import MODALITIES, STORAGE_DTYPE
from .data import DEFAULT_CACHE_ROOT, DEFAULT_SHARD_ROWS, CacheDataConfig, index_input_shards
from kdmcse_base.process_group import DistEnv
from kdmcse_base.files import folder_lock
from .index import find_indexed, index_key, record_in_index
from .reader import FORMAT, TeacherCache
from .towers import Teacher, TeacherConfig, build_teacher, resolve_device

log = logging.getLogger(__name__)

__all__ = ["BadInputError", "BuildReport", "CacheMismatchError", "CollectedData", "DEFAULT_CACHE_ROOT",
           "DEFAULT_SHARD_ROWS", "InputShardError", "MODALITIES", "STORAGE_DTYPE", "build_cache", "cache_name",
           "check_built_from", "collect_data", "ensure_cache", "find_complete_cache", "locate_cache", "open_cache",
           "shard_batches"]


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
    manifest = read_manifest(directory)
    if manifest is None or manifest.get("format") != FORMAT or manifest.get("fingerprint") != entry["fingerprint"]:
        return None
    refuse_skipped_rows_unless_allowed(manifest, data_cfg.skip_bad)
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
        plan = _computed_on_rank0(group, lambda: make_plan(
            teacher, teacher_cfg, data_cfg, cache_root, data or collect_data(data_cfg, data_dir), shard_rows))
        report = BuildReport(path=plan.directory, already_complete=plan.complete,
                             reused_from=None if plan.reuse is None else plan.reuse.donor)
        if not plan.complete:
            report.shards_reused = len(plan.all_shards()) - len(plan.todo)
            sources = RowSources(teacher, open_donor(plan), teacher_cfg.resolved_num_workers(),
                                  pin_memory=resolve_device(teacher_cfg.device).type == "cuda")
            with _random_state_kept():
                encode_my_shards(sources, plan, plan.todo[group.rank :: group.world_size], report,
                                  progress and group.rank == 0)
            group.barrier()
            if group.rank == 0:
                finalise(plan)
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
    fingerprint = cache_fingerprint(teacher, teacher_cfg, collect_data(data_cfg, data_dir).fingerprint, shard_rows)
    return Path(cache_root) / cache_name(teacher.name, fingerprint)


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

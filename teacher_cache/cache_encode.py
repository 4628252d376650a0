"""The encode loop: each of this rank's shards filled from the donor's stored rows and the teacher's
forwards, one batch at a time, inputs prepared in DataLoader workers (teacher_cache/writer.py)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .cache_plan import CachePlan
from .cache_reuse import rows_phrase
from .cache_shards import MODALITIES, STORAGE_DTYPE, ShardSpec, write_shard
from kdmcse_base.process_group import loader_worker_init
from .reader import TeacherCache
from .towers import Teacher
from .towers.base import StagedTeacher, load_rgb

_UNIT_NORM_TOLERANCE = 1e-3


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
        reused = (f"reused {rows_phrase(self.reused)} from {self.reused_from}, "
                  if self.reused_from is not None else "")
        encoded = f"encoded {rows_phrase(self.encoded)}" if self.rows_encoded else "encoded nothing"
        rate = f" ({self.rows_encoded / self.seconds:.1f} rows/s)" if self.rows_encoded and self.seconds > 0 else ""
        return (
            f"cache {self.path}: {reused}{encoded} in {self.seconds:.1f} s{rate}, {self.shards_written} shards "
            f"written ({self.bytes_written / 2**20:.1f} MiB), {self.shards_reused} already written by an earlier run"
        )


@dataclass
class RowSources:
    """Where a shard's vectors come from: the teacher, and the donor cache of reused rows (if any).

    ``workers`` processes prepare the teacher's inputs (``teacher.num_workers``, 0: this process);
    ``pin_memory`` hands them over in page-locked memory (a CUDA teacher)."""

    teacher: Teacher
    donor: TeacherCache | None = None
    workers: int = 0
    pin_memory: bool = False


def open_donor(plan: CachePlan) -> TeacherCache | None:

    return None if plan.reuse is None else TeacherCache.open(plan.reuse.donor)


def encode_my_shards(sources: RowSources, plan: CachePlan, shards: list[ShardSpec], report: BuildReport,
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
                report.bytes_written += write_shard(plan.directory, spec, embeddings)
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


def _prepared_batches(sources: RowSources, plan: CachePlan, modality: str, batches: list[list[int]]) -> Iterator:
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


def _encode_shard(sources: RowSources, plan: CachePlan, spec: ShardSpec, batches: list[list[int]],
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

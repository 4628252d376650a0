"""The cache's shard files: which rows each holds, and writing one so a kill at any instant leaves either
a complete shard with its checksum file or a temporary file the next run deletes (teacher_cache/writer.py)."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdmcse_base.files import atomic_write

MODALITIES = ("text", "image")
STORAGE_DTYPE = np.float16


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


def write_shard(directory: Path, spec: ShardSpec, embeddings: np.ndarray) -> int:
    """Write the shard, then its checksum file; each goes temp file -> fsync -> rename."""
    buffer = io.BytesIO()
    np.save(buffer, embeddings, allow_pickle=False)
    data = buffer.getvalue()
    atomic_write(directory / spec.file, data)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(directory / spec.checksum_file, f"{digest}  {Path(spec.file).name}\n".encode())
    return len(data)


def shard_is_complete(directory: Path, spec: ShardSpec) -> bool:
    return (directory / spec.file).is_file() and (directory / spec.checksum_file).is_file()


def recorded_checksum(directory: Path, spec: ShardSpec) -> str:
    return (directory / spec.checksum_file).read_text().split()[0]

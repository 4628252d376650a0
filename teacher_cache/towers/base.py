"""What every teacher backend shares: the protocol, precision handling, image loading, hashing.

A teacher is frozen: it maps a list of sentences or images to L2-normalised float32 vectors on the
CPU, one row per input, and describes itself in ``identity`` precisely enough that two teachers
with the same identity produce the same cache. Everything else (batching for the cache, sharding,
storage dtype) belongs to the cache writer.

The backends encode in two stages (:class:`StagedTeacher`): ``prepare_*`` runs on the CPU alone
(tokenise; decode and transform images) and returns tensors, ``forward_*`` runs the towers on the
device. The cache writer runs the first stage in DataLoader worker processes, so the device never
waits for the tokenizer or the JPEG decoder; ``encode_*`` (:class:`StagedEncoding`) chains both.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, Union, runtime_checkable

import torch
import torch.nn.functional as F
from PIL import Image

from kdmcse_base.machine import device_problem

ImageInput = Union[Image.Image, str, Path]
Precision = str  # "fp32" | "bf16" | "fp16"
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class MissingCheckpointError(FileNotFoundError):
    """The teacher's weights are not where the configuration says; the message says how to supply them."""


@runtime_checkable
class Teacher(Protocol):
    """A frozen text tower and image tower whose outputs a cache stores.

    ``shared_space`` is True only when text and image vectors are trained to be comparable (CLIP):
    only then do text-image similarities mean anything.
    """

    name: str
    identity: dict[str, Any]
    shared_space: bool
    text_dim: int
    image_dim: int

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor: ...

    def encode_image(self, images: Sequence[ImageInput]) -> torch.Tensor: ...


@runtime_checkable
class StagedTeacher(Teacher, Protocol):
    """A teacher whose encoding splits into a CPU stage and a device stage.

    ``prepare_text`` / ``prepare_image`` may run in another process: they touch no model weights
    and return what pickles cheaply (tensors, dicts of tensors). ``forward_text(prepare_text(x))``
    equals ``encode_text(x)`` bit for bit, batch by batch.
    """

    def prepare_text(self, texts: Sequence[str]) -> Any: ...

    def forward_text(self, prepared: Any) -> torch.Tensor: ...

    def prepare_image(self, images: Sequence[ImageInput]) -> Any: ...

    def forward_image(self, prepared: Any) -> torch.Tensor: ...


class StagedEncoding:
    """``encode_text`` / ``encode_image`` of a :class:`StagedTeacher`: prepare, then forward, one
    ``batch_size`` batch at a time."""

    batch_size: int
    text_dim: int
    image_dim: int

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return encode_in_batches(texts, self.batch_size, self.text_dim,
                                 lambda batch: self.forward_text(self.prepare_text(batch)))

    def encode_image(self, images: Sequence[ImageInput]) -> torch.Tensor:
        return encode_in_batches(images, self.batch_size, self.image_dim,
                                 lambda batch: self.forward_image(self.prepare_image(batch)))


class DeviceUnavailableError(ValueError):
    """``teacher.device`` names a device this machine does not have."""


def resolve_device(device: str) -> torch.device:
    """``auto`` = CUDA if present; a bare ``cuda`` means this process's GPU (``$LOCAL_RANK`` under torchrun)."""
    problem = device_problem(device)
    if problem:
        raise DeviceUnavailableError(f"teacher.device={device}: {problem}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def autocast_context(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """Mixed precision through autocast: weights stay fp32, so fp32 and bf16 runs share one checkpoint."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"unknown precision {precision!r}; expected fp32, bf16 or fp16")
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def normalised_float(embeddings: torch.Tensor) -> torch.Tensor:
    """Unit rows in float32 on the CPU, whatever dtype or device the forward produced."""
    return F.normalize(embeddings.detach().float(), dim=-1).cpu()


def load_rgb(image: ImageInput) -> Image.Image:
    """An RGB PIL image; files are fully decoded and closed at once so no handle outlives a batch."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as opened:
        return opened.convert("RGB")


def in_batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def encode_in_batches(
    items: Sequence, batch_size: int, dim: int, encode_batch: Callable[[Sequence], torch.Tensor]
) -> torch.Tensor:
    """Encode ``items`` ``batch_size`` at a time; the batches are fixed by position, never by length."""
    if len(items) == 0:
        return torch.empty(0, dim)
    return torch.cat([encode_batch(batch) for batch in in_batches(items, batch_size)])


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over the loaded parameters and buffers (names, dtypes, shapes, bytes).

    Hashing what was loaded, rather than a file, makes a hub id and a local copy of the same weights
    fingerprint the same, and catches a checkpoint that silently failed to load.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()

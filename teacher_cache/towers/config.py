"""TeacherConfig: which frozen towers to run, and how (batch size, precision, device)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

from kdmcse_base.machine import emulates_bf16
from kdmcse_base.offline_models import EFFICIENTNET_ALIAS, MINILM_ALIAS, check_offline_name
from kdmcse_base.typed_config import from_dict

Backend = Literal["composite", "open_clip", "hf_clip"]
BACKENDS: tuple[str, ...] = ("composite", "open_clip", "hf_clip")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

# What "auto" precision means per device type and modality on hardware that computes bf16 natively. The
# CPU entries follow reports/cache_speed.md (benchmarks/cache_speed.py): bf16 autocast only where it is
# faster *and* keeps cosine agreement with fp32 >= 0.999. On CUDA, bf16 autocast is the usual CLIP
# inference mode. Where bf16 is emulated (a CPU without avx512_bf16 or AMX) every entry is fp32: there
# the text tower ran 6x slower under bf16 than in fp32 (all-MiniLM-L6-v2, 2 AMD EPYC cores).
AUTO_PRECISION: dict[str, dict[str, str]] = {
    "cpu": {"text": "bf16", "image": "fp32"},
    "cuda": {"text": "bf16", "image": "bf16"},
}

# Fields that decide how fast a cache is built, never what it holds.
RUNTIME_ONLY: tuple[str, ...] = ("num_workers",)


def default_num_workers() -> int:
    """One core stays with the process that runs the model; more than 8 workers outrun any GPU here."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class TeacherConfig:
    """Everything that decides which teacher vectors a cache holds.

    backend:
      - ``composite``: ``text_model`` (any sentence-transformers name/path, or the offline alias) as the
        text tower and ``image_model`` as the image tower: ``offline:efficientnet-lite0`` or a timm
        model name, whose weights come from ``image_weights`` (a local file) or else timm's hub
        download. The two spaces are unrelated (``shared_space=False``).
      - ``open_clip``: ``clip_model`` (e.g. ``ViT-L-14``, or ``local-dir:/path``, ``hf-hub:org/repo``)
        with ``clip_pretrained`` (a tag such as ``openai``, or a checkpoint file).
      - ``hf_clip``: transformers ``CLIPModel`` from ``clip_model`` (hub id or local directory).
    precision: ``auto`` picks per device and modality from ``AUTO_PRECISION`` (fp32 wherever bf16 is
      emulated: kdmcse_base.machine.emulates_bf16); otherwise the
      autocast dtype (``fp32`` = no autocast). It changes the vectors, so it is part of the identity.
    num_workers: processes that tokenise texts and decode + transform images for the cache writer
      while the model encodes (a DataLoader over the writer's batches); 0 = in the writer's process;
      None = ``default_num_workers()``. It never changes a stored byte, so no cache key or manifest
      records it (``RUNTIME_ONLY``).
    """

    backend: Backend = "composite"
    text_model: str = MINILM_ALIAS
    image_model: str = EFFICIENTNET_ALIAS
    image_weights: str | None = None
    clip_model: str = "ViT-L-14"
    clip_pretrained: str | None = "openai"
    batch_size: int = 64
    precision: str = "auto"
    device: str = "auto"
    max_seq_length: int | None = None
    num_workers: int | None = None

    def __post_init__(self) -> None:
        check_offline_name(self.text_model, MINILM_ALIAS, "text_model")
        check_offline_name(self.image_model, EFFICIENTNET_ALIAS, "image_model")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown teacher backend {self.backend!r}; expected one of {BACKENDS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; expected one of {PRECISIONS}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.max_seq_length is not None and self.max_seq_length < 1:
            raise ValueError(f"max_seq_length must be >= 1 (or null: the model's own), got {self.max_seq_length}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0: no worker processes), got {self.num_workers}")

    def precision_for(self, device_type: str, modality: str) -> str:
        if self.precision != "auto":
            return self.precision
        if emulates_bf16(device_type):
            return "fp32"
        return AUTO_PRECISION.get(device_type, AUTO_PRECISION["cpu"])[modality]

    def resolved_num_workers(self) -> int:
        return default_num_workers() if self.num_workers is None else self.num_workers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def recorded_dict(self) -> dict[str, Any]:
        """What a cache records of this config: every field but the ``RUNTIME_ONLY`` ones."""
        return {name: value for name, value in asdict(self).items() if name not in RUNTIME_ONLY}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TeacherConfig:
        """From a ``teacher:`` section, checked as a training config's is (errors name ``teacher.<key>``)."""
        return from_dict(cls, values, "teacher.")

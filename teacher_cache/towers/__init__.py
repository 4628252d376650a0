"""Teacher towers: a protocol, three backends, and ``build_teacher(TeacherConfig)``."""
from __future__ import annotations

from .base import DeviceUnavailableError, ImageInput, MissingCheckpointError, Teacher, resolve_device
from .config import AUTO_PRECISION, TeacherConfig


def build_teacher(cfg: TeacherConfig) -> Teacher:
    """Load the configured towers (frozen, eval mode) on ``cfg.device``."""
    device = resolve_device(cfg.device)
    if cfg.backend == "composite":
        from .composite import build_composite

        return build_composite(cfg, device)
    precisions = {modality: cfg.precision_for(device.type, modality) for modality in ("text", "image")}
    if cfg.backend == "open_clip":
        from .open_clip_backend import OpenClipTeacher

        return OpenClipTeacher(cfg.clip_model, cfg.clip_pretrained, device, precisions, cfg.batch_size)
    from .hf_clip import HFClipTeacher

    return HFClipTeacher(cfg.clip_model, device, precisions, cfg.batch_size)


__all__ = [
    "AUTO_PRECISION",
    "ImageInput",
    "MissingCheckpointError",
    "DeviceUnavailableError",
    "Teacher",
    "TeacherConfig",
    "build_teacher",
    "resolve_device",
]

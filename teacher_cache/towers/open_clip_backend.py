"""open_clip teacher: any open_clip architecture with real weights (KDMCSE used ViT-L-14 / openai).

Weights come from exactly one of: a pretrained tag (downloaded from the hub, so it needs network or
a warm hub cache), a checkpoint file given as ``clip_pretrained``, or a ``local-dir:`` folder holding
``open_clip_config.json`` and the weights. A CLIP with random weights is never built: without
weights this raises :class:`MissingCheckpointError` saying what was looked for.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .base import (
    ImageInput,
    MissingCheckpointError,
    StagedEncoding,
    autocast_context,
    load_rgb,
    normalised_float,
    state_dict_sha256,
)

_HOW_TO_SUPPLY = (
    "Supply CLIP weights as one of: a pretrained tag with hub access (e.g. clip_model='ViT-L-14', "
    "clip_pretrained='openai', HF_HUB_OFFLINE unset); a local checkpoint file "
    "(clip_pretrained='/path/to/open_clip_pytorch_model.bin'); or clip_model='local-dir:/path/to/folder' "
    "with open_clip_config.json and the weights inside."
)


def _check_weights_source(model_name: str, pretrained: str | None) -> None:
    """Fail before building anything when the named weights cannot exist."""
    if model_name.startswith("local-dir:"):
        folder = Path(model_name[len("local-dir:") :])
        config = folder / "open_clip_config.json"
        weights = [p for pattern in ("*.safetensors", "*.bin", "*.pth", "*.pt") for p in folder.glob(pattern)]
        if not config.is_file() or not weights:
            raise MissingCheckpointError(
                f"open_clip folder {folder} needs open_clip_config.json and a weights file "
                f"(found config: {config.is_file()}, weights: {[p.name for p in weights]}). {_HOW_TO_SUPPLY}"
            )
        return
    if model_name.startswith("hf-hub:"):
        return  # resolved by open_clip; failures are wrapped below
    if not pretrained:
        raise MissingCheckpointError(
            f"open_clip model {model_name!r} was given no weights (clip_pretrained is empty), and a teacher "
            f"with random weights would be meaningless. {_HOW_TO_SUPPLY}"
        )
    looks_like_path = os.sep in pretrained or Path(pretrained).suffix in {".bin", ".pt", ".pth", ".safetensors"}
    if looks_like_path and not Path(pretrained).is_file():
        raise MissingCheckpointError(f"open_clip checkpoint file {pretrained} does not exist. {_HOW_TO_SUPPLY}")


class OpenClipTeacher(StagedEncoding):
    """CLIP text and image towers; both project into one space (``shared_space=True``)."""

    shared_space = True

    def __init__(self, model_name: str, pretrained: str | None, device: torch.device, precisions: dict[str, str], batch_size: int):
        import open_clip

        _check_weights_source(model_name, pretrained)
        schema_given = model_name.startswith(("local-dir:", "hf-hub:"))
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=None if schema_given else pretrained, device=device, require_pretrained=True
            )
        except (RuntimeError, OSError, ValueError) as err:
            raise MissingCheckpointError(
                f"could not load open_clip {model_name!r} with weights {pretrained!r}: {err}. {_HOW_TO_SUPPLY}"
            ) from err
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.device = device
        self.precisions = precisions
        self.batch_size = batch_size
        self.text_dim = self.image_dim = int(self._embed_dim())
        self.name = f"openclip-{model_name.split(':', 1)[-1].rstrip('/').rsplit('/', 1)[-1]}"
        self.identity = self._identity(model_name, pretrained)

    def _embed_dim(self) -> int:
        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(["a"]).to(self.device)).shape[-1]

    def _identity(self, model_name: str, pretrained: str | None) -> dict[str, Any]:
        tag = pretrained if pretrained and not Path(pretrained).is_file() else None
        return {
            "backend": "open_clip",
            "model": model_name,
            "pretrained_tag": tag,
            "weights_sha256": state_dict_sha256(self.model),
            "preprocessing": repr(self.preprocess),
            "tokenizer": f"{type(self.tokenizer).__name__}(context_length={self.tokenizer.context_length})",
            "precision": self.precisions,
        }

    def prepare_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def forward_text(self, tokens: torch.Tensor) -> torch.Tensor:
        # non_blocking: the cache writer hands over pinned batches on CUDA
        tokens = tokens.to(self.device, non_blocking=True)
        with torch.inference_mode(), autocast_context(self.device, self.precisions["text"]):
            return normalised_float(self.model.encode_text(tokens))

    def prepare_image(self, images: Sequence[ImageInput]) -> torch.Tensor:
        return torch.stack([self.preprocess(load_rgb(image)) for image in images])

    def forward_image(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, non_blocking=True)
        with torch.inference_mode(), autocast_context(self.device, self.precisions["image"]):
            return normalised_float(self.model.encode_image(pixels))

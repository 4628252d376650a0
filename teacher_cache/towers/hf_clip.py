"""transformers CLIPModel teacher, from a hub id (needs network or a warm hub cache) or a local folder.

Images go through the PIL CLIP image processor, not the torchvision "fast" one: the two resize
differently, and the PIL one is what the original OpenAI preprocessing matches.
"""
from __future__ import annotations

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
    "Supply either a hub id with hub access (e.g. openai/clip-vit-large-patch14, HF_HUB_OFFLINE unset) or a "
    "local folder written by save_pretrained: config.json, model.safetensors, the tokenizer files and "
    "preprocessor_config.json."
)


def _pil_image_processor(source: str):
    """transformers >= 5 names the PIL processor CLIPImageProcessorPil; before, CLIPImageProcessor was PIL."""
    try:
        from transformers import CLIPImageProcessorPil as ProcessorClass
    except ImportError:  # transformers 4.x
        from transformers import CLIPImageProcessor as ProcessorClass
    return ProcessorClass.from_pretrained(source)


def _features(output) -> torch.Tensor:
    """get_*_features returns a tensor in transformers 4 and a pooled output object in 5."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HFClipTeacher(StagedEncoding):
    """CLIP text and image towers from transformers; one shared space."""

    shared_space = True

    def __init__(self, source: str, device: torch.device, precisions: dict[str, str], batch_size: int):
        from transformers import AutoTokenizer, CLIPModel

        looks_local = source.startswith(("/", ".", "~")) or Path(source).exists()
        if looks_local and not Path(source).expanduser().is_dir():
            raise MissingCheckpointError(f"CLIP folder {source} does not exist. {_HOW_TO_SUPPLY}")
        try:
            self.model = CLIPModel.from_pretrained(source).eval().to(device)
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.image_processor = _pil_image_processor(source)
        except (OSError, ValueError) as err:
            kind = "local folder" if looks_local else "hub id"
            raise MissingCheckpointError(
                f"could not load a transformers CLIPModel from {source!r} (read as a {kind}): {err} {_HOW_TO_SUPPLY}"
            ) from err
        self.device = device
        self.precisions = precisions
        self.batch_size = batch_size
        self.text_dim = self.image_dim = int(self.model.config.projection_dim)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        self.name = f"hfclip-{source.rstrip('/').rsplit('/', 1)[-1]}"
        self.identity = self._identity(source)

    def _identity(self, source: str) -> dict[str, Any]:
        return {
            "backend": "hf_clip",
            "model": source,
            "weights_sha256": state_dict_sha256(self.model),
            "preprocessing": {"class": type(self.image_processor).__name__, **self.image_processor.to_dict()},
            "tokenizer": f"{type(self.tokenizer).__name__}(max_length={self.max_length})",
            "precision": self.precisions,
        }

    def prepare_text(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def forward_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        # non_blocking: the cache writer hands over pinned batches on CUDA
        tokens = {name: tensor.to(self.device, non_blocking=True) for name, tensor in tokens.items()}
        with torch.inference_mode(), autocast_context(self.device, self.precisions["text"]):
            return normalised_float(_features(self.model.get_text_features(**tokens)))

    def prepare_image(self, images: Sequence[ImageInput]) -> torch.Tensor:
        return self.image_processor(images=[load_rgb(image) for image in images], return_tensors="pt")["pixel_values"]

    def forward_image(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.to(self.device, non_blocking=True)
        with torch.inference_mode(), autocast_context(self.device, self.precisions["image"]):
            return normalised_float(_features(self.model.get_image_features(pixel_values=pixels)))

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
    autocast_context,
    encode_in_batches,
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


class HFClipTeacher:
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

    def _encode_text_batch(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode(), autocast_context(self.device, self.precisions["text"]):
            return normalised_float(_features(self.model.get_text_features(**tokens)))

    def _encode_image_batch(self, images: Sequence[ImageInput]) -> torch.Tensor:
        pixels = self.image_processor(images=[load_rgb(image) for image in images], return_tensors="pt")
        pixel_values = pixels["pixel_values"].to(self.device)
        with torch.inference_mode(), autocast_context(self.device, self.precisions["image"]):
            return normalised_float(_features(self.model.get_image_features(pixel_values=pixel_values)))

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return encode_in_batches(texts, self.batch_size, self.text_dim, self._encode_text_batch)

    def encode_image(self, images: Sequence[ImageInput]) -> torch.Tensor:
        return encode_in_batches(images, self.batch_size, self.image_dim, self._encode_image_batch)

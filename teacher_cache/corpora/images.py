"""Image files as the cache reads them: a content-named store for images that come as bytes, and the
check that an image decodes.

Images of a ``datasets`` column or a WebDataset tar have no file of their own, but the teacher cache
reads images from files: they are written once to ``<image store>/<sha256 of the bytes><suffix>``, so
the copy is idempotent, shared by every run, and the file's name is its hash (nobody hashes it again).
"""
from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

from PIL import Image

from kdmcse_base.files import atomic_write


def stored_image(data: bytes, suffix: str, image_store: Path) -> Path:
    """The store's file of these bytes, written (atomically) unless it is there already."""
    target = image_store / f"{hashlib.sha256(data).hexdigest()}{suffix.lower()}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data)
    return target


def image_problem(path: Path) -> str | None:
    """Why an image file cannot be encoded, or None."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return f"cannot read image file ({err.strerror or err})"
    return image_bytes_problem(data)


def image_bytes_problem(data: bytes) -> str | None:
    """Why these image bytes cannot be encoded, or None.

    ``Image.verify`` misses a truncated JPEG, so the image is decoded; ``draft`` lets the JPEG
    decoder work at 1/8 scale, which still reads every byte of the entropy-coded data.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        # PIL names the in-memory file by its address: dropped, so a rerun records the very same words
        return f"cannot decode image ({type(err).__name__}: {re.sub(r' object at 0x[0-9a-fA-F]+', ' object', str(err))})"
    return None

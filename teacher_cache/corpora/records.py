"""Plain typed records returned by every loader.

Every record carries a ``row_id`` that is stable across runs and machines: it is built from the
dataset name, the split and the position (or the dataset's own ids) in the source file, never from
a hash of Python objects. Teacher caches and training batches refer to rows by these ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kdmcse_base.data_files import DataFormatError, read_data_lines  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class TextRow:
    """One training sentence (Wiki1M line, or a caption). ``image_id``: the image a caption describes."""

    row_id: str
    text: str
    source: str
    image_id: str | None = None


@dataclass(frozen=True)
class CaptionRow:
    """One caption of one image. ``image_id`` groups the captions of the same image."""

    row_id: str
    image_id: str
    caption_index: int
    text: str
    source: str


@dataclass(frozen=True)
class ImageCheck:
    """What a loader already knows of an image file: its sha256 and whether it decodes (``problem``
    None), so the cache build neither hashes nor decodes it again (a WebDataset shard's index)."""

    sha256: str
    problem: str | None = None


@dataclass(frozen=True)
class ImageRow:
    """One image file on disk, identified by ``image_id`` (shared with its CaptionRows).

    ``check``: the file's hash and decode result when the loader has them (None: the build finds them).
    """

    image_id: str
    path: Path
    source: str
    check: ImageCheck | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be used as it is (empty caption, unreadable image, ...).

    Loaders that accept a ``problems`` list append these instead of raising at the first one, so a
    caller can report every offending row at once, or leave them out and record that it did.
    """

    row_id: str
    path: Path
    line: int | None
    problem: str

    def describe(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{self.row_id} ({where}): {self.problem}"

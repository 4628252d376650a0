"""Plain typed records returned by every loader.

Every record carries a ``row_id`` that is stable across runs and machines: it is built from the
dataset name, the split and the position (or the dataset's own ids) in the source file, never from
a hash of Python objects. Teacher caches and training batches refer to rows by these ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class DataFormatError(ValueError):
    """A data file is missing or malformed; the message names the file and the 1-based line."""

    def __init__(self, path: Path | str, line: int | None, problem: str):
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {problem}")


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
class ImageRow:
    """One image file on disk, identified by ``image_id`` (shared with its CaptionRows)."""

    image_id: str
    path: Path
    source: str


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


def read_data_lines(path: Path | str, encoding: str = "utf-8") -> list[str]:
    """Every line of a text data file, without its line ending (``\\n``, and a ``\\r`` before it).

    Splits on ``\\n`` only (not ``str.splitlines``, which also breaks on U+0085/U+2028 that can sit
    inside latin-1 or UTF-8 sentences), so line *i* of the result is line *i + 1* of the file.
    A missing file, or bytes the encoding cannot decode, raise ``DataFormatError`` naming the file
    (and the 1-based line of the bad bytes).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFormatError(path, line, f"cannot decode as {encoding}: {err.reason}") from err
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start a new one
    return [line[:-1] if line.endswith("\r") else line for line in lines]

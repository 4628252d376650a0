"""Data files as both the teacher cache and the evaluation read them: where the data directory is
(``resolve_data_dir``), a text file's lines exactly as written (``read_data_lines``), and the one-line
error naming a file and line (``DataFormatError``)."""
from __future__ import annotations

import os
from pathlib import Path


class DataFormatError(ValueError):
    """A data file is missing or malformed; the message names the file and the 1-based line."""

    def __init__(self, path: Path | str, line: int | None, problem: str):
        self.path = Path(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {problem}")


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


ENV_VAR = "DISTILL_DATA_DIR"
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve_data_dir(data_dir: str | Path | None = None, key: str = "--data-dir") -> Path:
    """``data_dir`` (from ``key``), else ``$DISTILL_DATA_DIR``, else ``../shared/data`` if it exists, else ``./data``.

    ``../shared/data`` is looked for beside the project checkout (CI clones the project next to
    ``shared/``) and beside the current directory.
    """
    if data_dir:
        return _must_exist(Path(data_dir), key)
    if os.environ.get(ENV_VAR):
        return _must_exist(Path(os.environ[ENV_VAR]), f"${ENV_VAR}")
    for candidate in (_PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate.resolve()
    return _must_exist(Path("data"), "default ./data")


def _must_exist(path: Path, origin: str) -> Path:
    if not path.is_dir():
        raise DataFormatError(
            path, None, f"data directory not found (from {origin}); pass --data-dir, set ${ENV_VAR}, "
            "or lay the data out as docs/data.md describes (own data needs no data directory)"
        )
    return path.resolve()

"""The one place that decides where the data directory is."""
from __future__ import annotations

import os
from pathlib import Path

from .records import DataFormatError

ENV_VAR = "DISTILL_DATA_DIR"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


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

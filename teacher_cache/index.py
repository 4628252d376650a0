"""Recognise a complete cache from the configs and the data, without loading the teacher.

A cache's name comes from its full fingerprint, which hashes the *loaded* teacher's weights: exact,
but it costs a model load and a hash of every parameter. Each finished build therefore also writes
``<cache root>/index/<key>.json``, where the key hashes what is known before loading anything:

- the teacher config (the device and ``num_workers`` left out, the precision resolved per modality as the teacher
  would resolve it on this machine's device type);
- the size and mtime of every local weight file or folder the config names (offline aliases
  resolved), so replacing weights under the same path misses the index;
- the library versions that turn weights into vectors (torch, transformers, timm, open_clip ...);
- the dataset fingerprint, the shard size and the cache format.

A hit names the cache folder; a miss (new machine, changed weights, a hub model updated upstream)
falls back to loading the teacher and computing the full fingerprint, which then records the key
again. A hub id is identified by its name only: after its weights change upstream, run
``scripts/cache_teacher.py`` once, which always fingerprints the loaded teacher.
"""
from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from kdmcse_base.files import atomic_write, json_bytes
from kdmcse_base.offline_models import EFFICIENTNET_ALIAS, efficientnet_lite0_weights, resolve_model_name
from .towers import TeacherConfig, resolve_device

INDEX_FOLDER = "index"
LIBRARIES = ("torch", "numpy", "transformers", "sentence-transformers", "open_clip_torch", "timm", "pillow")
_WEIGHT_FIELDS = ("text_model", "image_model", "image_weights", "clip_model", "clip_pretrained")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def teacher_config_identity(cfg: TeacherConfig) -> dict[str, Any]:
    """What decides the teacher's vectors, as far as it can be told without loading it."""
    device_type = resolve_device(cfg.device).type
    values = {name: value for name, value in cfg.recorded_dict().items() if name not in ("device", "precision")}
    return {
        "config": values,
        "precision": {modality: cfg.precision_for(device_type, modality) for modality in ("text", "image")},
        "weights": {name: _weights_identity(getattr(cfg, name)) for name in _WEIGHT_FIELDS},
        "libraries": library_versions(),
    }


def index_key(cfg: TeacherConfig, dataset_fingerprint: str, shard_rows: int, cache_format: str) -> str:
    key = {"format": cache_format, "teacher": teacher_config_identity(cfg), "dataset": dataset_fingerprint,
           "shard_rows": shard_rows}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def find_indexed(cache_root: Path, key: str) -> dict[str, Any] | None:
    """The index entry (``{"cache": folder name, "fingerprint": full fingerprint}``) or None."""
    entry_file = cache_root / INDEX_FOLDER / f"{key}.json"
    try:
        entry = json.loads(entry_file.read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and {"cache", "fingerprint"} <= set(entry) else None


def record_in_index(cache_root: Path, key: str, cache_name: str, fingerprint: str) -> None:
    folder = cache_root / INDEX_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / f"{key}.json", json_bytes({"cache": cache_name, "fingerprint": fingerprint}))


def _weights_identity(value: str | None) -> list | None:
    """[[relative path, size, mtime_ns], ...] of a local weight file or folder; None for hub ids and tags."""
    if value is None:
        return None
    if value == EFFICIENTNET_ALIAS:
        path = efficientnet_lite0_weights()
    else:
        path = Path(resolve_model_name(value).removeprefix("local-dir:"))
    if path.is_file():
        return [[path.name, path.stat().st_size, path.stat().st_mtime_ns]]
    if not path.is_dir():
        return None
    found = []
    for folder, _, names in sorted(os.walk(path)):
        for name in sorted(names):
            info = (Path(folder) / name).stat()
            found.append([str((Path(folder) / name).relative_to(path)), info.st_size, info.st_mtime_ns])
    return found

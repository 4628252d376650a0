"""WebDataset tar shards (img2dataset's layout), read one whole input shard at a time into a small index.

A tar is read once: its images are written to the image store (named by the sha256 of their bytes,
:mod:`.images`), each is checked to decode, and the shard's keys, image file names, captions and image
problems go to ``<image store>/.shards/<digest>.json``, written atomically once the whole tar is read.
Everything later (the cache build's rank 0, a rerun, another config over the same shards) reads that
index instead of the tar: no image is read, hashed or decoded twice. A build killed mid-tar leaves no
index for that tar, so a rerun reads it (and only it) again; its images already stored are rewritten
to the same names.

The digest names the shard's identity (its resolved path, byte size and mtime_ns; a URL as given) and
the fields read (image and caption keys), so an edited tar, or another caption key, gets a new index.

The tar is read with the standard library's streaming ``tarfile`` through ``fsspec`` (local paths and
any fsspec URL), grouping members by key as the ``webdataset`` library does (``<key>.<extension>``,
the key ending at the first dot of the file name). ``datasets``' WebDataset loader, used before,
infers one schema from the first 5 samples of the first tar and refuses a tar whose first samples
differ (one without a caption), which a single shard read on its own must survive.
"""
from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdmcse_base.files import atomic_write
from .images import image_bytes_problem, stored_image
from .records import DataFormatError, ImageCheck

INDEX_FORMAT = "teacher-cache-wds-index/1"
INDEX_FOLDER = ".shards"
_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # <key>.<extension>: webdataset's base_plus_ext
_JSON_EXTENSIONS = ("json", "jsn")


@dataclass(frozen=True)
class ShardFields:
    """What a source reads of each sample: the image's extension (None: captions only) and the
    caption's (``txt``, or ``json.caption`` for a field of the ``.json`` member)."""

    image_column: str | None
    caption_column: str

    def extensions(self) -> set[str]:
        wanted = {self.caption_column.split(".")[0]}
        return wanted | ({self.image_column.split(".")[0]} if self.image_column else set())


@dataclass(frozen=True)
class ShardSample:
    """One sample of an indexed shard. ``caption``: the caption field's value (None: absent);
    ``image``: its file's name in the image store, ``<sha256><suffix>`` (None: no image bytes);
    ``problem``: why the image does not decode (None: it does)."""

    key: str
    caption: Any = None
    image: str | None = None
    problem: str | None = None

    def image_check(self) -> ImageCheck | None:
        if self.image is None:
            return None
        return ImageCheck(sha256=self.image.split(".")[0], problem=self.problem)


def checked_shards(shards: list[str]) -> list[str]:
    """The shards, after checking every local one exists (one line naming the first missing)."""
    missing = [shard for shard in shards if "://" not in shard and not Path(shard).is_file()]
    if missing:
        raise DataFormatError(missing[0], None, f"WebDataset shard not found ({len(missing)} of {len(shards)} missing)")
    return shards


def shard_samples(shard: str, fields: ShardFields, image_store: Path | None) -> list[ShardSample]:
    """The samples of one shard, in tar order: from its index, else read from the tar (writing the index).
    Without an image store (captions only, read by a caller that keeps no index) the tar is just read."""
    if image_store is None:
        if fields.image_column is not None:
            raise ValueError("reading the images of a WebDataset shard needs an image store")
        return [_sample(shard, key, members, fields, None) for key, members in _tar_samples(shard, fields)]
    samples = _read_index(index_path(shard, fields, image_store), image_store)
    return samples if samples is not None else _index_shard(shard, fields, image_store)


def ensure_index(shard: str, fields: ShardFields, image_store: Path) -> bool:
    """Index the shard unless its index exists; whether the tar was read. (Only existence is checked
    here, so a pass over done shards is a stat each; the reader of the index checks the rest.)"""
    if index_path(shard, fields, image_store).is_file():
        return False
    _index_shard(shard, fields, image_store)
    return True


def index_path(shard: str, fields: ShardFields, image_store: Path) -> Path:
    """``<image store>/.shards/<sha256 of the shard's identity and the fields read>.json``."""
    key = {"format": INDEX_FORMAT, "shard": _identity(shard), "image": fields.image_column,
           "caption": fields.caption_column}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return image_store / INDEX_FOLDER / f"{digest}.json"


def _identity(shard: str) -> dict[str, Any]:
    """A local shard's resolved path, size and mtime_ns (an edited tar is another shard); a URL as given."""
    if "://" in shard:
        return {"url": shard}
    path = Path(shard).resolve()
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _index_shard(shard: str, fields: ShardFields, image_store: Path) -> list[ShardSample]:
    """Read the whole tar, store its images, then write its index in one atomic step."""
    samples = [_sample(shard, key, members, fields, image_store) for key, members in _tar_samples(shard, fields)]
    target = index_path(shard, fields, image_store)
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": INDEX_FORMAT, "shard": shard, "image_column": fields.image_column,
              "caption_column": fields.caption_column,
              "samples": [{name: value for name, value in vars(sample).items() if value is not None}
                          for sample in samples]}
    atomic_write(target, (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
    return samples


def _sample(shard: str, key: str, members: dict[str, bytes], fields: ShardFields,
            image_store: Path | None) -> ShardSample:
    key = f"{Path(shard).name}:{key}"
    caption = _caption(members, fields.caption_column)
    data = members.get(fields.image_column) if fields.image_column else None
    if not data or image_store is None:
        return ShardSample(key, caption)
    stored = stored_image(data, f".{fields.image_column.split('.')[0]}", image_store)
    return ShardSample(key, caption, stored.name, image_bytes_problem(data))


def _caption(members: dict[str, bytes], column: str) -> Any:
    """The caption field's value: a member's text, or a field of a JSON member; None when absent (a
    ``.json`` member that is not JSON has no fields: its caption is absent, a bad row, not a stop)."""
    extension, *path = column.split(".")
    raw = members.get(extension)
    if raw is None:
        return None
    if extension not in _JSON_EXTENSIONS:
        return raw.decode("utf-8", errors="replace") if not path else None
    try:
        value: Any = json.loads(raw)
    except ValueError:
        return None
    for part in path:
        if not isinstance(value, dict) or value.get(part) is None:
            return None
        value = value[part]
    return value


def _tar_samples(shard: str, fields: ShardFields) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of each sample, streaming the tar; only the members ``fields`` reads
    are kept. An unreadable tar is one line naming it."""
    import fsspec

    wanted = fields.extensions()
    key, members = None, {}
    try:
        with fsspec.open(shard, "rb") as handle, tarfile.open(fileobj=handle, mode="r|*") as tar:
            for member in tar:
                match = _MEMBER.match(member.name) if member.isfile() else None
                if match is None:
                    continue
                if match.group(1) != key:
                    if key is not None:
                        yield key, members
                    key, members = match.group(1), {}
                if match.group(2) in wanted:
                    members[match.group(2)] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as err:
        raise DataFormatError(shard, None, f"cannot read this WebDataset shard ({type(err).__name__}: {err})") from err
    if key is not None:
        yield key, members


def _read_index(path: Path, image_store: Path) -> list[ShardSample] | None:
    """The index's samples; None when it is missing, unreadable, of another format, or names an image
    file no longer in the store (then the tar is read again)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        samples = [ShardSample(**sample) for sample in record["samples"]] \
            if record.get("format") == INDEX_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if samples is None or any(s.image is not None and not (image_store / s.image).is_file() for s in samples):
        return None
    return samples

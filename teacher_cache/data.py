"""Which rows a cache holds (CacheDataConfig), how they are collected, checked and fingerprinted.

A source is a built-in corpus, named (``wiki1m``, ``coco2017_mini``, ...: files under the data
directory), or your own data, given as a mapping (:class:`TextSource`, :class:`ImageCaptionSource`,
see docs/data.md). Text rows are the sentences of the built-in text sources in the fixed order of
``TEXT_SOURCES``, then those of your own text sources sorted by name, then the captions of your
own image sources; image rows follow the same rule. Listing order therefore never creates a second
cache. Rows are identified by the loaders' stable ids; the dataset fingerprint hashes ids, texts
and image bytes, so editing one sentence, caption or image gives a new cache rather than a stale one.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .corpora import (
    BadRow,
    ImageRow,
    TextRow,
    load_coco2017_mini,
    load_coco_captions,
    load_coco_images,
    load_coco_val2017_captions,
    load_flickr30k_captions,
    load_flickr30k_images,
    load_wiki1m,
    resolve_data_dir,
)
from .corpora.images import image_problem
from .corpora.user import (
    ImageCaptionSource,
    TextSource,
    load_user_image_captions,
    load_user_texts,
    shard_fields,
    source_dict,
    source_from,
    source_shards,
)
from .corpora.webdataset import ensure_index
from kdmcse_base.files import file_sha256
from kdmcse_base.typed_config import from_dict

TEXT_SOURCES: tuple[str, ...] = ("wiki1m", "flickr30k_train", "coco_val2017", "coco_train2014", "coco2017_mini")
OFFLINE_TEXT_SOURCES: tuple[str, ...] = ("wiki1m", "flickr30k_train", "coco_val2017", "coco2017_mini")
OFFLINE_IMAGE_SOURCES: tuple[str, ...] = ("coco2017_mini",)
# flickr30k_train and coco_train2014 images are not shipped: they are for users who have them (README).
IMAGE_SOURCES: tuple[str, ...] = ("flickr30k_train", "coco_train2014", "coco2017_mini")
DEFAULT_IMAGE_STORE = "cache/images"

DEFAULT_CACHE_ROOT = Path("cache/teacher")
DEFAULT_SHARD_ROWS = 4096  # rows per shard file; part of a cache's identity (train.cache_shard_rows)


@dataclass(frozen=True)
class CacheDataConfig:
    """The rows to encode.

    ``text_sources`` / ``image_sources`` list built-in names and your own sources (mappings, see
    :class:`TextSource` and :class:`ImageCaptionSource`). An own image source brings its captions
    too, paired with their images; a built-in caption set pairs when named in both lists.
    ``limits`` maps a source name to how many of its first items to keep: sentences for text
    sources, images (with all their captions) for the caption sets. One limit applies to a source's
    text and image rows alike, so ``{"coco2017_mini": 8}`` keeps 8 photos and exactly their 40
    captions. ``image_store`` is where images of a ``datasets`` column without files are written.
    ``skip_bad`` leaves unusable rows (empty captions, broken images) out instead of stopping; the
    cache records them and the run's summary lists them.
    ``reuse_rows`` lets a new cache copy the stored vectors of rows whose content it already holds
    (same text, same image file bytes, whatever their ids) from a finished cache of the same teacher;
    false encodes every row.
    """

    text_sources: tuple[TextSource | str, ...] = OFFLINE_TEXT_SOURCES
    image_sources: tuple[ImageCaptionSource | str, ...] = OFFLINE_IMAGE_SOURCES
    limits: dict[str, int] = field(default_factory=dict)
    image_store: str = DEFAULT_IMAGE_STORE
    skip_bad: bool = False
    reuse_rows: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_sources", _canonical(self.text_sources, TEXT_SOURCES, TextSource, "text"))
        object.__setattr__(self, "image_sources",
                           _canonical(self.image_sources, IMAGE_SOURCES, ImageCaptionSource, "image"))
        names = [source.name for source in self.own_sources]
        clashes = sorted({n for n, count in Counter(names).items() if count > 1} | (set(names) & set(TEXT_SOURCES)))
        if clashes:
            raise ValueError(f"source name(s) {clashes} used twice (or a built-in name); give each own source "
                             "its own 'name'")
        unknown = set(self.limits) - set(TEXT_SOURCES) - set(IMAGE_SOURCES) - set(names)
        if unknown:
            raise ValueError(f"limits name unknown sources {sorted(unknown)}; known: "
                             f"{sorted({*self.text_source_names, *self.image_source_names})}")
        object.__setattr__(self, "limits", {name: int(self.limits[name]) for name in sorted(self.limits)})
        below_one = {name: n for name, n in self.limits.items() if n < 1}
        if below_one:
            raise ValueError(f"limits must keep at least 1 item per source, got {below_one}; "
                             "remove a source from the lists instead of limiting it to nothing")
        if not self.text_sources and not self.image_sources:
            raise ValueError("no sources: name at least one in text_sources or image_sources")

    @property
    def own_sources(self) -> list[TextSource | ImageCaptionSource]:
        return [s for s in (*self.text_sources, *self.image_sources) if not isinstance(s, str)]

    @property
    def text_source_names(self) -> list[str]:
        return [s if isinstance(s, str) else s.name for s in self.text_sources]

    @property
    def image_source_names(self) -> list[str]:
        return [s if isinstance(s, str) else s.name for s in self.image_sources]

    @property
    def uses_data_dir(self) -> bool:
        """Whether a built-in corpus is chosen (only those are read from the data directory)."""
        return any(isinstance(s, str) for s in (*self.text_sources, *self.image_sources))

    def to_dict(self) -> dict[str, Any]:
        return {
            "text_sources": [_source_value(s) for s in self.text_sources],
            "image_sources": [_source_value(s) for s in self.image_sources],
            "limits": dict(self.limits),
            "image_store": self.image_store,
            "skip_bad": self.skip_bad,
            "reuse_rows": self.reuse_rows,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CacheDataConfig:
        """From a ``data:`` section, checked as a training config's is (errors name ``data.<key>``)."""
        return from_dict(cls, values, "data.")


def data_dir_for(cfg: CacheDataConfig, data_dir: str | Path | None) -> Path | None:
    """The resolved data directory when a built-in corpus needs it; own data alone needs none."""
    if cfg.uses_data_dir:
        return resolve_data_dir(data_dir)
    return Path(data_dir).resolve() if data_dir else None


def _source_value(source: str | TextSource | ImageCaptionSource) -> str | dict[str, Any]:
    return source if isinstance(source, str) else source_dict(source)


def _canonical(chosen: Iterable, known: tuple[str, ...], kind: type, label: str) -> tuple:
    """Built-in names in ``known`` order, then own sources by name."""
    chosen = tuple(chosen)
    names = [item for item in chosen if isinstance(item, str)]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown {label} source {unknown[0]!r}; built-in names: {list(known)}; for your own "
                         f"data write a mapping, e.g. " + ("{path: my.txt}" if label == "text" else
                                                          "{images: photos/, captions: captions.jsonl}"))
    own = sorted((source_from(item, kind) for item in chosen if not isinstance(item, str)), key=lambda s: s.name)
    return (*(name for name in known if name in names), *own)


@dataclass
class CacheRows:
    """Rows in cache order, plus every row the loaders or checks found unusable."""

    texts: list[TextRow]
    images: list[ImageRow]
    problems: list[BadRow]


def collect_rows(cfg: CacheDataConfig, data_dir: Path | None) -> CacheRows:
    """Load every configured source, collecting bad rows instead of stopping at the first.

    ``data_dir`` is read by the built-in corpora only (None is fine when there are none).
    """
    problems: list[BadRow] = []
    texts: list[TextRow] = []
    images: list[ImageRow] = []
    for source in cfg.text_sources:
        if isinstance(source, str):
            rows = _TEXT_LOADERS[source](_needed(data_dir), cfg.limits.get(source), problems)
            # A caption is paired with its image only when its source's images are encoded as well.
            texts.extend(rows if source in cfg.image_sources else [replace(row, image_id=None) for row in rows])
        else:
            texts.extend(load_user_texts(source, cfg.limits.get(source.name), problems, Path(cfg.image_store)))
    own_captions: list[TextRow] = []
    for source in cfg.image_sources:
        if isinstance(source, str):
            images.extend(_IMAGE_LOADERS[source](_needed(data_dir), cfg.limits.get(source), problems))
        else:
            source_images, captions = load_user_image_captions(source, cfg.limits.get(source.name), problems,
                                                               Path(cfg.image_store))
            images.extend(source_images)
            own_captions.extend(captions)
    texts.extend(own_captions)
    _require_unique([row.row_id for row in texts], "text row")
    _require_unique([row.image_id for row in images], "image")
    return CacheRows(texts=texts, images=images, problems=_unique_problems(problems))


@dataclass(frozen=True)
class IndexedShards:
    """What :func:`index_input_shards` did: the input shards of its part, how many of them it read
    (the others had an index already), and how long it took."""

    part: int
    parts: int
    shards: int
    read: int
    seconds: float

    def summary(self) -> str:
        return (f"part {self.part}/{self.parts}: {self.shards} input shard(s), {self.read} read into an index, "
                f"{self.shards - self.read} indexed already ({self.seconds:.1f} s)")


def index_input_shards(cfg: CacheDataConfig, part: int = 0, parts: int = 1) -> IndexedShards:
    """Read this part's share of the WebDataset input shards, ``shards[part::parts]`` of every source,
    into their indexes (:mod:`teacher_cache.corpora.webdataset`): images stored and checked, sha256s
    known. Each torchrun rank (or Slurm array task) runs one part, so the tars are read in parallel
    and collecting the rows afterwards reads only the small indexes. A shard with an index is skipped,
    so a rerun after a kill reads only the shards it had not finished. A source with a ``limits``
    entry is left to the collection, which reads only the shards its first rows need."""
    if not 0 <= part < parts:
        raise ValueError(f"index part {part}/{parts}: the part must be 0 to {parts - 1}")
    started, count, read = time.perf_counter(), 0, 0
    for source in cfg.own_sources:
        if source.shards is None or source.name in cfg.limits:
            continue
        mine = source_shards(source)[part::parts]
        count += len(mine)
        read += sum(ensure_index(shard, shard_fields(source), Path(cfg.image_store)) for shard in mine)
    return IndexedShards(part, parts, count, read, time.perf_counter() - started)


def _needed(data_dir: Path | None) -> Path:
    if data_dir is None:
        raise ValueError("a built-in corpus needs the data directory; pass --data-dir (see docs/data.md)")
    return data_dir


def _as_text_rows(rows: Sequence) -> list[TextRow]:
    return [TextRow(row_id=row.row_id, text=row.text, source=row.source, image_id=row.image_id) for row in rows]


_TEXT_LOADERS: dict[str, Callable[[Path, int | None, list[BadRow]], list[TextRow]]] = {
    "wiki1m": lambda d, n, p: load_wiki1m(d, limit=n, problems=p),
    "flickr30k_train": lambda d, n, p: _as_text_rows(load_flickr30k_captions(d, "train", limit=n, problems=p)),
    "coco_val2017": lambda d, n, p: _as_text_rows(load_coco_val2017_captions(d, limit=n, problems=p)),
    "coco_train2014": lambda d, n, p: _as_text_rows(load_coco_captions(d, "train2014", limit=n, problems=p)),
    "coco2017_mini": lambda d, n, p: _as_text_rows(load_coco2017_mini(d, limit=n, problems=p)[1]),
}
_IMAGE_LOADERS: dict[str, Callable[[Path, int | None, list[BadRow]], list[ImageRow]]] = {
    # Caption problems are reported by the text source; the image loader only contributes images.
    "coco2017_mini": lambda d, n, p: load_coco2017_mini(d, limit=n, problems=[])[0],
    "flickr30k_train": lambda d, n, p: load_flickr30k_images(d, "train", limit=n),
    "coco_train2014": lambda d, n, p: load_coco_images(d, "train2014", limit=n),
}


def _require_unique(ids: list[str], kind: str) -> None:
    """Rows are addressed by id alone, so two rows with one id would silently share a vector."""
    duplicates = sorted(row_id for row_id, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise ValueError(f"duplicate {kind} ids across sources: {duplicates[:10]}")


def _unique_problems(problems: list[BadRow]) -> list[BadRow]:
    return list(dict.fromkeys(problems))


# --- images --------------------------------------------------------------------------------------


def find_bad_images(images: Sequence[ImageRow]) -> list[BadRow]:
    """Every image that cannot be encoded, in row order. An image a loader checked already (a WebDataset
    shard's index) is not decoded again; the others are, in threads (PIL releases the GIL)."""
    problems = _known_or_in_threads(lambda image: image_problem(image.path),
                                    lambda check: check.problem, images)
    return [
        BadRow(row_id=image.image_id, path=image.path, line=None, problem=problem)
        for image, problem in zip(images, problems)
        if problem is not None
    ]


def _known_or_in_threads(compute: Callable, known: Callable, images: Sequence[ImageRow]) -> list:
    """Per image, ``known(image.check)`` where the loader checked it, else ``compute(image)`` (in threads)."""
    unknown = [i for i, image in enumerate(images) if image.check is None]
    results = [None if image.check is None else known(image.check) for image in images]
    for i, result in zip(unknown, _in_threads(compute, [images[i] for i in unknown])):
        results[i] = result
    return results


def _in_threads(function: Callable, items: Sequence) -> list:
    """``map`` over I/O- and codec-bound work, in order, on as many threads as there are cores."""
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        return list(pool.map(function, items))


# --- fingerprint ---------------------------------------------------------------------------------


def image_sha256s(images: Sequence[ImageRow]) -> list[str | None]:
    """The sha256 of every image file, in row order (None: unreadable); one a loader knows (a WebDataset
    image, whose store file is named by it) is not hashed again."""
    return _known_or_in_threads(lambda image: file_sha256(image.path), lambda check: check.sha256, images)


def dataset_fingerprint(rows: CacheRows, image_sha256: Sequence[str | None] | None = None) -> str:
    """sha256 over (id, text) of every text row, (id, file sha256) of every image and the bad rows.

    ``image_sha256``: the images' hashes when the caller has them already (:func:`image_sha256s`).
    """
    digest = hashlib.sha256(b"teacher-cache-dataset/1\n")
    for row in rows.texts:
        digest.update(f"T\t{row.row_id}\t{row.text}\n".encode())
    hashes = image_sha256s(rows.images) if image_sha256 is None else image_sha256
    for image, sha256 in zip(rows.images, hashes, strict=True):
        digest.update(f"I\t{image.image_id}\t{sha256}\n".encode())
    for problem in rows.problems:
        digest.update(f"B\t{problem.row_id}\t{problem.problem}\n".encode())
    return digest.hexdigest()

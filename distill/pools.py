"""Training pools: which cached rows form text-only batches and which form image-caption batches.

Captions of the image sources (coco2017_mini; Flickr30k or COCO train2014 for users with those images)
are the paired pool; every other cached sentence (Wiki1M, Flickr30k and COCO captions used as plain
text) is the text pool. The cache records each caption's image, so the pools come from the cache alone.
Images held out for retrieval evaluation are removed from both pools, with all their captions, so
evaluation images are never trained on.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distill.config import ConfigError, RunConfig
from teacher_cache import open_cache
from teacher_cache.reader import TeacherCache
from teacher_cache.rows import StringColumn

def open_run_cache(cfg: RunConfig, data_dir: Path | str | None = None, progress: bool = True) -> TeacherCache:
    """The teacher cache a run config trains on, the one place every script and benchmark opens it:
    ``train.teacher_cache`` (checked against the config, the corpora unread), else the cache of the
    config's teacher, data and ``train.cache_shard_rows`` under ``train.cache_root``, built if missing (a
    collective: ranks share the shards); opened read-only and checked (sizes; checksums once per build or
    copy). A complete cache opens without the teacher."""
    return open_cache(cfg.teacher, cfg.data, cfg.train.cache_root, data_dir, named=cfg.train.teacher_cache,
                      progress=progress, shard_rows=cfg.train.cache_shard_rows)


HOLDOUT_SEED = 20240317  # fixed, not the run seed: every run and every method share one split


@dataclass
class TrainingPools:
    """Index arrays into the cache. ``sentences[i]`` is the text of cache text row i (the cache's
    memory-mapped column: a pool holds no Python object per row)."""

    sentences: Sequence[str]
    text_rows: np.ndarray  # cache text indices of the text pool
    paired_text_rows: np.ndarray  # cache text indices of the paired captions
    paired_image_rows: np.ndarray  # cache image index of each paired caption's image
    heldout_image_ids: list[str]

    @property
    def n_text(self) -> int:
        return len(self.text_rows)

    @property
    def n_paired(self) -> int:
        return len(self.paired_text_rows)


def build_pools(cache: TeacherCache, heldout_images: int | str = 0) -> TrainingPools:
    """Split the cache's rows into the two pools, keeping ``heldout_images`` images out of training
    (``train.retrieval_holdout_images``: a number, or ``auto``). Array work only: no per-row Python."""
    image_of_caption = cache.caption_image_rows
    is_caption = image_of_caption >= 0
    heldout_rows = choose_heldout_images(cache.image_ids, np.unique(image_of_caption[is_caption]), heldout_images)
    paired = np.flatnonzero(is_caption & ~np.isin(image_of_caption, heldout_rows) if len(heldout_rows) else is_caption)
    return TrainingPools(  # flatnonzero gives int64 rows: no copies (a 10M-row pool is 80 MB a copy)
        sentences=cache.texts,
        text_rows=np.flatnonzero(~is_caption),  # paired and held-out captions alike are out
        paired_text_rows=paired,
        paired_image_rows=np.asarray(image_of_caption[paired], dtype=np.int64),
        heldout_image_ids=sorted(cache.image_ids.take(heldout_rows)),
    )


AUTO_HOLDOUT_SHARE, AUTO_HOLDOUT_MAX = 4, 1000  # auto: a quarter of the images, at most 1000 (a test split's size)


def holdout_size(setting: int | str, n_images: int) -> int:
    """How many images ``train.retrieval_holdout_images`` keeps out of ``n_images``: the number, or for
    ``auto`` a quarter of them, at most 1000 (none when only one image would be trained on)."""
    if setting != "auto":
        return setting
    return min(AUTO_HOLDOUT_MAX, n_images // AUTO_HOLDOUT_SHARE)


def choose_heldout_images(image_ids: StringColumn, captioned: np.ndarray, setting: int | str) -> np.ndarray:
    """Image rows to hold out: a fixed random subset (``holdout_size`` of them) of the ``captioned`` image
    rows taken in the order of their ids, independent of the run's seed."""
    n = holdout_size(setting, len(captioned))
    if n < 0 or (n > 0 and n >= len(captioned)):  # at least one image must stay for training
        raise ConfigError(f"train.retrieval_holdout_images={n}: cannot hold out {n} of {len(captioned)} images "
                          f"(at least one must stay for training); choose 0 to {max(len(captioned) - 1, 0)}")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    by_id = captioned[image_ids.argsort(captioned)]
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(captioned))
    return np.sort(by_id[order[:n]])

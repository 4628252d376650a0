"""Training pools: which cached rows form text-only batches and which form image-caption batches.

Captions of the image sources (coco2017_mini; Flickr30k or COCO train2014 for users with those images)
are the paired pool; every other cached sentence (Wiki1M, Flickr30k and COCO captions used as plain
text) is the text pool. The cache records each caption's image, so the pools come from the cache alone.
Images held out for retrieval evaluation are removed from both pools, with all their captions, so
evaluation images are never trained on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distill.config import ConfigError
from teacher_cache.reader import TeacherCache

HOLDOUT_SEED = 20240317  # fixed, not the run seed: every run and every method share one split


@dataclass
class TrainingPools:
    """Index arrays into the cache. ``sentences[i]`` is the text of cache text row i."""

    sentences: list[str]
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
    (``train.retrieval_holdout_images``: a number, or ``auto``)."""
    captions = [(row, image_id) for row, image_id in enumerate(cache.caption_image_ids) if image_id is not None]
    heldout = choose_heldout_images(sorted({image_id for _, image_id in captions}), heldout_images)
    heldout_set = set(heldout)
    paired = [(row, image_id) for row, image_id in captions if image_id not in heldout_set]
    in_text_pool = np.ones(len(cache.text_ids), dtype=bool)
    in_text_pool[[row for row, _ in captions]] = False  # paired and held-out captions alike
    return TrainingPools(
        sentences=cache.texts,
        text_rows=np.flatnonzero(in_text_pool).astype(np.int64),
        paired_text_rows=np.array([row for row, _ in paired], dtype=np.int64),
        paired_image_rows=np.asarray(cache.image_index([image_id for _, image_id in paired]), dtype=np.int64),
        heldout_image_ids=heldout,
    )


AUTO_HOLDOUT_SHARE, AUTO_HOLDOUT_MAX = 4, 1000  # auto: a quarter of the images, at most 1000 (a test split's size)


def holdout_size(setting: int | str, n_images: int) -> int:
    """How many images ``train.retrieval_holdout_images`` keeps out of ``n_images``: the number, or for
    ``auto`` a quarter of them, at most 1000 (none when only one image would be trained on)."""
    if setting != "auto":
        return setting
    return min(AUTO_HOLDOUT_MAX, n_images // AUTO_HOLDOUT_SHARE)


def choose_heldout_images(image_ids: list[str], setting: int | str) -> list[str]:
    """A fixed random subset of image ids (sorted, ``holdout_size`` of them), independent of the run's seed."""
    n = holdout_size(setting, len(image_ids))
    if n < 0 or (n > 0 and n >= len(image_ids)):  # at least one image must stay for training
        raise ConfigError(f"train.retrieval_holdout_images={n}: cannot hold out {n} of {len(image_ids)} images "
                          f"(at least one must stay for training); choose 0 to {max(len(image_ids) - 1, 0)}")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(image_ids))
    return sorted(image_ids[i] for i in order[:n])

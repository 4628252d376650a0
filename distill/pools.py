"""Training pools: which cached rows form text-only batches and which form image-caption batches.

Captions of the image sources (coco2017_mini; Flickr30k or COCO train2014 for users with those images)
are the paired pool; every other cached sentence
(Wiki1M, Flickr30k and COCO captions used as plain text) is the text pool. Images held out for
retrieval evaluation are removed from both pools, with all their captions, so evaluation images are
never trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from teacher_cache.corpora import TextRow, load_coco2017_mini, load_coco_captions, load_flickr30k_captions
from teacher_cache.data import CacheDataConfig, collect_rows
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


def build_pools(cache: TeacherCache, data_cfg: CacheDataConfig, data_dir: Path | None,
                heldout_images: int = 0) -> TrainingPools:
    """Split the cache's rows into the two pools, keeping ``heldout_images`` images out of training."""
    texts = collect_rows(data_cfg, data_dir).texts
    text_by_id = {row.row_id: row.text for row in texts}
    missing = [row_id for row_id in cache.text_ids if row_id not in text_by_id]
    if missing:
        raise ValueError(f"cache {cache.path} holds rows the data no longer has, e.g. {missing[:3]}; "
                         "rebuild it with scripts/cache_teacher.py")
    sentences = [text_by_id[row_id] for row_id in cache.text_ids]
    captions = _paired_captions(cache, data_cfg, data_dir, texts)
    heldout = choose_heldout_images(sorted({image_id for _, image_id in captions}), heldout_images)
    heldout_set = set(heldout)
    paired = [(row_id, image_id) for row_id, image_id in captions if image_id not in heldout_set]
    heldout_rows = {row_id for row_id, image_id in captions if image_id in heldout_set}
    paired_ids = {row_id for row_id, _ in paired}
    text_pool = [row_id for row_id in cache.text_ids if row_id not in paired_ids and row_id not in heldout_rows]
    return TrainingPools(
        sentences=sentences,
        text_rows=np.asarray(cache.text_index(text_pool), dtype=np.int64),
        paired_text_rows=np.asarray(cache.text_index([r for r, _ in paired]), dtype=np.int64),
        paired_image_rows=np.asarray(cache.image_index([i for _, i in paired]), dtype=np.int64),
        heldout_image_ids=heldout,
    )


def choose_heldout_images(image_ids: list[str], n: int) -> list[str]:
    """A fixed random subset of ``n`` image ids (sorted), independent of the run's seed."""
    if n < 0 or (n > 0 and n >= len(image_ids)):  # at least one image must stay for training
        raise ValueError(f"cannot hold out {n} of {len(image_ids)} images")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(image_ids))
    return sorted(image_ids[i] for i in order[:n])


def _paired_captions(cache: TeacherCache, data_cfg: CacheDataConfig, data_dir: Path | None,
                     texts: list[TextRow]) -> list[tuple[str, str]]:
    """(caption row id, image id) for every cached caption whose image is cached too."""
    text_ids, image_ids = set(cache.text_ids), set(cache.image_ids)
    pairs = []
    for source in data_cfg.image_sources:
        if isinstance(source, str) and source in data_cfg.text_sources:
            captions = _CAPTION_LOADERS[source](data_dir, data_cfg.limits.get(source))
            pairs += [(c.row_id, c.image_id) for c in captions if c.row_id in text_ids and c.image_id in image_ids]
    own = {source.name for source in data_cfg.image_sources if not isinstance(source, str)}
    pairs += [(row.row_id, row.image_id) for row in texts
              if row.source in own and row.row_id in text_ids and row.image_id in image_ids]
    return pairs


_CAPTION_LOADERS = {
    "coco2017_mini": lambda d, n: load_coco2017_mini(d, limit=n, problems=[])[1],
    "flickr30k_train": lambda d, n: load_flickr30k_captions(d, "train", limit=n, problems=[]),
    "coco_train2014": lambda d, n: load_coco_captions(d, "train2014", limit=n, problems=[]),
}

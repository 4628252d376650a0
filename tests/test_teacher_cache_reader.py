"""Cache reader: ids, rows, similarity targets against a hand-computed cosine, neighbours."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from teacher_cache import (
    CacheFormatError,
    CrossModalUnavailableError,
    SoftTargets,
    TeacherCache,
    TeacherConfig,
    ensure_cache,
)
from teacher_testkit import make_tiny_open_clip, small_data_config

DATA_CFG = small_data_config(images=3, sentences=10)  # 10 + 15 text rows, 3 images


@pytest.fixture(scope="module")
def composite_cache(tmp_path_factory) -> TeacherCache:
    root = tmp_path_factory.mktemp("composite")
    return TeacherCache.open(ensure_cache(TeacherConfig(device="cpu", batch_size=8), DATA_CFG, root, shard_rows=8, progress=False))


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory) -> TeacherCache:
    """A shared-space cache from a tiny random open_clip (code path only; not a real teacher)."""
    folder = make_tiny_open_clip(tmp_path_factory.mktemp("tiny_clip"))
    cfg = TeacherConfig(backend="open_clip", clip_model=f"local-dir:{folder}", device="cpu", batch_size=8)
    return TeacherCache.open(ensure_cache(cfg, DATA_CFG, tmp_path_factory.mktemp("clip"), shard_rows=8, progress=False))


def _stored(cache: TeacherCache, modality: str) -> np.ndarray:
    """Every stored row, read straight from the .npy shards (independently of the reader)."""
    shards = cache.manifest["modalities"][modality]["shards"]
    return np.concatenate([np.load(cache.path / shard["file"]) for shard in shards]).astype(np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def test_ids_and_index(composite_cache):
    cache = composite_cache
    assert len(cache.text_ids) == 25 and len(cache.image_ids) == 3
    assert (cache.text_dim, cache.image_dim) == (384, 1280) and not cache.shared_space
    wanted = [cache.text_ids[17], cache.text_ids[3], cache.text_ids[17]]
    assert cache.text_index(wanted).tolist() == [17, 3, 17]
    with pytest.raises(KeyError, match="not in cache"):
        cache.text_index(["wiki1m:999999"])


def test_rows_across_shards_in_requested_order(composite_cache):
    idx = np.array([24, 0, 9, 8, 9])  # shards of 8 rows: crosses shards 0, 1 and 3, repeats a row
    rows = composite_cache.text(idx)
    assert rows.dtype == torch.float32 and rows.shape == (5, 384)
    np.testing.assert_array_equal(rows.numpy(), _stored(composite_cache, "text")[idx].astype(np.float32))


def test_targets_equal_a_manual_cosine(composite_cache):
    cache = composite_cache
    captions = [row_id for row_id in cache.text_ids if row_id.startswith("coco2017_mini:")][:6]
    images = [f"coco:{row_id.split(':')[1]}" for row_id in captions]
    text_idx, image_idx = cache.text_index(captions), cache.image_index(images)
    targets = cache.targets(text_idx, image_idx, device="cpu")
    assert isinstance(targets, SoftTargets) and targets.s_cv is None
    text, image = _stored(cache, "text")[text_idx], _stored(cache, "image")[image_idx]
    np.testing.assert_allclose(targets.s_cc.numpy(), _cosine(text, text), atol=1e-6)
    np.testing.assert_allclose(targets.s_vv.numpy(), _cosine(image, image), atol=1e-6)
    assert torch.allclose(targets.s_vv[0, 1], torch.tensor(1.0))  # two captions of one photo -> same image
    assert cache.targets(text_idx).s_vv is None
    with pytest.raises(CrossModalUnavailableError, match="unrelated spaces"):
        cache.cross_modal(text_idx, image_idx)


def test_shared_space_targets_include_cross_modal(clip_cache):
    cache = clip_cache
    text_idx, image_idx = np.array([0, 12, 20]), np.array([2, 0])
    targets = cache.targets(text_idx, image_idx)
    expected = _cosine(_stored(cache, "text")[text_idx], _stored(cache, "image")[image_idx])
    assert cache.shared_space and targets.s_cv.shape == (3, 2)
    np.testing.assert_allclose(targets.s_cv.numpy(), expected, atol=1e-6)
    torch.testing.assert_close(cache.cross_modal(text_idx, image_idx), targets.s_cv)


def test_top_k_neighbours_match_brute_force_and_are_stored(composite_cache):
    indices, scores = composite_cache.top_k_neighbours("text", k=3, block_rows=7)
    similarity = _cosine(_stored(composite_cache, "text"), _stored(composite_cache, "text"))
    np.fill_diagonal(similarity, -np.inf)
    np.testing.assert_allclose(scores, -np.sort(-similarity, axis=1)[:, :3], atol=1e-5)
    assert (indices != np.arange(len(indices))[:, None]).all()
    assert (composite_cache.path / "neighbours" / "text-top3.npz").is_file()
    again_indices, _ = composite_cache.top_k_neighbours("text", k=3)
    np.testing.assert_array_equal(again_indices, indices)


def test_open_refuses_an_unfinished_or_inconsistent_cache(composite_cache, tmp_path):
    with pytest.raises(CacheFormatError, match="no manifest.json"):
        TeacherCache.open(tmp_path)
    manifest = json.loads((composite_cache.path / "manifest.json").read_text())
    manifest["modalities"]["text"]["count"] = 26
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("text_ids.txt", "image_ids.txt"):
        (broken / name).write_bytes((composite_cache.path / name).read_bytes())
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheFormatError, match="has 25 ids, manifest says 26"):
        TeacherCache.open(broken)

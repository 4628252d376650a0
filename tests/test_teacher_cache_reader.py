"""Cache reader: ids, texts and caption pairing, rows against the stored shards, refused caches."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from teacher_cache import CacheFormatError, TeacherCache, TeacherConfig, ensure_cache
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


def test_texts_and_caption_images(composite_cache):
    cache = composite_cache
    assert cache.texts[0] == "YMCA in South Australia"
    assert cache.texts.take([3, 0]) == [cache.texts[3], "YMCA in South Australia"]
    assert cache.caption_image_rows[:10].tolist() == [-1] * 10  # wiki1m sentences describe no image
    captions = [(row_id, cache.image_ids[image]) for row_id, image in zip(cache.text_ids, cache.caption_image_rows)
                if image >= 0]
    assert len(captions) == 15 and all(image_id == f"coco:{row_id.split(':')[1]}" for row_id, image_id in captions)


def test_rows_are_memory_maps_not_python_lists(composite_cache):
    """Opening a cache parses no row: ids and texts stay Arrow columns over a map, the pairing a numpy view."""
    cache = composite_cache
    assert not cache.caption_image_rows.flags.owndata and not cache.caption_image_rows.flags.writeable
    assert list(cache.texts) == [cache.texts[row] for row in range(len(cache.texts))]  # chunked walk = row reads
    assert cache.texts[-2:] == [cache.texts[23], cache.texts[24]]


def test_clip_cache_rows_equal_the_stored_shards(clip_cache):
    idx = np.array([0, 12, 20])
    assert clip_cache.shared_space and clip_cache.text_dim == 16
    np.testing.assert_array_equal(clip_cache.text(idx).numpy(), _stored(clip_cache, "text")[idx].astype(np.float32))


def test_open_refuses_an_unfinished_or_inconsistent_cache(composite_cache, tmp_path):
    with pytest.raises(CacheFormatError, match="no manifest.json"):
        TeacherCache.open(tmp_path)
    broken = Path(shutil.copytree(composite_cache.path, tmp_path / "broken"))
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["modalities"]["text"]["count"] = 26
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheFormatError, match="has 25 rows, manifest says 26"):
        TeacherCache.open(broken)
    manifest["format"] = "teacher-cache/1"
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheFormatError, match="format 'teacher-cache/1', this reader knows 'teacher-cache/3'; rebuild"):
        TeacherCache.open(broken)


@pytest.mark.parametrize("damage, where", [
    (lambda m: [], "the top level is missing or not a dict"),
    (lambda m: {**m, "modalities": {"text": m["modalities"]["text"]}}, "'modalities.image' is missing or not a dict"),
    (lambda m: {**m, "teacher": None}, "'teacher' is missing or not a dict"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line(composite_cache, tmp_path, damage, where):
    broken = Path(shutil.copytree(composite_cache.path, tmp_path / "broken"))
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(damage(manifest)))
    with pytest.raises(CacheFormatError, match=re.escape(f"{broken / 'manifest.json'}: {where}")):
        TeacherCache.open(broken)


def test_a_complete_cache_opens_from_a_read_only_root(composite_cache, mounted, tmp_path):
    copy = Path(shutil.copytree(composite_cache.path, tmp_path / "root" / composite_cache.path.name))
    mounted("ro", tmp_path / "root")
    assert subprocess.run(["touch", str(copy / "x")], capture_output=True).returncode != 0
    cache = TeacherCache.open(copy)  # verifies every checksum, cannot stamp it: fine, it verifies again next time
    assert np.array_equal(cache.text(np.arange(3), torch.device("cpu")).numpy(),
                          composite_cache.text(np.arange(3), torch.device("cpu")).numpy())


def _flip_one_bit_keeping_size_and_mtime(path: Path, offset: int) -> None:
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


def test_a_bit_flipped_after_verification_is_caught_on_first_read(composite_cache, tmp_path):
    """The verification stamp trusts size and mtime; the per-process content check does not."""
    from teacher_cache import CacheIntegrityError

    copy = Path(shutil.copytree(composite_cache.path, tmp_path / "cache" / composite_cache.path.name))
    TeacherCache.open(copy).text([0, 9])  # verified and stamped; every shard read once
    shard = copy / composite_cache.manifest["modalities"]["text"]["shards"][1]["file"]
    _flip_one_bit_keeping_size_and_mtime(shard, shard.stat().st_size - 3)  # a value of the shard's last row
    reopened = TeacherCache.open(copy)  # the stamp still matches: no full verification
    reopened.text([0])  # shard 0 is intact
    with pytest.raises(CacheIntegrityError, match="^" + re.escape(f"{shard} does not match its checksum in the manifest")):
        reopened.text([9])
    for name in ("rows_file", "index_file"):
        rows_file = copy / composite_cache.manifest["modalities"]["text"][name]
        _flip_one_bit_keeping_size_and_mtime(rows_file, rows_file.stat().st_size - 20)
        with pytest.raises(CacheIntegrityError, match="^" + re.escape(f"{rows_file} does not match its checksum")):
            TeacherCache.open(copy)
        _flip_one_bit_keeping_size_and_mtime(rows_file, rows_file.stat().st_size - 20)  # restored


def test_a_named_cache_opens_without_reading_the_corpora_and_refuses_other_configs(composite_cache, monkeypatch):
    """``train.teacher_cache``: the configs are checked against the manifest; no corpus file is read."""
    import dataclasses

    import teacher_cache.writer
    from teacher_cache import CacheMismatchError, open_cache

    monkeypatch.setattr(teacher_cache.writer, "collect_data", lambda *args: pytest.fail("the corpora were read"))
    teacher = TeacherConfig(device="cuda", batch_size=8, num_workers=3)  # runtime-only keys may differ
    opened = open_cache(teacher, DATA_CFG, "/nonexistent", named=composite_cache.path)
    assert opened.path == composite_cache.path and opened.texts[0] == composite_cache.texts[0]
    other_data = dataclasses.replace(DATA_CFG, limits={**DATA_CFG.limits, "wiki1m": 11})
    with pytest.raises(CacheMismatchError, match=r"^teacher cache .* was built with data\.limits=.*'wiki1m': 10.*"
                                                 r"this config has .*'wiki1m': 11.*leave train\.teacher_cache unset"):
        open_cache(teacher, other_data, named=composite_cache.path)
    with pytest.raises(CacheMismatchError, match=r"was built with teacher\.batch_size=8, this config has 16"):
        open_cache(TeacherConfig(device="cpu", batch_size=16), DATA_CFG, named=composite_cache.path)

"""Inputs prepared in DataLoader workers (teacher.num_workers): the same cache, byte for byte.

Each backend builds one small cache in this process (0 workers) and one with 2 worker processes
tokenising and decoding; every file must hash alike, and the number of workers must not reach the
cache's name, its index key or its manifest. A truncated JPEG among the photos checks that bad
images are still named by file, refused or skipped, with workers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from teacher_cache import BadInputError, CacheDataConfig, TeacherConfig, build_cache, build_teacher
from teacher_cache.corpora import resolve_data_dir
from teacher_cache.towers.config import default_num_workers
from teacher_testkit import copy_mini_subset, make_tiny_hf_clip, make_tiny_open_clip

SHARD_ROWS = 8
DATA_CFG = CacheDataConfig(text_sources=("coco2017_mini",), image_sources=("coco2017_mini",), skip_bad=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> tuple[Path, Path]:
    """5 coco2017_mini photos with their captions; the second photo truncated (undecodable)."""
    folder = copy_mini_subset(resolve_data_dir(), tmp_path_factory.mktemp("data"), images=5)
    mini = folder / "images" / "coco2017_mini"
    record = json.loads((mini / "captions.jsonl").read_text().splitlines()[1])
    truncated = mini / record["image"]
    truncated.write_bytes(truncated.read_bytes()[:5000])
    return folder, truncated


def _teacher_config(backend: str, folder: Path) -> TeacherConfig:
    if backend == "composite":
        return TeacherConfig(device="cpu", batch_size=4)
    if backend == "open_clip":
        return TeacherConfig(backend="open_clip", clip_model=f"local-dir:{make_tiny_open_clip(folder)}",
                             device="cpu", batch_size=4)
    return TeacherConfig(backend="hf_clip", clip_model=str(make_tiny_hf_clip(folder)), device="cpu", batch_size=4,
                         precision="fp32")


def _sha256s(root: Path) -> dict[str, str]:
    """Every file of the caches and the index under the cache root, by relative path (the verified
    stamps in .verified/ hold file mtimes, so they differ between any two builds)."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != ".build.lock"
            and path.relative_to(root).parts[0] != ".verified"}


@pytest.mark.parametrize("backend", ["composite", "open_clip", "hf_clip"])
def test_two_workers_write_the_bytes_of_an_in_process_build(backend, data_dir, tmp_path):
    folder, truncated = data_dir
    cfg = _teacher_config(backend, tmp_path / "weights")
    teacher = build_teacher(cfg)
    roots = {}
    for workers in (0, 2):
        roots[workers] = tmp_path / f"workers{workers}"
        report = build_cache(dataclasses.replace(cfg, num_workers=workers), DATA_CFG, roots[workers], folder,
                             shard_rows=SHARD_ROWS, progress=False, teacher=teacher)
        # 5 photos x 5 captions = 25 text rows; the truncated photo is skipped, its captions stay as text
        assert report.encoded == {"text": 25, "image": 4} and report.shards_written == 4 + 1
    sha256s = _sha256s(roots[0])
    assert sha256s == _sha256s(roots[2])
    # 5 shards + their checksums, 2 id indexes (.npy too), plan, manifest, 2 rows files, image_sha256.txt,
    # 1 index entry
    assert sum(name.endswith(".npy") for name in sha256s) == 5 + 2 and len(sha256s) == 18
    manifest = json.loads(next(roots[2].glob("*/manifest.json")).read_text())
    assert "num_workers" not in json.dumps(manifest)
    assert [(s["path"], s["problem"].split(" (")[0]) for s in manifest["skipped"]] == [
        (str(truncated), "cannot decode image")]


def test_a_bad_image_is_refused_by_file_with_workers(data_dir, tmp_path):
    folder, truncated = data_dir
    cfg = TeacherConfig(device="cpu", batch_size=4, num_workers=2)
    with pytest.raises(BadInputError, match=f"\\({truncated}\\): cannot decode image"):
        build_cache(cfg, dataclasses.replace(DATA_CFG, skip_bad=False), tmp_path, folder, shard_rows=SHARD_ROWS,
                    progress=False)
    assert not list(tmp_path.glob("*/*/*.npy")), "nothing may be encoded before the input is clean"


def test_default_workers_leave_one_core_to_the_model(monkeypatch):
    for cores, expected in [(1, 0), (2, 1), (16, 8), (None, 0)]:
        monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
        assert default_num_workers() == expected
        assert TeacherConfig().resolved_num_workers() == expected
    assert TeacherConfig(num_workers=3).resolved_num_workers() == 3
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        TeacherConfig(num_workers=-1)

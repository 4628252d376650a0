"""Cache writer: layout, no-op reruns, fingerprints, opening without the teacher, SIGKILL + resume,
--verify, damaged caches refused on open, bad input, 2 ranks.

Everything runs the real offline teacher on a few dozen rows. All builds here use one intra-op
thread (torchrun gives each of its workers one as well): CPU kernels sum in a thread-count-dependent
order, so bit-identity is a promise for equal thread counts (see teacher_cache/writer.py).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import pytest

from teacher_cache.corpora import resolve_data_dir
import teacher_cache.data
import teacher_cache.integrity
import teacher_cache.writer
from distill.pools import build_pools
from teacher_cache import (
    BadInputError,
    CacheIntegrityError,
    TeacherCache,
    TeacherConfig,
    build_cache,
    build_teacher,
    collect_rows,
    dataset_fingerprint,
    ensure_cache,
    locate_cache,
    verify_cache,
)
import forked
from teacher_testkit import CACHE_SCRIPT, copy_mini_subset, directory_bytes, small_data_config

SHARD_ROWS = 8
TEACHER_CFG = TeacherConfig(device="cpu", batch_size=4)
DATA_CFG = small_data_config(images=4, sentences=24)  # 24 + 4 x 5 = 44 text rows, 4 images
CLI_ARGS = ["--device", "cpu", "--batch-size", "4", "--shard-rows", str(SHARD_ROWS),
            "--text-sources", "wiki1m", "coco2017_mini", "--image-sources", "coco2017_mini",
            "--limit", "wiki1m=24", "--limit", "coco2017_mini=4"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# Runs scripts/cache_teacher.py with a fault injected: the third shard is half-written, then SIGKILL.
KILLED_IN_THIRD_SHARD = """
import os, runpy, signal, sys
import teacher_cache.cache_encode as encode
original, written = encode.write_shard, []
def write_or_die(directory, spec, embeddings):
    if len(written) == 2:
        (directory / f"{spec.file}.tmp-{os.getpid()}").write_bytes(b"half a shard")
        os.kill(os.getpid(), signal.SIGKILL)
    written.append(spec)
    return original(directory, spec, embeddings)
encode.write_shard = write_or_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher():
    return build_teacher(TEACHER_CFG)


@pytest.fixture(scope="module")
def reference(teacher, tmp_path_factory) -> Path:
    """An uninterrupted single-process build: what every other build must equal byte for byte."""
    root = tmp_path_factory.mktemp("reference")
    return build_cache(TEACHER_CFG, DATA_CFG, root, shard_rows=SHARD_ROWS, progress=False, teacher=teacher).path


def test_layout_and_manifest(reference):
    manifest = json.loads((reference / "manifest.json").read_text())
    assert reference.name.startswith("all-MiniLM-L6-v2+efficientnet-lite0-")
    assert reference.name.endswith(manifest["fingerprint"][:12])
    assert manifest["counts"] == {"text": 44, "image": 4} and manifest["dims"] == {"text": 384, "image": 1280}
    assert manifest["dtype"] == "float16" and manifest["skipped"] == []
    assert [s["rows"] for s in manifest["modalities"]["text"]["shards"]][-1] == [40, 44]
    assert len(manifest["modalities"]["text"]["shards"]) == 6
    assert manifest["teacher"]["identity"]["backend"] == "composite" and manifest["versions"]["torch"]
    rows = pa.ipc.open_file(reference / "text_rows.arrow").read_all().to_pylist()
    assert rows[0] == {"id": "wiki1m:0", "text": "YMCA in South Australia", "image_row": -1}
    first_caption = rows[24]  # after the 24 wiki1m sentences: a coco2017_mini caption, paired with its photo
    assert first_caption["id"] == "coco2017_mini:790:0" and first_caption["image_row"] == 0
    assert pa.ipc.open_file(reference / "image_rows.arrow").read_all().column("id")[0].as_py() == "coco:790"
    shard = manifest["modalities"]["text"]["shards"][0]
    assert shard["bytes"] == (reference / shard["file"]).stat().st_size == 128 + 8 * 384 * 2
    assert verify_cache(reference) == []


def test_rerun_of_a_complete_cache_is_a_noop(reference, teacher):
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("*")}
    started = time.perf_counter()
    report = build_cache(TEACHER_CFG, DATA_CFG, reference.parent, shard_rows=SHARD_ROWS, progress=False, teacher=teacher)
    assert report.already_complete and report.path == reference
    assert time.perf_counter() - started < 10
    assert {p: p.stat().st_mtime_ns for p in reference.rglob("*")} == before


def test_other_data_or_teacher_gets_another_directory(reference, teacher):
    data_dir = resolve_data_dir()
    assert locate_cache(teacher, TEACHER_CFG, DATA_CFG, reference.parent, shard_rows=SHARD_ROWS) == reference
    fewer = small_data_config(images=3, sentences=24)
    assert locate_cache(teacher, TEACHER_CFG, fewer, reference.parent, shard_rows=SHARD_ROWS) != reference
    assert locate_cache(teacher, TEACHER_CFG, DATA_CFG, reference.parent, shard_rows=4) != reference
    rows = collect_rows(DATA_CFG, data_dir)
    original = dataset_fingerprint(rows)
    rows.texts[0] = dataclasses.replace(rows.texts[0], text=rows.texts[0].text + "!")
    assert dataset_fingerprint(rows) != original
    # another precision than the one the reference's resolved to (auto: bf16 or fp32, by the CPU)
    other = "bf16" if TEACHER_CFG.precision_for("cpu", "text") == "fp32" else "fp32"
    changed = build_teacher(dataclasses.replace(TEACHER_CFG, precision=other))
    assert locate_cache(changed, TEACHER_CFG, DATA_CFG, reference.parent, shard_rows=SHARD_ROWS) != reference


def test_a_complete_cache_opens_without_the_teacher_reading_the_corpora_once(reference, monkeypatch):
    def no_teacher(cfg):
        raise AssertionError("a complete cache must open without loading the teacher")

    reads = []
    load_wiki1m = teacher_cache.data.load_wiki1m
    monkeypatch.setattr(teacher_cache.writer, "build_teacher", no_teacher)
    monkeypatch.setattr(teacher_cache.data, "load_wiki1m", lambda *a, **k: reads.append(1) or load_wiki1m(*a, **k))
    # what the trainer does before step 1: ensure the cache, open it (checked), build the pools
    cache = TeacherCache.open(ensure_cache(TEACHER_CFG, DATA_CFG, reference.parent, shard_rows=SHARD_ROWS,
                                           progress=False))
    pools = build_pools(cache, heldout_images=1)
    assert cache.path == reference and len(reads) == 1
    assert pools.sentences[0] == "YMCA in South Australia" and len(pools.sentences) == 44
    assert (pools.n_text, pools.n_paired) == (24, 15)  # 3 of 4 photos paired (5 captions each), 1 held out
    held_out = pools.heldout_image_ids[0]
    assert held_out not in {cache.image_ids[i] for i in pools.paired_image_rows}
    assert cache.caption_image_rows[pools.paired_text_rows].tolist() == pools.paired_image_rows.tolist()


def _copy_of(reference: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(reference, tmp_path / reference.name))


def _flip_byte(shard: Path, position: int = -7) -> None:
    data = bytearray(shard.read_bytes())
    data[position] ^= 0x01
    shard.write_bytes(bytes(data))


def test_open_refuses_a_flipped_byte_naming_the_shard_and_the_fix(reference, tmp_path):
    copy = _copy_of(reference, tmp_path)
    shard = copy / "text" / "shard-00003.npy"
    _flip_byte(shard)
    with pytest.raises(CacheIntegrityError) as error:
        TeacherCache.open(copy)
    message = str(error.value)
    assert f"{shard}: checksum mismatch (corrupt)" in message
    assert f"scripts/cache_teacher.py --verify {copy}" in message and "rebuild" in message


def test_training_start_refuses_a_flipped_byte(tmp_path):
    """What train() calls before step 1, on the cache of a run config: a flipped byte stops it there."""
    from distill.config import load_config
    from distill.pools import open_run_cache

    overrides = ["teacher.device=cpu", "teacher.batch_size=4", "data.text_sources=[wiki1m, coco2017_mini]",
                 "data.image_sources=[coco2017_mini]", "data.limits={wiki1m: 24, coco2017_mini: 4}",
                 f"train.cache_root={tmp_path}"]
    cfg = load_config(Path(CACHE_SCRIPT).parents[1] / "configs" / "offline_default.yaml", overrides)
    cache = open_run_cache(cfg, resolve_data_dir())
    shard = cache.path / "text" / "shard-00000.npy"
    _flip_byte(shard, position=200)
    with pytest.raises(CacheIntegrityError, match=r"shard-00000.npy: checksum mismatch .*--verify"):
        open_run_cache(cfg, resolve_data_dir())


def test_open_names_a_truncated_shard(reference, tmp_path):
    copy = _copy_of(reference, tmp_path)
    shard = copy / "image" / "shard-00000.npy"
    shard.write_bytes(shard.read_bytes()[:1000])
    expected = 128 + 4 * 1280 * 2
    with pytest.raises(CacheIntegrityError, match=rf"{re.escape(str(shard))} has 1000 bytes, the manifest says {expected} \(truncated"):
        TeacherCache.open(copy)


def test_checksums_are_verified_once_then_only_sizes_and_mtimes(reference, tmp_path, monkeypatch):
    copy = _copy_of(reference, tmp_path)  # a copy is verified once in its new place
    hashed = []
    file_sha256 = teacher_cache.integrity.file_sha256
    monkeypatch.setattr(teacher_cache.integrity, "file_sha256", lambda path: hashed.append(path) or file_sha256(path))
    TeacherCache.open(copy)
    assert len(hashed) == 11  # 6 text + 1 image shards, 2 rows files, 2 id indexes: each once
    TeacherCache.open(copy)
    assert len(hashed) == 15, "an unchanged cache hashes only its rows files and indexes (per process)"
    shard = copy / "text" / "shard-00001.npy"
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    TeacherCache.open(copy)
    assert len(hashed) == 26, "a file touched since the last verification makes the next open verify again"


def test_rows_a_batch_reads_are_checked_finite_and_unit_norm(reference, tmp_path):
    """A damaged row whose checksums were rewritten to match still stops the lookup, naming shard and row."""
    copy = _copy_of(reference, tmp_path)
    shard = copy / "text" / "shard-00001.npy"
    vectors = np.load(shard)
    vectors[2] *= 3.0
    np.save(shard, vectors)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["modalities"]["text"]["shards"][1]["sha256"] = teacher_cache.integrity.file_sha256(shard)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    cache = TeacherCache.open(copy)
    assert cache.text([0, 9]).shape == (2, 384)  # undamaged rows, one of them in the damaged shard
    with pytest.raises(CacheIntegrityError, match=rf"{re.escape(str(shard))}: row 'wiki1m:10' has norm 3"):
        cache.text([0, 10])


def test_paths_in_a_manifest_stay_inside_the_cache(reference, tmp_path):
    copy = _copy_of(reference, tmp_path)
    (tmp_path / "elsewhere.npy").write_bytes((copy / "text" / "shard-00000.npy").read_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["modalities"]["text"]["shards"][0]["file"] = "../elsewhere.npy"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CacheIntegrityError, match=r"names '../elsewhere.npy', which lies outside the cache folder"):
        TeacherCache.open(copy)
    assert verify_cache(copy) == [f"{copy / 'manifest.json'}: names '../elsewhere.npy', outside the cache folder"]


@pytest.mark.slow  # a killed build in a process of its own (forked: tests/forked.py)
def test_resume_after_sigkill_is_bit_identical(reference, teacher, tmp_path):
    wrapper = tmp_path / "killed_in_third_shard.py"
    wrapper.write_text(KILLED_IN_THIRD_SHARD)
    killed = forked.run([str(wrapper), str(CACHE_SCRIPT), "--no-progress", *CLI_ARGS, "--cache-root", str(tmp_path)],
                        env={**os.environ, "HF_HUB_OFFLINE": "1", **ONE_THREAD})
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = tmp_path / reference.name
    assert not (partial / "manifest.json").exists()
    assert list(partial.rglob("*.tmp-*")), "the kill should leave a half-written temporary shard"
    report = build_cache(TEACHER_CFG, DATA_CFG, tmp_path, shard_rows=SHARD_ROWS, progress=False, teacher=teacher)
    assert report.shards_reused == 2 and report.shards_written == 5
    assert directory_bytes(partial) == directory_bytes(reference)


@pytest.mark.slow  # two processes with torchrun's environment (forked: tests/forked.py)
def test_two_processes_equal_one(reference, tmp_path):
    for rank in forked.ranks([str(CACHE_SCRIPT), "--no-progress", *CLI_ARGS, "--cache-root", str(tmp_path)],
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}):
        assert rank.returncode == 0, rank.stderr[-3000:]
    assert directory_bytes(tmp_path / reference.name) == directory_bytes(reference)


def _load_cli():
    spec = importlib.util.spec_from_file_location("cache_teacher_cli", CACHE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verify_names_a_flipped_byte(reference, tmp_path, capsys):
    copy = Path(shutil.copytree(reference, tmp_path / reference.name))
    shard = copy / "text" / "shard-00003.npy"
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0x01
    shard.write_bytes(bytes(data))
    assert verify_cache(copy) == [f"{shard}: checksum mismatch (corrupt)"]
    cli = _load_cli()
    assert cli.main(["--verify", str(copy)]) == 1
    assert "CORRUPT" in capsys.readouterr().err
    assert cli.main(["--verify", str(reference)]) == 0


def test_bad_rows_are_all_listed_before_encoding_then_skipped(teacher, tmp_path):
    data_dir = copy_mini_subset(resolve_data_dir(), tmp_path / "data", images=4)
    mini = data_dir / "images" / "coco2017_mini"
    records = [json.loads(line) for line in (mini / "captions.jsonl").read_text().splitlines()]
    records[0]["captions"][1] = "   "
    (mini / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    truncated = mini / records[1]["image"]
    truncated.write_bytes(truncated.read_bytes()[:5000])
    (mini / records[2]["image"]).unlink()
    data_cfg = dataclasses.replace(small_data_config(), text_sources=("coco2017_mini",), limits={})
    skipping = dataclasses.replace(data_cfg, skip_bad=True)
    root = tmp_path / "cache"

    with pytest.raises(BadInputError) as error:
        build_cache(TEACHER_CFG, data_cfg, root, data_dir, shard_rows=SHARD_ROWS, progress=False, teacher=teacher)
    message = str(error.value)
    assert "3 bad input row(s)" in message
    assert f"coco2017_mini:{records[0]['image_id']}:1 ({mini / 'captions.jsonl'}:1): empty text" in message
    assert f"coco:{records[1]['image_id']} ({truncated}): cannot decode image" in message
    assert f"coco:{records[2]['image_id']} ({mini / records[2]['image']}): cannot read image file" in message
    assert not list(root.glob("*/text/*.npy")), "nothing may be encoded before the input is clean"

    path = build_cache(TEACHER_CFG, skipping, root, data_dir, shard_rows=SHARD_ROWS,
                       progress=False, teacher=teacher).path
    manifest = json.loads((path / "manifest.json").read_text())
    assert sorted(s["row_id"] for s in manifest["skipped"]) == sorted(
        [f"coco2017_mini:{records[0]['image_id']}:1", f"coco:{records[1]['image_id']}", f"coco:{records[2]['image_id']}"]
    )
    cache = TeacherCache.open(path)
    assert len(cache.image_ids) == 2 and len(cache.text_ids) == 19
    assert sorted(row["row_id"] for row in cache.skipped_rows) == sorted(s["row_id"] for s in manifest["skipped"])
    with pytest.raises(KeyError, match="skipped as bad input"):
        cache.image_index([f"coco:{records[1]['image_id']}"])
    # captions of the two skipped photos stay as text, unpaired; the others are paired with their photo
    paired = cache.image_ids.take(cache.caption_image_rows[cache.caption_image_rows >= 0])
    assert sorted(set(paired)) == sorted(cache.image_ids) and len(paired) == 9  # 4 + 5 captions
    with pytest.raises(BadInputError, match="data.skip_bad=true"):  # not accepted silently without the key
        build_cache(TEACHER_CFG, data_cfg, root, data_dir, shard_rows=SHARD_ROWS, progress=False, teacher=teacher)
    with pytest.raises(BadInputError, match="data.skip_bad=true"):
        ensure_cache(TEACHER_CFG, data_cfg, root, data_dir, shard_rows=SHARD_ROWS, progress=False)
    # with data.skip_bad, what training calls finds the cache (through the index, without the teacher)
    assert ensure_cache(TEACHER_CFG, skipping, root, data_dir, shard_rows=SHARD_ROWS, progress=False) == path


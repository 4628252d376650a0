"""Cache writer: layout, no-op reruns, fingerprints, SIGKILL + resume, --verify, bad input, 2 ranks.

Everything runs the real offline teacher on a few dozen rows. All builds here use one intra-op
thread (torchrun gives each of its workers one as well): CPU kernels sum in a thread-count-dependent
order, so bit-identity is a promise for equal thread counts (see teacher_cache/writer.py).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from teacher_cache.corpora import resolve_data_dir
from teacher_cache import (
    BadInputError,
    TeacherCache,
    TeacherConfig,
    build_cache,
    build_teacher,
    collect_rows,
    dataset_fingerprint,
    locate_cache,
    verify_cache,
)
from teacher_cache.writer import KILL_AFTER_SHARDS_ENV
from teacher_testkit import CACHE_SCRIPT, copy_mini_subset, directory_bytes, run_cache_script, small_data_config

SHARD_ROWS = 8
TEACHER_CFG = TeacherConfig(device="cpu", batch_size=4)
DATA_CFG = small_data_config(images=4, sentences=24)  # 24 + 4 x 5 = 44 text rows, 4 images
CLI_ARGS = ["--device", "cpu", "--batch-size", "4", "--shard-rows", str(SHARD_ROWS),
            "--text-sources", "wiki1m", "coco2017_mini", "--image-sources", "coco2017_mini",
            "--limit", "wiki1m=24", "--limit", "coco2017_mini=4"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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
    assert (reference / "text_ids.txt").read_text().splitlines()[:2] == ["wiki1m:0", "wiki1m:1"]
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
    fp32 = build_teacher(dataclasses.replace(TEACHER_CFG, precision="fp32"))
    assert locate_cache(fp32, TEACHER_CFG, DATA_CFG, reference.parent, shard_rows=SHARD_ROWS) != reference


def test_resume_after_sigkill_is_bit_identical(reference, teacher, tmp_path):
    killed = run_cache_script([*CLI_ARGS, "--cache-root", str(tmp_path)], env={**ONE_THREAD, KILL_AFTER_SHARDS_ENV: "2"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = tmp_path / reference.name
    assert not (partial / "manifest.json").exists()
    assert list(partial.rglob("*.tmp-*")), "the kill should leave a half-written temporary shard"
    report = build_cache(TEACHER_CFG, DATA_CFG, tmp_path, shard_rows=SHARD_ROWS, progress=False, teacher=teacher)
    assert report.shards_reused == 2 and report.shards_written == 5
    assert directory_bytes(partial) == directory_bytes(reference)


def test_two_processes_equal_one(reference, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = run_cache_script([*CLI_ARGS, "--cache-root", str(tmp_path)], env=ONE_THREAD, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
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
    root = tmp_path / "cache"

    with pytest.raises(BadInputError) as error:
        build_cache(TEACHER_CFG, data_cfg, root, data_dir, shard_rows=SHARD_ROWS, progress=False, teacher=teacher)
    message = str(error.value)
    assert "3 bad input row(s)" in message
    assert f"coco2017_mini:{records[0]['image_id']}:1 ({mini / 'captions.jsonl'}:1): empty text" in message
    assert f"coco:{records[1]['image_id']} ({truncated}): cannot decode image" in message
    assert f"coco:{records[2]['image_id']} ({mini / records[2]['image']}): cannot read image file" in message
    assert not list(root.glob("*/text/*.npy")), "nothing may be encoded before the input is clean"

    path = build_cache(TEACHER_CFG, data_cfg, root, data_dir, skip_bad=True, shard_rows=SHARD_ROWS,
                       progress=False, teacher=teacher).path
    manifest = json.loads((path / "manifest.json").read_text())
    assert sorted(s["row_id"] for s in manifest["skipped"]) == sorted(
        [f"coco2017_mini:{records[0]['image_id']}:1", f"coco:{records[1]['image_id']}", f"coco:{records[2]['image_id']}"]
    )
    cache = TeacherCache.open(path)
    assert len(cache.image_ids) == 2 and len(cache.text_ids) == 19
    with pytest.raises(KeyError, match="skipped as bad input"):
        cache.image_index([f"coco:{records[1]['image_id']}"])
    with pytest.raises(BadInputError):  # a later run that does not allow skipping must not accept it silently
        build_cache(TEACHER_CFG, data_cfg, root, data_dir, shard_rows=SHARD_ROWS, progress=False, teacher=teacher)


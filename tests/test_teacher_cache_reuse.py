"""Rebuilding after an edit: unchanged rows are copied from the earlier cache, only the edited ones are
encoded; --no-reuse and another teacher encode everything; an interrupted reuse build resumes exactly.

The teacher is a tiny random open_clip (teacher_testkit) behind a wrapper that counts what it encodes.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import teacher_cache.cache_encode
import teacher_cache.writer
from teacher_cache import CacheDataConfig, TeacherCache, TeacherConfig, build_cache, build_teacher, verify_cache
from teacher_testkit import CACHE_SCRIPT, directory_bytes, make_tiny_open_clip

SHARD_ROWS = 8
SENTENCES = [f"sentence number {i} about {word}" for i, word in enumerate("abcdefghijklmnopqrst")]
CAPTIONS = {"a.jpg": ["a red square", "red"], "b.jpg": ["a green square"], "c.jpg": ["a blue square"],
            "d.jpg": ["a grey square"]}
TEXT_ROWS = len(SENTENCES) + sum(len(c) for c in CAPTIONS.values())  # 20 + 5 = 25 text rows, 4 images


class CountingTeacher:
    """The real teacher, counting the rows and calls of every forward (the writer's device stage)."""

    def __init__(self, teacher: Any):
        self._teacher = teacher
        self.rows = {"text": 0, "image": 0}
        self.calls = {"text": 0, "image": 0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._teacher, name)

    def forward_text(self, tokens):
        self.rows["text"] += len(tokens)
        self.calls["text"] += 1
        return self._teacher.forward_text(tokens)

    def forward_image(self, pixels):
        self.rows["image"] += len(pixels)
        self.calls["image"] += 1
        return self._teacher.forward_image(pixels)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    return make_tiny_open_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def teacher_cfg(clip_folder) -> TeacherConfig:
    return TeacherConfig(backend="open_clip", clip_model=f"local-dir:{clip_folder}", device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def loaded_teacher(teacher_cfg):
    return build_teacher(teacher_cfg)


@pytest.fixture()
def own_data(tmp_path) -> tuple[CacheDataConfig, Path]:
    """A sentences file and a folder of 4 JPEGs with captions, as a user would give them."""
    folder = tmp_path / "data"
    (folder / "photos").mkdir(parents=True)
    (folder / "sentences.txt").write_text("".join(f"{s}\n" for s in SENTENCES))
    for i, name in enumerate(CAPTIONS):
        Image.new("RGB", (24, 20), (60 * i, 200 - 40 * i, 90)).save(folder / "photos" / name)
    (folder / "photos" / "captions.jsonl").write_text(
        "".join(json.dumps({"image": name, "caption": captions}) + "\n" for name, captions in CAPTIONS.items()))
    cfg = CacheDataConfig(text_sources=({"path": str(folder / "sentences.txt")},),
                          image_sources=({"captions": str(folder / "photos" / "captions.jsonl")},))
    return cfg, folder


def build(teacher: CountingTeacher, cfg: TeacherConfig, data_cfg: CacheDataConfig, root: Path):
    return build_cache(cfg, data_cfg, root, shard_rows=SHARD_ROWS, progress=False, teacher=teacher)


def stored_rows(directory: Path, modality: str) -> dict[str, bytes]:
    """Row id -> the float16 bytes stored for it, read from the shards directly."""
    manifest = json.loads((directory / "manifest.json").read_text())
    matrix = np.concatenate([np.load(directory / s["file"]) for s in manifest["modalities"][modality]["shards"]])
    cache = TeacherCache.open(directory)
    ids = cache.text_ids if modality == "text" else cache.image_ids
    assert matrix.dtype == np.float16 and len(ids) == len(matrix)
    return {row_id: row.tobytes() for row_id, row in zip(ids, matrix)}


def test_editing_one_sentence_encodes_that_sentence_alone(teacher_cfg, loaded_teacher, own_data, tmp_path):
    data_cfg, folder = own_data
    first = CountingTeacher(loaded_teacher)
    old = build(first, teacher_cfg, data_cfg, tmp_path / "cache").path
    assert first.rows == {"text": TEXT_ROWS, "image": 4}

    edited = [*SENTENCES]
    edited[5] = "a sentence the user rewrote"
    (folder / "sentences.txt").write_text("".join(f"{s}\n" for s in edited))
    second = CountingTeacher(loaded_teacher)
    report = build(second, teacher_cfg, data_cfg, tmp_path / "cache")

    assert report.path != old
    assert second.rows == {"text": 1, "image": 0} and second.calls == {"text": 1, "image": 0}
    assert report.encoded == {"text": 1, "image": 0} and report.reused == {"text": TEXT_ROWS - 1, "image": 4}
    assert report.reused_from == old
    assert f"reused {TEXT_ROWS - 1} text rows and 4 images from {old}, encoded 1 text rows and 0 images" in report.summary()
    manifest = json.loads((report.path / "manifest.json").read_text())
    assert manifest["reused_from"] == {"cache": old.name, "rows": {"text": TEXT_ROWS - 1, "image": 4}}
    assert verify_cache(report.path) == []

    before, after = stored_rows(old, "text"), stored_rows(report.path, "text")
    assert sorted(after) == sorted(before)
    assert [row_id for row_id in after if after[row_id] != before[row_id]] == ["sentences:5"]
    assert stored_rows(report.path, "image") == stored_rows(old, "image")
    # The edited row is the teacher's vector of the new sentence (encoded alone: equal to rounding).
    fresh = loaded_teacher.encode_text(["a sentence the user rewrote"])[0]
    new_row = torch.from_numpy(np.frombuffer(after["sentences:5"], dtype=np.float16).astype(np.float32))
    assert torch.nn.functional.cosine_similarity(fresh, new_row, dim=0) > 0.999
    assert TeacherCache.open(report.path).texts[5] == "a sentence the user rewrote"


def test_renaming_a_source_and_deleting_a_line_re_encode_nothing(teacher_cfg, loaded_teacher, own_data, tmp_path):
    """Every row id changes (new source names, lines shifted), no content does: all rows are copied."""
    data_cfg, folder = own_data
    old = build(CountingTeacher(loaded_teacher), teacher_cfg, data_cfg, tmp_path / "cache").path
    (folder / "mine.txt").write_text("".join(f"{s}\n" for s in SENTENCES[1:]))  # renamed, first line gone
    (folder / "photos").rename(folder / "pictures")
    renamed = CacheDataConfig(text_sources=({"path": str(folder / "mine.txt")},),
                              image_sources=({"captions": str(folder / "pictures" / "captions.jsonl"), "name": "pictures"},))
    counting = CountingTeacher(loaded_teacher)
    report = build(counting, teacher_cfg, renamed, tmp_path / "cache")

    assert counting.rows == {"text": 0, "image": 0} and report.reused_from == old
    assert report.reused == {"text": TEXT_ROWS - 1, "image": 4} and "encoded nothing" in report.summary()
    before, after = stored_rows(old, "text"), stored_rows(report.path, "text")
    assert after["mine:0"] == before["sentences:1"] and after["pictures:b.jpg:0"] == before["captions:b.jpg:0"]
    assert verify_cache(report.path) == []


def test_replacing_one_image_encodes_that_image_alone(teacher_cfg, loaded_teacher, own_data, tmp_path):
    data_cfg, folder = own_data
    old = build(CountingTeacher(loaded_teacher), teacher_cfg, data_cfg, tmp_path / "cache").path
    Image.new("RGB", (24, 20), (255, 255, 0)).save(folder / "photos" / "b.jpg")
    counting = CountingTeacher(loaded_teacher)
    report = build(counting, teacher_cfg, data_cfg, tmp_path / "cache")

    assert counting.rows == {"text": 0, "image": 1}
    before, after = stored_rows(old, "image"), stored_rows(report.path, "image")
    assert [image_id for image_id in after if after[image_id] != before[image_id]] == ["captions:b.jpg"]
    assert stored_rows(report.path, "text") == stored_rows(old, "text")


def test_no_reuse_flag_encodes_every_row(teacher_cfg, loaded_teacher, own_data, tmp_path, monkeypatch, capsys):
    data_cfg, folder = own_data
    build(CountingTeacher(loaded_teacher), teacher_cfg, data_cfg, tmp_path / "cache")
    (folder / "sentences.txt").write_text("".join(f"{s}\n" for s in ["one new line", *SENTENCES]))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"teacher": teacher_cfg.to_dict(), "data": data_cfg.to_dict(),
                                      "cache_root": str(tmp_path / "cache"), "shard_rows": SHARD_ROWS}))
    counting = CountingTeacher(loaded_teacher)
    monkeypatch.setattr(teacher_cache.writer, "build_teacher", lambda cfg: counting)
    spec = importlib.util.spec_from_file_location("cache_teacher_cli", CACHE_SCRIPT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)

    assert cli.main(["--config", str(config), "--no-reuse", "--no-progress"]) == 0
    assert counting.rows == {"text": TEXT_ROWS + 1, "image": 4}
    assert "encoded 26 text rows and 4 images" in capsys.readouterr().out
    fresh = [p for p in (tmp_path / "cache").glob("*/manifest.json") if json.loads(p.read_text())["counts"]["text"] == 26]
    manifest = json.loads(fresh[0].read_text())
    assert manifest["reused_from"] is None and manifest["data_config"]["reuse_rows"] is False


def test_another_teacher_never_reuses(teacher_cfg, loaded_teacher, own_data, tmp_path):
    data_cfg, _ = own_data
    build(CountingTeacher(loaded_teacher), teacher_cfg, data_cfg, tmp_path / "cache")
    other_cfg = TeacherConfig(**{**teacher_cfg.to_dict(), "precision": "bf16"})
    counting = CountingTeacher(build_teacher(other_cfg))
    report = build(counting, other_cfg, data_cfg, tmp_path / "cache")
    assert counting.rows == {"text": TEXT_ROWS, "image": 4}
    assert report.reused_from is None and report.reused == {"text": 0, "image": 0}


def test_an_interrupted_reuse_build_resumes_to_the_same_bytes(teacher_cfg, loaded_teacher, own_data, tmp_path,
                                                             monkeypatch):
    data_cfg, folder = own_data
    for root in ("uninterrupted", "interrupted"):
        build(CountingTeacher(loaded_teacher), teacher_cfg, data_cfg, tmp_path / root)
    (folder / "sentences.txt").write_text("".join(f"{s}\n" for s in [*SENTENCES[:3], "changed", *SENTENCES[4:]]))
    reference = build(CountingTeacher(loaded_teacher), teacher_cfg, data_cfg, tmp_path / "uninterrupted").path

    original, written = teacher_cache.cache_encode.write_shard, []

    def write_twice_then_fail(directory, spec, embeddings):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(spec)
        return original(directory, spec, embeddings)

    monkeypatch.setattr(teacher_cache.cache_encode, "write_shard", write_twice_then_fail)
    with pytest.raises(KeyboardInterrupt):
        build(CountingTeacher(loaded_teacher), teacher_cfg, data_cfg, tmp_path / "interrupted")
    monkeypatch.setattr(teacher_cache.cache_encode, "write_shard", original)
    report = build(CountingTeacher(loaded_teacher), teacher_cfg, data_cfg, tmp_path / "interrupted")

    assert report.shards_reused == 2
    assert directory_bytes(report.path) == directory_bytes(reference)


def test_a_rebuild_that_encodes_nothing_says_so_without_a_rate(tmp_path):
    from teacher_cache.writer import BuildReport

    report = BuildReport(tmp_path / "new", reused={"text": 12, "image": 4}, reused_from=tmp_path / "old",
                         shards_written=2, seconds=0.5)
    summary = report.summary()
    assert f"reused 12 text rows and 4 images from {tmp_path / 'old'}, encoded nothing in 0.5 s, 2 shards" in summary
    assert "rows/s" not in summary
    encoded = BuildReport(tmp_path / "new", encoded={"text": 10, "image": 0}, seconds=2.0).summary()
    assert "encoded 10 text rows and 0 images in 2.0 s (5.0 rows/s)" in encoded

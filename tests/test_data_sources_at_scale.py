"""Corpora as they are stored at scale: Parquet files (one or a glob), streamed ``datasets`` and WebDataset
tar shards (img2dataset's layout), each read into rows with stable ids, bad samples named by shard and
key, and each building a teacher cache."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from teacher_cache import CacheDataConfig, DataFormatError, TeacherCache, TeacherConfig, ensure_cache
from teacher_cache.corpora.user import (ImageCaptionSource, TextSource, load_user_image_captions, load_user_texts,
                                        shard_list)


def texts_of(source: TextSource, limit: int | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    problems = []
    rows = load_user_texts(source, limit, problems)
    return [(row.row_id, row.text) for row in rows], [problem.describe() for problem in problems]


def jpeg(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (shade, 40, 90)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_shard(path: Path, samples: dict[str, dict[str, bytes]]) -> Path:
    """A WebDataset tar: ``key.ext`` members, one sample per key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture()
def shards(tmp_path) -> Path:
    """Two shards: 00000 holds two good samples; 00001 a good one, one without caption, one without
    image, one whose image bytes do not decode."""
    folder = tmp_path / "wds"
    write_shard(folder / "00000.tar", {
        "000000000": {"jpg": jpeg(10), "txt": b"a red bus", "json": json.dumps({"caption": "bus"}).encode()},
        "000000001": {"jpg": jpeg(60), "txt": b"two dogs", "json": json.dumps({"caption": "dogs"}).encode()}})
    write_shard(folder / "00001.tar", {
        "000010000": {"jpg": jpeg(120), "txt": b"a kite", "json": json.dumps({"caption": "kite"}).encode()},
        "000010001": {"jpg": jpeg(160), "json": json.dumps({"other": 1}).encode()},
        "000010002": {"txt": b"no picture here"},
        "000010003": {"jpg": b"not a jpeg at all", "txt": b"a broken photo"}})
    return folder


def test_brace_patterns_expand_with_their_padding():
    assert shard_list("s3://bucket/cc3m/{00000..00002}.tar") == [
        "s3://bucket/cc3m/00000.tar", "s3://bucket/cc3m/00001.tar", "s3://bucket/cc3m/00002.tar"]
    assert shard_list("a/{8..10}.tar") == ["a/8.tar", "a/9.tar", "a/10.tar"]
    assert shard_list(["x.tar", "y.tar"]) == ["x.tar", "y.tar"]


def test_parquet_files_stream_one_column_with_stable_ids(tmp_path):
    table = pa.table({"text": ["A man plays.", "", "Dogs run."], "n": [1, 2, 3]})
    pq.write_table(table, tmp_path / "corpus.parquet", row_group_size=1)
    rows, problems = texts_of(TextSource(path=str(tmp_path / "corpus.parquet"), column="text"))
    assert rows == [("corpus:0", "A man plays."), ("corpus:2", "Dogs run.")]
    assert problems == [f"corpus:1 ({tmp_path / 'corpus.parquet'}): empty text"]
    (tmp_path / "many").mkdir()
    pq.write_table(pa.table({"text": ["one", "two"]}), tmp_path / "many" / "part-000.parquet")
    pq.write_table(pa.table({"text": ["three"]}), tmp_path / "many" / "part-001.parquet")
    rows, _ = texts_of(TextSource(path=str(tmp_path / "many" / "*.parquet"), column="text", name="web"), limit=2)
    assert rows == [("web:part-000.parquet:0", "one"), ("web:part-000.parquet:1", "two")]
    with pytest.raises(DataFormatError, match=r"corpus.parquet: no column 'sentence' \(columns: \['text', 'n'\]\)"):
        texts_of(TextSource(path=str(tmp_path / "corpus.parquet"), column="sentence"))


def test_a_streamed_dataset_is_read_row_by_row(tmp_path):
    lines = [{"text": "first"}, {"text": "second"}, {"other": "no text"}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    source = TextSource(dataset="json", data_files=str(tmp_path / "c.jsonl"), split="train", column="text",
                        streaming=True, name="stream")
    rows, problems = texts_of(source)
    assert rows == [("stream:0", "first"), ("stream:1", "second")]
    assert problems == ["stream:2 (json[train]): no 'text' in this record"]


def test_webdataset_shards_give_images_and_captions_named_by_shard_and_key(shards, tmp_path):
    source = ImageCaptionSource(shards=str(shards / "{00000..00001}.tar"), name="cc")
    problems = []
    images, captions = load_user_image_captions(source, None, problems, tmp_path / "store")
    assert [image.image_id for image in images] == [
        "cc:00000.tar:000000000", "cc:00000.tar:000000001", "cc:00001.tar:000010000", "cc:00001.tar:000010001",
        "cc:00001.tar:000010003"]
    assert all(image.path.is_file() and image.path.parent == tmp_path / "store" for image in images)
    assert [(c.row_id, c.text) for c in captions] == [
        ("cc:00000.tar:000000000:0", "a red bus"), ("cc:00000.tar:000000001:0", "two dogs"),
        ("cc:00001.tar:000010000:0", "a kite"), ("cc:00001.tar:000010003:0", "a broken photo")]
    assert sorted(p.describe().split(" (")[0] + ": " + p.problem for p in problems) == [
        "cc:00001.tar:000010001:0: empty caption", "cc:00001.tar:000010002: no 'jpg' image in this sample"]
    json_captions = ImageCaptionSource(shards=[str(shards / "00000.tar")], caption_column="json.caption", name="cc")
    _, captions = load_user_image_captions(json_captions, None, [], tmp_path / "store")
    assert [c.text for c in captions] == ["bus", "dogs"]
    only_text = TextSource(shards=str(shards / "{00000..00001}.tar"), column="txt", name="capt")
    rows, problems = texts_of(only_text)
    assert rows[0] == ("capt:00000.tar:000000000", "a red bus") and len(rows) == 5
    assert problems == [f"capt:00001.tar:000010001 ({shards / '00000.tar'} (+1 shards)): no 'txt' in this record"]


def test_a_missing_shard_is_one_line(tmp_path):
    source = ImageCaptionSource(shards=str(tmp_path / "{00000..00003}.tar"))
    with pytest.raises(DataFormatError, match=r"00000.tar: WebDataset shard not found \(4 of 4 missing\)"):
        load_user_image_captions(source, None, [], tmp_path / "store")


def test_each_source_builds_a_cache(tiny_bert_dir, shards, tmp_path):
    pq.write_table(pa.table({"text": ["A man plays a guitar.", "Two dogs run.", "A chef cooks."]}),
                   tmp_path / "corpus.parquet")
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["one line", "two lines"]))
    data = CacheDataConfig.from_dict({
        "text_sources": [{"path": str(tmp_path / "corpus.parquet"), "column": "text"},
                         {"dataset": "json", "data_files": str(tmp_path / "c.jsonl"), "split": "train",
                          "column": "text", "streaming": True, "name": "stream"},
                         {"shards": str(shards / "{00000..00001}.tar"), "column": "txt", "name": "wds_text"}],
        "image_sources": [{"shards": str(shards / "{00000..00001}.tar"), "name": "wds"}],
        "skip_bad": True, "image_store": str(tmp_path / "store")})
    teacher = TeacherConfig(device="cpu", batch_size=8, text_model=str(tiny_bert_dir), num_workers=0)
    cache = TeacherCache.open(ensure_cache(teacher, data, tmp_path / "cache", None, shard_rows=4, progress=False))
    ids = set(cache.text_ids.take(range(len(cache.text_ids))))
    assert {"corpus:0", "stream:1", "wds_text:00000.tar:000000000", "wds:00000.tar:000000000:0"} <= ids
    assert len(cache.image_ids) == 4  # 5 samples with an image, one of which does not decode
    skipped = {row["row_id"]: row["problem"] for row in cache.skipped_rows}
    assert {"wds:00001.tar:000010003", "wds:00001.tar:000010002", "wds:00001.tar:000010001:0"} <= set(skipped)


@pytest.mark.benchmark  # torchrun launches of the cache build, one of them killed
def test_the_rehearsal_benchmark_resumes_a_killed_build_to_an_identical_cache(tmp_path):
    """benchmarks/wds_rehearsal.py at a tiny size, run as a user runs it (no import of benchmarks/)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    report = tmp_path / "rehearsal.md"
    result = subprocess.run([sys.executable, str(root / "benchmarks" / "wds_rehearsal.py"), "--shards", "1,2",
                             "--per-shard", "300", "--work-dir", str(tmp_path / "work"), "--report", str(report)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = json.loads(report.with_suffix(".json").read_text())
    assert [row["rc"] for row in saved["rows"]] == [0, 0] and saved["killed"]["kill_code"] == -9
    assert [row["tars_read_per_rank"] for row in saved["rows"]] == [{"0": 1, "1": 0}, {"0": 1, "1": 1}]
    assert saved["killed"]["identical"] and saved["killed_reading"]["identical"]
    assert sum(saved["killed"]["rerun_tars_read"].values()) == 0  # killed after every tar was indexed
    assert "input tars read per rank" in report.read_text()

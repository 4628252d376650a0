"""Sources for users who have the papers' data: the full Wiki1M, Flickr30k images, COCO train2014."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from teacher_cache.corpora import DataFormatError
from teacher_cache.corpora import load_coco_captions, load_coco_images, load_flickr30k_images, load_wiki1m
from teacher_cache.data import CacheDataConfig, collect_rows


def test_full_wiki1m_is_preferred_and_keeps_its_last_line(tmp_path):
    (tmp_path / "wiki1m").mkdir()
    (tmp_path / "wiki1m" / "wiki1m_for_simcse.prefix.txt").write_text("a\nb\ncut")
    assert [r.text for r in load_wiki1m(tmp_path)] == ["a", "b"]
    (tmp_path / "wiki1m" / "wiki1m_for_simcse.txt").write_text("a\nb\nc")
    assert [r.text for r in load_wiki1m(tmp_path)] == ["a", "b", "c"]


def test_flickr30k_images_follow_the_multi30k_image_list(tmp_path):
    split_dir = tmp_path / "flickr30k" / "multi30k" / "task2" / "image_splits"
    split_dir.mkdir(parents=True)
    (split_dir / "train_images.txt").write_text("1000092795.jpg\n10002456.jpg\n")
    rows = load_flickr30k_images(tmp_path, "train")
    assert [r.image_id for r in rows] == ["flickr30k:1000092795", "flickr30k:10002456"]
    assert rows[1].path == tmp_path / "flickr30k" / "images" / "10002456.jpg"


def write_coco(tmp_path: Path, gz: bool) -> None:
    folder = tmp_path / "coco" / "annotations"
    folder.mkdir(parents=True)
    document = {"images": [{"id": 7, "file_name": "COCO_train2014_7.jpg"}, {"id": 9, "file_name": "COCO_train2014_9.jpg"}],
                "annotations": [{"image_id": 9, "id": 1, "caption": "a dog"}, {"image_id": 7, "id": 2, "caption": "a cat "},
                                {"image_id": 9, "id": 3, "caption": "a brown dog"}]}
    if gz:
        with gzip.open(folder / "captions_train2014.json.gz", "wt") as handle:
            json.dump(document, handle)
    else:
        (folder / "captions_train2014.json").write_text(json.dumps(document))


@pytest.mark.parametrize("gz", [False, True])
def test_coco_train2014_captions_and_images(tmp_path, gz):
    write_coco(tmp_path, gz)
    captions = load_coco_captions(tmp_path, "train2014")
    assert [(c.row_id, c.image_id, c.caption_index, c.text) for c in captions] == [
        ("coco_train2014:1", "coco:9", 0, "a dog"), ("coco_train2014:2", "coco:7", 0, "a cat"),
        ("coco_train2014:3", "coco:9", 1, "a brown dog")]
    images = load_coco_images(tmp_path, "train2014")
    assert [i.image_id for i in images] == ["coco:9", "coco:7"]
    assert images[0].path == tmp_path / "coco" / "train2014" / "COCO_train2014_9.jpg"
    assert [i.image_id for i in load_coco_images(tmp_path, "train2014", limit=1)] == ["coco:9"]


def test_missing_coco_train2014_names_the_file(tmp_path):
    with pytest.raises(DataFormatError, match="captions_train2014.json"):
        load_coco_captions(tmp_path, "train2014")


def test_collect_rows_reports_missing_flickr_images(tmp_path):
    split_dir = tmp_path / "flickr30k" / "multi30k" / "task2" / "image_splits"
    split_dir.mkdir(parents=True)
    (split_dir / "train_images.txt").write_text("1.jpg\n")
    rows = collect_rows(CacheDataConfig(text_sources=(), image_sources=("flickr30k_train",)), tmp_path)
    assert [i.path.name for i in rows.images] == ["1.jpg"]

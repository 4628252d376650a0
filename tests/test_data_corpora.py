"""Counts and ids of the training corpora on the shared data, and errors on small broken copies."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from teacher_cache.corpora import (
    BadRow,
    DataFormatError,
    resolve_data_dir,
    load_coco2017_mini,
    load_coco_val2017_captions,
    load_flickr30k_captions,
    load_flickr30k_images,
    load_wiki1m,
)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return resolve_data_dir()


def test_wiki1m_drops_the_cut_last_line(data_dir):
    rows = load_wiki1m(data_dir)
    assert len(rows) == 11_914
    assert rows[0].row_id == "wiki1m:0" and rows[0].text == "YMCA in South Australia"
    assert rows[-1].row_id == "wiki1m:11913"
    assert [row.row_id for row in load_wiki1m(data_dir, limit=3)] == ["wiki1m:0", "wiki1m:1", "wiki1m:2"]


@pytest.mark.parametrize("split, count", [("train", 145_000), ("val", 5_070), ("test_2016", 5_000)])
def test_flickr30k_split_counts(data_dir, split, count):
    rows = load_flickr30k_captions(data_dir, split)
    assert len(rows) == count
    assert len({row.row_id for row in rows}) == count
    assert len({row.image_id for row in rows}) == count // 5


def test_flickr30k_ids_and_unescaping(data_dir):
    rows = load_flickr30k_captions(data_dir, "train", limit=300)
    first = rows[0]
    assert (first.row_id, first.image_id, first.caption_index) == ("flickr30k:train:0:1", "flickr30k:1000092795", 0)
    assert [row.caption_index for row in rows[:5]] == [0, 1, 2, 3, 4]
    assert rows[5].row_id == "flickr30k:train:1:1"
    assert not any("&amp;" in row.text for row in rows)
    assert any(" & " in row.text for row in rows)  # line 295 of train.1 writes "&amp;"


def test_coco_val2017_counts(data_dir):
    rows = load_coco_val2017_captions(data_dir)
    assert len(rows) == 25_014
    assert len({row.image_id for row in rows}) == 5_000
    assert rows[0].row_id == "coco_val2017:38" and rows[0].image_id == "coco:179765"


def test_coco2017_mini_shares_the_coco_namespace(data_dir):
    images, captions = load_coco2017_mini(data_dir)
    assert len(images) == 397 and len(captions) == 397 * 5
    assert all(image.path.is_file() for image in images)
    assert images[0].image_id == "coco:790" and captions[0].row_id == "coco2017_mini:790:0"
    assert {c.image_id for c in captions} == {i.image_id for i in images}
    val_images = {row.image_id for row in load_coco_val2017_captions(data_dir)}
    assert val_images & {image.image_id for image in images}  # the val2017 photos are the same ids


# --- broken copies --------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataFormatError, match="wiki1m_for_simcse.prefix.txt: file not found"):
        load_wiki1m(tmp_path)


def test_empty_sentence_names_file_and_line(tmp_path):
    _write(tmp_path / "wiki1m/wiki1m_for_simcse.prefix.txt", b"one\n  \nthree\ncut")
    with pytest.raises(DataFormatError, match=r"prefix.txt:2: empty .* wiki1m:1"):
        load_wiki1m(tmp_path)
    problems: list[BadRow] = []
    rows = load_wiki1m(tmp_path, problems=problems)
    assert [row.row_id for row in rows] == ["wiki1m:0", "wiki1m:2"]
    assert [(p.row_id, p.line) for p in problems] == [("wiki1m:1", 2)]


def test_invalid_utf8_is_a_format_error(tmp_path):
    _write(tmp_path / "wiki1m/wiki1m_for_simcse.prefix.txt", b"ok\n\xff\xfe\n")
    with pytest.raises(DataFormatError, match=r":2: not valid UTF-8"):
        load_wiki1m(tmp_path)


def _flickr_copy(root: Path, captions: list[bytes], images: bytes = b"a.jpg\nb.jpg\n") -> None:
    _write(root / "flickr30k/multi30k/task2/image_splits/val_images.txt", images)
    for k in range(1, 6):
        _write(root / f"flickr30k/multi30k/task2/raw/val.{k}.en.gz", gzip.compress(captions[k - 1]))


def test_flickr_caption_file_shorter_than_image_list(tmp_path):
    _flickr_copy(tmp_path, [b"x\ny\n"] * 4 + [b"only one\n"])
    with pytest.raises(DataFormatError, match=r"val.5.en.gz:2: ends after 1 lines"):
        load_flickr30k_captions(tmp_path, "val")


def test_flickr_caption_file_longer_than_image_list(tmp_path):
    """One inserted line would shift every later caption onto the wrong image: refused, even under a limit."""
    _flickr_copy(tmp_path, [b"x\ny\n"] * 3 + [b"x\ninserted\ny\n"] + [b"x\ny\n"])
    for limit in (None, 1):
        with pytest.raises(DataFormatError, match=r"val.4.en.gz:3: has 3 lines, .*val_images.txt has 2: "
                                                  r"the first surplus line is 3 \('y'\)"):
            load_flickr30k_captions(tmp_path, "val", limit=limit)


def test_file_names_in_data_files_stay_inside_their_folder(tmp_path):
    escaping = json.dumps({"image_id": 1, "image": "../../../secret.jpg", "captions": ["a cat"]})
    _write(tmp_path / "images/coco2017_mini/captions.jsonl", f"{escaping}\n".encode())
    with pytest.raises(DataFormatError, match=r"captions.jsonl:1: file name '../../../secret.jpg' points outside"):
        load_coco2017_mini(tmp_path)
    absolute = json.dumps({"image_id": 1, "image": "/etc/passwd", "captions": ["a cat"]})
    _write(tmp_path / "images/coco2017_mini/captions.jsonl", f"{absolute}\n".encode())
    with pytest.raises(DataFormatError, match=r"'/etc/passwd' points outside"):
        load_coco2017_mini(tmp_path)
    inside = json.dumps({"image_id": 1, "image": "images/../images/1.jpg", "captions": ["a cat"]})
    _write(tmp_path / "images/coco2017_mini/captions.jsonl", f"{inside}\n".encode())
    images, _ = load_coco2017_mini(tmp_path)
    assert images[0].path == tmp_path / "images/coco2017_mini/images/../images/1.jpg"
    _flickr_copy(tmp_path, [b"x\ny\n"] * 5, images=b"a.jpg\n../../b.jpg\n")
    with pytest.raises(DataFormatError, match=r"val_images.txt:2: file name '../../b.jpg' points outside"):
        load_flickr30k_images(tmp_path, "val")


def test_flickr_empty_caption_names_file_and_line(tmp_path):
    _flickr_copy(tmp_path, [b"x\ny\n"] * 2 + [b"x\n\n"] + [b"x\ny\n"] * 2)
    with pytest.raises(DataFormatError, match=r"val.3.en.gz:2: empty .* flickr30k:val:1:3"):
        load_flickr30k_captions(tmp_path, "val")


def test_corrupt_gzip_is_a_format_error(tmp_path):
    _flickr_copy(tmp_path, [b"x\ny\n"] * 5)
    _write(tmp_path / "flickr30k/multi30k/task2/raw/val.2.en.gz", b"\x1f\x8b\x08garbage")
    with pytest.raises(DataFormatError, match=r"val.2.en.gz:1: unreadable gzip"):
        load_flickr30k_captions(tmp_path, "val")


def test_malformed_jsonl_line_names_the_line(tmp_path):
    good = json.dumps({"image_id": 1, "image": "images/1.jpg", "captions": ["a cat"]})
    _write(tmp_path / "images/coco2017_mini/captions.jsonl", f"{good}\n{{not json\n".encode())
    with pytest.raises(DataFormatError, match=r"captions.jsonl:2: invalid JSON"):
        load_coco2017_mini(tmp_path)
    missing_key = json.dumps({"image_id": 1, "captions": ["a cat"]})
    _write(tmp_path / "images/coco2017_mini/captions.jsonl", f"{missing_key}\n".encode())
    with pytest.raises(DataFormatError, match=r"captions.jsonl:1: expected an int 'image_id'"):
        load_coco2017_mini(tmp_path)


def test_coco_annotation_without_caption(tmp_path):
    document = {"annotations": [{"image_id": 1, "id": 7, "caption": "ok"}, {"image_id": 1, "id": 8}]}
    _write(tmp_path / "coco/annotations/captions_val2017.json.gz", gzip.compress(json.dumps(document).encode()))
    with pytest.raises(DataFormatError, match=r"annotation #1 lacks"):
        load_coco_val2017_captions(tmp_path)

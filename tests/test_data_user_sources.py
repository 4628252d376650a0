"""Own data sources: every file form, datasets, ids, bad rows, config checks and the eval data dir."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from teacher_cache import (
    CacheDataConfig,
    DataFormatError,
    collect_rows,
    data_dir_for,
    dataset_fingerprint,
)
from teacher_cache.corpora.user import (
    ImageCaptionSource,
    TextSource,
    load_user_image_captions,
    load_user_texts,
)


def texts_of(source: TextSource, limit: int | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    problems = []
    rows = load_user_texts(source, limit, problems)
    return [(row.row_id, row.text) for row in rows], [problem.describe() for problem in problems]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- text files ----------------------------------------------------------------------------------


def test_text_file_ids_are_line_numbers_and_blank_lines_are_bad_rows(tmp_path):
    path = write(tmp_path / "mine.txt", "first one\r\n\n  third  \n")
    rows, problems = texts_of(TextSource(path=str(path)))
    assert rows == [("mine:0", "first one"), ("mine:2", "third")]
    assert problems == [f"mine:1 ({path}:2): empty text"]
    assert texts_of(TextSource(path=str(path)), limit=1)[0] == [("mine:0", "first one")]


def test_csv_tsv_and_jsonl_read_the_named_column(tmp_path):
    csv_file = write(tmp_path / "a.csv", 'id,sentence\n1,"hello, world"\n2,"say ""hi"""\n')
    tsv_file = write(tmp_path / "b.tsv", 'sentence\tid\nhe said "no\t1\n')
    jsonl_file = write(tmp_path / "c.jsonl", '{"text": "one"}\n\n{"text": " two "}\n')
    assert texts_of(TextSource(path=str(csv_file), column="sentence"))[0] == [("a:0", "hello, world"),
                                                                              ("a:1", 'say "hi"')]
    assert texts_of(TextSource(path=str(tsv_file), column="sentence"))[0] == [("b:0", 'he said "no')]
    assert texts_of(TextSource(path=str(jsonl_file), column="text", name="j"))[0] == [("j:0", "one"),
                                                                                     ("j:1", "two")]


@pytest.mark.parametrize("name, content, message", [
    ("a.csv", "id,text\n1,x\n", r"a\.csv:1: no column 'sentence' in the header \['id', 'text'\]"),
    ("b.csv", "id,sentence\n1,x\n2\n", r"b\.csv:3: too few fields: no value for .sentence."),
    ("c.jsonl", '{"sentence": "ok"}\n{"sentence": 3}\n', r"c\.jsonl:2: column 'sentence' holds int, not text"),
    ("d.jsonl", '{"sentence": "ok"}\n{oops\n', r"d\.jsonl:2: invalid JSON"),
    ("e.jsonl", '{"text": "ok"}\n', r"e\.jsonl:1: no key 'sentence' \(keys: \['text'\]\)"),
])
def test_file_mistakes_name_the_file_and_line(tmp_path, name, content, message):
    path = write(tmp_path / name, content)
    with pytest.raises(DataFormatError, match=message):
        texts_of(TextSource(path=str(path), column="sentence"))


def test_bad_bytes_and_missing_files_name_the_file(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"fine\nnot \xff utf-8\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:2: cannot decode as utf-8"):
        texts_of(TextSource(path=str(tmp_path / "bad.txt")))
    with pytest.raises(DataFormatError, match=r"gone\.csv: file not found \(key 'path'"):
        texts_of(TextSource(path=str(tmp_path / "gone.csv"), column="x"))


# --- image folders with captions -----------------------------------------------------------------


def make_photos(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (16, 12), (40 * i, 90, 200)).save(folder / name)
    return folder


def test_caption_rows_of_one_image_are_grouped_and_paired(tmp_path):
    photos = make_photos(tmp_path / "photos", ["a.jpg", "b.jpg"])
    captions = write(tmp_path / "caps.csv", "image,caption\na.jpg,a cat\nb.jpg,a dog\na.jpg,a small cat\nc.jpg,gone\n")
    problems = []
    source = ImageCaptionSource(images=str(photos), captions=str(captions))
    images, texts = load_user_image_captions(source, None, problems, tmp_path / "store")
    assert [(image.image_id, image.path) for image in images] == [("photos:a.jpg", photos / "a.jpg"),
                                                                  ("photos:b.jpg", photos / "b.jpg")]
    assert [(row.row_id, row.text, row.image_id) for row in texts] == [
        ("photos:a.jpg:0", "a cat", "photos:a.jpg"), ("photos:a.jpg:1", "a small cat", "photos:a.jpg"),
        ("photos:b.jpg:0", "a dog", "photos:b.jpg")]
    assert [problem.describe() for problem in problems] == [
        f"photos:c.jpg ({captions}:5): image file {photos / 'c.jpg'} not found"]
    assert len(load_user_image_captions(source, 1, [], tmp_path / "store")[0]) == 1


def test_caption_file_paths_stay_inside_the_image_folder_unless_allowed(tmp_path):
    photos = make_photos(tmp_path / "photos", ["a.jpg"])
    outside = make_photos(tmp_path / "elsewhere", ["x.jpg"]) / "x.jpg"
    for name, line in (("../elsewhere/x.jpg", 3), (str(outside), 3)):
        captions = write(tmp_path / "caps.csv", f"image,caption\na.jpg,a cat\n{name},a secret\n")
        source = ImageCaptionSource(images=str(photos), captions=str(captions))
        with pytest.raises(DataFormatError, match=rf"^{captions}:{line}: image path '{name}' points outside the image "
                                                  rf"folder {photos}; use a path relative to it, or set "
                                                  r"allow_outside_paths: true on this source$"):
            load_user_image_captions(source, None, [], tmp_path / "store")
        allowed = ImageCaptionSource(images=str(photos), captions=str(captions), allow_outside_paths=True)
        images, _ = load_user_image_captions(allowed, None, [], tmp_path / "store")
        assert [image.path.resolve() for image in images] == [photos / "a.jpg", outside]
    (photos / "sub").mkdir()
    inside = write(tmp_path / "caps.csv", "image,caption\nsub/../a.jpg,a cat\n")  # climbs, but stays inside
    images, _ = load_user_image_captions(ImageCaptionSource(images=str(photos), captions=str(inside)), None, [],
                                         tmp_path / "store")
    assert [image.path.resolve() for image in images] == [photos / "a.jpg"]


def test_jsonl_captions_resolve_images_beside_the_file_and_accept_lists(tmp_path):
    make_photos(tmp_path / "album", ["x.png"])
    captions = write(tmp_path / "album" / "captions.jsonl", json.dumps({"image": "x.png", "caption": ["one", ""]}))
    problems = []
    images, texts = load_user_image_captions(ImageCaptionSource(captions=str(captions)), None, problems, tmp_path)
    assert [image.image_id for image in images] == ["captions:x.png"]
    assert [row.row_id for row in texts] == ["captions:x.png:0"]
    assert [problem.describe() for problem in problems] == [f"captions:x.png:1 ({captions}:1): empty caption"]


# --- datasets ------------------------------------------------------------------------------------


def test_a_datasets_text_column_and_a_dataset_dict_split(tmp_path):
    folder = tmp_path / "my_set"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["alpha", "beta"], "n": [1, 2]})}
                         ).save_to_disk(str(folder))
    assert texts_of(TextSource(dataset=str(folder), split="train", column="text"))[0] == [
        ("my_set:0", "alpha"), ("my_set:1", "beta")]
    with pytest.raises(DataFormatError, match=r"set 'split' to one of \['train'\]"):
        texts_of(TextSource(dataset=str(folder), column="text"))
    with pytest.raises(DataFormatError, match=r"no column 'sentence' \(columns: \['text', 'n'\]\); set 'column'"):
        texts_of(TextSource(dataset=str(folder), split="train", column="sentence"))


def test_in_memory_images_are_written_once_under_their_sha256(tmp_path):
    pictures = [Image.new("RGB", (8, 8), (200, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 200))]
    dataset = datasets.Dataset.from_dict({"image": pictures, "caption": [["red"], ["blue", "navy"]]})
    dataset.cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "pics"))
    source = ImageCaptionSource(dataset=str(tmp_path / "pics"))
    images, texts = load_user_image_captions(source, None, [], tmp_path / "store")
    assert [image.image_id for image in images] == ["pics:0", "pics:1"]
    assert [(row.row_id, row.text, row.image_id) for row in texts] == [
        ("pics:0:0", "red", "pics:0"), ("pics:1:0", "blue", "pics:1"), ("pics:1:1", "navy", "pics:1")]
    for image in images:
        assert image.path.parent == tmp_path / "store"
        assert image.path.name == hashlib.sha256(image.path.read_bytes()).hexdigest()
    again, _ = load_user_image_captions(source, None, [], tmp_path / "store")
    assert [image.path for image in again] == [image.path for image in images]


# --- the config ----------------------------------------------------------------------------------


def test_listing_order_does_not_change_the_rows(tmp_path):
    one, two = write(tmp_path / "one.txt", "a\nb\n"), write(tmp_path / "two.txt", "c\n")
    forward = CacheDataConfig(text_sources=[{"path": str(one)}, {"path": str(two)}], image_sources=[])
    backward = CacheDataConfig(text_sources=[{"path": str(two)}, {"path": str(one)}], image_sources=[])
    assert forward == backward
    rows = collect_rows(forward, data_dir_for(forward, None))
    assert [row.row_id for row in rows.texts] == ["one:0", "one:1", "two:0"]
    assert CacheDataConfig.from_dict(forward.to_dict()) == forward
    assert data_dir_for(forward, None) is None


def test_an_edited_file_changes_the_fingerprint(tmp_path):
    path = write(tmp_path / "one.txt", "a\nb\n")
    cfg = CacheDataConfig(text_sources=[{"path": str(path)}], image_sources=[])
    before = dataset_fingerprint(collect_rows(cfg, None))
    assert dataset_fingerprint(collect_rows(cfg, None)) == before
    write(path, "a\nB\n")
    assert dataset_fingerprint(collect_rows(cfg, None)) != before


@pytest.mark.parametrize("values, message", [
    ({"text_sources": ["mine.txt"]}, r"unknown text source 'mine\.txt'.*write a mapping, e\.g\. \{path: my\.txt\}"),
    ({"text_sources": [{"path": "a/x.txt"}, {"path": "b/x.txt"}]}, r"source name\(s\) \['x'\] used twice"),
    ({"text_sources": [{"path": "wiki1m.txt"}]}, r"source name\(s\) \['wiki1m'\] used twice \(or a built-in"),
    ({"text_sources": [{"path": "x.csv"}]}, r"x\.csv: set 'column'"),
    ({"text_sources": [{"path": "x.docx"}]}, r"unsupported file type '\.docx'"),
    ({"text_sources": [{"path": "x.txt", "dataset": "y"}]}, r"exactly one of 'path', 'dataset', 'shards'"),
    ({"image_sources": [{"images": "photos"}]}, r"exactly one of 'captions', 'dataset', 'shards'"),
    ({"text_sources": [{"path": "x.txt"}], "limits": {"y": 2}}, r"limits name unknown sources \['y'\]"),
])
def test_config_mistakes_say_what_to_do(values, message):
    with pytest.raises(ValueError, match=message):
        CacheDataConfig.from_dict(values)


# --- the evaluation data directory ---------------------------------------------------------------


def test_stsb_dev_comes_from_eval_data_dir(tmp_path, tiny_senteval_dir):
    from distill.config import ConfigError, load_config
    from eval.sts import stsb_dev_evaluator

    cfg = load_config(None, [f"data_dir={tmp_path}", f"eval_data_dir={tiny_senteval_dir}"])
    assert len(stsb_dev_evaluator(cfg).pairs) == 12  # the tiny layout's STS-B dev, not the training folder's
    cfg = load_config(None, [f"eval_data_dir={tmp_path / 'nowhere'}"])
    with pytest.raises(DataFormatError, match=r"nowhere: data directory not found \(from eval_data_dir"):
        stsb_dev_evaluator(cfg)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) data\.text_sources\[0\]\.colum \(did you mean data\.text_sources\[0\]\.column\?\);"):
        load_config(None, ["data.text_sources=[{path: a.csv, colum: x}]"])

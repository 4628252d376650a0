"""Training corpora: Wiki1M sentences and image-caption sets (Flickr30k, COCO).

Every loader returns plain records (:mod:`teacher_cache.corpora.records`) whose ids are stable across runs,
because teacher caches and training batches refer to rows by id only:

==================  ==========================================  ==============================
corpus              row id                                      image id
==================  ==========================================  ==============================
Wiki1M              ``wiki1m:<line, 0-based>``                  -
Flickr30k (M30k)    ``flickr30k:<split>:<line, 0-based>:<k>``   ``flickr30k:<file name stem>``
COCO val2017        ``coco_val2017:<annotation id>``            ``coco:<COCO image id>``
COCO train2014      ``coco_train2014:<annotation id>``          ``coco:<COCO image id>``
coco2017_mini       ``coco2017_mini:<COCO image id>:<index>``   ``coco:<COCO image id>``
==================  ==========================================  ==============================

``k`` in a Flickr30k id is the caption number of the source file ``<split>.<k>.en.gz`` (1..5), so an
id points straight at a file and a line; ``caption_index`` is ``k - 1``. COCO val2017 and
coco2017_mini share the ``coco:`` image namespace on purpose: the same photo has the same id.

Structural problems (missing file, unparsable line, files that disagree in length) raise
:class:`DataFormatError` naming the file and the 1-based line. Row-level problems (an empty
caption) raise too, unless the caller passes a ``problems`` list: then each bad row is appended as
a :class:`BadRow` and left out, so that a cache builder can report all of them at once.
"""
from __future__ import annotations

import gzip
import html
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

from kdmcse_base.files import inside
from .records import BadRow, CaptionRow, DataFormatError, ImageRow, TextRow

__all__ = [
    "FLICKR30K_SPLITS",
    "load_coco2017_mini",
    "load_coco_captions",
    "load_coco_images",
    "load_coco_val2017_captions",
    "load_flickr30k_captions",
    "load_flickr30k_images",
    "load_wiki1m",
]

WIKI1M_FULL_FILE = Path("wiki1m/wiki1m_for_simcse.txt")  # SimCSE's 1M sentences, for users who have it
WIKI1M_FILE = Path("wiki1m/wiki1m_for_simcse.prefix.txt")
FLICKR30K_IMAGE_DIR = Path("flickr30k/images")  # Flickr30k's flickr30k-images/, for users who have it
COCO_ANNOTATION_DIR = Path("coco/annotations")
MULTI30K_DIR = Path("flickr30k/multi30k/task2")
COCO2017_MINI_DIR = Path("images/coco2017_mini")
FLICKR30K_SPLITS = ("train", "val", "test_2016")
CAPTIONS_PER_FLICKR_IMAGE = 5


def load_wiki1m(
    data_dir: Path | str, limit: int | None = None, problems: list[BadRow] | None = None
) -> list[TextRow]:
    """Wiki1M sentences, one per line, in file order; ``limit`` keeps the first sentences.

    The full ``wiki1m_for_simcse.txt`` is used when it is there. Otherwise the shipped prefix, a byte
    prefix of the real file whose last line is cut mid-sentence with no newline: such a line is
    dropped rather than trained on.
    """
    full = Path(data_dir) / WIKI1M_FULL_FILE
    path = full if full.is_file() else _existing(Path(data_dir) / WIKI1M_FILE)
    rows: list[TextRow] = []
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle):
            if limit is not None and line_no >= limit:
                break
            if not raw.endswith(b"\n") and path != full:
                break  # the cut final line of the prefix
            text = _decode(raw, path, line_no + 1).strip()
            row_id = f"wiki1m:{line_no}"
            if _is_blank(text, row_id, path, line_no + 1, problems):
                continue
            rows.append(TextRow(row_id=row_id, text=text, source="wiki1m"))
    return rows


def load_flickr30k_captions(
    data_dir: Path | str,
    split: str = "train",
    limit: int | None = None,
    problems: list[BadRow] | None = None,
) -> list[CaptionRow]:
    """The 5 English Flickr30k captions per image of a Multi30k task-2 split, image by image.

    Line ``i`` of ``<split>.<k>.en.gz`` is caption ``k`` of the image on line ``i`` of
    ``<split>_images.txt``; the raw text writes ``&`` as ``&amp;``, so captions are HTML-unescaped.
    ``limit`` keeps the first images (with all their captions).
    """
    if split not in FLICKR30K_SPLITS:
        raise ValueError(f"unknown Flickr30k split {split!r}; expected one of {FLICKR30K_SPLITS}")
    root = Path(data_dir) / MULTI30K_DIR
    image_list = _existing(root / "image_splits" / f"{split}_images.txt")
    images = _read_image_list(image_list, None)  # all of it: the caption files must match its full length
    captions_by_k = {
        k: _read_gzip_lines(_existing(root / "raw" / f"{split}.{k}.en.gz"), image_list, len(images))
        for k in range(1, CAPTIONS_PER_FLICKR_IMAGE + 1)
    }
    images = images[:limit]
    rows: list[CaptionRow] = []
    for line_no, file_name in enumerate(images):
        image_id = f"flickr30k:{Path(file_name).stem}"
        for k, lines in captions_by_k.items():
            text = html.unescape(lines[line_no]).strip()
            row_id = f"flickr30k:{split}:{line_no}:{k}"
            path = root / "raw" / f"{split}.{k}.en.gz"
            if _is_blank(text, row_id, path, line_no + 1, problems):
                continue
            rows.append(CaptionRow(row_id, image_id, k - 1, text, source="flickr30k"))
    return rows


def load_flickr30k_images(data_dir: Path | str, split: str = "train", limit: int | None = None) -> list[ImageRow]:
    """The photos of a Multi30k split, from ``flickr30k/images/<file name>`` (Flickr30k's own folder).

    Files are not opened here: a cache builder checks every one and reports all bad ones at once.
    """
    if split not in FLICKR30K_SPLITS:
        raise ValueError(f"unknown Flickr30k split {split!r}; expected one of {FLICKR30K_SPLITS}")
    image_list = _existing(Path(data_dir) / MULTI30K_DIR / "image_splits" / f"{split}_images.txt")
    names = _read_image_list(image_list, limit)
    folder = Path(data_dir) / FLICKR30K_IMAGE_DIR
    return [ImageRow(f"flickr30k:{Path(name).stem}", _inside(folder, name, image_list, line), source=f"flickr30k_{split}")
            for line, name in enumerate(names, start=1)]


def load_coco_val2017_captions(
    data_dir: Path | str, limit: int | None = None, problems: list[BadRow] | None = None
) -> list[CaptionRow]:
    """The official COCO 2017 val captions (shipped gzipped), see :func:`load_coco_captions`."""
    return load_coco_captions(data_dir, "val2017", limit, problems)


def load_coco_captions(
    data_dir: Path | str, split: str = "train2014", limit: int | None = None, problems: list[BadRow] | None = None
) -> list[CaptionRow]:
    """COCO ``captions_<split>.json`` (or ``.json.gz``), in annotation order; ``limit`` keeps the first images.

    ``caption_index`` counts an image's captions in file order (some images have 6 or 7).
    """
    path = _coco_annotation_file(data_dir, split)
    annotations = _read_coco_document(path, "annotations")
    kept_images: set[int] = set()
    per_image_count: dict[int, int] = {}
    rows: list[CaptionRow] = []
    for position, annotation in enumerate(annotations):
        image, annotation_id, text = _coco_annotation_fields(annotation, path, position)
        if image not in kept_images:
            if limit is not None and len(kept_images) >= limit:
                continue
            kept_images.add(image)
        caption_index = per_image_count.get(image, 0)
        per_image_count[image] = caption_index + 1
        row_id = f"coco_{split}:{annotation_id}"
        if _is_blank(text, row_id, path, None, problems):
            continue
        rows.append(CaptionRow(row_id, f"coco:{image}", caption_index, text, source=f"coco_{split}"))
    return rows


def load_coco_images(data_dir: Path | str, split: str = "train2014", limit: int | None = None) -> list[ImageRow]:
    """The photos of a COCO split that have captions, from ``coco/<split>/<file_name>``, in caption order."""
    path = _coco_annotation_file(data_dir, split)
    files = {entry.get("id"): entry.get("file_name") for entry in _read_coco_document(path, "images")
             if isinstance(entry, dict)}
    ordered = dict.fromkeys(_coco_annotation_fields(a, path, i)[0]
                            for i, a in enumerate(_read_coco_document(path, "annotations")))
    rows = []
    for image in list(ordered)[:limit]:
        if not isinstance(files.get(image), str):
            raise DataFormatError(path, None, f"image {image} has captions but no file_name in 'images'")
        located = _inside(Path(data_dir) / "coco" / split, files[image], path, None)
        rows.append(ImageRow(f"coco:{image}", located, source=f"coco_{split}"))
    return rows


def load_coco2017_mini(
    data_dir: Path | str, limit: int | None = None, problems: list[BadRow] | None = None
) -> tuple[list[ImageRow], list[CaptionRow]]:
    """The 397 real COCO-2017 photos of ``images/coco2017_mini`` and their 5 human captions each.

    Image files are not opened here (a cache builder checks them all and reports every bad one);
    ``limit`` keeps the first images of ``captions.jsonl``.
    """
    root = Path(data_dir) / COCO2017_MINI_DIR
    path = _existing(root / "captions.jsonl")
    images: list[ImageRow] = []
    captions: list[CaptionRow] = []
    for line_no, record in _read_jsonl(path):
        if limit is not None and len(images) >= limit:
            break
        coco_id, image_file, texts = _mini_record_fields(record, path, line_no)
        image_id = f"coco:{coco_id}"
        images.append(ImageRow(image_id=image_id, path=_inside(root, image_file, path, line_no), source="coco2017_mini"))
        for index, raw_text in enumerate(texts):
            text = raw_text.strip()
            row_id = f"coco2017_mini:{coco_id}:{index}"
            if _is_blank(text, row_id, path, line_no, problems):
                continue
            captions.append(CaptionRow(row_id, image_id, index, text, source="coco2017_mini"))
    return images, captions


# --- file-format helpers -----------------------------------------------------------------------


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise DataFormatError(path, None, "file not found (is --data-dir / $DISTILL_DATA_DIR right?)")
    return path


def _inside(folder: Path, name: str, listed_in: Path, line: int | None) -> Path:
    """``folder / name`` for a file name read from a data file, refused when it leads out of ``folder``."""
    located = inside(folder, name)
    if located is None:
        raise DataFormatError(listed_in, line, f"file name {name!r} points outside {folder}; use a path relative to it")
    return located


def _decode(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataFormatError(path, line, f"not valid UTF-8 ({err.reason})") from err


def _is_blank(text: str, row_id: str, path: Path, line: int | None, problems: list[BadRow] | None) -> bool:
    """True when the row must be left out; raises instead when the caller collects no problems."""
    if text:
        return False
    if problems is None:
        raise DataFormatError(path, line, f"empty caption/sentence (row {row_id})")
    problems.append(BadRow(row_id=row_id, path=path, line=line, problem="empty text"))
    return True


def _read_image_list(path: Path, limit: int | None) -> list[str]:
    names: list[str] = []
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if limit is not None and len(names) >= limit:
                break
            name = _decode(raw, path, line_no).strip()
            if not name:
                raise DataFormatError(path, line_no, "empty image file name")
            names.append(name)
    return names


def _read_gzip_lines(path: Path, image_list: Path, expected: int) -> list[str]:
    """Every line of a caption file, which must have exactly one line per image of ``image_list``:
    a missing or an extra line would pair every later caption with the wrong image."""
    lines: list[str] = []
    try:
        with gzip.open(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                lines.append(_decode(raw, path, line_no).rstrip("\r\n"))
    except (OSError, EOFError, zlib.error) as err:
        raise DataFormatError(path, len(lines) + 1, f"unreadable gzip data ({err})") from err
    if len(lines) < expected:
        raise DataFormatError(path, len(lines) + 1, f"ends after {len(lines)} lines; {image_list} has {expected}")
    if len(lines) > expected:
        raise DataFormatError(path, expected + 1, f"has {len(lines)} lines, {image_list} has {expected}: the first "
                              f"surplus line is {expected + 1} ({lines[expected][:60]!r}); remove the extra lines")
    return lines


def _coco_annotation_file(data_dir: Path | str, split: str) -> Path:
    folder = Path(data_dir) / COCO_ANNOTATION_DIR
    for name in (f"captions_{split}.json.gz", f"captions_{split}.json"):
        if (folder / name).is_file():
            return folder / name
    return _existing(folder / f"captions_{split}.json")


def _read_coco_document(path: Path, key: str) -> list:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            document = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, f"invalid JSON ({err.msg})") from err
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        raise DataFormatError(path, None, f"unreadable gzip/JSON data ({err})") from err
    entries = document.get(key) if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise DataFormatError(path, None, f"no '{key}' list (not a COCO captions file?)")
    return entries


def _coco_annotation_fields(annotation: object, path: Path, position: int) -> tuple[int, int, str]:
    fields = annotation if isinstance(annotation, dict) else {}
    image, annotation_id, text = fields.get("image_id"), fields.get("id"), fields.get("caption")
    if not (isinstance(image, int) and isinstance(annotation_id, int) and isinstance(text, str)):
        raise DataFormatError(path, None, f"annotation #{position} lacks an int image_id/id or a str caption")
    return image, annotation_id, text.strip()


def _read_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            text = _decode(raw, path, line_no).strip()
            if not text:
                raise DataFormatError(path, line_no, "empty line")
            try:
                yield line_no, json.loads(text)
            except json.JSONDecodeError as err:
                raise DataFormatError(path, line_no, f"invalid JSON ({err.msg})") from err


def _mini_record_fields(record: object, path: Path, line_no: int) -> tuple[int, str, list[str]]:
    fields = record if isinstance(record, dict) else {}
    coco_id, image_file, texts = fields.get("image_id"), fields.get("image"), fields.get("captions")
    well_formed = (
        isinstance(coco_id, int)
        and isinstance(image_file, str)
        and bool(image_file)
        and isinstance(texts, list)
        and bool(texts)
        and all(isinstance(text, str) for text in texts)
    )
    if not well_formed:
        raise DataFormatError(
            path, line_no, "expected an int 'image_id', a str 'image' and a non-empty list of str 'captions'"
        )
    return coco_id, image_file, texts

"""Your own training data: sentence files, Parquet tables, image folders with captions, WebDataset tar
shards, Hugging Face datasets (loaded whole or streamed).

A source is named (``name``, by default the file stem, the image folder's name or the dataset's
last path component) and its rows get ids built from that name, so they are stable across runs:

=================================  ====================================  =================================
source                             text row id                           image id
=================================  ====================================  =================================
text file (``.txt``)               ``<name>:<line, 0-based>``            -
CSV / TSV / JSONL / Parquet file   ``<name>:<record, 0-based>``          -
Parquet files (a glob)             ``<name>:<file name>:<record>``       -
``datasets`` text column           ``<name>:<dataset index>``            -
WebDataset shards, captions only   ``<name>:<shard file name>:<key>``    -
image folder + captions file       ``<name>:<image path>:<k>``           ``<name>:<image path>``
``datasets`` image column          ``<name>:<dataset index>:<k>``        ``<name>:<dataset index>``
WebDataset shards                  ``<name>:<shard>:<key>:<k>``          ``<name>:<shard file name>:<key>``
=================================  ====================================  =================================

WebDataset shards (img2dataset's layout: ``key.jpg`` beside ``key.txt`` or ``key.json`` in each tar) are
read one whole tar at a time into a small index beside the image store (:mod:`.webdataset`), local paths
and any fsspec URL; ``shards`` is a list or a brace pattern (``data/{00000..00099}.tar``). A Parquet file is read a
record batch at a time with pyarrow, so a text corpus larger than memory streams; ``streaming: true`` does
the same for a ``datasets`` source (a hub dataset, or a builder such as ``json`` / ``parquet`` with
``data_files``).

``k`` counts an image's captions in file order. Rows of a captions file that name the same image
are one image with several captions. Mistakes in a file (a missing column, a line that is not
JSON, a value that is not text) raise :class:`DataFormatError` naming the file and its 1-based
line; an empty sentence or a missing image file is a :class:`BadRow` (reported with all others
before anything is encoded; ``--skip-bad`` leaves them out).

Images of a ``datasets`` image column that have no file on disk are written once to
``image_store/<sha256 of the bytes><suffix>``: the teacher cache reads images from files, and a
name given by the content makes the copy idempotent and shared by every run.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

from kdmcse_base.files import inside
from .images import stored_image
from .records import BadRow, DataFormatError, ImageCheck, ImageRow, TextRow, read_data_lines
from .webdataset import ShardFields, ShardSample, checked_shards, shard_samples

__all__ = ["ImageCaptionSource", "TextSource", "load_user_image_captions", "load_user_texts"]

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
TEXT_SUFFIXES = (".txt", *TABLE_SUFFIXES, ".parquet")
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class TextSource:
    """Your own sentences: ``path`` (a ``.txt`` file, one sentence per line, or a ``.csv`` / ``.tsv`` /
    ``.jsonl`` / ``.parquet`` file with a ``column``; a glob such as ``corpus/*.parquet`` reads many Parquet
    files in name order), ``dataset`` (a ``save_to_disk`` folder, a hub name, or a builder such as ``json``
    with ``data_files``; with ``split`` and ``column``; ``streaming: true`` reads it row by row), or
    ``shards`` (WebDataset tar shards, a list or a brace pattern, whose ``column`` names the caption
    file's extension, e.g. ``txt``: the captions without their images). ``name`` prefixes the row ids
    (default: the file stem)."""

    path: str | None = None
    dataset: str | None = None
    shards: str | list[str] | None = None
    split: str | None = None
    column: str | None = None
    data_files: str | list[str] | None = None
    streaming: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        _one_of(self, "path", "dataset", "shards")
        if self.shards is not None:
            if self.column is None:
                raise ValueError("text source with shards: set 'column' to the caption's extension in the tar (e.g. txt)")
            _set_name(self, _shards_stem(self.shards))
            return
        if self.path is not None:
            suffix = Path(self.path).suffix.lower()
            if suffix not in TEXT_SUFFIXES:
                raise ValueError(f"text source {self.path}: unsupported file type {suffix or '(none)'!r}; "
                                 f"use one of {list(TEXT_SUFFIXES)} or a datasets dataset ({{dataset: ...}})")
            if suffix == ".txt" and self.column is not None:
                raise ValueError(f"text source {self.path}: a .txt file has one sentence per line; drop 'column'")
        if self.column is None and (self.dataset is not None or Path(self.path).suffix.lower() in TABLE_SUFFIXES):
            raise ValueError(f"text source {self.path or self.dataset}: set 'column' to the column holding the text")
        _set_name(self, Path(self.path).stem if self.path else _dataset_stem(self.dataset))

    @property
    def origin(self) -> str:
        return self.path or (_dataset_label(self.dataset, self.split) if self.dataset else _shards_label(self.shards))


@dataclass(frozen=True)
class ImageCaptionSource:
    """Your own images with captions: ``captions`` (a ``.jsonl`` / ``.csv`` / ``.tsv`` file whose
    ``image_column`` holds an image path relative to ``images`` (default: the captions file's folder)
    and whose ``caption_column`` holds a caption, or in JSONL a list of captions), or ``dataset`` (a
    ``save_to_disk`` folder or hub name with ``split``) whose ``image_column`` holds images or paths.
    Or ``shards``: WebDataset tar shards (a list or a brace pattern, local or any fsspec URL) whose
    ``image_column`` is the image's extension (default ``jpg``) and ``caption_column`` the caption's
    (``txt``, or ``json.caption`` for a field of the ``.json`` file); an image without a caption, or
    one that does not decode, is a bad row naming its shard and key.
    ``name`` prefixes the ids (default: the image folder's name, else the captions file stem).
    Image paths stay inside the image folder (no ``..`` out of it, no absolute paths) unless
    ``allow_outside_paths`` is true."""

    images: str | None = None
    captions: str | None = None
    dataset: str | None = None
    shards: str | list[str] | None = None
    split: str | None = None
    image_column: str = "image"
    caption_column: str = "caption"
    name: str | None = None
    allow_outside_paths: bool = False

    def __post_init__(self) -> None:
        _one_of(self, "captions", "dataset", "shards")
        if self.shards is not None:
            if self.image_column == "image":
                object.__setattr__(self, "image_column", "jpg")
            if self.caption_column == "caption":
                object.__setattr__(self, "caption_column", "txt")
            _set_name(self, _shards_stem(self.shards))
            return
        if self.captions is not None and Path(self.captions).suffix.lower() not in TABLE_SUFFIXES:
            raise ValueError(f"image source {self.captions}: captions must be a {'/'.join(TABLE_SUFFIXES)} file")
        default = Path(self.images).name if self.images else (
            Path(self.captions).stem if self.captions else _dataset_stem(self.dataset))
        _set_name(self, default)

    @property
    def origin(self) -> str:
        return self.captions or (_dataset_label(self.dataset, self.split) if self.dataset else _shards_label(self.shards))

    def image_folder(self) -> Path | None:
        if self.images is not None:
            return Path(self.images)
        return Path(self.captions).parent if self.captions else None


def source_from(value: Any, kind: type) -> Any:
    """A source given in a config: a mapping of the dataclass's fields, or the dataclass itself."""
    if isinstance(value, kind):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"a {kind.__name__} must be a mapping such as {{path: my.txt}}, got {value!r}")
    known = [f.name for f in fields(kind)]
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {value}; known: {known}")
    return kind(**value)


def source_dict(source: TextSource | ImageCaptionSource) -> dict[str, Any]:
    """The fields that differ from the defaults (what a user wrote, plus the name)."""
    return {f.name: getattr(source, f.name) for f in fields(source)
            if getattr(source, f.name) != f.default or f.name == "name"}


def _one_of(source: Any, *names: str) -> None:
    if sum(getattr(source, name) is not None for name in names) != 1:
        given = {f.name: getattr(source, f.name) for f in fields(source)
                 if getattr(source, f.name) not in (None, f.default)}
        choices = ", ".join(f"'{name}'" for name in names)
        raise ValueError(f"{type(source).__name__} needs exactly one of {choices}, got {given}")


def _set_name(source: Any, default: str) -> None:
    name = source.name if source.name is not None else re.sub(r"[^A-Za-z0-9_.-]+", "_", default)
    if not _NAME.match(name or ""):
        raise ValueError(f"source name {name!r} may hold only letters, digits, '_', '.', '-'; set 'name'")
    object.__setattr__(source, "name", name)


def _dataset_stem(dataset: str | None) -> str:
    return Path(str(dataset).rstrip("/")).name


def _dataset_label(dataset: str | None, split: str | None) -> str:
    return f"{dataset}[{split}]" if split else str(dataset)


def shard_list(shards: str | list[str]) -> list[str]:
    """The shard paths or URLs: a list as given, or a pattern with ``{first..last}`` ranges expanded
    (zero padding kept: ``{00000..00002}`` -> 00000, 00001, 00002)."""
    if isinstance(shards, list):
        return [str(shard) for shard in shards]
    match = _BRACES.search(shards)
    if match is None:
        return [shards]
    first, last = match.group(1), match.group(2)
    width = len(first) if first.startswith("0") else 0
    return [expanded for number in range(int(first), int(last) + 1)
            for expanded in shard_list(shards[:match.start()] + str(number).zfill(width) + shards[match.end():])]


def _shards_stem(shards: str | list[str]) -> str:
    first = shard_list(shards)[0]
    return Path(first.rstrip("/")).parent.name or Path(first).stem


def _shards_label(shards: str | list[str] | None) -> str:
    listed = shard_list(shards) if shards is not None else []
    return listed[0] if len(listed) == 1 else f"{listed[0]} (+{len(listed) - 1} shards)"


# --- text sources ----------------------------------------------------------------------------------


def load_user_texts(source: TextSource, limit: int | None, problems: list[BadRow],
                    image_store: Path | None = None) -> list[TextRow]:
    """The sentences of one source, in file (or dataset, or shard) order; ``limit`` keeps the first ones.
    ``image_store``: where the indexes of WebDataset shards are kept (``<image_store>/.shards/``; None:
    the tars are read, no index kept)."""
    rows: list[TextRow] = []
    for count, (index, line, value) in enumerate(_text_values(source, image_store)):
        if limit is not None and count >= limit:
            break
        row_id = f"{source.name}:{index}"
        if value is _MISSING:
            problems.append(BadRow(row_id, Path(source.origin), line, f"no {source.column!r} in this record"))
            continue
        text = _as_text(value, source, line, index, source.column)
        if not text:
            problems.append(BadRow(row_id, Path(source.origin), line, "empty text"))
            continue
        rows.append(TextRow(row_id=row_id, text=text, source=source.name))
    return rows


def _text_values(source: TextSource, image_store: Path | None) -> Iterator[tuple[int | str, int | None, Any]]:
    """(index or id key, 1-based line or None, raw value) of every sentence."""
    if source.shards is not None:
        for sample in _shard_samples(source, image_store):
            yield sample.key, None, _MISSING if sample.caption is None else sample.caption
        return
    if source.dataset is not None:
        dataset = _open_dataset(source.dataset, source.split, source.data_files, source.streaming)
        if source.streaming:
            yield from ((index, None, _field(row, source.column)) for index, row in enumerate(dataset))
            return
        _require_columns(dataset, source.origin, {"column": source.column})
        yield from ((index, None, value) for index, value in enumerate(dataset[source.column]))
        return
    if any(char in source.path for char in "*?["):
        yield from _parquet_glob_values(source)
        return
    path = _existing_file(Path(source.path), "path")
    if path.suffix.lower() == ".parquet":
        yield from ((index, None, value) for index, value in enumerate(_parquet_values(path, source.column)))
        return
    if path.suffix.lower() == ".txt":
        yield from ((index, index + 1, line) for index, line in enumerate(read_data_lines(path)))
        return
    for index, (line, record) in enumerate(_table_records(path, [source.column])):
        yield index, line, record[source.column]


def _as_text(value: Any, source: Any, line: int | None, index: int | str, column: str | None) -> str:
    """The stripped text; a non-text value names the line (files) or the index / key (datasets, shards)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        at = "" if line is not None else f"{'index ' if isinstance(index, int) else 'key '}{index}: "
        raise DataFormatError(source.origin, line, f"{at}column {column!r} holds {type(value).__name__}, not text")
    return value.strip()


# --- image-caption sources --------------------------------------------------------------------------


def load_user_image_captions(
    source: ImageCaptionSource, limit: int | None, problems: list[BadRow], image_store: Path
) -> tuple[list[ImageRow], list[TextRow]]:
    """Images and their captions (captions carry their image's id); ``limit`` keeps the first images.

    An image whose file is missing is a bad row, left out with its captions.
    """
    images: list[ImageRow] = []
    captions: list[TextRow] = []
    for entry in _image_entries(source, image_store):
        if limit is not None and len(images) >= limit:
            break
        image_id, path = f"{source.name}:{entry.key}", entry.path
        if path is None or not path.is_file():
            problem = f"no {source.image_column!r} image in this sample" if path is None else f"image file {path} not found"
            problems.append(BadRow(image_id, Path(source.origin), entry.line, problem))
            continue
        images.append(ImageRow(image_id=image_id, path=path, source=source.name, check=entry.check))
        for k, (text_line, text) in enumerate(entry.texts):
            row_id = f"{image_id}:{k}"
            if not text:
                problems.append(BadRow(row_id, Path(source.origin), text_line, "empty caption"))
                continue
            captions.append(TextRow(row_id=row_id, text=text, source=source.name, image_id=image_id))
    return images, captions


class Entry(NamedTuple):
    """One image of a source: its id key, line, file (None: the sample has no image), [(line, caption)],
    and what is known of the file already (a WebDataset shard's index: its sha256 and decode result)."""

    key: str
    line: int | None
    path: Path | None
    texts: list[tuple[int | None, str]]
    check: ImageCheck | None = None


def _image_entries(source: ImageCaptionSource, image_store: Path) -> Iterable[Entry]:
    """One entry per image, in order of first appearance."""
    if source.dataset is not None:
        return _dataset_image_entries(source, image_store)
    if source.shards is not None:
        return _shard_image_entries(source, image_store)
    path = _existing_file(Path(source.captions), "captions")
    folder = source.image_folder()
    if source.images is not None and not folder.is_dir():
        raise DataFormatError(folder, None, "image folder not found (key 'images')")
    columns = [source.image_column, source.caption_column]
    grouped: dict[str, Entry] = {}
    for line, record in _table_records(path, columns):
        name = _as_text(record[source.image_column], source, line, 0, source.image_column)
        if not name:
            raise DataFormatError(path, line, f"empty image path in column {source.image_column!r}")
        texts = _caption_list(record[source.caption_column], source, line, 0)
        entry = grouped.setdefault(name, Entry(name, line, _contained(folder, name, source, path, line), []))
        entry.texts.extend((line, text) for text in texts)
    return list(grouped.values())


def _caption_list(value: Any, source: ImageCaptionSource, line: int | None, index: int | str) -> list[str]:
    if isinstance(value, list) and value:
        return [_as_text(item, source, line, index, source.caption_column) for item in value]
    return [_as_text(value, source, line, index, source.caption_column)]


def _dataset_image_entries(source: ImageCaptionSource, image_store: Path) -> list[Entry]:
    """One image per dataset row: an image feature (stored files or in-memory bytes) or a path string."""
    import datasets

    dataset = _open_dataset(source.dataset, source.split)
    _require_columns(dataset, source.origin, {"image_column": source.image_column,
                                              "caption_column": source.caption_column})
    if isinstance(dataset.features[source.image_column], datasets.Image):
        dataset = dataset.cast_column(source.image_column, datasets.Image(decode=False))
    folder = source.image_folder() or (Path(source.dataset) if Path(source.dataset).is_dir() else Path.cwd())
    entries = []
    for index, (image, caption) in enumerate(zip(dataset[source.image_column], dataset[source.caption_column])):
        texts = [(None, text) for text in _caption_list(caption, source, None, index)]
        entries.append(Entry(str(index), None, _image_file(image, folder, image_store, source, index), texts))
    return entries


def _shard_image_entries(source: ImageCaptionSource, image_store: Path) -> Iterator[Entry]:
    """One image per tar key, from the shards' indexes (each tar read once, :mod:`.webdataset`): its file in
    ``image_store`` (named by content), its caption(s) beside it. A key without a caption gets an empty one
    (a bad row, named by shard and key); one without an image too."""
    for sample in _shard_samples(source, image_store):
        texts = [] if sample.caption is None else [(None, text) for text in
                                                    _caption_list(sample.caption, source, None, sample.key)]
        path = None if sample.image is None else image_store / sample.image
        yield Entry(sample.key, None, path, texts or [(None, "")], sample.image_check())


def shard_fields(source: TextSource | ImageCaptionSource) -> ShardFields:
    """What a shard source reads of each sample (its index is kept per shard and fields)."""
    if isinstance(source, TextSource):
        return ShardFields(None, str(source.column))
    return ShardFields(source.image_column, source.caption_column)


def source_shards(source: TextSource | ImageCaptionSource) -> list[str]:
    """A shard source's shards, every local one checked to exist (one line naming the first missing)."""
    return checked_shards(shard_list(source.shards))


def _shard_samples(source: TextSource | ImageCaptionSource, image_store: Path | None) -> Iterator[ShardSample]:
    """Every sample of the source's shards in order, a shard's index read (or written) when reached."""
    fields_read = shard_fields(source)
    for shard in source_shards(source):
        yield from shard_samples(shard, fields_read, image_store)


_MISSING = object()  # a record without the field a source reads


def _field(row: dict[str, Any], path: str) -> Any:
    """``row[path]``, where ``a.b`` reads field ``b`` of ``row['a']``; _MISSING when absent."""
    value: Any = row
    for part in path.split("."):
        if not isinstance(value, dict) or value.get(part) is None:
            return _MISSING
        value = value[part]
    return value


def _parquet_values(path: Path, column: str) -> Iterator[Any]:
    """One column of a Parquet file, a record batch at a time (a file larger than memory streams)."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise DataFormatError(path, None, f"not a readable Parquet file ({err})") from err
    if column not in table.schema_arrow.names:
        raise DataFormatError(path, None, f"no column {column!r} (columns: {table.schema_arrow.names}); set 'column'")
    for batch in table.iter_batches(columns=[column], batch_size=8192):
        yield from batch.column(0).to_pylist()


def _parquet_glob_values(source: TextSource) -> Iterator[tuple[str, None, Any]]:
    pattern = Path(source.path)
    files = sorted(pattern.parent.glob(pattern.name))
    if not files:
        raise DataFormatError(source.path, None, "no file matches this pattern (key 'path')")
    for path in files:
        if path.suffix.lower() != ".parquet":
            raise DataFormatError(path, None, "a glob reads Parquet files only")
        yield from ((f"{path.name}:{index}", None, value) for index, value in enumerate(_parquet_values(path, source.column)))


def _image_file(image: Any, folder: Path, image_store: Path, source: ImageCaptionSource, index: int) -> Path:
    if isinstance(image, str):
        return _contained(folder, image, source, source.origin, f"index {index}")
    if isinstance(image, dict) and image.get("bytes"):
        return stored_image(image["bytes"], Path(image.get("path") or "").suffix, image_store)
    if isinstance(image, dict) and image.get("path"):
        return Path(image["path"])
    raise DataFormatError(source.origin, None, f"index {index}: column {source.image_column!r} holds "
                                               f"{type(image).__name__}, not an image or a path")


def _contained(folder: Path, name: str, source: ImageCaptionSource, origin, where: int | str | None) -> Path:
    """``folder / name``, refused when it leads out of ``folder`` (``files.inside``) unless the source
    allows it (``allow_outside_paths``)."""
    located = inside(folder, name)
    if located is None and not source.allow_outside_paths:
        line, detail = (where, "") if isinstance(where, int) or where is None else (None, f"{where}: ")
        raise DataFormatError(origin, line, f"{detail}image path {name!r} points outside the image folder {folder}; "
                                            "use a path relative to it, or set allow_outside_paths: true on this source")
    return located or folder / name


# --- readers ------------------------------------------------------------------------------------------


def _existing_file(path: Path, key: str) -> Path:
    if not path.is_file():
        raise DataFormatError(path, None, f"file not found (key '{key}'; relative paths start at the current directory)")
    return path


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataFormatError(path, raw.count(b"\n", 0, err.start) + 1, f"cannot decode as utf-8: {err.reason}") from err


def _table_records(path: Path, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line, record) of a CSV (header row), TSV (header row, no quoting) or JSONL file."""
    text = _read_text(path)
    if path.suffix.lower() == ".jsonl":
        yield from _jsonl_records(path, text, columns)
        return
    tsv = path.suffix.lower() == ".tsv"
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if tsv else ",",
                            quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    missing = [column for column in columns if column not in (reader.fieldnames or [])]
    if missing:
        raise DataFormatError(path, 1, f"no column {missing[0]!r} in the header {reader.fieldnames}; "
                                       "name the right column in the source's config")
    try:
        for record in reader:
            absent = [column for column in columns if record.get(column) is None]
            if absent:
                raise DataFormatError(path, reader.line_num, f"too few fields: no value for {absent[0]!r}")
            yield reader.line_num, record
    except csv.Error as err:
        raise DataFormatError(path, reader.line_num, f"malformed {'TSV' if tsv else 'CSV'} ({err})") from err


def _jsonl_records(path: Path, text: str, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue  # blank lines (a trailing one, say) separate nothing in JSONL
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, line, f"invalid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise DataFormatError(path, line, "expected a JSON object per line")
        missing = [column for column in columns if column not in record]
        if missing:
            raise DataFormatError(path, line, f"no key {missing[0]!r} (keys: {sorted(record)}); "
                                              "name the right column in the source's config")
        yield line, record


def _open_dataset(name: str, split: str | None, data_files: str | list[str] | None = None, streaming: bool = False):
    """A ``save_to_disk`` folder, else a hub dataset or builder (``json`` with ``data_files``), streamed
    row by row with ``streaming``; a DatasetDict needs ``split``."""
    import datasets

    label = _dataset_label(name, split)
    try:
        if Path(name).is_dir() and not streaming:
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name, split=split, data_files=data_files, streaming=streaming)
    except Exception as err:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
        raise DataFormatError(label, None, f"cannot load the dataset ({type(err).__name__}: {err}); "
                                           "give a save_to_disk folder or a hub name with 'split'") from err
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in loaded:
            raise DataFormatError(label, None, f"set 'split' to one of {list(loaded)}")
        loaded = loaded[split]
    return loaded


def _require_columns(dataset: Any, origin: str, columns: dict[str, str]) -> None:
    for key, column in columns.items():
        if column not in dataset.column_names:
            raise DataFormatError(origin, None, f"no column {column!r} (columns: {dataset.column_names}); set '{key}'")

"""A cache's rows on disk: columns read through memory maps, never parsed into one Python object per row.

Per modality, two files:

- ``<modality>_rows.arrow``: an Arrow IPC file, one record batch, row i = row i of the modality's
  vectors. Text: ``id``, ``text`` and ``image_row`` (the image row a caption describes, -1 for a
  sentence or a caption whose image is not cached). Image: ``id``.
- ``<modality>_id_index.npy``: int64 ``[2, rows]``, the ids' 64-bit blake2b hashes sorted (row 0)
  and the row of each (row 1). An id is found by a binary search and then compared with the id
  column, so a hash collision costs a second comparison, never a wrong row.

A trainer maps both and touches only the pages of the rows a step reads, so its memory does not
grow with the corpus; forked loader workers share the maps instead of copying row objects.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROWS_FILES = {"text": "text_rows.arrow", "image": "image_rows.arrow"}
ID_INDEX_FILES = {"text": "text_id_index.npy", "image": "image_id_index.npy"}
NO_IMAGE = -1
_ITER_CHUNK = 65536  # rows converted to Python at a time when a column is walked end to end


def rows_file_bytes(ids: Sequence[str], texts: Sequence[str] | None = None,
                    image_rows: Sequence[int] | None = None) -> bytes:
    """The Arrow file of one modality: ``ids`` always, ``texts`` and ``image_rows`` for text rows."""
    columns = {"id": pa.array(ids, type=pa.large_string())}
    if texts is not None:
        columns["text"] = pa.array(texts, type=pa.large_string())
        columns["image_row"] = pa.array(np.asarray(image_rows, dtype=np.int64))
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(len(ids), 1))  # one batch: columns map as one array
    return sink.getvalue().to_pybytes()


def id_hashes(ids: Iterable[str]) -> np.ndarray:
    """64-bit blake2b of each id (int64), the same on every machine and Python version."""
    return np.frombuffer(b"".join(hashlib.blake2b(row_id.encode(), digest_size=8).digest() for row_id in ids),
                         dtype="<i8").copy()


def id_index_bytes(ids: Sequence[str]) -> bytes:
    """The ``.npy`` of the id index: hashes sorted, with the row of each."""
    hashes = id_hashes(ids)
    order = np.argsort(hashes, kind="stable")
    buffer = io.BytesIO()
    np.save(buffer, np.stack([hashes[order], order.astype(np.int64)]))
    return buffer.getvalue()


class StringColumn(Sequence[str]):
    """A read-only string column of a mapped Arrow file: ``column[i]``, ``column.take(rows)``, iteration."""

    def __init__(self, array: pa.ChunkedArray):
        self._array = array

    def __len__(self) -> int:
        return len(self._array)

    def __getitem__(self, i):  # an int or a slice, as for a list
        if isinstance(i, slice):
            return self.take(np.arange(*i.indices(len(self))))
        return self._array[int(i)].as_py()

    def take(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """The values at ``rows`` (in that order, repeats allowed)."""
        return self._taken(rows).to_pylist()

    def argsort(self, rows: np.ndarray) -> np.ndarray:
        """Positions that order the values at ``rows`` (code point order, as ``sorted`` orders str)."""
        return pc.sort_indices(self._taken(rows)).to_numpy()

    def _taken(self, rows: Sequence[int] | np.ndarray) -> pa.ChunkedArray:
        return self._array.take(pa.array(np.asarray(rows, dtype=np.int64)))

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), _ITER_CHUNK):
            yield from self._array.slice(start, _ITER_CHUNK).to_pylist()


class MappedRows:
    """One modality's rows file and id index, memory-mapped."""

    def __init__(self, rows_file: Path, index_file: Path):
        self.table = pa.ipc.open_file(pa.memory_map(str(rows_file), "r")).read_all()
        self.ids = StringColumn(self.table.column("id"))
        self._index = np.load(index_file, mmap_mode="r")
        if self._index.shape != (2, len(self.ids)):
            raise ValueError(f"{index_file}: shape {self._index.shape}, expected (2, {len(self.ids)})")

    def strings(self, name: str) -> StringColumn:
        return StringColumn(self.table.column(name))

    def integers(self, name: str) -> np.ndarray:
        """An integer column as a read-only numpy view of the map (no copy)."""
        return self.table.column(name).chunk(0).to_numpy(zero_copy_only=True) if len(self.ids) else \
            np.zeros(0, dtype=np.int64)

    def find(self, ids: Iterable[str]) -> np.ndarray:
        """The row of each id; ``KeyError(id)`` for the first one the modality does not hold."""
        wanted = list(ids)
        hashes, rows_by_hash = self._index[0], self._index[1]
        found = np.empty(len(wanted), dtype=np.int64)
        for position, (row_id, hashed) in enumerate(zip(wanted, id_hashes(wanted))):
            found[position] = self._row_of(row_id, hashed, hashes, rows_by_hash)
        return found

    def _row_of(self, row_id: str, hashed: np.int64, hashes: np.ndarray, rows_by_hash: np.ndarray) -> int:
        at = int(np.searchsorted(hashes, hashed, side="left"))
        while at < len(hashes) and hashes[at] == hashed:  # more than one pass only on a hash collision
            if self.ids[rows_by_hash[at]] == row_id:
                return int(rows_by_hash[at])
            at += 1
        raise KeyError(row_id)

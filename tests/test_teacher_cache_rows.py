"""The rows format on its own: Arrow columns and the hashed id index, including a forced hash collision."""
from __future__ import annotations

import numpy as np
import pytest

from teacher_cache import rows as rows_module
from teacher_cache.rows import MappedRows, id_index_bytes, rows_file_bytes

IDS = ["wiki1m:0", "coco:7:1", "user:ünïcode\u2028line", "coco:7:2"]
TEXTS = ["a sentence", "a cat on a mat", "text with a\nnewline and U+2028 \u2028 inside", "another cat"]


def _write(folder, ids=IDS, texts=TEXTS, image_rows=(-1, 0, -1, 0)) -> MappedRows:
    (folder / "rows.arrow").write_bytes(rows_file_bytes(ids, texts, image_rows))
    (folder / "index.npy").write_bytes(id_index_bytes(ids))
    return MappedRows(folder / "rows.arrow", folder / "index.npy")


def test_columns_round_trip_any_text(tmp_path):
    mapped = _write(tmp_path)
    assert list(mapped.ids) == IDS and list(mapped.strings("text")) == TEXTS
    assert mapped.strings("text").take([2, 2, 0]) == [TEXTS[2], TEXTS[2], TEXTS[0]]
    assert mapped.integers("image_row").tolist() == [-1, 0, -1, 0]
    assert mapped.find([IDS[3], IDS[2], IDS[0]]).tolist() == [3, 2, 0]
    with pytest.raises(KeyError, match="wiki1m:1"):
        mapped.find(["wiki1m:1"])


def test_an_image_rows_file_has_ids_only_and_an_empty_one_opens(tmp_path):
    (tmp_path / "rows.arrow").write_bytes(rows_file_bytes(["a", "b"]))
    (tmp_path / "index.npy").write_bytes(id_index_bytes(["a", "b"]))
    mapped = MappedRows(tmp_path / "rows.arrow", tmp_path / "index.npy")
    assert mapped.table.column_names == ["id"] and mapped.find(["b"]).tolist() == [1]
    empty = _write(tmp_path, [], [], [])
    assert len(empty.ids) == 0 and empty.integers("image_row").shape == (0,)


def test_a_hash_collision_still_finds_the_right_row(tmp_path, monkeypatch):
    """Every id hashed to one value: the search must compare ids and walk the run of equal hashes."""
    monkeypatch.setattr(rows_module, "id_hashes", lambda ids: np.zeros(len(list(ids)), dtype=np.int64))
    mapped = _write(tmp_path)
    assert mapped.find(list(reversed(IDS))).tolist() == [3, 2, 1, 0]
    with pytest.raises(KeyError):
        mapped.find(["absent"])

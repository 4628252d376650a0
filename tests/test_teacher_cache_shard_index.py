"""WebDataset input shards read once, each by one rank (or Slurm array task), into a small index per tar;
the cache build's rank 0 then reads the indexes, not the tars, and neither hashes nor decodes an image again.

Ranks are simulated by ``index_input_shards(cfg, part, parts)``, which is what each rank runs; one slow
test launches two real gloo processes to check that an error on one rank stops both.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import teacher_cache.corpora.webdataset as wds
import teacher_cache.data as data_module
from teacher_cache import CacheDataConfig, DataFormatError, collect_data, index_input_shards
from teacher_cache.corpora.user import shard_fields
from teacher_cache.corpora.webdataset import index_path
from teacher_cache.data import dataset_fingerprint, find_bad_images
from test_data_sources_at_scale import jpeg, write_shard

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def shards(tmp_path) -> Path:
    """Three shards; 00001 holds a caption-less key and a corrupt image beside a good sample."""
    folder = tmp_path / "wds"
    write_shard(folder / "00000.tar", {"a0": {"jpg": jpeg(10), "txt": b"a red bus"},
                                       "a1": {"jpg": jpeg(30), "txt": b"two dogs"}})
    write_shard(folder / "00001.tar", {"b0": {"jpg": jpeg(60), "txt": b"a kite"},
                                       "b1": {"jpg": jpeg(90)},
                                       "b2": {"jpg": b"not a jpeg at all", "txt": b"a broken photo"}})
    write_shard(folder / "00002.tar", {"c0": {"jpg": jpeg(120), "txt": b"a tree"}})
    return folder


def config(shards: Path, tmp_path: Path, **extra) -> CacheDataConfig:
    return CacheDataConfig.from_dict({"text_sources": [], "skip_bad": True, "image_store": str(tmp_path / "store"),
                                      "image_sources": [{"shards": str(shards / "{00000..00002}.tar"), "name": "wds"}],
                                      **extra})


def index_of(cfg: CacheDataConfig, shard: Path) -> Path:
    (source,) = cfg.image_sources
    return index_path(str(shard), shard_fields(source), Path(cfg.image_store))


@pytest.fixture()
def tar_reads(monkeypatch) -> list[str]:
    """The shards whose tar is read (each read is recorded, then done as usual)."""
    reads: list[str] = []
    original = wds._tar_samples

    def recording(shard, fields):
        reads.append(Path(shard).name)
        return original(shard, fields)

    monkeypatch.setattr(wds, "_tar_samples", recording)
    return reads


def test_each_rank_indexes_its_own_input_shards_and_rank0_reads_only_indexes(shards, tmp_path, tar_reads,
                                                                             monkeypatch):
    cfg = config(shards, tmp_path)
    tars = [shards / f"0000{i}.tar" for i in range(3)]
    rank0 = index_input_shards(cfg, 0, 2)
    assert (rank0.shards, rank0.read, tar_reads) == (2, 2, ["00000.tar", "00002.tar"])
    assert [index_of(cfg, tar).is_file() for tar in tars] == [True, False, True]
    rank1 = index_input_shards(cfg, 1, 2)
    assert (rank1.shards, rank1.read, tar_reads[2:]) == (1, 1, ["00001.tar"])
    assert len(list((tmp_path / "store" / ".shards").iterdir())) == 3

    def no_more(*_):
        raise AssertionError("an image was decoded or hashed again")

    monkeypatch.setattr(data_module, "image_problem", no_more)
    monkeypatch.setattr(data_module, "file_sha256", no_more)
    collected = collect_data(cfg, None)  # rank 0's collection: indexes only
    assert len(tar_reads) == 3
    assert [image.image_id for image in collected.rows.images] == [
        "wds:00000.tar:a0", "wds:00000.tar:a1", "wds:00001.tar:b0", "wds:00001.tar:b1", "wds:00001.tar:b2",
        "wds:00002.tar:c0"]
    assert all(collected.image_sha256[image.image_id] == image.path.name.split(".")[0]
               for image in collected.rows.images)
    assert index_input_shards(cfg, 0, 2).read == 0  # a rerun reads nothing


def test_a_corrupt_image_and_a_caption_less_key_are_bad_rows_named_by_shard_and_key(shards, tmp_path):
    cfg = config(shards, tmp_path)
    index_input_shards(cfg)
    collected = collect_data(cfg, None)
    bad = {problem.row_id: problem.problem
           for problem in collected.rows.problems + find_bad_images(collected.rows.images)}
    assert bad["wds:00001.tar:b1:0"] == "empty caption"
    assert bad["wds:00001.tar:b2"].startswith("cannot decode image (UnidentifiedImageError: cannot identify image")
    assert " at 0x" not in bad["wds:00001.tar:b2"]  # no memory address: a rerun records the same words
    assert len(bad) == 2


def test_the_fingerprint_is_the_same_with_and_without_indexes(shards, tmp_path):
    """Today's caches stay valid: the known sha256s and decode results are the very values hashing
    and decoding the stored files gives."""
    cfg = config(shards, tmp_path)
    built = collect_data(cfg, None)  # no index yet: the tars are read, the indexes written
    read = collect_data(cfg, None)   # every index there
    unchecked = replace(read.rows, images=[replace(image, check=None) for image in read.rows.images])
    assert all(image.check is not None for image in read.rows.images)
    assert built.fingerprint == read.fingerprint == dataset_fingerprint(unchecked)
    assert find_bad_images(read.rows.images) == find_bad_images(unchecked.images)


def test_a_failed_input_shard_is_redone_alone(shards, tmp_path, tar_reads):
    """Rank 1's shard cannot be read (a corrupt tar here; a kill -9 mid-tar leaves the same: no index for
    it). The rerun reads that shard alone; the other shards' index files are not rewritten."""
    good = (shards / "00001.tar").read_bytes()
    (shards / "00001.tar").write_bytes(b"this is no tar" * 40)
    cfg = config(shards, tmp_path)
    index_input_shards(cfg, 0, 2)
    with pytest.raises(DataFormatError, match=r"00001.tar: cannot read this WebDataset shard \(ReadError"):
        index_input_shards(cfg, 1, 2)
    (shards / "00001.tar").write_bytes(good)
    others = [shards / "00000.tar", shards / "00002.tar"]
    written = [index_of(cfg, tar).stat().st_mtime_ns for tar in others]
    before = len(tar_reads)
    assert index_input_shards(cfg).read == 1
    assert tar_reads[before:] == ["00001.tar"]
    assert [index_of(cfg, tar).stat().st_mtime_ns for tar in others] == written


def test_an_index_is_renewed_when_its_tar_or_a_stored_image_changes(shards, tmp_path, tar_reads):
    cfg = config(shards, tmp_path)
    index_input_shards(cfg)
    first = index_of(cfg, shards / "00002.tar")
    write_shard(shards / "00002.tar", {"c0": {"jpg": jpeg(121), "txt": b"a tree, edited"}})
    os.utime(shards / "00002.tar", ns=(1, 1))
    assert index_of(cfg, shards / "00002.tar") != first  # another identity: another index
    image = next(Path(cfg.image_store).glob("*.jpg"))
    image.unlink()  # an image deleted from the store: its shard is read again when collected
    before = len(tar_reads)
    collected = collect_data(cfg, None)
    assert "00002.tar" in tar_reads[before:] and image.is_file()
    assert "a tree, edited" in [row.text for row in collected.rows.texts]


def test_index_parts_are_checked_and_the_cli_indexes_one_part(shards, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"index part 2/2: the part must be 0 to 1"):
        index_input_shards(config(shards, tmp_path), 2, 2)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import cache_teacher
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    data = {"text_sources": [], "image_sources": [{"shards": str(shards / "{00000..00002}.tar"), "name": "wds"}],
            "image_store": str(tmp_path / "store")}
    assert cache_teacher.main(["--index-part", "1/3", f"data={json.dumps(data)}"]) == 0
    assert re.fullmatch(r"part 1/3: 1 input shard\(s\), 1 read into an index, 0 indexed already \(\d+\.\d s\)",
                        capsys.readouterr().out.strip())
    assert [index_of(config(shards, tmp_path), shards / f"0000{i}.tar").is_file() for i in range(3)] == [
        False, True, False]
    assert cache_teacher.main(["--index-part", "3/3", f"data={json.dumps(data)}"]) == 2
    assert "--index-part expects K/N with 0 <= K < N, got '3/3'" in capsys.readouterr().err


def _rank(rank: int, world: int, init: str, cfg: CacheDataConfig, out: Path) -> None:
    import torch.distributed as dist

    from teacher_cache.writer import _index_my_input_shards
    from kdmcse_base.process_group import DistEnv

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        _index_my_input_shards(DistEnv.current(), cfg)
        outcome = "ok"
    except (DataFormatError, ValueError) as err:
        outcome = f"{type(err).__name__}: {err}"
    finally:
        dist.destroy_process_group()
    (out / f"rank{rank}.txt").write_text(outcome)


@pytest.mark.slow  # two processes (gloo)
def test_two_ranks_index_their_shards_and_an_error_on_one_stops_both(shards, tmp_path):
    import torch.multiprocessing as mp

    (shards / "00001.tar").write_bytes(b"this is no tar" * 40)  # rank 1's shard
    cfg = config(shards, tmp_path)
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_rank, args=(2, init, cfg, tmp_path), nprocs=2, join=True)
    said = [(tmp_path / f"rank{rank}.txt").read_text() for rank in range(2)]
    assert said[1].startswith("DataFormatError: ") and "00001.tar: cannot read this WebDataset shard" in said[1]
    assert said[0].startswith("InputShardError: rank 1 could not index its input shards: ")
    assert [index_of(cfg, shards / f"0000{i}.tar").is_file() for i in range(3)] == [True, False, True]

"""The faults benchmarks/fault_probe.py plants (tests/fault_kit.py, shared with it) are the faults they claim
to be, and its reading of a script's error keeps the whole error. (A bad config value's exit 2, one line and
nothing written: tests/test_train.py::test_out_of_range_value_exits_2_before_anything_is_loaded.)"""

import pytest
import torch

import fault_kit
from distill.checkpoint import load_checkpoint
from distill.run_folder import RunFolderError
from kdmcse_base.process_group import DistEnv


def test_the_planted_checkpoint_runs_its_payload_when_unpickled_and_the_trainer_refuses_it(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    fault_kit.plant_pickle_checkpoint(tmp_path, marker)
    with pytest.raises(RunFolderError, match="checkpoint.pt is not a safe checkpoint .* it was not loaded"):
        load_checkpoint(tmp_path / "checkpoint.pt", {}, DistEnv.current())
    assert not marker.exists()
    torch.load(tmp_path / "checkpoint.pt", weights_only=False)  # the plant is real: a plain load runs it
    assert marker.exists()


def test_flip_byte_changes_one_byte_and_keeps_size_and_mtime(tmp_path):
    import numpy as np

    path = tmp_path / "shard.npy"
    rows = np.full((2, 16), 0.25, dtype=np.float32)
    np.save(path, rows)
    before, stat = path.read_bytes(), path.stat()
    fault_kit.flip_byte(path, keep_mtime=True)
    after = path.read_bytes()
    assert len(after) == len(before) and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert sum(a != b for a, b in zip(before, after)) == 1
    damaged = np.load(path)
    assert damaged[0, 9] == 2.0 ** 126  # 0.25 = 0x3E800000; flipping bit 0x40 of its top byte gives 0x7E800000
    assert np.linalg.norm(damaged[0]) > 1e3 and np.array_equal(damaged[1], rows[1])


def test_error_message_keeps_the_whole_error_block():
    stderr = "progress 1/2\rprogress 2/2\nerror: 3 bad rows (data.skip_bad=true):\n  - a\n  - b\n"
    assert fault_kit.error_message(stderr) == "error: 3 bad rows (data.skip_bad=true):\n  - a\n  - b"
    assert fault_kit.last_line(stderr) == "- b"

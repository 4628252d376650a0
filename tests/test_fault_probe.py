"""The cheapest cases of benchmarks/fault_probe.py, through the probe's own functions."""

import pytest
import torch

from benchmarks import fault_probe
from distill.checkpoint import load_checkpoint
from distill.run_folder import RunFolderError
from kdmcse_base.process_group import DistEnv


@pytest.mark.parametrize("key, value, message", [
    ("train.batch_size", "0", "config error: train.batch_size must be >= 1, got 0"),
    ("train.lr", "-1e-4", "config error: train.lr must be > 0 and <= 1.0, got -0.0001"),
])
def test_bad_config_rows_exit_2_naming_the_key_and_write_nothing(tmp_path, key, value, message):
    # the model and data paths need not exist: the config is refused before anything is loaded
    ws = fault_probe.Workspace(tmp_path, tmp_path / "no_model", tmp_path / "no_data")
    row = fault_probe.case_bad_config(ws, key, value)
    assert (row.rc, row.last_stderr, row.left_behind, row.ok) == (2, message, [], True)
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("cache*"))


def test_the_planted_checkpoint_runs_its_payload_when_unpickled_and_the_trainer_refuses_it(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    fault_probe.plant_pickle_checkpoint(tmp_path, marker)
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
    fault_probe.flip_byte(path, keep_mtime=True)
    after = path.read_bytes()
    assert len(after) == len(before) and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert sum(a != b for a, b in zip(before, after)) == 1
    damaged = np.load(path)
    assert damaged[0, 9] == 2.0 ** 126  # 0.25 = 0x3E800000; flipping bit 0x40 of its top byte gives 0x7E800000
    assert np.linalg.norm(damaged[0]) > 1e3 and np.array_equal(damaged[1], rows[1])


def test_error_message_keeps_the_whole_error_block():
    stderr = "progress 1/2\rprogress 2/2\nerror: 3 bad rows (data.skip_bad=true):\n  - a\n  - b\n"
    assert fault_probe.error_message(stderr) == "error: 3 bad rows (data.skip_bad=true):\n  - a\n  - b"
    assert fault_probe.last_line(stderr) == "- b"

"""The run folder is the trainer's alone, and its checkpoint is never unpickled blindly.

- a folder holding files the trainer did not write is refused (exit 2, files named, nothing touched);
- a planted ``checkpoint.pt`` whose unpickling would create a file is refused without running;
- ``replace_folder`` / ``recover_swap``: a kill at each instant of the swap leaves a complete folder.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distill.run_folder as run_folder
from distill.checkpoint import load_checkpoint
from distill.run_folder import LISTING, RunFolderError, foreign_entries, recover_swap, replace_folder
from kdmcse_base.process_group import DistEnv

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train_student.py"), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_folder_with_foreign_files_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "model" / "weights.bin").write_text("mine too")
    result = run_cli([f"train.output_dir={out}", f"train.cache_root={tmp_path / 'cache'}"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: train.output_dir={out} holds files this trainer did not write (model/weights.bin, notes.txt); "
        "choose a new or empty folder, or move them away"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "model" / "weights.bin").read_text() == "mine too"
    assert sorted(p.name for p in out.iterdir()) == ["model", "notes.txt"]
    assert not (tmp_path / "cache").exists()  # stopped before anything was built


def test_foreign_entries_accepts_exactly_what_the_trainer_writes(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    replace_folder(out / "best", lambda folder: (folder / "model.safetensors").write_text("w"))
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out.tfevents.1.host").write_text("")
    (out / "checkpoint.pt").write_text("")
    (out / "config.yaml").write_text("")
    (out / "checkpoint.pt.tmp-4321").write_text("")  # a kill during a checkpoint write leaves this
    (out / "train_summary.json.tmp").write_text("")  # ... and older versions this
    assert foreign_entries(out) == []
    (out / "best" / "extra.txt").write_text("")
    (out / "tensorboard" / "plot.png").write_text("")
    (out / "data").mkdir()
    (out / "notes.tmp-12").write_text("")
    assert foreign_entries(out) == ["best/extra.txt", "data/", "notes.tmp-12", "tensorboard/plot.png"]


class _CreatesAFile:
    """Unpickling this calls ``open(path, "w")``: a stand-in for any code a planted pickle could run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_planted_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / "payload_ran"
    torch.save({"trainable": _CreatesAFile(marker)}, tmp_path / "checkpoint.pt")
    torch.load(tmp_path / "checkpoint.pt", weights_only=False)  # the payload is live: plain unpickling runs it
    assert marker.exists()
    marker.unlink()

    with pytest.raises(RunFolderError) as err:
        load_checkpoint(tmp_path / "checkpoint.pt", {}, DistEnv.current())
    assert not marker.exists()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'checkpoint.pt'} is not a checkpoint this trainer wrote")
    assert message.endswith("delete it to start the run over")


def _write(text: str):
    def write(folder: Path) -> None:
        (folder / "weights.txt").write_text(text)
    return write


@pytest.mark.parametrize("atomic_exchange, kill_at", [(True, n) for n in range(4)] + [(False, n) for n in range(5)])
def test_a_kill_anywhere_in_the_swap_leaves_a_complete_folder(tmp_path, monkeypatch, atomic_exchange, kill_at):
    """Kill (raise) at the n-th filesystem change of the swap; recovery leaves the old or the new folder.
    With the atomic exchange, ``best`` is complete at every instant, before any recovery."""
    target = tmp_path / "best"
    replace_folder(target, _write("old"))
    calls = {"n": 0}

    def dying(real):
        def wrapped(*args, **kwargs):
            if calls["n"] == kill_at:
                raise KeyboardInterrupt("killed")
            calls["n"] += 1
            return real(*args, **kwargs)
        return wrapped

    # exchange: clear .new, seal it, exchange, remove .new (now the old content)
    # fallback: clear .new, seal it, old -> .old, .new -> target, remove .old
    monkeypatch.setattr(run_folder.os, "replace", dying(os.replace))
    monkeypatch.setattr(run_folder.shutil, "rmtree", dying(run_folder.shutil.rmtree))
    monkeypatch.setattr(run_folder, "exchange", dying(run_folder.exchange) if atomic_exchange else lambda a, b: False)
    with pytest.raises(KeyboardInterrupt):
        replace_folder(target, _write("new"))
    monkeypatch.undo()
    if atomic_exchange:
        assert run_folder.is_complete(target)
    recover_swap(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    assert sorted(p.name for p in target.iterdir()) == [LISTING, "weights.txt"]
    # until the old folder is moved aside (or exchanged) it stays; from then on the (sealed) new one wins
    assert (target / "weights.txt").read_text() == ("old" if kill_at <= 2 else "new")
    assert json.loads((target / LISTING).read_text()) == ["weights.txt"]


def test_a_user_folder_named_like_a_swap_is_refused_not_taken(tmp_path):
    out = tmp_path / "run"
    (out / "best.new").mkdir(parents=True)
    (out / "best.new" / "my_notes.txt").write_text("mine")
    (out / "model.old").mkdir()  # empty: could be the trainer's, a kill right after its mkdir
    assert foreign_entries(out) == ["best.new/"]
    replace_folder(out / "scratch", _write("x"))  # what the trainer makes is recognised as its own
    assert not (out / "scratch" / run_folder.SWAP_MARK).exists()


def test_a_run_folder_from_before_a_key_rename_is_refused_naming_its_config(tmp_path):
    from distill.config import load_config
    from distill.run_folder import check_resumable

    (tmp_path / "checkpoint.pt").write_bytes(b"")
    (tmp_path / "config.yaml").write_text("loss:\n  aahr_queue_size: 0\n")
    with pytest.raises(RunFolderError, match=r"config.yaml cannot be resumed .*unknown key\(s\) loss.aahr_queue_size"):
        check_resumable(load_config(None), tmp_path)


def hold_lock(folder: Path, purpose: str, seconds: float, name: str = ".lock") -> subprocess.Popen:
    """Another process holding ``folder``'s lock for ``seconds`` (returns once it holds it)."""
    holder = subprocess.Popen([sys.executable, str(ROOT / "tests" / "hold_lock.py"), str(folder), purpose, name,
                               str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_training_into_a_held_run_folder_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    holder = hold_lock(out, "training", 60)
    try:
        result = run_cli([f"train.output_dir={out}", f"train.cache_root={tmp_path / 'cache'}"])
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {out} is in use by process {holder.pid} training (lock {out / '.lock'}); wait for it to finish "
        "or choose another folder for this training"]
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused run wrote nothing


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    from kdmcse_base.files import folder_lock

    holder = hold_lock(tmp_path, "training", 60)
    holder.kill()  # SIGKILL: no cleanup ran; the kernel dropped the flock with the process
    holder.wait()
    with folder_lock(tmp_path, "training"):
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()} training\n"


def test_a_second_cache_build_waits_for_the_first_and_says_for_whom(tmp_path, capsys):
    import time

    from kdmcse_base.files import folder_lock

    holder = hold_lock(tmp_path, "cache build", 2, name=".build.lock")
    started = time.monotonic()
    with folder_lock(tmp_path, "cache build", wait=True, name=".build.lock"):
        waited = time.monotonic() - started
    holder.wait()
    assert waited > 0.5  # it did not write beside the other builder
    assert f"waiting for process {holder.pid} cache build, which holds {tmp_path / '.build.lock'}" \
        in capsys.readouterr().err


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_one_line_and_leaves_no_temp_file(tmp_path):
    from kdmcse_base.files import WriteFailedError, atomic_save

    with pytest.raises(WriteFailedError, match=rf"^cannot write {tmp_path / 'x.bin'}: No space left on device; free "
                                               r"space on that disk and rerun \(what was saved before is complete"):
        atomic_save(tmp_path / "x.bin", _disk_full)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_training_stops_in_one_line_and_a_killed_write_is_cleaned_up(tiny_bert_dir, tmp_path,
                                                                                        monkeypatch, capsys):
    from kdmcse_cli import train_student

    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt.tmp-99999").write_bytes(b"half of a checkpoint a kill left behind")
    args = ["--config", "offline_default", f"student.model={tiny_bert_dir}", "student.layers=1",
            f"teacher.text_model={tiny_bert_dir}", "data.limits={wiki1m: 48, coco2017_mini: 8}",
            "train.retrieval_holdout_images=2", "train.max_steps=2", "train.batch_size=8",
            f"train.output_dir={out}", f"train.cache_root={tmp_path / 'cache'}"]
    monkeypatch.setattr(torch, "save", _disk_full)  # best/'s grounding heads at the step-2 evaluation
    assert train_student.main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write {out / 'best.new'}: No space left on device; free space on that "
                      "disk and rerun (what was saved before is complete and is kept)"]
    assert not (out / "best.new").exists()  # no half-written folder
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # the killed write's temp file is gone

"""The run folder is the trainer's alone, and its checkpoint is never unpickled blindly.

- a folder holding files the trainer did not write is refused (exit 2, files named, nothing touched);
- a planted ``checkpoint.pt`` whose unpickling would create a file is refused without running;
- ``RunFolder.replace`` / ``recover``: a kill at each instant of the swap leaves a complete folder;
  only what the run's state file proves the trainer's is ever removed or moved (copies, moves and user
  files of every swap and temp name are refused, untouched);
- a finished run is never overwritten; a damaged checkpoint is refused;
- every write failure (any library's, a real full tmpfs, a read-only mount) is one line, nothing half-written.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import distill.run_folder as run_folder
from distill.checkpoint import load_checkpoint
from distill.run_folder import LISTING, STATE_FILE, RunFolder, RunFolderError, foreign_entries
from kdmcse_base.process_group import DistEnv

ROOT = Path(__file__).resolve().parents[1]


def run_main(args: list[str], capsys) -> subprocess.CompletedProcess:
    """scripts/train_student.py's main in this process (its exit code is the process's: ``sys.exit(main())``),
    for the refusals that stop before training; a launch of the script is tests/test_train.py's."""
    from kdmcse_cli import train_student

    capsys.readouterr()
    code = train_student.main(args)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_a_folder_with_foreign_files_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "model" / "weights.bin").write_text("mine too")
    result = run_main([f"train.output_dir={out}", f"train.cache_root={tmp_path / 'cache'}"], capsys)
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
    folder = RunFolder(out)
    folder.replace("best", lambda f: (f / "model.safetensors").write_text("w"))
    token = folder.own_state().token
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out.tfevents.1.host").write_text("")
    (out / "checkpoint.pt").write_text("")
    (out / "config.yaml").write_text("")
    (out / f"checkpoint.pt.tmp-4321-{token}").write_text("")  # a kill during a checkpoint write leaves this
    assert foreign_entries(out) == []
    (out / "best" / "extra.txt").write_text("")
    (out / "tensorboard" / "plot.png").write_text("")
    (out / "data").mkdir()
    for users in ("notes.tmp-12", "checkpoint.pt.tmp", "config.yaml.tmp-1", "train_summary.json.tmp-12-abcdef"):
        (out / users).write_text("mine")  # temp-like names without the run's token are a user's
    assert foreign_entries(out) == ["best/extra.txt", "checkpoint.pt.tmp", "config.yaml.tmp-1", "data/",
                                    "notes.tmp-12", "tensorboard/plot.png", "train_summary.json.tmp-12-abcdef"]
    folder.recover()
    assert (out / "checkpoint.pt.tmp").read_text() == "mine" and not (out / f"checkpoint.pt.tmp-4321-{token}").exists()


def finished_folder(tmp_path: Path) -> RunFolder:
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    for name in ("best", "model"):
        folder.replace(name, _write(name))
    return folder


@pytest.mark.parametrize("how", ["cp -a", "cp -a + own file", "mv"])
@pytest.mark.parametrize("name", ["model.old", "best.old", "model.new", "best.new"])
def test_a_copy_or_move_named_like_a_swap_is_the_users(tmp_path, how, name):
    """The folder a copy or a move makes carries the trainer's listing, never its journaled inode."""
    folder = finished_folder(tmp_path)
    source, copy = folder.path / name.split(".")[0], folder.path / name
    if how == "mv":
        os.rename(source, copy)
    else:
        shutil.copytree(source, copy, symlinks=True)
    if how.endswith("own file"):
        (copy / "notes.txt").write_text("mine")
    kept = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*"))
    assert foreign_entries(folder.path) == [f"{name}/"]
    folder.recover()  # what a start does after the refusal was overridden: still nothing of the user's moves
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*")) == kept
    assert (source.exists()) == (how != "mv")


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
    assert message == (f"{tmp_path / 'checkpoint.pt'} is not a safe checkpoint (unpickling it would run code it "
                       "carries); it was not loaded; delete it to start the run over")
    assert "weights_only" not in message


def _write(text: str):
    def write(folder: Path) -> None:
        (folder / "weights.txt").write_text(text)
    return write


def dying_after(calls: dict, kill_at: int, real):
    """``real``, raising KeyboardInterrupt (a kill) at its ``kill_at``-th call on a ``best*`` path."""
    def wrapped(*args, **kwargs):
        if any(Path(a).name.startswith("best") for a in args if isinstance(a, (str, Path))):
            if calls["n"] == kill_at:
                raise KeyboardInterrupt("killed")
            calls["n"] += 1
        return real(*args, **kwargs)
    return wrapped


@pytest.mark.parametrize("atomic_exchange, kill_at", [(True, n) for n in range(3)] + [(False, n) for n in range(4)])
def test_a_kill_anywhere_in_the_swap_leaves_a_complete_folder(tmp_path, monkeypatch, atomic_exchange, kill_at):
    """Kill (raise) at the n-th filesystem change of the swap; recovery leaves the old or the new folder.
    With the atomic exchange, ``best`` is complete at every instant, before any recovery."""
    folder = RunFolder(tmp_path)
    folder.replace("best", _write("old"))
    calls = {"n": 0}
    # exchange: exchange, remove .new (now the old content), remove .old (none)
    # fallback: old -> .old, .new -> target, remove .new (none), remove .old
    monkeypatch.setattr(run_folder.os, "replace", dying_after(calls, kill_at, os.replace))
    monkeypatch.setattr(run_folder.shutil, "rmtree", dying_after(calls, kill_at, shutil.rmtree))
    monkeypatch.setattr(run_folder, "exchange",
                        dying_after(calls, kill_at, run_folder.exchange) if atomic_exchange else lambda a, b: False)
    with pytest.raises(KeyboardInterrupt):
        folder.replace("best", _write("new"))
    monkeypatch.undo()
    if atomic_exchange:
        assert run_folder.is_complete(tmp_path / "best")
    assert foreign_entries(tmp_path) == []  # the leftovers are provably the trainer's
    folder.recover()
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE, "best"]
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == [LISTING, "weights.txt"]
    # until the old folder is moved aside (or exchanged) it stays; from then on the (sealed) new one wins
    assert (tmp_path / "best" / "weights.txt").read_text() == ("old" if kill_at == 0 else "new")
    assert folder.state().swaps == {}


def test_a_kill_while_the_old_copy_is_removed_is_finished_at_the_next_start(tmp_path, monkeypatch):
    """The old copy half removed (its listing gone first) is still provably the trainer's."""
    folder = RunFolder(tmp_path)
    folder.replace("best", _write("old"))
    real_rmtree = shutil.rmtree

    def half_rmtree(path, *args, **kwargs):
        if Path(path).name == "best.new" and Path(path).exists():
            (Path(path) / LISTING).unlink()
            raise KeyboardInterrupt("killed")
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(run_folder.shutil, "rmtree", half_rmtree)
    with pytest.raises(KeyboardInterrupt):
        folder.replace("best", _write("new"))
    monkeypatch.undo()
    assert (tmp_path / "best.new").is_dir() and foreign_entries(tmp_path) == []
    folder.recover()
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE, "best"]
    assert (tmp_path / "best" / "weights.txt").read_text() == "new"


def test_a_user_folder_named_like_a_swap_is_refused_not_taken(tmp_path):
    out = tmp_path / "run"
    (out / "best.new").mkdir(parents=True)
    (out / "best.new" / "my_notes.txt").write_text("mine")
    (out / "model.old").mkdir()  # empty: could be the trainer's, a kill right after its mkdir
    assert foreign_entries(out) == ["best.new/"]


def test_a_finished_run_is_never_started_over(tmp_path):
    from distill.config import load_config, config_yaml
    from distill.run_folder import TrainerState, check_resumable

    folder = finished_folder(tmp_path)
    cfg = load_config(None)
    folder.write(folder.config, config_yaml(cfg).encode())
    folder.note_checkpoint()
    with pytest.raises(RunFolderError, match="holds a run whose checkpoint.pt was removed before it finished"):
        check_resumable(cfg, folder.path)  # no summary: a stopped run whose checkpoint is gone
    (folder.summary).write_text("{}")
    assert check_resumable(cfg, folder.path) is True  # this very run, finished
    other = load_config(None, ["train.lr=0.5"])
    with pytest.raises(RunFolderError, match=r"holds a finished or stopped run with a different config \(train.lr\)"):
        check_resumable(other, folder.path)
    (folder.checkpoint).write_text("")
    with pytest.raises(RunFolderError, match=r"holds a run with a different config \(train.lr\)"):
        check_resumable(other, folder.path)
    assert check_resumable(cfg, folder.path) is False  # resumable from its checkpoint
    assert isinstance(folder.state(), TrainerState)


def test_a_flipped_bit_in_the_checkpoint_is_refused(tmp_path):
    from distill.checkpoint import save_checkpoint

    env = DistEnv.current()
    layer = torch.nn.Linear(4, 4)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"trainable": layer}, {"step": 3}, env)
    assert load_checkpoint(path, {"trainable": torch.nn.Linear(4, 4)}, env) == {"step": 3}
    payload = torch.load(path, weights_only=True)
    weight = payload["trainable"]["weight"]
    bits = weight.view(torch.int32)
    bits[0, 0] ^= 1 << 23  # one exponent bit: the weight doubles or halves
    torch.save(payload, path)
    with pytest.raises(RunFolderError, match=r"checkpoint.pt is damaged: its contents no longer match the checksum"):
        load_checkpoint(path, {"trainable": torch.nn.Linear(4, 4)}, env)


def test_a_checkpoint_of_another_layout_is_one_line(tmp_path):
    """E.g. a run checkpointed before the regression head moved from the student into its term."""
    from distill.checkpoint import save_checkpoint

    env = DistEnv.current()
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"trainable": torch.nn.Linear(4, 4)}, {"step": 3}, env)
    with pytest.raises(RunFolderError, match=r"checkpoint.pt does not fit this run: its 'trainable' state was written "
                                             r"by another version of the trainer \(Error\(s\) in loading"):
        load_checkpoint(path, {"trainable": torch.nn.Sequential(torch.nn.Linear(4, 4))}, env)


def hold_lock(folder: Path, purpose: str, seconds: float, name: str = ".lock") -> subprocess.Popen:
    """Another process holding ``folder``'s lock for ``seconds`` (returns once it holds it)."""
    holder = subprocess.Popen([sys.executable, str(ROOT / "tests" / "hold_lock.py"), str(folder), purpose, name,
                               str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_training_into_a_held_run_folder_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = hold_lock(out, "training", 60)
    try:
        result = run_main([f"train.output_dir={out}", f"train.cache_root={tmp_path / 'cache'}"], capsys)
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
    token = RunFolder(out).own_state().token
    (out / f"checkpoint.pt.tmp-99999-{token}").write_bytes(b"half of a checkpoint a kill left behind")
    args = ["--config", "offline_default", f"student.model={tiny_bert_dir}", "student.layers=1",
            f"teacher.text_model={tiny_bert_dir}", "data.limits={wiki1m: 48, coco2017_mini: 8}",
            "train.retrieval_holdout_images=2", "train.max_steps=2", "train.batch_size=8",
            "loss.multimodal=adapacse",  # a term in the grounding space: best/ holds its heads (torch.save)
            f"train.output_dir={out}", f"train.cache_root={tmp_path / 'cache'}"]
    monkeypatch.setattr(torch, "save", _disk_full)  # best/'s grounding heads, the first torch.save of the run
    assert train_student.main(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write {out / 'best.new'}: No space left on device; free space on that "
                      "disk and rerun (what was saved before is complete and is kept)"]
    assert not (out / "best.new").exists()  # no half-written folder
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]  # the killed write's temp file is gone


class SafetensorError(Exception):
    """Stands in for ``safetensors_rust.SafetensorError``, which reports a full disk in its text only."""


@pytest.mark.parametrize("error", [
    SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left "
                    "on device\" }) os error 28"),
    RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                 "file write failed"),
    OSError(errno.EROFS, "Read-only file system"),
])
def test_any_librarys_write_failure_is_one_line_and_leaves_no_half_written_folder(tmp_path, monkeypatch, error):
    from kdmcse_base import files
    from kdmcse_base.files import WriteFailedError

    monkeypatch.setattr(files, "free_bytes", lambda path: 1024)  # torch's message has no code: a nearly full disk
    folder = RunFolder(tmp_path)

    def failing(new: Path) -> None:
        (new / "model.safetensors").write_bytes(b"half")
        raise error

    with pytest.raises(WriteFailedError) as caught:
        folder.replace("best", failing)
    reason = "Read-only file system" if isinstance(error, OSError) else "No space left on device"
    assert str(caught.value).startswith(f"cannot write {tmp_path / 'best.new'}: {reason}; ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]
    assert folder.state().swaps == {}
    with pytest.raises(WriteFailedError):
        files.atomic_save(tmp_path / "x.pt", lambda handle: (handle.write(b"half"), (_ for _ in ()).throw(error)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_a_real_full_disk_is_one_line_for_torch_and_safetensors(mounted):
    from safetensors.torch import save_file

    from kdmcse_base.files import WriteFailedError, atomic_save

    disk = mounted("tmpfs:256k")
    folder = RunFolder(disk / "run")
    folder.path.mkdir()
    big = {"w": torch.zeros(200_000)}  # 800 kB: more than the disk holds
    with pytest.raises(WriteFailedError, match=r"No space left on device; free space on that disk"):
        atomic_save(folder.checkpoint, lambda handle: torch.save(big, handle), tag=folder.own_state().token)
    with pytest.raises(WriteFailedError, match=r"best.new: No space left on device; free space on that disk"):
        folder.replace("best", lambda new: save_file(big, str(new / "model.safetensors")))
    assert sorted(p.name for p in folder.path.iterdir()) == [STATE_FILE]


def test_a_read_only_folder_is_one_line_and_a_complete_cache_still_opens(mounted, tmp_path):
    from kdmcse_base.files import WriteFailedError, folder_lock

    read_only = mounted("ro")
    with pytest.raises(WriteFailedError, match=rf"^cannot write {read_only / '.lock'}: Read-only file system; "
                                               "choose a writable folder"):
        with folder_lock(read_only, "training"):
            pass

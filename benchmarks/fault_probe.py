"""Fault and bad-input probe: every fault case (damaged cache, bad data, bad config, untrusted run
folder, kill -9), rerun on tiny models through the real command-line scripts, one row each.

    PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/fault_probe.py --report reports/fault_probe.md

Each row records the command, its exit code, the last line of its stderr, and what it left behind:
new cache folders, and ``*.tmp`` / ``*.new`` / ``*.old`` files in the run folder. A row passes when
the run stops with exit code 2 and a one-line error naming what it must name (no traceback, nothing
half-written), or, for the cases that must succeed, when they do. The kill -9 cases (a kill during a
cache build, during training, and inside the ``best/`` swap, each rerun to a bit-identical result)
are the test suite's own kill tests, run by pytest node id; their rows record pass or fail.

The student and the teacher's text tower are a random 2-layer, 32-d BERT (tests/conftest.py's recipe);
the corpora are Wiki1M's first 48 lines and 8 coco2017_mini photos, so each training run takes seconds.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the faults it plants are the test suite's (tests/fault_kit.py)
from fault_kit import CreatesFile, error_message, flip_byte, last_line, plant_pickle_checkpoint  # noqa: E402

TRAIN = ROOT / "scripts" / "train_student.py"
CACHE = ROOT / "scripts" / "cache_teacher.py"
CONFIG = ROOT / "configs" / "offline_default.yaml"
HALF_WRITTEN_SUFFIXES = (".tmp", ".new", ".old")
SUITE_TESTS = (  # the cases that need a kill, a signal, a patched write or a patched loss: run through pytest
    "tests/test_teacher_cache_writer.py::test_resume_after_sigkill_is_bit_identical",
    "tests/test_train.py::test_kill_and_rerun_resumes_to_the_same_weights",
    "tests/test_train.py::test_kill_inside_the_best_swap_leaves_a_complete_best_and_resumes",
    "tests/test_run_folder.py::test_a_kill_anywhere_in_the_swap_leaves_a_complete_folder",
    "tests/test_train.py::test_a_non_finite_loss_stops_the_run_before_anything_is_saved",
    "tests/test_train.py::test_no_finite_dev_score_saves_no_model",
    "tests/test_run_folder.py::test_a_full_disk_during_training_stops_in_one_line_and_a_killed_write_is_cleaned_up",
    "tests/test_run_folder.py::test_a_second_cache_build_waits_for_the_first_and_says_for_whom",
    "tests/test_run_folder.py::test_a_killed_holder_leaves_no_stale_lock",
    "tests/test_teacher_cache_reader.py::test_a_bit_flipped_after_verification_is_caught_on_first_read",
    "tests/test_run_folder.py::test_a_kill_while_the_old_copy_is_removed_is_finished_at_the_next_start",
    "tests/test_run_folder.py::test_any_librarys_write_failure_is_one_line_and_leaves_no_half_written_folder",
    "tests/test_train.py::test_a_signal_checkpoints_the_current_step_and_resumes_without_losing_it",
    "tests/test_machine.py::test_loader_workers_ignore_a_group_signal_and_die_with_a_killed_parent",
    "tests/test_teacher_cache_reader.py::test_a_complete_cache_opens_from_a_read_only_root",
)


@dataclass
class Row:
    """One probed case: what ran, how it ended, and whether that is the wanted clear error or result."""

    case: str
    expected: str
    command: str = ""
    rc: int | None = None
    last_stderr: str = ""
    left_behind: list[str] = field(default_factory=list)
    ok: bool = False
    note: str = ""


@dataclass
class Workspace:
    """The probe's scratch folder: the tiny model, a data directory, and a cache built once."""

    root: Path
    model: Path
    data_dir: Path

    @property
    def cache_root(self) -> Path:
        return self.root / "cache"


# --- building blocks -----------------------------------------------------------------------------------

def build_tiny_bert(folder: Path) -> Path:
    """tests/conftest.py's tiny_bert_dir: a seeded random 2-layer, 32-d BERT + mean pooling, saved."""
    import torch
    from sentence_transformers import SentenceTransformer
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from kdmcse_base.offline_models import minilm_path

    if (folder / "st" / "modules.json").is_file():
        return folder / "st"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=128, hidden_size=32,
                        num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, initializer_range=0.5)
    BertModel(config).save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    model = SentenceTransformer(modules=[Transformer(str(folder / "hf"), max_seq_length=64),
                                         Pooling(config.hidden_size, pooling_mode="mean")])
    model.save(str(folder / "st"))
    return folder / "st"


def train_overrides(ws: Workspace, out: Path, **extra: object) -> list[str]:
    """A 4-step training run on the tiny model (tests/test_train.py's tiny_overrides, two text sources)."""
    values: dict[str, object] = {
        "student.model": ws.model, "student.layers": 1, "student.grounding_dim": 16,
        "teacher.text_model": ws.model, "teacher.batch_size": 32,
        "data.text_sources": "[wiki1m, coco2017_mini]", "data.limits": "{wiki1m: 48, coco2017_mini: 8}",
        "train.output_dir": out, "train.cache_root": ws.cache_root, "train.batch_size": 8,
        "train.max_steps": 4, "train.eval_every": 2, "train.lr": 1e-3, "train.retrieval_holdout_images": 2,
        "train.eval_batch_size": 512, "data_dir": ws.data_dir, "eval_data_dir": shared_data_dir(),
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def shared_data_dir() -> Path:
    from teacher_cache.corpora import resolve_data_dir

    return resolve_data_dir(None)


def run_script(script: Path, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(script), "--config", str(CONFIG), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def show_command(script: Path, args: list[str]) -> str:
    return " ".join([f"{script.parent.name}/{script.name}", *(f"'{a}'" if " " in a else a for a in args)])


def half_written(folder: Path) -> list[str]:
    """Files or folders under ``folder`` whose name says a write was cut short."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(HALF_WRITTEN_SUFFIXES))


def cache_folders(cache_root: Path) -> set[str]:
    return {p.name for p in cache_root.iterdir() if p.is_dir() and not p.name.startswith(".")} if cache_root.exists() else set()


def judge(row: Row, proc: subprocess.CompletedProcess, must_name: list[str], want_rc: int = 2) -> Row:
    """Fill ``row`` from a finished command: ok when it exits ``want_rc`` with a one-line error (no
    traceback) naming every string of ``must_name``, and nothing half-written was left."""
    row.rc, row.last_stderr = proc.returncode, last_line(proc.stderr)
    clean = "Traceback" not in proc.stderr
    message = error_message(proc.stderr)
    named = all(name in message for name in must_name)
    if message.count("\n"):
        row.last_stderr = message.splitlines()[0] + f" (+{message.count(chr(10))} more lines)"
    row.ok = proc.returncode == want_rc and named and (clean or want_rc == 0) and not row.left_behind
    if not row.ok:
        row.note = "; ".join(n for n, bad in [("traceback", not clean), (f"does not name {must_name}", not named),
                                               (f"rc {proc.returncode} != {want_rc}", proc.returncode != want_rc),
                                               ("half-written files left", bool(row.left_behind))] if bad)
    return row


def probe_train(ws: Workspace, row: Row, out: Path, extra: dict[str, object], must_name: list[str],
                want_rc: int = 2) -> Row:
    """Run train_student.py into ``out`` and judge it; a new cache folder counts as half-written on failure."""
    args = train_overrides(ws, out, **extra)
    before = cache_folders(Path(str(extra.get("train.cache_root", ws.cache_root))))
    proc = run_script(TRAIN, args)
    row.command = show_command(TRAIN, args)
    after = cache_folders(Path(str(extra.get("train.cache_root", ws.cache_root))))
    row.left_behind = half_written(out)
    if want_rc != 0:
        row.left_behind += [f"new cache folder {name}" for name in sorted(after - before)]
    return judge(row, proc, must_name, want_rc)


# --- the cases -----------------------------------------------------------------------------------------

def make_workspace(root: Path) -> Workspace:
    """The tiny model, and a data directory holding Wiki1M's prefix and the first 10 coco2017_mini photos."""
    source = shared_data_dir()
    data = root / "data"
    (data / "wiki1m").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "wiki1m" / "wiki1m_for_simcse.prefix.txt", data / "wiki1m" / "wiki1m_for_simcse.prefix.txt")
    mini = data / "images" / "coco2017_mini"
    (mini / "images").mkdir(parents=True, exist_ok=True)
    lines = (source / "images" / "coco2017_mini" / "captions.jsonl").read_text().splitlines()[:10]
    for line in lines:
        image = json.loads(line)["image"]
        shutil.copyfile(source / "images" / "coco2017_mini" / image, mini / image)
    (mini / "captions.jsonl").write_text("".join(line + "\n" for line in lines))
    return Workspace(root, build_tiny_bert(root / "tiny_bert"), data)


def case_baseline(ws: Workspace) -> Row:
    row = Row("baseline: a clean 4-step run (builds the cache the damage cases copy)", "exit 0")
    return probe_train(ws, row, ws.root / "runs" / "baseline", {}, [], want_rc=0)


def damaged_cache_copy(ws: Workspace, name: str) -> tuple[Path, Path]:
    """A copy of the built cache root (file times kept, so its checksum record stays valid) and its text shard."""
    copy = ws.root / name
    shutil.copytree(ws.cache_root, copy, copy_function=shutil.copy2)
    shard = sorted(copy.glob("*/text/shard-*.npy"))[0]
    return copy, shard


def case_flipped_byte(ws: Workspace, keep_mtime: bool) -> Row:
    label = "size and mtime kept" if keep_mtime else "file rewritten"
    row = Row(f"one flipped byte in a text shard ({label}), then train",
              "exit 2 before step 1, naming the shard and the fix")
    cache, shard = damaged_cache_copy(ws, f"cache_flip_{'kept' if keep_mtime else 'new'}")
    flip_byte(shard, keep_mtime)
    out = ws.root / "runs" / f"flip_{keep_mtime}"
    row = probe_train(ws, row, out, {"train.cache_root": cache}, [shard.name, "--verify"])
    if (out / "checkpoint.pt").exists():
        row.ok, row.note = False, "a training step ran (checkpoint.pt written)"
    return row


def case_truncated_shard(ws: Workspace) -> Row:
    row = Row("a truncated shard, then train", "exit 2 naming the file")
    cache, shard = damaged_cache_copy(ws, "cache_truncated")
    with shard.open("r+b") as handle:
        handle.truncate(shard.stat().st_size - 100)
    return probe_train(ws, row, ws.root / "runs" / "truncated", {"train.cache_root": cache}, [shard.name])


def flickr_layout(root: Path, n_images: int = 4) -> Path:
    """A Multi30k task-2 train split of ``n_images`` images and 5 caption files, in a fresh data dir."""
    task = root / "flickr30k" / "multi30k" / "task2"
    (task / "image_splits").mkdir(parents=True, exist_ok=True)
    (task / "raw").mkdir(parents=True, exist_ok=True)
    (task / "image_splits" / "train_images.txt").write_text("".join(f"{1000 + i}.jpg\n" for i in range(n_images)))
    for k in range(1, 6):
        lines = [f"caption {k} of photo {i}" for i in range(n_images)]
        with gzip.open(task / "raw" / f"train.{k}.en.gz", "wt", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
    return task


def case_flickr_extra_line(ws: Workspace) -> Row:
    row = Row("a Flickr30k caption file with one extra line inserted", "exit 2 naming the file and the first surplus line")
    data = ws.root / "flickr_data"
    task = flickr_layout(data)
    target = task / "raw" / "train.3.en.gz"
    lines = gzip.decompress(target.read_bytes()).decode().splitlines()
    lines.insert(1, "an inserted caption that shifts every later one")
    target.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode()))
    cache_root = ws.root / "cache_flickr"
    args = ["--text-model", str(ws.model), "--text-sources", "flickr30k_train", "--image-sources",
            "--data-dir", str(data), "--cache-root", str(cache_root), "--no-progress", "--device", "cpu"]
    proc = run_script(CACHE, args)
    row.command = show_command(CACHE, args)
    row.left_behind = [f"new cache folder {name}" for name in sorted(cache_folders(cache_root))]
    return judge(row, proc, ["train.3.en.gz:5", "first surplus line is 5"])


def plant_empty_caption(ws: Workspace) -> Path:
    """A copy of the workspace's data dir whose first coco2017_mini photo's second caption is empty."""
    data = ws.root / "data_bad_caption"
    shutil.copytree(ws.data_dir, data)
    captions = data / "images" / "coco2017_mini" / "captions.jsonl"
    lines = captions.read_text().splitlines()
    first = json.loads(lines[0])
    first["captions"][1] = "   "
    lines[0] = json.dumps(first)
    captions.write_text("".join(line + "\n" for line in lines))
    return data


def case_skip_bad(ws: Workspace) -> list[Row]:
    data = plant_empty_caption(ws)
    cache_root = ws.root / "cache_skip_bad"
    build = Row("a cache built with --skip-bad (one empty caption)", "exit 0, the row recorded as skipped")
    args = ["--text-model", str(ws.model), "--text-sources", "wiki1m", "coco2017_mini", "--limit", "wiki1m=48",
            "--limit", "coco2017_mini=8", "--data-dir", str(data), "--cache-root", str(cache_root), "--skip-bad",
            "--no-progress", "--device", "cpu", "--batch-size", "32"]
    proc = run_script(CACHE, args)
    build.command = show_command(CACHE, args)
    judge(build, proc, [], want_rc=0)

    trained = Row("... then train with data.skip_bad=true", "exit 0, train_summary.json lists the skipped row")
    out = ws.root / "runs" / "skip_bad"
    probe_train(ws, trained, out, {"data_dir": data, "train.cache_root": cache_root, "data.skip_bad": "true"}, [],
                want_rc=0)
    summary = out / "train_summary.json"
    text = summary.read_text() if summary.is_file() else ""
    if "coco2017_mini:" not in text or "skipped" not in text:
        trained.ok, trained.note = False, "train_summary.json does not list the skipped row"
    else:
        trained.note = "train_summary.json lists " + ", ".join(
            r.get("row_id", "?") for r in _skipped_rows(json.loads(text)))

    refused = Row("... then train without data.skip_bad", "exit 2 naming data.skip_bad")
    probe_train(ws, refused, ws.root / "runs" / "skip_bad_refused",
                {"data_dir": data, "train.cache_root": cache_root}, ["data.skip_bad"])
    return [build, trained, refused]


def _skipped_rows(summary: dict) -> list[dict]:
    for key, value in summary.items():
        if "skip" in key and isinstance(value, list):
            return [v if isinstance(v, dict) else {"row_id": str(v)} for v in value]
    return []


def case_bad_config(ws: Workspace, key: str, value: str) -> Row:
    """A range error: exit 2 naming the key, before any model or data is loaded (no cache, no run folder).
    Keys checked inside their section's own dataclass are named ``section: key``, the others ``section.key``."""
    row = Row(f"{key}={value}", "exit 2 naming the key; nothing loaded or written")
    out = ws.root / "runs" / f"bad_{key}_{abs(hash(value)) % 1000}"
    cache_root = ws.root / f"cache_untouched_{key}_{abs(hash(value)) % 1000}"
    start = time.perf_counter()
    probe_train(ws, row, out, {key: value, "train.cache_root": cache_root}, [key.split(".", 1)[1]])
    seconds = time.perf_counter() - start
    written = [str(p) for p in (out, cache_root) if p.exists()]
    if written:
        row.ok, row.note = False, f"wrote {written}"
    else:
        row.note = f"no run folder, no cache root created; {seconds:.1f} s"
    return row


def copy_run(ws: Workspace, name: str) -> Path:
    """A copy of the baseline run folder, its saved config pointed at the copy (so it resumes there)."""
    run = ws.root / "runs" / name
    shutil.copytree(ws.root / "runs" / "baseline", run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace(str(ws.root / "runs" / "baseline"), str(run)))
    return run


def case_pickle_checkpoint(ws: Workspace) -> Row:
    row = Row("a checkpoint.pt carrying a pickle payload that would create a file", "refused; the file is not created")
    run = copy_run(ws, "pickle")
    marker = ws.root / "PAYLOAD_RAN"
    plant_pickle_checkpoint(run, marker)
    probe_train(ws, row, run, {}, ["checkpoint.pt"])
    if marker.exists():
        row.ok, row.note = False, "the payload ran: the marker file exists"
    else:
        row.note = "marker file not created"
    return row


def case_user_file_in_model(ws: Workspace) -> Row:
    row = Row("a user's file in <output_dir>/model/", "refused naming it; nothing deleted")
    run = copy_run(ws, "user_file")
    note = run / "model" / "my_notes.txt"
    note.write_text("results I care about\n")
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    probe_train(ws, row, run, {}, ["my_notes.txt"])
    after = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    lost = sorted(set(before) - set(after))
    if lost or not note.is_file():
        row.ok, row.note = False, f"deleted: {lost}"
    else:
        row.note = "every file still there"
    return row


def case_suite_tests() -> list[Row]:
    """The suite's kill -9 tests (cache build, training, the best/ swap: rerun -> bit-identical) and its
    tests of signals, divergence, a full disk, lock waiting and damage after verification."""
    rows = []
    for node in SUITE_TESTS:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node]
        proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=1200)
        row = Row(f"suite test: {node.split('::')[1]}", "pytest passes",
                  command=f"python -m pytest -q {node}", rc=proc.returncode, last_stderr=last_line(proc.stdout),
                  ok=proc.returncode == 0, note="run through pytest")
        rows.append(row)
    return rows


BAD_CONFIGS = (("train.batch_size", "0"), ("train.eval_every", "0"), ("train.lr", "-1e-4"), ("train.lr", ".inf"),
               ("train.lr", ".nan"), ("train.lr", "5"), ("teacher.max_seq_length", "-1"), ("train.device", "tpu0"),
               ("data.limits", "{wiki1m: -5}"))


def case_needs_loading(ws: Workspace, name: str, extra: dict[str, object], must_name: list[str]) -> Row:
    """A mistake that shows only once data or the model is loaded: still one line, exit 2."""
    row = Row(f"{name}: " + ", ".join(f"{k}={v}" for k, v in extra.items()), "exit 2, one line naming it")
    return probe_train(ws, row, ws.root / "runs" / f"loading_{len(name)}_{abs(hash(name)) % 1000}", extra, must_name)


def case_manifest_not_json(ws: Workspace) -> Row:
    row = Row("a cache manifest.json that is not JSON, then train", "exit 2 naming manifest.json")
    cache, _ = damaged_cache_copy(ws, "cache_bad_manifest")
    (manifest,) = cache.glob("*/manifest.json")
    manifest.write_text("{not json")
    return probe_train(ws, row, ws.root / "runs" / "bad_manifest", {"train.cache_root": cache}, ["manifest.json"])


def case_second_trainer(ws: Workspace) -> Row:
    """A run folder held by another process (a trainer mid-run): the second is refused naming the pid."""
    row = Row("a second trainer into a run folder another process holds", "exit 2 naming the holder's pid")
    out = ws.root / "runs" / "held"
    holder = subprocess.Popen([sys.executable, str(ROOT / "tests" / "hold_lock.py"), str(out), "training"],
                              stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        probe_train(ws, row, out, {}, [f"in use by process {holder.pid}"])
    finally:
        holder.kill()
        holder.wait()
    return row


def case_user_swap_folder(ws: Workspace) -> Row:
    row = Row("a user's folder named best.new/ in the run folder", "refused naming it; nothing deleted")
    run = copy_run(ws, "user_swap")
    (run / "best.new").mkdir()
    (run / "best.new" / "my_notes.txt").write_text("mine\n")
    args = train_overrides(ws, run)
    proc = run_script(TRAIN, args)
    row.command = show_command(TRAIN, args)
    row.left_behind = [p for p in half_written(run) if p.split("/")[0] != "best.new"]  # the user's own folder
    judge(row, proc, ["best.new"])
    if not (run / "best.new" / "my_notes.txt").is_file():
        row.ok, row.note = False, "the user's folder was taken"
    return row


def case_caption_outside(ws: Workspace) -> Row:
    row = Row("a captions file whose image path climbs out of the image folder", "exit 2 naming the file and line")
    album = ws.root / "album"
    (album / "photos").mkdir(parents=True, exist_ok=True)
    first = sorted((ws.data_dir / "images" / "coco2017_mini").rglob("*.jpg"))[0]
    shutil.copyfile(first, album / "photos" / "a.jpg")
    captions = album / "photos" / "captions.csv"
    climbing = os.path.relpath(first, album / "photos")  # ../../data/images/...: a real photo, outside the folder
    captions.write_text(f"image,caption\na.jpg,a photo\n{climbing},another\n")
    return probe_train(ws, row, ws.root / "runs" / "outside", {
        "data.image_sources": f"[{{captions: {captions}}}]", "data.text_sources": "[wiki1m]",
        "train.retrieval_holdout_images": 0}, [f"{captions}:3", "points outside"])


# --- third pass: a user's copies, finished runs, real full and read-only disks, devices, manifests ---------

def case_user_copies(ws: Workspace) -> list[Row]:
    """``cp -a`` (with and without a file of the user's) and ``mv`` of best/ or model/ to every swap name,
    and user files named like the trainer's temp files: refused naming them, never deleted or moved."""
    rows = []
    for name in ("model.old", "best.old", "model.new", "best.new"):
        for how in ("cp -a", "cp -a + own file", "mv"):
            run = copy_run(ws, f"copy_{name}_{how.replace(' ', '').replace('+', '_')}")
            source, copy = run / name.split(".")[0], run / name
            if how == "mv":
                os.rename(source, copy)
            else:
                shutil.copytree(source, copy, symlinks=True)
            if how.endswith("own file"):
                (copy / "notes.txt").write_text("mine\n")
            rows.append(_refused_untouched(ws, run, Row(f"`{how}` of {name.split('.')[0]}/ to {name}/, then rerun",
                                                        "refused naming it; the copy untouched"), [name]))
    for temp in ("checkpoint.pt.tmp", "config.yaml.tmp-1"):
        run = copy_run(ws, f"temp_{temp}")
        (run / temp).write_text("mine\n")
        rows.append(_refused_untouched(ws, run, Row(f"a user's file named {temp} in the run folder, then rerun",
                                                    "refused naming it; the file untouched"), [temp]))
    return rows


def _refused_untouched(ws: Workspace, run: Path, row: Row, must_name: list[str], **extra: object) -> Row:
    before = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    args = train_overrides(ws, run, **extra)
    row.command = show_command(TRAIN, args)
    judge(row, run_script(TRAIN, args), must_name)
    after = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    if after != before:
        row.ok, row.note = False, f"changed: {sorted(set(before) ^ set(after)) or 'contents'}"
    return row


def case_finished_run(ws: Workspace) -> list[Row]:
    """``rm checkpoint.pt`` after a finished run, then another lr (refused) or the same config (nothing to do)."""
    run = copy_run(ws, "finished")
    (run / "checkpoint.pt").unlink()
    other = _refused_untouched(ws, run, Row("a finished run without checkpoint.pt, rerun with another train.lr",
                                            "refused; nothing replaced"), ["different config", "train.lr"],
                               **{"train.lr": 0.01})
    before = {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    same = Row("the same finished run, rerun with its own config", "exit 0, 'already finished', nothing rewritten")
    args = train_overrides(ws, run)
    proc = run_script(TRAIN, args)
    same.command = show_command(TRAIN, args)
    judge(same, proc, [], want_rc=0)
    after = {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    if "already finished" not in proc.stdout or after != before:
        same.ok, same.note = False, "rewritten" if after != before else "no 'already finished'"
    return [other, same]


def case_flipped_checkpoint_bit(ws: Workspace) -> Row:
    """One exponent bit of one weight flipped in an unfinished run's checkpoint: refused, not resumed from."""
    import torch

    row = Row("one flipped exponent bit in a weight of checkpoint.pt, then resume", "refused naming checkpoint.pt")
    run = copy_run(ws, "flipped_checkpoint")
    shutil.rmtree(run / "model")
    (run / "train_summary.json").unlink()
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    weight = next(t for t in payload["trainable"].values() if t.dtype == torch.float32 and t.numel() > 1)
    weight.view(torch.int32).view(-1)[0] ^= 1 << 23
    torch.save(payload, run / "checkpoint.pt")
    return probe_train(ws, row, run, {}, ["checkpoint.pt", "damaged"])


def mount(point: Path, kind: str) -> bool:
    """Mount a tmpfs (``tmpfs:SIZE``) or the folder itself read-only (``ro``) at ``point``; False where
    this machine gives no privilege to mount."""
    point.mkdir(parents=True, exist_ok=True)
    command = (["mount", "-t", "tmpfs", "-o", f"size={kind.split(':')[1]}", "tmpfs", str(point)]
               if kind.startswith("tmpfs:") else ["mount", "--bind", "-o", "ro", str(point), str(point)])
    return shutil.which("mount") is not None and subprocess.run(command, capture_output=True).returncode == 0


def unmount(point: Path) -> None:
    subprocess.run(["umount", "--lazy", str(point)], capture_output=True)


def case_full_disk(ws: Workspace) -> list[Row]:
    """Training into a run folder on a real tmpfs of each size: one line, nothing half-written."""
    rows = []
    for size in ("40k", "1m", "4m", "18m"):
        point = ws.root / f"tmpfs_{size}"
        row = Row(f"training into a run folder on a full disk (tmpfs of {size})",
                  "exit 2, one line naming the path and 'No space left'")
        if not mount(point, f"tmpfs:{size}"):
            rows.append(Row(row.case, row.expected, ok=True, note="skipped: no privilege to mount a tmpfs here"))
            continue
        try:
            probe_train(ws, row, point / "run", {}, ["No space left on device"])
            row.left_behind += [p.name for p in (point / "run").glob("*") if ".tmp-" in p.name]
        finally:
            unmount(point)
        rows.append(row)
    return rows


def case_read_only(ws: Workspace) -> list[Row]:
    """A read-only run folder is one line; a complete cache under a read-only root still trains."""
    run_point, cache_point = ws.root / "ro_runs", ws.root / "ro_cache"
    shutil.copytree(ws.cache_root, cache_point, ignore=shutil.ignore_patterns(".build.lock"))
    if not (mount(run_point, "ro") and mount(cache_point, "ro")):
        unmount(run_point)
        return [Row("read-only run folder and cache root", "", ok=True, note="skipped: no privilege to mount here")]
    try:
        folder = probe_train(ws, Row("training into a read-only run folder", "exit 2, one line: read-only"),
                             run_point / "run", {}, ["Read-only file system"])
        cache = probe_train(ws, Row("training from a complete cache under a read-only cache root", "exit 0"),
                            ws.root / "runs" / "from_read_only_cache", {"train.cache_root": cache_point}, [], want_rc=0)
    finally:
        unmount(run_point)
        unmount(cache_point)
    return [folder, cache]


def case_manifest_shape(ws: Workspace, name: str, damage) -> Row:
    row = Row(f"a cache manifest.json of the wrong shape ({name}), then train", "exit 2 naming manifest.json")
    cache, _ = damaged_cache_copy(ws, f"cache_shape_{len(name)}")
    (manifest,) = cache.glob("*/manifest.json")
    manifest.write_text(json.dumps(damage(json.loads(manifest.read_text()))))
    return probe_train(ws, row, ws.root / "runs" / f"shape_{len(name)}", {"train.cache_root": cache}, ["manifest.json"])


def case_planted_pickles(ws: Workspace) -> list[Row]:
    """evaluate.py on a model whose weights file is a pickle payload, evaluate_retrieval.py on planted heads."""
    import torch

    marker = ws.root / "PAYLOAD_RAN_EVAL"
    model = ws.root / "pickled_model"
    shutil.copytree(ws.model, model)
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    torch.save({"weight": CreatesFile(marker)}, model / "pytorch_model.bin")
    evaluate = case_evaluate(ws, "a weights file carrying a pickle payload", ["--model", str(model)],
                             ["not a safe checkpoint", "it was not loaded"])
    run = copy_run(ws, "pickled_heads")
    torch.save({"shapes": CreatesFile(marker)}, run / "grounding_heads.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    args = ["--run", str(run), "--out", str(ws.root / "retrieval_out.json")]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate_retrieval.py"), *args], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    retrieval = judge(Row("scripts/evaluate_retrieval.py: grounding heads carrying a pickle payload",
                          "exit 2, one line naming it", command="scripts/evaluate_retrieval.py " + " ".join(args)),
                      proc, ["grounding_heads.pt", "not a safe checkpoint"])
    for row, stderr in ((evaluate, evaluate.last_stderr), (retrieval, proc.stderr)):
        if "weights_only" in stderr or marker.exists():
            row.ok, row.note = False, "suggests weights_only=False" if "weights_only" in stderr else "the payload ran"
    return [evaluate, retrieval]


DEVICE_CONFIGS = (("train.device", "cuda"), ("train.device", "cuda:7"), ("train.device", "mps"),
                  ("train.device", "meta"), ("teacher.device", "cuda"))


def run_evaluate(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


def case_evaluate(ws: Workspace, name: str, args: list[str], must_name: list[str]) -> Row:
    row = Row(f"scripts/evaluate.py: {name}", "exit 2, one line naming it")
    row.command = "scripts/evaluate.py " + " ".join(args)
    return judge(row, run_evaluate(args + ["--out", str(ws.root / "eval_out.json")]), must_name)


def run_all(root: Path, with_kill_tests: bool = True) -> list[Row]:
    ws = make_workspace(root)
    rows = [case_baseline(ws)]
    rows += [case_flipped_byte(ws, keep_mtime=False), case_flipped_byte(ws, keep_mtime=True),
             case_truncated_shard(ws), case_flickr_extra_line(ws), *case_skip_bad(ws)]
    rows += [case_bad_config(ws, key, value) for key, value in BAD_CONFIGS]
    rows += [case_pickle_checkpoint(ws), case_user_file_in_model(ws), case_user_swap_folder(ws),
             case_second_trainer(ws), case_manifest_not_json(ws), case_caption_outside(ws)]
    rows += [case_needs_loading(ws, "more student layers than the model has", {"student.layers": 7}, ["student.layers"]),
             case_needs_loading(ws, "a holdout larger than the image set", {"train.retrieval_holdout_images": 8},
                                ["train.retrieval_holdout_images"]),
             case_needs_loading(ws, "a source smaller than one batch", {"train.batch_size": 500}, ["train.batch_size"]),
             case_needs_loading(ws, "no sources", {"data.text_sources": "[]", "data.image_sources": "[]"}, ["no sources"])]
    plain_file = ws.root / "weights.bin"
    plain_file.write_text("not a model")
    rows += [case_evaluate(ws, "a misspelled model path", ["--model", str(ws.root / "runs" / "typo" / "model")],
                           ["typo"]),
             case_evaluate(ws, "a plain file as the model", ["--model", str(plain_file)], ["is a file"]),
             case_evaluate(ws, "no eval data", ["--model", str(ws.model), "--data-dir", str(ws.root / "nowhere"),
                                                "--no-progress"], ["nowhere", "not found", "--data-dir"])]
    rows += [*case_user_copies(ws), *case_finished_run(ws), case_flipped_checkpoint_bit(ws), *case_full_disk(ws),
             *case_read_only(ws), *case_planted_pickles(ws)]
    rows += [case_manifest_shape(ws, "[]", lambda m: []),
             case_manifest_shape(ws, "no image section", lambda m: {**m, "modalities": {"text": m["modalities"]["text"]}})]
    if torch_has_no_gpu():
        rows += [case_bad_config(ws, key, value) for key, value in DEVICE_CONFIGS]
    if with_kill_tests:
        rows += case_suite_tests()
    return rows


def torch_has_no_gpu() -> bool:
    import torch

    return not torch.cuda.is_available()


# --- report --------------------------------------------------------------------------------------------

def markdown(rows: list[Row], command: str, seconds: float) -> str:
    passed = sum(row.ok for row in rows)
    lines = ["# Fault and bad-input probe", "", "Generated by:", "", "```", command, "```", "",
             f"{passed} of {len(rows)} cases give a clear error or an identical result ({seconds:.0f} s on this "
             "machine, tiny models). Each command below ran with `--config configs/offline_default.yaml`; "
             "paths are the probe's scratch folder.", "",
             "| # | case | wanted | rc | last line of stderr | half-written left | verdict |",
             "|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, start=1):
        stderr = row.last_stderr.replace("|", "\\|")
        verdict = ("ok" if row.ok else "**FAIL**") + (f": {row.note}" if row.note else "")
        lines.append(f"| {i} | {row.case} | {row.expected} | {row.rc} | {stderr} | "
                     f"{', '.join(row.left_behind) or 'none'} | {verdict} |")
    lines += ["", "## Commands", ""]
    for i, row in enumerate(rows, start=1):
        lines += [f"{i}. `{row.command}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", type=Path, help="write the markdown table here (default: print it)")
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default: a fresh temporary one, removed)")
    parser.add_argument("--skip-kill-tests", action="store_true", help="leave out the rows run through pytest")
    args = parser.parse_args(argv)
    command = "PYTHONPATH=. HF_HUB_OFFLINE=1 python benchmarks/fault_probe.py " + " ".join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fault_probe_") as scratch:
        root = args.work_dir or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        rows = run_all(root, with_kill_tests=not args.skip_kill_tests)
    report = markdown(rows, command.strip(), time.perf_counter() - start)
    if args.report:
        args.report.write_text(report)
    print(report)
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())

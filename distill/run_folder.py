"""A training run's folder, its layout owned by one type (``RunFolder``): what the trainer writes, what
the project's scripts may add after training, and how a folder is replaced whole.

.. code-block:: text

    runs/NAME/
        .lock                  held by the one trainer (or script) writing here (kdmcse_base.files)
        config.yaml            the resolved config; a resumed run must match it (check_resumable)
        checkpoint.pt          weights, optimiser, every rank's RNG states (distill/checkpoint.py)
        best/  model/          encoder folders, replaced whole; each lists its files in .trainer_files.json
        grounding_heads.pt     the training-only grounding heads (retrieval reads them)
        train_summary.json     ``TrainSummary``
        dev_curve.png          STS-B dev against the step, redrawn at each evaluation (distill/dev_curve.py)
        tensorboard/           event files
      added after training by the project's scripts (``REPORTS``; the trainer never touches them):
        eval/                  scripts/evaluate.py's results
        demo.md  demo.json     scripts/demo.py
        results.json           benchmarks/offline_distill.py

The folder belongs to one trainer at a time and holds nothing else: a start refuses any other entry
(``foreign_entries``). ``best/`` and ``model/`` are replaced by writing ``<name>.new/`` (marked as the
trainer's until sealed) and exchanging it with the old one atomically (``exchange``); where the
filesystem cannot, the old one is renamed to ``<name>.old/`` and the new one into place, and a start
after a kill finishes or undoes that swap (``RunFolder.recover``).
"""
from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.config import ConfigError, RunConfig, load_config, to_dict
from kdmcse_base.files import LOCK_FILE, WriteFailedError, atomic_write, json_bytes

CONFIG, CHECKPOINT, SUMMARY, DEV_CURVE = "config.yaml", "checkpoint.pt", "train_summary.json", "dev_curve.png"
HEADS_FILE = "grounding_heads.pt"
"""The grounding head and teacher adapters of a run (``GroundingHeads.save``), for retrieval evaluation:
kept in the run folder beside ``model/``, never inside the published model."""
TRAINER_FILES = {CONFIG, CHECKPOINT, SUMMARY, HEADS_FILE, LOCK_FILE, DEV_CURVE}
# ...and their temp files while being written (``kdmcse_base.files.atomic_save``; ``.tmp`` from older versions)
TRAINER_TEMP_FILE = re.compile(f"({'|'.join(map(re.escape, (CONFIG, CHECKPOINT, SUMMARY, HEADS_FILE, DEV_CURVE)))})" + r"\.tmp(-\d+)?")
EVAL_DIR, DEMO_MARKDOWN, DEMO_JSON, RESULTS = "eval", "demo.md", "demo.json", "results.json"
REPORTS = {EVAL_DIR, DEMO_MARKDOWN, DEMO_JSON, RESULTS}
ENCODER_FOLDERS = ("best", "model")
TENSORBOARD = "tensorboard"
SWAP_SUFFIXES = (".new", ".old")
LISTING = ".trainer_files.json"
SWAP_MARK = ".trainer_swap"  # in a folder being written by replace_folder, until it is sealed
# Keys a resumed run may change: they leave every number of the run as it was.
RESULT_NEUTRAL_KEYS = {"train.loader_workers", "train.export", "card.license", "card.repo_id"}


class RunFolderError(ValueError):
    """The output folder cannot be used as it is; the message names what and says what to do."""


@dataclass
class TrainSummary:
    """``train_summary.json``: what a finished run reports about its training (the trainer's, and
    ``benchmarks/st_recipe.py``'s for sentence-transformers' trainer, which leaves the run-only fields
    at their defaults)."""

    steps: int
    best_step: int
    best_stsb_dev: float
    train_seconds: float
    dev_history: list[tuple[int, float]]
    device: str
    effective_batch_size: int
    world_size: int = 1
    baseline_stsb_dev: float | None = None  # STS-B dev of the student before its first step
    heldout_image_ids: list[str] = field(default_factory=list)  # retrieval's test images, never trained on
    skipped_rows: list[dict[str, Any]] = field(default_factory=list)  # bad rows data.skip_bad left out

    @property
    def steps_per_second(self) -> float:
        return self.steps / max(self.train_seconds, 1e-9)

    @property
    def kept_starting_point(self) -> bool:
        """No evaluation beat the untrained student, whose weights are then the run's model."""
        return self.best_step == 0

    def describe(self, model_dir: Path, precision: str) -> str:
        """The end-of-run summary a researcher reads: baseline, best and last dev, time, where the model
        is, and what to run next."""
        last = f", last {self.dev_history[-1][1]:.2f} at step {self.dev_history[-1][0]}" if self.dev_history else ""
        start = f"{self.baseline_stsb_dev:.2f} before training -> " if self.baseline_stsb_dev is not None else ""
        kept = " (the untrained student: no evaluation beat it)" if self.kept_starting_point else ""
        return "\n".join([
            f"done: {self.steps} steps in {self.train_seconds / 60:.1f} min ({self.steps_per_second:.2f} steps/s, "
            f"{precision}, {self.device})",
            f"STS-B dev: {start}best {self.best_stsb_dev:.2f} at step {self.best_step}{kept}{last}",
            f"model: {model_dir} (dev curve: {model_dir.parent / DEV_CURVE})",
            f"next:  python scripts/evaluate.py --model {model_dir} --tasks sts,transfer",
            f"       python scripts/export.py {model_dir}",
            f"       python scripts/publish.py {model_dir} --repo-id YOU/NAME --dry-run"])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps_per_second": self.steps_per_second,
                "kept_starting_point": self.kept_starting_point}


@dataclass(frozen=True)
class RunFolder:
    """The folder of one training run (``train.output_dir``); see the module docstring for its layout."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def best(self) -> Path:
        return self.path / "best"

    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def dev_curve(self) -> Path:
        return self.path / DEV_CURVE

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def eval_dir(self) -> Path:
        return self.path / EVAL_DIR

    @property
    def demo_markdown(self) -> Path:
        return self.path / DEMO_MARKDOWN

    @property
    def demo_json(self) -> Path:
        return self.path / DEMO_JSON

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def heads(self) -> Path:
        """The grounding heads: the run's own file, or ``model/``'s in runs saved before it moved out."""
        own = self.path / HEADS_FILE
        return own if own.is_file() or not (self.model / HEADS_FILE).is_file() else self.model / HEADS_FILE

    def write_summary(self, summary: TrainSummary) -> None:
        atomic_write(self.summary, json_bytes(summary.to_dict()))

    def heldout_image_ids(self) -> list[str]:
        """The images training held out (retrieval's test set), as the summary lists them; read by key,
        so summaries of earlier versions (fewer fields) still answer."""
        return list(json.loads(self.summary.read_text()).get("heldout_image_ids") or [])

    def foreign_entries(self) -> list[str]:
        return foreign_entries(self.path)

    def refuse_foreign_entries(self) -> None:
        foreign = self.foreign_entries()
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise RunFolderError(f"train.output_dir={self.path} holds files this trainer did not write ({shown}); "
                                 "choose a new or empty folder, or move them away")

    def recover(self) -> None:
        """Remove a killed write's temp files and finish or undo an interrupted swap (under the lock)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in (p for p in self.path.iterdir() if TRAINER_TEMP_FILE.fullmatch(p.name)):
            stale.unlink()
        for name in ENCODER_FOLDERS:
            recover_swap(self.path / name)


def foreign_entries(out: Path) -> list[str]:
    """Paths in ``out`` (relative to it) that this trainer does not write."""
    if not out.exists():
        return []
    if not out.is_dir():
        return [str(out)]
    swap_folders = {name + suffix for name in ENCODER_FOLDERS for suffix in SWAP_SUFFIXES}
    foreign = []
    for entry in sorted(out.iterdir()):
        if entry.is_file() and (entry.name in TRAINER_FILES or TRAINER_TEMP_FILE.fullmatch(entry.name)) \
                or entry.is_dir() and entry.name in swap_folders and is_trainer_swap(entry) \
                or entry.name in REPORTS:
            continue
        if entry.is_dir() and entry.name == TENSORBOARD:
            foreign += [f"tensorboard/{p.name}" for p in sorted(entry.iterdir())
                        if not (p.is_file() and p.name.startswith("events.out.tfevents."))]
        elif entry.is_dir() and entry.name in ENCODER_FOLDERS:
            foreign += [f"{entry.name}/{p}" for p in unlisted_files(entry)]
        else:
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return foreign


def replace_folder(target: Path, write: Callable[[Path], None]) -> None:
    """Write ``target`` anew so that ``target`` is complete at every instant, old or new.

    ``write`` fills ``<target>.new`` (created and marked as the trainer's first, so a user folder of that
    name is never taken for it), which is sealed, then exchanged with ``target`` in one atomic step
    (``exchange``); the old content, now at ``.new``, is removed. Where the filesystem cannot exchange,
    two renames do it (``target`` -> ``.old``, ``.new`` -> ``target``): a kill between them leaves both
    complete and ``recover_swap`` puts the right one back at the next start."""
    new, old = target.with_name(target.name + ".new"), target.with_name(target.name + ".old")
    shutil.rmtree(new, ignore_errors=True)  # a kill's leftover, ours by its mark (claim_run_folder checked)
    try:
        new.mkdir()
        (new / SWAP_MARK).write_text(f"{os.getpid()}\n")
        write(new)
        seal(new)
    except (OSError, WriteFailedError) as err:  # e.g. a full disk: no half-written folder stays behind
        shutil.rmtree(new, ignore_errors=True)
        raise err if isinstance(err, WriteFailedError) else WriteFailedError(new, err) from None
    if target.exists() and exchange(new, target):
        shutil.rmtree(new)
        return
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the C
    library or the filesystem cannot (other systems, some network filesystems)."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a))


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def is_trainer_swap(folder: Path) -> bool:
    """A ``.new`` / ``.old`` folder the trainer made: sealed, marked, or empty (a kill right after mkdir)."""
    return is_complete(folder) or (folder / SWAP_MARK).is_file() or not any(folder.iterdir())


def recover_swap(target: Path) -> None:
    """Finish a ``replace_folder`` a kill interrupted: a sealed ``.new`` replaces a missing target,
    an unsealed one is discarded, and ``.old`` goes once the target is there."""
    new, old = target.with_name(target.name + ".new"), target.with_name(target.name + ".old")
    if new.is_dir():
        if not target.exists() and is_complete(new):
            os.replace(new, target)
        else:
            shutil.rmtree(new)
    if old.is_dir():
        if target.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, target)


def seal(folder: Path) -> None:
    """List the folder's files in ``LISTING``, written last: the folder is complete from then on
    (and the listing, not the swap mark, says it is the trainer's)."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != SWAP_MARK)
    atomic_write(folder / LISTING, json.dumps(files, indent=0).encode())
    (folder / SWAP_MARK).unlink(missing_ok=True)


def is_complete(folder: Path) -> bool:
    return (folder / LISTING).is_file()


def unlisted_files(folder: Path) -> list[str]:
    """Files of an encoder folder that its listing does not name (all of them when it has none)."""
    listed = set(json.loads((folder / LISTING).read_text())) if is_complete(folder) else set()
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {LISTING, SWAP_MARK}
    return sorted(present - listed)


def check_resumable(cfg: RunConfig, out: Path) -> None:
    """Refuse to resume a run whose saved config differs: that would silently mix two experiments."""
    saved = out / CONFIG
    if not (out / CHECKPOINT).is_file() or not saved.is_file():
        return
    try:
        before = to_dict(load_config(saved))  # keys added since that run compare as their defaults
    except ConfigError as err:  # e.g. written before a key was renamed: say which folder, not a traceback
        raise RunFolderError(f"{saved} cannot be resumed with this version ({err}); choose another "
                             "train.output_dir or delete that folder to start over") from None
    now = to_dict(cfg)
    changed = sorted(set(_diff_keys(before, now)) - RESULT_NEUTRAL_KEYS)
    if changed:
        raise RunFolderError(f"{out} holds a run with a different config ({', '.join(changed)}); "
                             "choose another train.output_dir or delete that folder to start over")


def _diff_keys(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
        yield prefix.rstrip(".")

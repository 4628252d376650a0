"""A training run's folder, its layout owned by one type (``RunFolder``): what the trainer writes, what
the project's scripts may add after training, and how a folder is replaced whole.

.. code-block:: text

    runs/NAME/
        .lock                  held by the one trainer (or script) writing here (kdmcse_base.files)
        .trainer_state.json    the run's own marks: its token, whether it wrote a checkpoint, swaps under way
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
(``foreign_entries``), and only what the trainer can prove it wrote is ever removed or moved. The proof
lives in ``.trainer_state.json``, never in a folder a user could copy: temp files carry the run's random
token in their names, and a swap under way is journaled with the inodes of the two folders it moves, so
``cp -a model model.old`` or ``mv model model.old`` is a user's folder (refused, named), not a leftover.

``best/`` and ``model/`` are replaced by writing ``<name>.new/`` and exchanging it with the old one
atomically (``exchange``: Linux ``renameat2(RENAME_EXCHANGE)``, which ext4, XFS, Btrfs, tmpfs and
overlayfs support; NFS, most FUSE filesystems and other systems do not); where the filesystem cannot,
the old one is renamed to ``<name>.old/`` and the new one into place, so ``best/`` is missing between a
kill there and the next start. A start after a kill finishes or undoes the swap and removes a half-removed
old copy (``RunFolder.recover``).
"""
from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.config import ConfigError, RunConfig, load_config, to_dict
from kdmcse_base.files import LOCK_FILE, WriteFailedError, atomic_write, json_bytes, write_failure

CONFIG, CHECKPOINT, SUMMARY, DEV_CURVE = "config.yaml", "checkpoint.pt", "train_summary.json", "dev_curve.png"
STATE_FILE = ".trainer_state.json"
HEADS_FILE = "grounding_heads.pt"
"""The grounding head and teacher adapters of a run (``GroundingHeads.save``), for retrieval evaluation:
kept in the run folder beside ``model/``, never inside the published model."""
WRITTEN_FILES = (CONFIG, CHECKPOINT, SUMMARY, HEADS_FILE, DEV_CURVE, STATE_FILE)
TRAINER_FILES = {*WRITTEN_FILES, LOCK_FILE}
EVAL_DIR, DEMO_MARKDOWN, DEMO_JSON, RESULTS = "eval", "demo.md", "demo.json", "results.json"
REPORTS = {EVAL_DIR, DEMO_MARKDOWN, DEMO_JSON, RESULTS}
ENCODER_FOLDERS = ("best", "model")
TENSORBOARD = "tensorboard"
SWAP_SUFFIXES = (".new", ".old")
LISTING = ".trainer_files.json"
# Keys a resumed run may change: they leave every number of the run as it was (a moved folder resumes too).
RESULT_NEUTRAL_KEYS = {"train.loader_workers", "train.export", "train.output_dir", "train.report_to", "card.license",
                       "card.repo_id"}


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
    compiled_graphs: int | None = None  # graphs train.compile built (None: not compiled)

    @property
    def steps_per_second(self) -> float:
        return self.steps / max(self.train_seconds, 1e-9)

    @property
    def kept_starting_point(self) -> bool:
        """No evaluation beat the untrained student, whose weights are then the run's model."""
        return self.best_step == 0

    def compiled(self) -> str:
        if self.compiled_graphs is None:
            return ""
        if self.compiled_graphs == 0:
            return ", train.compile: no graph compiled, every step ran eagerly"
        return f", torch.compile: {self.compiled_graphs} graph{'s' if self.compiled_graphs > 1 else ''}"

    def describe(self, model_dir: Path, precision: str) -> str:
        """The end-of-run summary a researcher reads: baseline, best and last dev, time, where the model
        is, and what to run next."""
        last = f", last {self.dev_history[-1][1]:.2f} at step {self.dev_history[-1][0]}" if self.dev_history else ""
        start = f"{self.baseline_stsb_dev:.2f} before training -> " if self.baseline_stsb_dev is not None else ""
        kept = " (the untrained student: no evaluation beat it)" if self.kept_starting_point else ""
        return "\n".join([
            f"done: {self.steps} steps in {self.train_seconds / 60:.1f} min ({self.steps_per_second:.2f} steps/s, "
            f"{precision}, {self.device}{self.compiled()})",
            f"STS-B dev: {start}best {self.best_stsb_dev:.2f} at step {self.best_step}{kept}{last}",
            f"model: {model_dir} (dev curve: {model_dir.parent / DEV_CURVE})",
            f"next:  python scripts/evaluate.py --model {model_dir} --tasks sts,transfer",
            f"       python scripts/export.py {model_dir}",
            f"       python scripts/publish.py {model_dir} --repo-id YOU/NAME --dry-run"])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps_per_second": self.steps_per_second,
                "kept_starting_point": self.kept_starting_point}


@dataclass
class TrainerState:
    """``.trainer_state.json``: what proves a file or folder in the run folder is the trainer's own."""

    token: str  # random, in the names of the run's temp files
    checkpointed: bool = False  # a checkpoint was written: its absence later means it was removed
    swaps: dict[str, list[int | None]] = field(default_factory=dict)  # folder -> inodes [new, old] of a swap under way

    @classmethod
    def read(cls, path: Path) -> TrainerState | None:
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as err:
            raise RunFolderError(f"{path} is not the trainer's state file ({err}); choose a new train.output_dir "
                                 "or delete that folder to start over") from None

    def temp_file(self, name: str) -> bool:
        """``name`` is a temp file of this run's (``kdmcse_base.files.temp_name`` with the run's token)."""
        return re.fullmatch(f"({'|'.join(map(re.escape, WRITTEN_FILES))})" + rf"\.tmp-\d+-{re.escape(self.token)}",
                            name) is not None

    def swap_folder(self, folder: Path) -> bool:
        """``folder`` (``best.new`` ...) is one a journaled swap of this run moved: same name, same inode."""
        name = folder.name.rsplit(".", 1)[0]
        return folder.name.rsplit(".", 1)[-1] in ("new", "old") and folder.stat().st_ino in self.swaps.get(name, [])


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

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    def state(self) -> TrainerState | None:
        return TrainerState.read(self.state_file)

    def own_state(self) -> TrainerState:
        """The run's state, created with a fresh token at its first start."""
        state = self.state()
        if state is None:
            state = TrainerState(token=secrets.token_hex(6))
            self.save_state(state)
        return state

    def save_state(self, state: TrainerState) -> None:
        atomic_write(self.state_file, json_bytes(asdict(state)), tag=state.token)

    def write(self, path: Path, data: bytes) -> None:
        """Write a file of the run atomically, its temp name carrying the run's token."""
        atomic_write(path, data, tag=self.own_state().token)

    def write_summary(self, summary: TrainSummary) -> None:
        self.write(self.summary, json_bytes(summary.to_dict()))

    def note_checkpoint(self) -> None:
        state = self.own_state()
        if not state.checkpointed:
            state.checkpointed = True
            self.save_state(state)

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
        """Remove this run's temp files a kill left and finish or undo its interrupted swaps (under the
        lock); what the state file does not prove the run's is left alone (``foreign_entries`` refused it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        state = self.own_state()
        for stale in (p for p in self.path.iterdir() if p.is_file() and state.temp_file(p.name)):
            stale.unlink()
        for name in ENCODER_FOLDERS:
            self._recover_swap(name, state)
            for suffix in SWAP_SUFFIXES:  # a kill right after a swap's mkdir leaves it empty
                leftover = self.path / (name + suffix)
                if leftover.is_dir() and not any(leftover.iterdir()):
                    leftover.rmdir()
        if state.swaps:
            state.swaps = {}
            self.save_state(state)

    def _swap_paths(self, name: str) -> tuple[Path, Path, Path]:
        """The encoder folder ``name`` and the ``.new`` / ``.old`` folders of its swap."""
        target = self.path / name
        return target, *(target.with_name(name + suffix) for suffix in SWAP_SUFFIXES)

    def _recover_swap(self, name: str, state: TrainerState) -> None:
        """Finish a swap a kill interrupted: a sealed ``.new`` replaces a missing target, an unsealed one
        is discarded, and the old copy goes (even half-removed) once the target is there."""
        target, new, old = self._swap_paths(name)
        if new.is_dir() and state.swap_folder(new):
            if not target.exists() and is_complete(new):
                os.replace(new, target)
            else:
                shutil.rmtree(new)
        if old.is_dir() and state.swap_folder(old):
            if target.exists():
                shutil.rmtree(old)
            else:
                os.replace(old, target)

    def replace(self, name: str, write: Callable[[Path], None]) -> None:
        """Write the encoder folder ``name`` anew so that it is complete at every instant, old or new.

        ``write`` fills ``<name>.new``, which is sealed, then exchanged with ``<name>`` in one atomic step
        (``exchange``); the old content, now at ``.new``, is removed. Where the filesystem cannot
        exchange, two renames do it (``name`` -> ``.old``, ``.new`` -> ``name``). The swap is journaled
        (both folders' inodes) first, so the next start can finish it and never mistakes a user's copy
        for it. A failed write (a full disk, whatever library reports it) removes ``.new`` and is a
        ``WriteFailedError``."""
        target, new, old = self._swap_paths(name)
        for stray in (new, old):
            if stray.exists():
                raise RunFolderError(f"{stray} appeared in the run folder during training; move it away and rerun")
        state = self.own_state()
        try:
            new.mkdir()
            state.swaps[name] = [new.stat().st_ino, target.stat().st_ino if target.exists() else None]
            self.save_state(state)
            write(new)
            seal(new, state.token)
        except BaseException as err:
            shutil.rmtree(new, ignore_errors=True)  # no half-written folder stays behind
            self._forget_swap(name, state)
            failure = write_failure(err, new)
            if failure is None:
                raise
            raise failure from None
        if not (target.exists() and exchange(new, target)):
            if target.exists():
                os.replace(target, old)
            os.replace(new, target)
        shutil.rmtree(new, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        self._forget_swap(name, state)

    def _forget_swap(self, name: str, state: TrainerState) -> None:
        state.swaps.pop(name, None)
        try:
            self.save_state(state)
        except WriteFailedError:  # a full disk: the entry names no folder any more, the next start drops it
            pass


def run_of(encoder_folder: Path) -> Path | None:
    """The run folder an encoder folder belongs to (``runs/NAME/model`` or ``.../best`` beside its
    ``config.yaml``), or None for any other folder: what evaluation results and a card's model-index are
    named after."""
    folder = Path(encoder_folder).resolve()
    return folder.parent if folder.name in ENCODER_FOLDERS and (folder.parent / CONFIG).is_file() else None


def foreign_entries(out: Path) -> list[str]:
    """Paths in ``out`` (relative to it) that this trainer does not write, or cannot prove it wrote."""
    if not out.exists():
        return []
    if not out.is_dir():
        return [str(out)]
    state = TrainerState.read(out / STATE_FILE) or TrainerState(token="")
    swap_folders = {name + suffix for name in ENCODER_FOLDERS for suffix in SWAP_SUFFIXES}
    foreign = []
    for entry in sorted(out.iterdir()):
        if entry.is_file() and (entry.name in TRAINER_FILES or state.token and state.temp_file(entry.name)) \
                or entry.is_dir() and entry.name in swap_folders and (state.swap_folder(entry) or not any(entry.iterdir())) \
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


def seal(folder: Path, tag: str = "") -> None:
    """List the folder's files in ``LISTING``, written last: the folder is complete from then on."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    atomic_write(folder / LISTING, json.dumps(files, indent=0).encode(), tag=tag)


def is_complete(folder: Path) -> bool:
    return (folder / LISTING).is_file()


def unlisted_files(folder: Path) -> list[str]:
    """Files of an encoder folder that its listing does not name (all of them when it has none)."""
    listed = set(json.loads((folder / LISTING).read_text())) if is_complete(folder) else set()
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {LISTING}
    return sorted(present - listed)


def check_resumable(cfg: RunConfig, out: Path) -> bool:
    """Refuse a folder whose run cannot go on as ``cfg`` says; True when it holds this very run, finished.

    A saved config that differs is refused, with or without a checkpoint (starting over would replace a
    finished run's ``best/`` and ``model/``); a run whose checkpoint was written and later removed, and
    that has no summary, cannot be resumed and is refused too."""
    saved = out / CONFIG
    if not saved.is_file():
        return False
    try:
        before = to_dict(load_config(saved))  # keys added since that run compare as their defaults
    except ConfigError as err:  # e.g. written before a key was renamed: say which folder, not a traceback
        raise RunFolderError(f"{saved} cannot be resumed with this version ({err}); choose another "
                             "train.output_dir or delete that folder to start over") from None
    changed = sorted(set(_diff_keys(before, to_dict(cfg))) - RESULT_NEUTRAL_KEYS)
    if changed:
        kind = "a run" if (out / CHECKPOINT).is_file() else "a finished or stopped run"
        raise RunFolderError(f"{out} holds {kind} with a different config ({', '.join(changed)}); "
                             "choose another train.output_dir or delete that folder to start over")
    if (out / CHECKPOINT).is_file():
        return False
    if (out / SUMMARY).is_file() and is_complete(out / "model"):
        return True
    state = TrainerState.read(out / STATE_FILE)
    if state is not None and state.checkpointed:
        raise RunFolderError(f"{out} holds a run whose {CHECKPOINT} was removed before it finished: it cannot be "
                             "resumed; choose another train.output_dir or delete that folder to start over")
    return False


def _diff_keys(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
        yield prefix.rstrip(".")

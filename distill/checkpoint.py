"""``checkpoint.pt``: everything a killed or stopped run needs to go on exactly where it was.

One file, written by rank 0 (atomically): the state dicts of the run's stateful parts (weights,
optimiser, schedule, gradient scaler), the run's own state as plain types, and every rank's
CPU/CUDA/numpy/python RNG states, and a sha256 of all of it (``payload_digest``), checked before
anything is restored, so a flipped bit on disk is refused rather than resumed from. It is read with
``torch.load(weights_only=True)``, so a planted pickle never runs; a file that is not a checkpoint, or
whose checksum does not match, is a ``RunFolderError`` naming it.
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from distill.run import RunState, TrainingRun, format_score
from distill.run_folder import RunFolderError
from kdmcse_base.files import atomic_save
from kdmcse_base.process_group import DistEnv
from kdmcse_base.torch_files import UnsafeFileError, load_tensors, payload_digest


CHECKSUM = "sha256"


def save_checkpoint(path: Path, stateful: dict[str, Any], state: dict[str, Any], env: DistEnv,
                    tag: str = "") -> None:
    """Rank 0 writes each part's ``state_dict()`` under its name, ``state``, every rank's RNG states and
    their checksum (a collective: every rank calls it). ``tag``: the run's token, in the temp file's name."""
    rng = rank_rng_states(env)
    if not env.is_main:
        return
    payload = {**{name: part.state_dict() for name, part in stateful.items()}, "state": state, "rng": rng}
    payload[CHECKSUM] = payload_digest(payload)
    atomic_save(path, lambda handle: torch.save(payload, handle), tag)


def load_checkpoint(path: Path, stateful: dict[str, Any], env: DistEnv) -> dict[str, Any] | None:
    """Load each part's state and this rank's RNG states from ``path``; returns the saved run state, or
    None when there is no checkpoint."""
    if not path.is_file():
        return None
    try:  # tensors and plain types only, so a planted pickle payload never runs
        payload = load_tensors(path)
    except UnsafeFileError as err:
        raise RunFolderError(f"{err}; delete it to start the run over") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # torch colours its message for terminals
        reason = text.splitlines()[0] if text else type(err).__name__
        raise RunFolderError(f"{path} is not a checkpoint this trainer wrote (refused to load it: {reason}); "
                             "delete it to start the run over") from None
    saved = payload.pop(CHECKSUM, None) if isinstance(payload, dict) else None
    if saved is not None and saved != payload_digest(payload):  # None: written before checksums
        raise RunFolderError(f"{path} is damaged: its contents no longer match the checksum written with them "
                             "(a changed byte on disk); restore it from a copy, or delete it to start the run over")
    for name, part in stateful.items():
        try:
            part.load_state_dict(payload[name])
        except (KeyError, RuntimeError, ValueError) as err:  # missing/extra keys, other shapes
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RunFolderError(f"{path} does not fit this run: its {name!r} state was written by another version "
                                 f"of the trainer ({reason}); finish it with that version, or delete the "
                                 "checkpoint to start the run over") from None
    restore_rng_state(payload["rng"], env)
    return payload["state"]


def rank_rng_states(env: DistEnv) -> list[dict[str, Any]] | None:
    """Every rank's RNG states, gathered to rank 0 (None on the other ranks)."""
    python_version, python_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    own = {"torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state(env.device) if env.device.type == "cuda" else None,
           "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
           "python": [python_version, list(python_state), gauss]}
    if env.world_size == 1:
        return [own]
    gathered = [None] * env.world_size if env.is_main else None
    dist.gather_object(own, gathered, dst=0)
    return gathered


def restore_rng_state(states: list[dict[str, Any]], env: DistEnv) -> None:
    """This rank's own states; a rank the checkpoint has none for (more ranks now) keeps its fresh seed."""
    if env.rank >= len(states):
        print(f"rank {env.rank}: the checkpoint holds RNG states of {len(states)} ranks; this rank keeps its seed")
        return
    own = states[env.rank]
    torch.set_rng_state(own["torch"])
    if own["cuda"] is not None and env.device.type == "cuda":
        torch.cuda.set_rng_state(own["cuda"], env.device)
    name, keys, pos, has_gauss, cached = own["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    python_version, python_state, gauss = own["python"]
    random.setstate((python_version, tuple(python_state), gauss))


# --- the checkpoint of a training run -----------------------------------------------------------------

def stateful_parts(run: TrainingRun) -> dict[str, Any]:
    """What ``checkpoint.pt`` holds the state dicts of, by name."""
    return {"trainable": run.trainable, "optimizer": run.optimizer, "scheduler": run.scheduler, "scaler": run.scaler}


def checkpoint(run: TrainingRun) -> None:
    """Write ``checkpoint.pt`` for this step (a collective: every rank's RNG states go in)."""
    state = {**run.state.__dict__, "dev_history": [list(x) for x in run.state.dev_history]}
    save_checkpoint(run.folder.checkpoint, stateful_parts(run), state, run.env,
                    tag=run.folder.own_state().token if run.env.is_main else "")
    if run.env.is_main:
        run.folder.note_checkpoint()


def resume_state(run: TrainingRun) -> RunState:
    """Resume from ``checkpoint.pt`` when it exists (each rank restores its own RNG states), else a fresh state."""
    saved = load_checkpoint(run.folder.checkpoint, stateful_parts(run), run.env)
    if saved is None:
        return RunState()
    state = RunState(**saved)
    state.dev_history = [(int(s), float(v)) for s, v in state.dev_history]
    if run.env.is_main:
        print(f"resuming {run.folder.path} from step {state.step} "
              f"(best STS-B dev {format_score(state.best_dev)} at step {state.best_step})")
    return state

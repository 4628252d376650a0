"""How a run stops early: a signal (SIGTERM / SIGINT) checkpoints the step it arrived in and ends the run
with ``TrainingInterrupted``; a non-finite loss term ends it with ``TrainingDiverged`` before anything of
it is saved. Each is one line for the user, never a traceback.
"""
from __future__ import annotations

import math
import signal
import threading

import torch
import torch.distributed as dist

from distill.checkpoint import checkpoint
from distill.run import TrainingRun
from kdmcse_base.process_group import DistEnv


class TrainingDiverged(RuntimeError):
    """The loss or every dev score stopped being a finite number; nothing diverged is saved as a result."""


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped the run after a step, with a checkpoint of that step."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # what a shell reports for a process that signal ended


class StopRequest:
    """Notes SIGTERM / SIGINT instead of dying mid-step; the loop checkpoints and stops after the step.

    One process acts on the step it is in. Under torchrun the ranks agree on log steps (one all-reduce
    beside the log read, so no rank checkpoints alone and none waits for it)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum, self._previous = 0, {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._note) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _note(self, signum: int, frame) -> None:
        self.signum = signum

    def due(self, env: DistEnv, logged: bool) -> bool:
        if env.world_size == 1:
            return bool(self.signum)
        if not logged:
            return False
        flag = torch.tensor([self.signum], device=env.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        self.signum = int(flag.item())
        return bool(self.signum)


def stop_if_requested(run: TrainingRun, stop: StopRequest, checkpointed: bool) -> None:
    """After a step (or the step-0 evaluation) that a signal arrived during: checkpoint it and stop."""
    if not stop.signum:
        return
    if not checkpointed:
        checkpoint(run)
        run.env.barrier()
    raise TrainingInterrupted(f"stopped by {signal.Signals(stop.signum).name} after step {run.state.step} of "
                              f"{run.n_steps}; checkpoint written ({run.folder.checkpoint}); rerun the same "
                              "command to resume", stop.signum)


def stop_if_diverged(run: TrainingRun, values: dict[str, float]) -> None:
    """A non-finite loss term ends the run before anything is saved from it (read on log steps)."""
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
        saved = run.folder.checkpoint
        last = f"the last good checkpoint is {saved} (step {run.state.dev_history[-1][0]})" \
            if run.state.dev_history and saved.is_file() else "no checkpoint was written before it"
        raise TrainingDiverged(f"the loss diverged: {', '.join(f'{k}={v}' for k, v in bad.items())} at step "
                               f"{run.state.step} (terms are read every train.log_every steps); nothing of it is "
                               f"saved; {last}; lower train.lr and train into a new folder")

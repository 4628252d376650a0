"""The training loop: one function a reader can hold in their head (nanoGPT's train.py spirit).

    claim the run folder                    (lock it; refuse files this trainer did not write)
    cache = ensure teacher cache            (teacher_cache/)
    pools = text rows / paired rows         (distill/pools.py)
    for step in KDMCSE batch schedule:      (distill/schedule.py; a loader prepares the next steps)
        terms = objective(student, inputs)  (distill/objective.py, distill/losses/)
        AdamW + linear decay + clip
        every log_every: read the terms      (the project's only host-device sync of a step, on any
                                             number of ranks: the gathers take their sizes from
                                             the schedule; a non-finite term stops the run)
        every eval_every: STS-B dev; keep the best encoder; checkpoint for resume
        on SIGTERM / SIGINT: checkpoint this step and stop (TrainingInterrupted)
    save best encoder + model card (+ ONNX files: train.export)

Runs under ``torchrun`` unchanged: each rank takes its equal slice of every global batch, student
candidates are gathered across ranks with autograd (distill/gather.py) and DDP averages
gradients, so the update is exactly the one of a single process on the global batch. Effective
batch = batch_size x world size.

The run folder belongs to one trainer at a time (``folder_lock`` on ``.lock``, held by the main rank);
its layout, what may be in it and how ``best/`` and ``model/`` are replaced whole are
``distill/run_folder.py``'s; ``checkpoint.pt`` (weights, optimiser, every rank's RNG states) is
``distill/checkpoint.py``'s.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.config import ConfigError, RunConfig, config_yaml, to_dict
from distill.dev_curve import dev_curve_png
from distill.export import export_model, require_export_extra
from distill.metrics_log import MetricsLog, check_report_to, open_metrics_log
from distill.model_card import write_model_card
from distill.objective import DistillationObjective, StepInputs
from distill.pools import TrainingPools, build_pools, open_run_cache
from distill.schedule import BatchPlan, Step, iterate_steps, total_steps
from distill.run_folder import (HEADS_FILE, LISTING, STATE_FILE, RunFolder, RunFolderError, TrainSummary,
                                check_resumable, is_complete)
from distill.student import Student, build_encoder
from distill.term import resolve_terms
from teacher_cache import TeacherCache, data_dir_for
from kdmcse_base.files import folder_lock, remove_if_unused
from kdmcse_base.machine import device_problem, precision_reason, resolve_precision
from kdmcse_base.process_group import DistEnv, init_distributed, leave_distributed, loader_worker_init


DevEvaluator = Callable[[SentenceTransformer], float]
"""Scores an encoder on held-out dev data (higher is better); the script that calls ``train`` owns it."""


class TrainingDiverged(RuntimeError):
    """The loss or every dev score stopped being a finite number; nothing diverged is saved as a result."""


class StudentWithObjective(nn.Module):
    """What the optimiser and DDP see: the student and the objective's own state (prototypes,
    queues) together, so both are trained, averaged across ranks and checkpointed."""

    def __init__(self, student: Student, objective: DistillationObjective):
        super().__init__()
        self.student = student
        self.objective = objective

    def forward(self, inputs: StepInputs) -> dict[str, torch.Tensor]:
        return self.objective(self.student, inputs)


@dataclass
class RunState:
    """Everything a resumed run needs besides the weights and optimiser."""

    step: int = 0
    best_dev: float = -math.inf
    best_step: int = -1
    dev_history: list[tuple[int, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    baseline_dev: float | None = None  # STS-B dev of the student before its first step


@dataclass
class TrainingRun:
    """The machinery of one run: what every step, evaluation and the final save work with.

    ``model`` is what the forward goes through (``trainable`` wrapped in DDP when world size > 1).
    """

    cfg: RunConfig
    env: DistEnv
    cache: TeacherCache
    pools: TrainingPools
    trainable: StudentWithObjective
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    n_steps: int
    state: RunState = field(default_factory=RunState)
    metrics: MetricsLog | None = None  # train.report_to's sinks (main rank)
    evaluate_dev: DevEvaluator | None = None

    @property
    def folder(self) -> RunFolder:
        return RunFolder(Path(self.cfg.train.output_dir))


def train(cfg: RunConfig, evaluate_dev: DevEvaluator) -> Path:
    """Train a student as ``cfg`` says, keeping the encoder ``evaluate_dev`` scores best (it runs on the
    main rank only); returns the folder of the saved SentenceTransformer."""
    refuse_unusable_devices(cfg)
    check_report_to(cfg.train.report_to)
    if cfg.train.export:
        require_export_extra()  # now, not after the last step
    cfg = dataclasses.replace(cfg, loss=resolve_terms(cfg.loss))  # every term's section checked and in full, now
    env = init_distributed(cfg.train.device)
    cfg = with_resolved_precision(cfg, env)
    out = Path(cfg.train.output_dir)
    RunFolder(out).refuse_foreign_entries()  # before the lock file goes in; checked again under the lock
    new_folder = not out.exists()
    with folder_lock(out, "training") if env.is_main else contextlib.nullcontext():
        try:
            return _train(cfg, evaluate_dev, env)
        except BaseException:
            if new_folder and env.is_main:
                remove_if_unused(out, frozenset({STATE_FILE}))  # a run that failed before writing anything leaves no folder
            raise


def _train(cfg: RunConfig, evaluate_dev: DevEvaluator, env: DistEnv) -> Path:
    if claim_run_folder(cfg, env):
        model = RunFolder(Path(cfg.train.output_dir)).model
        print(f"{cfg.train.output_dir} holds this run, already finished (train_summary.json); its model is {model}; "
              "nothing to do (scripts/export.py exports it)", flush=True)
        return model
    seed_everything(cfg.train.seed + env.rank)
    run = start_run(cfg, evaluate_dev, env)
    n_steps = run.n_steps
    schedule = iterate_steps(batch_plan(cfg, run.pools, env), cfg.train.seed, cfg.train.epochs, cfg.train.max_steps,
                             start_step=run.state.step)
    state = run.state
    with StopRequest() as stop:  # from the step-0 evaluation on: a signal checkpoints, never a traceback
        if state.step == 0:
            score_baseline(run)
            stop_if_requested(run, stop, checkpointed=False)
        with tqdm(total=n_steps, initial=state.step, desc="train", unit="step", disable=not env.is_main,
                  dynamic_ncols=True) as progress:  # closed before any error's one line is printed
            _loop(run, schedule, progress, stop)
        final = finish(run)  # a signal now waits for the model to be saved
    if run.metrics is not None:
        run.metrics.close()
    leave_distributed()
    return final


def refuse_unusable_devices(cfg: RunConfig) -> None:
    """``train.device`` and ``teacher.device`` name devices this machine has, before anything is loaded."""
    for key, value in (("train.device", cfg.train.device), ("teacher.device", cfg.teacher.device)):
        problem = device_problem(value)
        if problem:
            raise ConfigError(f"{key}={value}: {problem}")


def with_resolved_precision(cfg: RunConfig, env: DistEnv) -> RunConfig:
    """``cfg`` with ``train.precision: auto`` replaced by what it means on this run's device, so
    ``config.yaml`` and the card say what the run computed in."""
    if cfg.train.precision != "auto":
        return cfg
    precision = resolve_precision("auto", env.device)
    if env.is_main:
        print(f"train.precision: auto -> {precision} ({precision_reason(env.device)})", flush=True)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=precision))


def adamw(parameters, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel on CUDA and CPU, as sentence-transformers' trainer runs it
    (``adamw_torch_fused``). Left to itself, torch takes a per-tensor loop on CPU: 57 ms a step for the
    offline student's 17M parameters against 9 ms fused (``benchmarks/optimizer_speed.py``)."""
    fused = True if device.type in ("cuda", "cpu") else None
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused)


def _loop(run: TrainingRun, schedule, progress: tqdm, stop: StopRequest) -> None:
    cfg, env, state, n_steps = run.cfg, run.env, run.state, run.n_steps
    tick = time.perf_counter()
    shown: dict[str, str] = {}  # the progress bar's postfix
    # Fetching step s+1 after step s was queued: on a GPU its preparation and copy overlap step s's kernels.
    for prepared in step_loader(run, list(schedule)):
        step = prepared.step
        terms = training_step(run, step, prepared.inputs.to(env.device))
        state.step = prepared.index + 1
        evaluating = state.step % cfg.train.eval_every == 0 or state.step == n_steps
        if state.step % cfg.train.log_every == 0 or evaluating:
            values = read_terms(terms, env)  # host-device sync: log steps only
            stop_if_diverged(run, values)
            log_terms(run, values)
            shown.update(loss=f"{values['loss']:.4f}", kind=step.kind, best_dev=_fmt(state.best_dev))
            progress.set_postfix(shown)
        progress.update()
        state.train_seconds += time.perf_counter() - tick  # waiting for the loader counts; evaluation does not
        if evaluating:
            evaluate_and_checkpoint(run)
            shown["best_dev"] = _fmt(state.best_dev)  # the bar's last state shows this evaluation
            progress.set_postfix(shown)
        if stop.due(env, logged=state.step % cfg.train.log_every == 0 or evaluating):
            progress.close()
            stop_if_requested(run, stop, checkpointed=evaluating)
        tick = time.perf_counter()


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


def start_run(cfg: RunConfig, evaluate_dev: DevEvaluator, env: DistEnv) -> TrainingRun:
    """Open the cache and pools, build the student, optimiser and schedule, and resume if a checkpoint exists."""
    folder = RunFolder(Path(cfg.train.output_dir))
    cache = open_run_cache(cfg, data_dir_for(cfg.data, cfg.data_dir), progress=env.is_main)
    cache.check_every_shard()  # here, once: loader workers inherit it and no step waits on a hash
    pools = build_pools(cache, cfg.train.retrieval_holdout_images)
    refuse_batch_larger_than_pools(batch_plan(cfg, pools, env), env)
    if env.is_main:
        folder.write(folder.config, config_yaml(cfg).encode())
    env.barrier()

    student = Student(build_encoder(cfg.student, env.device), cfg.student, cache.text_dim,
                      cache.image_dim if pools.n_paired else None).to(env.device)
    if cfg.train.compile:
        getattr(student.encoder[0], "auto_model", student.encoder[0]).compile()  # in place: keys and saving stay
    objective = DistillationObjective(cfg.loss, student.encoder.get_embedding_dimension(), cache.text_dim)
    trainable = StudentWithObjective(student, objective).to(env.device)
    n_steps = total_steps(batch_plan(cfg, pools, env), cfg.train.epochs, cfg.train.max_steps)
    optimizer = adamw(trainable.parameters(), cfg.train.lr, cfg.train.weight_decay, env.device)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * n_steps), n_steps)
    scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.train.precision == "fp16")
    model = DistributedDataParallel(trainable, find_unused_parameters=True) if env.world_size > 1 else trainable
    run = TrainingRun(cfg, env, cache, pools, trainable, model, optimizer, scheduler, scaler, n_steps,
                      evaluate_dev=evaluate_dev if env.is_main else None,
                      metrics=open_metrics_log(cfg.train.report_to, cfg.name, folder.own_state().token, folder.path,
                                               folder.tensorboard, to_dict(cfg)) if env.is_main else None)
    run.state = resume_state(run)
    return run


def refuse_batch_larger_than_pools(plan: BatchPlan, env: DistEnv) -> None:
    """A source smaller than one batch makes no step at all: say so before the student is even built."""
    if plan.n_text < plan.batch_size and plan.n_paired < plan.batch_size:
        per = f" per process x {env.world_size}" if env.world_size > 1 else ""
        raise ConfigError(f"train.batch_size={plan.batch_size // env.world_size}{per} is more than any pool holds "
                          f"({plan.n_text} text rows, {plan.n_paired} image-caption pairs): no complete batch; lower "
                          "train.batch_size or add rows")


def batch_plan(cfg: RunConfig, pools: TrainingPools, env: DistEnv) -> BatchPlan:
    """The run's batch order: every rank walks the same global batches and takes its slice."""
    return BatchPlan(pools.n_text, pools.n_paired, cfg.train.batch_size * env.world_size, cfg.train.paired_every,
                     cfg.train.schedule)


@dataclass
class PreparedStep:
    """One step of the schedule with its inputs on the host (``index``: the global step, from 0)."""

    index: int
    step: Step
    inputs: StepInputs

    def pin_memory(self) -> PreparedStep:  # called by the DataLoader's pinning thread
        return PreparedStep(self.index, self.step, self.inputs.pin_memory())


class ScheduledSteps(Dataset):
    """The run's remaining steps in schedule order, each prepared by ``prepare_inputs``. A DataLoader
    over it reads them in order (sequential sampler), so workers change neither the batch order nor
    any random stream: preparation is deterministic and draws no random numbers."""

    def __init__(self, run: TrainingRun, steps: list[tuple[int, Step]]):
        self.run, self.steps = run, steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> PreparedStep:
        index, step = self.steps[i]
        return PreparedStep(index, step, prepare_inputs(self.run, step))


def step_loader(run: TrainingRun, steps: list[tuple[int, Step]]) -> DataLoader:
    """Prepared steps, ``train.loader_workers`` ahead of the step that runs (0: prepared in this process
    just before they run). Pinned on a GPU, so ``StepInputs.to`` copies without blocking. Workers are
    forked: they share the cache's memory maps, the pools and the tokenizer without copying them."""
    workers = run.cfg.train.loader_workers
    fork = workers > 0 and "fork" in multiprocessing.get_all_start_methods()
    # batch_size=None: each item is one whole step. A private generator: DataLoader draws its worker
    # seed from it, and drawing from the global one would shift dropout's random stream (and resume).
    return DataLoader(ScheduledSteps(run, steps), batch_size=None, num_workers=workers,
                      pin_memory=run.env.device.type == "cuda", generator=torch.Generator(),
                      multiprocessing_context="fork" if fork else None, worker_init_fn=loader_worker_init)


def prepare_inputs(run: TrainingRun, step: Step) -> StepInputs:
    """The host side of a step: this rank's slice of the rows, their sentences tokenised by the student's
    own preprocessing (``Student.tokenise``) and their teacher rows, all on the CPU."""
    slices = np.array_split(step.rows, run.env.world_size)
    inputs = lookup_inputs(run.cache, run.pools, step.kind, slices[run.env.rank], torch.device("cpu"))
    inputs.features = run.trainable.student.tokenise(inputs.sentences)
    inputs.rank_sizes = tuple(len(rows) for rows in slices)  # known here: the gathers need no size exchange
    return inputs


def training_step(run: TrainingRun, step: Step, inputs: StepInputs | None = None) -> dict[str, torch.Tensor]:
    """Forward the local slice of one global batch, backward, clip, update; the terms stay on the device.
    ``inputs``: the step's prepared inputs (``step_loader``); prepared here when None."""
    env, cfg = run.env, run.cfg
    if inputs is None:
        inputs = prepare_inputs(run, step)
        inputs = (inputs.pin_memory() if env.device.type == "cuda" else inputs).to(env.device)
    run.model.train()
    with autocast(cfg.train.precision, env.device):
        terms = run.model(inputs)  # through DDP's forward, so gradients get averaged
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(terms["loss"]).backward()
    if cfg.train.grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.train.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    return {name: value.detach() for name, value in terms.items()}


def lookup_inputs(cache: TeacherCache, pools: TrainingPools, kind: str, rows: np.ndarray,
                  device: torch.device) -> StepInputs:
    """Sentences of the rows and their cached teacher embeddings: a lookup, never a teacher forward."""
    if kind == "text":
        text_idx = pools.text_rows[rows]
        return StepInputs(sentences=[pools.sentences[i] for i in text_idx],
                          teacher_text=cache.text(text_idx, device))
    text_idx = pools.paired_text_rows[rows]
    image_idx = pools.paired_image_rows[rows]
    return StepInputs(sentences=[pools.sentences[i] for i in text_idx],
                      teacher_text=cache.text(text_idx, device),
                      teacher_image=cache.image(image_idx, device),
                      image_ids=torch.as_tensor(image_idx, device=device, dtype=torch.long))


def read_terms(terms: dict[str, torch.Tensor], env: DistEnv) -> dict[str, float]:
    """The step's terms averaged over ranks, i.e. the global batch's values (ranks hold equal slices)."""
    values = torch.stack([value.float() for value in terms.values()])
    if env.world_size > 1:
        dist.all_reduce(values)
        values /= env.world_size
    return dict(zip(terms, values.tolist()))


def score_baseline(run: TrainingRun) -> None:
    """STS-B dev of the untrained student (main rank): what distillation starts from, in the log, the
    summary and the card, and the first candidate for best, so a run that never beats its starting point
    keeps the starting weights rather than a worse checkpoint."""
    if run.env.is_main:
        state, student = run.state, run.trainable.student
        state.baseline_dev = dev_score(run)
        run.metrics.log({"eval/stsb_dev_spearman": state.baseline_dev}, 0)
        if math.isfinite(state.baseline_dev):
            state.best_dev, state.best_step = state.baseline_dev, 0
            run.folder.replace("best", lambda folder: save_encoder(student, folder))
        tqdm.write(f"step 0 (untrained): STS-B dev {state.baseline_dev:.2f}")


def dev_score(run: TrainingRun) -> float:
    """The dev evaluator's score of the student now (dropout off for it)."""
    student = run.trainable.student
    student.eval()
    with torch.no_grad():
        score = run.evaluate_dev(student.encoder)
    student.train()
    return score


def evaluate_and_checkpoint(run: TrainingRun) -> None:
    """STS-B dev on the main rank; keep the best encoder; write a resumable checkpoint (every rank takes part)."""
    state, student = run.state, run.trainable.student
    if run.env.is_main:
        score = dev_score(run)
        state.dev_history.append((state.step, score))
        run.metrics.log({"eval/stsb_dev_spearman": score}, state.step)
        if math.isfinite(score) and score > state.best_dev:  # a NaN dev is never "best"
            state.best_dev, state.best_step = score, state.step
            run.folder.replace("best", lambda folder: save_encoder(student, folder))
        tqdm.write(f"step {state.step}: STS-B dev {score:.2f}, best {state.best_dev:.2f} at step {state.best_step}")
        run.folder.write(run.folder.dev_curve, dev_curve_png(state.dev_history, state.baseline_dev, state.best_step,
                                                             run.cfg.name))
    checkpoint(run)
    run.env.barrier()


def finish(run: TrainingRun) -> Path:
    """Copy the best encoder to ``model/`` with its model card; returns that folder."""
    folder, state, cfg, env = run.folder, run.state, run.cfg, run.env
    if env.is_main:
        best = folder.best
        if state.best_step < 0:
            raise TrainingDiverged(f"no evaluation scored a finite STS-B dev ({state.dev_history}); no model is "
                                   f"saved in {folder.path}; lower train.lr and train into a new folder")
        if not is_complete(best):
            raise RunFolderError(f"{best} is missing although step {state.best_step} was saved as best; "
                                 "delete the run folder to start over")

        def write_model(model: Path) -> None:
            shutil.copytree(best, model, ignore=shutil.ignore_patterns(LISTING, HEADS_FILE), dirs_exist_ok=True)
            export_model(model, cfg.train.export)
            write_model_card(model, cfg, run.cache.manifest, state)

        if state.best_step == 0:
            print(f"no evaluation beat the starting point (STS-B dev {state.best_dev:.2f} before the first step): "
                  f"{folder.model} holds the untrained student; try another train.lr or objective", flush=True)
        folder.replace("model", write_model)
        folder.write(folder.path / HEADS_FILE, (best / HEADS_FILE).read_bytes())  # training-only: not in model/
        summary = TrainSummary(
            steps=state.step, best_step=state.best_step, best_stsb_dev=state.best_dev,
            train_seconds=state.train_seconds, dev_history=state.dev_history, device=device_name(env.device),
            effective_batch_size=cfg.train.batch_size * env.world_size, world_size=env.world_size,
            baseline_stsb_dev=state.baseline_dev, heldout_image_ids=run.pools.heldout_image_ids,
            skipped_rows=run.cache.skipped_rows)
        folder.write_summary(summary)
        print(summary.describe(folder.model, cfg.train.precision), flush=True)
    env.barrier()
    return folder.model


# --- the run folder ---------------------------------------------------------------------------------

def claim_run_folder(cfg: RunConfig, env: DistEnv) -> bool:
    """Refuse a folder holding anything this trainer did not write, or a run with another config;
    then (main rank) finish or undo a swap a kill interrupted. Every rank checks, so all stop together.
    True when the folder holds this very run, finished."""
    folder = RunFolder(Path(cfg.train.output_dir))
    folder.refuse_foreign_entries()
    finished = check_resumable(cfg, folder.path)
    env.barrier()
    if env.is_main and not finished:
        folder.recover()  # the lock says no other trainer writes here
    env.barrier()
    return finished


def save_encoder(student: Student, folder: Path) -> None:
    """The encoder is saved as a plain SentenceTransformer, with the grounding heads beside it in
    ``best/`` (``finish`` moves them out of the published ``model/`` into the run folder)."""
    student.encoder.save(str(folder))
    student.heads.save(folder / HEADS_FILE)


# --- checkpoints --------------------------------------------------------------------------------------

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
              f"(best STS-B dev {_fmt(state.best_dev)} at step {state.best_step})")
    return state


# --- small helpers -------------------------------------------------------------------------------------

def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU thread count (what a CPU timing depends on)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(precision: str, device: torch.device):
    precision = resolve_precision(precision, device)  # a run built outside ``train`` may still say auto
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs a GPU; use bf16 on CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def log_terms(run: TrainingRun, values: dict[str, float]) -> None:
    if run.metrics is None:
        return
    run.metrics.log({**{f"train/{name}": value for name, value in values.items()},
                     "train/lr": run.scheduler.get_last_lr()[0]}, run.state.step)


def _fmt(score: float) -> str:
    return "-" if score == -math.inf else f"{score:.2f}"

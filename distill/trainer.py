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

What the loop works with is assembled by ``distill/run.py`` (``build_run``); the steps' inputs are
prepared by ``distill/step_loader.py``; signals and divergence are ``distill/stopping.py``'s, the final
save ``distill/finish.py``'s.

The run folder belongs to one trainer at a time (``folder_lock`` on ``.lock``, held by the main rank);
its layout, what may be in it and how ``best/`` and ``model/`` are replaced whole are
``distill/run_folder.py``'s; ``checkpoint.pt`` (weights, optimiser, every rank's RNG states) is
``distill/checkpoint.py``'s.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from distill.checkpoint import checkpoint, resume_state
from distill.config import ConfigError, RunConfig, config_yaml, to_dict
from distill.dev_curve import dev_curve_png
from distill.export import require_export_extra
from distill.finish import finish, save_encoder
from distill.metrics_log import check_report_to, open_metrics_log
from distill.objective import StepInputs
from distill.pools import build_pools, open_run_cache
from distill.run import (DevEvaluator, TrainingRun, autocast, batch_plan, build_run, format_score,
                         refuse_batch_larger_than_pools, seed_everything)
from distill.run_folder import STATE_FILE, RunFolder, check_resumable
from distill.schedule import Step, iterate_steps
from distill.step_loader import prepare_inputs, step_loader, text_token_lengths
from distill.stopping import StopRequest, stop_if_diverged, stop_if_requested
from distill.term import resolve_terms
from teacher_cache import data_dir_for
from kdmcse_base.files import folder_lock, remove_if_unused
from kdmcse_base.machine import device_problem, emulates_bf16, precision_reason, resolve_precision
from kdmcse_base.process_group import DistEnv, init_distributed, leave_distributed


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
    lengths = text_token_lengths(run) if cfg.train.length_grouped else None
    schedule = iterate_steps(batch_plan(cfg, run.pools, env), cfg.train.seed, cfg.train.epochs, cfg.train.max_steps,
                             start_step=run.state.step, text_lengths=lengths)
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
    ``config.yaml`` and the card say what the run computed in. An explicit ``bf16`` where the device
    emulates it stands, with a line saying it is usually the slow choice there."""
    if cfg.train.precision == "bf16" and emulates_bf16(env.device):
        if env.is_main:
            print(f"train.precision: bf16 is emulated here ({precision_reason(env.device)}), usually slower "
                  "than fp32; precision auto would pick fp32", flush=True)
    if cfg.train.precision != "auto":
        return cfg
    precision = resolve_precision("auto", env.device)
    if env.is_main:
        print(f"train.precision: auto -> {precision} ({precision_reason(env.device)})", flush=True)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, precision=precision))


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
            shown.update(loss=f"{values['loss']:.4f}", kind=step.kind, best_dev=format_score(state.best_dev))
            progress.set_postfix(shown)
        progress.update()
        state.train_seconds += time.perf_counter() - tick  # waiting for the loader counts; evaluation does not
        if evaluating:
            evaluate_and_checkpoint(run)
            shown["best_dev"] = format_score(state.best_dev)  # the bar's last state shows this evaluation
            progress.set_postfix(shown)
        if stop.due(env, logged=state.step % cfg.train.log_every == 0 or evaluating):
            progress.close()
            stop_if_requested(run, stop, checkpointed=evaluating)
        tick = time.perf_counter()


def start_run(cfg: RunConfig, evaluate_dev: DevEvaluator, env: DistEnv) -> TrainingRun:
    """Open the cache and pools, assemble the run (``build_run``) and resume if a checkpoint exists."""
    folder = RunFolder(Path(cfg.train.output_dir))
    cache = open_run_cache(cfg, data_dir_for(cfg.data, cfg.data_dir), progress=env.is_main)
    cache.check_every_shard()  # here, once: loader workers inherit it and no step waits on a hash
    pools = build_pools(cache, cfg.train.retrieval_holdout_images)
    refuse_batch_larger_than_pools(batch_plan(cfg, pools, env), env)
    if env.is_main:
        folder.write(folder.config, config_yaml(cfg).encode())
    env.barrier()
    run = build_run(cfg, env, cache, pools, evaluate_dev)
    if env.is_main:
        run.metrics = open_metrics_log(cfg.train.report_to, cfg.name, folder.own_state().token, folder.path,
                                       folder.tensorboard, to_dict(cfg))
    run.state = resume_state(run)
    return run


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
        state = run.state
        state.baseline_dev = dev_score(run)
        run.metrics.log({"eval/stsb_dev_spearman": state.baseline_dev}, 0)
        if math.isfinite(state.baseline_dev):
            state.best_dev, state.best_step = state.baseline_dev, 0
            run.folder.replace("best", lambda folder: save_encoder(run.trainable, folder))
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
    state = run.state
    if run.env.is_main:
        score = dev_score(run)
        state.dev_history.append((state.step, score))
        run.metrics.log({"eval/stsb_dev_spearman": score}, state.step)
        if math.isfinite(score) and score > state.best_dev:  # a NaN dev is never "best"
            state.best_dev, state.best_step = score, state.step
            run.folder.replace("best", lambda folder: save_encoder(run.trainable, folder))
        tqdm.write(f"step {state.step}: STS-B dev {score:.2f}, best {state.best_dev:.2f} at step {state.best_step}")
        run.folder.write(run.folder.dev_curve, dev_curve_png(state.dev_history, state.baseline_dev, state.best_step,
                                                             run.cfg.name))
    checkpoint(run)
    run.env.barrier()


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


def log_terms(run: TrainingRun, values: dict[str, float]) -> None:
    if run.metrics is None:
        return
    run.metrics.log({**{f"train/{name}": value for name, value in values.items()},
                     "train/lr": run.scheduler.get_last_lr()[0]}, run.state.step)

"""The training loop: one function a reader can hold in their head (nanoGPT's train.py spirit).

    cache = ensure teacher cache            (teacher_cache/)
    pools = text rows / paired rows         (distill/pools.py)
    for step in KDMCSE batch schedule:      (distill/schedule.py)
        terms = objective(student, lookups) (distill/objective.py, distill/losses/)
        AdamW + linear decay + clip
        every eval_every: STS-B dev; keep the best encoder; checkpoint for resume
    save best encoder + model card

Runs under ``torchrun`` unchanged: each rank takes its slice of every global batch, negatives are
gathered across ranks, and DDP averages gradients. Effective batch = batch_size x world size.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.tensorboard import SummaryWriter
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from distill.config import RunConfig, load_config, save_config, to_dict
from distill.model_card import write_model_card
from distill.objective import DistillationObjective, StepInputs
from distill.pools import TrainingPools, build_pools
from distill.schedule import iterate_steps, total_steps
from distill.student import Student, build_encoder
from teacher_cache import TeacherCache, data_dir_for, ensure_cache
from teacher_cache.distributed import DistEnv, init_distributed, leave_distributed


DevEvaluator = Callable[[SentenceTransformer], float]
"""Scores an encoder on held-out dev data (higher is better); the script that calls ``train`` owns it."""


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


def train(cfg: RunConfig, evaluate_dev: DevEvaluator) -> Path:
    """Train a student as ``cfg`` says, keeping the encoder ``evaluate_dev`` scores best (it runs on the
    main rank only); returns the folder of the saved SentenceTransformer."""
    env = init_distributed(cfg.train.device)
    out = Path(cfg.train.output_dir)
    seed_everything(cfg.train.seed + env.rank)
    data_dir = data_dir_for(cfg.data, cfg.data_dir)
    cache = open_teacher_cache(cfg, data_dir, env)
    pools = build_pools(cache, cfg.train.retrieval_holdout_images)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        check_resumable(cfg, out)
        save_config(cfg, out / "config.yaml")
    env.barrier()

    student = Student(build_encoder(cfg.student, env.device), cfg.student, cache.text_dim,
                      cache.image_dim if pools.n_paired else None).to(env.device)
    objective = DistillationObjective(cfg.loss, student.encoder.get_embedding_dimension(), cache.text_dim)
    trainable = StudentWithObjective(student, objective).to(env.device)
    n_steps = total_steps(pools.n_text, pools.n_paired, cfg.train.batch_size * env.world_size,
                          cfg.train.epochs, cfg.train.max_steps, cfg.train.paired_every)
    optimizer = torch.optim.AdamW(trainable.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * n_steps), n_steps)
    state = load_checkpoint(out, trainable, optimizer, scheduler)
    scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.train.precision == "fp16")
    model = DistributedDataParallel(trainable, find_unused_parameters=True) if env.world_size > 1 else trainable

    evaluator = evaluate_dev if env.is_main else None
    writer = SummaryWriter(str(out / "tensorboard")) if env.is_main else None
    schedule = iterate_steps(pools.n_text, pools.n_paired, cfg.train.batch_size * env.world_size,
                             cfg.train.seed, cfg.train.epochs, cfg.train.max_steps, cfg.train.paired_every,
                             start_step=state.step)
    progress = tqdm(total=n_steps, initial=state.step, desc="train", unit="step", disable=not env.is_main,
                    dynamic_ncols=True)
    for step_index, step in schedule:
        step_started = time.perf_counter()
        terms = training_step(model, optimizer, scheduler, scaler, cache, pools, step, env, cfg)
        state.step = step_index + 1
        state.train_seconds += time.perf_counter() - step_started  # evaluation time is not training time
        if env.is_main:
            log_terms(writer, terms, scheduler.get_last_lr()[0], state.step, step.kind, cfg.train.log_every)
            progress.set_postfix(loss=f"{terms['loss']:.4f}", kind=step.kind, best_dev=_fmt(state.best_dev))
            progress.update()
        if state.step % cfg.train.eval_every == 0 or state.step == n_steps:
            evaluate_and_checkpoint(trainable, evaluator, writer, state, out, optimizer, scheduler, env)
    progress.close()
    final = finish(student, state, cfg, cache, pools, out, env)
    if writer is not None:
        writer.close()
    leave_distributed()
    return final


def training_step(model: nn.Module, optimizer, scheduler, scaler, cache: TeacherCache, pools: TrainingPools, step, env: DistEnv, cfg: RunConfig
                  ) -> dict[str, float]:
    """Forward the local slice of one global batch, backward, clip, update."""
    local_rows = np.array_split(step.rows, env.world_size)[env.rank]
    inputs = lookup_inputs(cache, pools, step.kind, local_rows, env.device)
    model.train()
    with autocast(cfg.train.precision, env.device):
        terms = model(inputs)  # through DDP's forward, so gradients get averaged
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["loss"]).backward()
    if cfg.train.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return {name: value.detach().float().item() for name, value in terms.items()}


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


def evaluate_and_checkpoint(trainable: "StudentWithObjective", evaluator, writer, state: RunState, out: Path,
                            optimizer, scheduler, env: DistEnv) -> None:
    """STS-B dev on the main rank; keep the best encoder; write a resumable checkpoint."""
    student = trainable.student
    if env.is_main:
        student.eval()
        with torch.no_grad():
            score = evaluator(student.encoder)
        student.train()
        state.dev_history.append((state.step, score))
        writer.add_scalar("eval/stsb_dev_spearman", score, state.step)
        if score > state.best_dev:
            state.best_dev, state.best_step = score, state.step
            save_encoder_atomically(student, out / "best")
        save_checkpoint(out, trainable, optimizer, scheduler, state)
    env.barrier()


def finish(student: Student, state: RunState, cfg: RunConfig, cache: TeacherCache, pools: TrainingPools,
           out: Path, env: DistEnv) -> Path:
    """Copy the best encoder to ``model/`` with its model card; returns that folder."""
    final = out / "model"
    if env.is_main:
        source = out / "best" if (out / "best").is_dir() else None
        if source is None:
            save_encoder_atomically(student, out / "best")
            source = out / "best"
        tmp = out / "model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        write_model_card(tmp, cfg, cache.manifest, state)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        (out / "train_summary.json").write_text(json.dumps({
            "steps": state.step, "best_step": state.best_step, "best_stsb_dev": state.best_dev,
            "train_seconds": state.train_seconds, "steps_per_second": state.step / max(state.train_seconds, 1e-9),
            "dev_history": state.dev_history, "world_size": env.world_size,
            "heldout_image_ids": pools.heldout_image_ids,
            "device": device_name(env.device),
            "effective_batch_size": cfg.train.batch_size * env.world_size}, indent=2))
    env.barrier()
    return final


def save_encoder_atomically(student: Student, target: Path) -> None:
    """The encoder is saved as a plain SentenceTransformer; the grounding heads go to
    ``grounding_heads.pt`` beside it (for retrieval evaluation), never into the model itself."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    student.encoder.save(str(tmp))
    student.heads.save(tmp / "grounding_heads.pt")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def save_checkpoint(out: Path, trainable: nn.Module, optimizer, scheduler, state: RunState) -> None:
    payload = {"trainable": trainable.state_dict(), "optimizer": optimizer.state_dict(),
               "scheduler": scheduler.state_dict(), "state": state.__dict__,
               "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}}
    tmp = out / "checkpoint.pt.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, out / "checkpoint.pt")


def load_checkpoint(out: Path, trainable: nn.Module, optimizer, scheduler) -> RunState:
    """Resume from ``out/checkpoint.pt`` when it exists, else a fresh state."""
    path = out / "checkpoint.pt"
    if not path.is_file():
        return RunState()
    payload = torch.load(path, map_location="cpu", weights_only=False)
    trainable.load_state_dict(payload["trainable"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng"]["torch"])
    np.random.set_state(payload["rng"]["numpy"])
    random.setstate(payload["rng"]["python"])
    state = RunState(**payload["state"])
    state.dev_history = [tuple(x) for x in state.dev_history]
    print(f"resuming {out} from step {state.step} (best STS-B dev {_fmt(state.best_dev)} at step {state.best_step})")
    return state


def check_resumable(cfg: RunConfig, out: Path) -> None:
    """Refuse to resume a run whose saved config differs: that would silently mix two experiments."""
    saved = out / "config.yaml"
    if not (out / "checkpoint.pt").is_file() or not saved.is_file():
        return
    before = to_dict(load_config(saved))  # keys added since that run compare as their defaults
    now = to_dict(cfg)
    changed = sorted(_diff_keys(before, now))
    if changed:
        raise ValueError(f"{out} holds a run with a different config ({', '.join(changed)}); "
                         "choose another train.output_dir or delete that folder to start over")


def _diff_keys(a, b, prefix=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)):
        yield prefix.rstrip(".")


def open_teacher_cache(cfg: RunConfig, data_dir: Path | None, env: DistEnv) -> TeacherCache:
    """Build the cache if it is missing (a collective: ranks share the shards), then open it read-only,
    checked (sizes; checksums once per build or copy). A complete cache opens without the teacher."""
    return TeacherCache.open(ensure_cache(cfg.teacher, cfg.data, cfg.train.cache_root, data_dir,
                                          progress=env.is_main))


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
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs a GPU; use bf16 on CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def log_terms(writer: SummaryWriter, terms: dict[str, float], lr: float, step: int, kind: str, every: int) -> None:
    if step % every and kind == "text":
        return
    for name, value in terms.items():
        writer.add_scalar(f"train/{name}", value, step)
    writer.add_scalar("train/lr", lr, step)


def _fmt(score: float) -> str:
    return "-" if score == -math.inf else f"{score:.2f}"

"""A training run assembled once: ``build_run`` puts together the student of ``cfg.student``, its
objective, the optimiser, the schedule and the gradient scaler on a teacher cache and its pools, for the
trainer (distill/trainer.py), the tests and the benchmarks alike; ``TrainingRun`` is what every step,
evaluation, checkpoint and the final save work with.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import get_linear_schedule_with_warmup

from distill.config import ConfigError, RunConfig
from distill.metrics_log import MetricsLog
from distill.objective import DistillationObjective, StepInputs
from distill.pools import TrainingPools
from distill.run_folder import RunFolder
from distill.schedule import BatchPlan, total_steps
from distill.student import Student, build_encoder
from distill.term import Dims
from kdmcse_base.machine import resolve_precision
from kdmcse_base.process_group import DistEnv
from teacher_cache import TeacherCache


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


def build_run(cfg: RunConfig, env: DistEnv, cache: TeacherCache, pools: TrainingPools,
              evaluate_dev: DevEvaluator | None = None) -> TrainingRun:
    """The run ``cfg`` describes on ``cache`` (the teacher's widths; anything with ``text_dim``,
    ``image_dim``, ``text(rows)`` and ``image(rows)``) and ``pools``: the student (compiled when
    ``train.compile``), its objective, fused AdamW with linear warmup and decay over the run's steps, the
    gradient scaler, and DDP around them over several ranks. ``evaluate_dev`` is kept on the main rank only."""
    student = Student(build_encoder(cfg.student, env.device), cfg.student).to(env.device)
    if cfg.train.compile:
        compile_encoder(student)
    dims = Dims(student.encoder.get_embedding_dimension(), cache.text_dim,
                cache.image_dim if pools.n_paired else None, cfg.student.grounding_dim)
    objective = DistillationObjective(cfg.loss, dims)
    trainable = StudentWithObjective(student, objective).to(env.device)
    n_steps = total_steps(batch_plan(cfg, pools, env), cfg.train.epochs, cfg.train.max_steps)
    optimizer = adamw(trainable.parameters(), cfg.train.lr, cfg.train.weight_decay, env.device)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.train.warmup_ratio * n_steps), n_steps)
    scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.train.precision == "fp16")
    model = DistributedDataParallel(trainable, find_unused_parameters=True) if env.world_size > 1 else trainable
    return TrainingRun(cfg, env, cache, pools, trainable, model, optimizer, scheduler, scaler, n_steps,
                       evaluate_dev=evaluate_dev if env.is_main else None)


def compile_encoder(student: Student, **options) -> None:
    """``torch.compile`` (with ``options``: backend, mode) the forward of the student's transformer in
    place (its keys and saving stay as they are). Dynamo starts afresh, so ``compiled_graphs`` counts
    this run's graphs: otherwise a second run in one process reuses the first one's graphs (parameters
    are graph inputs) and counts none.

    The forward method itself is replaced: sentence-transformers calls ``auto_model.forward`` directly,
    so ``nn.Module.compile``, which hooks ``__call__``, would leave every step eager."""
    import torch._dynamo  # loads only where a run compiles
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    backbone = getattr(student.encoder[0], "auto_model", student.encoder[0])
    backbone.forward = torch.compile(backbone.forward, **options)


def compiled_graphs() -> int:
    """Graphs ``torch.compile`` has built since ``compile_encoder``: 0 means every forward ran eagerly
    (dynamo gave up on the model), and a count that grows with the steps means it recompiles per batch
    shape instead of reusing a dynamic-shape graph."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def adamw(parameters, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel on CUDA and CPU, as sentence-transformers' trainer runs it
    (``adamw_torch_fused``). Left to itself, torch takes a per-tensor loop on CPU: 57 ms a step for the
    offline student's 17M parameters against 9 ms fused (``benchmarks/optimizer_speed.py``)."""
    fused = True if device.type in ("cuda", "cpu") else None
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused)


def batch_plan(cfg: RunConfig, pools: TrainingPools, env: DistEnv) -> BatchPlan:
    """The run's batch order: every rank walks the same global batches and takes its slice."""
    return BatchPlan(pools.n_text, pools.n_paired, cfg.train.batch_size * env.world_size, cfg.train.paired_every,
                     cfg.train.schedule)


def refuse_batch_larger_than_pools(plan: BatchPlan, env: DistEnv) -> None:
    """A source smaller than one batch makes no step at all: say so before the student is even built."""
    if plan.n_text < plan.batch_size and plan.n_paired < plan.batch_size:
        per = f" per process x {env.world_size}" if env.world_size > 1 else ""
        raise ConfigError(f"train.batch_size={plan.batch_size // env.world_size}{per} is more than any pool holds "
                          f"({plan.n_text} text rows, {plan.n_paired} image-caption pairs): no complete batch; lower "
                          "train.batch_size or add rows")


def autocast(precision: str, device: torch.device):
    precision = resolve_precision(precision, device)  # a run built outside ``train`` may still say auto
    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("train.precision=fp16 needs a GPU; use bf16 on CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU thread count (what a CPU timing depends on)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def format_score(score: float) -> str:
    return "-" if score == -math.inf else f"{score:.2f}"

"""The host side of the training steps: each step's rows looked up in the teacher cache (a lookup, never
a teacher forward), its sentences tokenised by the student's own preprocessing, prepared
``train.loader_workers`` steps ahead of the step that runs.
"""
from __future__ import annotations

import multiprocessing
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from distill.objective import StepInputs
from distill.pools import TrainingPools
from distill.run import TrainingRun
from distill.schedule import Step
from kdmcse_base.process_group import loader_worker_init
from teacher_cache import TeacherCache


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


def text_token_lengths(run: TrainingRun, chunk: int = 8192) -> np.ndarray:
    """The token count of every text-pool row under the student's own preprocessing, truncated at the
    training length (``Student.tokenise``): what length-grouped batches sort by. The same on every rank."""
    student, pools = run.trainable.student, run.pools
    lengths = []
    for start in range(0, pools.n_text, chunk):
        rows = pools.text_rows[start:start + chunk]
        lengths.append(student.tokenise([pools.sentences[i] for i in rows])["attention_mask"].sum(1).numpy())
    return np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)


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

"""KDMCSE's batch schedule: text-only batches with a paired image-caption batch every k-th step.

k = floor(#text batches / #paired batches) unless ``paired_every`` fixes it (docs/reference.md: at batch 64,
Wiki1M with Flickr30k gives k = 6, with COCO k = 2). Two schedules (``TrainConfig.schedule``):

* ``one_pass``: an epoch is one pass over each pool, incomplete batches dropped; step n (from 1) is
  paired when n % k == 0, and when one pool runs dry the other fills the epoch.
* ``official``: as the released KDMCSE training loop runs it. Each pool is an endless loader that
  reshuffles at every pass and keeps its last, short batch; an epoch has #text batches + #paired
  batches steps (both rounded up), step s (from 0) is paired when s % k == 0, and the two loaders
  carry on across epochs where they stopped. With Wiki1M, 145k Flickr30k captions and batch 64
  that is 17,891 steps, 2,982 of them paired (1.32 passes over the pairs; ``one_pass``: 2,265).

Orders are a pure function of (seed, epoch) under both, so a resumed run replays exactly the batches
an uninterrupted run would have seen.

Length-grouped text batches (``train.length_grouped``, ``one_pass``): the epoch's shuffled text rows are
taken ``GROUP_BATCHES`` batches at a time, sorted by token length within that chunk and cut into batches,
and then the batches' order is shuffled: each batch holds sentences of similar length (little padding),
while which batches come when stays random (Hugging Face's ``group_by_length`` idea, its 50-batch
"megabatches"). The rows of the epoch, the paired batches and the number of steps are the same as
without grouping.
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Iterator, Literal, get_args

import numpy as np

Schedule = Literal["official", "one_pass"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
GROUP_BATCHES = 50  # batches sorted by length together (length-grouped text batches)


@dataclass(frozen=True)
class Step:
    """One optimisation step: ``rows`` index the text pool or the paired pool, depending on ``kind``."""

    kind: Literal["text", "paired"]
    rows: np.ndarray


def paired_interval(n_text_batches: int, n_paired_batches: int, paired_every: int | None) -> int:
    """Every how many steps a paired batch comes (0 when there are no paired batches)."""
    if n_paired_batches == 0:
        return 0
    if paired_every is not None:
        if paired_every < 1:
            raise ValueError(f"paired_every must be >= 1, got {paired_every}")
        return paired_every
    return max(1, n_text_batches // n_paired_batches)


@dataclass(frozen=True)
class BatchPlan:
    """What a run's batch order depends on, besides the seed: the pool sizes, the global batch size
    (per-rank batch x world size), the paired interval (None: KDMCSE's ratio) and the schedule."""

    n_text: int
    n_paired: int
    batch_size: int
    paired_every: int | None = None
    schedule: Schedule = "one_pass"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")


def epoch_steps(plan: BatchPlan, seed: int, epoch: int, text_lengths: np.ndarray | None = None) -> list[Step]:
    """All steps of one epoch under ``plan.schedule`` (see the module docstring); ``text_lengths`` (the
    token count of every text row) groups the text batches by length."""
    if plan.schedule == "official":
        if text_lengths is not None:
            raise ValueError("length-grouped batches need the one_pass schedule")
        return _official_epoch(plan, seed, epoch)
    rng = np.random.default_rng([seed, epoch])
    text_order = rng.permutation(plan.n_text)
    paired_batches = _batches(rng.permutation(plan.n_paired), plan.batch_size)
    text_batches = _batches(text_order, plan.batch_size) if text_lengths is None else \
        length_grouped(text_order, text_lengths, plan.batch_size, np.random.default_rng([seed, epoch, 2]))
    k = paired_interval(len(text_batches), len(paired_batches), plan.paired_every)
    pools = {"text": iter(text_batches), "paired": iter(paired_batches)}
    steps: list[Step] = []
    for step_number in range(1, len(text_batches) + len(paired_batches) + 1):
        wanted = "paired" if k > 0 and step_number % k == 0 else "text"
        other = "text" if wanted == "paired" else "paired"
        for kind in (wanted, other):  # when one pool runs dry, the other fills the epoch
            rows = next(pools[kind], None)
            if rows is not None:
                steps.append(Step(kind, rows))
                break
    return steps


def length_grouped(order: np.ndarray, lengths: np.ndarray, batch_size: int,
                   rng: np.random.Generator) -> list[np.ndarray]:
    """The complete batches of ``order``, grouped by ``lengths`` (module docstring): the same rows as
    ``_batches(order, batch_size)``, each batch of similar lengths, the batches in ``rng``'s order."""
    rows = order[:len(order) // batch_size * batch_size]
    chunk = GROUP_BATCHES * batch_size
    batches: list[np.ndarray] = []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        batches += _batches(part[np.argsort(lengths[part], kind="stable")], batch_size)
    return [batches[i] for i in rng.permutation(len(batches))]


def iterate_steps(plan: BatchPlan, seed: int, epochs: int, max_steps: int | None,
                  start_step: int = 0, text_lengths: np.ndarray | None = None) -> Iterator[tuple[int, Step]]:
    """Yield ``(global_step, step)`` from ``start_step`` on, across epochs, up to ``max_steps``
    (``text_lengths``: length-grouped text batches)."""
    global_step = 0
    for epoch in range(epochs if max_steps is None else 10**9):
        for step in epoch_steps(plan, seed, epoch, text_lengths):
            if max_steps is not None and global_step >= max_steps:
                return
            if global_step >= start_step:
                yield global_step, step
            global_step += 1
        if global_step == 0:
            raise ValueError(f"no complete batch of {plan.batch_size} rows: {plan.n_text} text rows, "
                             f"{plan.n_paired} paired rows")


def total_steps(plan: BatchPlan, epochs: int, max_steps: int | None) -> int:
    """Steps the run will take: ``max_steps`` when given (it overrides ``epochs``), else whole epochs."""
    if max_steps is not None:
        return max_steps
    if plan.schedule == "official":
        return epochs * sum(_official_counts(plan))
    return epochs * len(epoch_steps(plan, 0, 0))


def _official_counts(plan: BatchPlan) -> tuple[int, int]:
    """(text steps, paired steps) of one ``official`` epoch."""
    text_batches, paired_batches = math.ceil(plan.n_text / plan.batch_size), math.ceil(plan.n_paired / plan.batch_size)
    k = paired_interval(text_batches, paired_batches, plan.paired_every)
    n_steps = text_batches + paired_batches
    n_paired_steps = 0 if k == 0 else (n_steps - 1) // k + 1  # steps 0, k, 2k, ... below n_steps
    return n_steps - n_paired_steps, n_paired_steps


def _official_epoch(plan: BatchPlan, seed: int, epoch: int) -> list[Step]:
    n_text_steps, n_paired_steps = _official_counts(plan)
    k = paired_interval(math.ceil(plan.n_text / plan.batch_size), math.ceil(plan.n_paired / plan.batch_size),
                        plan.paired_every)
    text = _LoaderStream(plan.n_text, plan.batch_size, seed, 0).batches(epoch * n_text_steps, n_text_steps)
    paired = _LoaderStream(plan.n_paired, plan.batch_size, seed, 1).batches(epoch * n_paired_steps, n_paired_steps)
    kinds = ["paired" if k > 0 and s % k == 0 else "text" for s in range(n_text_steps + n_paired_steps)]
    pools = {"text": iter(text), "paired": iter(paired)}
    return [Step(kind, next(pools[kind])) for kind in kinds]


@dataclass(frozen=True)
class _LoaderStream:
    """An endless shuffling loader over ``n`` rows: pass p is its own permutation, cut into
    ceil(n / batch_size) batches, the last one short (a DataLoader without drop_last, cycled)."""

    n: int
    batch_size: int
    seed: int
    pool: int

    def batches(self, first: int, count: int) -> list[np.ndarray]:
        """Batches number ``first`` .. ``first + count - 1`` of the endless stream."""
        per_pass = math.ceil(self.n / self.batch_size)
        out, order, order_pass = [], None, -1
        for index in range(first, first + count):
            pass_number, within = divmod(index, per_pass)
            if pass_number != order_pass:
                order = np.random.default_rng([self.seed, self.pool, pass_number]).permutation(self.n)
                order_pass = pass_number
            out.append(order[within * self.batch_size:(within + 1) * self.batch_size])
        return out


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    n_full = len(order) // batch_size
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(n_full)]


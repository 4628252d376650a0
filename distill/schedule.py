"""KDMCSE's batch schedule: text-only batches with a paired image-caption batch every k-th step.

k = floor(#text batches / #paired batches) unless ``paired_every`` fixes it (docs/reference.md: at batch
64, Flickr gives k = 6 and COCO k = 2). Orders are a pure function of (seed, epoch), so a resumed
run replays exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np


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


def epoch_steps(n_text: int, n_paired: int, batch_size: int, seed: int, epoch: int,
                paired_every: int | None = None) -> list[Step]:
    """All steps of one epoch; incomplete last batches are dropped so every step has ``batch_size`` rows."""
    rng = np.random.default_rng([seed, epoch])
    text_batches = _batches(rng.permutation(n_text), batch_size)
    paired_batches = _batches(rng.permutation(n_paired), batch_size)
    k = paired_interval(len(text_batches), len(paired_batches), paired_every)
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


def iterate_steps(n_text: int, n_paired: int, batch_size: int, seed: int, epochs: int,
                  max_steps: int | None, paired_every: int | None = None,
                  start_step: int = 0) -> Iterator[tuple[int, Step]]:
    """Yield ``(global_step, step)`` from ``start_step`` on, across epochs, up to ``max_steps``."""
    global_step = 0
    for epoch in range(epochs if max_steps is None else 10**9):
        for step in epoch_steps(n_text, n_paired, batch_size, seed, epoch, paired_every):
            if max_steps is not None and global_step >= max_steps:
                return
            if global_step >= start_step:
                yield global_step, step
            global_step += 1
        if global_step == 0:
            raise ValueError(f"no complete batch of {batch_size} rows: {n_text} text rows, {n_paired} paired rows")


def total_steps(n_text: int, n_paired: int, batch_size: int, epochs: int, max_steps: int | None,
                paired_every: int | None = None) -> int:
    """Steps the run will take: ``max_steps`` when given (it overrides ``epochs``), else whole epochs."""
    if max_steps is not None:
        return max_steps
    return epochs * len(epoch_steps(n_text, n_paired, batch_size, 0, 0, paired_every))


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    n_full = len(order) // batch_size
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(n_full)]


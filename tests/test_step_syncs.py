"""A training step that does not log reads nothing back from the device (issue: host-device syncs).

Every ``.item()``, ``.tolist()`` and ``.cpu()`` made while ``training_step`` runs is counted, apart from
the ones torch's own non-fused AdamW makes on CPU tensors (its step counters; the CUDA path uses the
fused AdamW, which makes none). The loss terms come back as device tensors and are read on log steps
only (``read_terms``).
"""
from __future__ import annotations

import collections
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distill.schedule import Step
from distill.gather import gather_with_grad
from distill.trainer import read_terms, training_step
from kdmcse_base.process_group import DistEnv

from train_testkit import tiny_run

READS = ("item", "tolist", "cpu")


def count_reads(monkeypatch, action) -> collections.Counter:
    """Device reads made while ``action`` runs, by the innermost project or library frame that made them."""
    counts: collections.Counter = collections.Counter()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            frames = traceback.extract_stack()[:-1]
            if not any("torch/optim/" in frame.filename for frame in frames):
                counts[(_name, f"{frames[-1].filename}:{frames[-1].lineno}")] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    action()
    monkeypatch.undo()
    return counts


def test_a_step_that_does_not_log_reads_nothing_from_the_device(tiny_bert_dir, monkeypatch):
    run = tiny_run(tiny_bert_dir)
    rows = np.arange(8)
    training_step(run, Step("paired", rows))  # warm-up: lazy state, first-call paths
    for kind in ("text", "paired"):
        results = {}
        counts = count_reads(monkeypatch, lambda: results.update(training_step(run, Step(kind, rows))))
        assert counts == collections.Counter(), counts
        assert all(isinstance(value, torch.Tensor) for value in results.values())
    # the log step reads every term once, together
    counts = count_reads(monkeypatch, lambda: read_terms(results, run.env))
    assert sum(counts.values()) == 1 and next(iter(counts))[0] == "tolist"


def test_the_counter_sees_a_read(monkeypatch):
    counts = count_reads(monkeypatch, lambda: torch.ones(2).sum().item())
    assert sum(counts.values()) == 1


# Reads that force a host-device sync, counted in the 2-process test: the three above plus Python's
# conversions of a tensor (``int(t)``, ``float(t)``, ``bool(t)``, which is how a size exchange reads back).
SYNCS = READS + ("__int__", "__float__", "__bool__", "__index__")


def _count(names, action) -> collections.Counter:
    """``count_reads`` without pytest's monkeypatch (for spawned workers)."""
    counts: collections.Counter = collections.Counter()
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def counter(name, original):
        def counted(self, *args, **kwargs):
            frames = traceback.extract_stack()[:-1]
            if not any("torch/optim/" in frame.filename for frame in frames):
                counts[(name, f"{frames[-1].filename}:{frames[-1].lineno}")] += 1
            return original(self, *args, **kwargs)
        return counted

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, counter(name, original))
        action()
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    return counts


def _two_rank_worker(rank, tiny_bert_dir, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        run = tiny_run(tiny_bert_dir, DistEnv(rank, 2, torch.device("cpu")))
        rows = np.arange(8)
        training_step(run, Step("paired", rows))  # warm-up: lazy state, DDP's first-iteration work
        counts = {kind: _count(SYNCS, lambda kind=kind: training_step(run, Step(kind, rows)))
                  for kind in ("text", "paired")}
        exchanged = _count(SYNCS, lambda: gather_with_grad(torch.ones(3, 2)))  # the counter sees a size exchange
        torch.save({"counts": counts, "exchanged": sum(exchanged.values())}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# transformers' SDPA path asks ``padding_mask.all()`` once per forward, to drop an all-ones mask: a sync
# inside the library, on one process as on two, that this project cannot remove without another attention kernel.
LIBRARY_SYNC = "transformers/masking_utils.py"


@pytest.mark.slow  # two processes
def test_a_two_process_step_syncs_nowhere_but_the_log_read(tiny_bert_dir, tmp_path):
    """Under torchrun the batch sizes of every rank come from the schedule, not from a collective."""
    # forked, not spawned: the ranks start with this process's imports (tests/test_distributed_gradient.py)
    mp.start_processes(_two_rank_worker, args=(str(tiny_bert_dir), str(tmp_path / "init"), str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for kind, counts in out["counts"].items():
            ours = {where: n for where, n in counts.items() if LIBRARY_SYNC not in where[1]}
            assert ours == {}, (kind, ours)
            assert sum(counts.values()) - sum(ours.values()) <= 1  # the library's mask check, one forward
        assert out["exchanged"] > 0

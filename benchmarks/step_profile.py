#!/usr/bin/env python
"""Where a training step's time goes on CPU, and how many of its tokens are padding.

The offline default run (``configs/offline_default.yaml``: 3 spread layers of all-MiniLM-L6-v2, regression
onto the cached teacher, batch 64, at most 32 tokens) is assembled by the trainer's own ``start_run`` and
stepped by hand, each phase timed apart over ``--steps`` steps (medians, after 3 warm-up steps):

* prepare: the step's host side (``prepare_inputs``: the rows' sentences tokenised, their teacher rows read);
* forward, backward, optimizer (clip + fused AdamW + schedule), each under the run's precision.

Then ``torch.profiler`` records one step and the report lists the operators with the most self CPU time.
Padding: over ``--batches`` random batches of the pool (as the trainer draws them), the share of the padded
``batch x longest`` token grid that is padding, and the same share if sentences of similar length shared a
batch (length-grouped batches: sorted within chunks of 50 batches, then the batches shuffled).

    HF_HUB_OFFLINE=1 python benchmarks/step_profile.py --report reports/step_profile.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.config import load_config  # noqa: E402
from distill.schedule import Step  # noqa: E402
from distill.run import autocast  # noqa: E402
from distill.step_loader import prepare_inputs  # noqa: E402
from distill.trainer import start_run, with_resolved_precision  # noqa: E402
from kdmcse_base.machine import cpu_name  # noqa: E402
from kdmcse_base.process_group import DistEnv  # noqa: E402


def timed_phases(run, steps: int, seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    phases: dict[str, list[float]] = {"prepare": [], "forward": [], "backward": [], "optimizer": []}
    run.model.train()
    for index in range(steps + 3):
        rows = rng.choice(run.pools.n_text, run.cfg.train.batch_size, replace=False)
        tick = time.perf_counter()
        inputs = prepare_inputs(run, Step("text", rows))
        marks = [time.perf_counter()]
        with autocast(run.cfg.train.precision, run.env.device):
            terms = run.model(inputs)
        marks.append(time.perf_counter())
        run.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip or 1e9)
        run.optimizer.step()
        run.scheduler.step()
        marks.append(time.perf_counter())
        if index >= 3:
            for name, start, end in zip(phases, [tick, *marks[:-1]], marks):
                phases[name].append(end - start)
    return phases


def profiled_step(run) -> str:
    rows = np.arange(run.cfg.train.batch_size)
    inputs = prepare_inputs(run, Step("text", rows))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        with autocast(run.cfg.train.precision, run.env.device):
            terms = run.model(inputs)
        terms["loss"].backward()
        run.optimizer.step()
    return profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def padding_shares(run, batches: int, seed: int = 0) -> tuple[float, float, float]:
    """(padding share of random batches, of length-grouped batches, mean tokens per sentence)."""
    tokenizer = run.trainable.student.encoder.tokenizer
    limit = run.cfg.student.max_seq_length or 512
    rng = np.random.default_rng(seed)
    batch = run.cfg.train.batch_size
    rows = rng.choice(run.pools.n_text, batches * batch, replace=False)
    sentences = [run.pools.sentences[i] for i in run.pools.text_rows[rows]]
    lengths = np.minimum([len(ids) for ids in tokenizer(sentences)["input_ids"]], limit)

    def share(order: np.ndarray) -> float:
        grid = order.reshape(batches, batch)
        longest = lengths[grid].max(axis=1)
        return 1 - lengths.sum() / (longest.sum() * batch)

    chunk = 50 * batch
    grouped = np.concatenate([start + np.argsort(lengths[start:start + chunk], kind="stable")
                              for start in range(0, len(lengths), chunk)])
    return share(np.arange(len(lengths))), share(grouped), float(lengths.mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "offline_default.yaml",
                        help="a run config (e.g. a run folder's config.yaml, whose cache is built already)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--report", type=Path)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.precision=bf16")
    args = parser.parse_args(argv)
    env = DistEnv.current("cpu")
    with tempfile.TemporaryDirectory() as scratch:
        cfg = load_config(args.config, [f"train.output_dir={scratch}/run", "train.max_steps=1000", *args.overrides])
        cfg = with_resolved_precision(cfg, env)
        Path(cfg.train.output_dir).mkdir()
        run = start_run(cfg, None, env)
        phases = timed_phases(run, args.steps)
        table = profiled_step(run)
        random_share, grouped_share, mean_tokens = padding_shares(run, args.batches)
    medians = {name: statistics.median(values) * 1000 for name, values in phases.items()}
    total = sum(medians.values())
    command = "HF_HUB_OFFLINE=1 python benchmarks/step_profile.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# One training step on CPU: where the time goes, and the padding", "",
             f"Generated by `{command.strip()}` on {os.cpu_count()} CPU cores ({cpu_name()}), "
             f"{torch.get_num_threads()} torch threads, precision {cfg.train.precision}; the run of `{args.config}` "
             f"({cfg.student.layers} {cfg.student.layer_choice} layers of {cfg.student.model}, batch "
             f"{cfg.train.batch_size}, at most {cfg.student.max_seq_length} tokens, {len(run.pools.text_rows):,} "
             f"text rows); medians of {args.steps} steps.", "",
             "| phase | median ms | share of the step |", "|---|---|---|"]
    lines += [f"| {name} | {value:.1f} | {value / total:.0%} |" for name, value in medians.items()]
    lines += [f"| whole step | {total:.1f} | {1000 / total:.2f} steps/s |", "",
              f"**Padding** over {args.batches} random batches of the pool ({mean_tokens:.1f} tokens a sentence on "
              f"average): {random_share:.1%} of the padded token grid is padding; with length-grouped batches it "
              f"would be {grouped_share:.1%}. A forward's cost grows with the grid, so grouping would cut the "
              f"tokens a step computes by about {1 - (1 - random_share) / (1 - grouped_share):.0%} (attention "
              "grows faster than that with length); its effect on dev at equal steps is not measured yet.", "",
              "**Operators with the most self CPU time** (one step, `torch.profiler`):", "", "```", table, "```"]
    text = "\n".join(lines) + "\n"
    if args.report:
        args.report.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

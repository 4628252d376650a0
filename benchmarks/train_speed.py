#!/usr/bin/env python
"""Cost of KDMCSE over plain SimCSE: one training step each, same student and batch, one run.

KDMCSE step = angular-margin text loss + AdapACSE (image and caption adapters, teacher margins)
+ teacher lookups from the on-disk cache. SimCSE step = InfoNCE on two dropout views. Every
variant trains on the same image-caption batch at each step, and steps alternate A, B, C, A, ...
so all see the same machine load; the ratio of medians is the number that matters (goal: <= 1.15).
Both steps go through the trainer's ``training_step`` (cache lookups included; their own median is
reported apart). Run in fp32 and bf16 autocast.

  python benchmarks/train_speed.py                 # offline default student, 30 steps each
  python benchmarks/train_speed.py --steps 10 --out reports/train_speed.md
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import load_config  # noqa: E402
from teacher_cache.corpora import resolve_data_dir  # noqa: E402
from distill.pools import build_pools, open_run_cache  # noqa: E402
from distill.schedule import Step  # noqa: E402
from kdmcse_base.process_group import DistEnv  # noqa: E402
from distill.run import TrainingRun, build_run  # noqa: E402
from distill.step_loader import lookup_inputs  # noqa: E402
from distill.trainer import training_step  # noqa: E402
from teacher_cache import TeacherCache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOOKUP = "teacher lookup alone (text + image rows)"
VARIANTS = {
    "SimCSE": ("paired", ["loss.text=simcse", "loss.multimodal=none", "loss.false_negative_filter=none",
                                     "loss.soft_target_weight=0", "loss.same_image_mask=false"]),
    "KDMCSE (angular + AdapACSE)": ("paired", ["loss.text=angular", "loss.multimodal=adapacse",
                                         "loss.false_negative_filter=none", "loss.soft_target_weight=0"]),
    "KDMCSE + filter + soft-target KL": ("paired", ["loss.text=angular", "loss.multimodal=adapacse",
                                                      "loss.false_negative_filter=threshold",
                                                      "loss.soft_target_weight=1"]),
    "Embedding regression (MSE)": ("paired", ["loss.text=none", "loss.multimodal=none",
                                              "loss.false_negative_filter=none", "loss.soft_target_weight=0",
                                              "loss.regression_weight=1"]),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant (after 3 warm-up steps)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--out", default=str(ROOT / "reports" / "train_speed.md"))
    parser.add_argument("overrides", nargs="*", help="extra config overrides (e.g. student.model=PATH)")
    return parser.parse_args()


def build_variant(overrides: list[str], precision: str, env: DistEnv, cache: TeacherCache, pools) -> TrainingRun:
    """The trainer's own run (``distill.run.build_run``) of the offline KDMCSE config with ``overrides``."""
    cfg = load_config(ROOT / "configs" / "kdmcse_offline.yaml",
                      overrides + [f"train.precision={precision}", "train.lr=1e-5", "train.weight_decay=0"])
    torch.manual_seed(0)
    return build_run(cfg, env, cache, pools)


def time_variants(args, precision: str, cache: TeacherCache, pools, base: list[str]) -> dict[str, list[float]]:
    env = DistEnv(0, 1, torch.device(args.device))
    built = {name: build_variant(base + o, precision, env, cache, pools) for name, (_, o) in VARIANTS.items()}
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in [*VARIANTS, LOOKUP]}
    for step in range(args.steps + 3):
        rows = torch.randperm(pools.n_paired, generator=generator)[:args.batch_size].numpy()
        started = time.perf_counter()
        lookup_inputs(cache, pools, "paired", rows, env.device)
        if step >= 3:
            times[LOOKUP].append(time.perf_counter() - started)
        for name, (kind, _) in VARIANTS.items():
            if env.device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            training_step(built[name], Step(kind, rows))
            if env.device.type == "cuda":
                torch.cuda.synchronize()
            if step >= 3:
                times[name].append(time.perf_counter() - started)
    return times


def main() -> int:
    args = parse_args()
    base = ["data.limits={wiki1m: 2000, coco2017_mini: 300}", f"train.batch_size={args.batch_size}",
            *args.overrides]
    cfg = load_config(ROOT / "configs" / "kdmcse_offline.yaml", base)
    data_dir = resolve_data_dir(cfg.data_dir)
    cache = open_run_cache(cfg, data_dir)
    pools = build_pools(cache)
    rows = []
    for precision in args.precisions.split(","):
        times = time_variants(args, precision, cache, pools, base)
        baseline = statistics.median(times["SimCSE"])
        for name, values in times.items():
            median = statistics.median(values)
            rows.append(f"| {precision} | {name} | {median * 1000:.0f} | {1 / median:.2f} | {median / baseline:.3f} |")
        print("\n".join(rows[-len(times):]), flush=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    report = f"""# Training step cost: KDMCSE vs SimCSE

Generated by `python benchmarks/train_speed.py --steps {args.steps} --device {args.device}` (do not edit).
Student: {cfg.student.model}, first {cfg.student.layers} layers; batch {args.batch_size} sentences x 2 dropout
views, max {cfg.student.max_seq_length} tokens; device: {device}; torch {torch.__version__}.
Median over {args.steps} timed steps per variant, variants interleaved step by step (3 warm-up steps each).
Ratio = median step time / SimCSE median step time at the same precision (goal for KDMCSE: <= 1.15).

| precision | step | median ms | steps/s | ratio vs SimCSE |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

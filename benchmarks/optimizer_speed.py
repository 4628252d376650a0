#!/usr/bin/env python
"""AdamW's step on the offline student's parameters: torch's per-tensor loop, foreach and fused kernels.

The evidence for ``distill.trainer.adamw`` running the fused kernel on CPU. Implementations alternate
(A B C A B C) on the same cores; each time is the mean of 20 steps after 3 warm-up steps.

  python benchmarks/optimizer_speed.py      # writes reports/optimizer_speed.md
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import load_config  # noqa: E402
from distill.recipes import CONFIG, METHODS  # noqa: E402
from distill.student import build_encoder  # noqa: E402
from kdmcse_base.machine import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"for-loop (torch's CPU default)": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def step_ms(params: list[torch.nn.Parameter], options: dict, steps: int = 20) -> float:
    optimizer = torch.optim.AdamW(params, lr=1e-5, **options)
    for _ in range(3):
        optimizer.step()
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - started) / steps * 1000


def main() -> int:
    cfg = load_config(CONFIG, list(METHODS["regression_spread"].overrides))
    params = [p for p in build_encoder(cfg.student).parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(3):
        for kind, options in KINDS.items():
            times[kind].append(step_ms(params, options))
    n = sum(p.numel() for p in params) / 1e6
    lines = ["# AdamW step time on the offline student", "",
             f"`python benchmarks/optimizer_speed.py` on {cpu_name()}, {torch.get_num_threads()} torch threads: "
             f"{n:.1f}M parameters in {len(params)} tensors (3-layer all-MiniLM-L6-v2 cut), 3 alternating rounds.",
             "", "| implementation | ms per step (rounds) | median |", "|---|---|---|"]
    for kind, values in times.items():
        lines.append(f"| {kind} | {', '.join(f'{v:.1f}' for v in values)} | {sorted(values)[1]:.1f} |")
    report = ROOT / "reports" / "optimizer_speed.md"
    report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

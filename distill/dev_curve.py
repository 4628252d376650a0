"""The run folder's ``dev_curve.png``: STS-B dev against the step, redrawn at every evaluation, so a
researcher sees at a glance whether the run still improves, has peaked, or made the student worse."""
from __future__ import annotations

import io
import math


def dev_curve_png(history: list[tuple[int, float]], baseline: float | None, best_step: int, title: str) -> bytes:
    """The PNG of ``history`` (step, dev) from the untrained ``baseline`` at step 0, the best checkpoint
    marked (the caller writes it atomically, so a reader never sees half a PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: the file is the output
    import matplotlib.pyplot as plt

    points = ([(0, baseline)] if baseline is not None and math.isfinite(baseline) else []) + \
        [(step, dev) for step, dev in history if math.isfinite(dev)]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if points:
        ax.plot(*zip(*points), marker=".", color="tab:blue")
        best = [p for p in points if p[0] == best_step]
        if best:
            ax.scatter(*zip(*best), s=80, facecolors="none", edgecolors="tab:red", label=f"best (step {best_step})",
                       zorder=3)
            ax.legend(fontsize=8)
    if baseline is not None and math.isfinite(baseline):
        ax.axhline(baseline, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("STS-B dev (Spearman x100)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()

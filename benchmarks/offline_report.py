"""Builds reports/offline_distill.md and its figures from the benchmark's saved results.

Only reads ``<out_root>/<method>/seed*/results.json`` (and the untrained/teacher rows): the report
is never edited by hand, and rebuilding it needs no training.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STS_COLUMNS = {"STS12": "STS12", "STS13": "STS13", "STS14": "STS14", "STS15": "STS15", "STS16": "STS16",
               "STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R"}
KDMCSE_FAMILY = ("kdmcse", "kdmcse_kl", "kdmcse_kl_mse")
DISTRIBUTION_METHODS = ("simcse", "kdmcse", "kdmcse_kl", "regression")  # first seed of each; ablations left out
COLORS = plt.get_cmap("tab20").colors


def load_results(out_root: Path, methods) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    runs = {name: [json.loads(p.read_text()) for p in sorted((out_root / name).glob("seed*/results.json"))]
            for name in methods}
    references = {name: json.loads((out_root / name / "results.json").read_text())
                  for name in ("untrained", "teacher") if (out_root / name / "results.json").is_file()}
    return {k: v for k, v in runs.items() if v}, references


def sts_average(result: dict) -> float:
    return statistics.fmean(result["sts"]["tasks"][task]["spearman"] for task in STS_COLUMNS)


def transfer_average(result: dict) -> float | None:
    tasks = result.get("transfer", {}).get("tasks")
    return statistics.fmean(t["accuracy"] for t in tasks.values()) if tasks else None


def mean_std(values: list[float | None]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def sts_table(runs, references, methods) -> str:
    header = "| model | " + " | ".join(STS_COLUMNS.values()) + " | Avg | recovery |\n|" + "---|" * (len(STS_COLUMNS) + 3)
    teacher_avg = sts_average(references["teacher"]) if "teacher" in references else None
    lines = [header]

    def row(label: str, results: list[dict]) -> str:
        cells = [f"{statistics.fmean(r['sts']['tasks'][t]['spearman'] for r in results):.2f}" for t in STS_COLUMNS]
        averages = [sts_average(r) for r in results]
        recovery = f"{100 * statistics.fmean(averages) / teacher_avg:.1f}%" if teacher_avg else "—"
        return f"| {label} | " + " | ".join(cells) + f" | {mean_std(averages)} | {recovery} |"

    if "untrained" in references:
        lines.append(row("untrained 3-layer student", [references["untrained"]]))
    for name, results in runs.items():
        lines.append(row(f"{methods[name].label} (n={len(results)})", results))
    if "teacher" in references:
        lines.append(row("teacher (6-layer all-MiniLM-L6-v2)", [references["teacher"]]))
    return "\n".join(lines)


def details_table(runs, references, methods) -> str:
    lines = ["| model | transfer avg | retrieval rSum (97 held-out images) | train min | steps/s | "
             "time per step vs KDMCSE | best step |",
             "|---|---|---|---|---|---|---|"]
    kdmcse_rate = statistics.fmean(r["train"]["steps_per_second"] for r in runs["kdmcse"]) if "kdmcse" in runs else None
    for name in ("untrained",):
        if name in references:
            lines.append(f"| untrained 3-layer student | {mean_std([transfer_average(references[name])])} | — | — | — | — | — |")
    for name, results in runs.items():
        rsum = [r["retrieval"]["rsum"] for r in results if "retrieval" in r] if methods[name].multimodal else []
        minutes = [r["train"]["train_seconds"] / 60 for r in results]
        rates = [r["train"]["steps_per_second"] for r in results]
        best = [r["train"]["best_step"] for r in results]
        cost = f"{kdmcse_rate / statistics.fmean(rates):.2f}" if kdmcse_rate else "—"
        lines.append(f"| {methods[name].label} | {mean_std([transfer_average(r) for r in results])} | "
                     f"{mean_std(rsum)} | {mean_std(minutes)} | {mean_std(rates)} | {cost} | {mean_std(best)} |")
    if "teacher" in references:
        lines.append(f"| teacher | {mean_std([transfer_average(references['teacher'])])} | — | — | — | — | — |")
    return "\n".join(lines)


def findings(runs, references, methods) -> list[str]:
    """Plain statements computed from the numbers (the issue's goals), no adjectives added by hand."""
    if not runs:
        return []
    averages = {name: statistics.fmean(sts_average(r) for r in results) for name, results in runs.items()}
    best = max(averages, key=averages.get)
    lines = [f"Best method on the 7-task STS average: **{methods[best].label}** ({averages[best]:.2f})."]
    if "teacher" in references:
        teacher = sts_average(references["teacher"])
        minutes = statistics.fmean(r["train"]["train_seconds"] / 60 for r in runs[best])
        lines.append(f"It recovers {100 * averages[best] / teacher:.1f}% of the teacher's {teacher:.2f} "
                     f"(goal: >= 95%) in {minutes:.1f} training minutes on the machine that ran it.")
    family = {n: averages[n] for n in KDMCSE_FAMILY if n in averages}
    if family and "simcse" in averages:
        top = max(family, key=family.get)
        gap = family[top] - averages["simcse"]
        lines.append(f"Best KDMCSE variant ({methods[top].label}) vs SimCSE: {gap:+.2f} points (goal: >= +5).")
    if "regression" in averages:
        losers = [methods[n].label for n in family if family[n] < averages["regression"]]
        if losers:
            lines.append(f"These KDMCSE variants lose to plain embedding regression "
                         f"({averages['regression']:.2f}): {', '.join(losers)}.")
        else:
            lines.append(f"Every KDMCSE variant beats plain embedding regression ({averages['regression']:.2f}).")
    lines += ablation_findings(runs, averages, methods)
    return lines


def ablation_findings(runs, averages: dict[str, float], methods) -> list[str]:
    """Each issue-6 module against plain KDMCSE: STS average and retrieval rSum, with the seed std."""
    if "kdmcse" not in runs:
        return []
    base_std = statistics.stdev(sts_average(r) for r in runs["kdmcse"]) if len(runs["kdmcse"]) > 1 else 0.0
    base_rsum = statistics.fmean(r["retrieval"]["rsum"] for r in runs["kdmcse"])
    lines = []
    for name in (n for n in runs if n.startswith("kdmcse_") and n not in KDMCSE_FAMILY):
        delta = averages[name] - averages["kdmcse"]
        rsum = statistics.fmean(r["retrieval"]["rsum"] for r in runs[name]) - base_rsum
        std = statistics.stdev(sts_average(r) for r in runs[name]) if len(runs[name]) > 1 else 0.0
        verdict = ("helps" if delta > base_std + std else "hurts" if delta < -(base_std + std)
                   else "does not help measurably")
        lines.append(f"{methods[name].label} vs KDMCSE: {delta:+.2f} STS average ({verdict}: the gap against "
                     f"the two seed stds {base_std:.2f} + {std:.2f}), {rsum:+.2f} retrieval rSum.")
    return lines


def plot_dev_curves(runs, methods, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for index, (name, results) in enumerate(runs.items()):
        steps = [s for s, _ in results[0]["train"]["dev_history"]]
        curves = [[score for _, score in r["train"]["dev_history"]] for r in results]
        length = min(len(c) for c in curves)
        mean = [statistics.fmean(c[i] for c in curves) for i in range(length)]
        ax.plot(steps[:length], mean, marker="o", markersize=3, label=methods[name].label,
                color=COLORS[2 * index % len(COLORS)], linestyle="-" if index < 6 else "--")
    ax.set_xlabel("training step")
    ax.set_ylabel("STS-B dev Spearman x100 (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_similarity_distributions(runs, references, methods, path: Path) -> None:
    series = {}
    if "untrained" in references:
        series["untrained student"] = references["untrained"]["stsb_test_cosines"]
    for name in DISTRIBUTION_METHODS:
        if name in runs:
            series[methods[name].label] = runs[name][0]["stsb_test_cosines"]
    if "teacher" in references:
        series["teacher"] = references["teacher"]["stsb_test_cosines"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, values in series.items():
        style = {"linewidth": 2.5, "color": "black"} if label == "teacher" else {"linewidth": 1.2}
        ax.hist(values, bins=40, range=(-0.2, 1.0), histtype="step", density=True, label=label, **style)
    ax.set_xlabel("cosine similarity of STS-B test pairs (first seed of each method)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out_root: Path, report: Path, methods, args) -> None:
    runs, references = load_results(out_root, methods)
    figures = report.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    if runs:
        plot_dev_curves(runs, methods, figures / "offline_distill_dev_curves.png")
        plot_similarity_distributions(runs, references, methods, figures / "offline_distill_similarities.png")
    device = next((r["train"].get("device") for rs in runs.values() for r in rs if r["train"].get("device")), "?")
    body = [
        "# Offline distillation benchmark",
        "",
        f"Generated by `{args.command}` from the results saved under `{out_root}` (never edited by hand).",
        "",
        "**Problem.** Recover the 3-layer cut of all-MiniLM-L6-v2 (the student) towards the full 6-layer model "
        "(the teacher) on real data only. Teacher = all-MiniLM-L6-v2 text tower + EfficientNet-Lite0 image tower "
        "(ImageNet weights), cached once. Training data: Wiki1M prefix, Flickr30k (Multi30k) and COCO val2017 "
        "captions as text; coco2017_mini image-caption pairs (300 images trained, 97 held out for retrieval).",
        "",
        f"**Budget.** Same for every method: {args.steps} steps of {args.batch_size} sentences, AdamW lr {args.lr}, "
        "linear decay, bf16 autocast, a paired batch every 4th step, STS-B dev every 10% of the budget with the "
        f"best checkpoint kept (test sets never used for selection). Training device: {device}.",
        "",
        "## STS (Spearman x100, SentEval \"all\" aggregation; mean over seeds, Avg as mean ± std)",
        "",
        sts_table(runs, references, methods),
        "",
        "## Transfer, retrieval and cost",
        "",
        details_table(runs, references, methods),
        "",
        "Transfer: "+ ("not run for these results (`--no-transfer`); a dash marks it." if args.no_transfer else
                       "SentEval protocol (MR, CR, SUBJ, MPQA 10-fold; SST2, TREC, MRPC given splits)."),
        "Retrieval rSum (max 600) is only shown for methods that train the grounding head and image adapter; "
        "'time per step vs KDMCSE' is the ratio of mean steps/s (runs shared one GPU, several at a time).",
        "",
        "## Findings",
        "",
        *[f"- {line}" for line in findings(runs, references, methods)],
        "",
        "## Figures",
        "",
        "![STS-B dev during training](figures/offline_distill_dev_curves.png)",
        "",
        "![Similarity distributions on STS-B test](figures/offline_distill_similarities.png)",
        "",
    ]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(body))

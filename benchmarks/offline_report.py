"""Builds reports/offline_distill.md and its figures from the benchmark's saved results.

Only reads ``<out_root>/<method>/seed*/results.json`` (and the untrained/teacher rows): the report
is never edited by hand, and rebuilding it needs no training.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402
from scipy.stats import ttest_rel  # noqa: E402

from eval.report import markdown_table  # noqa: E402

STS_COLUMNS = {"STS12": "STS12", "STS13": "STS13", "STS14": "STS14", "STS15": "STS15", "STS16": "STS16",
               "STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R"}
KDMCSE_FAMILY = ("kdmcse", "kdmcse_kl", "kdmcse_kl_mse", "adapacse_kl_mse", "kdmcse_kl_mse_dias", "kdmcse_kl_mse_spread")
REGRESSION_ONLY = ("regression", "regression_spread", "st_recipe")
"""Recipes whose only target is the teacher's embedding (the anchors a KDMCSE-family objective must beat)."""
COMBINATIONS = ("kdmcse_kl_mse", "regression_kl", "adapacse_kl_mse", "kdmcse_kl_mse_dias")
"""Methods that add soft targets, filtering or relations to the regression target."""
DISTRIBUTION_METHODS = ("simcse", "kdmcse", "kdmcse_kl", "regression", "regression_spread", "st_recipe",
                        "kdmcse_kl_mse_spread")  # first seed of each; ablations left out
COLORS = plt.get_cmap("tab20").colors
TRANSFER_COLUMNS = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")


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


def method_averages(runs) -> dict[str, float]:
    """Each method's STS average, mean over its seeds."""
    return {name: statistics.fmean(sts_average(r) for r in results) for name, results in runs.items()}


def mean_std(values: list[float | None], digits: int = 2) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def transfer_cell(results: list[dict]) -> str:
    """Mean ± std of the transfer average over the seeds that ran it, with their count if not all."""
    values = [v for v in (transfer_average(r) for r in results) if v is not None]
    cell = mean_std(values)
    return cell if len(values) in (0, len(results)) else f"{cell} (n={len(values)})"


def compare(runs, name: str, base: str) -> tuple[float, str, float, float]:
    """STS-average gap of ``name`` over ``base``, and whether it exceeds the two seed stds added."""
    mean = {n: statistics.fmean(sts_average(r) for r in runs[n]) for n in (name, base)}
    std = {n: statistics.stdev(sts_average(r) for r in runs[n]) if len(runs[n]) > 1 else 0.0 for n in (name, base)}
    delta = mean[name] - mean[base]
    verdict = ("better" if delta > std[name] + std[base] else "worse" if delta < -(std[name] + std[base])
               else "within seed noise")
    return delta, verdict, std[base], std[name]


@dataclass(frozen=True)
class PairedGap:
    """``name`` minus ``base`` seed by seed (same seeds, same data order), on the STS average and STS-B dev."""
    seeds: tuple[int, ...]
    sts: tuple[float, ...]
    dev: tuple[float, ...]

    def describe(self) -> str:
        p_value = ttest_rel(self.sts, [0.0] * len(self.sts)).pvalue if len(set(self.sts)) > 1 else float("nan")
        ahead = sum(d > 0 for d in self.sts)
        return (f"{statistics.fmean(self.sts):+.2f} ± {statistics.stdev(self.sts):.2f} STS average per seed "
                f"(ahead on {ahead} of {len(self.seeds)} seeds {', '.join(map(str, self.seeds))}; paired t-test "
                f"p = {p_value:.3f}), STS-B dev {statistics.fmean(self.dev):+.2f} ± {statistics.stdev(self.dev):.2f}")


def paired(runs, name: str, base: str) -> PairedGap | None:
    """The per-seed gaps over the seeds both methods ran; None with fewer than two such seeds."""
    by_seed = {n: {r["seed"]: r for r in runs[n]} for n in (name, base)}
    seeds = tuple(sorted(by_seed[name].keys() & by_seed[base].keys()))
    if len(seeds) < 2:
        return None
    pairs = [(by_seed[name][s], by_seed[base][s]) for s in seeds]
    return PairedGap(seeds, tuple(sts_average(a) - sts_average(b) for a, b in pairs),
                     tuple(a["train"]["best_stsb_dev"] - b["train"]["best_stsb_dev"] for a, b in pairs))


def sts_table(runs, references, methods) -> str:
    teacher_avg = sts_average(references["teacher"]) if "teacher" in references else None

    def row(label: str, results: list[dict]) -> list[str]:
        cells = [f"{statistics.fmean(r['sts']['tasks'][t]['spearman'] for r in results):.2f}" for t in STS_COLUMNS]
        averages = [sts_average(r) for r in results]
        recovery = f"{100 * statistics.fmean(averages) / teacher_avg:.1f}%" if teacher_avg else "—"
        return [label, *cells, mean_std(averages), recovery]

    rows = [row("untrained 3-layer student", [references["untrained"]])] if "untrained" in references else []
    rows += [row(f"{methods[name].label} (n={len(results)})", results) for name, results in runs.items()]
    if "teacher" in references:
        rows.append(row("teacher (6-layer all-MiniLM-L6-v2)", [references["teacher"]]))
    return markdown_table(["model", *STS_COLUMNS.values(), "Avg", "recovery"], rows)


def transfer_table(runs, references, methods) -> str:
    """Per-task transfer accuracy of each model's first seed that ran them (SentEval's table)."""
    candidates = [("untrained 3-layer student", references.get("untrained"))]
    candidates += [(methods[name].label, next((r for r in results if "transfer" in r), None))
                   for name, results in runs.items()]
    candidates.append(("teacher (6-layer all-MiniLM-L6-v2)", references.get("teacher")))
    rows = []
    for label, result in candidates:
        if result is None or "transfer" not in result:
            continue
        tasks = result["transfer"]["tasks"]
        cells = [f"{tasks[t]['accuracy']:.2f}" if t in tasks else "—" for t in TRANSFER_COLUMNS]
        rows.append([label, *cells, f"{transfer_average(result):.2f}"])
    return markdown_table(["model", *TRANSFER_COLUMNS, "Avg"], rows) if rows else ""


def _saved(runs, references) -> list[dict]:
    return [r for results in [*runs.values(), list(references.values())] for r in results]


def encodings(runs, references) -> str:
    """Encoding precision of the saved results (bf16 where not recorded: the default of that time)."""
    return " / ".join(sorted({r.get("encoding", "bf16") for r in _saved(runs, references)})) or "—"


def transfer_settings(runs, references) -> str:
    """Classifier protocol and encoding precision of the saved transfer results, as one phrase.

    Results saved before these were recorded came from the scikit-learn ("fast") classifier on
    bf16 encodings, the defaults of that time.
    """
    saved = [r for r in _saved(runs, references) if "transfer" in r]
    protocols = sorted({r["transfer"].get("protocol", "fast") for r in saved})
    precisions = sorted({r.get("encoding", "bf16") for r in saved})
    return f"{' / '.join(protocols)} protocol, {' / '.join(precisions)} encoding"


def details_table(runs, references, methods) -> str:
    kdmcse_rate = statistics.fmean(r["train"]["steps_per_second"] for r in runs["kdmcse"]) if "kdmcse" in runs else None
    rows = []
    if "untrained" in references:
        rows.append(["untrained 3-layer student", mean_std([transfer_average(references["untrained"])]), *["—"] * 5])
    for name, results in runs.items():
        rsum = [r["retrieval"]["rsum"] for r in results if "retrieval" in r] if methods[name].multimodal else []
        minutes = [r["train"]["train_seconds"] / 60 for r in results]
        rates = [r["train"]["steps_per_second"] for r in results]
        best = [r["train"]["best_step"] for r in results]
        cost = f"{kdmcse_rate / statistics.fmean(rates):.2f}" if kdmcse_rate else "—"
        rows.append([methods[name].label, transfer_cell(results), mean_std(rsum), mean_std(minutes),
                     mean_std(rates), cost, mean_std(best, 0)])
    if "teacher" in references:
        rows.append(["teacher", mean_std([transfer_average(references["teacher"])]), *["—"] * 5])
    columns = ["model", "transfer avg", "retrieval rSum (97 held-out images)", "train min", "steps/s",
               "time per step vs KDMCSE", "best step"]
    return markdown_table(columns, rows)


def findings(runs, references, methods) -> list[str]:
    """Plain statements computed from the numbers against the benchmark's goals, no adjectives added by hand."""
    if not runs:
        return []
    averages = method_averages(runs)
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
        plain = f" (KDMCSE alone: {averages['kdmcse'] - averages['simcse']:+.2f})" if "kdmcse" in averages else ""
        lines.append(f"Best KDMCSE variant ({methods[top].label}) vs SimCSE: {gap:+.2f} points (goal: >= +5){plain}.")
    if "regression" in averages and family:
        losers = [methods[n].label for n in family if family[n] < averages["regression"]]
        if losers:
            lines.append(f"These KDMCSE variants lose to plain embedding regression "
                         f"({averages['regression']:.2f}): {', '.join(losers)}.")
        else:
            lines.append(f"Every KDMCSE variant beats plain embedding regression ({averages['regression']:.2f}).")
    lines += transfer_findings(runs, references, methods)
    lines += recipe_findings(runs, averages, methods)
    lines += combination_findings(runs, methods)
    lines += ablation_findings(runs, methods)
    return lines


def recipe_findings(runs, averages: dict[str, float], methods) -> list[str]:
    """The best KDMCSE-family row against the best regression-only recipe, and the best row against each
    regression-only recipe, paired seed by seed (the goal: KDMCSE-family >= +0.3 with seed stds < 0.15)."""
    recipes = [n for n in REGRESSION_ONLY if n in runs]
    if not recipes:
        return []
    lines = []
    best = max(averages, key=averages.get)
    for name in (n for n in recipes if n != best):
        gap = paired(runs, best, name)
        if gap:
            lines.append(f"{methods[best].label} vs {methods[name].label}, paired: {gap.describe()}.")
    family = [n for n in KDMCSE_FAMILY if n in runs]
    anchor = max(recipes, key=averages.get)
    if family:
        top = max(family, key=averages.get)
        stds = [statistics.stdev(sts_average(r) for r in runs[n]) for n in (top, anchor) if len(runs[n]) > 1]
        gap = paired(runs, top, anchor)
        lines.append(f"Best KDMCSE-family row ({methods[top].label}) vs the best regression-only recipe "
                     f"({methods[anchor].label}): {averages[top] - averages[anchor]:+.2f} STS average "
                     f"(goal: >= +0.30 with seed stds below 0.15; seed stds {' and '.join(f'{v:.2f}' for v in stds) or 'n/a'})"
                     + (f"; paired: {gap.describe()}." if gap else "."))
    return lines


def ablation_findings(runs, methods) -> list[str]:
    """Each related-method module against plain KDMCSE: STS average and retrieval rSum, with the seed std."""
    if "kdmcse" not in runs:
        return []
    base_rsum = statistics.fmean(r["retrieval"]["rsum"] for r in runs["kdmcse"])
    lines = []
    for name in (n for n in runs if n.startswith("kdmcse_") and n not in KDMCSE_FAMILY):
        delta, verdict, base_std, std = compare(runs, name, "kdmcse")
        verdict = {"better": "helps", "worse": "hurts", "within seed noise": "does not help measurably"}[verdict]
        rsum = statistics.fmean(r["retrieval"]["rsum"] for r in runs[name]) - base_rsum
        lines.append(f"{methods[name].label} vs KDMCSE: {delta:+.2f} STS average ({verdict}: the gap against "
                     f"the two seed stds {base_std:.2f} + {std:.2f}), {rsum:+.2f} retrieval rSum.")
    return lines


def transfer_findings(runs, references, methods) -> list[str]:
    """The spread of the transfer averages, next to the untrained student's and the teacher's."""
    firsts = {name: transfer_average(r) for name, results in runs.items() for r in results[:1]}
    firsts = {name: value for name, value in firsts.items() if value is not None}
    if not firsts:
        return []
    low, high = min(firsts, key=firsts.get), max(firsts, key=firsts.get)
    anchors = [f"the {label} scores {transfer_average(references[name]):.2f}"
               for name, label in (("untrained", "untrained student"), ("teacher", "teacher"))
               if name in references and transfer_average(references[name]) is not None]
    return [f"Transfer averages (first seed) range from {firsts[low]:.2f} ({methods[low].label}) to "
            f"{firsts[high]:.2f} ({methods[high].label})" + (f"; {' and '.join(anchors)}." if anchors else ".")]


def combination_findings(runs, methods) -> list[str]:
    """Each regression-based combination against plain regression."""
    if "regression" not in runs:
        return []
    lines = []
    for name in (n for n in COMBINATIONS if n in runs):
        delta, verdict, base_std, std = compare(runs, name, "regression")
        lines.append(f"{methods[name].label} vs embedding regression: {delta:+.2f} STS average ({verdict}; "
                     f"seed stds {base_std:.2f} and {std:.2f}).")
    return lines


CPU_GOAL_PERCENT, CPU_GOAL_MINUTES = 97.0, 30.0
"""The 2-CPU-core goal: this share of the teacher's STS average within this many training minutes."""


def saved_lr(results_path: Path) -> float | None:
    """The learning rate in the ``config.yaml`` the benchmark saves beside each ``results.json``."""
    config = results_path.with_name("config.yaml")
    return yaml.safe_load(config.read_text())["train"]["lr"] if config.is_file() else None


def lr_text(lr: float | None) -> str:
    return f"{lr:g}" if lr is not None else "—"


def cpu_runs(cpu_root: Path) -> dict[tuple[str, float | None, int], list[dict]]:
    """Saved CPU runs under ``cpu_root`` (any depth), grouped by (method, learning rate, steps)."""
    groups: dict[tuple[str, float | None, int], list[dict]] = {}
    for path in sorted(cpu_root.glob("**/seed*/results.json")):
        result = json.loads(path.read_text())
        name = result.get("method", path.parent.parent.name)
        groups.setdefault((name, saved_lr(path), result["train"]["steps"]), []).append(result)
    return groups


def cpu_verdict(label: str, averages: list[float], minutes: float, teacher: float) -> str:
    """One line per setting: its seeds' mean recovery against the goal, its slowest seed's training minutes."""
    recoveries = [100 * a / teacher for a in averages]
    met = statistics.fmean(recoveries) >= CPU_GOAL_PERCENT and minutes <= CPU_GOAL_MINUTES
    return (f"- {label}: STS Avg {mean_std(averages)} over {len(averages)} seed(s) = "
            f"{statistics.fmean(recoveries):.2f}% of the teacher's {teacher:.2f} (per seed "
            f"{min(recoveries):.2f}-{max(recoveries):.2f}%), slowest training {minutes:.1f} min: goal "
            f"(>= {CPU_GOAL_PERCENT:.0f}% within {CPU_GOAL_MINUTES:.0f} min) **{'met' if met else 'not met'}**.")


def cpu_check(cpu_root: Path, references, methods) -> list[str]:
    """The goal's 2-CPU-core measurement: separate runs saved under ``cpu_root``; a row per seed, a verdict per setting."""
    teacher = sts_average(references["teacher"]) if "teacher" in references else None
    rows, verdicts = [], []
    for (name, lr, steps), results in cpu_runs(cpu_root).items():
        averages = [sts_average(r) for r in results]
        for r, average in zip(results, averages):
            train = r["train"]
            recovery = f"{100 * average / teacher:.2f}%" if teacher else "—"  # two decimals: a goal sits at 97%
            rows.append([methods[name].label, lr_text(lr), r["seed"], train["device"], train["steps"],
                         f"{train['train_seconds'] / 60:.1f}", f"{train['steps_per_second']:.2f}", f"{average:.2f}",
                         recovery])
        if teacher:
            minutes = max(r["train"]["train_seconds"] for r in results) / 60
            verdicts.append(cpu_verdict(f"{methods[name].label}, lr {lr_text(lr)}, {steps} steps", averages, minutes,
                                        teacher))
    columns = ["method", "lr", "seed", "device", "steps", "train min", "steps/s", "STS Avg", "recovery"]
    return [*markdown_table(columns, rows).splitlines(), "", *verdicts]


def plot_dev_curves(runs, methods, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for index, (name, results) in enumerate(runs.items()):
        steps = [s for s, _ in results[0]["train"]["dev_history"]]
        curves = [[score for _, score in r["train"]["dev_history"]] for r in results]
        length = min(len(c) for c in curves)
        mean = [statistics.fmean(c[i] for c in curves) for i in range(length)]
        ax.plot(steps[:length], mean, marker="o", markersize=3, label=methods[name].label,
                color=COLORS[index % len(COLORS)], linestyle="-" if index < 6 else "--")
    ax.set_xlabel("training step")
    ax.set_ylabel("STS-B dev Spearman x100 (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: 13 curves fill the axes
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


def lr_choice(sweep_root: Path, methods) -> list[str]:
    """Short runs at several learning rates, ranked by STS-B dev alone (their test scores are not shown)."""
    ranked = sorted(((statistics.fmean(r["train"]["best_stsb_dev"] for r in results), name, lr, steps)
                     for (name, lr, steps), results in cpu_runs(sweep_root).items()), reverse=True)
    rows = [[methods[name].label, lr_text(lr), steps,
             f"**{dev:.2f}**" if index == 0 else f"{dev:.2f}"] for index, (dev, name, lr, steps) in enumerate(ranked)]
    return markdown_table(["method", "lr", "steps", "best STS-B dev"], rows).splitlines()


def cpu_section(args, references, methods) -> list[str]:
    if not args.cpu_check:
        return []
    choice = (["", f"The learning rate was chosen on STS-B dev alone, from short runs (results under "
                   f"`{args.lr_choice}`; best in bold):", "", *lr_choice(Path(args.lr_choice), methods)]
              if args.lr_choice else [])
    table = cpu_check(Path(args.cpu_check), references, methods)
    return ["", "## The 2-CPU-core goal", "",
            f"Runs on 2 CPU cores at the steps listed (results under `{args.cpu_check}`; 'train min' is the "
            "training loop alone, dev evaluations excluded; building the teacher cache is a one-time cost outside it):",
            "", *table, *choice]


def write_report(out_root: Path, report: Path, methods, args) -> None:
    runs, references = load_results(out_root, methods)
    figures = report.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    if runs:
        plot_dev_curves(runs, methods, figures / f"{report.stem}_dev_curves.png")
        plot_similarity_distributions(runs, references, methods, figures / f"{report.stem}_similarities.png")
    transfer = transfer_table(runs, references, methods)
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
        *(["", "The sentence-transformers row trains through its own `SentenceTransformerTrainer` (AdamW, 10% warm-up, "
            "linear decay, no paired batches: every step is text), at the same truncation, with the same dev "
            "selection (`benchmarks/st_recipe.py`)."] if "st_recipe" in runs else []),
        "",
        "## STS (Spearman x100, SentEval \"all\" aggregation; mean over seeds, Avg as mean ± std; "
        f"{encodings(runs, references)} encoding)",
        "",
        sts_table(runs, references, methods),
        "",
        "## Transfer, retrieval and cost",
        "",
        details_table(runs, references, methods),
        "",
        "Transfer: " + ("not run for these results (`--no-transfer`); a dash marks it." if args.no_transfer else
                        "average accuracy of the seven SentEval tasks (MR, CR, SUBJ, MPQA nested 10-fold CV; SST2, "
                        f"TREC, MRPC given splits), on the first {args.transfer_seeds} seed(s) of each method; "
                        f"{transfer_settings(runs, references)}."),
        "Retrieval rSum (max 600) is only shown for methods that train the grounding head and image adapter; "
        "'time per step vs KDMCSE' is the ratio of mean steps/s (runs may have shared one device, several "
        "at a time).",
        "",
        *([f"## Transfer tasks (accuracy x100; MRPC: accuracy; {transfer_settings(runs, references)})", "",
           transfer, ""] if transfer else []),
        "## Findings",
        "",
        *[f"- {line}" for line in findings(runs, references, methods)],
        *cpu_section(args, references, methods),
        "",
        "## Figures",
        "",
        f"![STS-B dev during training](figures/{report.stem}_dev_curves.png)",
        "",
        f"![Similarity distributions on STS-B test](figures/{report.stem}_similarities.png)",
        "",
    ]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(body))

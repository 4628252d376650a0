#!/usr/bin/env python
"""The project's recipe against sentence-transformers' own, on the same cores, per step and per minute.

Both train the 3-layer spread-out cut of all-MiniLM-L6-v2 on the teacher's cached embeddings of the
offline benchmark's 183,913-row pool (``benchmarks/offline_distill.py``: same data, truncation, batch,
lr, seeds and STS-B dev selection). The project's recipe is ``regression_spread`` (regression, one dropout
view, length-grouped text batches); sentence-transformers' is its layer-reduction example
(``benchmarks/st_recipe.py``: its trainer, ``MSELoss``). ``regression_spread_two_views`` is the project's recipe as it ran before the one-view step.

Phase (a), speed: ``--rounds`` rounds of ``--speed-steps`` steps of each method, alternating A B A B in
fresh processes on the same cores, no evaluation but one at the end (not timed). Steps/s per run come from
each trainer's clock (training only, as both count it); the ratio is taken within each round.

Phase (b), time-matched rows: each budget (``--budgets``, training minutes) becomes each method's step
count at its own median steps/s of phase (a), rounded to 10 steps so STS-B dev runs at every 10%;
methods alternate per seed. Every run is scored on the 7 STS test sets once, after selection on dev. The
report gives each row's measured training minutes next to the budget, because a step count fixed in
advance is what makes the rows repeatable (a run's quality then does not depend on how busy the machine
was), while the minutes it really took do.

  python benchmarks/race_st.py                               # (a), then 5, 15, 30 minutes x 3 seeds
  python benchmarks/race_st.py --budgets 5 --seeds 3         # one budget; finished runs are skipped
  python benchmarks/race_st.py --report-only
  python benchmarks/race_st.py --methods regression_spread,st_recipe_bf16 --set train.precision=bf16 \
      --out-root runs/race_st_bf16 --report reports/race_st_bf16.md   # at one precision, bf16: the anchor is 2nd
Writes reports/race_st.md and reports/figures/race_st_dev_minutes.png from the run summaries kept in
reports/race_st_results/ (models stay under --out-root), and notes.md from there, written by hand, if any.
``--report`` names another race's report; its kept summaries (``<name>_results/``) and figure take its name.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import offline_distill  # noqa: E402
from benchmarks.offline_report import mean_std, paired, sts_average  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OURS = "regression_spread"
ANCHORS = ("st_recipe", "st_recipe_bf16")  # sentence-transformers' example as it trains (fp32), and under bf16
DEFAULT_METHODS = f"{OURS},{ANCHORS[0]},regression_spread_two_views"
REFERENCES = ("untrained", "teacher")  # rows scored once, no seed, no training
STEP_QUANTUM = 10  # budgets round to whole tenths, so dev runs at every 10% of each run


def budget_steps(steps_per_second: float, minutes: float) -> int:
    """The step count that fills ``minutes`` of training at ``steps_per_second``."""
    return max(STEP_QUANTUM, round(steps_per_second * minutes * 60 / STEP_QUANTUM) * STEP_QUANTUM)


def bench_args(args: argparse.Namespace, out_root: Path, steps: int, eval_every: int | None = None) -> argparse.Namespace:
    """The offline benchmark's arguments for one group of runs of this race."""
    argv = ["--steps", str(steps), "--lr", str(args.lr), "--batch-size", str(args.batch_size),
            "--out-root", str(out_root), "--cache-root", args.cache_root, "--seeds", str(args.seeds),
            "--no-transfer", "--methods", args.methods]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    extra = list(args.set) + ([f"train.eval_every={eval_every}"] if eval_every else [])
    for item in extra:
        argv += ["--set", item]
    return offline_distill.parse_args(argv + (["--train-only"] if eval_every else []))


def methods(args: argparse.Namespace) -> list[str]:
    return args.methods.split(",")


def anchor(args: argparse.Namespace) -> str:
    """The method every ratio and verdict is read against: the second of ``--methods``."""
    return methods(args)[1]


def seeds(args: argparse.Namespace) -> list[int]:
    return [offline_distill.FIRST_SEED + i for i in range(args.seeds)]


# --- phase (a) -------------------------------------------------------------------------------------


def speed_root(root: Path, round_index: int) -> Path:
    return root / "speed" / f"round{round_index}"


def run_one(args: argparse.Namespace, group: argparse.Namespace, method: str, seed: int) -> None:
    """Train and score one run, then keep its summary where the report reads it. A run whose summary is
    kept already is skipped, so a later session on a fresh machine (no ``--out-root``) adds to the race."""
    run = Path(group.out_root).relative_to(args.out_root) / method / f"seed{seed}"
    if (Path(args.results) / run / "results.json").is_file():
        print(f"{run}: kept in {args.results}, skipped")
        return
    offline_distill.run_all(group, [(method, seed)])
    keep_run(args, run)


def keep_run(args: argparse.Namespace, run: Path) -> None:
    """Copy a finished run's ``results.json`` and ``config.yaml`` (kilobytes; no model) from ``--out-root``
    to ``--results``, which the report reads: committed beside the report, they rebuild it on any
    machine, and a later session adds seeds or budgets to them instead of starting over. ``run`` is the
    run's folder relative to ``--out-root``; a run that did not finish has nothing to keep."""
    source, target = Path(args.out_root) / run, Path(args.results) / run
    if not (source / "results.json").is_file():
        return
    target.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "config.yaml"):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)


def run_speed(args: argparse.Namespace) -> None:
    for r in range(args.rounds):
        group = bench_args(args, speed_root(Path(args.out_root), r), args.speed_steps, eval_every=args.speed_steps)
        for method in methods(args):  # one process each, alternating
            run_one(args, group, method, offline_distill.FIRST_SEED)


def speed_runs(args: argparse.Namespace) -> list[dict[str, dict]]:
    """The train summary of each method in each finished round."""
    rounds = []
    for r in range(args.rounds):
        found = {}
        for method in methods(args):
            path = speed_root(Path(args.results), r) / method / f"seed{offline_distill.FIRST_SEED}" / "results.json"
            if path.is_file():
                found[method] = json.loads(path.read_text())["train"]
        if len(found) == len(methods(args)):
            rounds.append(found)
    return rounds


def speed_rows(args: argparse.Namespace) -> list[dict[str, float]]:
    """Steps/s of each method in each finished round."""
    return [{m: summary["steps_per_second"] for m, summary in found.items()} for found in speed_runs(args)]


def median_rates(rows: list[dict[str, float]]) -> dict[str, float]:
    return {m: statistics.median(row[m] for row in rows) for m in rows[0]}


# --- phase (b) -------------------------------------------------------------------------------------


def budget_root(root: Path, minutes: float) -> Path:
    return root / f"budget{minutes:g}min"


def run_budget(args: argparse.Namespace, minutes: float, rates: dict[str, float]) -> None:
    root = budget_root(Path(args.out_root), minutes)
    groups = {m: bench_args(args, root, budget_steps(rates[m], minutes)) for m in methods(args)}
    for seed in seeds(args):
        for method in methods(args):
            run_one(args, groups[method], method, seed)


def budget_runs(args: argparse.Namespace, minutes: float) -> dict[str, list[dict]]:
    root = budget_root(Path(args.results), minutes)
    return {m: [json.loads(p.read_text()) for p in sorted((root / m).glob("seed*/results.json"))]
            for m in methods(args)}


# --- report ----------------------------------------------------------------------------------------


def label(method: str) -> str:
    return offline_distill.METHODS[method].label


def speed_section(rows: list[dict[str, float]], args: argparse.Namespace) -> list[str]:
    names = methods(args)
    steps = speed_runs(args)[0][OURS]["steps"]
    lines = ["## (a) Steps per second, side by side", "",
             f"{len(rows)} rounds; in each, every method trains {steps} steps (batch {args.batch_size}) "
             "in a fresh process, one after the other on the same cores. Ratio: the project's steps/s over "
             f"{label(anchor(args))}'s in the same round.", "",
             "| round | " + " | ".join(label(m) for m in names) + " | ratio |",
             "|---" * (len(names) + 2) + "|"]
    for i, row in enumerate(rows):
        cells = [f"{row[m]:.3f}" for m in names]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + f" | **{row[OURS] / row[anchor(args)]:.2f}x** |")
    rates = median_rates(rows)
    ratios = [row[OURS] / row[anchor(args)] for row in rows]
    lines += ["", "Median steps/s: " + ", ".join(f"{label(m)} {rates[m]:.3f}" for m in names) +
              f". Per-round ratio: {min(ratios):.2f}x to {max(ratios):.2f}x, median "
              f"**{statistics.median(ratios):.2f}x**."]
    for other in names[2:]:
        ratios = [row[OURS] / row[other] for row in rows]
        lines.append(f"The project's steps/s over {label(other)}'s, per round: {min(ratios):.2f}x to "
                     f"{max(ratios):.2f}x, median **{statistics.median(ratios):.2f}x**.")
    devs = {m: [s["best_stsb_dev"] for s in (found[m] for found in speed_runs(args))] for m in names}
    lines += ["", f"At equal steps, STS-B dev after the {steps} steps of each run (mean over the rounds; "
              "a run is deterministic, so the rounds agree unless the machine's kernels differ): " +
              ", ".join(f"{label(m)} {statistics.fmean(devs[m]):.2f}" for m in names) + "."]
    return lines


def budget_section(args: argparse.Namespace, minutes: float, teacher: float | None) -> list[str]:
    runs = {m: r for m, r in budget_runs(args, minutes).items() if r}
    if not runs:
        return []
    lines = [f"### {minutes:g} training minutes", "",
             "| method | steps | measured training minutes | best STS-B dev | STS Avg (7 tasks) | of teacher |",
             "|---|---|---|---|---|---|"]
    for method, results in runs.items():
        averages = [sts_average(r) for r in results]
        share = f"{100 * statistics.fmean(averages) / teacher:.2f}%" if teacher else "—"
        lines.append(f"| {label(method)} | {results[0]['train']['steps']} | "
                     f"{mean_std([r['train']['train_seconds'] / 60 for r in results], 1)} | "
                     f"{mean_std([r['train']['best_stsb_dev'] for r in results])} | "
                     f"{mean_std(averages)} (n={len(results)}) | {share} |")
    lines += ["", verdict(runs, minutes, anchor(args))]
    return lines


def verdict(runs: dict[str, list[dict]], minutes: float, anchor: str) -> str:
    """Who is ahead at this budget, said plainly, from the per-seed pairs."""
    if OURS not in runs or anchor not in runs:
        return "Both methods have not finished a seed at this budget yet."
    by_seed = {m: {r["seed"]: sts_average(r) for r in runs[m]} for m in (OURS, anchor)}
    common = sorted(by_seed[OURS].keys() & by_seed[anchor].keys())
    gaps = [by_seed[OURS][s] - by_seed[anchor][s] for s in common]
    ahead = sum(g > 0 for g in gaps)
    who = ("the project's recipe is ahead" if ahead == len(gaps) else
           "sentence-transformers' recipe is ahead" if ahead == 0 else "neither is ahead on every seed")
    gap = paired({OURS: runs[OURS], anchor: runs[anchor]}, OURS, anchor)
    detail = gap.describe() if gap else f"{gaps[0]:+.2f} STS average on seed {common[0]}"
    return f"**At {minutes:g} minutes {who}** on the STS average ({ahead} of {len(gaps)} seeds): {detail}."


def plot_dev_minutes(args: argparse.Namespace, path: Path) -> None:
    """STS-B dev against training minutes, one panel per budget. A step's minute is its step over the
    method's median steps/s of (a), the rate its budget was set from, so a run that shared the cores
    with another process is not drawn stretched (its scores are what a clean run gives)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = [b for b in args.budgets if any(budget_runs(args, b).values())]
    if not budgets:
        return
    fig, axes = plt.subplots(1, len(budgets), figsize=(5 * len(budgets), 3.6), squeeze=False)
    colours = {m: ("tab:blue", "tab:orange", "tab:grey")[i] if i < 3 else f"C{i}" for i, m in enumerate(methods(args))}
    rates = median_rates(speed_rows(args))
    for ax, minutes in zip(axes[0], budgets):
        for method, results in budget_runs(args, minutes).items():
            for i, r in enumerate(results):
                xs = [step / rates[method] / 60 for step, _ in r["train"]["dev_history"]]
                ax.plot(xs, [dev for _, dev in r["train"]["dev_history"]], color=colours[method], alpha=0.8,
                        marker=".", label=label(method) if i == 0 else None)
        ax.set_title(f"{minutes:g}-minute budget")
        ax.set_xlabel("training minutes (2 CPU cores, at the steps/s of (a))")
        ax.set_ylabel("STS-B dev (Spearman x100)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def precisions(args: argparse.Namespace) -> str:
    """Each method's training precision, as its first speed run's kept config records it."""
    import yaml

    found = []
    for method in methods(args):
        config = speed_root(Path(args.results), 0) / method / f"seed{offline_distill.FIRST_SEED}" / "config.yaml"
        if config.is_file():
            found.append(f"{label(method)} {yaml.safe_load(config.read_text())['train']['precision']}")
    return ", ".join(found) or "not recorded"


def write_report(args: argparse.Namespace) -> None:
    from kdmcse_base.machine import cpu_name

    rows = speed_rows(args)
    if not rows:
        raise SystemExit(f"no finished speed round under {args.results}/speed: run without --report-only first")
    teacher_path = Path(args.results) / "teacher" / "results.json"
    teacher = sts_average(json.loads(teacher_path.read_text())) if teacher_path.is_file() else None
    report = Path(args.report)
    figure = report.parent / "figures" / f"{report.stem}_dev_minutes.png"
    commands = Path(args.results) / "commands.txt"
    made_by = commands.read_text().strip().splitlines() if commands.is_file() else []
    lines = ["# Race: the project's recipe against sentence-transformers' own", "",
             f"Runs made by {', '.join(f'`{c}`' for c in made_by) or 'commands not recorded'}; report by "
             f"`{args.command}`, written on {cpu_name()} (torch threads: every core; where a run trained on "
             "another CPU, the notes say so). Same student "
             f"(all-MiniLM-L6-v2, layers 0, 2, 4), data (the offline benchmark's 183,913-row pool), truncation "
             f"(32 tokens), batch {args.batch_size}, lr {args.lr:g} (10% warm-up for sentence-transformers' "
             "trainer, as its example has it; none for the project's, as its recipe has it), seeds, and STS-B "
             "dev selection every 10% of a run. Test sets are scored once per run, after selection. Training "
             f"precision (bf16: autocast): {precisions(args)}.", ""]
    lines += speed_section(rows, args) + [""]
    if args.budgets:
        lines += budget_sections(args, teacher)
    plot_dev_minutes(args, figure)
    if figure.is_file():
        lines += [f"![STS-B dev against training minutes](figures/{figure.name})", ""]
    notes = Path(args.results) / "notes.md"  # what the numbers cannot say themselves, written by hand
    if notes.is_file():
        lines += ["## Notes", "", notes.read_text().strip(), ""]
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(lines).rstrip() + "\n")


def budget_sections(args: argparse.Namespace, teacher: float | None) -> list[str]:
    lines = ["## (b) Time-matched rows", "",
             "Each budget is turned into each method's step count at its median steps/s of (a); the "
             "measured minutes are each run's own clock (training only, no dev evaluation), so they show how "
             "close each run came to its budget on these shared cores. Verdicts are paired per seed "
             "(same seed, same data order within a method)." +
             (f" Teacher STS Avg: {teacher:.2f}." if teacher else ""), ""]
    for minutes in args.budgets:
        lines += budget_section(args, minutes, teacher) + [""]
    return lines


# --- command line ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help=f"comma list: {OURS}, then the anchor every ratio and verdict is read against "
                             f"({' or '.join(ANCHORS)}), then any others (default: %(default)s)")
    parser.add_argument("--budgets", default="5,15,30",
                        help="training minutes per row; '' runs the speed rounds alone (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="speed rounds of phase (a)")
    parser.add_argument("--speed-steps", type=int, default=150, help="steps per method and speed round")
    parser.add_argument("--lr", type=float, default=8e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out-root", default=str(ROOT / "runs" / "race_st"))
    parser.add_argument("--cache-root", default=str(ROOT / "cache" / "teacher"))
    parser.add_argument("--report", default=str(ROOT / "reports" / "race_st.md"))
    parser.add_argument("--results", help="where each run's summary is kept and the report reads them "
                                          "(default: <report name>_results beside --report)")
    parser.add_argument("--data-dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    args.command = "python benchmarks/race_st.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.budgets = [float(b) for b in args.budgets.split(",") if b]  # "": the speed rounds alone
    args.results = args.results or str(Path(args.report).with_name(f"{Path(args.report).stem}_results"))
    names = methods(args)
    if names[0] != OURS or len(names) < 2 or names[1] not in ANCHORS or any(m not in offline_distill.METHODS for m in names):
        parser.error(f"--methods: {OURS}, then one of {', '.join(ANCHORS)}, then any of {list(offline_distill.METHODS)}")
    return args


def record_command(path: Path, command: str) -> None:
    """Add ``command`` to the report's list of the commands that made the runs, once: a resumed race
    runs the same command again."""
    made_by = path.read_text().splitlines() if path.is_file() else []
    if command not in made_by:
        path.write_text("\n".join(made_by + [command]) + "\n")


def restore_references(args: argparse.Namespace) -> None:
    """Put the kept teacher and untrained rows back under a fresh ``--out-root``, so a race resumed on
    another machine does not score the teacher again (minutes of evaluation for the same numbers)."""
    for reference in REFERENCES:
        kept, target = Path(args.results) / reference / "results.json", Path(args.out_root) / reference / "results.json"
        if kept.is_file() and not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(kept, target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.report_only:
        Path(args.results).mkdir(parents=True, exist_ok=True)
        record_command(Path(args.results) / "commands.txt", args.command)
        first = bench_args(args, Path(args.out_root), args.speed_steps)
        offline_distill.build_cache_once(first)
        restore_references(args)
        offline_distill.reference_rows(first)
        for reference in REFERENCES:
            keep_run(args, Path(reference))
        run_speed(args)
        rates = median_rates(speed_rows(args))
        for minutes in args.budgets:
            run_budget(args, minutes, rates)
    write_report(args)
    print(f"report written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

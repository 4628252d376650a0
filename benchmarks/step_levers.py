"""Levers on the training step against today's recipe, at equal steps: length-grouped text batches
(``train.length_grouped``), frozen word embeddings (``student.freeze_word_embeddings``) and the student's
transformer under ``torch.compile`` on length-grouped batches (``train.compile``).

The shipped offline recipe (configs/offline_default.yaml: regression onto the cached teacher, 3 spread
layers of MiniLM, batch 64, at most 32 tokens; the recipe's arm in random batch order) on the
frontier's pool of cached rows (Wiki1M prefix, Flickr30k, COCO captions: 183,913 text rows), once per
arm and seed; the arms of a seed run back to back,
their order rotating from seed to seed. Reported per run: STS-B dev at every evaluation (equal steps),
training seconds and steps/s (side by side: each arm's ratio to the recipe per seed), and the padding
share of the text batches (token counts under the student's own preprocessing). Selection data only:
no test set is read.

    HF_HUB_OFFLINE=1 python benchmarks/step_levers.py --steps 150 --evals 3 --seeds 1,2,3 --report reports/step_levers.md
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

POOL = ["data.text_sources=[wiki1m, flickr30k_train, coco_val2017, coco2017_mini]",
        "data.image_sources=[coco2017_mini]"]
BASE = "recipe (random order)"
ARMS = {BASE: ("train.length_grouped=false",), "length-grouped": ("train.length_grouped=true",),
        "frozen word embeddings": ("train.length_grouped=false", "student.freeze_word_embeddings=true"),
        "compiled (length-grouped)": ("train.length_grouped=true", "train.compile=true")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per run")
    parser.add_argument("--evals", type=int, default=4, help="STS-B dev evaluations per run (equally spaced)")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--speed-rounds", type=int, default=5, help="alternating timed rounds after the runs (0: none)")
    parser.add_argument("--speed-steps", type=int, default=10, help="steps per arm and round")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of: {', '.join(ARMS)}")
    parser.add_argument("--out-root", type=Path, default=Path("/tmp/step_levers"))
    parser.add_argument("--report", type=Path)
    parser.add_argument("overrides", nargs="*", help="more config overrides (e.g. train.lr=4e-4)")
    return parser.parse_args(argv)


def run_one(arm: str, seed: int, args: argparse.Namespace) -> dict:
    """Train (or read back) one run; its dev history, seconds, and the padding share of its text batches."""
    import yaml

    from distill.run_folder import RunFolder
    from distill.trainer import train
    from eval.sts import stsb_dev_evaluator

    out = args.out_root / arm.split(" ")[0] / f"seed{seed}"
    kept = out / "step_levers.json"
    if kept.is_file():
        return json.loads(kept.read_text())
    cfg = arm_config(arm, seed, out, args)
    train(cfg, stsb_dev_evaluator(cfg))
    summary = json.loads(RunFolder(out).summary.read_text())
    precision = yaml.safe_load(RunFolder(out).config.read_text())["train"]["precision"]  # as resolved
    result = {"arm": arm, "seed": seed, "dev": summary["dev_history"], "seconds": summary["train_seconds"],
              "steps": summary["steps"], "padding": padding_share(cfg), "precision": precision,
              "compiled_graphs": summary.get("compiled_graphs")}
    kept.write_text(json.dumps(result, indent=1))
    return result


def arm_config(arm: str, seed: int, out: Path, args: argparse.Namespace):
    from distill.config import load_config

    return load_config(ROOT / "configs" / "offline_default.yaml", [
        *POOL, *ARMS[arm], f"train.max_steps={args.steps}", f"train.eval_every={max(1, args.steps // args.evals)}",
        f"train.seed={seed}", f"train.output_dir={out}", "train.report_to=[]", *args.overrides])


def speed_rounds(arms: list[str], args: argparse.Namespace) -> dict[str, list[float]]:
    """Steps/s of every arm, timed side by side: round r times ``--speed-steps`` consecutive steps of each
    arm's own schedule (the rotation of ``arms`` by r), each step prepared and trained as the trainer's
    loop does (tokenisation included), on one process; after all the runs, so no run shares the cores.
    The untimed first chunk warms up (a compiled arm compiles there); the graphs a compiled arm built in
    all its steps are printed, so a recompile per batch shape shows."""
    import time

    import torch

    from distill.pools import build_pools, open_run_cache
    from distill.run import batch_plan, build_run, compiled_graphs, seed_everything
    from distill.schedule import iterate_steps
    from distill.step_loader import prepare_inputs, text_token_lengths
    from distill.trainer import training_step
    from kdmcse_base.process_group import DistEnv
    from teacher_cache import data_dir_for

    env, prepared, cache, pools = DistEnv(0, 1, torch.device("cpu")), {}, None, None
    wanted = args.speed_steps * (args.speed_rounds + 1)  # the first chunk warms up
    for arm in arms:
        cfg = arm_config(arm, 1, args.out_root / "speed", args)
        if cache is None:
            cache = open_run_cache(cfg, data_dir_for(cfg.data, cfg.data_dir), progress=False)
            pools = build_pools(cache, cfg.train.retrieval_holdout_images)
        seed_everything(1)
        run = build_run(cfg, env, cache, pools)
        lengths = text_token_lengths(run) if cfg.train.length_grouped else None
        steps = iterate_steps(batch_plan(cfg, pools, env), 1, cfg.train.epochs, None, text_lengths=lengths)
        prepared[arm] = (run, [step for _, (_, step) in zip(range(wanted), steps)])
    rates: dict[str, list[float]] = {arm: [] for arm in arms}
    for r in range(args.speed_rounds + 1):
        for arm in arms[r % len(arms):] + arms[:r % len(arms)]:
            run, steps = prepared[arm]
            tick = time.perf_counter()
            for step in steps[r * args.speed_steps:(r + 1) * args.speed_steps]:
                training_step(run, step, prepare_inputs(run, step))
            if r:
                rates[arm].append(args.speed_steps / (time.perf_counter() - tick))
    if any(prepared[arm][0].cfg.train.compile for arm in arms):
        print(f"speed round: the compiled arm built {compiled_graphs()} graphs in {wanted} steps", flush=True)
    return rates


def padding_share(cfg) -> float:
    """The share of the padded token grid that is padding, over the text batches of the run's steps."""
    import numpy as np

    from distill.pools import build_pools, open_run_cache
    from distill.schedule import BatchPlan, iterate_steps
    from distill.student import build_encoder
    from teacher_cache import data_dir_for

    cache = open_run_cache(cfg, data_dir_for(cfg.data, cfg.data_dir), progress=False)
    pools = build_pools(cache, cfg.train.retrieval_holdout_images)
    encoder = build_encoder(cfg.student)
    texts = [pools.sentences[i] for i in pools.text_rows]
    tokenizer = encoder.tokenizer
    lengths = np.array([min(len(ids), cfg.student.max_seq_length) for ids in tokenizer(texts)["input_ids"]])
    plan = BatchPlan(pools.n_text, pools.n_paired, cfg.train.batch_size, cfg.train.paired_every, cfg.train.schedule)
    steps = iterate_steps(plan, cfg.train.seed, cfg.train.epochs, cfg.train.max_steps,
                          text_lengths=lengths if cfg.train.length_grouped else None)
    batches = [lengths[step.rows] for _, step in steps if step.kind == "text"]
    return float(1 - sum(b.sum() for b in batches) / sum(b.max() * len(b) for b in batches))


def report(results: list[dict], argv: list[str], rates: dict[str, list[float]] | None = None) -> str:
    from kdmcse_base.machine import cpu_name

    seeds = sorted({r["seed"] for r in results})
    arms = list(dict.fromkeys(r["arm"] for r in sorted(results, key=lambda r: list(ARMS).index(r["arm"]))))
    by = {(r["arm"], r["seed"]): r for r in results}
    eval_steps = [step for step, _ in by[(arms[0], seeds[0])]["dev"]]
    lines = ["# Levers on the training step against today's recipe, at equal steps", "",
             f"Generated by `HF_HUB_OFFLINE=1 python benchmarks/step_levers.py {shlex.join(argv)}` on "
             f"{os.cpu_count()} CPU cores ({cpu_name()}), precision {results[0]['precision']} (`train.precision: "
             "auto` on this CPU). The shipped offline recipe (configs/offline_default.yaml: regression onto the cached "
             "teacher, 3 spread layers, batch 64, at most 32 tokens) on the frontier's pool of 183,913 cached text rows; "
             "the arms of a seed ran back to back, their order rotating from seed to seed. STS-B dev (Spearman x100) "
             "is selection data; no test set is read.", "",
             "| arm | seed | " + " | ".join(f"dev @ {s}" for s in eval_steps) + " | training s | steps/s | padding share |",
             "|---|---|" + "---|" * len(eval_steps) + "---|---|---|"]
    for arm in arms:
        for seed in seeds:
            r = by[(arm, seed)]
            devs = " | ".join(f"{score:.2f}" for _, score in r["dev"])
            lines.append(f"| {arm} | {seed} | {devs} | {r['seconds']:.0f} | {r['steps'] / r['seconds']:.3f} | "
                         f"{r['padding']:.1%} |")
    compiled = [r for r in results if r.get("compiled_graphs") is not None]
    if compiled:
        lines += ["", "Graphs `torch.compile` built in each compiled run (training and dev evaluation; a count "
                  "that grew with the steps would mean a recompile per batch shape): " +
                  ", ".join(f"{r['arm']}, seed {r['seed']}: {r['compiled_graphs']}" for r in compiled) + "."]
    for arm in arms[1:]:
        lines += ["", f"**{arm} against the recipe** (mean of {len(seeds)} seeds, sd in brackets):", "",
                  "| at step | recipe: dev | this arm: dev | difference, paired by seed |", "|---|---|---|---|"]
        for i, step in enumerate(eval_steps):
            a = [by[(BASE, s)]["dev"][i][1] for s in seeds]
            b = [by[(arm, s)]["dev"][i][1] for s in seeds]
            diff = [y - x for x, y in zip(a, b)]
            lines.append(f"| {step} | {statistics.mean(a):.2f} ({_sd(a):.2f}) | {statistics.mean(b):.2f} ({_sd(b):.2f}) | "
                         f"{statistics.mean(diff):+.2f} ({', '.join(f'{d:+.2f}' for d in diff)}) |")
        ratios = [_rate(by[(arm, s)]) / _rate(by[(BASE, s)]) for s in seeds]
        lines += ["", f"Steps/s of the runs over the recipe's, per seed: {', '.join(f'{r:.2f}x' for r in ratios)} "
                  f"(median {statistics.median(ratios):.2f}x; training seconds exclude evaluation and include the "
                  "loader; the runs may have shared the cores with other jobs: the speed round below is the "
                  "side-by-side figure)."]
    if rates:
        base = statistics.median(rates[BASE])
        lines += ["", f"**Speed round** (after the runs, one process, arms alternating; {len(rates[BASE])} rounds of "
                  "the same number of steps of each arm's own schedule, tokenisation included; medians):", "",
                  "| arm | steps/s (median) | rounds | over the recipe |", "|---|---|---|---|"]
        lines += [f"| {arm} | {statistics.median(r):.3f} | {', '.join(f'{x:.3f}' for x in r)} | "
                  f"{statistics.median(r) / base:.2f}x |" for arm, r in rates.items()]
    return "\n".join(lines) + "\n"


def _rate(result: dict) -> float:
    return result["steps"] / result["seconds"]


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = [arm.strip() for arm in args.arms.split(",")]
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown or BASE not in arms:
        raise SystemExit(f"--arms: {unknown or 'the recipe missing'}; choose among {', '.join(ARMS)} (the recipe included)")
    results = []
    for index, seed in enumerate(seeds):
        order = arms[index % len(arms):] + arms[:index % len(arms)]  # rotate: no arm always runs first
        results += [run_one(arm, seed, args) for arm in order]
    rates = speed_rounds(arms, args) if args.speed_rounds else None
    text = report(results, argv, rates)
    print(text)
    if args.report:
        args.report.write_text(text)
        (args.report.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

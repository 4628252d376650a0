#!/usr/bin/env python
"""Offline distillation benchmark: recover the 3-layer cut of all-MiniLM-L6-v2 with each method.

Every method starts from the same 3-layer student, sees the same data (Wiki1M prefix, Flickr30k
and COCO captions as text; coco2017_mini image-caption pairs with the teacher's EfficientNet-Lite0
image embeddings), the same step budget, learning rate and seeds, and is selected on STS-B dev
only. Each (method, seed) run lives in its own folder and is resumable; finished runs are skipped.
The report (reports/offline_distill.md + reports/figures/) is generated from the saved results.

  python benchmarks/offline_distill.py                       # all methods, 3 seeds
  python benchmarks/offline_distill.py --jobs 6              # runs in parallel (e.g. on one GPU)
  python benchmarks/offline_distill.py --methods simcse,kdmcse --seeds 1
  python benchmarks/offline_distill.py --report-only         # rebuild the report from saved results
  python benchmarks/offline_distill.py --smoke ...           # tiny budget (the test suite runs this)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.recipes import CONFIG, METHODS, Method  # noqa: E402  (the other benchmarks read them from here too)

ROOT = Path(__file__).resolve().parents[1]
FIRST_SEED = 1234
"""Seeds run: FIRST_SEED, FIRST_SEED + 1, ... (``--seeds`` of them)."""
TRANSFER_PROTOCOL = "fast"
"""The benchmark compares methods with each other, so it uses the fast scikit-learn classifier
(minutes per model instead of the SentEval protocol's much longer CPU time); its report says so."""

DEFAULT_METHODS = "simcse,mcse,kdmcse,kdmcse_kl,regression,kdmcse_kl_mse"


def common_overrides(args: argparse.Namespace) -> list[str]:
    """What every method shares: data, budget, optimiser, selection."""
    overrides = [
        "data.text_sources=[wiki1m, flickr30k_train, coco_val2017, coco2017_mini]",
        "data.image_sources=[coco2017_mini]",
        f"train.max_steps={args.steps}", f"train.eval_every={max(1, args.steps // 10)}",
        f"train.batch_size={args.batch_size}", f"train.lr={args.lr}", "train.paired_every=4",
        "train.retrieval_holdout_images=97", "train.precision=bf16",
        f"train.cache_root={args.cache_root}",
    ]
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    return overrides + list(args.set)


# --- one run ---------------------------------------------------------------------------------------


def run_one(method: Method, seed: int, args: argparse.Namespace) -> dict:
    """Train (or resume) one (method, seed), evaluate it, and save ``results.json`` beside the run."""
    from distill.config import load_config
    from distill.run_folder import RunFolder
    from distill.trainer import train
    from eval.sts import stsb_dev_evaluator

    out = Path(args.out_root) / method.name / f"seed{seed}"
    done = RunFolder(out).results
    if done.is_file():
        return json.loads(done.read_text())
    overrides = common_overrides(args) + list(method.overrides) + [f"train.seed={seed}", f"train.output_dir={out}"]
    cfg = load_config(CONFIG, overrides)
    if method.trainer == "sentence_transformers":
        from benchmarks.st_recipe import train_st_recipe

        model_dir = train_st_recipe(cfg, out)
    else:
        model_dir = train(cfg, stsb_dev_evaluator(cfg))
    summary = json.loads(RunFolder(out).summary.read_text())
    if args.train_only:
        done.write_text(json.dumps({"method": method.name, "seed": seed, "train": summary}, indent=2))
        return json.loads(done.read_text())
    transfer_jobs = cores_per_run(args.jobs) if seed in run_seeds(args)[:args.transfer_seeds] else 0
    results = evaluate_model(str(model_dir), cfg.data_dir, args, transfer_jobs)
    results.update(method=method.name, seed=seed, train=summary)
    if method.multimodal:
        from eval.retrieval import evaluate_run_retrieval

        results["retrieval"] = evaluate_run_retrieval(out, data_dir=cfg.data_dir).to_dict()
    done.write_text(json.dumps(results, indent=2))
    return results


def evaluate_model(model, data_dir, args: argparse.Namespace, transfer_jobs: int = -1) -> dict:
    """7-task STS, transfer tasks, and STS-B test cosines (for the similarity-distribution plot).

    ``transfer_jobs``: classifier folds fitted at a time (-1: every core; 0: skip the transfer tasks).
    """
    from eval.encode import DEFAULT_BF16, encode, load_model
    from eval.sts import evaluate_sts
    from eval.data.sts import load_stsb

    model = load_model(model)
    sts = evaluate_sts(model, data_dir=data_dir, show_progress=False)
    results = {"sts": sts.to_dict(), "encoding": "bf16" if DEFAULT_BF16 else "fp32"}
    if transfer_jobs and not args.no_transfer:
        from eval.transfer import TransferSettings, evaluate_transfer

        settings = TransferSettings(TRANSFER_PROTOCOL, n_jobs=transfer_jobs)
        transfer = evaluate_transfer(model, data_dir=data_dir, settings=settings, show_progress=False)
        results["transfer"] = transfer.to_dict()
    pairs = load_stsb("test", data_dir)
    a = encode(model, [p.sentence1 for p in pairs], show_progress=False)
    b = encode(model, [p.sentence2 for p in pairs], show_progress=False)
    results["stsb_test_cosines"] = [round(float(x), 5) for x in (a * b).sum(1) / (
        (a * a).sum(1) ** 0.5 * (b * b).sum(1) ** 0.5)]
    results["stsb_test_gold"] = [p.score for p in pairs]
    return results


def reference_rows(args: argparse.Namespace) -> None:
    """The untrained student and the teacher, evaluated once (no seed, no training)."""
    from distill.config import load_config
    from kdmcse_base.offline_models import resolve_model_name
    from distill.student import build_encoder

    cfg = load_config(CONFIG, common_overrides(args))
    for name, model in (("untrained", lambda: build_encoder(cfg.student)),
                        ("teacher", lambda: resolve_model_name(cfg.teacher.text_model))):
        path = Path(args.out_root) / name / "results.json"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(evaluate_model(model(), cfg.data_dir, args), indent=2))


# --- orchestration ---------------------------------------------------------------------------------


def build_cache_once(args: argparse.Namespace) -> None:
    """Build the shared teacher cache before any run starts, so parallel runs only read it."""
    from distill.config import load_config
    from teacher_cache.corpora import resolve_data_dir
    from distill.pools import open_run_cache

    cfg = load_config(CONFIG, common_overrides(args))
    print(open_run_cache(cfg, resolve_data_dir(cfg.data_dir)).path)


def run_all(args: argparse.Namespace, jobs: list[tuple[str, int]]) -> None:
    """Each (method, seed) in its own process; ``--jobs`` of them at a time."""
    threads = cores_per_run(args.jobs)

    def launch(job: tuple[str, int]) -> tuple[str, int, int, float]:
        method, seed = job
        log = Path(args.out_root) / method / f"seed{seed}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, "--run-one", method, str(seed), *_forwarded(args)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        started = time.time()
        with open(log, "a") as handle:
            code = subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
        return method, seed, code, time.time() - started

    done = [(m, s) for m, s in jobs if (Path(args.out_root) / m / f"seed{s}" / "results.json").is_file()]
    for method, seed in done:
        print(f"{method:>16} seed {seed}: already done", flush=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for method, seed, code, seconds in pool.map(launch, [job for job in jobs if job not in done]):
            status = "ok" if code == 0 else f"FAILED (exit {code}; see {args.out_root}/{method}/seed{seed}.log)"
            print(f"{method:>16} seed {seed}: {status} in {seconds / 60:.1f} min", flush=True)


def run_seeds(args: argparse.Namespace) -> tuple[int, ...]:
    """The seeds of this benchmark run, in order; transfer runs on the first ``--transfer-seeds``."""
    return tuple(FIRST_SEED + i for i in range(args.seeds))


def cores_per_run(jobs: int) -> int:
    """The CPU cores each of ``jobs`` parallel runs may use (torch threads, transfer classifier folds)."""
    return max(1, (os.cpu_count() or 2) // jobs)


def _forwarded(args: argparse.Namespace) -> list[str]:
    flags = ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
             "--out-root", args.out_root, "--cache-root", args.cache_root, "--jobs", str(args.jobs),
             "--transfer-seeds", str(args.transfer_seeds), "--seeds", str(args.seeds)]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    if args.no_transfer:
        flags.append("--no-transfer")
    if args.train_only:
        flags.append("--train-only")
    for item in args.set:
        flags += ["--set", item]
    return flags


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=DEFAULT_METHODS,
                        help=f"comma list (default: %(default)s; 'all' adds the ablations: {', '.join(METHODS)})")
    parser.add_argument("--seeds", type=int, default=3,
                        help=f"how many seeds, counting up from {FIRST_SEED} (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per run (same for all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    parser.add_argument("--out-root", default=str(ROOT / "runs" / "offline_distill"))
    parser.add_argument("--cache-root", default=str(ROOT / "cache" / "teacher"))
    parser.add_argument("--report", default=str(ROOT / "reports" / "offline_distill.md"))
    parser.add_argument("--data-dir")
    parser.add_argument("--no-transfer", action="store_true", help="skip the SentEval transfer tasks")
    parser.add_argument("--train-only", action="store_true",
                        help="train and save the run's summary (steps/s, dev history) without evaluating the model")
    parser.add_argument("--transfer-seeds", type=int, default=3,
                        help="run the transfer tasks on the first N seeds of each method only (they cost about "
                             "5 CPU-core minutes a model)")
    parser.add_argument("--cpu-check", metavar="DIR",
                        help="saved results of a run on 2 CPU cores, quoted in the report's goal check")
    parser.add_argument("--lr-choice", metavar="DIR",
                        help="saved short runs at several learning rates; the report lists their STS-B dev scores, "
                             "the evidence for the --cpu-check row's learning rate")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for every run (e.g. student.model=PATH)")
    parser.add_argument("--smoke", action="store_true", help="tiny budget: 1 seed, 2 steps, no transfer")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--run-one", nargs=2, metavar=("METHOD", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.command = "python benchmarks/offline_distill.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.methods == "all":
        args.methods = ",".join(METHODS)
    if args.smoke:
        args.seeds, args.steps, args.no_transfer = 1, 2, True
    for flag, folder in (("--cpu-check", args.cpu_check), ("--lr-choice", args.lr_choice)):
        if folder and not sorted(Path(folder).glob("**/seed*/results.json")):
            parser.error(f"{flag} {folder}: no <method>/seed*/results.json under it")
    if args.transfer_seeds < 0:
        parser.error("--transfer-seeds must be >= 0")
    unknown = [m for m in args.methods.split(",") if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {list(METHODS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_one:
        run_one(METHODS[args.run_one[0]], int(args.run_one[1]), args)
        return 0
    if not args.report_only:
        build_cache_once(args)
        reference_rows(args)
        # Seed-major, so an interrupted run has every method's first seed (the one with transfer) first.
        jobs = [(m, seed) for seed in run_seeds(args) for m in args.methods.split(",")]
        run_all(args, jobs)
    from benchmarks.offline_report import write_report

    write_report(Path(args.out_root), Path(args.report), METHODS, args)
    print(f"report written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

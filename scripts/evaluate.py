"""Evaluate a sentence encoder: STS (SentEval protocol), transfer tasks, and the mteb cross-check.

Examples:
    python scripts/evaluate.py --model offline:all-MiniLM-L6-v2 --tasks sts --out results/minilm.json
    python scripts/evaluate.py --untrained offline_default     # the student that config starts from
    python scripts/evaluate.py --model runs/NAME/model --tasks sts,transfer:MR+CR   # STS and two transfer tasks

Writes results/NAME.json and results/NAME.md and prints the markdown tables. The transfer tasks run one
at a time (each encodes its own sentences), print a line each as they finish and keep their results in
NAME.transfer-partial.json until the whole run is written, so an interrupted evaluation (Ctrl-C) reruns
only the tasks it had not finished.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, never an installed copy

TASK_GROUPS = ("sts", "transfer", "mteb")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from eval.choices import AGGREGATIONS, DEFAULT_BF16, DEFAULT_PROTOCOL, POOLERS, PROTOCOLS

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model",
        help="SentenceTransformer folder, hub id, or offline:all-MiniLM-L6-v2",
    )
    which.add_argument(
        "--untrained", metavar="CONFIG",
        help="the student a run config starts from, before any training step (a YAML path or a shipped "
        "config's name): the baseline distillation is measured against",
    )
    parser.add_argument(
        "--tasks", default="sts",
        help=f"comma-separated groups among {','.join(TASK_GROUPS)} "
        "(sts: STS12-16, STS-B, SICK-R; transfer: MR CR SUBJ MPQA SST2 TREC MRPC; "
        "mteb: the same STS tasks scored by mteb as a cross-check); GROUP:A+B runs some tasks of a group "
        "(e.g. transfer:TREC, sts:STSBenchmark+SICKRelatedness). Default: sts",
    )
    parser.add_argument(
        "--pooler", default="model", choices=POOLERS,
        help="model = the SentenceTransformer's own pooling; cls_before_pooler = raw [CLS] (SimCSE/KDMCSE); "
        "cls = BERT pooler output; mean = masked token mean. Default: model",
    )
    parser.add_argument(
        "--aggregation", default="all", choices=AGGREGATIONS,
        help="how STS12-16 subsets combine: all = one Spearman over the concatenation (papers' default), "
        "wmean = size-weighted mean, mean = plain mean. Default: all",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="data root (default: $DISTILL_DATA_DIR or ../shared/data)"
    )
    parser.add_argument(
        "--out", type=Path, default=None,
        help="results JSON path; the .md goes beside it (default: results/<model name>.json)",
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--bf16", dest="bf16", action="store_true",
        help="encode under bfloat16 autocast: faster on CPUs with native bf16, moves scores by ~0.01-0.02 "
        "(see reports/eval_speed.md)" + (" (default)" if DEFAULT_BF16 else ""),
    )
    precision.add_argument(
        "--fp32", dest="bf16", action="store_false",
        help="encode in float32, as the papers' numbers were" + ("" if DEFAULT_BF16 else " (default)"),
    )
    parser.set_defaults(bf16=DEFAULT_BF16)
    parser.add_argument(
        "--transfer-protocol", default=DEFAULT_PROTOCOL, choices=PROTOCOLS,
        help="senteval = SentEval's PyTorch logistic regression as the papers ran it (slow on CPU); "
        f"fast = scikit-learn logistic regression, not comparable with the papers. Default: {DEFAULT_PROTOCOL}",
    )
    parser.add_argument(
        "--jobs", type=int, default=-1, help="transfer classifier folds fitted at a time (-1: every core; default)"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="sentences per forward pass (default: 128)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the encoding progress bar")
    args = parser.parse_args(argv)
    args.task_subsets = _task_subsets(parser, args.tasks)
    args.task_groups = list(args.task_subsets)
    return args


def _task_subsets(parser: argparse.ArgumentParser, text: str) -> dict[str, tuple[str, ...] | None]:
    """``sts,transfer:MR+CR`` -> {"sts": None (the whole group), "transfer": ("MR", "CR")}."""
    from eval.sts import STS_TASKS
    from eval.transfer_tasks import TRANSFER_TASKS

    known = {"sts": STS_TASKS, "transfer": TRANSFER_TASKS}
    subsets: dict[str, tuple[str, ...] | None] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        group, _, names = item.partition(":")
        if group not in TASK_GROUPS:
            parser.error(f"--tasks: unknown group {group!r}; choose from {','.join(TASK_GROUPS)}")
        tasks = tuple(name.strip() for name in names.split("+") if name.strip()) if names else None
        if tasks is not None:
            unknown = [t for t in tasks if t not in known.get(group, ())]
            if unknown:
                parser.error(f"--tasks: {group} has no task {', '.join(unknown)}; its tasks are "
                             f"{'+'.join(known[group]) if group in known else 'not selectable one by one'}")
        subsets[group] = tasks
    if not subsets:
        parser.error(f"--tasks: empty; choose from {','.join(TASK_GROUPS)}")
    return subsets


def default_out_path(model: str) -> Path:
    """results/<last path component of the model, or the alias>.json; a run's ``model/`` is named after its
    run folder (``runs/NAME/model`` -> NAME.json, ``runs/NAME/best`` -> NAME-best.json), so two runs'
    evaluations never share a file."""
    from distill.run_folder import run_of

    name = model.replace("untrained:", "untrained_").split(":", 1)[-1].rstrip("/").split("/")[-1] or "model"
    run = run_of(Path(model))
    if run is not None:
        name = run.name + ("" if Path(model).resolve().name == "model" else "-best")
    return Path("results") / f"{name}.json"


def model_folder_problem(model: str) -> str | None:
    """Why a local --model folder cannot be a SentenceTransformer (e.g. a training run folder), or None."""
    from distill.run_folder import RunFolder

    path = Path(model)
    if path.is_file():
        return f"--model {model} is a file; pass the folder of a saved SentenceTransformer"
    if not path.is_dir() or (path / "modules.json").is_file() or (path / "config.json").is_file():
        return None
    run = RunFolder(path)
    if (run.model / "modules.json").is_file():
        return f"--model {model} is a training run folder; its saved model is --model {run.model}"
    return f"--model {model}: this folder holds no model (no modules.json or config.json)"


def untrained_student(args: argparse.Namespace):
    """The encoder ``--untrained CONFIG`` describes (its layers kept, its pooling), before any step; it is
    named ``untrained:<config name>`` in the results."""
    from distill.config import load_config, resolve_config_path
    from distill.student import build_encoder

    cfg = load_config(resolve_config_path(args.untrained))
    encoder = build_encoder(cfg.student)
    args.model = f"untrained:{cfg.name}"
    return encoder.to(args.device) if args.device else encoder


def record_in_card(model_dir: Path, payload: dict) -> None:
    """The scores into the model card of a model this project trained (others are left alone), under
    its run folder's lock."""
    from distill.model_card import record_scores
    from eval.report import render_markdown

    with run_folder_lock(model_dir / "README.md"):
        # the card is published: its table names this model, not the local path it was scored from
        if record_scores(model_dir, payload, render_markdown([{**payload, "model": "this model"}])):
            print(f"scores written into the model card {model_dir / 'README.md'}", file=sys.stderr)


def run_folder_lock(out: Path):
    """The lock of the run folder ``out`` lies in (``out``'s folder or the one above it), else nothing."""
    from kdmcse_base.files import LOCK_FILE, folder_lock

    for folder in (out.parent, out.parent.parent):
        if (folder / LOCK_FILE).is_file():
            return folder_lock(folder, "evaluation")
    return contextlib.nullcontext()


def first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from eval.encode import load_model
    from eval.report import render_markdown
    from teacher_cache import USER_ERRORS
    from kdmcse_base.files import FolderBusyError, WriteFailedError

    problem = None if args.untrained else model_folder_problem(args.model)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    source = f"--untrained {args.untrained}" if args.untrained else f"--model {args.model}"
    try:
        model = untrained_student(args) if args.untrained else load_model(args.model, device=args.device)
    except (OSError, ValueError) as err:  # no such path, hub id or config; a plain file; a folder of something else
        print(f"error: {source}: cannot load it ({first_line(err)})", file=sys.stderr)
        return 2
    out = args.out or default_out_path(args.model)
    try:  # into a run folder (e.g. runs/NAME/eval/): not while a trainer or the demo writes there
        with run_folder_lock(out):
            payload = evaluate_into(out, model, args)
        if not args.untrained and Path(args.model).is_dir():
            record_in_card(Path(args.model), payload)
    except (FolderBusyError, WriteFailedError) as err:  # the results' folder: one line
        print(f"error: {err}", file=sys.stderr)
        return 2
    except USER_ERRORS as err:  # evaluation data missing or malformed: named file, one line
        print(f"error: {err} (--data-dir names the folder that holds senteval/)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: finished transfer tasks are on disk
        kept = out.with_name(f"{out.stem}.transfer-partial.json")
        print(f"interrupted; {'finished transfer tasks are kept in ' + str(kept) if kept.is_file() else 'nothing was kept'}"
              "; rerun the same command to go on", file=sys.stderr)
        return 130
    print(render_markdown([payload]))
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 0


def evaluate_into(out: Path, model, args: argparse.Namespace) -> dict:
    """Run the task groups and write their results to ``out`` (+ .md); returns the payload. Finished
    transfer tasks wait in ``<out stem>.transfer-partial.json`` until the results are written."""
    from eval.mteb_bridge import evaluate_mteb_sts
    from eval.report import build_payload, write_results
    from eval.sts import evaluate_sts
    from eval.transfer import TransferSettings, evaluate_transfer

    common = dict(data_dir=args.data_dir, pooler=args.pooler, batch_size=args.batch_size, bf16=args.bf16)
    progress = not args.no_progress
    partial = out.with_name(f"{out.stem}.transfer-partial.json")
    chosen = {group: {"tasks": tasks} if tasks else {} for group, tasks in args.task_subsets.items()}
    runners = {
        "sts": lambda: evaluate_sts(model, aggregation=args.aggregation, show_progress=progress, **chosen["sts"],
                                    **common),
        "transfer": lambda: evaluate_transfer(
            model, settings=TransferSettings(args.transfer_protocol, n_jobs=args.jobs), show_progress=progress,
            partial=partial, **chosen["transfer"], **common
        ),
        "mteb": lambda: evaluate_mteb_sts(model, **common),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    started, timings, results = time.perf_counter(), {}, {}
    for group in args.task_groups:
        group_start = time.perf_counter()
        results[group] = runners[group]()
        timings[group] = round(time.perf_counter() - group_start, 1)
    config = {
        "model": args.model, "tasks": args.tasks, "pooler": args.pooler, "aggregation": args.aggregation,
        "transfer_protocol": args.transfer_protocol, "bf16": args.bf16, "batch_size": args.batch_size,
        "data_dir": str(args.data_dir) if args.data_dir else None, "device": str(model.device),
    }
    extra = {"seconds": {**timings, "total": round(time.perf_counter() - started, 1)}, "versions": _versions()}
    payload = build_payload(args.model, config, **results, extra=extra)
    write_results(out, payload)
    partial.unlink(missing_ok=True)
    return payload


def _versions() -> dict[str, str]:
    """Library versions that can move a score, recorded with every result."""
    import importlib.metadata

    names = ("torch", "transformers", "sentence-transformers", "scikit-learn", "scipy", "mteb")
    return {name: importlib.metadata.version(name) for name in names}


if __name__ == "__main__":
    raise SystemExit(main())

"""What the student buys: encoding speed and STS quality of the teacher and the trained student, per backend.

For the teacher and the student, each in torch fp32, torch bf16 (autocast; on CPUs with native bf16),
ONNX fp32 and ONNX int8 (distill/export.py): sentences/s at batch 64 and p50/p95 latency at batch 1 over
the same real sentences (STS-B test), measured side by side (every round times every row once, in a
rotating order, so load from other jobs falls on all rows alike; medians over rounds), ratios to the
teacher's torch fp32 throughput in the same round, and the 7-task STS average (SentEval protocol) of
every row, so quantisation loss is measured, not assumed. Writes a report, its JSON and a Pareto figure
(STS average against throughput); --card also writes the result into the student's model card.

Example (the demo's student; ~15 minutes on 2 CPU cores):
    python benchmarks/student_speed.py --student runs/offline_default/model --card
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Variant:
    """One row: a model (teacher or student) in one backend/precision."""

    model: str  # "teacher" | "student"
    backend: str  # "torch fp32" | "torch bf16" | "ONNX fp32" | "ONNX int8"

    @property
    def name(self) -> str:
        return f"{self.model}, {self.backend}"

    @property
    def bf16(self) -> bool:
        return self.backend == "torch bf16"

    @property
    def onnx_file(self) -> str | None:
        from distill.export import EXPORT_FILES

        return {"ONNX fp32": EXPORT_FILES["onnx"], "ONNX int8": EXPORT_FILES["onnx-int8"]}.get(self.backend)


def variants(with_bf16: bool) -> list[Variant]:
    backends = ["torch fp32"] + (["torch bf16"] if with_bf16 else []) + ["ONNX fp32", "ONNX int8"]
    return [Variant(model, backend) for model in ("teacher", "student") for backend in backends]


def prepare_folders(teacher: str, student: Path, work: Path) -> dict[str, Path]:
    """Copies of both models in ``work`` with their ONNX files (the student's run folder stays untouched)."""
    from sentence_transformers import SentenceTransformer

    from distill.export import EXPORT_FILES, export_model
    from kdmcse_base.offline_models import resolve_model_name

    folders = {"teacher": work / "teacher", "student": work / "student"}
    if not (folders["teacher"] / "modules.json").is_file():
        SentenceTransformer(resolve_model_name(teacher), device="cpu").save(str(folders["teacher"]))
    if not (folders["student"] / "modules.json").is_file():
        shutil.copytree(student, folders["student"], ignore=shutil.ignore_patterns("onnx", "*.pt", ".trainer_files.json"))
    for folder in folders.values():
        missing = [name for name, file in EXPORT_FILES.items() if not (folder / file).is_file()]
        if missing:
            print(f"exporting {folder} ({', '.join(missing)})", flush=True)
            export_model(folder, missing)
    return folders


def load_variant(variant: Variant, folders: dict[str, Path], threads: int):
    from sentence_transformers import SentenceTransformer

    from distill.export import load_onnx_student

    folder = folders[variant.model]
    if variant.onnx_file:
        return load_onnx_student(folder, variant.onnx_file, threads=threads)
    return SentenceTransformer(str(folder), device="cpu")


def time_rows(models: dict[Variant, object], sentences: list[str], latency_sentences: list[str],
              batch_size: int, rounds: int) -> dict[Variant, dict]:
    """Throughput and latency of every row, interleaved: each round times each row once, order rotating."""
    from eval.speed import latencies_ms, sentences_per_second

    rows = list(models)
    rates = {row: [] for row in rows}
    latencies = {row: [] for row in rows}
    for model_row in rows:  # warm-up: first calls allocate and (ONNX) plan
        sentences_per_second(models[model_row], sentences[:128], batch_size, model_row.bf16)
    for round_index in range(rounds):
        order = rows[round_index % len(rows):] + rows[:round_index % len(rows)]
        for row in order:
            rates[row].append(sentences_per_second(models[row], sentences, batch_size, row.bf16))
            latencies[row].append(latencies_ms(models[row], latency_sentences, row.bf16))
        print(f"round {round_index + 1}/{rounds}: " + ", ".join(
            f"{row.name} {rates[row][-1]:.0f}/s" for row in rows), flush=True)
    reference = np.asarray(rates[rows[0]])
    return {row: summary(np.asarray(rates[row]), np.asarray(rates[row]) / reference, np.concatenate(latencies[row]))
            for row in rows}


def summary(rates: np.ndarray, ratios: np.ndarray, latencies: np.ndarray) -> dict:
    """One row's numbers: median rate, median per-round ratio and its range, latency percentiles."""
    return {"sentences_per_second": float(np.median(rates)), "ratio_to_teacher_fp32": float(np.median(ratios)),
            "ratio_range": [float(ratios.min()), float(ratios.max())],
            "p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95))}


def sts_of(row: Variant, model, data_dir: Path | None, work: Path) -> dict:
    """The row's STS results (7-task average and per task), kept in ``work/sts`` for reruns."""
    from eval.sts import evaluate_sts

    cached = work / "sts" / f"{row.model}-{row.backend.replace(' ', '_')}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    print(f"STS: {row.name}", flush=True)
    results = evaluate_sts(model, data_dir=data_dir, bf16=row.bf16, show_progress=False)
    payload = {"average": results.average, "stsb_dev": results.stsb_dev,
               "tasks": {name: task.spearman for name, task in results.tasks.items()}}
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(payload, indent=2))
    return payload


def render_report(rows: list[dict], context: dict[str, str], command: str) -> str:
    teacher = next(r for r in rows if r["model"] == "teacher" and r["backend"] == "torch fp32")
    lines = ["# What the student buys: speed and quality per backend", "",
             f"Generated by `{command}`.", ""]
    lines += [f"- **{key}:** {value}" for key, value in context.items()]
    lines += ["", "| model | backend | sentences/s (batch 64) | x teacher fp32 (range over rounds) | "
                  "p50 ms (batch 1) | p95 ms | STS Avg | % of teacher STS |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        low, high = r["ratio_range"]
        lines.append(f"| {r['model']} | {r['backend']} | {r['sentences_per_second']:.0f} | "
                     f"{r['ratio_to_teacher_fp32']:.2f}x ({low:.2f}-{high:.2f}) | {r['p50_ms']:.1f} | "
                     f"{r['p95_ms']:.1f} | {r['sts_average']:.2f} | "
                     f"{100 * r['sts_average'] / teacher['sts_average']:.2f}% |")
    lines += ["", "Ratios are per round (every row timed once per round, in a rotating order) and their "
              "median; absolute sentences/s depend on what else these cores ran.", "",
              "## Said plainly", ""] + [f"- {line}" for line in findings(rows)]
    lines += ["", "![STS average against throughput](figures/student_speed.png)", ""]
    return "\n".join(lines)


def findings(rows: list[dict]) -> list[str]:
    by = {(r["model"], r["backend"]): r for r in rows}
    teacher = by[("teacher", "torch fp32")]
    out = []
    for backend in ("torch fp32", "torch bf16", "ONNX fp32", "ONNX int8"):
        row = by.get(("student", backend))
        if row:
            out.append(f"student, {backend}: {row['ratio_to_teacher_fp32']:.2f}x the teacher's torch fp32 "
                       f"throughput at {100 * row['sts_average'] / teacher['sts_average']:.2f}% of its STS "
                       f"average ({row['sts_average']:.2f} vs {teacher['sts_average']:.2f}).")
    onnx32, fp32 = by.get(("student", "ONNX fp32")), by.get(("student", "torch fp32"))
    if onnx32 and fp32:
        out.append(f"ONNX fp32 against torch fp32 (student): STS average {onnx32['sts_average']:.2f} vs "
                   f"{fp32['sts_average']:.2f} (difference {abs(onnx32['sts_average'] - fp32['sts_average']):.2f}).")
    int8 = by.get(("student", "ONNX int8"))
    if int8 and fp32:
        out.append(f"int8 quantisation costs the student {fp32['sts_average'] - int8['sts_average']:.2f} "
                   "STS points against its torch fp32 row.")
    return out


def pareto_figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, marker in (("teacher", "s"), ("student", "o")):
        mine = [r for r in rows if r["model"] == model]
        ax.scatter([r["sentences_per_second"] for r in mine], [r["sts_average"] for r in mine],
                   marker=marker, s=60, label=model)
        mine.sort(key=lambda r: r["sentences_per_second"])
        for i, r in enumerate(mine):  # alternate above/below: neighbours in throughput sit close
            ax.annotate(r["backend"], (r["sentences_per_second"], r["sts_average"]), fontsize=8,
                        xytext=(4, 6 if i % 2 == 0 else -12), textcoords="offset points")
    teacher = next(r for r in rows if r["model"] == "teacher" and r["backend"] == "torch fp32")
    ax.axhline(0.98 * teacher["sts_average"], color="grey", linestyle="--", linewidth=1)
    ax.text(0.01, 0.98 * teacher["sts_average"], " 98% of the teacher's (torch fp32)", fontsize=8, color="grey",
            va="bottom", transform=ax.get_yaxis_transform())
    ax.set_xscale("log")
    ax.set_xlabel("sentences/s at batch 64 (log scale)")
    ax.set_ylabel("STS 7-task average (Spearman x100)")
    ax.set_title("Quality against throughput, per model and backend")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, default=Path("runs/offline_default/model"),
                        help="the trained student's model folder (default: the demo's)")
    parser.add_argument("--teacher", default="offline:all-MiniLM-L6-v2", help="teacher text model (path, hub id, alias)")
    parser.add_argument("--data-dir", type=Path, default=None, help="data root (default: ../shared/data)")
    parser.add_argument("--work", type=Path, default=Path("runs/student_speed"), help="copies, ONNX files, STS cache")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-sentences", type=int, default=200)
    parser.add_argument("--limit", type=int, default=None, help="time only the first N sentences (rehearsals)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--report", type=Path, default=Path("reports/student_speed.md"))
    parser.add_argument("--card", action="store_true", help="also write the Speed section into --student's card")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the report, figure and card section from the report's JSON (no timing)")
    args = parser.parse_args(argv)
    if args.report_only:
        saved = json.loads(args.report.with_suffix(".json").read_text())
        saved["context"]["Student's training"] = training_note(args.student)
        write_outputs(args, saved["rows"], saved["context"], saved["command"], saved["machine"])
        return 0

    import torch

    from distill.export import ExportError
    from eval.data import load_stsb
    from kdmcse_base.machine import cpu_name, native_bf16

    if not (args.student / "modules.json").is_file():
        print(f"error: {args.student} is not a saved SentenceTransformer; train one first (make demo)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        folders = prepare_folders(args.teacher, args.student, args.work)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    pairs = load_stsb("test", args.data_dir)
    sentences = list(dict.fromkeys(s for p in pairs for s in (p.sentence1, p.sentence2)))[:args.limit]
    rows = variants(with_bf16=native_bf16())
    models = {row: load_variant(row, folders, threads) for row in rows}
    load_before = os.getloadavg()[0]
    timing = time_rows(models, sentences, sentences[:args.latency_sentences], args.batch_size, args.rounds)
    load_after = os.getloadavg()[0]
    results = [{**asdict(row), **timing[row], "sts_average": sts.get("average"), "sts": sts}
               for row in rows for sts in [sts_of(row, models[row], args.data_dir, args.work)]]

    import onnxruntime

    machine = f"{os.cpu_count()} CPU cores ({cpu_name()}), {threads} threads"
    context = {
        "Machine": f"{machine}, native bf16: {'yes' if native_bf16() else 'no (no bf16 rows)'}, "
                   f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {platform.machine()}",
        "Models": f"teacher `{args.teacher}`; student `{args.student}` (its copy in `{args.work}/student`)",
        "Sentences": f"{len(sentences)} distinct STS-B test sentences per throughput pass, batch {args.batch_size}; "
                     f"latency over the first {min(args.latency_sentences, len(sentences))}, one at a time; "
                     f"{args.rounds} rounds",
        "1-minute load average": f"{load_before:.1f} before timing, {load_after:.1f} after",
    }
    context["Student's training"] = training_note(args.student)
    command = ("python benchmarks/student_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    write_outputs(args, results, context, command, machine)
    print(f"total {(time.perf_counter() - started) / 60:.1f} min")
    return 0


def write_outputs(args: argparse.Namespace, rows: list[dict], context: dict[str, str], command: str,
                  machine: str) -> None:
    """The report, its JSON (what --report-only rebuilds from), the figure, and (--card) the card section."""
    from distill.model_card import set_card_section, speed_section

    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(render_report(rows, context, command))
    args.report.with_suffix(".json").write_text(json.dumps(
        {"command": command, "machine": machine, "context": context, "rows": rows}, indent=2))
    pareto_figure(rows, args.report.parent / "figures" / "student_speed.png")
    if args.card:
        set_card_section(args.student, "speed", speed_section(rows, machine))
    print(args.report.read_text())


def training_note(student: Path) -> str:
    """How the student was trained, from its run folder (``<run>/model`` -> ``<run>/config.yaml``)."""
    import yaml

    from distill.run_folder import RunFolder

    folder = RunFolder(student.parent)
    config, summary = folder.config, folder.summary
    if not (config.is_file() and summary.is_file()):
        return "not a training run's model folder (no config.yaml / train_summary.json beside it)"
    cfg, done = yaml.safe_load(config.read_text()), json.loads(summary.read_text())
    loss = cfg["loss"]
    terms = [name for name, on in (("regression", loss.get("regression_weight", 0) > 0),
                                   ("text " + str(loss.get("text")), loss.get("text") not in (None, "none")),
                                   ("soft targets", loss.get("soft_target_weight", 0) > 0)) if on]
    return (f"{cfg['student']['layers']} {cfg['student'].get('layer_choice', 'first')} layers of "
            f"`{cfg['student']['model']}`, {' + '.join(terms) or 'objective in its config'}, {done['steps']} steps "
            f"x {done['effective_batch_size']} at lr {cfg['train']['lr']}, {done['train_seconds'] / 60:.1f} training "
            f"minutes; best STS-B dev {done['best_stsb_dev']:.2f} at step {done['best_step']}")

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())

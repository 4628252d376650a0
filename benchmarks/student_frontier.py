#!/usr/bin/env python
"""The student you need: speed against quality for every kind of student, trained on one teacher cache.

Every trained point starts from the offline teacher (all-MiniLM-L6-v2) and learns from the same cached teacher
embeddings (the offline benchmark's 183,913-row pool) by regression, for the same training minutes
(``--budget``), selected on STS-B dev:

* a static-embedding student (Model2Vec's distillation of the teacher, then trained: ``static_regression``);
* transformer cuts of 1, 2, 3 and 4 spread-out layers (``regression_cut1``, ``regression_cut2``,
  ``regression_spread``, ``regression_cut4``).

Peers, measured in the same run: the teacher itself at each backend, Model2Vec's distillation of the same
teacher with no training (the static student's starting point), and sentence-transformers' layer-reduction
recipe (its trainer, ``MSELoss``, 3 spread layers) at the same budget (``st_recipe``).

Phase 1 (training) is ``benchmarks/race_st.py`` with these methods and one budget: a speed round gives each
method's steps/s, the budget becomes each method's step count, every run is scored on the 7 STS test sets
once, after selection. Its own report is ``reports/student_frontier_race.md``.
Phase 2 (this file): every point at every backend it has (torch fp32, ONNX fp32 and int8 for transformers,
a static model in its natural form, torch), timed side by side in alternating rounds (sentences/s at batch
64, p50/p95 latency at batch 1, over STS-B test sentences), each row scored on the 7 STS tasks, and the
report: ratios to the teacher's torch fp32 *and* to the teacher at the same backend.

  python benchmarks/student_frontier.py                       # both phases (about 75 minutes on 2 cores)
  python benchmarks/student_frontier.py --budget 15           # the issue's 15 training minutes
  python benchmarks/student_frontier.py --report-only         # from the saved JSON
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import race_st  # noqa: E402
from benchmarks.student_speed import Variant, load_variant, sts_of, time_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ("static_regression", "regression_cut1", "regression_cut2", "regression_spread", "regression_cut4")
ST_PEER = "st_recipe"
TRANSFORMER_BACKENDS = ("torch fp32", "ONNX fp32", "ONNX int8")
TEACHER, MODEL2VEC = "teacher", "model2vec"


def race_argv(args: argparse.Namespace) -> list[str]:
    """race_st's command line for phase 1: the project's 3-layer recipe and the anchor first, as it wants."""
    methods = ["regression_spread", ST_PEER] + [m for m in TRAINED if m != "regression_spread"]
    argv = ["--methods", ",".join(methods), "--budgets", f"{args.budget:g}", "--seeds", "1", "--rounds", "1",
            "--speed-steps", str(args.speed_steps), "--out-root", str(args.out_root / "race"),
            "--report", str(args.report.with_name(f"{args.report.stem}_race.md")),
            "--cache-root", args.cache_root, "--set", "train.precision=auto"]
    return argv + (["--data-dir", str(args.data_dir)] if args.data_dir else [])


def rows_study(args: argparse.Namespace) -> None:
    """The static student at the frontier's step count on smaller pools (Flickr30k captions cut to each of
    ``--rows-flickr``; the other sources whole): how its quality grows with cached teacher rows. Each
    smaller cache copies its vectors from the full one (reuse by content), so it costs no teacher forward."""
    from benchmarks import offline_distill

    race = race_st.parse_args(race_argv(args))
    steps = static_steps(args)
    for flickr in args.rows_flickr:
        group = race_st.bench_args(race, rows_root(args, flickr), steps)
        group.set = [*group.set, f"data.limits={{flickr30k_train: {flickr}}}"]
        offline_distill.build_cache_once(group)
        offline_distill.run_all(group, [("static_regression", offline_distill.FIRST_SEED)])


def rows_root(args: argparse.Namespace, flickr: int) -> Path:
    return args.out_root / "rows" / f"flickr{flickr}"


def static_steps(args: argparse.Namespace) -> int:
    """The step count the race gave the static student at the frontier's budget."""
    results = race_st.budget_root(race_results(args), args.budget) / "static_regression" / "seed1234" / "results.json"
    return json.loads(results.read_text())["train"]["steps"]


def race_results(args: argparse.Namespace) -> Path:
    return args.report.with_name(f"{args.report.stem}_race_results")


def rows_rows(args: argparse.Namespace) -> list[dict]:
    """Each pool size's rows, steps and STS average (the full pool is the frontier's own static run)."""
    found = []
    for flickr in args.rows_flickr:
        path = rows_root(args, flickr) / "static_regression" / "seed1234" / "results.json"
        if path.is_file():
            found.append(_rows_entry(json.loads(path.read_text()), rows_root(args, flickr) / "static_regression" / "seed1234"))
    full = race_st.budget_root(args.out_root / "race", args.budget) / "static_regression" / "seed1234"
    if (full / "results.json").is_file():
        found.append(_rows_entry(json.loads((full / "results.json").read_text()), full))
    return sorted(found, key=lambda r: r["rows"])


def _rows_entry(results: dict, run: Path) -> dict:
    import yaml

    from distill.config import load_config
    from distill.pools import open_run_cache

    cfg = load_config(run / "config.yaml")
    cache = open_run_cache(cfg, progress=False)
    return {"rows": int(cache.manifest["counts"]["text"]), "steps": results["train"]["steps"],
            "batch": results["train"]["effective_batch_size"], "best_stsb_dev": results["train"]["best_stsb_dev"],
            "sts_average": results["sts"]["average"], "limits": yaml.safe_dump(cfg.data.limits).strip()}


def points(args: argparse.Namespace) -> dict[str, Path]:
    """Every point's model folder: the teacher, Model2Vec's distillation, each trained run's best model."""
    from distill.config import StudentConfig
    from distill.static_student import build_static_encoder, static_init_folder
    from kdmcse_base.offline_models import resolve_model_name
    from sentence_transformers import SentenceTransformer

    work = args.out_root / "models"
    found = {TEACHER: work / TEACHER}
    if not (found[TEACHER] / "modules.json").is_file():
        SentenceTransformer(resolve_model_name(args.teacher), device="cpu").save(str(found[TEACHER]))
    static = StudentConfig(kind="static", static_dim=256, init_cache=str(ROOT / "cache" / "student_init"))
    build_static_encoder(static)  # the same folder the static student started from (kept once built)
    found[MODEL2VEC] = static_init_folder(static)
    budget = race_st.budget_root(args.out_root / "race", args.budget)
    for method in (*TRAINED, ST_PEER):
        model = budget / method / "seed1234" / "model"
        if (model / "modules.json").is_file():
            found[method] = model
    return found


def prepare(folders: dict[str, Path], work: Path) -> dict[str, Path]:
    """Copies with their ONNX files (the run folders stay as the trainer left them)."""
    from distill.export import EXPORT_FILES, export_model, formats_of

    copies = {}
    for name, folder in folders.items():
        copy = work / "copies" / name
        stamp = json.dumps(source_stamp(folder))
        kept_stamp = copy / SOURCE_STAMP  # written last: a copy without it is unfinished or of unknown source
        if copy.exists() and not (kept_stamp.is_file() and kept_stamp.read_text() == stamp):
            print(f"{name}: its copy is unfinished or older than its model; copying and scoring it again", flush=True)
            shutil.rmtree(copy)
            for kept in (work / "sts").glob(f"{name}-*.json"):
                kept.unlink()
        if not copy.exists():
            shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("onnx", "*.pt", ".trainer_files.json"))
            kept_stamp.write_text(stamp)
        wanted = [f for f in formats_of(copy) if f in ("onnx", "onnx-int8") and not (copy / EXPORT_FILES[f]).is_file()]
        if wanted:
            print(f"exporting {name} ({', '.join(wanted)})", flush=True)
            export_model(copy, wanted)
        copies[name] = copy
    return copies


SOURCE_STAMP = ".frontier_source.json"


def source_stamp(folder: Path) -> list:
    """Each file's path, size and modification time: a copy whose model was trained again is stale (its
    kept STS scores with it). The card (README.md) is left out: this benchmark writes its Speed section
    into the trained models after timing them, and the card changes no vector."""
    return [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "README.md"]


def rows_of(copies: dict[str, Path]) -> list[Variant]:
    from distill.export import formats_of

    rows = []
    for name, folder in copies.items():
        backends = TRANSFORMER_BACKENDS if "onnx" in formats_of(folder) else ("torch fp32",)
        rows += [Variant(name, backend) for backend in backends]
    return rows


def measure(args: argparse.Namespace) -> dict:
    import torch

    from eval.data import load_stsb
    from kdmcse_base.machine import cpu_name

    copies = prepare(points(args), args.out_root)
    rows = rows_of(copies)
    threads = torch.get_num_threads()
    models = {row: load_variant(row, copies, threads) for row in rows}
    pairs = load_stsb("test", args.data_dir)
    sentences = list(dict.fromkeys(s for p in pairs for s in (p.sentence1, p.sentence2)))[:args.limit]
    load = [os.getloadavg()[0]]
    timing = time_rows(models, sentences, sentences[:args.latency_sentences], 64, args.rounds)
    load.append(os.getloadavg()[0])
    reuse_race_scores(args, rows)
    results = [{**asdict(row), **timing[row], **scores(row, models, args)} for row in rows]
    return {"rows": results, "training": training_notes(args), "pool_sizes": rows_rows(args),
            "machine": f"{os.cpu_count()} CPU cores ({cpu_name()}), {threads} torch threads",
            "sentences": len(sentences), "rounds": args.rounds, "load": load, "budget": args.budget}


def scores(row: Variant, models: dict, args: argparse.Namespace) -> dict:
    """The row's STS results. ONNX fp32 runs the float32 graph of the same weights, whose STS scores equal
    torch's (reports/student_speed.md: identical to two decimals), so with ``--onnx-fp32-sts torch`` it takes
    the torch row's, marked as such, and the run saves encoding every test set twice more per model."""
    if row.backend == "ONNX fp32" and args.onnx_fp32_sts == "torch":
        torch_row = Variant(row.model, "torch fp32")
        return {"sts": sts_of(torch_row, models[torch_row], args.data_dir, args.out_root), "sts_from": "torch fp32"}
    return {"sts": sts_of(row, models[row], args.data_dir, args.out_root)}


def reuse_race_scores(args: argparse.Namespace, rows: list[Variant]) -> None:
    """The race scored every trained model and the teacher in torch fp32 with the same STS evaluation:
    those rows take its scores (as ``sts_of`` keeps them) instead of encoding every test set again."""
    race = args.out_root / "race"
    budget = race_st.budget_root(race, args.budget)
    for row in rows:
        source = race / TEACHER / "results.json" if row.model == TEACHER else budget / row.model / "seed1234" / "results.json"
        kept = args.out_root / "sts" / f"{row.model}-{row.backend.replace(' ', '_')}.json"
        if row.backend == "torch fp32" and source.is_file() and not kept.is_file():
            sts = json.loads(source.read_text())["sts"]
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps({"average": sts["average"], "stsb_dev": sts["stsb_dev"],
                                        "tasks": {name: task["spearman"] for name, task in sts["tasks"].items()}}))


def training_notes(args: argparse.Namespace) -> dict[str, dict]:
    """Each trained point's steps, minutes and best dev, from the race's kept summaries."""
    notes = {}
    root = race_st.budget_root(race_results(args), args.budget)
    for method in (*TRAINED, ST_PEER):
        path = root / method / "seed1234" / "results.json"
        if path.is_file():
            train = json.loads(path.read_text())["train"]
            notes[method] = {key: train.get(key) for key in ("steps", "train_seconds", "best_stsb_dev",
                                                            "best_step", "effective_batch_size")}
    return notes


def write_cards(args: argparse.Namespace, saved: dict) -> None:
    """Each trained model's card gets its Speed section: its rows beside the teacher's, read at the same
    backend, and the link to this report."""
    from distill.model_card import set_card_section, speed_section

    models = points(args)
    teacher = [{**r, "sts_average": r["sts"]["average"]} for r in saved["rows"] if r["model"] == TEACHER]
    for name in (*TRAINED, ST_PEER):
        mine = [{**r, "model": "student", "sts_average": r["sts"]["average"]} for r in saved["rows"] if r["model"] == name]
        if mine and name in models and (models[name] / "README.md").is_file():
            set_card_section(models[name], "speed", speed_section(teacher + mine, saved["machine"]))


# --- report ----------------------------------------------------------------------------------------

LABELS = {TEACHER: "teacher (all-MiniLM-L6-v2, 6 layers)", MODEL2VEC: "Model2Vec distillation, no training (peer)",
          "static_regression": "static student (this project)", "regression_cut1": "1-layer cut (this project)",
          "regression_cut2": "2-layer cut (this project)", "regression_spread": "3-layer cut (this project)",
          "regression_cut4": "4-layer cut (this project)", ST_PEER: "sentence-transformers layer reduction, 3 layers (peer)"}
SHORT = {ST_PEER: "s-t layer reduction, 3 layers", TEACHER: "teacher", MODEL2VEC: "Model2Vec, untrained"}
PEERS = (TEACHER, MODEL2VEC, ST_PEER)


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row with its STS average and its speed over the teacher's torch fp32 and same-backend rows."""
    teacher = {r["backend"]: r for r in rows if r["model"] == TEACHER}
    out = []
    for r in rows:
        same = teacher.get(r["backend"], teacher["torch fp32"])
        out.append({**r, "sts_average": r["sts"]["average"],
                    "x_teacher_fp32": r["sentences_per_second"] / teacher["torch fp32"]["sentences_per_second"],
                    "x_teacher_same_backend": r["sentences_per_second"] / same["sentences_per_second"],
                    "share": r["sts"]["average"] / teacher["torch fp32"]["sts"]["average"]})
    return out


def dominated_by(row: dict, rows: list[dict]) -> list[dict]:
    """Peer points at least as fast as ``row`` with a higher STS average."""
    return [p for p in rows if p["model"] in PEERS and p["sentences_per_second"] >= row["sentences_per_second"]
            and p["sts_average"] > row["sts_average"]]


def findings(rows: list[dict]) -> list[str]:
    trained = [r for r in rows if r["model"] not in PEERS]
    out = []
    static = [r for r in trained if r["model"] == "static_regression"]
    m2v = [r for r in rows if r["model"] == MODEL2VEC]
    if static and m2v:
        s, m = static[0], m2v[0]
        out.append(f"The static student encodes {s['x_teacher_fp32']:.0f}x as fast as the teacher in torch fp32 "
                   f"at {s['sts_average']:.2f} STS average ({100 * s['share']:.1f}% of the teacher's); Model2Vec's "
                   f"distillation it starts from scores {m['sts_average']:.2f} at {m['x_teacher_fp32']:.0f}x: "
                   f"training on the cache adds {s['sts_average'] - m['sts_average']:+.2f} points.")
    beaten = [(r, dominated_by(r, rows)) for r in trained]
    clear = [r for r, by in beaten if not by]
    out.append(f"{len(clear)} of {len(trained)} trained points have no peer point at least as fast with a higher "
               "STS average.")
    for r, by in beaten:
        if by:
            best = max(by, key=lambda p: p["sts_average"])
            out.append(f"Not ahead: {LABELS[r['model']]}, {r['backend']} ({r['sentences_per_second']:.0f}/s, "
                       f"{r['sts_average']:.2f}) is below {LABELS[best['model']]}, {best['backend']} "
                       f"({best['sentences_per_second']:.0f}/s, {best['sts_average']:.2f}).")
    st = {r["backend"]: r for r in rows if r["model"] == ST_PEER}
    ours = {r["backend"]: r for r in rows if r["model"] == "regression_spread"}
    for backend in TRANSFORMER_BACKENDS:
        if backend in st and backend in ours:
            gap = ours[backend]["sts_average"] - st[backend]["sts_average"]
            out.append(f"Same 3 layers, same minutes, {backend}: this project's recipe {ours[backend]['sts_average']:.2f}, "
                       f"sentence-transformers' {st[backend]['sts_average']:.2f} ({gap:+.2f}).")
    return out


def render(saved: dict, command: str) -> str:
    rows = with_ratios(saved["rows"])
    lines = ["# The student you need: speed against quality on one teacher cache", "",
             f"Generated by `{command}` on {saved['machine']} (1-minute load {saved['load'][0]:.1f} before "
             f"timing, {saved['load'][1]:.1f} after). Training: `benchmarks/race_st.py` (its report: "
             "[student_frontier_race.md](student_frontier_race.md)), every point trained by regression onto "
             f"the same cached teacher embeddings (183,913 rows) for the same {saved['budget']:g} training minutes "
             "(each method's step count from its own measured steps/s), one seed, best STS-B dev checkpoint; "
             "precision `auto` (fp32 on a CPU without native bf16).", "",
             f"Speed: {saved['sentences']} distinct STS-B test sentences per pass at batch 64 through "
             "`SentenceTransformer.encode` (tokenisation included), p50/p95 over single sentences; every row timed "
             f"once per round in rotating order, {saved['rounds']} rounds, medians. **x teacher fp32** divides by "
             "the teacher in torch fp32, **x same backend** by the teacher at the row's own backend (a static "
             "model, which has no ONNX transformer, against the teacher's torch fp32). STS: 7-task average "
             "(STS12-16, STS-B, SICK-R; SentEval protocol, Spearman x100) of that very row.", "",
             "| point | backend | sentences/s | x teacher fp32 | x same backend | p50 ms | p95 ms | STS Avg | of teacher |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["sentences_per_second"]):
        mark = "*" if r.get("sts_from") else ""
        lines.append(f"| {LABELS[r['model']]} | {r['backend']} | {r['sentences_per_second']:.0f} | "
                     f"{r['x_teacher_fp32']:.2f}x | {r['x_teacher_same_backend']:.2f}x | {r['p50_ms']:.2f} | "
                     f"{r['p95_ms']:.2f} | {r['sts_average']:.2f}{mark} | {100 * r['share']:.1f}%{mark} |")
    if any(r.get("sts_from") for r in rows):
        lines += ["", "\\* the torch fp32 row's STS scores: ONNX fp32 runs the same float32 weights "
                  "(`--onnx-fp32-sts torch`; reports/student_speed.md measured both: identical to two decimals)."]
    lines += ["", "## Training of each point", "", "| point | steps x batch | training minutes | best STS-B dev (step) |",
              "|---|---|---|---|"]
    for method, t in saved["training"].items():
        lines.append(f"| {LABELS[method]} | {t['steps']} x {t['effective_batch_size']} | {t['train_seconds'] / 60:.1f} | "
                     f"{t['best_stsb_dev']:.2f} ({t['best_step']}) |")
    lines += pool_section(saved)
    lines += ["", "## Said plainly", ""] + [f"- {line}" for line in findings(rows)]
    lines += ["", "![STS average against throughput](figures/student_frontier.png)", ""]
    return "\n".join(lines)


def pool_section(saved: dict) -> list[str]:
    # a cut larger than the corpus is the full pool: one row per distinct pool (the frontier's own run last)
    sizes = list({r["rows"]: r for r in saved.get("pool_sizes") or []}.values())
    if not sizes:
        return []
    lines = ["", "## The static student and the number of cached rows", "",
             "The static student trained the same number of steps on pools of cached teacher rows of each size "
             "(Flickr30k cut to its first N images, 5 captions each; Wiki1M prefix, COCO val2017 and coco2017_mini "
             "captions whole), so a smaller "
             f"pool is seen more often. Cache cost: {saved.get('cache_cost', 'see the notes')}.", "",
             "| cached text rows | steps x batch | best STS-B dev | STS Avg |", "|---|---|---|---|"]
    lines += [f"| {r['rows']:,} | {r['steps']} x {r['batch']} | {r['best_stsb_dev']:.2f} | {r['sts_average']:.2f} |"
              for r in sizes]
    return lines


def figure(saved: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = with_ratios(saved["rows"])
    markers = {"torch fp32": "o", "ONNX fp32": "s", "ONNX int8": "^"}
    fig, ax = plt.subplots(figsize=(8, 5))
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        colour = "grey" if name in PEERS else None
        for r in mine:
            ax.scatter(r["x_teacher_fp32"], r["sts_average"], marker=markers[r["backend"]], s=55,
                       color=colour if colour else f"C{list(LABELS).index(name)}",
                       edgecolors="black" if name not in PEERS else "none")
        best = max(mine, key=lambda r: r["x_teacher_fp32"])
        ax.annotate(SHORT.get(name, LABELS[name].replace(" (this project)", "")),
                    (best["x_teacher_fp32"], best["sts_average"]), fontsize=7, xytext=(5, 3), textcoords="offset points")
    for backend, marker in markers.items():
        ax.scatter([], [], marker=marker, color="white", edgecolors="black", label=backend)
    ax.scatter([], [], marker="o", color="grey", label="peer (grey)")
    ax.set_xscale("log")
    ax.set_xlabel("throughput over the teacher's torch fp32 (log scale)")
    ax.set_ylabel("STS 7-task average (Spearman x100)")
    ax.set_title(f"Students trained {saved['budget']:g} minutes on one teacher cache, and their peers")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=5.0, help="training minutes per point (default: %(default)s)")
    parser.add_argument("--speed-steps", type=int, default=60, help="steps of each method's speed round")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds of phase 2")
    parser.add_argument("--latency-sentences", type=int, default=100)
    parser.add_argument("--limit", type=int, default=1000, help="sentences per throughput pass")
    parser.add_argument("--teacher", default="offline:all-MiniLM-L6-v2")
    parser.add_argument("--out-root", type=Path, default=ROOT / "runs" / "student_frontier")
    parser.add_argument("--cache-root", default=str(ROOT / "cache" / "teacher"))
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "student_frontier.md")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--rows-flickr", default="10000,60000",
                        help="Flickr30k caption counts of the smaller pools of the static rows study ('' skips it)")
    parser.add_argument("--onnx-fp32-sts", choices=("measure", "torch"), default="torch",
                        help="score ONNX fp32 rows on STS, or take their torch fp32 row's scores (the same float32 "
                             "weights; default: %(default)s)")
    parser.add_argument("--cache-cost", help="the teacher cache's measured cost per row, quoted in the report")
    parser.add_argument("--skip-training", action="store_true", help="phase 2 only, on the runs already made")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report and figure from its JSON")
    args = parser.parse_args(argv)
    args.command = "python benchmarks/student_frontier.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.rows_flickr = [int(n) for n in args.rows_flickr.split(",") if n]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    saved_path = args.report.with_suffix(".json")
    if args.report_only:
        saved = json.loads(saved_path.read_text())
    else:
        started = time.perf_counter()
        if not args.skip_training:
            race_st.main(race_argv(args))
            rows_study(args)
        saved = measure(args)
        saved["command"] = args.command.strip()
        saved["cache_cost"] = args.cache_cost
        saved_path.parent.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(json.dumps(saved, indent=2))
        print(f"phase 2 done; whole run {(time.perf_counter() - started) / 60:.1f} min", flush=True)
        write_cards(args, saved)
    notes = args.report.with_name(f"{args.report.stem}_notes.md")  # what the numbers cannot say, by hand
    text = render(saved, saved["command"])
    if notes.is_file():
        text = text.rstrip() + "\n\n## Notes\n\n" + notes.read_text().strip() + "\n"
    args.report.write_text(text)
    figure(saved, args.report.parent / "figures" / "student_frontier.png")
    print(args.report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""What a corpus's size costs: cache build, trainer start-up, memory and step time at 100k, 1M and 10M rows.

LABELLED: the teacher is a tiny RANDOM BERT text tower written to a folder (a file, as real weights
are; the product never builds a random teacher) and the student a tiny RANDOM BERT: the point is how
the costs grow with the number of rows, not what either model learns. The sentences are synthetic:
the shipped Wiki1M prefix cycled, each line cut to 12 words and given its number so that every row is
a distinct text.

Per size, with the project's own scripts in subprocesses:
  1. ``scripts/cache_teacher.py`` builds the cache (``data.reuse_rows=false``, so no size reuses the
     rows of another); rows/s is the builder's own rate (its summary line) and the script's wall time;
  2. ``scripts/train_student.py`` trains ``--train-steps`` steps from that cache, named by
     ``train.teacher_cache`` (so the corpus file is not read again), with ``--loader-workers`` forked
     loader workers. Measured from outside: start-up = process start to the untrained dev line the
     trainer prints just before its first step; peak RSS of the trainer and of each loader worker
     (above the worker's first reading), polled every 50 ms; ms/step from ``train_summary.json``.

  python benchmarks/rows_scale.py --work-dir /tmp/rows_scale --out reports/rows_scale.md
  python benchmarks/rows_scale.py --work-dir /tmp/rs --sizes 2000,4000 --train-steps 4   # rehearsal
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.paper_scale import STSB_DEV, save_random_bert  # noqa: E402
from teacher_cache.corpora import resolve_data_dir  # noqa: E402
from kdmcse_base.offline_models import minilm_path  # noqa: E402

DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
WIKI_PREFIX = Path("wiki1m/wiki1m_for_simcse.prefix.txt")
BUILT = re.compile(r"encoded ([\d,]+) text rows .* in ([\d.]+) s \(([\d.]+) rows/s\)")
POLL_SECONDS = 0.05
SENTENCE_WORDS = 12


@dataclass
class SizeResult:
    rows: int
    build_rows_per_s: float  # the builder's own rate (teacher loading, planning, encoding, manifest)
    build_script_s: float  # scripts/cache_teacher.py, process start to exit (corpus read included)
    startup_s: float  # train_student.py: process start to the line printed before the first step
    trainer_peak_rss_gb: float
    worker_peak_growth_gb: float  # the largest rise of any loader worker's RSS above its first reading
    worker_private_growth_gb: float  # the same for its private (anonymous) memory: what copy-on-write costs
    ms_per_step: float
    cache_gb: float


def write_sentences(path: Path, rows: int, data_dir: Path) -> None:
    """``rows`` distinct sentences: the Wiki1M prefix cycled (each line's first ``SENTENCE_WORDS`` words,
    so that tokenising 10M rows takes minutes, not an hour, on 2 cores), each suffixed with its number."""
    lines = [" ".join(line.split()[:SENTENCE_WORDS])
             for line in (data_dir / WIKI_PREFIX).read_text().split("\n")[:-1] if line.strip()]
    with path.open("w") as handle:
        for start in range(0, rows, len(lines)):
            chunk = range(start, min(rows, start + len(lines)))
            handle.write("".join(f"{lines[i - start]} ({i})\n" for i in chunk))


def write_models(work: Path) -> tuple[Path, Path]:
    """(teacher text tower, student): RANDOM tiny BERTs with the MiniLM tokenizer (benchmark only)."""
    teacher = work / "teacher_text_tower" if (work / "teacher_text_tower").is_dir() else \
        save_random_bert(work / "teacher_text_tower", "micro", minilm_path(), seed=1)
    student = work / "student" if (work / "student").is_dir() else \
        save_random_bert(work / "student", "tiny", minilm_path(), seed=2)
    return teacher, student


def write_config(work: Path, rows: int, teacher: Path, student: Path, args: argparse.Namespace) -> Path:
    config = work / f"config_{rows}.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "teacher": {"text_model": str(teacher), "device": "cpu", "batch_size": 512, "num_workers": 1},
        "student": {"model": str(student), "max_seq_length": 32},
        "data": {"text_sources": [{"path": str(work / f"sentences_{rows}.txt")}], "image_sources": [],
                 "reuse_rows": False},
        "data_dir": str(work / "data"),
        "train": {"output_dir": str(work / f"run_{rows}"), "cache_root": str(work / "cache"),
                  "max_steps": args.train_steps, "eval_every": args.train_steps, "log_every": 10,
                  "loader_workers": args.loader_workers, "batch_size": 64},
    }))
    return config


def _earlier_builds(work: Path) -> dict[int, dict]:
    """Build numbers of an earlier run in this work dir (``rows_scale.json``), by size."""
    try:
        return {entry["rows"]: entry for entry in json.loads((work / "rows_scale.json").read_text())}
    except (OSError, ValueError, KeyError):
        return {}


def run_watched(command: list[str], log: Path, marker: str | None = None) -> tuple[float, float | None, dict]:
    """Run ``command``; returns (wall seconds, seconds until ``marker`` appeared in its output, memory peaks)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = {"trainer": 0, "workers": {}, "private": {}}
    done = threading.Event()
    watcher = threading.Thread(target=_watch_memory, args=(process.pid, peaks, done), daemon=True)
    watcher.start()
    seen = None
    with log.open("w") as handle:
        for line in process.stdout:
            handle.write(line)
            if marker and seen is None and marker in line:
                seen = time.perf_counter() - started
    process.wait()
    wall = time.perf_counter() - started
    done.set()
    watcher.join()
    if process.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"{command[1]} failed (exit {process.returncode}); last lines of {log}:\n{tail}")
    return wall, seen, peaks


def _watch_memory(pid: int, peaks: dict, done: threading.Event) -> None:
    """Peak RSS of the process, and of each child (the loader workers) its first and largest reading."""
    import psutil

    try:
        parent = psutil.Process(pid)
        while not done.is_set():
            peaks["trainer"] = max(peaks["trainer"], parent.memory_info().rss)
            for child in parent.children():
                for key, value in (("workers", child.memory_info().rss), ("private", _anonymous_bytes(child.pid))):
                    first, peak = peaks[key].get(child.pid, (value, value))
                    peaks[key][child.pid] = (first, max(peak, value))
            time.sleep(POLL_SECONDS)
    except psutil.Error:  # the process ended between two readings
        return


def _anonymous_bytes(pid: int) -> int:
    """RssAnon of /proc/<pid>/status: resident private memory, without the file pages a memory map shares
    with the page cache (clean, reclaimable, the same pages for the trainer and every worker)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^RssAnon:\s+(\d+) kB", status, re.M)
    return int(found.group(1)) * 1024 if found else 0


def _growth(readings: dict) -> int:
    return max((peak - first for first, peak in readings.values()), default=0)


def measure(rows: int, work: Path, models: tuple[Path, Path], args: argparse.Namespace) -> SizeResult:
    data_dir = resolve_data_dir(args.source_data)
    sentences = work / f"sentences_{rows}.txt"
    if not sentences.is_file():
        write_sentences(sentences, rows, data_dir)
    config = write_config(work, rows, *models, args)
    build_log = work / f"cache_{rows}.log"
    build_wall, _, _ = run_watched([sys.executable, str(ROOT / "scripts" / "cache_teacher.py"), "--config", str(config),
                                    "--no-progress"], build_log)
    found = BUILT.search(build_log.read_text())
    earlier = _earlier_builds(work).get(rows)
    if found is None and earlier is None:
        raise SystemExit(f"no 'encoded ... rows/s' summary in {build_log} and no earlier build of {rows} rows in "
                         f"{work / 'rows_scale.json'}: give a fresh --work-dir")
    build_rate, build_wall = (float(found.group(3)), build_wall) if found else \
        (earlier["build_rows_per_s"], earlier["build_script_s"])  # the cache is complete: its build's numbers
    cache = next(found.group(1) for line in build_log.read_text().splitlines()
                 if (found := re.match(r"cache (.+?)(?: is already complete|: )", line)))
    train_log = work / f"train_{rows}.log"
    shutil.rmtree(work / f"run_{rows}", ignore_errors=True)  # this benchmark's own run of an earlier call
    _, startup, peaks = run_watched([sys.executable, str(ROOT / "scripts" / "train_student.py"), "--config", str(config),
                                     f"train.teacher_cache={cache}"], train_log, marker="step 0 (untrained)")
    summary = json.loads((work / f"run_{rows}" / "train_summary.json").read_text())
    return SizeResult(rows=rows, build_rows_per_s=build_rate, build_script_s=build_wall,
                      startup_s=startup or float("nan"), trainer_peak_rss_gb=peaks["trainer"] / 2**30,
                      worker_peak_growth_gb=_growth(peaks["workers"]) / 2**30,
                      worker_private_growth_gb=_growth(peaks["private"]) / 2**30, ms_per_step=1000 * summary["train_seconds"] / summary["steps"],
                      cache_gb=sum(f.stat().st_size for f in Path(cache).rglob("*") if f.is_file()) / 2**30)


def render(results: list[SizeResult], command: str, figure: str | None) -> str:
    base = results[0]
    lines = [
        "# Corpus size: what a cache and a trainer cost at 100k, 1M and 10M rows",
        "",
        "LABELLED: tiny RANDOM teacher text tower and student (BERT shapes, MiniLM tokenizer), synthetic sentences "
        "(the Wiki1M prefix cycled, 12 words a line, numbered). What is measured is growth with the number of rows. "
        "2 CPU cores; ratios are to the smallest size, measured in the same run.",
        "",
        f"Command: `python benchmarks/rows_scale.py {command}`",
        "",
        "| rows | build rows/s | x smallest | build script s | trainer start-up s | trainer peak RSS GB "
        "| loader worker growth GB (private) | ms/step | x smallest | cache GB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.rows:,} | {r.build_rows_per_s:,.0f} | {r.build_rows_per_s / base.build_rows_per_s:.2f} | "
                     f"{r.build_script_s:.1f} | {r.startup_s:.1f} | {r.trainer_peak_rss_gb:.2f} | "
                     f"{r.worker_peak_growth_gb:.3f} ({r.worker_private_growth_gb:.3f}) | {r.ms_per_step:.1f} | {r.ms_per_step / base.ms_per_step:.2f} | "
                     f"{r.cache_gb:.2f} |")
    lines += ["", "Build rows/s is the builder's own summary (teacher loading, planning, encoding, rows file and id "
              "index, manifest); the build script's seconds add reading and fingerprinting the corpus file. "
              "Start-up runs from process start to the untrained dev line the trainer prints just before its first "
              "step (imports, cache checks, pools, student, baseline STS-B dev). Worker growth is each forked loader "
              "worker's largest RSS above its first reading; in brackets its private (anonymous) memory, what "
              "copy-on-write of Python objects would grow. The rest of its RSS is pages of the memory-mapped cache "
              "files the worker touched: shared with the page cache (and with the trainer and the other worker), "
              "clean, reclaimable; the kernel maps up to 16 pages around each random row read. A rerun with the "
              "caches complete reuses the builds' numbers from `rows_scale.json`."]
    if figure is not None:
        lines += ["", f"![cost against rows]({figure})"]
    return "\n".join(lines) + "\n"


def plot(results: list[SizeResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r.rows for r in results]
    series = {"build s per 1M rows": [1e6 / r.build_rows_per_s for r in results],
              "trainer start-up s": [r.startup_s for r in results],
              "trainer peak RSS GB": [r.trainer_peak_rss_gb for r in results],
              "ms/step": [r.ms_per_step for r in results],
              "cache GB": [r.cache_gb for r in results]}
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for label, values in series.items():
        axis.plot(rows, values, marker="o", label=label)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("text rows in the cache")
    axis.set_ylabel("cost (unit in the legend)")
    axis.set_title("Cost against corpus size (tiny random models, 2 CPU cores)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True, help="corpora, caches and runs are written here")
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES), help="text rows, comma-separated")
    parser.add_argument("--train-steps", type=int, default=200, help="training steps per size")
    parser.add_argument("--loader-workers", type=int, default=2, help="train.loader_workers")
    parser.add_argument("--source-data", default=None, help="shipped data (wiki1m/, senteval/); default: resolved")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    parser.add_argument("--figure", type=Path, default=None, help="write the log-log figure here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    work = args.work_dir.resolve()
    (work / "data" / STSB_DEV).parent.mkdir(parents=True, exist_ok=True)
    (work / "data" / STSB_DEV).write_bytes((resolve_data_dir(args.source_data) / STSB_DEV).read_bytes())
    models = write_models(work)
    results = []
    for rows in sizes:
        results.append(measure(rows, work, models, args))
        print(f"[rows_scale] {json.dumps(asdict(results[-1]))}", flush=True)
    (work / "rows_scale.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    if args.figure:
        plot(results, args.figure)
    figure = None if args.figure is None else os.path.relpath(args.figure, (args.out or Path.cwd()).parent)
    report = render(results, " ".join(sys.argv[1:]), figure)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

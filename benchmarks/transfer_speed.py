"""SentEval transfer classifiers, fitted one fold at a time against all cores, side by side in one run.

The seven tasks' sentences are encoded once; then each task's full protocol (nested 10-fold CV for
MR, CR, SUBJ, MPQA; C on dev for SST2; C by 10-fold CV for TREC, MRPC) runs with ``n_jobs=1`` and
with ``n_jobs`` = every core, back to back, so both see the same machine load. The two must give the
same numbers (every fit uses one BLAS thread); the report says so or fails loudly.

Writes reports/transfer_speed.md (or --out). Run:
    HF_HUB_OFFLINE=1 python benchmarks/transfer_speed.py
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def time_both(data, table, task: str, cores: int, protocol: str) -> tuple[float, float, object]:
    """Seconds with one job and with ``cores`` jobs; raises if their results differ."""
    from eval.transfer import TransferSettings, score_task

    seconds, results = [], []
    for n_jobs in (1, cores):
        started = time.perf_counter()
        results.append(score_task(task, data, table, TransferSettings(protocol, n_jobs=n_jobs)))
        seconds.append(time.perf_counter() - started)
    if results[0] != results[1]:
        raise AssertionError(f"{task}: n_jobs=1 gave {results[0]}, n_jobs={cores} gave {results[1]}")
    return seconds[0], seconds[1], results[0]


def start_workers(data, table, cores: int, protocol: str) -> float:
    """Seconds of a first parallel run (CR), which also starts joblib's worker processes."""
    from eval.transfer import TransferSettings, score_task

    started = time.perf_counter()
    score_task("CR", data, table, TransferSettings(protocol, n_jobs=cores))
    return time.perf_counter() - started


def render_report(rows: dict, cores: int, context: dict[str, str]) -> str:
    one, many = sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())
    lines = ["# Transfer classifier speed: folds one at a time vs in parallel", "",
             *[f"- {key}: {value}" for key, value in context.items()], "",
             f"| task | accuracy | n_jobs=1 (s) | n_jobs={cores} (s) | speed-up |", "|---|---|---|---|---|"]
    for task, (seconds_one, seconds_many, result) in rows.items():
        lines.append(f"| {task} | {result.accuracy:.2f} | {seconds_one:.1f} | {seconds_many:.1f} | "
                     f"{seconds_one / seconds_many:.2f}x |")
    lines += [f"| all | | {one:.1f} | {many:.1f} | {one / many:.2f}x |", "",
              "Both settings gave identical results on every task (accuracy, chosen regularisation, MRPC F1). "
              "Encoding is not timed here (see reports/eval_speed.md).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="offline:all-MiniLM-L6-v2")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/transfer_speed.md"))
    parser.add_argument("--protocol", default="fast", choices=("senteval", "fast"),
                        help="transfer classifier protocol to time (default: %(default)s)")
    args = parser.parse_args(argv)

    from eval.encode import EmbeddingTable, load_model
    from eval.transfer import TRANSFER_TASKS, load_transfer_data

    data = load_transfer_data(TRANSFER_TASKS, args.data_dir)
    table = EmbeddingTable.build(load_model(args.model), data.sentences(), "model", 128, False, True)
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    warm_up = start_workers(data, table, cores, args.protocol)
    rows = {task: time_both(data, table, task, cores, args.protocol) for task in TRANSFER_TASKS}
    context = {"Machine": f"{cores} CPU cores, no GPU", "Model": args.model,
               "Protocol": f"{args.protocol} (fp32 encoding)",
               "1-minute load average": f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
               "Worker start": f"an untimed CR run with n_jobs={cores} first took {warm_up:.1f} s (joblib starts "
                               "its worker processes once per process; the table leaves that out)"}
    report = render_report(rows, cores, context)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())

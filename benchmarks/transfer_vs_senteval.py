#!/usr/bin/env python
"""The project's default transfer protocol against SentEval's own classifier, on the same embeddings.

Encodes every sentence of the seven transfer tasks once (fp32, the table ``scripts/evaluate.py
--tasks transfer`` builds), saves the table, then scores each task twice from it:

* the project: ``eval.transfer.score_task`` with the default ``TransferSettings`` (``senteval`` protocol);
* SentEval: its own engine (``senteval.engine.SE``) from a checkout given with ``--senteval DIR``, with
  SimCSE's "test" settings (PyTorch classifier, 10 folds, Adam, batch 64, tenacity 5, epoch size 4,
  seed 1111) and a batcher that joins each token list with single spaces (as SimCSE's does) and looks
  the sentence up in the same table, so both classifiers see bit-identical vectors.

SentEval is not a dependency of this project and is never imported by it: clone
facebookresearch/SentEval yourself. Its 2020 code needs three edits to run on current Python/PyTorch
on a CPU: ``inspect.getargspec`` -> ``inspect.getfullargspec`` (utils.py), the classifier's tensors
kept on the CPU instead of ``.cuda()`` (tools/classifier.py), and ``torch.as_tensor`` where
``score``/``predict`` build tensors from numpy arrays (tools/classifier.py).

    HF_HUB_OFFLINE=1 python benchmarks/transfer_vs_senteval.py --senteval ~/SentEval --work /tmp/tvs
    python benchmarks/transfer_vs_senteval.py --work /tmp/tvs     # the project side only, or the table once both exist

Per-task results land in ``--work`` as ``ours_<task>.json`` / ``senteval_<task>.json``; tasks already
scored are skipped, so an interrupted run continues.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.encode import EmbeddingTable, load_model  # noqa: E402
from eval.report import markdown_table  # noqa: E402
from eval.transfer import TRANSFER_TASKS, TransferSettings, load_transfer_data, score_task  # noqa: E402
from teacher_cache.corpora import resolve_data_dir  # noqa: E402

SENTEVAL_PARAMS = {"usepytorch": True, "kfold": 10, "seed": 1111,
                   "classifier": {"nhid": 0, "optim": "adam", "batch_size": 64, "tenacity": 5, "epoch_size": 4}}
TOLERANCE = 0.3


def embedding_table(model: str, work: Path, sentences: list[str]) -> EmbeddingTable:
    """The fp32 table of every transfer sentence, encoded once and kept in ``work``."""
    path = work / "table.npz"
    if path.is_file():
        saved = np.load(path, allow_pickle=False)
        return EmbeddingTable({s: i for i, s in enumerate(saved["sentences"].tolist())}, saved["vectors"])
    table = EmbeddingTable.build(load_model(model), sentences, "model", 128, False, True)
    np.savez(path, sentences=np.array(list(table.row_of)), vectors=table.vectors)
    return table


def score_ours(table: EmbeddingTable, data, work: Path) -> None:
    for task in TRANSFER_TASKS:
        out = work / f"ours_{task}.json"
        if not out.is_file():
            started = time.time()
            result = score_task(task, data, table, TransferSettings()).to_dict()
            result["seconds"] = round(time.time() - started)
            out.write_text(json.dumps(result))
        print("project ", task, json.loads(out.read_text())["accuracy"], flush=True)


def score_senteval(table: EmbeddingTable, senteval_dir: Path, data_dir: Path, work: Path) -> None:
    sys.path.insert(0, str(senteval_dir))
    senteval = importlib.import_module("senteval")  # the user's checkout, not an installed distribution

    (work / "senteval_data").mkdir(exist_ok=True)
    link = work / "senteval_data" / "downstream"
    if not link.exists():
        link.symlink_to(data_dir / "senteval")

    def batcher(params, batch):
        if batch and batch[0] and isinstance(batch[0][0], bytes):
            batch = [[word.decode("utf-8") for word in sentence] for sentence in batch]
        return table[[" ".join(sentence) for sentence in batch]]  # KeyError: the two sides' sentences differ

    engine = senteval.engine.SE({**SENTEVAL_PARAMS, "task_path": str(work / "senteval_data")}, batcher, None)
    for task in TRANSFER_TASKS:
        out = work / f"senteval_{task}.json"
        if not out.is_file():
            started = time.time()
            result = {k: (v.item() if hasattr(v, "item") else v) for k, v in engine.eval(task).items()}
            result["seconds"] = round(time.time() - started)
            out.write_text(json.dumps(result))
        print("SentEval", task, json.loads(out.read_text())["acc"], flush=True)


def comparison_table(work: Path) -> str:
    rows, differences = [], []
    for task in TRANSFER_TASKS:
        ours = json.loads((work / f"ours_{task}.json").read_text())["accuracy"]
        theirs = round(float(json.loads((work / f"senteval_{task}.json").read_text())["acc"]), 2)
        differences.append(ours - theirs)
        rows.append([task, f"{ours:.2f}", f"{theirs:.2f}", f"{ours - theirs:+.2f}"])
    ours_avg = np.mean([float(r[1]) for r in rows])
    theirs_avg = np.mean([float(r[2]) for r in rows])
    rows.append(["**average**", f"{ours_avg:.2f}", f"{theirs_avg:.2f}", f"{ours_avg - theirs_avg:+.2f}"])
    worst = max(abs(d) for d in differences)
    verdict = (f"Largest difference {worst:.2f} points: "
               + ("every task within" if worst <= TOLERANCE else "NOT every task within") + f" {TOLERANCE}.")
    header = ["task", "project default (senteval, fp32)", "SentEval's own classifier", "difference"]
    return markdown_table(header, rows) + "\n\n" + verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="offline:all-MiniLM-L6-v2")
    parser.add_argument("--senteval", type=Path, help="a SentEval checkout (with the three edits above)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the table and per-task results")
    parser.add_argument("--data-dir", help="data directory holding senteval/ (default: the project's)")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    data_dir = resolve_data_dir(args.data_dir)
    data = load_transfer_data(TRANSFER_TASKS, data_dir)
    table = embedding_table(args.model, args.work, data.sentences())
    score_ours(table, data, args.work)
    if args.senteval:
        score_senteval(table, args.senteval, data_dir, args.work)
    if all((args.work / f"{side}_{t}.json").is_file() for side in ("ours", "senteval") for t in TRANSFER_TASKS):
        print(comparison_table(args.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())

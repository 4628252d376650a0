"""SentEval transfer tasks: logistic regression on frozen sentence embeddings (accuracy x100).

Two protocols (``TransferSettings.protocol``; every result and table names the one used), one module
each, around the fold procedures they share (``eval/transfer_folds.py``):

* ``senteval`` (default): SentEval's PyTorch logistic regression with SimCSE's "test" settings, the
  protocol behind the papers' transfer tables (``eval/transfer_senteval.py``). Rows are sorted by
  length before folding and MRPC uses ``[|u-v|, u*v]``, as SentEval does.
* ``fast``: scikit-learn's lbfgs logistic regression with SentEval's scikit-learn C grids
  (``eval/transfer_fast.py``). Minutes faster on CPU; not the papers' protocol, so use it for quick
  comparisons between your own models.

This module runs them on a model task by task: each task encodes its own sentences and is scored as
soon as they are, with a line per task (accuracy, minutes); finished tasks can be kept on disk for a
rerun (``partial``, keyed by the model's weights, the encoding and the settings), so an interrupted
evaluation loses at most the task it was in. The tasks, settings and results are
``eval/transfer_tasks.py``'s.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm

from kdmcse_base.files import atomic_write, json_bytes
from kdmcse_base.torch_files import payload_digest

from . import transfer_fast, transfer_senteval
from .encode import DEFAULT_BF16, EmbeddingTable, Pooler, load_model
from .transfer_tasks import (  # noqa: F401  (the names callers import from here)
    DEFAULT_PROTOCOL,
    PROTOCOLS,
    TRANSFER_TASKS,
    TransferData,
    TransferResults,
    TransferSettings,
    TransferTaskResult,
    load_transfer_data,
)


def evaluate_transfer(
    model: str | Path | SentenceTransformer,
    data_dir: str | Path | None = None,
    tasks: Sequence[str] = TRANSFER_TASKS,
    pooler: Pooler = "model",
    batch_size: int = 128,
    bf16: bool = DEFAULT_BF16,
    settings: TransferSettings = TransferSettings(),
    show_progress: bool = True,
    partial: Path | None = None,
) -> TransferResults:
    """Run the transfer tasks on a model, one at a time: a task's sentences are encoded, its classifiers
    run, and a line reports its accuracy and minutes before the next task starts.

    ``partial``: a JSON file that keeps every finished task's result as it comes, keyed by a hash of the
    model's weights, the pooler, the precision and the settings; a rerun with the same file scores only
    the tasks it lacks (another model or setting starts over). The caller deletes it once the full
    results are saved."""
    model = load_model(model)
    load_transfer_data(tasks, data_dir)  # every task's files checked before the first is encoded
    settings_key = {k: v for k, v in asdict(settings).items() if k != "n_jobs"}  # results do not depend on it
    key = {"model": payload_digest(model.state_dict()), "pooler": pooler, "bf16": bf16, "settings": settings_key}
    results = _finished_tasks(partial, key)
    say = tqdm.write if show_progress else (lambda line: None)
    for task in tasks:
        if task in results:
            say(f"{task}: {results[task].accuracy:.2f} (kept from {partial})")
            continue
        started = time.perf_counter()
        data = load_transfer_data([task], data_dir)
        table = EmbeddingTable.build(model, data.sentences(), pooler, batch_size, bf16, show_progress)
        results[task] = score_task(task, data, table, settings)
        say(f"{task}: {results[task].accuracy:.2f} ({settings.protocol}) in "
            f"{(time.perf_counter() - started) / 60:.1f} min")
        if partial is not None:
            atomic_write(partial, json_bytes({"key": key, "tasks": {t: r.to_dict() for t, r in results.items()}}))
    return TransferResults({task: results[task] for task in tasks}, pooler, settings.protocol)


def _finished_tasks(partial: Path | None, key: dict) -> dict[str, TransferTaskResult]:
    """The task results ``partial`` kept for this model, encoding and settings (none for another key)."""
    if partial is None or not partial.is_file():
        return {}
    try:
        saved = json.loads(partial.read_text())
    except json.JSONDecodeError:  # cut short while written by hand, or not ours: start over
        return {}
    if saved.get("key") != json.loads(json.dumps(key)):
        return {}
    return {task: _task_result(record) for task, record in saved.get("tasks", {}).items()}


def _task_result(record: dict) -> TransferTaskResult:
    return TransferTaskResult(**{**record, "chosen_regularisation": tuple(record["chosen_regularisation"])})


def score_task(
    task: str, data: TransferData, table: EmbeddingTable, settings: TransferSettings = TransferSettings()
) -> TransferTaskResult:
    """One task's classifier protocol on already-encoded sentences (``table`` holds ``data.sentences()``)."""
    protocol = transfer_senteval if settings.protocol == "senteval" else transfer_fast
    return protocol.score_task(task, data, table, settings)

"""SentEval transfer tasks: logistic regression on frozen sentence embeddings (accuracy x100).

Two protocols (``TransferSettings.protocol``; every result and table names the one used):

* ``senteval`` (default): SentEval's PyTorch logistic regression with SimCSE's "test" settings, the
  protocol behind the papers' transfer tables; see ``eval/transfer_senteval.py``. Rows are sorted
  by length before folding and MRPC uses ``[|u-v|, u*v]``, as SentEval does.
* ``fast``: scikit-learn's lbfgs logistic regression with SentEval's scikit-learn C grids, described
  below. Minutes faster on CPU; its numbers are not the papers' protocol (on all-MiniLM-L6-v2 the
  average differs by about 0.4 points), so use it for quick comparisons between your own models.

The ``fast`` protocol, as SentEval runs it with ``usepytorch=False``:

* MR, CR, SUBJ, MPQA: stratified 10-fold cross-validation; inside each training part, an inner
  stratified k-fold picks the L2 strength C from ``C_GRID_INNER`` (SentEval's InnerKFoldClassifier).
  The reported accuracy is the mean over the 10 test folds.
* SST2: the given train/dev/test split; C is chosen on dev (SentEval's SplitClassifier).
* TREC, MRPC: the given train/test split; C is chosen by k-fold CV on train from ``C_GRID_KFOLD``
  (SentEval's KFoldClassifier). MRPC also reports F1 of the paraphrase class.

Features are used as they come, not standardised: SentEval's C grids assume raw embeddings, and
standardising moves the best C below them (on all-MiniLM-L6-v2 MR embeddings the validation
optimum is near C = 1 raw but near 2^-7 standardised, where the grid's 0.25 edge loses ~0.7 points).
Two speed tricks: the C grid is walked from strong to weak regularisation with warm starts (same
optimum, fewer iterations; a test checks the choice against a cold grid search), and the folds are
fitted in parallel by joblib (``n_jobs``). Every fit runs with BLAS on one thread, so the numbers do
not depend on ``n_jobs`` or the machine's core count (threaded BLAS reorders lbfgs's sums).

MRPC pair features: ``senteval`` uses SentEval's ``[|u-v|, u*v]``; ``fast`` keeps this project's
earlier ``[u, v, |u-v|, u*v]`` unless ``mrpc_features`` says otherwise; results record which.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from joblib import Parallel, delayed
from sentence_transformers import SentenceTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from eval.data import (
    BINARY_TASK_FILES,
    LabeledPair,
    LabeledSentence,
    load_binary_task,
    load_mrpc,
    load_sst2,
    load_trec,
)

from teacher_cache.files import atomic_write, json_bytes

from . import transfer_senteval as senteval
from .transfer_senteval import ClassifierOutcome
from .encode import DEFAULT_BF16, EmbeddingTable, Pooler, load_model

TRANSFER_TASKS: tuple[str, ...] = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")
"""The seven tasks of the papers' transfer table, in column order."""

C_GRID_INNER: tuple[float, ...] = tuple(2.0**t for t in range(-2, 4))
"""C candidates for the CV tasks and SST2 (SentEval: 2^-2 .. 2^3)."""
C_GRID_KFOLD: tuple[float, ...] = tuple(2.0**t for t in range(-1, 6))
"""C candidates for TREC and MRPC (SentEval's KFoldClassifier: 2^-1 .. 2^5)."""

MRPCFeatures = Literal["|u-v|,u*v", "u,v,|u-v|,u*v"]
MRPC_FEATURE_CHOICES: tuple[str, ...] = get_args(MRPCFeatures)
DEFAULT_MRPC_FEATURES: MRPCFeatures = "|u-v|,u*v"
FAST_MRPC_FEATURES: MRPCFeatures = "u,v,|u-v|,u*v"
"""The ``fast`` protocol's MRPC default: the four-part feature this project used before SentEval's."""

Protocol = Literal["senteval", "fast"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
DEFAULT_PROTOCOL: Protocol = "senteval"

SEED = 1111  # SentEval's default seed: fold assignment and solver randomness
MAX_ITER = 1000


@dataclass(frozen=True)
class TransferSettings:
    """How the classifiers run. ``inner_folds`` and ``mrpc_features`` apply to ``fast`` only: the
    ``senteval`` protocol uses ``n_folds`` inner folds and ``[|u-v|, u*v]``, as SentEval does.
    ``mrpc_features=None`` means the protocol's own (``fast``: ``FAST_MRPC_FEATURES``)."""

    protocol: Protocol = DEFAULT_PROTOCOL
    n_folds: int = 10
    inner_folds: int = 10
    mrpc_features: MRPCFeatures | None = None
    seed: int = SEED
    n_jobs: int = -1
    """folds fitted at a time (-1: one per CPU core); the results do not depend on it"""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown transfer protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        if self.protocol == "senteval" and self.mrpc_features not in (None, DEFAULT_MRPC_FEATURES):
            raise ValueError("the senteval protocol uses MRPC features |u-v|,u*v; pick protocol 'fast' for others")

    @property
    def mrpc(self) -> MRPCFeatures:
        """The MRPC pair features this protocol uses."""
        if self.mrpc_features is not None:
            return self.mrpc_features
        return DEFAULT_MRPC_FEATURES if self.protocol == "senteval" else FAST_MRPC_FEATURES


@dataclass(frozen=True)
class TransferTaskResult:
    task: str
    accuracy: float
    """Test accuracy x100 (mean over the outer folds for MR, CR, SUBJ, MPQA)."""
    dev_accuracy: float
    """Validation accuracy x100 of the chosen regularisation (inner CV, or SST2 dev)."""
    protocol: str
    n_examples: dict[str, int]
    chosen_regularisation: tuple[float, ...]
    """``senteval``: Adam weight decay (L2); ``fast``: scikit-learn's C (inverse strength)."""
    f1: float | None = None
    """MRPC only: F1 x100 of the paraphrase class, as SentEval reports."""
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TransferResults:
    tasks: dict[str, TransferTaskResult]
    pooler: str
    protocol: Protocol = DEFAULT_PROTOCOL

    @property
    def average(self) -> float | None:
        """Mean accuracy over the seven tasks (None if any is missing)."""
        if any(task not in self.tasks for task in TRANSFER_TASKS):
            return None
        return round(float(np.mean([self.tasks[t].accuracy for t in TRANSFER_TASKS])), 2)

    def to_dict(self) -> dict:
        return {
            "pooler": self.pooler,
            "protocol": self.protocol,
            "average": self.average,
            "tasks": {name: result.to_dict() for name, result in self.tasks.items()},
        }


# --- the fast protocol's classifiers on feature matrices (no model needed) ------------------------


def select_c(
    features: np.ndarray,
    labels: np.ndarray,
    c_grid: Sequence[float],
    n_folds: int,
    seed: int = SEED,
    n_jobs: int = 1,
) -> tuple[float, float]:
    """The C with the best mean accuracy over stratified ``n_folds`` folds, and that accuracy x100.

    Ties go to the smaller C (stronger regularisation), as SentEval's argmax over rounded scores.
    Folds are fitted ``n_jobs`` at a time; each fold's fits are the same in any order, so the
    choice does not depend on ``n_jobs``.
    """
    grid = sorted(c_grid)
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold_scores = np.array(Parallel(n_jobs=n_jobs)(
        delayed(grid_accuracies)(
            (features[train], labels[train]), (features[held_out], labels[held_out]), grid, seed)
        for train, held_out in folds.split(features, labels)
    ))
    mean_scores = np.round(100 * fold_scores.mean(axis=0), 2)
    best = int(np.argmax(mean_scores))
    return grid[best], float(mean_scores[best])


_ONE_BLAS_THREAD = threadpool_limits.wrap(limits=1)


@_ONE_BLAS_THREAD
def grid_accuracies(
    train: tuple[np.ndarray, np.ndarray], held_out: tuple[np.ndarray, np.ndarray], grid: Sequence[float], seed: int
) -> list[float]:
    """Held-out accuracy (fraction) of a fit for each C of the ascending ``grid``.

    The grid is walked from strong to weak regularisation, each fit warm-started from the last.
    """
    classifier = _logistic_regression(grid[0], seed, warm_start=True)
    scores = []
    for c in grid:
        _fit(classifier.set_params(C=c), *train)
        scores.append(classifier.score(*held_out))
    return scores


def kfold_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    n_folds: int = 10,
    inner_folds: int = 10,
    c_grid: Sequence[float] = C_GRID_INNER,
    seed: int = SEED,
    n_jobs: int = 1,
) -> ClassifierOutcome:
    """Nested CV (MR, CR, SUBJ, MPQA): outer stratified folds for test, inner folds to choose C.

    The outer folds run ``n_jobs`` at a time (the inner ones sequentially inside each).
    """
    outer = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = Parallel(n_jobs=n_jobs)(
        delayed(_outer_fold)(features, labels, train, test, inner_folds, c_grid, seed)
        for train, test in outer.split(features, labels)
    )
    test_scores, dev_scores, chosen = zip(*folds)
    return ClassifierOutcome(round(float(np.mean(test_scores)), 2), round(float(np.mean(dev_scores)), 2), chosen)


def _outer_fold(features, labels, train, test, inner_folds, c_grid, seed) -> tuple[float, float, float]:
    """Test accuracy x100, inner-CV accuracy x100 and chosen C of one outer fold."""
    c, dev = select_c(features[train], labels[train], c_grid, inner_folds, seed)
    predictions = final_predictions(c, seed, (features[train], labels[train]), features[test])
    return _accuracy(predictions, labels[test]), dev, c


@_ONE_BLAS_THREAD
def final_predictions(
    c: float, seed: int, train: tuple[np.ndarray, np.ndarray], test_features: np.ndarray
) -> np.ndarray:
    """Predictions on ``test_features`` of one fit with the chosen C on all of ``train``."""
    return _fit(_logistic_regression(c, seed), *train).predict(test_features)


def _accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return round(100 * float(np.mean(predictions == labels)), 2)


def train_test_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    inner_folds: int = 10,
    c_grid: Sequence[float] = C_GRID_KFOLD,
    seed: int = SEED,
    n_jobs: int = 1,
) -> ClassifierOutcome:
    """Given train/test split (TREC, MRPC): C by k-fold CV on train, then one fit on all of train."""
    c, dev = select_c(train_features, train_labels, c_grid, inner_folds, seed, n_jobs)
    predictions = final_predictions(c, seed, (train_features, train_labels), test_features)
    return ClassifierOutcome(_accuracy(predictions, test_labels), dev, (c,), predictions)


def split_accuracy(
    train: tuple[np.ndarray, np.ndarray],
    dev: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    c_grid: Sequence[float] = C_GRID_INNER,
    seed: int = SEED,
) -> ClassifierOutcome:
    """Given train/dev/test split (SST2): the C with the best dev accuracy, tested once."""
    grid = sorted(c_grid)
    dev_scores = [round(100 * score, 2) for score in grid_accuracies(train, dev, grid, seed)]
    best_c = grid[int(np.argmax(dev_scores))]
    predictions = final_predictions(best_c, seed, train, test[0])
    return ClassifierOutcome(_accuracy(predictions, test[1]), max(dev_scores), (best_c,))


def pair_features(u: np.ndarray, v: np.ndarray, kind: MRPCFeatures = DEFAULT_MRPC_FEATURES) -> np.ndarray:
    """Features of a sentence pair from its two embeddings (see the module docstring)."""
    if kind == "u,v,|u-v|,u*v":
        return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)
    if kind == "|u-v|,u*v":
        return np.concatenate([np.abs(u - v), u * v], axis=1)
    raise ValueError(f"unknown MRPC features {kind!r}; choose one of {', '.join(MRPC_FEATURE_CHOICES)}")


def _logistic_regression(c: float, seed: int, warm_start: bool = False) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed, warm_start=warm_start)


def _fit(classifier: LogisticRegression, features: np.ndarray, labels: np.ndarray) -> LogisticRegression:
    with warnings.catch_warnings():
        # Rare at MAX_ITER on sentence embeddings; a near-converged fit changes accuracy by ~0.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return classifier.fit(features, labels)


# --- tasks on a model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferData:
    """Loaded rows of the requested tasks, so their sentences can be encoded in one pass."""

    single: dict[str, list[LabeledSentence]]
    splits: dict[str, dict[str, list[LabeledSentence]]]
    mrpc: dict[str, list[LabeledPair]]

    def sentences(self) -> list[str]:
        rows = [r for rs in self.single.values() for r in rs]
        rows += [r for by_split in self.splits.values() for rs in by_split.values() for r in rs]
        pairs = [s for rs in self.mrpc.values() for p in rs for s in (p.sentence1, p.sentence2)]
        return [r.text for r in rows] + pairs


def load_transfer_data(tasks: Sequence[str], data_dir: str | Path | None = None) -> TransferData:
    unknown = [t for t in tasks if t not in TRANSFER_TASKS]
    if unknown:
        raise ValueError(f"unknown transfer task(s) {unknown}; known: {', '.join(TRANSFER_TASKS)}")
    single = {t: load_binary_task(t, data_dir) for t in tasks if t in BINARY_TASK_FILES}
    splits = {}
    if "SST2" in tasks:
        splits["SST2"] = {s: load_sst2(s, data_dir) for s in ("train", "dev", "test")}
    if "TREC" in tasks:
        splits["TREC"] = {s: load_trec(s, data_dir) for s in ("train", "test")}
    mrpc = {s: load_mrpc(s, data_dir) for s in ("train", "test")} if "MRPC" in tasks else {}
    return TransferData(single, splits, mrpc)


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
    """Run the transfer tasks on a model; all their sentences are encoded in one pass, then each task's
    classifiers run and a line reports its accuracy and time.

    ``partial``: a JSON file that keeps every finished task's result as it comes, keyed by a hash of the
    embeddings and the settings; a rerun with the same file (same model, pooler, precision, settings)
    scores only the tasks it lacks. The caller deletes it once the full results are saved."""
    model = load_model(model)
    data = load_transfer_data(tasks, data_dir)
    table = EmbeddingTable.build(model, data.sentences(), pooler, batch_size, bf16, show_progress)
    settings_key = {k: v for k, v in asdict(settings).items() if k != "n_jobs"}  # results do not depend on it
    key = {"embeddings": hashlib.sha256(table.vectors.tobytes()).hexdigest(), "settings": settings_key}
    results = _finished_tasks(partial, key)
    say = tqdm.write if show_progress else (lambda line: None)
    for task in tqdm(tasks, desc=f"transfer classifiers ({settings.protocol})", unit="task",
                     disable=not show_progress):
        if task in results:
            say(f"{task}: {results[task].accuracy:.2f} (kept from {partial})")
            continue
        started = time.perf_counter()
        results[task] = score_task(task, data, table, settings)
        say(f"{task}: {results[task].accuracy:.2f} in {time.perf_counter() - started:.0f} s")
        if partial is not None:
            atomic_write(partial, json_bytes({"key": key, "tasks": {t: r.to_dict() for t, r in results.items()}}))
    return TransferResults({task: results[task] for task in tasks}, pooler, settings.protocol)


def _finished_tasks(partial: Path | None, key: dict) -> dict[str, TransferTaskResult]:
    """The task results ``partial`` kept for these embeddings and settings (none for another key)."""
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
    if settings.protocol == "senteval":
        return _score_senteval(task, data, table, settings)
    if task in data.single:
        return _score_cv_task(task, data.single[task], table, settings)
    if task == "SST2":
        return _score_sst2(data.splits["SST2"], table, settings.seed)
    if task == "TREC":
        return _score_trec(data.splits["TREC"], table, settings)
    return _score_mrpc(data.mrpc, table, settings)


def _xy(rows: Sequence[LabeledSentence], table: EmbeddingTable) -> tuple[np.ndarray, np.ndarray]:
    return table[[r.text for r in rows]], np.array([r.label for r in rows])


def _mrpc_xy(rows: Sequence[LabeledPair], table: EmbeddingTable, kind: MRPCFeatures) -> tuple[np.ndarray, np.ndarray]:
    u, v = table[[p.sentence1 for p in rows]], table[[p.sentence2 for p in rows]]
    return pair_features(u, v, kind), np.array([p.label for p in rows])


def _score_cv_task(task, rows, table, settings: TransferSettings) -> TransferTaskResult:
    features, labels = _xy(rows, table)
    n_folds, inner_folds = settings.n_folds, settings.inner_folds
    outcome = kfold_accuracy(features, labels, n_folds, inner_folds, C_GRID_INNER, settings.seed, settings.n_jobs)
    protocol = f"fast: {n_folds}-fold CV, C by inner {inner_folds}-fold CV"
    return TransferTaskResult(
        task, outcome.test_accuracy, outcome.dev_accuracy, protocol, {"all": len(rows)}, outcome.chosen_regularisation
    )


def _score_sst2(splits, table, seed) -> TransferTaskResult:
    train, dev, test = (_xy(splits[s], table) for s in ("train", "dev", "test"))
    outcome = split_accuracy(train, dev, test, C_GRID_INNER, seed)
    sizes = {s: len(rows) for s, rows in splits.items()}
    return TransferTaskResult(
        "SST2", outcome.test_accuracy, outcome.dev_accuracy, "fast: train/dev/test, C on dev", sizes,
        outcome.chosen_regularisation,
    )


def _score_trec(splits, table, settings: TransferSettings) -> TransferTaskResult:
    (train_x, train_y), (test_x, test_y) = _xy(splits["train"], table), _xy(splits["test"], table)
    outcome = train_test_accuracy(
        train_x, train_y, test_x, test_y, settings.inner_folds, C_GRID_KFOLD, settings.seed, settings.n_jobs
    )
    sizes = {s: len(rows) for s, rows in splits.items()}
    protocol = f"fast: train/test, C by {settings.inner_folds}-fold CV on train"
    return TransferTaskResult("TREC", outcome.test_accuracy, outcome.dev_accuracy, protocol, sizes, outcome.chosen_regularisation)


def _score_mrpc(splits, table, settings: TransferSettings) -> TransferTaskResult:
    (train_x, train_y), (test_x, test_y) = (_mrpc_xy(splits[s], table, settings.mrpc) for s in ("train", "test"))
    outcome = train_test_accuracy(
        train_x, train_y, test_x, test_y, settings.inner_folds, C_GRID_KFOLD, settings.seed, settings.n_jobs
    )
    f1 = round(100 * float(f1_score(test_y, outcome.test_predictions)), 2)
    sizes = {s: len(rows) for s, rows in splits.items()}
    protocol = f"fast: train/test, C by {settings.inner_folds}-fold CV on train"
    return TransferTaskResult(
        "MRPC", outcome.test_accuracy, outcome.dev_accuracy, protocol, sizes, outcome.chosen_regularisation, f1,
        {"features": settings.mrpc},
    )


# --- the senteval protocol (classifier in eval/transfer_senteval.py) --------------------------------


def _length_sorted(rows: Sequence[LabeledSentence | LabeledPair]) -> list:
    """Rows in SentEval's evaluation order: by token length (each sentence of a pair), then label."""
    texts = [(r.sentence1, r.sentence2) if isinstance(r, LabeledPair) else r.text for r in rows]
    return [rows[i] for i in senteval.length_order(texts, [r.label for r in rows])]


def _score_senteval(task: str, data: TransferData, table: EmbeddingTable, settings: TransferSettings) -> TransferTaskResult:
    folds, seed, jobs = settings.n_folds, settings.seed, settings.n_jobs
    if task in data.single:
        rows = _length_sorted(data.single[task])
        outcome = senteval.kfold_accuracy(_xy(rows, table), folds, seed, jobs)
        protocol = f"senteval: {folds}-fold CV, L2 by inner {folds}-fold CV"
        return TransferTaskResult(task, outcome.test_accuracy, outcome.dev_accuracy, protocol,
                                  {"all": len(rows)}, outcome.chosen_regularisation)
    if task == "MRPC":
        splits = {s: _length_sorted(rows) for s, rows in data.mrpc.items()}
        train, test = (_mrpc_xy(splits[s], table, "|u-v|,u*v") for s in ("train", "test"))
    else:
        splits = {s: _length_sorted(rows) for s, rows in data.splits[task].items()}
        train, test = _xy(splits["train"], table), _xy(splits["test"], table)
    sizes = {s: len(rows) for s, rows in splits.items()}
    if task == "SST2":
        outcome = senteval.split_accuracy(train, _xy(splits["dev"], table), test, seed)
        return TransferTaskResult(task, outcome.test_accuracy, outcome.dev_accuracy,
                                  "senteval: train/dev/test, L2 and early stopping on dev", sizes, outcome.chosen_regularisation)
    outcome = senteval.train_test_accuracy(train, test, folds, seed, jobs)
    protocol = f"senteval: train/test, L2 by {folds}-fold CV on train"
    if task == "TREC":
        return TransferTaskResult(task, outcome.test_accuracy, outcome.dev_accuracy, protocol, sizes, outcome.chosen_regularisation)
    f1 = round(100 * float(f1_score(test[1], outcome.test_predictions)), 2)
    return TransferTaskResult(task, outcome.test_accuracy, outcome.dev_accuracy, protocol, sizes,
                              outcome.chosen_regularisation, f1, {"features": "|u-v|,u*v"})

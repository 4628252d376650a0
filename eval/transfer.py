"""SentEval transfer tasks: logistic regression on frozen sentence embeddings (accuracy x100).

Protocols, as SentEval runs them with its scikit-learn classifier (``usepytorch=False``):

* MR, CR, SUBJ, MPQA: stratified 10-fold cross-validation; inside each training part, an inner
  stratified k-fold picks the L2 strength C from ``C_GRID_INNER`` (SentEval's InnerKFoldClassifier).
  The reported accuracy is the mean over the 10 test folds.
* SST2: the given train/dev/test split; C is chosen on dev (SentEval's SplitClassifier).
* TREC, MRPC: the given train/test split; C is chosen by k-fold CV on train from ``C_GRID_KFOLD``
  (SentEval's KFoldClassifier). MRPC also reports F1 of the paraphrase class.

Features are used as they come, not standardised: SentEval's C grids assume raw embeddings, and
standardising moves the best C below them (on all-MiniLM-L6-v2 MR embeddings the validation
optimum is near C = 1 raw but near 2^-7 standardised, where the grid's 0.25 edge loses ~0.7 points).
lbfgs converges in tens of iterations on raw sentence embeddings, so this costs no speed. Two speed
tricks: the C grid is walked from strong to weak regularisation with warm starts (same optimum, fewer
iterations; a test checks the choice against a cold grid search), and the (outer or inner) folds are
fitted in parallel by joblib (``n_jobs``). Every fit and prediction runs with BLAS on one thread, so
the numbers do not depend on ``n_jobs`` or the machine's core count (threaded BLAS reorders lbfgs's
sums, which moved CR by 0.1 here), and these small problems run faster without threading overhead.

Note that SimCSE's published transfer numbers come from SentEval's *PyTorch* logistic regression
(Adam, L2 in 1e-5..1e-2, early stopping), not this scikit-learn path; expect small differences.

MRPC pair features: SentEval's code (senteval/mrpc.py) uses ``[|u-v|, u*v]``; this project's spec
asks for ``[u, v, |u-v|, u*v]``. Both are available (``mrpc_features``); the default follows the
spec, and results record which one was used.
"""
from __future__ import annotations

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

from .encode import DEFAULT_BF16, EmbeddingTable, Pooler, load_model

TRANSFER_TASKS: tuple[str, ...] = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")
"""The seven tasks of the papers' transfer table, in column order."""

C_GRID_INNER: tuple[float, ...] = tuple(2.0**t for t in range(-2, 4))
"""C candidates for the CV tasks and SST2 (SentEval: 2^-2 .. 2^3)."""
C_GRID_KFOLD: tuple[float, ...] = tuple(2.0**t for t in range(-1, 6))
"""C candidates for TREC and MRPC (SentEval's KFoldClassifier: 2^-1 .. 2^5)."""

MRPCFeatures = Literal["u,v,|u-v|,u*v", "|u-v|,u*v"]
MRPC_FEATURE_CHOICES: tuple[str, ...] = get_args(MRPCFeatures)
DEFAULT_MRPC_FEATURES: MRPCFeatures = "u,v,|u-v|,u*v"

SEED = 1111  # SentEval's default seed: fold assignment and solver randomness
MAX_ITER = 1000


@dataclass(frozen=True)
class ClassifierOutcome:
    """What one protocol run produced: test and validation accuracy x100, the chosen C(s)."""

    test_accuracy: float
    dev_accuracy: float
    chosen_c: tuple[float, ...]
    test_predictions: np.ndarray | None = None


@dataclass(frozen=True)
class TransferTaskResult:
    task: str
    accuracy: float
    """Test accuracy x100 (mean over the outer folds for MR, CR, SUBJ, MPQA)."""
    dev_accuracy: float
    """Validation accuracy x100 of the chosen C (inner CV, or SST2 dev)."""
    protocol: str
    n_examples: dict[str, int]
    chosen_c: tuple[float, ...]
    f1: float | None = None
    """MRPC only: F1 x100 of the paraphrase class, as SentEval reports."""
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TransferResults:
    tasks: dict[str, TransferTaskResult]
    pooler: str

    @property
    def average(self) -> float | None:
        """Mean accuracy over the seven tasks (None if any is missing)."""
        if any(task not in self.tasks for task in TRANSFER_TASKS):
            return None
        return round(float(np.mean([self.tasks[t].accuracy for t in TRANSFER_TASKS])), 2)

    def to_dict(self) -> dict:
        return {
            "pooler": self.pooler,
            "average": self.average,
            "tasks": {name: result.to_dict() for name, result in self.tasks.items()},
        }


# --- classifiers on feature matrices (no model needed) --------------------------------------------


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
    n_folds: int = 10,
    inner_folds: int = 10,
    mrpc_features: MRPCFeatures = DEFAULT_MRPC_FEATURES,
    seed: int = SEED,
    show_progress: bool = True,
    n_jobs: int = -1,
) -> TransferResults:
    """Run the transfer tasks on a model; all their sentences are encoded in one pass.

    ``n_jobs`` classifier folds are fitted at a time (-1: one per CPU core); the results do not
    depend on it.
    """
    model = load_model(model)
    data = load_transfer_data(tasks, data_dir)
    table = EmbeddingTable.build(model, data.sentences(), pooler, batch_size, bf16, show_progress)
    results = {
        task: score_task(task, data, table, n_folds, inner_folds, mrpc_features, seed, n_jobs)
        for task in tqdm(tasks, desc="transfer classifiers", unit="task", disable=not show_progress)
    }
    return TransferResults(results, pooler)


def score_task(
    task: str,
    data: TransferData,
    table: EmbeddingTable,
    n_folds: int = 10,
    inner_folds: int = 10,
    mrpc_features: MRPCFeatures = DEFAULT_MRPC_FEATURES,
    seed: int = SEED,
    n_jobs: int = -1,
) -> TransferTaskResult:
    """One task's classifier protocol on already-encoded sentences (``table`` holds ``data.sentences()``)."""
    if task in data.single:
        return _score_cv_task(task, data.single[task], table, n_folds, inner_folds, seed, n_jobs)
    if task == "SST2":
        return _score_sst2(data.splits["SST2"], table, seed)
    if task == "TREC":
        return _score_trec(data.splits["TREC"], table, inner_folds, seed, n_jobs)
    return _score_mrpc(data.mrpc, table, inner_folds, mrpc_features, seed, n_jobs)


def _xy(rows: Sequence[LabeledSentence], table: EmbeddingTable) -> tuple[np.ndarray, np.ndarray]:
    return table[[r.text for r in rows]], np.array([r.label for r in rows])


def _score_cv_task(task, rows, table, n_folds, inner_folds, seed, n_jobs) -> TransferTaskResult:
    features, labels = _xy(rows, table)
    outcome = kfold_accuracy(features, labels, n_folds, inner_folds, C_GRID_INNER, seed, n_jobs)
    protocol = f"{n_folds}-fold CV, C by inner {inner_folds}-fold CV"
    return TransferTaskResult(
        task, outcome.test_accuracy, outcome.dev_accuracy, protocol, {"all": len(rows)}, outcome.chosen_c
    )


def _score_sst2(splits, table, seed) -> TransferTaskResult:
    train, dev, test = (_xy(splits[s], table) for s in ("train", "dev", "test"))
    outcome = split_accuracy(train, dev, test, C_GRID_INNER, seed)
    sizes = {s: len(rows) for s, rows in splits.items()}
    return TransferTaskResult(
        "SST2", outcome.test_accuracy, outcome.dev_accuracy, "train/dev/test, C on dev", sizes, outcome.chosen_c
    )


def _score_trec(splits, table, inner_folds, seed, n_jobs) -> TransferTaskResult:
    (train_x, train_y), (test_x, test_y) = _xy(splits["train"], table), _xy(splits["test"], table)
    outcome = train_test_accuracy(train_x, train_y, test_x, test_y, inner_folds, C_GRID_KFOLD, seed, n_jobs)
    sizes = {s: len(rows) for s, rows in splits.items()}
    protocol = f"train/test, C by {inner_folds}-fold CV on train"
    return TransferTaskResult("TREC", outcome.test_accuracy, outcome.dev_accuracy, protocol, sizes, outcome.chosen_c)


def _score_mrpc(splits, table, inner_folds, kind, seed, n_jobs) -> TransferTaskResult:
    def features_and_labels(rows: list[LabeledPair]) -> tuple[np.ndarray, np.ndarray]:
        u, v = table[[p.sentence1 for p in rows]], table[[p.sentence2 for p in rows]]
        return pair_features(u, v, kind), np.array([p.label for p in rows])

    (train_x, train_y), (test_x, test_y) = features_and_labels(splits["train"]), features_and_labels(splits["test"])
    outcome = train_test_accuracy(train_x, train_y, test_x, test_y, inner_folds, C_GRID_KFOLD, seed, n_jobs)
    f1 = round(100 * float(f1_score(test_y, outcome.test_predictions)), 2)
    sizes = {s: len(rows) for s, rows in splits.items()}
    protocol = f"train/test, C by {inner_folds}-fold CV on train"
    return TransferTaskResult(
        "MRPC", outcome.test_accuracy, outcome.dev_accuracy, protocol, sizes, outcome.chosen_c, f1,
        {"features": kind},
    )

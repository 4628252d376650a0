"""The ``fast`` transfer protocol: scikit-learn's lbfgs logistic regression with SentEval's scikit-learn
C grids, as SentEval runs it with ``usepytorch=False``. Minutes faster on CPU than the ``senteval``
protocol; its numbers are not the papers' (on all-MiniLM-L6-v2 the average differs by about 0.4
points), so use it for quick comparisons between your own models.

* MR, CR, SUBJ, MPQA: stratified 10-fold cross-validation; inside each training part, an inner
  stratified k-fold picks the L2 strength C from ``C_GRID_INNER`` (SentEval's InnerKFoldClassifier).
  The reported accuracy is the mean over the 10 test folds.
* SST2: the given train/dev/test split; C is chosen on dev (SentEval's SplitClassifier).
* TREC, MRPC: the given train/test split; C is chosen by k-fold CV on train from ``C_GRID_KFOLD``
  (SentEval's KFoldClassifier). MRPC also reports F1 of the paraphrase class.

The folds are ``eval/transfer_folds.py``'s. Features are used as they come, not standardised:
SentEval's C grids assume raw embeddings, and standardising moves the best C below them (on
all-MiniLM-L6-v2 MR embeddings the validation optimum is near C = 1 raw but near 2^-7 standardised,
where the grid's 0.25 edge loses ~0.7 points). The C grid is walked from strong to weak
regularisation with warm starts (same optimum, fewer iterations; a test checks the choice against a
cold grid search). Every fit runs with BLAS on one thread, so the numbers do not depend on ``n_jobs``
or the machine's core count (threaded BLAS reorders lbfgs's sums).

MRPC pair features: this protocol keeps the project's earlier ``[u, v, |u-v|, u*v]`` unless
``TransferSettings.mrpc_features`` says otherwise; results record which.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from threadpoolctl import threadpool_limits

from . import transfer_folds as folds
from .encode import EmbeddingTable
from .transfer_folds import ClassifierOutcome, Split
from .transfer_tasks import SEED, TransferData, TransferSettings, TransferTaskResult, mrpc_xy, task_result, task_xy

C_GRID_INNER: tuple[float, ...] = tuple(2.0**t for t in range(-2, 4))
"""C candidates for the CV tasks and SST2 (SentEval: 2^-2 .. 2^3)."""
C_GRID_KFOLD: tuple[float, ...] = tuple(2.0**t for t in range(-1, 6))
"""C candidates for TREC and MRPC (SentEval's KFoldClassifier: 2^-1 .. 2^5)."""
MAX_ITER = 1000

_ONE_BLAS_THREAD = threadpool_limits.wrap(limits=1)


@dataclass(frozen=True)
class WarmStartedLogistic:
    """scikit-learn's logistic regression as the fold procedures use it, over an ascending C grid."""

    grid: tuple[float, ...]

    def grid_scores(self, train: Split, held_out: Split, seed: int) -> list[float]:
        return grid_accuracies(train, held_out, self.grid, seed)

    def refit_and_test(self, train: Split, test: Split, value: float, seed: int) -> tuple[float, np.ndarray]:
        predictions = final_predictions(value, seed, train, test[0])
        return folds.percent(predictions, test[1]), predictions


@_ONE_BLAS_THREAD
def grid_accuracies(train: Split, held_out: Split, grid: Sequence[float], seed: int) -> list[float]:
    """Held-out accuracy (fraction) of a fit for each C of the ascending ``grid``.

    The grid is walked from strong to weak regularisation, each fit warm-started from the last.
    """
    classifier = _logistic_regression(grid[0], seed, warm_start=True)
    scores = []
    for c in grid:
        _fit(classifier.set_params(C=c), *train)
        scores.append(classifier.score(*held_out))
    return scores


@_ONE_BLAS_THREAD
def final_predictions(c: float, seed: int, train: Split, test_features: np.ndarray) -> np.ndarray:
    """Predictions on ``test_features`` of one fit with the chosen C on all of ``train``."""
    return _fit(_logistic_regression(c, seed), *train).predict(test_features)


def select_c(features: np.ndarray, labels: np.ndarray, c_grid: Sequence[float], n_folds: int, seed: int = SEED,
             n_jobs: int = 1) -> tuple[float, float]:
    """The C with the best mean accuracy over stratified ``n_folds`` folds, and that accuracy x100.

    Ties go to the smaller C (stronger regularisation), as SentEval's argmax over rounded scores.
    """
    return folds.cv_choice(WarmStartedLogistic(tuple(sorted(c_grid))), (features, labels), n_folds, seed, n_jobs)


def kfold_accuracy(features: np.ndarray, labels: np.ndarray, n_folds: int = 10, inner_folds: int = 10,
                   c_grid: Sequence[float] = C_GRID_INNER, seed: int = SEED, n_jobs: int = 1) -> ClassifierOutcome:
    """Nested CV (MR, CR, SUBJ, MPQA): outer stratified folds for test, inner folds to choose C."""
    return folds.kfold_accuracy(WarmStartedLogistic(tuple(sorted(c_grid))), (features, labels), n_folds,
                                inner_folds, seed, n_jobs)


def train_test_accuracy(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                        test_labels: np.ndarray, inner_folds: int = 10, c_grid: Sequence[float] = C_GRID_KFOLD,
                        seed: int = SEED, n_jobs: int = 1) -> ClassifierOutcome:
    """Given train/test split (TREC, MRPC): C by k-fold CV on train, then one fit on all of train."""
    return folds.train_test_accuracy(WarmStartedLogistic(tuple(sorted(c_grid))), (train_features, train_labels),
                                     (test_features, test_labels), inner_folds, seed, n_jobs)


def split_accuracy(train: Split, dev: Split, test: Split, c_grid: Sequence[float] = C_GRID_INNER,
                   seed: int = SEED) -> ClassifierOutcome:
    """Given train/dev/test split (SST2): the C with the best dev accuracy, refitted and tested once."""
    grid = sorted(c_grid)
    dev_scores = [round(100 * score, 2) for score in grid_accuracies(train, dev, grid, seed)]
    best_c = grid[int(np.argmax(dev_scores))]
    predictions = final_predictions(best_c, seed, train, test[0])
    return ClassifierOutcome(folds.percent(predictions, test[1]), max(dev_scores), (best_c,))


def _logistic_regression(c: float, seed: int, warm_start: bool = False) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=MAX_ITER, random_state=seed, warm_start=warm_start)


def _fit(classifier: LogisticRegression, features: np.ndarray, labels: np.ndarray) -> LogisticRegression:
    with warnings.catch_warnings():
        # Rare at MAX_ITER on sentence embeddings; a near-converged fit changes accuracy by ~0.
        warnings.simplefilter("ignore", ConvergenceWarning)
        return classifier.fit(features, labels)


# --- the seven tasks --------------------------------------------------------------------------------


def score_task(task: str, data: TransferData, table: EmbeddingTable, settings: TransferSettings) -> TransferTaskResult:
    """One task under this protocol, on already-encoded sentences (``table`` holds ``data.sentences()``)."""
    seed, jobs, inner = settings.seed, settings.n_jobs, settings.inner_folds
    if task in data.single:
        rows = data.single[task]
        outcome = kfold_accuracy(*task_xy(rows, table), settings.n_folds, inner, C_GRID_INNER, seed, jobs)
        return task_result(task, outcome, f"fast: {settings.n_folds}-fold CV, C by inner {inner}-fold CV",
                           {"all": rows})
    if task == "SST2":
        splits = data.splits["SST2"]
        outcome = split_accuracy(*(task_xy(splits[s], table) for s in ("train", "dev", "test")), C_GRID_INNER, seed)
        return task_result(task, outcome, "fast: train/dev/test, C on dev", splits)
    splits = data.mrpc if task == "MRPC" else data.splits[task]
    if task == "MRPC":
        train, test = (mrpc_xy(splits[s], table, settings.mrpc) for s in ("train", "test"))
    else:
        train, test = (task_xy(splits[s], table) for s in ("train", "test"))
    outcome = train_test_accuracy(*train, *test, inner, C_GRID_KFOLD, seed, jobs)
    protocol = f"fast: train/test, C by {inner}-fold CV on train"
    if task == "TREC":
        return task_result(task, outcome, protocol, splits)
    f1 = round(100 * float(f1_score(test[1], outcome.test_predictions)), 2)
    return task_result(task, outcome, protocol, splits, f1, {"features": settings.mrpc})

"""The fold procedures both transfer protocols run around their classifier (SentEval's three).

A protocol (``eval/transfer_fast.py``, ``eval/transfer_senteval.py``) supplies a ``FoldClassifier``:
its regularisation grid, the held-out accuracy of a fit per grid value, and a refit of one value
tested once. The procedures here choose the value and report the accuracies:

* ``kfold_accuracy`` (MR, CR, SUBJ, MPQA): stratified outer folds for test; in each, inner stratified
  folds of the training part choose the value, refitted on that part and tested on the outer fold;
* ``train_test_accuracy`` (TREC, MRPC): stratified folds of train choose the value; one refit on
  train, tested once.

Choice: fold accuracies x100 are averaged per value and rounded to 2 decimals, and the first best
wins (ties go to the first value of the grid, SentEval's argmax). Folds are SentEval's: seeded,
shuffled, stratified, over the rows in the order given. Fits run ``n_jobs`` at a time through joblib;
each fit is the same in any order, so no number depends on ``n_jobs``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import StratifiedKFold

Split = tuple[np.ndarray, np.ndarray]  # features, labels


@dataclass(frozen=True)
class ClassifierOutcome:
    """What one protocol run produced (either protocol): test and validation accuracy x100, the chosen
    regularisation per fold (or once; L2 in the senteval protocol, C in the fast one), test predictions."""

    test_accuracy: float
    dev_accuracy: float
    chosen_regularisation: tuple[float, ...]
    test_predictions: np.ndarray | None = None


class FoldClassifier(Protocol):
    """A protocol's classifier as the fold procedures use it."""

    grid: tuple[float, ...]

    def grid_scores(self, train: Split, held_out: Split, seed: int) -> Sequence[float]:
        """Held-out accuracy (fraction) of a fit on ``train`` for each value of ``grid``."""

    def refit_and_test(self, train: Split, test: Split, value: float, seed: int) -> tuple[float, np.ndarray]:
        """Test accuracy x100 and predictions of one fit of ``value`` on all of ``train``."""


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled stratified folds of rows in the given order (SentEval's: seeded)."""
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(folds.split(np.zeros(len(labels)), labels))


def take(data: Split, rows: np.ndarray) -> Split:
    return data[0][rows], data[1][rows]


def percent(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy x100, rounded to 2 decimals."""
    return round(100 * float(np.mean(predictions == labels)), 2)


def choose(fold_scores: np.ndarray, grid: Sequence[float]) -> tuple[float, float]:
    """(value, score x100) of the first best mean over folds; means are rounded to 2 decimals first."""
    means = np.round(100 * np.asarray(fold_scores).mean(axis=0), 2)
    index = int(np.argmax(means))
    return grid[index], float(means[index])


def cv_choice(classifier: FoldClassifier, train: Split, n_folds: int, seed: int, n_jobs: int = 1) -> tuple[float, float]:
    """The grid value with the best mean accuracy over stratified folds of ``train``, and that accuracy."""
    fold_scores = Parallel(n_jobs=n_jobs)(
        delayed(classifier.grid_scores)(take(train, fit), take(train, held_out), seed)
        for fit, held_out in stratified_folds(train[1], n_folds, seed)
    )
    return choose(np.array(fold_scores), classifier.grid)


def kfold_accuracy(classifier: FoldClassifier, data: Split, n_folds: int, inner_folds: int, seed: int,
                   n_jobs: int = 1) -> ClassifierOutcome:
    """Nested CV: outer folds for test (``n_jobs`` at a time), inner folds choose the value."""
    results = Parallel(n_jobs=n_jobs)(
        delayed(_outer_fold)(classifier, data, folds, inner_folds, seed)
        for folds in stratified_folds(data[1], n_folds, seed)
    )
    tests, devs, chosen = zip(*results)
    return ClassifierOutcome(round(float(np.mean(tests)), 2), round(float(np.mean(devs)), 2), tuple(chosen))


def _outer_fold(classifier: FoldClassifier, data: Split, folds: tuple[np.ndarray, np.ndarray], inner_folds: int,
                seed: int) -> tuple[float, float, float]:
    """Test accuracy x100, inner-CV accuracy x100 and chosen value of one outer fold."""
    part = take(data, folds[0])
    value, dev = cv_choice(classifier, part, inner_folds, seed)
    accuracy, _ = classifier.refit_and_test(part, take(data, folds[1]), value, seed)
    return accuracy, dev, value


def train_test_accuracy(classifier: FoldClassifier, train: Split, test: Split, n_folds: int, seed: int,
                        n_jobs: int = 1) -> ClassifierOutcome:
    """The value chosen by k-fold CV on train (folds ``n_jobs`` at a time), refitted on train, tested once."""
    value, dev = cv_choice(classifier, train, n_folds, seed, n_jobs)
    accuracy, predictions = classifier.refit_and_test(train, test, value, seed)
    return ClassifierOutcome(accuracy, dev, (value,), predictions)

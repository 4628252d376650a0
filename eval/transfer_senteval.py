"""SentEval's transfer protocol: a PyTorch logistic regression with early stopping (the default).

This is the classifier behind the transfer numbers of the SimCSE, MCSE and KDMCSE papers: SentEval
run with ``usepytorch=True`` and SimCSE's "test" settings. Written from the protocol:

* Model: one linear layer (dim -> classes), softmax cross-entropy averaged over the batch, Adam
  (lr 1e-3) with the L2 strength as Adam's ``weight_decay``; mini-batches of 64 in a fresh random
  order each pass.
* Early stopping: the model is scored on its validation set after every ``epoch_size`` = 4 passes;
  a better score keeps a copy of the weights, a score that is not better counts against a tenacity
  of 5, and the 6th such check (counted over the whole fit, not in a row) stops training. At most
  200 passes. The best copy is the fitted model.
* L2 grid 1e-5, 1e-4, 1e-3, 1e-2; ties go to the smallest (first best, validation accuracies x100
  rounded to 2 decimals).
* MR, CR, SUBJ, MPQA: 10 stratified outer folds; per fold, each L2 is scored by 10 inner stratified
  folds (each inner fit early-stops on its own held-out fold); the best L2 is refitted on the outer
  training part with a random 5% of it held out for early stopping, then tested.
* TREC, MRPC: each L2 scored by 10-fold CV on train; the best refitted on train (5% held out for
  early stopping), tested once. MRPC features are ``[|u-v|, u*v]``.
* SST2: each L2 fitted on train with early stopping on dev; the best is tested.
* Every task's rows are first sorted by length in whitespace tokens, then label (MRPC: first
  sentence's length, second's, label), as SentEval does before encoding; the sort is stable, so
  the fold assignment and the random batch orders see the same row order as SentEval's.
* Every fit starts from the same seed (weights drawn as ``nn.Linear`` draws them; numpy's
  ``RandomState(seed)`` orders the batches and picks the 5% split), so the numbers are a pure
  function of the embeddings and the seed. Fits run on CPU with one thread each, in parallel over
  folds / L2 values (joblib), so ``n_jobs`` does not change a number.

SentEval trains on a GPU; float sums in another order move a fit slightly, so agreement with a GPU
SentEval run is close but not to the last digit.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import f1_score
from threadpoolctl import threadpool_limits

from eval.data import LabeledPair, LabeledSentence

from . import transfer_folds as folds
from .encode import EmbeddingTable
from .transfer_folds import ClassifierOutcome, Split
from .transfer_tasks import (
    DEFAULT_MRPC_FEATURES,
    SEED,
    TransferData,
    TransferSettings,
    TransferTaskResult,
    mrpc_xy,
    task_result,
    task_xy,
)

L2_GRID: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)
"""Adam weight-decay candidates (SentEval's PyTorch grid, 10^-5 .. 10^-2)."""


@dataclass(frozen=True)
class FitSettings:
    """SimCSE's "test" classifier settings."""

    batch_size: int = 64
    epoch_size: int = 4
    """passes over the training rows between two validation checks"""
    tenacity: int = 5
    max_passes: int = 200
    lr: float = 1e-3
    validation_fraction: float = 0.05
    """held out of the training rows for early stopping when no validation set is given"""


SETTINGS = FitSettings()


class LogisticRegression:
    """Linear softmax classifiers, one per L2 value, trained together with Adam and early stopping.

    All L2 values share the seed, hence the initial weights and the batch orders, exactly as separate
    SentEval fits with the same seed would; training them as one stacked weight matrix costs one
    matrix product per batch instead of one per L2 value. Each keeps its own best copy and its own
    early-stopping count; training ends when every one has stopped. Plain numpy (float32): the
    gradient of the mean cross-entropy is ``(softmax - onehot) / batch``, then Adam with L2 added to
    the gradient, as ``torch.optim.Adam(weight_decay=l2)`` does.
    """

    def __init__(self, dim: int, n_classes: int, l2: Sequence[float], seed: int, settings: FitSettings = SETTINGS):
        generator = torch.Generator().manual_seed(seed)
        # nn.Linear's initialisation: kaiming-uniform with a = sqrt(5) is U(-1/sqrt(dim), 1/sqrt(dim)).
        bound = 1 / math.sqrt(dim)
        weight = torch.empty(n_classes, dim).uniform_(-bound, bound, generator=generator).numpy()
        bias = torch.empty(n_classes).uniform_(-bound, bound, generator=generator).numpy()
        self.l2 = np.asarray(l2, np.float32)
        # Parameters of all L2 values stacked: (len(l2), classes, dim + 1), the last column the bias.
        self.params = np.repeat(np.concatenate([weight, bias[:, None]], axis=1)[None], len(self.l2), axis=0)
        self.n_classes = n_classes
        self.rng = np.random.RandomState(seed)
        self.settings = settings

    def fit(self, train: Split, validation: Split | None = None) -> np.ndarray:
        """Train with early stopping on ``validation`` (else a random 5% of ``train``).

        Returns each L2 value's best validation accuracy (fraction); its best parameters are kept.
        """
        if validation is None:
            train, validation = self._hold_out(train)
        x = _with_bias_column(train[0])
        onehot = np.eye(self.n_classes, dtype=np.float32)[train[1]]
        adam = _Adam(self.params.shape, self.settings.lr)
        n_models = len(self.l2)
        best, best_params = np.full(n_models, -1.0), self.params.copy()
        misses, stopped = np.zeros(n_models, int), np.zeros(n_models, bool)
        passes = 0
        while passes <= self.settings.max_passes and not stopped.all():
            for _ in range(self.settings.epoch_size):
                self._one_pass(x, onehot, adam)
            passes += self.settings.epoch_size
            accuracy = self.scores(*validation)
            improved = ~stopped & (accuracy > best)
            best[improved], best_params[improved] = accuracy[improved], self.params[improved]
            stale = ~stopped & ~improved
            stopped |= stale & (misses >= self.settings.tenacity)
            misses[stale] += 1
        self.params = best_params
        return best

    def _hold_out(self, train: Split) -> tuple[Split, Split]:
        order = self.rng.permutation(len(train[0]))
        n_dev = max(1, int(self.settings.validation_fraction * len(order)))  # tiny sets: never an empty dev
        dev, rest = order[:n_dev], order[n_dev:]
        return (train[0][rest], train[1][rest]), (train[0][dev], train[1][dev])

    def _one_pass(self, x: np.ndarray, onehot: np.ndarray, adam: _Adam) -> None:
        order = self.rng.permutation(len(x))
        n_models, n_classes, width = self.params.shape
        for start in range(0, len(x), self.settings.batch_size):
            rows = order[start:start + self.settings.batch_size]
            xb = x[rows]
            logits = (xb @ self.params.reshape(-1, width).T).reshape(len(rows), n_models, n_classes)
            probabilities = _softmax(logits)
            delta = (probabilities - onehot[rows][:, None, :]) / len(rows)  # d(mean CE)/d(logits)
            gradient = (delta.reshape(len(rows), -1).T @ xb).reshape(self.params.shape)
            gradient += self.l2[:, None, None] * self.params
            adam.step(self.params, gradient)

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(rows, L2 values, classes)"""
        n_models, n_classes, width = self.params.shape
        flat = _with_bias_column(features) @ self.params.reshape(-1, width).T
        return flat.reshape(len(features), n_models, n_classes)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted class of each row for each L2 value: (rows, L2 values)."""
        return self.logits(features).argmax(axis=2)

    def scores(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Accuracy (fraction) of each L2 value."""
        return np.mean(self.predict(features) == labels[:, None], axis=0)


class _Adam:
    """torch.optim.Adam's update (betas 0.9, 0.999, eps 1e-8) on a numpy array, in place."""

    def __init__(self, shape: tuple[int, ...], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.m, self.v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0

    def step(self, params: np.ndarray, gradient: np.ndarray) -> None:
        beta1, beta2 = self.betas
        self.t += 1
        self.m *= beta1
        self.m += (1 - beta1) * gradient
        self.v *= beta2
        self.v += (1 - beta2) * gradient * gradient
        denominator = np.sqrt(self.v) / math.sqrt(1 - beta2**self.t) + self.eps
        params -= (self.lr / (1 - beta1**self.t)) * self.m / denominator


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _with_bias_column(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float32)
    return np.concatenate([features, np.ones((len(features), 1), np.float32)], axis=1)


_one_thread = threadpool_limits.wrap(limits=1)  # small problems; numbers independent of the core count


@_one_thread
def _grid_scores(train: Split, validation: Split, grid: Sequence[float], seed: int) -> np.ndarray:
    """Each L2 value's best validation accuracy (fraction) of an early-stopped fit on ``train``."""
    return LogisticRegression(train[0].shape[1], _n_classes(train, validation), grid, seed).fit(train, validation)


@_one_thread
def _refit_and_test(train: Split, test: Split, l2: float, seed: int) -> tuple[float, np.ndarray]:
    """Test accuracy x100 and predictions of the chosen L2 refitted on ``train`` (5% held out to stop)."""
    classifier = LogisticRegression(train[0].shape[1], _n_classes(train, test), [l2], seed)
    classifier.fit(train)
    predictions = classifier.predict(test[0])[:, 0]
    return folds.percent(predictions, test[1]), predictions


def _n_classes(*splits: Split) -> int:
    return int(max(int(labels.max()) for _, labels in splits if len(labels)) + 1)


@dataclass(frozen=True)
class EarlyStoppedLogistic:
    """This protocol's classifier as the fold procedures (``eval/transfer_folds.py``) use it."""

    grid: tuple[float, ...] = L2_GRID

    def grid_scores(self, train: Split, held_out: Split, seed: int) -> np.ndarray:
        return _grid_scores(train, held_out, self.grid, seed)

    def refit_and_test(self, train: Split, test: Split, value: float, seed: int) -> tuple[float, np.ndarray]:
        return _refit_and_test(train, test, value, seed)


def kfold_accuracy(data: Split, n_folds: int = 10, seed: int = SEED, n_jobs: int = 1,
                   grid: Sequence[float] = L2_GRID) -> ClassifierOutcome:
    """MR, CR, SUBJ, MPQA: outer folds for test, inner folds (same count) choose L2; outer folds in parallel."""
    return folds.kfold_accuracy(EarlyStoppedLogistic(tuple(grid)), data, n_folds, n_folds, seed, n_jobs)


def train_test_accuracy(train: Split, test: Split, n_folds: int = 10, seed: int = SEED, n_jobs: int = 1,
                        grid: Sequence[float] = L2_GRID) -> ClassifierOutcome:
    """TREC, MRPC: L2 by k-fold CV on train (folds in parallel), then a refit on train tested once."""
    return folds.train_test_accuracy(EarlyStoppedLogistic(tuple(grid)), train, test, n_folds, seed, n_jobs)


@_one_thread
def split_accuracy(train: Split, dev: Split, test: Split, seed: int = SEED,
                   grid: Sequence[float] = L2_GRID) -> ClassifierOutcome:
    """SST2: every L2 fitted on train, early-stopped and scored on dev; the best one is tested.

    A refit of the chosen L2 with the same seed and dev set would be the same model, so the fit
    from the grid is tested.
    """
    classifier = LogisticRegression(train[0].shape[1], _n_classes(train, dev, test), grid, seed)
    l2, dev_score = folds.choose(classifier.fit(train, dev)[None], grid)
    predictions = classifier.predict(test[0])[:, list(grid).index(l2)]
    return ClassifierOutcome(folds.percent(predictions, test[1]), dev_score, (l2,), predictions)


def length_order(texts: Sequence[str | Sequence[str]], labels: Sequence[int]) -> list[int]:
    """Row order SentEval evaluates in: by whitespace-token length (of each text of a pair), then label; stable."""
    def key(i: int) -> tuple:
        parts = (texts[i],) if isinstance(texts[i], str) else tuple(texts[i])
        return (*(len(part.split()) for part in parts), labels[i])
    return sorted(range(len(labels)), key=key)


# --- the seven tasks --------------------------------------------------------------------------------


def score_task(task: str, data: TransferData, table: EmbeddingTable, settings: TransferSettings) -> TransferTaskResult:
    """One task under this protocol, on already-encoded sentences (``table`` holds ``data.sentences()``)."""
    n_folds, seed, jobs = settings.n_folds, settings.seed, settings.n_jobs
    if task in data.single:
        rows = _length_sorted(data.single[task])
        outcome = kfold_accuracy(task_xy(rows, table), n_folds, seed, jobs)
        return task_result(task, outcome, f"senteval: {n_folds}-fold CV, L2 by inner {n_folds}-fold CV",
                           {"all": rows})
    if task == "MRPC":
        splits = {s: _length_sorted(rows) for s, rows in data.mrpc.items()}
        train, test = (mrpc_xy(splits[s], table, DEFAULT_MRPC_FEATURES) for s in ("train", "test"))
    else:
        splits = {s: _length_sorted(rows) for s, rows in data.splits[task].items()}
        train, test = task_xy(splits["train"], table), task_xy(splits["test"], table)
    if task == "SST2":
        outcome = split_accuracy(train, task_xy(splits["dev"], table), test, seed)
        return task_result(task, outcome, "senteval: train/dev/test, L2 and early stopping on dev", splits)
    outcome = train_test_accuracy(train, test, n_folds, seed, jobs)
    protocol = f"senteval: train/test, L2 by {n_folds}-fold CV on train"
    if task == "TREC":
        return task_result(task, outcome, protocol, splits)
    f1 = round(100 * float(f1_score(test[1], outcome.test_predictions)), 2)
    return task_result(task, outcome, protocol, splits, f1, {"features": DEFAULT_MRPC_FEATURES})


def _length_sorted(rows: Sequence[LabeledSentence | LabeledPair]) -> list:
    """Rows in SentEval's evaluation order: by token length (each sentence of a pair), then label."""
    texts = [(r.sentence1, r.sentence2) if isinstance(r, LabeledPair) else r.text for r in rows]
    return [rows[i] for i in length_order(texts, [r.label for r in rows])]

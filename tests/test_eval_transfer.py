"""eval.transfer: the three SentEval protocols on tiny separable data, MRPC features, a tiny full run."""
from __future__ import annotations

import numpy as np
import pytest

from eval.transfer import (
    C_GRID_INNER,
    C_GRID_KFOLD,
    TRANSFER_TASKS,
    TransferResults,
    TransferTaskResult,
    evaluate_transfer,
    kfold_accuracy,
    pair_features,
    select_c,
    split_accuracy,
    train_test_accuracy,
)


def _blobs(n_per_class: int, n_classes: int = 2, dim: int = 6, seed: int = 0, spread: float = 0.3):
    """Well separated Gaussian blobs: any sane logistic regression gets them all right."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=5.0, size=(n_classes, dim))
    features = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres])
    labels = np.repeat(np.arange(n_classes), n_per_class)
    order = rng.permutation(len(labels))
    return features[order], labels[order]


def test_kfold_accuracy_separates_blobs():
    features, labels = _blobs(15)
    outcome = kfold_accuracy(features, labels, n_folds=3, inner_folds=2)
    assert outcome.test_accuracy == 100.0 and outcome.dev_accuracy == 100.0
    assert len(outcome.chosen_c) == 3 and set(outcome.chosen_c) <= set(C_GRID_INNER)


def test_kfold_accuracy_is_chance_on_shuffled_labels():
    features, labels = _blobs(40, seed=1)
    shuffled = np.random.default_rng(2).permutation(labels)
    assert kfold_accuracy(features, shuffled, n_folds=3, inner_folds=2).test_accuracy < 75.0


def test_split_accuracy_chooses_c_on_dev():
    features, labels = _blobs(40, seed=3)
    train, dev, test = (features[:40], labels[:40]), (features[40:60], labels[40:60]), (features[60:], labels[60:])
    outcome = split_accuracy(train, dev, test)
    assert (outcome.test_accuracy, outcome.dev_accuracy) == (100.0, 100.0)
    assert outcome.chosen_c == (min(C_GRID_INNER),)  # all C tie on dev: the strongest regularisation wins


def test_train_test_accuracy_multiclass_returns_predictions():
    features, labels = _blobs(20, n_classes=6, seed=4)
    outcome = train_test_accuracy(features[:90], labels[:90], features[90:], labels[90:], inner_folds=3)
    assert outcome.test_accuracy == 100.0
    np.testing.assert_array_equal(outcome.test_predictions, labels[90:])
    assert outcome.chosen_c[0] in C_GRID_KFOLD


def test_select_c_matches_a_cold_start_grid_search():
    """Warm starts are a speed trick only: the chosen C and its score equal a plain grid search."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(5)
    labels = np.repeat([0, 1], 30)
    features = np.concatenate([labels[:, None] + rng.normal(size=(60, 1)), rng.normal(size=(60, 20))], axis=1)
    grid = (0.01, 0.1, 1.0, 10.0)
    folds = list(StratifiedKFold(n_splits=4, shuffle=True, random_state=1111).split(features, labels))
    expected = []
    for c in grid:
        scores = [
            LogisticRegression(C=c, max_iter=1000).fit(features[tr], labels[tr]).score(features[te], labels[te])
            for tr, te in folds
        ]
        expected.append(round(100 * float(np.mean(scores)), 2))
    best_c, score = select_c(features, labels, grid, n_folds=4)
    assert (best_c, score) == (grid[int(np.argmax(expected))], max(expected))


def test_parallel_folds_change_no_number():
    """Folds fitted two at a time give exactly the sequential outcome (nested CV and train/test)."""
    rng = np.random.default_rng(11)
    labels = np.repeat([0, 1, 2], 40)
    features = labels[:, None] * 0.4 + rng.normal(size=(120, 16))
    sequential = kfold_accuracy(features, labels, n_folds=4, inner_folds=3, n_jobs=1)
    parallel = kfold_accuracy(features, labels, n_folds=4, inner_folds=3, n_jobs=2)
    assert parallel == sequential and len(parallel.chosen_c) == 4
    split = (features[:90], labels[:90], features[90:], labels[90:])
    sequential = train_test_accuracy(*split, inner_folds=3, n_jobs=1)
    parallel = train_test_accuracy(*split, inner_folds=3, n_jobs=2)
    assert parallel.test_accuracy == sequential.test_accuracy and parallel.chosen_c == sequential.chosen_c
    np.testing.assert_array_equal(parallel.test_predictions, sequential.test_predictions)


def test_pair_features_layouts():
    u, v = np.array([[1.0, 2.0]]), np.array([[3.0, -1.0]])
    np.testing.assert_array_equal(pair_features(u, v, "u,v,|u-v|,u*v"), [[1, 2, 3, -1, 2, 3, 3, -2]])
    np.testing.assert_array_equal(pair_features(u, v, "|u-v|,u*v"), [[2, 3, 3, -2]])
    with pytest.raises(ValueError, match="unknown MRPC features"):
        pair_features(u, v, "u,v")


def test_average_needs_all_seven_tasks():
    def task(name, accuracy):
        return TransferTaskResult(name, accuracy, accuracy, "p", {"all": 1}, (1.0,))

    full = TransferResults({t: task(t, 80.0 + i) for i, t in enumerate(TRANSFER_TASKS)}, "model")
    assert full.average == 83.0
    assert TransferResults({"MR": task("MR", 80.0)}, "model").average is None


def test_evaluate_transfer_runs_every_task_on_tiny_files(tiny_st, tiny_senteval_dir):
    results = evaluate_transfer(
        tiny_st, tiny_senteval_dir, pooler="mean", n_folds=2, inner_folds=2, show_progress=False, n_jobs=1
    )
    assert list(results.tasks) == list(TRANSFER_TASKS)
    assert results.tasks["MR"].n_examples == {"all": 20}
    assert results.tasks["SST2"].n_examples == {"train": 20, "dev": 20, "test": 20}
    assert results.tasks["MRPC"].f1 is not None and results.tasks["MRPC"].notes["features"] == "u,v,|u-v|,u*v"
    assert all(0.0 <= r.accuracy <= 100.0 for r in results.tasks.values())
    payload = results.to_dict()
    assert payload["average"] == results.average and payload["tasks"]["TREC"]["n_examples"]["test"] == 24


def test_unknown_transfer_task_is_rejected(tiny_st, tiny_senteval_dir):
    with pytest.raises(ValueError, match="unknown transfer task"):
        evaluate_transfer(tiny_st, tiny_senteval_dir, tasks=("SICKEntailment",), show_progress=False)

"""eval.transfer: both protocols (senteval: PyTorch-style logistic regression; fast: scikit-learn) and
the fold procedures they share, on tiny constructed data with hand-computed expectations; MRPC
features; a tiny full run."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eval import transfer_senteval as senteval
from eval.transfer import TRANSFER_TASKS, TransferResults, TransferSettings, TransferTaskResult, evaluate_transfer
from eval.transfer_fast import (
    C_GRID_INNER,
    C_GRID_KFOLD,
    kfold_accuracy,
    select_c,
    split_accuracy,
    train_test_accuracy,
)
from eval.transfer_folds import choose
from eval.transfer_tasks import pair_features


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
    assert len(outcome.chosen_regularisation) == 3 and set(outcome.chosen_regularisation) <= set(C_GRID_INNER)


def test_kfold_accuracy_is_chance_on_shuffled_labels():
    features, labels = _blobs(40, seed=1)
    shuffled = np.random.default_rng(2).permutation(labels)
    assert kfold_accuracy(features, shuffled, n_folds=3, inner_folds=2).test_accuracy < 75.0


def test_split_accuracy_chooses_c_on_dev():
    features, labels = _blobs(40, seed=3)
    train, dev, test = (features[:40], labels[:40]), (features[40:60], labels[40:60]), (features[60:], labels[60:])
    outcome = split_accuracy(train, dev, test)
    assert (outcome.test_accuracy, outcome.dev_accuracy) == (100.0, 100.0)
    assert outcome.chosen_regularisation == (min(C_GRID_INNER),)  # all C tie on dev: the strongest regularisation wins


def test_train_test_accuracy_multiclass_returns_predictions():
    features, labels = _blobs(20, n_classes=6, seed=4)
    outcome = train_test_accuracy(features[:90], labels[:90], features[90:], labels[90:], inner_folds=3)
    assert outcome.test_accuracy == 100.0
    np.testing.assert_array_equal(outcome.test_predictions, labels[90:])
    assert outcome.chosen_regularisation[0] in C_GRID_KFOLD


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


@pytest.mark.slow  # joblib worker processes
def test_parallel_folds_change_no_number():
    """Folds fitted two at a time give exactly the sequential outcome (nested CV and train/test)."""
    rng = np.random.default_rng(11)
    labels = np.repeat([0, 1, 2], 40)
    features = labels[:, None] * 0.4 + rng.normal(size=(120, 16))
    sequential = kfold_accuracy(features, labels, n_folds=4, inner_folds=3, n_jobs=1)
    parallel = kfold_accuracy(features, labels, n_folds=4, inner_folds=3, n_jobs=2)
    assert parallel == sequential and len(parallel.chosen_regularisation) == 4
    split = (features[:90], labels[:90], features[90:], labels[90:])
    sequential = train_test_accuracy(*split, inner_folds=3, n_jobs=1)
    parallel = train_test_accuracy(*split, inner_folds=3, n_jobs=2)
    assert parallel.test_accuracy == sequential.test_accuracy and parallel.chosen_regularisation == sequential.chosen_regularisation
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


@pytest.mark.parametrize("protocol, features", [("senteval", "|u-v|,u*v"), ("fast", "u,v,|u-v|,u*v")])
def test_evaluate_transfer_runs_every_task_on_tiny_files(tiny_st, tiny_senteval_dir, protocol, features):
    settings = TransferSettings(protocol, n_folds=2, inner_folds=2, n_jobs=1)
    results = evaluate_transfer(tiny_st, tiny_senteval_dir, pooler="mean", settings=settings, show_progress=False)
    assert list(results.tasks) == list(TRANSFER_TASKS) and results.protocol == protocol
    assert results.tasks["MR"].n_examples == {"all": 20}
    assert results.tasks["SST2"].n_examples == {"train": 20, "dev": 20, "test": 20}
    assert results.tasks["MRPC"].f1 is not None and results.tasks["MRPC"].notes["features"] == features
    assert all(r.protocol.startswith(protocol) for r in results.tasks.values())
    payload = results.to_dict()
    assert payload["protocol"] == protocol and payload["tasks"]["TREC"]["n_examples"]["test"] == 24


def test_senteval_protocol_refuses_other_mrpc_features():
    with pytest.raises(ValueError, match="senteval protocol uses MRPC features"):
        TransferSettings("senteval", mrpc_features="u,v,|u-v|,u*v")
    with pytest.raises(ValueError, match="unknown transfer protocol"):
        TransferSettings("sklearn")


# --- the senteval protocol ---------------------------------------------------------------------------


def test_senteval_initialisation_is_nn_linear_under_the_seed():
    torch.manual_seed(1111)
    reference = torch.nn.Linear(5, 3)
    params = senteval.LogisticRegression(5, 3, [1e-5, 1e-2], seed=1111).params
    expected = np.concatenate([reference.weight.detach().numpy(), reference.bias.detach().numpy()[:, None]], axis=1)
    for model in params:
        np.testing.assert_array_equal(model, expected)


def test_senteval_pass_matches_torch_adam_with_weight_decay():
    """One pass of mini-batches equals nn.Linear + cross-entropy + torch.optim.Adam(weight_decay=l2)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(150, 4)).astype(np.float32), rng.integers(0, 3, 150)
    l2 = (1e-5, 1e-2)
    ours = senteval.LogisticRegression(4, 3, l2, seed=7)
    adam = senteval._Adam(ours.params.shape, 1e-3)
    ours._one_pass(senteval._with_bias_column(x), np.eye(3, dtype=np.float32)[y], adam)
    order = np.random.RandomState(7).permutation(150)  # the batch order: numpy's RandomState(seed)
    for index, weight_decay in enumerate(l2):
        torch.manual_seed(7)
        layer = torch.nn.Linear(4, 3)
        optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3, weight_decay=weight_decay)
        for start in range(0, 150, 64):
            rows = order[start:start + 64]
            loss = torch.nn.functional.cross_entropy(layer(torch.from_numpy(x[rows])), torch.from_numpy(y[rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        expected = torch.cat([layer.weight, layer.bias[:, None]], dim=1).detach().numpy()
        np.testing.assert_allclose(ours.params[index], expected, atol=1e-6)


def test_senteval_separable_task_is_perfect_and_ties_go_to_the_smallest_l2():
    """Separable blobs (enough rows for early stopping to see progress): every fold 100%; every L2
    ties at 100 on validation, so the first (smallest) is chosen."""
    outcome = senteval.kfold_accuracy(_blobs(300, dim=16), n_folds=3, n_jobs=1)
    assert (outcome.test_accuracy, outcome.dev_accuracy) == (100.0, 100.0)
    assert outcome.chosen_regularisation == (1e-5, 1e-5, 1e-5)
    features, labels = _blobs(300, dim=16)
    split = senteval.split_accuracy(*((features[a:b], labels[a:b]) for a, b in ((0, 400), (400, 500), (500, 600))))
    assert (split.test_accuracy, split.dev_accuracy, split.chosen_regularisation) == (100.0, 100.0, (1e-5,))
    features, labels = _blobs(100, n_classes=6, dim=16, seed=4)
    trec_like = senteval.train_test_accuracy((features[:450], labels[:450]), (features[450:], labels[450:]), 3)
    assert trec_like.test_accuracy == 100.0 and trec_like.chosen_regularisation == (1e-5,)
    np.testing.assert_array_equal(trec_like.test_predictions, labels[450:])


def test_the_choice_rounds_fold_means_then_takes_the_first_best():
    grid = (1e-5, 1e-4, 1e-3, 1e-2)
    fold_scores = np.array([[0.90, 0.90, 0.95, 0.80],
                            [0.90, 1.00, 0.95, 0.80]])  # means x100: 90, 95, 95, 80
    assert choose(fold_scores, grid) == (1e-4, 95.0)
    nearly = np.array([[0.95001, 0.95004, 0.9, 0.9]])  # 95.00 and 95.00 after rounding: the first wins
    assert choose(nearly, grid) == (1e-5, 95.0)


def test_senteval_strong_l2_wins_when_weights_must_stay_small():
    """Train labels follow a noise feature that the dev set contradicts: only heavy decay keeps the
    classifier near the true signal, so the largest L2 has the best dev score."""
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 200)
    signal = (2 * y - 1) * 0.2
    train_x = np.stack([signal + 0.05 * rng.normal(size=400), 20 * (2 * y - 1) + rng.normal(size=400)], 1)
    dev_x = np.stack([signal + 0.05 * rng.normal(size=400), -20 * (2 * y - 1) + rng.normal(size=400)], 1)
    outcome = senteval.split_accuracy((train_x, y), (dev_x, y), (dev_x, y), seed=1)
    scores = senteval.LogisticRegression(2, 2, senteval.L2_GRID, 1).fit((train_x, y), (dev_x, y))
    assert outcome.chosen_regularisation == (senteval.L2_GRID[int(np.argmax(np.round(100 * scores, 2)))],)


def test_senteval_length_order_sorts_by_tokens_then_label_stably():
    texts = ["a b c", "a", "a b", "x", "", "y"]
    labels = [0, 1, 0, 0, 1, 1]
    # (tokens, label): (3,0) (1,1) (2,0) (1,0) (0,1) (1,1) -> "" ; "x" ; "a", "y" (tie kept in input order) ; ...
    assert senteval.length_order(texts, labels) == [4, 3, 1, 5, 2, 0]
    pairs = [("a b", "c"), ("a", "b c d"), ("a", "b"), ("a", "b")]
    assert senteval.length_order(pairs, [0, 0, 1, 0]) == [3, 2, 1, 0]


@pytest.mark.slow  # joblib worker processes
def test_senteval_parallel_folds_change_no_number():
    rng = np.random.default_rng(11)
    labels = np.repeat([0, 1, 2], 40)
    data = (labels[:, None] * 0.4 + rng.normal(size=(120, 16)), labels)
    assert senteval.kfold_accuracy(data, 3, n_jobs=1) == senteval.kfold_accuracy(data, 3, n_jobs=2)


def test_unknown_transfer_task_is_rejected(tiny_st, tiny_senteval_dir):
    with pytest.raises(ValueError, match="unknown transfer task"):
        evaluate_transfer(tiny_st, tiny_senteval_dir, tasks=("SICKEntailment",), show_progress=False)


def test_an_interrupted_transfer_run_keeps_its_finished_tasks_and_scores_only_the_rest(
        tiny_st, tiny_senteval_dir, tmp_path, monkeypatch, capsys):
    import eval.transfer as transfer

    settings = TransferSettings("fast", n_folds=2, inner_folds=2, n_jobs=1)
    straight = evaluate_transfer(tiny_st, tiny_senteval_dir, pooler="mean", settings=settings, show_progress=False)
    partial = tmp_path / "r.transfer-partial.json"
    original, scored = transfer.score_task, []

    def stop_at_sst2(task, *args):
        if task == "SST2":
            raise KeyboardInterrupt
        scored.append(task)
        return original(task, *args)

    monkeypatch.setattr(transfer, "score_task", stop_at_sst2)
    with pytest.raises(KeyboardInterrupt):
        evaluate_transfer(tiny_st, tiny_senteval_dir, pooler="mean", settings=settings, partial=partial)
    assert scored == ["MR", "CR", "SUBJ", "MPQA"]
    lines = capsys.readouterr().out.splitlines()  # one line per finished task, as it finishes
    assert [line.split(":")[0] for line in lines if line.endswith(" min")] == ["MR", "CR", "SUBJ", "MPQA"]

    monkeypatch.setattr(transfer, "score_task", lambda task, *args: scored.append(task) or original(task, *args))
    encoded = []  # each task encodes its own sentences: kept tasks encode nothing
    build = transfer.EmbeddingTable.build
    monkeypatch.setattr(transfer.EmbeddingTable, "build",
                        lambda model, sentences, *a: encoded.append(len(sentences)) or build(model, sentences, *a))
    scored.clear()
    resumed = evaluate_transfer(tiny_st, tiny_senteval_dir, pooler="mean", settings=settings, partial=partial)
    assert scored == ["SST2", "TREC", "MRPC"] and resumed == straight
    assert encoded == [len(transfer.load_transfer_data([t], tiny_senteval_dir).sentences()) for t in scored]
    other = TransferSettings("fast", n_folds=3, inner_folds=2, n_jobs=1)  # other settings: nothing is kept
    scored.clear()
    evaluate_transfer(tiny_st, tiny_senteval_dir, pooler="mean", settings=other, partial=partial, show_progress=False)
    assert scored == list(TRANSFER_TASKS)

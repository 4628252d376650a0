"""eval.sts: every aggregation against scipy by hand, one encoding pass, STS-B dev, averages."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from eval.data import STSPair, load_sick, load_sts_year, load_stsb
from eval.encode import EmbeddingTable
from eval.sts import (
    STS_TASKS,
    STSDevEvaluator,
    STSResults,
    STSTaskResult,
    evaluate_sts,
    pair_cosines,
    score_sts_task,
)


def _fake_year(rng: np.random.Generator, sizes: dict[str, int], dim: int = 8):
    """Pairs with random gold scores and a table of random embeddings for their sentences."""
    pairs, rows = {}, {}
    for subset, size in sizes.items():
        pairs[subset] = [
            STSPair(f"fake:{subset}:{i}", f"{subset} a {i}", f"{subset} b {i}", float(rng.uniform(0, 5)), subset)
            for i in range(size)
        ]
        for p in pairs[subset]:
            rows[p.sentence1], rows[p.sentence2] = rng.normal(size=dim), rng.normal(size=dim)
    table = EmbeddingTable({s: i for i, s in enumerate(rows)}, np.array(list(rows.values()), dtype=np.float32))
    return pairs, table


def _cosine(u, v) -> float:
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def _by_hand(pairs, table):
    """Per subset: (predictions, gold) with cosines computed one pair at a time."""
    out = {}
    for subset, rows in pairs.items():
        predicted = [_cosine(table[[p.sentence1]][0], table[[p.sentence2]][0]) for p in rows]
        out[subset] = (np.array(predicted), np.array([p.score for p in rows]))
    return out


@pytest.fixture(scope="module")
def fake_year():
    return _fake_year(np.random.default_rng(0), {"alpha": 40, "beta": 15, "gamma": 25})


def test_all_is_one_spearman_over_the_concatenation(fake_year):
    pairs, table = fake_year
    by_hand = _by_hand(pairs, table)
    predicted, gold = (np.concatenate([part[k] for part in by_hand.values()]) for k in (0, 1))
    expected = spearmanr(predicted, gold)[0]
    result = score_sts_task("STS12", pairs, table, "all")
    assert result.spearman == pytest.approx(round(100 * expected, 2))
    assert (result.aggregation, result.n_pairs) == ("all", 80)


def test_wmean_weights_subsets_by_size(fake_year):
    pairs, table = fake_year
    per_subset = {s: spearmanr(p, g)[0] for s, (p, g) in _by_hand(pairs, table).items()}
    expected = (40 * per_subset["alpha"] + 15 * per_subset["beta"] + 25 * per_subset["gamma"]) / 80
    assert score_sts_task("STS12", pairs, table, "wmean").spearman == pytest.approx(round(100 * expected, 2))


def test_mean_is_the_plain_mean_of_subsets(fake_year):
    pairs, table = fake_year
    per_subset = {s: spearmanr(p, g)[0] for s, (p, g) in _by_hand(pairs, table).items()}
    expected = np.mean(list(per_subset.values()))
    result = score_sts_task("STS12", pairs, table, "mean")
    assert result.spearman == pytest.approx(round(100 * expected, 2))
    assert [(s.subset, s.n_pairs, s.spearman) for s in result.subsets] == [
        (name, len(pairs[name]), round(100 * per_subset[name], 2)) for name in ("alpha", "beta", "gamma")
    ]


def test_every_result_keeps_all_three_aggregations(fake_year):
    pairs, table = fake_year
    results = {a: score_sts_task("STS12", pairs, table, a) for a in ("all", "wmean", "mean")}
    for aggregation, result in results.items():
        assert result.aggregates == results["all"].aggregates
        assert result.spearman == result.aggregates[aggregation]
    assert len(set(results["all"].aggregates.values())) == 3  # the modes genuinely differ here


def test_single_split_tasks_report_the_test_split(fake_year):
    pairs, table = fake_year
    result = score_sts_task("STSBenchmark", {"test": pairs["alpha"]}, table)
    (predicted, gold) = _by_hand({"test": pairs["alpha"]}, table)["test"]
    assert result.spearman == pytest.approx(round(100 * spearmanr(predicted, gold)[0], 2))
    assert (result.aggregation, result.aggregates) == ("test", {})


def test_unknown_aggregation_is_rejected(fake_year):
    pairs, table = fake_year
    with pytest.raises(ValueError, match="unknown aggregation 'median'"):
        score_sts_task("STS12", pairs, table, "median")


def test_pair_cosines_of_zero_vectors_are_zero():
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(pair_cosines(a, np.array([[2.0, 0.0], [1.0, 1.0]])), [1.0, 0.0])


def test_average_needs_all_seven_tasks():
    def task(name, value):
        return STSTaskResult(name, value, 10, "all", ())

    scores = dict(zip(STS_TASKS, [70.0, 80.0, 75.0, 85.0, 79.0, 82.0, 77.0]))
    full = STSResults({name: task(name, v) for name, v in scores.items()}, "all", "model")
    assert full.average == pytest.approx(round(sum(scores.values()) / 7, 2))
    partial = STSResults({"STS12": task("STS12", 70.0)}, "all", "model")
    assert partial.average is None and partial.to_dict()["average"] is None


def test_evaluate_sts_on_tiny_files_matches_a_manual_run(tiny_st, tiny_senteval_dir, monkeypatch):
    import eval.sts as sts_module

    tables: list[EmbeddingTable] = []
    real_build = sts_module.EmbeddingTable.build.__func__

    def recording_build(cls, *args, **kwargs):
        tables.append(real_build(cls, *args, **kwargs))
        return tables[-1]

    monkeypatch.setattr(sts_module.EmbeddingTable, "build", classmethod(recording_build))
    results = evaluate_sts(tiny_st, tiny_senteval_dir, pooler="cls_before_pooler", show_progress=False)
    assert len(tables) == 1  # one encoding pass for all seven tasks and STS-B dev
    (table,) = tables

    # Scoring by hand from the run's own vectors (encoding itself is tested in test_eval_encode.py).
    year = load_sts_year("STS13", tiny_senteval_dir)
    by_hand = _by_hand(year, table)
    predicted, gold = (np.concatenate([part[k] for part in by_hand.values()]) for k in (0, 1))
    assert results.tasks["STS13"].n_pairs == 36  # 3 subsets x 12 scored pairs; unscored lines skipped
    assert results.spearman("STS13") == pytest.approx(round(100 * spearmanr(predicted, gold)[0], 2))
    dev_predicted, dev_gold = _by_hand({"dev": load_stsb("dev", tiny_senteval_dir)}, table)["dev"]
    assert results.stsb_dev == pytest.approx(round(100 * spearmanr(dev_predicted, dev_gold)[0], 2))
    assert set(results.tasks) == set(STS_TASKS) and results.average is not None
    assert results.to_dict()["pooler"] == "cls_before_pooler"


def test_each_distinct_sentence_is_encoded_once_per_run(tiny_st, tiny_senteval_dir, encoded_sentences):
    seen = encoded_sentences
    evaluate_sts(tiny_st, tiny_senteval_dir, tasks=("STS12", "STSBenchmark", "SICKRelatedness"), show_progress=False)
    assert seen and max(seen.values()) == 1
    expected = {s for p in load_sick("test", tiny_senteval_dir) for s in (p.sentence1, p.sentence2)}
    assert expected <= set(seen)


def test_sts_dev_evaluator_returns_unrounded_stsb_dev(tiny_st, tiny_senteval_dir):
    evaluator = STSDevEvaluator(tiny_senteval_dir, pooler="mean")
    score = evaluator(tiny_st)
    dev = load_stsb("dev", tiny_senteval_dir)
    table = EmbeddingTable.build(tiny_st, evaluator.sentences, pooler="mean", show_progress=False)
    predicted, gold = _by_hand({"dev": dev}, table)["dev"]
    assert score == pytest.approx(100 * spearmanr(predicted, gold)[0], abs=1e-9)
    assert evaluator(tiny_st) == score  # deterministic: dropout is off during evaluation

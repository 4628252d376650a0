"""STS evaluation with the SentEval protocol used by SimCSE, MCSE and KDMCSE.

A model's score on a pair is the cosine of the two sentence embeddings; a task's score is the
Spearman correlation (x100, 2 decimals) of those cosines with the gold scores.

* STS12-16 have several subsets. How the subsets become one number matters (more than a point on
  the average), so it is explicit:

  - ``all``: concatenate the predictions and gold scores of every subset, one Spearman (SimCSE's
    modified SentEval; the default of the papers' tables);
  - ``wmean``: mean of the subset Spearmans weighted by subset size;
  - ``mean``: plain mean of the subset Spearmans.

  Every result also keeps all three and the per-subset numbers.
* STS-B and SICK-R: Spearman on the test split. STS-B dev is reported beside them (it is the
  checkpoint-selection set) but is not part of the 7-task average.

Every sentence of the requested tasks is encoded in one pass (each distinct sentence once), then
the tasks are scored from that table; ``score_sts_task`` needs only embeddings, so it is testable
without a model.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer

from distill.config import RunConfig
from kdmcse_base.data_files import DataFormatError, resolve_data_dir
from eval.choices import AGGREGATIONS, Aggregation  # noqa: F401  (callers import them from here too)
from eval.data import STS_YEAR_SUBSETS, STSPair, load_sick, load_sts_year, load_stsb

from .encode import DEFAULT_BF16, EmbeddingTable, Pooler, load_model

STS_YEARS: tuple[str, ...] = tuple(STS_YEAR_SUBSETS)
STS_TASKS: tuple[str, ...] = (*STS_YEARS, "STSBenchmark", "SICKRelatedness")
"""The seven tasks of the papers' STS table, in column order."""

TEST_SPLIT = "test"


@dataclass(frozen=True)
class SubsetScore:
    """Spearman x100 of one subset (an STS year's source, or a split of STS-B / SICK-R)."""

    subset: str
    n_pairs: int
    spearman: float


@dataclass(frozen=True)
class STSTaskResult:
    """One task's headline Spearman x100 plus what it was computed from."""

    task: str
    spearman: float
    n_pairs: int
    aggregation: str
    """``all`` / ``wmean`` / ``mean`` for STS12-16; ``test`` for STS-B and SICK-R."""
    subsets: tuple[SubsetScore, ...]
    aggregates: dict[str, float] = field(default_factory=dict)
    """All three aggregations (STS12-16 only), so a table in another convention needs no rerun."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class STSResults:
    """Results of one STS run: per task, the 7-task average, and STS-B dev."""

    tasks: dict[str, STSTaskResult]
    aggregation: str
    pooler: str
    stsb_dev: float | None = None

    @property
    def average(self) -> float | None:
        """Mean of the seven tasks' (rounded) Spearmans, as the papers compute it; None if any is missing."""
        if any(task not in self.tasks for task in STS_TASKS):
            return None
        return round(float(np.mean([self.tasks[task].spearman for task in STS_TASKS])), 2)

    def spearman(self, task: str) -> float:
        return self.tasks[task].spearman

    def to_dict(self) -> dict:
        return {
            "aggregation": self.aggregation,
            "pooler": self.pooler,
            "average": self.average,
            "stsb_dev": self.stsb_dev,
            "tasks": {name: result.to_dict() for name, result in self.tasks.items()},
        }


def spearman_x100(predictions: np.ndarray, gold: np.ndarray) -> float:
    """Spearman x100, unrounded (ties get average ranks, as in SentEval's scipy call)."""
    return float(spearmanr(predictions, gold)[0]) * 100.0


def pair_cosines(embeddings1: np.ndarray, embeddings2: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64; a zero vector gets cosine 0 rather than NaN."""
    a, b = np.asarray(embeddings1, dtype=np.float64), np.asarray(embeddings2, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def load_sts_task(task: str, data_dir: str | Path | None = None) -> dict[str, list[STSPair]]:
    """The scored pairs of one task as ``{subset: pairs}``; STS-B and SICK-R give ``{"test": pairs}``."""
    if task in STS_YEAR_SUBSETS:
        return load_sts_year(task, data_dir)
    if task == "STSBenchmark":
        return {TEST_SPLIT: load_stsb("test", data_dir)}
    if task == "SICKRelatedness":
        return {TEST_SPLIT: load_sick("test", data_dir)}
    raise ValueError(f"unknown STS task {task!r}; known: {', '.join(STS_TASKS)}")


def score_sts_task(
    task: str,
    pairs_by_subset: Mapping[str, Sequence[STSPair]],
    embeddings: EmbeddingTable,
    aggregation: Aggregation = "all",
) -> STSTaskResult:
    """Score one task from precomputed embeddings; ``aggregation`` applies to multi-subset tasks."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
    predictions, gold = {}, {}
    for subset, pairs in pairs_by_subset.items():
        predictions[subset] = pair_cosines(
            embeddings[[p.sentence1 for p in pairs]], embeddings[[p.sentence2 for p in pairs]]
        )
        gold[subset] = np.array([p.score for p in pairs], dtype=np.float64)
    per_subset = {subset: spearman_x100(predictions[subset], gold[subset]) for subset in predictions}
    subsets = tuple(SubsetScore(s, len(gold[s]), round(per_subset[s], 2)) for s in predictions)
    n_pairs = sum(len(g) for g in gold.values())

    if task not in STS_YEAR_SUBSETS:
        if len(subsets) != 1:
            raise ValueError(f"{task} is scored on one split, got {list(pairs_by_subset)}")
        return STSTaskResult(task, subsets[0].spearman, n_pairs, subsets[0].subset, subsets)
    aggregates = _aggregate(predictions, gold, per_subset)
    return STSTaskResult(task, aggregates[aggregation], n_pairs, aggregation, subsets, aggregates)


def _aggregate(
    predictions: Mapping[str, np.ndarray], gold: Mapping[str, np.ndarray], per_subset: Mapping[str, float]
) -> dict[str, float]:
    sizes = np.array([len(gold[s]) for s in per_subset], dtype=np.float64)
    values = np.array(list(per_subset.values()))
    concatenated = spearman_x100(np.concatenate(list(predictions.values())), np.concatenate(list(gold.values())))
    return {
        "all": round(concatenated, 2),
        "wmean": round(float(np.sum(values * sizes) / sizes.sum()), 2),
        "mean": round(float(values.mean()), 2),
    }


def evaluate_sts(
    model: str | Path | SentenceTransformer,
    data_dir: str | Path | None = None,
    tasks: Sequence[str] = STS_TASKS,
    pooler: Pooler = "model",
    aggregation: Aggregation = "all",
    batch_size: int = 128,
    bf16: bool = DEFAULT_BF16,
    include_stsb_dev: bool = True,
    show_progress: bool = True,
) -> STSResults:
    """Run the STS tasks on a model (path, hub id, offline alias or object) with one encoding pass."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
    model = load_model(model)
    pairs = {task: load_sts_task(task, data_dir) for task in tasks}
    dev_pairs = load_stsb("dev", data_dir) if include_stsb_dev else []

    every_pair = [p for by_subset in pairs.values() for subset in by_subset.values() for p in subset] + dev_pairs
    sentences = [s for p in every_pair for s in (p.sentence1, p.sentence2)]
    table = EmbeddingTable.build(model, sentences, pooler, batch_size, bf16, show_progress)

    results = {task: score_sts_task(task, pairs[task], table, aggregation) for task in tasks}
    dev = score_sts_task("STSBenchmark", {"dev": dev_pairs}, table).spearman if dev_pairs else None
    return STSResults(results, aggregation, pooler, dev)


class STSDevEvaluator:
    """STS-B dev Spearman x100 of a model, for checkpoint selection during training.

    The dev pairs are read once at construction; each call only encodes (1500 pairs, about 2,900
    distinct sentences) and returns the unrounded Spearman x100, so near-ties still order.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        pooler: Pooler = "model",
        batch_size: int = 128,
        bf16: bool = DEFAULT_BF16,
    ):
        self.pairs = load_stsb("dev", data_dir)
        self.pooler = pooler
        self.batch_size = batch_size
        self.bf16 = bf16
        self.sentences = list(dict.fromkeys(s for p in self.pairs for s in (p.sentence1, p.sentence2)))
        self.gold = np.array([p.score for p in self.pairs], dtype=np.float64)

    def __call__(self, model: SentenceTransformer) -> float:
        table = EmbeddingTable.build(model, self.sentences, self.pooler, self.batch_size, self.bf16, False)
        cosines = pair_cosines(table[[p.sentence1 for p in self.pairs]], table[[p.sentence2 for p in self.pairs]])
        return spearman_x100(cosines, self.gold)


def stsb_dev_evaluator(cfg: RunConfig) -> STSDevEvaluator:
    """The dev evaluator a training run selects its checkpoint with: STS-B dev, the model's own pooling.

    STS-B dev is read from ``eval_data_dir`` when set, so training on one's own files needs no
    SentEval copy beside them; otherwise from the data directory, resolved as for the corpora.
    """
    if cfg.eval_data_dir:
        data_dir = resolve_data_dir(cfg.eval_data_dir, key="eval_data_dir (--eval-data-dir)")
        if not (data_dir / "senteval").is_dir() and (data_dir / "STS").is_dir():
            raise DataFormatError(cfg.eval_data_dir, None, "this is SentEval's folder itself; pass the folder that "
                                  f"holds senteval/ (eval_data_dir={Path(cfg.eval_data_dir).parent})")
    else:
        data_dir = resolve_data_dir(cfg.data_dir)
    return STSDevEvaluator(data_dir=data_dir, pooler="model", batch_size=cfg.train.eval_batch_size)

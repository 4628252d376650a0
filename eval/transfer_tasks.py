"""What a transfer task is, whichever protocol scores it: the seven tasks, their rows and features,
the settings of a run and its results. ``eval/transfer.py`` runs them; ``eval/transfer_senteval.py``
and ``eval/transfer_fast.py`` are the two protocols (see ``eval/transfer.py``)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from eval.choices import DEFAULT_PROTOCOL, PROTOCOLS, Protocol  # noqa: F401  (callers import them from here too)
from eval.data import (
    BINARY_TASK_FILES,
    LabeledPair,
    LabeledSentence,
    load_binary_task,
    load_mrpc,
    load_sst2,
    load_trec,
)

from .encode import EmbeddingTable
from .transfer_folds import ClassifierOutcome

TRANSFER_TASKS: tuple[str, ...] = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")
"""The seven tasks of the papers' transfer table, in column order."""

MRPCFeatures = Literal["|u-v|,u*v", "u,v,|u-v|,u*v"]
MRPC_FEATURE_CHOICES: tuple[str, ...] = get_args(MRPCFeatures)
DEFAULT_MRPC_FEATURES: MRPCFeatures = "|u-v|,u*v"
FAST_MRPC_FEATURES: MRPCFeatures = "u,v,|u-v|,u*v"
"""The ``fast`` protocol's MRPC default: the four-part feature this project used before SentEval's."""

SEED = 1111  # SentEval's default seed: fold assignment and solver randomness


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


def task_result(task: str, outcome: ClassifierOutcome, protocol: str, splits: dict[str, Sequence],
                f1: float | None = None, notes: dict[str, str] | None = None) -> TransferTaskResult:
    """A task's result from its protocol's outcome; ``splits``: the rows of each split it scored."""
    sizes = {name: len(rows) for name, rows in splits.items()}
    return TransferTaskResult(task, outcome.test_accuracy, outcome.dev_accuracy, protocol, sizes,
                              outcome.chosen_regularisation, f1, notes or {})


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


def task_xy(rows: Sequence[LabeledSentence], table: EmbeddingTable) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a task's rows, from the encoded table."""
    return table[[r.text for r in rows]], np.array([r.label for r in rows])


def mrpc_xy(rows: Sequence[LabeledPair], table: EmbeddingTable, kind: MRPCFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Pair features of ``kind`` and labels of MRPC rows, from the encoded table."""
    u, v = table[[p.sentence1 for p in rows]], table[[p.sentence2 for p in rows]]
    return pair_features(u, v, kind), np.array([p.label for p in rows])


def pair_features(u: np.ndarray, v: np.ndarray, kind: MRPCFeatures = DEFAULT_MRPC_FEATURES) -> np.ndarray:
    """Features of a sentence pair from its two embeddings: ``|u-v|,u*v`` is SentEval's; ``u,v,|u-v|,u*v``
    is the fast protocol's earlier default (``eval/transfer.py``)."""
    if kind == "u,v,|u-v|,u*v":
        return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)
    if kind == "|u-v|,u*v":
        return np.concatenate([np.abs(u - v), u * v], axis=1)
    raise ValueError(f"unknown MRPC features {kind!r}; choose one of {', '.join(MRPC_FEATURE_CHOICES)}")

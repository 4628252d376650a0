"""Plain typed records of the evaluation sets (STS pairs, transfer sentences and pairs)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class STSPair:
    """A gold-scored sentence pair of an STS set (STS12-16, STS-B, SICK-R)."""

    row_id: str
    sentence1: str
    sentence2: str
    score: float
    subset: str


@dataclass(frozen=True)
class LabeledSentence:
    """One sentence of a single-sentence transfer task (MR, CR, SUBJ, MPQA, SST2, TREC)."""

    row_id: str
    text: str
    label: int


@dataclass(frozen=True)
class LabeledPair:
    """One sentence pair of a pair-classification transfer task (MRPC)."""

    row_id: str
    sentence1: str
    sentence2: str
    label: int

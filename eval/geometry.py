r"""Alignment and uniformity of a sentence encoder's embedding space (Wang & Isola, ICML 2020).

Reference: T. Wang and P. Isola, "Understanding Contrastive Representation Learning through
Alignment and Uniformity on the Hypersphere", ICML 2020, arXiv 2005.10242; used on STS-B by SimCSE
(Gao et al., EMNLP 2021, section 5). With f the L2-normalised embedding:

.. math::
    \ell_{align} = \mathbb{E}_{(x, y) \sim p_{pos}} \lVert f(x) - f(y) \rVert_2^{\alpha}, \quad \alpha = 2

    \ell_{uniform} = \log \mathbb{E}_{x, y \sim p_{data}} e^{-t \lVert f(x) - f(y) \rVert_2^2}, \quad t = 2

Here ``p_pos`` = the STS-B pairs of a split with gold score >= 4.0 (of 5; SimCSE: "higher than 4"),
and ``p_data`` = every pair of two different sentences among the split's distinct sentences.
Lower is better for both: aligned positives sit close together, uniform embeddings spread out.
``alignment`` lies in [0, 4] (unit vectors), ``uniformity`` in [-4t, 0] = [-8, 0] (0: all embeddings equal).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor

from eval.data.sts import STSBSplit, load_stsb

from .encode import DEFAULT_BF16, EmbeddingTable, Pooler, load_model

POSITIVE_THRESHOLD = 4.0
"""STS-B gold score (0-5) from which a pair counts as a positive for alignment."""


@dataclass(frozen=True)
class GeometryResult:
    """Alignment and uniformity (lower is better for both) and the data they were measured on."""

    alignment: float
    uniformity: float
    n_positive_pairs: int
    n_sentences: int
    split: str
    pooler: str
    positive_threshold: float = POSITIVE_THRESHOLD

    def to_dict(self) -> dict:
        return asdict(self)


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> float:
    """Mean ``||f(x_i) - f(y_i)||^alpha`` over the rows of two ``[N, d]`` tensors (rows L2-normalised here)."""
    if x.shape != y.shape or x.dim() != 2 or len(x) == 0:
        raise ValueError(f"alignment needs two [N, d] tensors of one shape with N > 0, "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")
    x, y = _unit(x), _unit(y)
    return (x - y).norm(dim=1).pow(alpha).mean().item()


def uniformity(x: Tensor, t: float = 2.0) -> float:
    """``log mean_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)`` over all pairs of rows of ``[N, d]`` (N >= 2).

    Computed as ``logsumexp - log(#pairs)``, so it stays finite however spread the embeddings are.
    """
    if x.dim() != 2 or len(x) < 2:
        raise ValueError(f"uniformity needs an [N, d] tensor with N >= 2, got {tuple(x.shape)}")
    squared = torch.pdist(_unit(x), p=2).pow(2)
    return (torch.logsumexp(-t * squared, dim=0) - math.log(len(squared))).item()


def alignment_uniformity(
    model: SentenceTransformer | str | Path,
    data_dir: str | Path | None = None,
    split: STSBSplit = "test",
    pooler: Pooler = "model",
    batch_size: int = 128,
    bf16: bool = DEFAULT_BF16,
    show_progress: bool = False,
) -> GeometryResult:
    """Alignment and uniformity of ``model`` (a SentenceTransformer, folder, hub id or offline alias) on STS-B."""
    pairs = load_stsb(split, data_dir)
    positives = [pair for pair in pairs if pair.score >= POSITIVE_THRESHOLD]
    if not positives:
        raise ValueError(f"STS-B {split} has no pair with gold score >= {POSITIVE_THRESHOLD}")
    sentences = list(dict.fromkeys(s for pair in pairs for s in (pair.sentence1, pair.sentence2)))
    table = EmbeddingTable.build(load_model(model), sentences, pooler, batch_size, bf16, show_progress)
    vectors = torch.from_numpy(table.vectors).double()
    first = torch.from_numpy(table[[pair.sentence1 for pair in positives]]).double()
    second = torch.from_numpy(table[[pair.sentence2 for pair in positives]]).double()
    return GeometryResult(
        alignment=alignment(first, second),
        uniformity=uniformity(vectors),
        n_positive_pairs=len(positives),
        n_sentences=len(sentences),
        split=split,
        pooler=pooler,
    )


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1)

r"""Dimension information alignment and sparse relations, student form of DIAS (arXiv 2410.16853).

The paper
    Ma, Li, Fang, Zhang. "Bridging the Modality Gap: Dimension Information Alignment and Sparse Spatial
    Constraint for Image-Text Matching" (ACM MM 2024, arXiv 2410.16853): (1) the information carried by
    each embedding dimension is aligned across modalities, so dimension ``k`` of an image and of its
    caption mean the same thing; (2) the geometry of *unmatched* pairs is constrained, keeping only the
    strongest relations (sparse), so weak, noisy relations do not mislead the model.

The student form here
    - Dimension alignment (term ``dias_dimension``, weight ``dimension_weight``, paired steps): the student's
      grounded captions ``g = ground(h)`` (each dropout view) and the adapted teacher images
      ``v = adapt_images(v_teacher)`` of the same rows, both in the grounding space, are standardised per
      dimension over the local batch; their cross-correlation ``C = Z_g^T Z_v / B`` is pushed to the
      identity (Barlow-Twins form, :class:`distill.losses.DimensionAlignmentLoss`):

      .. math:: L = \sum_k (1 - C_{kk})^2 + \lambda \sum_{k \ne l} C_{kl}^2

      The teacher side is a constant. The local batch is used (not the gathered one), so the loss and
      its gradient are exact per rank and DDP averages them.
    - Sparse relations (term ``dias_relation``, weight ``relation_weight``, every step): on each
      row's ``k`` strongest teacher text neighbours ``N_k(i)`` (its own second view excluded), the
      student's cosine ``cos(z1_i, z2_j)`` (the text loss's embeddings, candidates gathered) matches the
      teacher's ``s^t_ij = cos(t_i, t_j)`` (:class:`distill.losses.SparseRelationLoss`):

      .. math:: L = \mathrm{mean}_{i,\ j \in N_k(i)} \big(\cos(z1_i, z2_j) - s^t_{ij}\big)^2

      Same-image and teacher-filtered pairs are *not* excluded here: they are the strongest relations,
      which is what this term is about.

Differences from the paper: dimension alignment is between the student's grounding vectors and the
frozen teacher's image embeddings (through the trainable adapter), not between two trained encoders, and
uses the Barlow-Twins objective; the sparse constraint is intra-modal (student text vs teacher text) and
matches cosines instead of the paper's cross-modal relation matrices.

Cost: a ``[g, g]`` cross-correlation per view (``B g^2``; ``g = grounding_dim``) on paired steps and a
``[B, N]`` top-k per step: negligible next to the encoder.
"""
from __future__ import annotations


from dataclasses import dataclass, field

import torch
from torch import Tensor

from distill.losses.dias import DimensionAlignmentLoss, SparseRelationLoss
from distill.config import LossConfig
from distill.step import StepTensors
from distill.term import CardRow, Needs, Term, register_term
from kdmcse_base.typed_config import at_least


@dataclass
class DIASConfig:
    """DIAS (arXiv 2410.16853; docs/modules.md): term ``dias_dimension`` (weight ``dimension_weight``,
    paired steps) pushes the cross-correlation of grounding vs adapted teacher image dimensions to
    identity (off-diagonal weight ``off_diagonal_weight``); term ``dias_relation`` (weight
    ``relation_weight``, every step) matches student to teacher text cosines on each row's ``top_k``
    strongest teacher neighbours. A weight of 0 leaves its term out."""

    dimension_weight: float = field(default=1e-4, metadata=at_least(0))
    off_diagonal_weight: float = field(default=5e-3, metadata=at_least(0))
    relation_weight: float = field(default=1.0, metadata=at_least(0))
    top_k: int = field(default=5, metadata=at_least(1))

    def __post_init__(self) -> None:
        if not self.dimension_weight and not self.relation_weight:
            raise ValueError("switches nothing on: set dimension_weight and/or relation_weight > 0 "
                             "(or remove loss.dias)")


@register_term("dias", order=80, section=DIASConfig)
class DIAS(Term):
    """Dimension alignment and/or sparse relations (see the module docstring); a part whose weight is 0
    is not built.

    Reference: Ma et al., ACM MM 2024, arXiv 2410.16853; Zbontar et al. "Barlow Twins", arXiv 2103.03230.
    """

    citation = "Ma et al., ACM MM 2024, arXiv 2410.16853"

    def __init__(self, cfg: DIASConfig):
        super().__init__()
        self.cfg = cfg
        self.needs = Needs(teacher_similarities=True, images=cfg.dimension_weight > 0)
        self.dimension_loss = DimensionAlignmentLoss(cfg.off_diagonal_weight) if cfg.dimension_weight else None
        self.relation_loss = SparseRelationLoss(cfg.top_k) if cfg.relation_weight else None

    @classmethod
    def card_rows(cls, loss: LossConfig, section: DIASConfig) -> list[CardRow]:
        rows = [("DIAS cross-correlation", section.dimension_weight, f"off-diagonal {section.off_diagonal_weight}"),
                ("DIAS relation matching", section.relation_weight, f"top-k {section.top_k}")]
        return [row for row in rows if row[1] > 0]

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        """``dias_dimension`` (paired steps) and ``dias_relation``, each times its weight."""
        out = {}
        if self.dimension_loss is not None and step.paired is not None:
            local_images = step.paired.images[step.offset:step.offset + len(step.z1)]
            out["dias_dimension"] = self.cfg.dimension_weight * self.dimension(step.grounded, local_images)
        if self.relation_loss is not None:
            out["dias_relation"] = self.cfg.relation_weight * self.relation_loss(
                step.z1, step.candidates, step.s_cc, positive_offset=step.offset)
        return out

    def dimension(self, grounded_views: list[Tensor], images: Tensor) -> Tensor:
        """Mean over views of the dimension alignment of ``[B, g]`` grounded captions with ``[B, g]`` images."""
        return torch.stack([self.dimension_loss(g, images) for g in grounded_views]).mean()

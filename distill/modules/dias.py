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


import torch
from torch import Tensor

from distill import losses
from distill.config import DIASConfig, LossConfig
from distill.step import StepTensors
from distill.term import Dims, Needs, Term, register_term


class DIAS(Term):
    """Dimension alignment and/or sparse relations (see the module docstring); a part whose weight is 0
    is not built.

    Reference: Ma et al., ACM MM 2024, arXiv 2410.16853; Zbontar et al. "Barlow Twins", arXiv 2103.03230.
    """

    def __init__(self, cfg: DIASConfig):
        super().__init__()
        self.cfg = cfg
        self.needs = Needs(teacher_similarities=True, images=cfg.dimension_weight > 0)
        self.dimension_loss = losses.DimensionAlignmentLoss(cfg.off_diagonal_weight) if cfg.dimension_weight else None
        self.relation_loss = losses.SparseRelationLoss(cfg.top_k) if cfg.relation_weight else None

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


@register_term("dias")
def _dias(cfg: LossConfig, dims: Dims) -> DIAS | None:
    return DIAS(cfg.dias) if cfg.dias is not None else None

r"""Multi-modal references, student form of MMRef (arXiv 2504.07718).

The paper
    "Multi-modal Reference Learning for Fine-grained Text-to-Image Retrieval" (arXiv 2504.07718) builds,
    for every identity, a multi-modal reference that fuses all of that identity's images and captions;
    the references supervise the uni-modal embeddings during training and re-rank the retrieval results
    at test time.

The student form here (one image = one identity; paired steps only)
    References live in the grounding space: for each distinct image ``m`` of the (gathered) batch,

    .. math::
        r_m = \mathrm{normalize}\Big(\alpha\, \hat v_m + (1 - \alpha)\,
              \frac{1}{|T_m|}\sum_{c \in T_m} \hat t_c\Big),
        \qquad \hat v = \mathrm{adapt\_images}(v),\ \hat t = \mathrm{adapt\_captions}(t)

    where ``T_m`` are the captions of image ``m`` present in the gathered batch (KDMCSE's adapters of the
    cached teacher embeddings; :func:`distill.losses.build_references`, constants). Each dropout view of
    the student's grounded caption is aligned to the references (term ``mmref``, mean over views):

    .. math::
        \ell_i = -\log \frac{\exp(\cos(g_i, r_{y_i})/\tau)}{\sum_m \exp(\cos(g_i, r_m)/\tau)}

    with ``y_i`` the caption's own image; several captions of one image share one reference and one
    target (so they are never each other's negatives). Retrieval-time re-ranking with references is
    :func:`distill.losses.rerank_with_references` (evaluation side, not part of this term).

Differences from the paper: references come from the frozen teacher's embeddings through the student's
adapters (no separate reference encoder), they are built per step from the captions in the batch (not
from every caption of the identity), and they are constants (no gradient into the adapters).

Cost: ``torch.unique`` over ``N`` ids, an ``[M, g]`` fusion and a ``[B, M]`` InfoNCE per view
(``M <= N`` distinct images): negligible.
"""
from __future__ import annotations


from dataclasses import dataclass, field

import torch
from torch import Tensor

from distill.losses.mmref import ReferenceAlignmentLoss, build_references
from distill.config import LossConfig
from distill.step import StepTensors
from distill.term import CardRow, Dims, Needs, Term, register_term
from kdmcse_base.typed_config import UNIT_INTERVAL, at_least


@dataclass
class MMRefConfig:
    """MMRef (arXiv 2504.07718; docs/modules.md): term ``mmref`` (weight ``weight``, paired steps)
    aligns grounded captions with per-image references fusing the adapted teacher image (weight
    ``alpha``) and its captions."""

    weight: float = field(default=0.01, metadata=at_least(0))
    alpha: float = field(default=0.5, metadata=UNIT_INTERVAL)

    def __post_init__(self) -> None:
        if self.weight == 0:
            raise ValueError("weight 0 switches the term off: remove loss.mmref instead")


@register_term("mmref", order=70, section=MMRefConfig)
class MMRef(Term):
    """Reference alignment of grounded captions (see the module docstring).

    Args:
        cfg: ``loss.mmref`` (term weight, image weight ``alpha`` of the fusion).
        temperature: ``tau`` (``loss.temperature``).

    Reference: "Multi-modal Reference Learning for Fine-grained Text-to-Image Retrieval", arXiv 2504.07718.
    """

    needs = Needs(images=True, captions=True)
    citation = "arXiv 2504.07718"

    def __init__(self, cfg: MMRefConfig, temperature: float):
        super().__init__()
        self.weight, self.alpha = cfg.weight, cfg.alpha
        self.alignment = ReferenceAlignmentLoss(temperature)

    @classmethod
    def build(cls, loss: LossConfig, section: MMRefConfig, dims: Dims) -> MMRef:
        return cls(section, loss.temperature)

    @classmethod
    def card_rows(cls, loss: LossConfig, section: MMRefConfig) -> list[CardRow]:
        return [("MMRef reference alignment", section.weight, f"alpha {section.alpha}")]

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        """``mmref`` on paired steps, times its weight."""
        if step.paired is None:
            return {}
        paired = step.paired
        return {"mmref": self.weight * self(step.grounded, paired.images, paired.captions, paired.image_ids,
                                            step.offset)}

    def references(self, images: Tensor, captions: Tensor, image_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(references [M, g], image_index [N])`` from the gathered adapted images ``[N, g]`` and captions
        ``[N, g]`` of ``N`` rows with ``image_ids [N]``; row ``j``'s reference is ``image_index[j]``."""
        unique, index = torch.unique(image_ids, return_inverse=True)
        rows = torch.arange(len(image_ids), device=image_ids.device)
        first = torch.full((len(unique),), len(image_ids), device=image_ids.device, dtype=torch.long)
        first = first.scatter_reduce(0, index, rows, reduce="amin")  # one row per image for its vector
        refs = build_references(images[first], captions, self.alpha, caption_image_index=index)
        return refs, index

    def forward(self, grounded_views: list[Tensor], images: Tensor, captions: Tensor, image_ids: Tensor,
                positive_offset: int) -> Tensor:
        """Mean over views of the reference InfoNCE of the local grounded captions ``[B, g]``."""
        refs, index = self.references(images, captions, image_ids)
        batch = len(grounded_views[0])
        targets = index[positive_offset:positive_offset + batch]
        return torch.stack([self.alignment(g, refs, targets) for g in grounded_views]).mean()

    def extra_repr(self) -> str:
        return f"weight={self.weight}, alpha={self.alpha}"

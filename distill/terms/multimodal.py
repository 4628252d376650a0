"""L_inter on paired steps (``loss.multimodal``): MCSE's image term, or AdapACSE's image term + caption
term, each with its own mask (formulas: ``distill/losses/mcse.py``, ``distill/losses/adapacse.py``)."""
from __future__ import annotations

from torch import Tensor

from distill.losses.adapacse import AdapACSELoss
from distill.losses.mcse import MCSEGroundingLoss
from distill.config import LossConfig
from distill.step import StepTensors
from distill.term import CardRow, Dims, Needs, Term, register_term


@register_term("multimodal", order=50)
class MultimodalTerm(Term):
    """``multimodal``: ``multimodal_weight`` x (AdapACSE image + caption terms, or MCSE's), paired steps."""

    citation = "AdapACSE: KDMCSE, Nguyen et al., NAACL 2024; MCSE: Zhang et al., NAACL 2022"

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.kind, self.weight = cfg.multimodal, cfg.multimodal_weight
        adapacse = cfg.multimodal == "adapacse"
        self.needs = Needs(images=True, captions=adapacse, teacher_similarities=adapacse)
        self.loss = AdapACSELoss(margin=cfg.multimodal_margin, temperature=cfg.temperature) if adapacse \
            else MCSEGroundingLoss(temperature=cfg.temperature)

    @classmethod
    def build(cls, loss: LossConfig, section: None, dims: Dims) -> MultimodalTerm | None:
        return cls(loss) if loss.multimodal != "none" else None

    @classmethod
    def card_rows(cls, loss: LossConfig, section: None) -> list[CardRow]:
        if loss.multimodal == "adapacse":
            return [("AdapACSE (grounded text vs adapted teacher)", loss.multimodal_weight,
                     f"margin {loss.multimodal_margin}, same-image mask {loss.same_image_mask}")]
        if loss.multimodal == "mcse":
            return [("MCSE grounding InfoNCE", loss.multimodal_weight, f"temperature {loss.temperature}")]
        return []

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        paired = step.paired
        if paired is None:
            return {}
        if self.kind == "mcse":
            loss = self.loss(step.grounded, paired.images, exclude=paired.image_exclude, positive_offset=step.offset)
            return {"multimodal": self.weight * loss}
        s_vv = step.inputs.teacher_image @ paired.teacher_image_all.T
        image_term = self.loss(step.grounded, image=paired.images, s_vv=s_vv,
                               exclude=paired.image_exclude, positive_offset=step.offset)
        caption_term = self.loss(step.grounded, caption=paired.captions, s_cc=step.s_cc,
                                 exclude=paired.caption_exclude, positive_offset=step.offset)
        return {"multimodal": self.weight * (image_term + caption_term)}

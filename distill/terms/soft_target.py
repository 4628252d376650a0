"""Soft-target distillation (``loss.soft_target_weight``): KL of the teacher's in-batch similarity rows
to the student's, at ``loss.teacher_temperature`` (formula: ``distill/losses/soft_target.py``)."""
from __future__ import annotations

from torch import Tensor

from distill.losses.soft_target import SoftTargetKLLoss
from distill.config import LossConfig
from distill.step import StepTensors
from distill.term import CardRow, Dims, Needs, Term, register_term


@register_term("soft_target", order=30)
class SoftTargetTerm(Term):
    """``soft_target``: ``soft_target_weight`` x KL(teacher rows || student rows)."""

    needs = Needs(teacher_similarities=True)
    citation = "KDMCSE, Nguyen et al., NAACL 2024"

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.weight = cfg.soft_target_weight
        self.loss = SoftTargetKLLoss(cfg.temperature, cfg.teacher_temperature)

    @classmethod
    def build(cls, loss: LossConfig, section: None, dims: Dims) -> SoftTargetTerm | None:
        return cls(loss) if loss.soft_target_weight > 0 else None

    @classmethod
    def card_rows(cls, loss: LossConfig, section: None) -> list[CardRow]:
        if loss.soft_target_weight <= 0:
            return []
        return [("soft-target KL to teacher similarities", loss.soft_target_weight,
                 f"teacher temperature {loss.teacher_temperature}")]

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        kl = self.loss(step.z1, step.candidates, step.s_cc, exclude=step.exclude, positive_offset=step.offset)
        return {"soft_target": self.weight * kl}

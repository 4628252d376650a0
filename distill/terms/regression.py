"""Embedding regression (``loss.regression_weight``): MSE of ``head(h)`` to the teacher's text vector
(formula: ``distill/losses/regression.py``), over every view the step encoded (one, unless another term
or ``loss.dropout_views: two`` asks for two). The head is this term's own: a Linear(d, d_t) when the
student's width d differs from the teacher's, the identity when they match; it is trained by this term
alone and checkpointed under it (``objective.regression.head``), and never saved with the encoder."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.losses.regression import EmbeddingRegressionLoss
from distill.config import LossConfig
from distill.step import StepTensors
from distill.term import CardRow, Dims, Needs, Term, register_term


@register_term("regression", order=40)
class RegressionTerm(Term):
    """``regression``: ``regression_weight`` x MSE(head(h), teacher text vector)."""

    needs = Needs(two_views=False)

    def __init__(self, cfg: LossConfig, student_dim: int, teacher_dim: int):
        super().__init__()
        self.weight = cfg.regression_weight
        self.head = nn.Identity() if student_dim == teacher_dim else nn.Linear(student_dim, teacher_dim)
        self.loss = EmbeddingRegressionLoss()

    @classmethod
    def build(cls, loss: LossConfig, section: None, dims: Dims) -> RegressionTerm | None:
        if loss.regression_weight <= 0:
            return None
        if dims.student is None or dims.teacher is None:
            raise ValueError("loss.regression_weight sizes its head from the student's and teacher's widths: "
                             "build DistillationObjective(cfg, Dims(student=..., teacher=...))")
        return cls(loss, dims.student, dims.teacher)

    @classmethod
    def card_rows(cls, loss: LossConfig, section: None) -> list[CardRow]:
        return [("embedding regression (MSE)", loss.regression_weight, "")] if loss.regression_weight > 0 else []

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        views = [step.h1] if step.h2 is None else [step.h1, step.h2]
        predicted = self.head(torch.cat(views))
        target = torch.cat([step.inputs.teacher_text] * len(views))
        return {"regression": self.weight * self.loss(predicted, target)}

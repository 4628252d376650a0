"""Embedding regression (``loss.regression_weight``): MSE of ``regression(h)`` to the teacher's text
vector (formula: ``distill/losses/regression.py``), over every view the step encoded (one, unless
another term or ``loss.dropout_views: two`` asks for two)."""
from __future__ import annotations

import torch
from torch import Tensor

from distill.losses.regression import EmbeddingRegressionLoss
from distill.config import LossConfig
from distill.step import StepTensors
from distill.term import CardRow, Dims, Needs, Term, register_term


@register_term("regression", order=40)
class RegressionTerm(Term):
    """``regression``: ``regression_weight`` x MSE(regression(h), teacher text vector)."""

    needs = Needs(two_views=False)

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.weight = cfg.regression_weight
        self.loss = EmbeddingRegressionLoss()

    @classmethod
    def build(cls, loss: LossConfig, section: None, dims: Dims) -> RegressionTerm | None:
        return cls(loss) if loss.regression_weight > 0 else None

    @classmethod
    def card_rows(cls, loss: LossConfig, section: None) -> list[CardRow]:
        return [("embedding regression (MSE)", loss.regression_weight, "")] if loss.regression_weight > 0 else []

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        views = [step.h1] if step.h2 is None else [step.h1, step.h2]
        predicted = step.student.regression(torch.cat(views))
        target = torch.cat([step.inputs.teacher_text] * len(views))
        return {"regression": self.weight * self.loss(predicted, target)}

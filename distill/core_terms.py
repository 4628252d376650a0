"""KDMCSE's own terms, as ``distill.term.Term``s (formulas: ``distill/losses/``, docs/objective.md).

=================  =================================================  ===========================
section            term (weight)                                      needs
=================  =================================================  ===========================
``loss.text``      ``text``: angular margin or SimCSE (1)             both views; the text
                                                                      contrast's logits when a
                                                                      module reshapes it
``soft_target``    ``soft_target``: KL to the teacher's similarity    both views, teacher
                   rows (``soft_target_weight``)                      similarities
``regression``     ``regression``: MSE of ``regression(h)`` to the    one view
                   teacher's text vectors (``regression_weight``)
``multimodal``     ``multimodal``: AdapACSE or MCSE, paired steps     both views, adapted images
                   (``multimodal_weight``)                            (AdapACSE: captions and
                                                                      teacher similarities too)
=================  =================================================  ===========================
"""
from __future__ import annotations

import torch
from torch import Tensor

from distill import losses
from distill.config import LossConfig
from distill.step import StepTensors
from distill.term import Dims, Needs, Term, register_term


class TextTerm(Term):
    """L_intra: the text loss over the two dropout views; through the general contrast (its logits
    built by the objective, reshaped by modules) when ``loss.reshapes_text``."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.reshaped = cfg.reshapes_text
        self.needs = Needs(text_logits=self.reshaped)
        self.text_loss = losses.SimCSELoss(temperature=cfg.temperature) if cfg.text == "simcse" else \
            losses.AngularMarginLoss(margin=cfg.text_margin, temperature=cfg.temperature)

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        if not self.reshaped:
            return {"text": self.text_loss(step.z1, step.candidates, exclude=step.exclude, positive_offset=step.offset)}
        return {"text": step.text_contrast.from_logits(step.text_logits, step.offset, step.text_exclude)}


class SoftTargetTerm(Term):
    """Soft-target distillation: KL of the teacher's in-batch similarity rows to the student's."""

    needs = Needs(teacher_similarities=True)

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.weight = cfg.soft_target_weight
        self.loss = losses.SoftTargetKLLoss(cfg.temperature, cfg.teacher_temperature)

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        kl = self.loss(step.z1, step.candidates, step.s_cc, exclude=step.exclude, positive_offset=step.offset)
        return {"soft_target": self.weight * kl}


class RegressionTerm(Term):
    """Embedding regression: MSE of ``regression(h)`` to the teacher's text vector, over every view
    the step encoded (one, unless another term or ``loss.dropout_views: two`` asks for two)."""

    needs = Needs(two_views=False)

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.weight = cfg.regression_weight
        self.loss = losses.EmbeddingRegressionLoss()

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        views = [step.h1] if step.h2 is None else [step.h1, step.h2]
        predicted = step.student.regression(torch.cat(views))
        target = torch.cat([step.inputs.teacher_text] * len(views))
        return {"regression": self.weight * self.loss(predicted, target)}


class MultimodalTerm(Term):
    """L_inter on paired steps: MCSE's image term, or AdapACSE's image term + caption term, each with
    its own mask."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.kind, self.weight = cfg.multimodal, cfg.multimodal_weight
        adapacse = cfg.multimodal == "adapacse"
        self.needs = Needs(images=True, captions=adapacse, teacher_similarities=adapacse)
        self.loss = losses.AdapACSELoss(margin=cfg.multimodal_margin, temperature=cfg.temperature) if adapacse \
            else losses.MCSEGroundingLoss(temperature=cfg.temperature)

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


@register_term("text")
def _text(cfg: LossConfig, dims: Dims) -> Term | None:
    return TextTerm(cfg) if cfg.text != "none" else None


@register_term("soft_target")
def _soft_target(cfg: LossConfig, dims: Dims) -> Term | None:
    return SoftTargetTerm(cfg) if cfg.soft_target_weight > 0 else None


@register_term("regression")
def _regression(cfg: LossConfig, dims: Dims) -> Term | None:
    return RegressionTerm(cfg) if cfg.regression_weight > 0 else None


@register_term("multimodal")
def _multimodal(cfg: LossConfig, dims: Dims) -> Term | None:
    return MultimodalTerm(cfg) if cfg.multimodal != "none" else None

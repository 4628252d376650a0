"""The training objective of one step: which loss terms run, on which tensors, with which masks.

Text steps: text loss (+ soft-target KL, + embedding regression) on two dropout views.
Paired steps: the same, plus ``multimodal_weight`` x (AdapACSE or MCSE) against the teacher's
image and caption embeddings. Negatives are gathered across ranks; teacher similarities for the
gathered candidates come from the gathered teacher embeddings, so every mask lines up with them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distill import losses
from distill.config import LossConfig
from distill.distributed import gather_with_grad
from distill.student import Student


@dataclass
class StepInputs:
    """What the trainer looked up for the local rows of one step."""

    sentences: list[str]
    teacher_text: torch.Tensor  # [B, d_t], L2-normalised
    teacher_image: torch.Tensor | None = None  # [B, d_i], paired steps only
    image_ids: torch.Tensor | None = None  # [B] int64, paired steps only


def gather_all(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank (teacher tensors and ids: nothing there needs a gradient)."""
    return gather_with_grad(x)[0]


class DistillationObjective(nn.Module):
    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.cfg = cfg
        self.text_loss = {
            "simcse": lambda: losses.SimCSELoss(temperature=cfg.temperature),
            "angular": lambda: losses.AngularMarginLoss(margin=cfg.text_margin, temperature=cfg.temperature),
            "none": lambda: None,
        }[cfg.text]()
        self.multimodal_loss = {
            "adapacse": lambda: losses.AdapACSELoss(margin=cfg.multimodal_margin, temperature=cfg.temperature),
            "mcse": lambda: losses.MCSEGroundingLoss(temperature=cfg.temperature),
            "none": lambda: None,
        }[cfg.multimodal]()
        self.soft_target = losses.SoftTargetKLLoss(cfg.temperature, cfg.teacher_temperature)
        self.regression = losses.EmbeddingRegressionLoss()

    def forward(self, student: Student, inputs: StepInputs) -> dict[str, torch.Tensor]:
        """Loss terms of this step (already weighted) and their sum under ``"loss"``."""
        cfg = self.cfg
        views = student.embed(inputs.sentences + inputs.sentences)
        h1, h2 = views.chunk(2)
        z1, z2 = student.mlp(h1), student.mlp(h2)
        candidates, offset = gather_with_grad(z2)
        teacher_text_all = gather_all(inputs.teacher_text)
        s_cc = inputs.teacher_text @ teacher_text_all.T
        exclude = self._exclude_mask(s_cc, offset, inputs)

        terms: dict[str, torch.Tensor] = {}
        if self.text_loss is not None:
            terms["text"] = self.text_loss(z1, candidates, exclude=exclude, positive_offset=offset)
        if cfg.soft_target_weight > 0:
            kl = self.soft_target(z1, candidates, s_cc, exclude=exclude, positive_offset=offset)
            terms["soft_target"] = cfg.soft_target_weight * kl
        if cfg.regression_weight > 0:
            predicted = student.regression(torch.cat([h1, h2]))
            target = torch.cat([inputs.teacher_text, inputs.teacher_text])
            terms["regression"] = cfg.regression_weight * self.regression(predicted, target)
        if inputs.teacher_image is not None and self.multimodal_loss is not None:
            terms["multimodal"] = cfg.multimodal_weight * self._multimodal(
                student, (h1, h2), inputs, teacher_text_all, s_cc, exclude, offset)
        if not terms:
            raise ValueError("every loss term is switched off: set loss.text, loss.multimodal, "
                             "loss.soft_target_weight or loss.regression_weight")
        terms["loss"] = torch.stack(list(terms.values())).sum()
        return terms

    def _multimodal(self, student: Student, views, inputs: StepInputs, teacher_text_all: torch.Tensor,
                    s_cc: torch.Tensor, exclude: torch.Tensor | None, offset: int) -> torch.Tensor:
        grounded = [student.heads.ground(h) for h in views]
        teacher_image_all = gather_all(inputs.teacher_image)
        images = student.heads.adapt_images(teacher_image_all)
        if self.cfg.multimodal == "mcse":
            return self.multimodal_loss(grounded, images, exclude=exclude, positive_offset=offset)
        s_vv = inputs.teacher_image @ teacher_image_all.T
        captions = student.heads.adapt_captions(teacher_text_all)
        return self.multimodal_loss(grounded, images, captions, s_vv, s_cc, exclude=exclude,
                                    positive_offset=offset)

    def _exclude_mask(self, s_cc: torch.Tensor, offset: int, inputs: StepInputs) -> torch.Tensor | None:
        """Candidates removed from every softmax: same image, and teacher-flagged false negatives."""
        cfg = self.cfg
        masks = []
        if cfg.same_image_mask and inputs.image_ids is not None:
            masks.append(losses.same_image_mask(inputs.image_ids, gather_all(inputs.image_ids), positive_offset=offset))
        if cfg.false_negative_filter == "threshold":
            masks.append(losses.threshold_mask(s_cc, cfg.filter_threshold, positive_offset=offset))
        elif cfg.false_negative_filter == "gist":
            masks.append(losses.gist_mask(s_cc, cfg.gist_margin, cfg.gist_mode, positive_offset=offset))
        if not masks:
            return None
        mask = masks[0]
        for extra in masks[1:]:
            mask = mask | extra
        return mask

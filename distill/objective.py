"""The training objective of one step: which loss terms run, on which tensors, with which masks.

.. code-block:: text

    loss = text                                  L_intra (angular margin) or SimCSE, both dropout views
         + soft_target_weight  x soft_target     KL of teacher to student in-batch similarity rows
         + regression_weight   x regression      MSE of regression(h) to the teacher's text embedding
         + multimodal_weight   x multimodal      paired steps: AdapACSE (image + caption terms) or MCSE
         + the terms of each optional module     loss.aahr, loss.soft_mask, loss.mmref, loss.dias

Each step encodes the dropout views its terms need: one when regression is the only term
(``loss.dropout_views: two`` restores the second), two otherwise. Gathers, teacher similarity
matrices and masks are built only when a term reads them.

Negatives are gathered across ranks; teacher similarities for the gathered candidates come from the
gathered teacher embeddings, so every mask lines up with them. ``same_image_mask`` and the
``false_negative_filter`` remove candidates from the softmaxes; docs/objective.md says which filter
masks which term. Each module (docs/modules.md) owns its terms:

=================  ===========================================================  ==========
module             terms (already weighted)                                     steps
=================  ===========================================================  ==========
``loss.aahr``      queue negatives and cluster weights in ``text``;             all
                   ``aahr_prototypes`` (prototype soft targets)
``loss.soft_mask`` ``soft_mask_view``: the text contrast, saliency-masked       all
                   positive (``loss.focal_gamma`` makes both text terms focal)
``loss.mmref``     ``mmref``: grounded captions vs multi-modal references       paired
``loss.dias``      ``dias_dimension`` (paired), ``dias_relation`` (all)         see left
=================  ===========================================================  ==========

With every module absent the terms and their sum are exactly the KDMCSE baseline's.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from distill import losses
from distill.config import LossConfig
from distill.gather import gather_with_grad
from distill.modules import AAHR, DIAS, MMRef, SoftMaskView
from distill.step import PairedTensors, StepInputs, StepTensors, gather_all, twice
from distill.student import Student


class DistillationObjective(nn.Module):
    """The step's loss terms (module docstring). ``student_dim`` (width of ``z``) and ``teacher_dim``
    (width of the teacher's text embeddings) size AAHR's queue and prototypes; only ``loss.aahr`` needs them."""

    def __init__(self, cfg: LossConfig, student_dim: int | None = None, teacher_dim: int | None = None):
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
        # The general text contrast runs only when a module reshapes the text term (or swaps its
        # positive); otherwise ``text_loss`` computes it exactly as in the baseline.
        margin = cfg.text_margin if cfg.text == "angular" else None
        self.text_contrast = losses.WeightedInfoNCELoss(cfg.temperature, margin, cfg.focal_gamma) \
            if cfg.reshapes_text or cfg.soft_mask is not None else None
        self.aahr = _aahr(cfg, student_dim, teacher_dim)
        self.soft_mask = SoftMaskView(cfg.soft_mask) if cfg.soft_mask is not None else None
        self.mmref = MMRef(cfg.mmref, cfg.temperature) if cfg.mmref is not None else None
        self.dias = DIAS(cfg.dias) if cfg.dias is not None else None
        # paired steps: the terms comparing grounded sentences with the adapted teacher images
        self.reads_images = cfg.multimodal != "none" or cfg.mmref is not None or \
            (cfg.dias is not None and cfg.dias.dimension_weight > 0)
        contrasts = self.text_loss is not None or self.multimodal_loss is not None or \
            cfg.soft_target_weight > 0 or any(m is not None for m in (self.aahr, self.soft_mask, self.mmref, self.dias))
        # regression reads one embedding per sentence; every contrast pairs the two dropout views
        self.views = 2 if contrasts or cfg.dropout_views == "two" else 1
        self.reads_s_cc = cfg.soft_target_weight > 0 or cfg.multimodal == "adapacse" or self.dias is not None \
            or cfg.false_negative_filter in ("threshold", "gist")

    def forward(self, student: Student, inputs: StepInputs) -> dict[str, Tensor]:
        """Loss terms of this step (already weighted) and their sum under ``"loss"``."""
        cfg = self.cfg
        step = self._prepare(student, inputs)
        terms: dict[str, Tensor] = {}
        if self.text_loss is not None:
            terms["text"] = self._text(step)
        if self.soft_mask is not None:
            terms.update(self.soft_mask.terms(step, self.text_contrast))
        if cfg.soft_target_weight > 0:
            kl = self.soft_target(step.z1, step.candidates, step.s_cc, exclude=step.exclude,
                                  positive_offset=step.offset)
            terms["soft_target"] = cfg.soft_target_weight * kl
        if cfg.regression_weight > 0:
            views = [step.h1] if step.h2 is None else [step.h1, step.h2]
            predicted = student.regression(torch.cat(views))
            target = torch.cat([inputs.teacher_text] * len(views))
            terms["regression"] = cfg.regression_weight * self.regression(predicted, target)
        if step.paired is not None and self.multimodal_loss is not None:
            terms["multimodal"] = cfg.multimodal_weight * self._multimodal(step)
        for module in (self.aahr, self.mmref, self.dias):
            if module is not None:
                terms.update(module.terms(step))
        if not terms:
            raise ValueError("every loss term is switched off: set loss.text, loss.multimodal, "
                             "loss.soft_target_weight or loss.regression_weight")
        terms["loss"] = torch.stack(list(terms.values())).sum()

        if self.aahr is not None:  # after every term that read the queue
            self.aahr.enqueue(step.candidates, step.clusters)
        return terms

    def _prepare(self, student: Student, inputs: StepInputs) -> StepTensors:
        """The dropout views; on two-view steps also gathered candidates and teacher tensors, masks, and
        module state updates."""
        if inputs.features is None:
            inputs = replace(inputs, features=student.tokenise(inputs.sentences))
        if self.views == 1:
            return StepTensors(student, inputs, h1=student.embed_features(inputs.features))
        h1, h2 = student.embed_features(twice(inputs.features)).chunk(2)
        z1, z2 = student.mlp(h1), student.mlp(h2)
        candidates, offset = gather_with_grad(z2, inputs.rank_sizes)
        paired_step = inputs.teacher_image is not None
        teacher_text_all = gather_all(inputs.teacher_text, inputs.rank_sizes) \
            if self.reads_s_cc or paired_step or self.aahr is not None else None
        s_cc = inputs.teacher_text @ teacher_text_all.T if self.reads_s_cc else None
        paired = self._paired(student, inputs, teacher_text_all, offset) if paired_step else None
        exclude = self._exclude_mask(s_cc, inputs.image_ids, paired, offset)
        if paired is not None:
            paired.image_exclude = _either(exclude, paired.image_exclude)
            paired.caption_exclude = _either(exclude, paired.caption_exclude)
        grounded = [student.heads.ground(h) for h in (h1, h2)] if self._reads_grounding(paired_step) else None
        step = StepTensors(student, inputs, h1, h2, z1, z2, candidates, offset, s_cc, exclude, paired, grounded)
        if self.aahr is not None:
            step.clusters = self.aahr.observe(teacher_text_all)
        if self.text_contrast is not None:
            step.text_logits, step.text_exclude = self._text_logits(step)
        return step

    def _paired(self, student: Student, inputs: StepInputs, teacher_text_all: Tensor, offset: int) -> PairedTensors:
        """Gathered images and ids, their adapted forms where a term reads them, and the cross-modal filter."""
        cfg = self.cfg
        teacher_image_all = gather_all(inputs.teacher_image, inputs.rank_sizes)
        reads_captions = cfg.multimodal == "adapacse" or cfg.mmref is not None
        image_exclude = caption_exclude = None
        if cfg.false_negative_filter == "teacher_cross_modal":
            image_exclude, caption_exclude = self._cross_modal_masks(inputs, teacher_text_all, teacher_image_all,
                                                                     offset)
        return PairedTensors(
            teacher_image_all=teacher_image_all, image_ids=gather_all(inputs.image_ids, inputs.rank_sizes),
            images=student.heads.adapt_images(teacher_image_all) if self.reads_images else None,
            captions=student.heads.adapt_captions(teacher_text_all) if reads_captions else None,
            image_exclude=image_exclude, caption_exclude=caption_exclude)

    def _reads_grounding(self, paired: bool) -> bool:
        """Whether a term of this step reads the grounding head's outputs."""
        return (paired and self.reads_images) or (self.cfg.aahr is not None and self.cfg.aahr.weight > 0)

    def _text(self, step: StepTensors) -> Tensor:
        """KDMCSE's text loss; through the general contrast when a module reshapes it."""
        if not self.cfg.reshapes_text:
            return self.text_loss(step.z1, step.candidates, exclude=step.exclude, positive_offset=step.offset)
        return self.text_contrast.from_logits(step.text_logits, step.offset, step.text_exclude)

    def _text_logits(self, step: StepTensors) -> tuple[Tensor, Tensor | None]:
        """Text logits (AAHR's queue negatives and cluster weights included) and their exclude mask."""
        candidates, exclude, weights = step.candidates, step.exclude, None
        if self.aahr is not None:
            candidates, exclude, weights = self.aahr.extend(candidates, exclude, step.clusters, step.offset,
                                                            len(step.z1))
        return self.text_contrast.logits(step.z1, candidates, step.offset, weights), exclude

    def _multimodal(self, step: StepTensors) -> Tensor:
        """L_inter: MCSE's image term, or AdapACSE's image term + caption term, each with its own mask."""
        paired = step.paired
        if self.cfg.multimodal == "mcse":
            return self.multimodal_loss(step.grounded, paired.images, exclude=paired.image_exclude,
                                        positive_offset=step.offset)
        s_vv = step.inputs.teacher_image @ paired.teacher_image_all.T
        image_term = self.multimodal_loss(step.grounded, image=paired.images, s_vv=s_vv,
                                          exclude=paired.image_exclude, positive_offset=step.offset)
        caption_term = self.multimodal_loss(step.grounded, caption=paired.captions, s_cc=step.s_cc,
                                            exclude=paired.caption_exclude, positive_offset=step.offset)
        return image_term + caption_term

    def _exclude_mask(self, s_cc: Tensor | None, image_ids: Tensor | None, paired: PairedTensors | None,
                      offset: int) -> Tensor | None:
        """Candidates removed from every softmax: same image, and caption-caption teacher filters."""
        cfg = self.cfg
        mask = None
        if cfg.same_image_mask and paired is not None:
            mask = losses.same_image_mask(image_ids, paired.image_ids, positive_offset=offset)
        if cfg.false_negative_filter == "threshold":
            mask = _either(mask, losses.threshold_mask(s_cc, cfg.filter_threshold, positive_offset=offset))
        elif cfg.false_negative_filter == "gist":
            mask = _either(mask, losses.gist_mask(s_cc, cfg.gist_margin, cfg.gist_mode, positive_offset=offset))
        return mask

    def _cross_modal_masks(self, inputs: StepInputs, teacher_text_all: Tensor, teacher_image_all: Tensor,
                           offset: int) -> tuple[Tensor, Tensor]:
        """The released KDMCSE filter: ``(image term mask, caption term mask)`` from the teacher's
        caption_i . image_j and image_i . caption_j scores above ``cross_modal_threshold``."""
        cfg = self.cfg
        threshold, similarity = cfg.cross_modal_threshold, cfg.cross_modal_similarity
        return (losses.cross_modal_mask(inputs.teacher_text, teacher_image_all, threshold, similarity, offset),
                losses.cross_modal_mask(inputs.teacher_image, teacher_text_all, threshold, similarity, offset))


def _either(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """Union of two optional masks."""
    if a is None or b is None:
        return b if a is None else a
    return a | b


def _aahr(cfg: LossConfig, student_dim: int | None, teacher_dim: int | None) -> AAHR | None:
    if cfg.aahr is None:
        return None
    if student_dim is None or teacher_dim is None:
        raise ValueError("loss.aahr sizes its queue and prototypes from the student's and teacher's widths: "
                         "build DistillationObjective(cfg, student_dim=..., teacher_dim=...)")
    return AAHR(cfg.aahr, student_dim, teacher_dim, cfg.teacher_temperature)

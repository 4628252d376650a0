"""The training objective of one step: which loss terms run, on which tensors, with which masks.

.. code-block:: text

    loss = text                                  L_intra (angular margin) or SimCSE, both dropout views
         + soft_target_weight  x soft_target     KL of teacher to student in-batch similarity rows
         + regression_weight   x regression      MSE of regression(h) to the teacher's text embedding
         + multimodal_weight   x multimodal      paired steps: AdapACSE (image + caption terms) or MCSE
         + the terms of each optional module     loss.aahr, loss.soft_mask, loss.mmref, loss.dias
         + terms registered from outside         loss.<name> (docs/extending.md)

Every term is a ``distill.term.Term`` found through the registry (``distill/terms/``, one file a term,
and any ``loss.term_modules``); this file composes them and names none. Each step builds what the union of its terms' ``needs`` asks for: one dropout view when
regression is the only term (``loss.dropout_views: two`` restores the second), two otherwise; gathers,
teacher similarity matrices, grounded views and the text contrast's logits only when a term reads them.

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

import distill.terms  # noqa: F401  (the project's terms register themselves on import)
from distill import losses
from distill.config import LossConfig
from distill.gather import gather_with_grad
from distill.step import PairedTensors, StepInputs, StepTensors, gather_all, twice
from distill.student import GroundingHeads, Student
from distill.term import Dims, Term, build_terms, union


class DistillationObjective(nn.Module):
    """The step's loss terms (module docstring): every registered term whose config section is on
    (``distill.term``), each a submodule under its section's name, and the parameters they share: the
    grounding heads (``grounding``, :class:`distill.student.GroundingHeads`), built when a term reads
    the grounding space and checkpointed with the objective. ``dims`` (``distill.term.Dims``) sizes the
    terms with state or heads of their own (AAHR, regression) and the grounding heads; only those need it."""

    def __init__(self, cfg: LossConfig, dims: Dims = Dims()):
        super().__init__()
        self.cfg = cfg
        built = build_terms(cfg, dims)
        self.needs = union(term.needs for term in built.values())
        self.grounding = _grounding_heads(dims) if self.needs.grounding_heads else None
        for name, term in built.items():
            self.add_module(name, term)
        self.names = tuple(built)  # in the order the terms are computed and summed
        # regression reads one embedding per sentence; every contrast pairs the two dropout views
        self.views = 2 if self.needs.two_views or cfg.dropout_views == "two" else 1
        self.reads_s_cc = self.needs.teacher_similarities or cfg.false_negative_filter in ("threshold", "gist")
        # the text term reads the general contrast when a term reshapes it or focal weighting is on
        self.reshapes_text = "text" in built and (self.needs.reshapes_text or cfg.focal_gamma > 0)
        margin = cfg.text_margin if cfg.text == "angular" else None
        self.text_contrast = losses.WeightedInfoNCELoss(cfg.temperature, margin, cfg.focal_gamma) \
            if self.needs.text_logits or self.reshapes_text else None

    @property
    def terms(self) -> list[Term]:
        return [getattr(self, name) for name in self.names]

    def forward(self, student: Student, inputs: StepInputs) -> dict[str, Tensor]:
        """Loss terms of this step (already weighted) and their sum under ``"loss"``."""
        step = self._prepare(student, inputs)
        terms: dict[str, Tensor] = {}
        for term in self.terms:
            terms.update(term.terms(step))
        if not terms:
            raise ValueError("every loss term is switched off: set loss.text, loss.multimodal, "
                             "loss.soft_target_weight or loss.regression_weight, or add a term's section")
        terms["loss"] = torch.stack(list(terms.values())).sum()
        for term in self.terms:  # after every term that read their state (AAHR's queue)
            term.after_step(step)
        return terms

    def _prepare(self, student: Student, inputs: StepInputs) -> StepTensors:
        """The dropout views; on two-view steps also what the terms need of gathered candidates and
        teacher tensors, masks, grounded views and the text contrast's logits, after each term observed it."""
        if inputs.features is None:
            inputs = replace(inputs, features=student.tokenise(inputs.sentences))
        if self.views == 1:
            return StepTensors(student, inputs, h1=student.embed_features(inputs.features), heads=self.grounding)
        needs = self.needs
        h1, h2 = student.embed_features(twice(inputs.features)).chunk(2)
        z1, z2 = student.mlp(h1), student.mlp(h2)
        candidates, offset = gather_with_grad(z2, inputs.rank_sizes)
        paired_step = inputs.teacher_image is not None
        teacher_text_all = gather_all(inputs.teacher_text, inputs.rank_sizes) \
            if self.reads_s_cc or paired_step or needs.teacher_rows else None
        s_cc = inputs.teacher_text @ teacher_text_all.T if self.reads_s_cc else None
        paired = self._paired(student, inputs, teacher_text_all, offset) if paired_step else None
        exclude = self._exclude_mask(s_cc, inputs.image_ids, paired, offset)
        if paired is not None:
            paired.image_exclude = _either(exclude, paired.image_exclude)
            paired.caption_exclude = _either(exclude, paired.caption_exclude)
        reads_grounding = needs.grounding or (paired_step and needs.images)
        step = StepTensors(student, inputs, h1, h2, z1, z2, candidates, offset, teacher_text_all=teacher_text_all,
                           s_cc=s_cc, exclude=exclude, paired=paired, heads=self.grounding,
                           grounded=[self.grounding.ground(h) for h in (h1, h2)] if reads_grounding else None)
        for term in self.terms:
            term.observe(step)
        if self.text_contrast is not None:
            step.text_contrast, step.text_reshaped = self.text_contrast, self.reshapes_text
            step.text_logits, step.text_exclude = self._text_logits(step)
        return step

    def _paired(self, student: Student, inputs: StepInputs, teacher_text_all: Tensor, offset: int) -> PairedTensors:
        """Gathered images and ids, their adapted forms where a term reads them, and the cross-modal filter."""
        cfg = self.cfg
        teacher_image_all = gather_all(inputs.teacher_image, inputs.rank_sizes)
        image_exclude = caption_exclude = None
        if cfg.false_negative_filter == "teacher_cross_modal":
            image_exclude, caption_exclude = self._cross_modal_masks(inputs, teacher_text_all, teacher_image_all,
                                                                     offset)
        return PairedTensors(
            teacher_image_all=teacher_image_all, image_ids=gather_all(inputs.image_ids, inputs.rank_sizes),
            images=self.grounding.adapt_images(teacher_image_all) if self.needs.images else None,
            captions=self.grounding.adapt_captions(teacher_text_all) if self.needs.captions else None,
            image_exclude=image_exclude, caption_exclude=caption_exclude)

    def _text_logits(self, step: StepTensors) -> tuple[Tensor, Tensor | None]:
        """The general text contrast's logits and exclude mask, as the terms that reshape it extend its
        candidates (AAHR: queue negatives, same-cluster weights)."""
        candidates, exclude, weights = step.candidates, step.exclude, None
        for term in (term for term in self.terms if term.needs.reshapes_text):
            candidates, exclude, extra = term.extend_text(candidates, exclude, step)
            weights = extra if weights is None else weights if extra is None else weights * extra
        return self.text_contrast.logits(step.z1, candidates, step.offset, weights), exclude

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


def _grounding_heads(dims: Dims) -> GroundingHeads:
    if dims.student is None or dims.teacher is None or dims.grounding is None:
        raise ValueError("a term reads the grounding space, whose heads are sized from the student's, teacher's and "
                         "grounding widths: build DistillationObjective(cfg, Dims(student=..., teacher=..., "
                         "image=..., grounding=...))")
    return GroundingHeads.create(dims.student, dims.grounding, dims.teacher, dims.image)


def _either(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """Union of two optional masks."""
    if a is None or b is None:
        return b if a is None else a
    return a | b

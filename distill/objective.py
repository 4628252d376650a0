"""The training objective of one step: which loss terms run, on which tensors, with which masks.

Text steps: text loss (+ soft-target KL, + embedding regression) on two dropout views.
Paired steps: the same, plus ``multimodal_weight`` x (AdapACSE or MCSE) against the teacher's
image and caption embeddings. Negatives are gathered across ranks; teacher similarities for the
gathered candidates come from the gathered teacher embeddings, so every mask lines up with them.

Optional modules from related methods (:mod:`distill.modules`, docs/modules.md), each off by default
and each adding its own named, weighted terms:

=================  ==========================  ===============================================  ==========
module             switch                      effect / terms                                   steps
=================  ==========================  ===============================================  ==========
AAHR               ``aahr_queue_size``         queue of earlier ``z2`` as extra text negatives  all
                   ``aahr_prototypes``         ``aahr_prototypes`` (weight ``aahr_weight``),    all
                                               same-cluster negatives down-weighted in ``text``
soft masks         ``focal_gamma``             ``text`` (and ``soft_mask_view``) made focal     all
                   ``soft_mask_view_weight``   ``soft_mask_view``: saliency-masked positive     all
MMRef              ``mmref_weight``            ``mmref``: grounded captions vs references       paired
DIAS               ``dias_weight``             ``dias_dimension``: grounding vs image dims      paired
                   ``dias_relation_weight``    ``dias_relation``: top-k teacher relations       all
=================  ==========================  ===============================================  ==========

With every module off the terms and their sum are exactly the KDMCSE baseline's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from distill import losses
from distill.config import LossConfig
from distill.distributed import gather_with_grad
from distill.modules import AAHR, DIAS, MMRef, SoftMaskView, TextContrast
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


@dataclass(eq=False)
class Step:
    """The tensors the terms of one step share. ``h``: sentence embeddings of the two dropout views,
    ``z``: their MLP outputs; ``candidates``: ``z2`` of every rank (local anchors' positives at ``offset``);
    ``s_cc``: teacher text cosines local x gathered. Heads' outputs are computed on first use."""

    student: Student
    inputs: StepInputs
    h1: torch.Tensor
    h2: torch.Tensor
    z1: torch.Tensor
    z2: torch.Tensor
    candidates: torch.Tensor
    offset: int
    teacher_text_all: torch.Tensor
    s_cc: torch.Tensor
    exclude: torch.Tensor | None = None
    clusters: torch.Tensor | None = None  # AAHR cluster id of every gathered row
    cache: dict = field(default_factory=dict)

    @property
    def paired(self) -> bool:
        return self.inputs.teacher_image is not None

    @cached_property
    def grounded(self) -> list[torch.Tensor]:
        """Grounding-head outputs of both views, ``[B, g]`` each."""
        return [self.student.heads.ground(h) for h in (self.h1, self.h2)]

    @cached_property
    def teacher_image_all(self) -> torch.Tensor:
        return gather_all(self.inputs.teacher_image)

    @cached_property
    def image_ids_all(self) -> torch.Tensor:
        return gather_all(self.inputs.image_ids)

    @cached_property
    def images_all(self) -> torch.Tensor:
        """Adapted teacher images of every rank, ``[N, g]``."""
        return self.student.heads.adapt_images(self.teacher_image_all)

    @cached_property
    def captions_all(self) -> torch.Tensor:
        """Adapted teacher captions of every rank, ``[N, g]``."""
        return self.student.heads.adapt_captions(self.teacher_text_all)


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
        # Optional modules (None when off). The general text contrast is only used when one of them
        # reshapes the text term; otherwise ``text_loss`` computes it exactly as in the baseline.
        self.aahr = AAHR(cfg.aahr_queue_size, cfg.aahr_prototypes, cfg.aahr_cluster_negative_weight,
                         cfg.aahr_temperature, cfg.teacher_temperature, cfg.aahr_prototype_momentum) \
            if cfg.aahr_queue_size > 0 or cfg.aahr_prototypes > 0 else None
        self.soft_mask = SoftMaskView(cfg.soft_mask_strength) if cfg.soft_mask_view_weight > 0 else None
        self.mmref = MMRef(cfg.mmref_alpha, cfg.temperature) if cfg.mmref_weight > 0 else None
        self.dias = DIAS(cfg.dias_weight > 0, cfg.dias_relation_weight > 0, cfg.dias_off_diagonal_weight,
                         cfg.dias_top_k) if cfg.dias_weight > 0 or cfg.dias_relation_weight > 0 else None
        self.reshaped_text = cfg.aahr_queue_size > 0 or cfg.aahr_cluster_negative_weight < 1 or cfg.focal_gamma > 0
        self.text_contrast = TextContrast(cfg.text, cfg.temperature, cfg.text_margin, cfg.focal_gamma) \
            if self.reshaped_text or self.soft_mask is not None else None

    def forward(self, student: Student, inputs: StepInputs) -> dict[str, torch.Tensor]:
        """Loss terms of this step (already weighted) and their sum under ``"loss"``."""
        cfg = self.cfg
        step = self._prepare(student, inputs)

        terms: dict[str, torch.Tensor] = {}
        if self.text_loss is not None:
            terms["text"] = self._text(step)
        if self.soft_mask is not None:
            terms["soft_mask_view"] = cfg.soft_mask_view_weight * self._soft_mask_view(step)
        if cfg.soft_target_weight > 0:
            kl = self.soft_target(step.z1, step.candidates, step.s_cc, exclude=step.exclude,
                                  positive_offset=step.offset)
            terms["soft_target"] = cfg.soft_target_weight * kl
        if cfg.regression_weight > 0:
            predicted = student.regression(torch.cat([step.h1, step.h2]))
            target = torch.cat([inputs.teacher_text, inputs.teacher_text])
            terms["regression"] = cfg.regression_weight * self.regression(predicted, target)
        if step.paired and self.multimodal_loss is not None:
            terms["multimodal"] = cfg.multimodal_weight * self._multimodal(step)
        if self.aahr is not None and cfg.aahr_weight > 0:
            terms["aahr_prototypes"] = cfg.aahr_weight * self.aahr.prototype_loss(
                step.grounded, inputs.teacher_text, student.heads.adapt_captions)
        if self.mmref is not None and step.paired:
            terms["mmref"] = cfg.mmref_weight * self.mmref(
                step.grounded, step.images_all, step.captions_all, step.image_ids_all, step.offset)
        if self.dias is not None and self.dias.dimension_loss is not None and step.paired:
            local_images = step.images_all[step.offset:step.offset + len(step.z1)]
            terms["dias_dimension"] = cfg.dias_weight * self.dias.dimension(step.grounded, local_images)
        if self.dias is not None and self.dias.relation_loss is not None:
            terms["dias_relation"] = cfg.dias_relation_weight * self.dias.relation(
                step.z1, step.candidates, step.s_cc, step.offset)
        if not terms:
            raise ValueError("every loss term is switched off: set loss.text, loss.multimodal, "
                             "loss.soft_target_weight or loss.regression_weight")
        terms["loss"] = torch.stack(list(terms.values())).sum()

        if self.aahr is not None:  # after every term that read the queue
            self.aahr.enqueue(step.candidates, step.clusters)
        return terms

    def _prepare(self, student: Student, inputs: StepInputs) -> Step:
        """Two dropout views, gathered candidates and teacher tensors, masks, and module state updates."""
        views = student.embed(inputs.sentences + inputs.sentences)
        h1, h2 = views.chunk(2)
        z1, z2 = student.mlp(h1), student.mlp(h2)
        candidates, offset = gather_with_grad(z2)
        teacher_text_all = gather_all(inputs.teacher_text)
        s_cc = inputs.teacher_text @ teacher_text_all.T
        step = Step(student, inputs, h1, h2, z1, z2, candidates, offset, teacher_text_all, s_cc)
        step.exclude = self._exclude_mask(step)
        if self.aahr is not None:
            step.clusters = self.aahr.observe(candidates, teacher_text_all)
        return step

    def _text(self, step: Step) -> torch.Tensor:
        """KDMCSE's text loss; through the general contrast when AAHR or focal weighting reshape it."""
        if not self.reshaped_text:
            return self.text_loss(step.z1, step.candidates, exclude=step.exclude, positive_offset=step.offset)
        logits, exclude = self._text_logits(step)
        return self.text_contrast.loss(logits, step.offset, exclude)

    def _soft_mask_view(self, step: Step) -> torch.Tensor:
        """The text contrast with the soft-masked view ``z3`` as the positive and the same negatives."""
        inputs = step.inputs
        z3 = self.soft_mask(step.student, inputs.sentences, inputs.teacher_text, inputs.teacher_image)
        logits, exclude = self._text_logits(step)
        return self.text_contrast.loss(self.text_contrast.with_positive(logits, step.z1, z3, step.offset),
                                       step.offset, exclude)

    def _text_logits(self, step: Step) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text logits (queue negatives and cluster weights included) and their exclude mask, once per step."""
        if "text_logits" not in step.cache:
            candidates, exclude, weights = step.candidates, step.exclude, None
            if self.aahr is not None:
                candidates, exclude, weights = self.aahr.extend(candidates, exclude, step.clusters, step.offset,
                                                                len(step.z1))
            step.cache["text_logits"] = (self.text_contrast.logits(step.z1, candidates, step.offset, weights),
                                         exclude)
        return step.cache["text_logits"]

    def _multimodal(self, step: Step) -> torch.Tensor:
        if self.cfg.multimodal == "mcse":
            return self.multimodal_loss(step.grounded, step.images_all, exclude=step.exclude,
                                        positive_offset=step.offset)
        s_vv = step.inputs.teacher_image @ step.teacher_image_all.T
        return self.multimodal_loss(step.grounded, step.images_all, step.captions_all, s_vv, step.s_cc,
                                    exclude=step.exclude, positive_offset=step.offset)

    def _exclude_mask(self, step: Step) -> torch.Tensor | None:
        """Candidates removed from every softmax: same image, and teacher-flagged false negatives."""
        cfg, s_cc, offset = self.cfg, step.s_cc, step.offset
        masks = []
        if cfg.same_image_mask and step.inputs.image_ids is not None:
            masks.append(losses.same_image_mask(step.inputs.image_ids, step.image_ids_all, positive_offset=offset))
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

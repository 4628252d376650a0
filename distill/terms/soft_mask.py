r"""Text-driven soft masks and focal contrast, student form (Park & Han, CVPR 2023, arXiv 2304.00719).

The paper
    For each matched image-text pair, a word-conditional Grad-CAM over the image encoder's feature map
    gives a soft mask ``M in [0, 1]`` of the regions most relevant to the caption; the visual features
    multiplied by ``1 - M`` make a *harder positive* for the caption (the model must match the pair
    without its most discriminative regions). The image-text contrastive loss is made focal: each term
    is weighted by ``(1 - p_ii)^gamma`` so already-easy pairs contribute little.

The student form here (text side, the teacher's image is the condition)
    1. Saliency. The student encodes the sentences once more (eval mode, no dropout) and scores how
       well each sentence agrees with the teacher:

       - paired steps: ``s_i = cos(ground(h_i), adapt_images(v_i))``, the student's grounded caption
         against its own image through the image adapter (the teacher's caption-image match, seen by
         the student);
       - text steps, or a teacher without images: ``s_i = cos(ground(h_i), adapt_captions(t_i))``, the
         student's grounded sentence against the teacher's text embedding through the caption adapter
         (the same grounding space as the paired branch).

       Gradient x input on the word-embedding output ``e_il`` (captured with a forward hook) gives a
       Grad-CAM-like token saliency ``g_il = <ds_i/de_il, e_il>``; ReLU and division by the row's maximum
       over real tokens give ``M_il in [0, 1]`` (0 on special and padding tokens, 1 on the most salient
       token). ``M`` is detached.
    2. Soft-masked view. The sentences are encoded a third time (train mode, dropout on, under
       ``torch.no_grad``) with each word embedding scaled by ``1 - strength * M_il``; special tokens are
       untouched (``M = 0`` there). Its MLP output ``z3`` is an extra positive of the anchor ``z1``:
       the text contrast with the same negatives and ``z3_i`` in place of ``z2_i`` (see
       :func:`swap_positive`; term ``soft_mask_view``, weight ``loss.soft_mask.weight``). ``z3`` is a
       constant target, so only the anchor and the in-batch negatives receive its gradient.
    3. Focal contrast (``loss.focal_gamma``, a property of the text contrast): the text term and the
       soft-mask view term weight each anchor by ``(1 - p_i)^gamma``
       (:class:`distill.losses.WeightedInfoNCELoss`; the multimodal AdapACSE/MCSE term is not made focal).

Differences from the paper: the mask is over the student's input tokens, not the teacher's image
regions (the teacher is frozen and cached, so no teacher Grad-CAM is possible); the saliency comes from
the student's own agreement with the teacher rather than a word-conditional Grad-CAM inside the image
encoder; the masked view is a stop-gradient positive rather than a trained branch.

Cost: one extra forward and one backward (to the word embeddings only, no parameter gradients) of
``B`` sentences for the saliency, and one no-grad forward of ``B`` sentences for the third view: about
four forward-equivalents of ``B`` on top of the main step's six (a forward and a backward of ``2B``),
so roughly +60-70% encoder compute per step (less where the teacher lookup, evaluation or optimiser
dominate). Memory: the saliency graph of ``B`` sentences lives only inside this module.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.config import LossConfig
from distill.losses._common import cosine_matrix, positive_targets
from distill.step import StepTensors
from distill.student import GroundingHeads
from distill.term import CardRow, Needs, Term, register_term
from kdmcse_base.typed_config import ConfigError, at_least


def swap_positive(logits: Tensor, anchors: Tensor, positives: Tensor, temperature: float,
                  positive_offset: int) -> Tensor:
    """``logits [B, N]`` with each row's positive column replaced by ``cos(a_i, p_i) / tau`` (the negatives
    are kept: "the same negatives, another positive")."""
    B = len(anchors)
    pos = torch.diagonal(cosine_matrix(anchors, positives)) / temperature
    cols = positive_targets(B, logits.shape[1], positive_offset, logits.device)
    out = logits.clone()
    out[torch.arange(B, device=logits.device), cols] = pos.to(out)
    return out


def normalise_saliency(scores: Tensor, maskable: Tensor) -> Tensor:
    r"""``M_il = relu(g_il) / max_l relu(g_il)`` over the row's maskable tokens; 0 elsewhere and on rows
    with no positive saliency. ``scores``, ``maskable``: ``[B, L]``; returns float32 ``[B, L]`` in [0, 1]."""
    s = scores.detach().float().clamp_min(0) * maskable.to(torch.float32)
    peak = s.amax(dim=1, keepdim=True)
    return torch.where(peak > 0, s / peak.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))


def word_embeddings(student) -> nn.Module:
    """The student encoder's input (word) embedding layer."""
    return student.encoder[0].auto_model.get_input_embeddings()


@contextmanager
def word_embedding_hook(student, hook: Callable) -> Iterator[None]:
    """Register ``hook(module, args, output) -> output`` on the word embeddings for the ``with`` block."""
    handle = word_embeddings(student).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def special_token_mask(student, input_ids: Tensor) -> Tensor:
    """``[B, L]`` True at the tokenizer's special tokens ([CLS], [SEP], [PAD], ...)."""
    ids = torch.tensor(sorted(student.encoder.tokenizer.all_special_ids), device=input_ids.device)
    return torch.isin(input_ids, ids)


@dataclass
class SoftMaskConfig:
    """Text-driven soft masks (arXiv 2304.00719; docs/modules.md): term ``soft_mask_view`` (weight
    ``weight``) is the text contrast with a third, saliency-masked view as the positive; its most
    salient tokens' word embeddings are scaled by ``1 - strength * M``."""

    weight: float = field(default=1.0, metadata=at_least(0))
    strength: float = field(default=1.0, metadata={"range": (0, 1, True)})  # in (0, 1]

    def __post_init__(self) -> None:
        if self.weight == 0:
            raise ValueError("weight 0 switches the term off: remove loss.soft_mask instead")


@register_term("soft_mask", order=20, section=SoftMaskConfig)
class SoftMaskView(Term):
    r"""Third, saliency-masked view of each sentence (student form of text-driven soft masks).

    .. math::
        M_{il} = \frac{\mathrm{relu}\langle \partial s_i / \partial e_{il},\, e_{il}\rangle}
                      {\max_{l'} \mathrm{relu}\langle \partial s_i / \partial e_{il'},\, e_{il'}\rangle},
        \qquad \tilde e_{il} = (1 - \lambda M_{il})\, e_{il}, \qquad z^{(3)}_i = \mathrm{mlp}(\mathrm{enc}(\tilde e_i))

    (``s_i``: the agreement score of the module docstring; ``lambda``: ``strength``). The objective uses
    ``z3`` as an extra positive of ``z1`` with the text term's negatives.

    Args:
        cfg: ``loss.soft_mask``: the term's ``weight`` and ``strength`` = ``lambda`` in (0, 1] (1 zeroes
            the most salient token's word embedding, the paper's ``x (1 - M)``).

    Reference: Park, Han. "Multi-Modal Representation Learning with Text-Driven Soft Masks", CVPR 2023,
    arXiv 2304.00719.
    """

    needs = Needs(text_logits=True, heads=True)
    citation = "Park & Han, CVPR 2023, arXiv 2304.00719"

    def __init__(self, cfg: SoftMaskConfig):
        super().__init__()
        self.weight, self.strength = cfg.weight, cfg.strength

    @classmethod
    def check(cls, loss: LossConfig, section: SoftMaskConfig) -> None:
        if loss.text == "none":
            raise ConfigError("loss.soft_mask contrasts a third view in the text loss, which loss.text=none switches off")

    @classmethod
    def card_rows(cls, loss: LossConfig, section: SoftMaskConfig) -> list[CardRow]:
        return [("soft-masked third view", section.weight, f"strength {section.strength}")]

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        """``soft_mask_view``: ``weight`` x the text contrast (``step.text_contrast``) with ``z3`` as the
        positive and the text term's negatives (``step.text_logits``)."""
        contrast = step.text_contrast
        inputs = step.inputs
        z3 = self(step.student, step.heads, inputs.features, inputs.teacher_text, inputs.teacher_image)
        logits = swap_positive(step.text_logits, step.z1, z3, contrast.temperature, step.offset)
        return {"soft_mask_view": self.weight * contrast.from_logits(logits, step.offset, step.text_exclude)}

    @staticmethod
    def agreement(heads: GroundingHeads, h: Tensor, teacher_text: Tensor, teacher_image: Tensor | None) -> Tensor:
        """``[B]`` score whose gradient defines the saliency (see the module docstring)."""
        with torch.no_grad():
            paired = teacher_image is not None and heads.image_adapter is not None
            target = heads.adapt_images(teacher_image) if paired else heads.adapt_captions(teacher_text)
        return F.cosine_similarity(heads.ground(h).float(), target.float(), dim=-1)

    def saliency(self, student, heads: GroundingHeads, features: dict[str, Any], teacher_text: Tensor,
                 teacher_image: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(M [B, L] float32 in [0, 1], input_ids [B, L])`` of the tokenised sentences
        (``Student.tokenise``), scored in the grounding space of ``heads``; the encoder runs in eval mode."""
        captured: dict[str, Tensor] = {}

        def capture(module, args, output):
            x = output.detach().requires_grad_(True)  # grad w.r.t. the embeddings only
            captured["ids"], captured["x"] = args[0], x
            return x

        encoder = student.encoder
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.enable_grad(), word_embedding_hook(student, capture):
                h = student.embed_features(features)
                score = self.agreement(heads, h, teacher_text, teacher_image)
                (grad,) = torch.autograd.grad(score.sum(), captured["x"])
        finally:
            encoder.train(was_training)
        x, ids = captured["x"].detach(), captured["ids"]
        scores = (grad.float() * x.float()).sum(-1)
        return normalise_saliency(scores, ~special_token_mask(student, ids)), ids

    def encode_masked(self, student, features: dict[str, Any], mask: Tensor, input_ids: Tensor) -> Tensor:
        """MLP output of the sentences with word embeddings scaled by ``1 - strength * mask`` (no grad)."""
        scale = (1 - self.strength * mask.detach())[..., None]

        def rescale(module, args, output):
            if args[0].shape != input_ids.shape or not torch.equal(args[0], input_ids.to(args[0].device)):
                raise RuntimeError("the soft-mask view tokenised the sentences differently from the saliency pass")
            return output * scale.to(output)

        with torch.no_grad(), word_embedding_hook(student, rescale):
            return student.mlp(student.embed_features(features))

    def forward(self, student, heads: GroundingHeads, features: dict[str, Any], teacher_text: Tensor,
                teacher_image: Tensor | None = None) -> Tensor:
        """``z3 [B, d]``: the soft-masked view (constant)."""
        mask, ids = self.saliency(student, heads, features, teacher_text, teacher_image)
        return self.encode_masked(student, features, mask, ids)

    def extra_repr(self) -> str:
        return f"weight={self.weight}, strength={self.strength}"

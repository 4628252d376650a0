"""KDMCSE's adaptive angular-margin cross-modal loss, AdapACSE / L_inter (arXiv 2403.17486)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._common import ARCCOS_EPS, as_views, cosine_matrix, info_nce, positive_targets
from .angular_margin import angular_margin_cosines


def adaptive_margin_logits(grounding: Tensor, adapters: Tensor, teacher_sims: Tensor | None,
                           margin: float = 0.15, temperature: float = 0.05, positive_offset: int = 0,
                           eps: float = ARCCOS_EPS) -> Tensor:
    r"""``cos(theta(p_i, v_j) - I_ij (1 - s_ij) m) / tau``: ``[B, d] x [N, d] (+ s [B, N]) -> [B, N]``.

    ``I_ij = [j != o+i and theta_ij > m]`` (the indicator uses the full margin ``m``, as in the
    released code); ``s = None`` means ``s = 0`` (uniform margin ``m``, i.e. plain L_intra logits).
    """
    cos = cosine_matrix(grounding, adapters)
    if teacher_sims is None:
        scaled = margin
    else:
        if teacher_sims.shape != cos.shape:
            raise ValueError(f"teacher sims {tuple(teacher_sims.shape)} != logits {tuple(cos.shape)}")
        scaled = (1 - teacher_sims.detach().to(cos)) * margin
    return angular_margin_cosines(cos, scaled, margin, positive_offset, eps) / temperature


class AdapACSELoss(nn.Module):
    r"""KDMCSE's multimodal loss L_inter: angular-margin InfoNCE from the student's grounding vectors
    to the image and caption adapters, with a margin that shrinks as the teacher finds a negative
    more similar.

    For every dropout view ``p`` (``p_1, p_2``), image adapters ``v`` and caption adapters ``t``:

    .. math::
        \mathrm{logit}^v_{ij} = \cos\big(\theta(p_i, v_j) - I^v_{ij}\,(1 - s^{vv}_{ij})\, m\big) / \tau,
        \qquad
        \mathrm{logit}^t_{ij} = \cos\big(\theta(p_i, t_j) - I^t_{ij}\,(1 - s^{cc}_{ij})\, m\big) / \tau

        I_{ij} = [\,j \ne o+i \;\wedge\; \theta_{ij} > m\,], \qquad
        L = \tfrac{1}{V}\sum_p \mathrm{CE}(\mathrm{logit}^v, o+i)
          + \tfrac{1}{V}\sum_p \mathrm{CE}(\mathrm{logit}^t, o+i)

    where ``s^vv_ij`` / ``s^cc_ij`` are the teacher's (CLIP) cosines between image i and image j /
    caption i and caption j. ``s`` is a target: it is detached and not clamped (``s < 0`` gives a
    margin above ``m``). ``exclude`` applies to both terms (e.g. same-image or teacher-threshold
    masks from :mod:`distill.losses.false_negatives`); the positive is never removed.

    Args:
        margin: ``m`` in radians (KDMCSE ``margin2 = 0.15``).
        temperature: ``tau`` (KDMCSE ``temp_vl = 0.05``).
        eps: arccos clamp.

    Inputs:
        views: sequence of ``[B, d]`` grounding vectors (or one ``[B, d]`` / a ``[V, B, d]`` stack);
        image: ``[N, d]`` image adapters ``v`` or None; caption: ``[N, d]`` caption adapters ``t`` or None
        (at least one given; a None term is dropped); s_vv, s_cc: ``[B, N]`` teacher cosines or None
        (None = uniform margin ``m``); exclude ``BoolTensor [B, N]`` or None; positive_offset ``int``.

    Returns:
        scalar loss (sum of the two view-averaged terms).

    Reference:
        Nguyen et al. "KDMCSE: Knowledge Distillation Multimodal Sentence Embeddings with Adaptive
        Angular margin Contrastive Learning", NAACL 2024, arXiv 2403.17486.
    """

    def __init__(self, margin: float = 0.15, temperature: float = 0.05, eps: float = ARCCOS_EPS):
        super().__init__()
        self.margin, self.temperature, self.eps = margin, temperature, eps

    def forward(self, views: Sequence[Tensor] | Tensor, image: Tensor | None = None,
                caption: Tensor | None = None, s_vv: Tensor | None = None, s_cc: Tensor | None = None,
                exclude: Tensor | None = None, positive_offset: int = 0) -> Tensor:
        views = as_views(views)
        terms = [(adapters, sims) for adapters, sims in ((image, s_vv), (caption, s_cc)) if adapters is not None]
        if not terms:
            raise ValueError("AdapACSELoss needs image and/or caption adapters")
        loss = 0
        for adapters, sims in terms:
            targets = positive_targets(len(views[0]), len(adapters), positive_offset, adapters.device)
            per_view = [
                info_nce(adaptive_margin_logits(p, adapters, sims, self.margin, self.temperature,
                                                positive_offset, self.eps), targets, exclude)
                for p in views
            ]
            loss = loss + torch.stack(per_view).mean()
        return loss

    def extra_repr(self) -> str:
        return f"margin={self.margin}, temperature={self.temperature}"

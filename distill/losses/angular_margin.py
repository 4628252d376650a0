"""KDMCSE's angular-margin InfoNCE, L_intra (Nguyen et al., NAACL 2024, arXiv 2403.17486)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import ARCCOS_EPS, cosine_matrix, info_nce, positive_mask, positive_targets


def angular_margin_cosines(cos: Tensor, margin: float | Tensor, base_margin: float,
                           positive_offset: int = 0, eps: float = ARCCOS_EPS) -> Tensor:
    r"""Apply KDMCSE's additive angular margin to a cosine matrix (no temperature).

    .. math::
        \theta_{ij} = \arccos(\mathrm{clamp}(\cos_{ij}, -1+\epsilon, 1-\epsilon)), \quad
        I_{ij} = [\,j \ne o+i\,]\,[\,\theta_{ij} > m_0\,], \quad
        \mathrm{out}_{ij} = \cos(\theta_{ij} - I_{ij}\, m_{ij}) \text{ if } I_{ij} \text{ else } \cos_{ij}

    ``m_0 = base_margin`` decides *which* negatives get a margin (KDMCSE: ``theta > m``);
    ``m_ij = margin`` (a float or a ``[B, N]`` tensor, e.g. ``(1 - s_ij) m`` in AdapACSE) is *how much*.
    Reducing a negative's angle raises its logit, so the positive must win by a margin.
    Entries without margin (the positive, negatives closer than ``m_0``) are the raw cosine, so
    their value and gradient are exact and the arccos clamp never touches them.

    Args:
        cos: ``[B, N]`` cosines (float32/float64).
        margin: float or ``[B, N]`` tensor of margins in radians.
        base_margin: indicator threshold ``m_0`` in radians.
        positive_offset: positive of row ``i`` is column ``positive_offset + i``.
        eps: arccos clamp.
    """
    B, N = cos.shape
    theta = torch.arccos(cos.clamp(-1 + eps, 1 - eps))
    apply = (theta > base_margin) & ~positive_mask(B, N, positive_offset, cos.device)
    return torch.where(apply, torch.cos(theta - margin), cos)


def angular_margin_logits(anchors: Tensor, candidates: Tensor, margin: float = 0.15,
                          temperature: float = 0.05, positive_offset: int = 0,
                          eps: float = ARCCOS_EPS) -> Tensor:
    """KDMCSE L_intra logits ``cos(theta_ij - I_ij m) / tau``: ``[B, d] x [N, d] -> [B, N]``."""
    cos = cosine_matrix(anchors, candidates)
    return angular_margin_cosines(cos, margin, margin, positive_offset, eps) / temperature


class AngularMarginLoss(nn.Module):
    r"""KDMCSE's text loss L_intra: InfoNCE with an additive angular margin on the negatives.

    .. math::
        \theta_{ij} = \arccos(\mathrm{clamp}(\cos(a_i, c_j), -1+\epsilon, 1-\epsilon)), \qquad
        I_{ij} = [\,j \ne o+i \;\wedge\; \theta_{ij} > m\,]

        \mathrm{logit}_{ij} = \cos(\theta_{ij} - I_{ij}\, m) / \tau, \qquad
        L = \frac{1}{B}\sum_i \mathrm{CE}(\mathrm{logit}_{i\cdot},\ o+i)

    (``o = positive_offset``; ``exclude``d candidates get ``-inf``, never the positive). The positive
    logit is the plain ``cos / tau``; a negative's angle is shrunk by ``m``, raising its logit, so the
    positive has to beat every negative by an angular margin. With ``m = 0`` this is :class:`SimCSELoss`.
    The indicator ``theta > m`` is piecewise constant, so the loss is smooth except where a negative
    crosses ``theta = m``.

    Args:
        margin: ``m`` in radians (KDMCSE ``margin1 = 0.15``).
        temperature: ``tau`` (0.05).
        eps: arccos clamp (see ``_common.ARCCOS_EPS``; the angle is computed in float32/float64).

    Inputs:
        anchors ``[B, d]`` (view 1, e.g. MLP head ``z1``), candidates ``[N, d]`` (view 2 ``z2``, possibly
        gathered over ranks), exclude ``BoolTensor [B, N]`` or None, positive_offset ``int``.

    Returns:
        scalar loss.

    Reference:
        Nguyen, Nguyen, Tran, Luu. "KDMCSE: Knowledge Distillation Multimodal Sentence Embeddings with
        Adaptive Angular margin Contrastive Learning", NAACL 2024, arXiv 2403.17486 (Eq. for L_intra;
        code ``ArcSimilarity.calculate_arccos2``).
    """

    def __init__(self, margin: float = 0.15, temperature: float = 0.05, eps: float = ARCCOS_EPS):
        super().__init__()
        self.margin, self.temperature, self.eps = margin, temperature, eps

    def forward(self, anchors: Tensor, candidates: Tensor, exclude: Tensor | None = None,
                positive_offset: int = 0) -> Tensor:
        targets = positive_targets(len(anchors), len(candidates), positive_offset, anchors.device)
        logits = angular_margin_logits(anchors, candidates, self.margin, self.temperature,
                                       positive_offset, self.eps)
        return info_nce(logits, targets, exclude)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, temperature={self.temperature}"

"""Weighted, focal InfoNCE: the general form of the text contrast that AAHR and the soft-mask method
reshape (arXiv 2507.09256, arXiv 2304.00719)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import cosine_logits, info_nce, positive_mask, positive_targets
from .angular_margin import angular_margin_logits


def focal_weights(ce: Tensor, gamma: float) -> Tensor:
    r"""``(1 - p_i)^gamma`` with ``p_i = exp(-ce_i)``, detached (per-anchor importance weights)."""
    return (1 - (-ce.detach()).exp()).clamp_min(0) ** gamma


class WeightedInfoNCELoss(nn.Module):
    r"""InfoNCE with weighted negatives and focally weighted anchors.

    .. math::
        \mathrm{logit}_{ij} = f(a_i, c_j)/\tau + \log W_{ij}, \qquad
        \ell_i = \mathrm{CE}(\mathrm{logit}_{i\cdot}\setminus E_i,\ o+i), \qquad
        L = \frac{1}{B}\sum_i (1 - p_i)^{\gamma}\, \ell_i,\quad p_i = e^{-\ell_i}

    ``f`` is the cosine (``margin=None``, SimCSE) or KDMCSE's angular-margin cosine ``cos(theta - I m)``
    (``margin=m``; the positive never gets a margin). ``W`` in [0, 1] weighs each negative's share of
    the partition function (AAHR's same-cluster weights; the positive's weight is forced to 1; ``w = 0``
    removes a candidate like ``exclude``); ``E`` is the ``exclude`` mask; ``gamma`` focuses on hard
    anchors (Park & Han's focal contrast). The focal weight is detached: a per-anchor importance weight,
    so each term keeps InfoNCE's gradient direction. Normalisation is by ``B``, so the loss scale
    shrinks as training progresses. ``W = 1``, ``gamma = 0`` is :class:`SimCSELoss` /
    :class:`AngularMarginLoss`.

    Args:
        temperature: ``tau`` (0.05).
        margin: ``m`` in radians, or None for plain cosines.
        gamma: focusing parameter (0 = plain mean).

    Inputs:
        anchors ``[B, d]``, candidates ``[N, d]``, weights ``[B, N]`` in [0, 1] or None,
        exclude ``BoolTensor [B, N]`` or None, positive_offset ``int``. :meth:`logits` and
        :meth:`from_logits` split the computation for callers that change the logits in between.

    Returns:
        scalar loss.

    Reference:
        AAHR arXiv 2507.09256 (soft positives among in-batch negatives); Park, Han. "Multi-Modal
        Representation Learning with Text-Driven Soft Masks", CVPR 2023, arXiv 2304.00719 (focal ITC);
        Lin et al. "Focal Loss for Dense Object Detection", ICCV 2017, arXiv 1708.02002.
    """

    def __init__(self, temperature: float = 0.05, margin: float | None = None, gamma: float = 0.0):
        super().__init__()
        self.temperature, self.margin, self.gamma = temperature, margin, gamma

    def logits(self, anchors: Tensor, candidates: Tensor, positive_offset: int = 0,
               weights: Tensor | None = None) -> Tensor:
        """``[B, N]`` logits ``f(a_i, c_j) / tau + log W_ij`` (float32/float64)."""
        if self.margin is None:
            logits = cosine_logits(anchors, candidates, self.temperature)
        else:
            logits = angular_margin_logits(anchors, candidates, self.margin, self.temperature, positive_offset)
        if weights is None:
            return logits
        if weights.shape != logits.shape:
            raise ValueError(f"weights {tuple(weights.shape)} != logits {tuple(logits.shape)}")
        w = weights.detach().to(logits).clamp(0, 1)
        w = w.masked_fill(positive_mask(*logits.shape, positive_offset, logits.device), 1.0)
        return logits + torch.log(w)  # log 0 = -inf removes the candidate

    def from_logits(self, logits: Tensor, positive_offset: int = 0, exclude: Tensor | None = None) -> Tensor:
        """Focally weighted mean cross-entropy to the positives at ``positive_offset + i``."""
        targets = positive_targets(logits.shape[0], logits.shape[1], positive_offset, logits.device)
        ce = info_nce(logits, targets, exclude, reduction="none")
        if self.gamma > 0:
            ce = focal_weights(ce, self.gamma) * ce
        return ce.mean()

    def forward(self, anchors: Tensor, candidates: Tensor, weights: Tensor | None = None,
                exclude: Tensor | None = None, positive_offset: int = 0) -> Tensor:
        return self.from_logits(self.logits(anchors, candidates, positive_offset, weights), positive_offset, exclude)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, margin={self.margin}, gamma={self.gamma}"

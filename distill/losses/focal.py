"""Focal InfoNCE: hard anchors weighted up by (1 - p_ii)^gamma (Park & Han, CVPR 2023, arXiv 2304.00719)."""
from __future__ import annotations

from torch import Tensor, nn

from ._common import cosine_logits, info_nce, positive_targets


class FocalInfoNCELoss(nn.Module):
    r"""InfoNCE whose per-anchor terms are focally weighted (student form of the focal ITC loss).

    .. math::
        \ell_i = -\log p_{i},\quad
        p_{i} = \frac{\exp(\cos(a_i, c_{o+i})/\tau)}{\sum_{j \notin E_i} \exp(\cos(a_i, c_j)/\tau)},
        \qquad L = \frac{1}{B}\sum_i (1 - p_{i})^{\gamma}\, \ell_i

    Anchors whose positive is already well separated (``p_i -> 1``) contribute little; ``gamma = 0``
    gives :class:`SimCSELoss`. The weight is **detached by default** (``detach_weight=True``): it acts
    as a per-sample importance weight and the gradient is that of a re-weighted InfoNCE, which keeps
    the update direction of each term unchanged. ``detach_weight=False`` gives the full focal-loss
    gradient of Lin et al. (2017). Normalisation is by ``B`` (not by the sum of weights), so the loss
    scale shrinks as training progresses.

    Args:
        temperature: ``tau`` (0.05).
        gamma: focusing parameter (2.0).
        detach_weight: stop the gradient through ``(1 - p_i)^gamma``.

    Inputs:
        anchors ``[B, d]``, candidates ``[N, d]``, exclude ``BoolTensor [B, N]`` or None,
        positive_offset ``int``.

    Returns:
        scalar loss.

    Reference:
        Park, Han. "Multi-Modal Representation Learning with Text-Driven Soft Masks", CVPR 2023,
        arXiv 2304.00719 (focal ITC loss); Lin et al. "Focal Loss for Dense Object Detection",
        ICCV 2017, arXiv 1708.02002.
    """

    def __init__(self, temperature: float = 0.05, gamma: float = 2.0, detach_weight: bool = True):
        super().__init__()
        self.temperature, self.gamma, self.detach_weight = temperature, gamma, detach_weight

    def forward(self, anchors: Tensor, candidates: Tensor, exclude: Tensor | None = None,
                positive_offset: int = 0) -> Tensor:
        targets = positive_targets(len(anchors), len(candidates), positive_offset, anchors.device)
        ce = info_nce(cosine_logits(anchors, candidates, self.temperature), targets, exclude, reduction="none")
        p = (-ce).exp()
        weight = (1 - p).clamp_min(0) ** self.gamma
        if self.detach_weight:
            weight = weight.detach()
        return (weight * ce).mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, gamma={self.gamma}, detach_weight={self.detach_weight}"

"""The text contrastive term in its general form, used when a module reshapes it.

KDMCSE's text loss is computed by :class:`distill.losses.AngularMarginLoss` (or ``SimCSELoss``). AAHR
adds queue negatives and same-cluster weights to it, the focal contrast of the soft-mask method
re-weights its anchors, and the soft-mask view swaps its positive. :class:`TextContrast` builds the
same logits once and lets each of those changes be applied to them; with none applied it equals the
plain loss (the objective still calls the plain loss then, so the default run is unchanged bit for bit).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from distill import losses
from distill.losses._common import cosine_matrix, info_nce, positive_mask, positive_targets

from .soft_mask import focal_weights


class TextContrast(nn.Module):
    r"""InfoNCE of anchors against candidates with optional negative weights, focal weighting and a
    swapped positive.

    .. math::
        \mathrm{logit}_{ij} = f(a_i, c_j)/\tau + \log W_{ij}, \qquad
        \ell_i = \mathrm{CE}(\mathrm{logit}_{i\cdot}\setminus E_i,\ o+i), \qquad
        L = \frac{1}{B}\sum_i (1 - p_i)^{\gamma}\, \ell_i,\quad p_i = e^{-\ell_i}

    ``f`` is the cosine (``kind="simcse"``) or KDMCSE's angular-margin cosine ``cos(theta - I m)``
    (``kind="angular"``; the positive never gets a margin). ``W`` (in [0, 1], positive forced to 1) comes
    from AAHR's same-cluster weights, ``E`` is the usual ``exclude`` mask, ``gamma`` is the focal
    parameter (0 = plain mean; the weight is detached, as in :class:`distill.losses.FocalInfoNCELoss`).

    Args:
        kind: ``"simcse"`` or ``"angular"`` (``loss.text``).
        temperature: ``tau``.
        margin: angular margin ``m`` (radians), ``angular`` only.
        focal_gamma: ``gamma``.
    """

    def __init__(self, kind: str, temperature: float, margin: float, focal_gamma: float = 0.0):
        super().__init__()
        if kind not in ("simcse", "angular"):
            raise ValueError(f"kind must be simcse or angular, got {kind!r}")
        self.kind, self.temperature, self.margin, self.focal_gamma = kind, temperature, margin, focal_gamma

    def logits(self, anchors: Tensor, candidates: Tensor, positive_offset: int,
               weights: Tensor | None = None) -> Tensor:
        """``[B, N]`` logits ``f(a_i, c_j) / tau + log W_ij`` (float32/float64)."""
        if self.kind == "angular":
            logits = losses.angular_margin_logits(anchors, candidates, self.margin, self.temperature, positive_offset)
        else:
            logits = losses.cosine_logits(anchors, candidates, self.temperature)
        if weights is not None:
            if weights.shape != logits.shape:
                raise ValueError(f"weights {tuple(weights.shape)} != logits {tuple(logits.shape)}")
            w = weights.detach().to(logits).clamp(0, 1)
            w = w.masked_fill(positive_mask(*logits.shape, positive_offset, logits.device), 1.0)
            logits = logits + torch.log(w)  # log 0 = -inf removes the candidate
        return logits

    def with_positive(self, logits: Tensor, anchors: Tensor, positives: Tensor, positive_offset: int) -> Tensor:
        """``logits`` with each row's positive column replaced by ``cos(a_i, p_i) / tau`` (the negatives
        are kept: "the same negatives, another positive")."""
        B = len(anchors)
        pos = torch.diagonal(cosine_matrix(anchors, positives)) / self.temperature
        cols = positive_targets(B, logits.shape[1], positive_offset, logits.device)
        out = logits.clone()
        out[torch.arange(B, device=logits.device), cols] = pos.to(out)
        return out

    def loss(self, logits: Tensor, positive_offset: int, exclude: Tensor | None = None) -> Tensor:
        """Focally weighted mean cross-entropy to the positives at ``positive_offset + i``."""
        targets = positive_targets(logits.shape[0], logits.shape[1], positive_offset, logits.device)
        ce = info_nce(logits, targets, exclude, reduction="none")
        if self.focal_gamma > 0:
            ce = focal_weights(ce, self.focal_gamma) * ce
        return ce.mean()

    def extra_repr(self) -> str:
        return f"kind={self.kind}, temperature={self.temperature}, margin={self.margin}, focal_gamma={self.focal_gamma}"

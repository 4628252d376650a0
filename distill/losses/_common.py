"""Shared tensor helpers for the contrastive losses (private: import from ``distill.losses``).

Conventions used by every loss in this package
----------------------------------------------
* anchors ``a``: ``[B, d]``; candidates ``c``: ``[N, d]`` with ``N >= B``. The positive of anchor
  ``i`` is candidate ``positive_offset + i`` (``positive_offset = rank * B`` when the candidates were
  gathered across ranks, see :func:`distill.gather.gather_with_grad`).
* ``exclude``: optional ``BoolTensor [B, N]``; ``True`` removes candidate ``j`` from anchor ``i``'s
  softmax (its logit becomes ``-inf``). A row's positive is never removed, whatever the mask says,
  so every row keeps one finite logit and the loss stays finite.
* Similarities are cosines of L2-normalised inputs, computed in at least float32 (float64 inputs
  stay float64, so ``gradcheck`` works); the returned loss is float32/float64 even for fp16/bf16
  inputs and gradients flow back in the inputs' dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Clamp for arccos: cos is kept in [-1 + eps, 1 - eps] before arccos, so d/dx arccos(x) is bounded by
# 1 / sqrt(1 - (1 - eps)^2) ~ 707. The angular part is always computed in float32 (or float64), where
# 1 - 1e-6 is representable (float32 spacing below 1 is 6e-8); fp16/bf16 inputs are upcast first, so
# their coarse spacing (1e-3 / 4e-3) never reaches arccos.
ARCCOS_EPS = 1e-6


def compute_dtype(*xs: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (fp16/bf16 are upcast)."""
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def full_precision(device: torch.device):
    """Context that switches autocast off, so matmuls really run in float32 inside a bf16/fp16 autocast."""
    return torch.autocast(device_type=device.type, enabled=False)


def cosine_matrix(a: Tensor, c: Tensor) -> Tensor:
    """``cos(a_i, c_j)`` for ``a: [B, d]``, ``c: [N, d]`` -> ``[B, N]`` in float32/float64 (also under autocast)."""
    dt = compute_dtype(a, c)
    with full_precision(a.device):
        return F.normalize(a.to(dt), dim=-1) @ F.normalize(c.to(dt), dim=-1).T


def cosine_logits(anchors: Tensor, candidates: Tensor, temperature: float) -> Tensor:
    """InfoNCE logits ``cos(a_i, c_j) / tau``: ``[B, d] x [N, d] -> [B, N]``."""
    return cosine_matrix(anchors, candidates) / temperature


def positive_targets(batch: int, num_candidates: int, positive_offset: int, device) -> Tensor:
    """Column of each anchor's positive: ``positive_offset + arange(B)`` (checked to lie in [0, N))."""
    if positive_offset < 0 or positive_offset + batch > num_candidates:
        raise ValueError(
            f"positives {positive_offset}..{positive_offset + batch - 1} out of range for "
            f"{num_candidates} candidates"
        )
    return torch.arange(batch, device=device) + positive_offset


def positive_mask(batch: int, num_candidates: int, positive_offset: int = 0, device=None) -> Tensor:
    """``BoolTensor [B, N]``, True exactly at ``(i, positive_offset + i)``."""
    mask = torch.zeros(batch, num_candidates, dtype=torch.bool, device=device)
    idx = torch.arange(batch, device=device)
    mask[idx, positive_targets(batch, num_candidates, positive_offset, device)] = True
    return mask


def removal_mask(exclude: Tensor | None, targets: Tensor, shape: torch.Size) -> Tensor | None:
    """``exclude`` with each row's target column forced to False (the positive is never removed)."""
    if exclude is None:
        return None
    if exclude.shape != shape:
        raise ValueError(f"exclude has shape {tuple(exclude.shape)}, expected {tuple(shape)}")
    exclude = exclude.to(device=targets.device, dtype=torch.bool).clone()
    exclude[torch.arange(shape[0], device=targets.device), targets] = False
    return exclude


def mask_logits(logits: Tensor, exclude: Tensor | None, targets: Tensor) -> Tensor:
    """Set removed candidates' logits to ``-inf`` (never the target's). ``-inf`` is safe here:
    log-softmax of a row with one finite entry is finite and the removed entries get zero gradient."""
    exclude = removal_mask(exclude, targets, logits.shape)
    return logits if exclude is None else logits.masked_fill(exclude, float("-inf"))


def info_nce(logits: Tensor, targets: Tensor, exclude: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``logits [B, N]`` to ``targets [B]`` after removing ``exclude``d candidates."""
    return F.cross_entropy(mask_logits(logits, exclude, targets), targets, reduction=reduction)


def as_views(views: Tensor | list[Tensor] | tuple[Tensor, ...]) -> list[Tensor]:
    """Accept one ``[B, d]`` tensor, a ``[V, B, d]`` stack or a sequence of ``[B, d]`` views."""
    if isinstance(views, Tensor):
        return [views] if views.dim() == 2 else list(views.unbind(0))
    views = list(views)
    if not views:
        raise ValueError("need at least one view")
    return views

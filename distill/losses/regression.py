"""Embedding regression onto teacher embeddings (Reimers & Gurevych 2020, arXiv 2004.09813)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import compute_dtype


class EmbeddingRegressionLoss(nn.Module):
    r"""Regress student embeddings onto teacher embeddings of the same inputs.

    .. math::
        \text{mse:}\quad L = \frac{1}{B d}\sum_{i,k} (s_{ik} - t_{ik})^2, \qquad
        \text{cosine:}\quad L = \frac{1}{B}\sum_i \big(1 - \cos(s_i, t_i)\big)

    Only meaningful when student and teacher live in the same space with the same dimension ``d``
    (e.g. after a projection head computed by the caller). The teacher is treated as a constant.
    ``mse`` is sentence-transformers' ``MSELoss`` (no normalisation); ``cosine`` ignores norms.

    Args:
        mode: ``"mse"`` or ``"cosine"``.

    Inputs:
        student ``[B, d]``, teacher ``[B, d]``.

    Returns:
        scalar loss.

    Reference:
        Reimers, Gurevych. "Making Monolingual Sentence Embeddings Multilingual using Knowledge
        Distillation", EMNLP 2020, arXiv 2004.09813 (sentence-transformers ``MSELoss``).
    """

    def __init__(self, mode: str = "mse"):
        super().__init__()
        if mode not in ("mse", "cosine"):
            raise ValueError(f"mode must be 'mse' or 'cosine', got {mode!r}")
        self.mode = mode

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        if student.shape != teacher.shape:
            raise ValueError(f"student {tuple(student.shape)} != teacher {tuple(teacher.shape)}")
        dt = compute_dtype(student, teacher)
        s, t = student.to(dt), teacher.detach().to(dt)
        if self.mode == "mse":
            return F.mse_loss(s, t)
        return (1 - (F.normalize(s, dim=-1) * F.normalize(t, dim=-1)).sum(-1)).mean()

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"

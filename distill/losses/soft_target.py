"""Soft-target distillation of in-batch similarity rows (KL from teacher to student softmax)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._common import cosine_logits, positive_targets, removal_mask


def soft_target_kl(student_logits: Tensor, teacher_logits: Tensor, exclude: Tensor | None = None,
                   targets: Tensor | None = None) -> Tensor:
    r"""``mean_i KL(softmax(teacher_logits_i) || softmax(student_logits_i))`` over rows ``[B, N]``.

    Excluded entries (never a row's ``targets`` column, default ``arange(B)``) are dropped from both
    softmaxes; their ``0 * log 0`` terms are set to 0 explicitly, so forward and backward stay finite.
    """
    teacher_logits = teacher_logits.detach().to(student_logits)
    drop = None
    if exclude is not None:
        if targets is None:
            targets = positive_targets(len(student_logits), student_logits.shape[1], 0, student_logits.device)
        drop = removal_mask(exclude, targets, student_logits.shape)
    if drop is not None:
        student_logits = student_logits.masked_fill(drop, float("-inf"))
        teacher_logits = teacher_logits.masked_fill(drop, float("-inf"))
    log_p_s = F.log_softmax(student_logits, dim=-1)
    log_p_t = F.log_softmax(teacher_logits, dim=-1)
    p_t = log_p_t.exp()  # exactly 0 on dropped entries
    if drop is not None:
        log_p_s, log_p_t = log_p_s.masked_fill(drop, 0.0), log_p_t.masked_fill(drop, 0.0)
    return (p_t * (log_p_t - log_p_s)).sum(-1).mean()


class SoftTargetKLLoss(nn.Module):
    r"""Distil the teacher's in-batch similarity distribution into the student's.

    .. math::
        P^t_{ij} = \mathrm{softmax}_j(s_{ij} / \tau_t), \qquad
        P^s_{ij} = \mathrm{softmax}_j(\cos(a_i, c_j) / \tau), \qquad
        L = \frac{1}{B}\sum_i \sum_{j \notin E_i} P^t_{ij} \log \frac{P^t_{ij}}{P^s_{ij}}

    ``s`` is the teacher's similarity of the same (anchor, candidate) pairs (e.g. CLIP caption-caption
    or caption-image cosines), treated as a constant. ``exclude`` (``E_i``, never the positive) is
    removed from both distributions. No ``tau^2`` gradient rescaling is applied; scale the weight of
    this loss instead. Unlike InfoNCE the positive is not a hard target: ``positive_offset`` only
    protects the positive column from ``exclude``.

    Args:
        temperature: student ``tau`` (0.05).
        teacher_temperature: teacher ``tau_t`` (0.05; lower = sharper targets).

    Inputs:
        anchors ``[B, d]``, candidates ``[N, d]`` (student embeddings, normalised inside),
        teacher_sims ``[B, N]``, exclude ``BoolTensor [B, N]`` or None, positive_offset ``int``.

    Returns:
        scalar loss (>= 0).

    Reference:
        sentence-transformers ``DistillKLDivLoss``; Hinton, Vinyals, Dean, "Distilling the Knowledge in
        a Neural Network", arXiv 1503.02531; cross-modal consistency in DALR (soft in-batch targets).
    """

    def __init__(self, temperature: float = 0.05, teacher_temperature: float = 0.05):
        super().__init__()
        self.temperature, self.teacher_temperature = temperature, teacher_temperature

    def forward(self, anchors: Tensor, candidates: Tensor, teacher_sims: Tensor,
                exclude: Tensor | None = None, positive_offset: int = 0) -> Tensor:
        student = cosine_logits(anchors, candidates, self.temperature)
        if teacher_sims.shape != student.shape:
            raise ValueError(f"teacher_sims {tuple(teacher_sims.shape)} != {tuple(student.shape)}")
        targets = positive_targets(len(anchors), len(candidates), positive_offset, anchors.device)
        return soft_target_kl(student, teacher_sims / self.teacher_temperature, exclude, targets)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, teacher_temperature={self.teacher_temperature}"

"""Student-side forms of DIAS (arXiv 2410.16853): per-dimension information alignment between the
student's grounding vectors and the teacher's image embeddings, and a sparse relation constraint."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import compute_dtype, cosine_matrix, full_precision, positive_targets


class DimensionAlignmentLoss(nn.Module):
    r"""Push the cross-correlation between standardised student and teacher dimensions to identity
    (Barlow-Twins form of DIAS's dimension information alignment).

    .. math::
        \tilde z_{bk} = \frac{z_{bk} - \mu_k}{\sqrt{\sigma_k^2 + \epsilon}} \ \text{(per dimension, over the batch)},
        \qquad C = \tfrac{1}{B}\, \tilde Z_s^\top \tilde Z_t \in \mathbb{R}^{d \times d}

        L = \sum_k (1 - C_{kk})^2 + \lambda \sum_{k \ne l} C_{kl}^2

    so dimension ``k`` of the student carries the same information as dimension ``k`` of the teacher
    (diagonal -> 1) and different dimensions are decorrelated (off-diagonal -> 0). ``sigma^2`` is the
    biased batch variance. The teacher side is a constant. Both inputs must have the same ``d``
    (project first if they differ). Needs ``B >= 2``; the loss is a *sum* over ``d`` (scale with the
    loss weight).

    Args:
        off_diagonal_weight: ``lambda`` (Barlow Twins uses ~5e-3).
        eps: variance floor.

    Inputs:
        student ``[B, d]`` (e.g. grounding vectors), teacher ``[B, d]`` (e.g. projected teacher image
        embeddings of the same rows).

    Returns:
        scalar loss.

    Reference:
        Ma, Li, Fang, Zhang. "Bridging the Modality Gap: Dimension Information Alignment and Sparse
        Spatial Constraint for Image-Text Matching", ACM MM 2024, arXiv 2410.16853; Zbontar et al.
        "Barlow Twins", ICML 2021, arXiv 2103.03230.
    """

    def __init__(self, off_diagonal_weight: float = 5e-3, eps: float = 1e-5):
        super().__init__()
        self.off_diagonal_weight, self.eps = off_diagonal_weight, eps

    def _standardise(self, z: Tensor) -> Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + self.eps)

    def cross_correlation(self, student: Tensor, teacher: Tensor) -> Tensor:
        """``C = Z_s^T Z_t / B``: ``[B, d] x [B, d] -> [d, d]``."""
        if student.shape != teacher.shape:
            raise ValueError(f"student {tuple(student.shape)} != teacher {tuple(teacher.shape)}")
        if len(student) < 2:
            raise ValueError("DimensionAlignmentLoss needs a batch of at least 2 rows")
        dt = compute_dtype(student, teacher)
        with full_precision(student.device):
            zs, zt = self._standardise(student.to(dt)), self._standardise(teacher.detach().to(dt))
            return zs.T @ zt / len(zs)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        c = self.cross_correlation(student, teacher)
        diag = torch.diagonal(c)
        on = (1 - diag).pow(2).sum()
        off = c.pow(2).sum() - diag.pow(2).sum()
        return on + self.off_diagonal_weight * off

    def extra_repr(self) -> str:
        return f"off_diagonal_weight={self.off_diagonal_weight}"


def top_k_neighbours(teacher_sims: Tensor, k: int, positive_offset: int = 0,
                     exclude: Tensor | None = None) -> Tensor:
    """``BoolTensor [B, N]``: each row's ``k`` largest teacher similarities, never the row's own
    column ``positive_offset + i`` nor an ``exclude``d one (``k`` is capped at the number left)."""
    B, N = teacher_sims.shape
    self_col = positive_targets(B, N, positive_offset, teacher_sims.device)
    banned = torch.zeros(B, N, dtype=torch.bool, device=teacher_sims.device)
    banned[torch.arange(B, device=banned.device), self_col] = True
    if exclude is not None:
        banned |= exclude.to(banned.device, torch.bool)
    k = min(k, N - 1)
    scores = teacher_sims.detach().float().masked_fill(banned, float("-inf"))
    idx = scores.topk(k, dim=1).indices
    keep = torch.zeros_like(banned).scatter_(1, idx, True)
    return keep & ~banned


class SparseRelationLoss(nn.Module):
    r"""Match the student's similarity to the teacher's on each row's ``k`` strongest teacher
    relations only (DIAS's sparse spatial constraint on unmatched pairs, student form).

    .. math::
        \mathcal{N}_k(i) = \operatorname{top-k}_{j \ne o+i}\ s^t_{ij}, \qquad
        L = \frac{1}{|\{(i,j): j \in \mathcal{N}_k(i)\}|} \sum_i \sum_{j \in \mathcal{N}_k(i)}
            \big(\cos(a_i, c_j) - s^t_{ij}\big)^2

    ``s^t`` is the teacher cosine of the same pairs (constant). The row's own pair (column
    ``positive_offset + i``, "self") and ``exclude``d pairs are never selected; weak relations are
    ignored, so the student is not misled by the teacher's noise on unrelated pairs.

    Args:
        k: neighbours per row (capped at ``N - 1``).

    Inputs:
        anchors ``[B, d_s]``, candidates ``[N, d_s]`` (student; the same tensor for an intra-modal
        constraint), teacher_sims ``[B, N]``, exclude ``BoolTensor [B, N]`` or None, positive_offset ``int``.

    Returns:
        scalar loss.

    Reference:
        Ma et al. "Bridging the Modality Gap: Dimension Information Alignment and Sparse Spatial
        Constraint for Image-Text Matching", ACM MM 2024, arXiv 2410.16853.
    """

    def __init__(self, k: int = 5):
        super().__init__()
        if k < 1:
            raise ValueError("k must be >= 1")
        self.k = k

    def forward(self, anchors: Tensor, candidates: Tensor, teacher_sims: Tensor,
                exclude: Tensor | None = None, positive_offset: int = 0) -> Tensor:
        cos = cosine_matrix(anchors, candidates)
        if teacher_sims.shape != cos.shape:
            raise ValueError(f"teacher_sims {tuple(teacher_sims.shape)} != {tuple(cos.shape)}")
        teacher_sims = teacher_sims.detach().to(cos)
        keep = top_k_neighbours(teacher_sims, self.k, positive_offset, exclude)
        diff = cos[keep] - teacher_sims[keep]
        return diff.pow(2).mean() if diff.numel() else cos.sum() * 0

    def extra_repr(self) -> str:
        return f"k={self.k}"

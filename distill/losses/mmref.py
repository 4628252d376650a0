"""Student-side form of MMRef's multi-modal references (arXiv 2504.07718): fuse each image's teacher
embedding with its captions' into a reference, align student captions to references, and re-rank
retrieval scores with reference similarities."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import compute_dtype, cosine_logits, info_nce


def build_references(teacher_image: Tensor, teacher_captions: Tensor, alpha: float = 0.5,
                     caption_image_index: Tensor | None = None) -> Tensor:
    r"""Per-image multi-modal reference from teacher embeddings.

    .. math::
        r_m = \mathrm{normalize}\Big(\alpha\, \hat v_m + (1 - \alpha)\, \frac{1}{|T_m|}\sum_{c \in T_m} \hat t_c\Big)

    (hats = L2-normalised teacher embeddings; ``T_m`` = captions of image ``m``). An image with no
    caption gets ``r_m = \hat v_m``.

    Args:
        teacher_image: ``[M, d]`` teacher image embeddings.
        teacher_captions: ``[M, C, d]`` (C captions per image), or ``[Ncap, d]`` together with
            ``caption_image_index``.
        alpha: image weight in ``[0, 1]``.
        caption_image_index: ``[Ncap]`` long, image row (``0..M-1``) of each caption; only for the flat form.

    Returns:
        ``[M, d]`` unit-norm references (float32/float64), no gradient.
    """
    with torch.no_grad():
        dt = compute_dtype(teacher_image, teacher_captions)
        img = F.normalize(teacher_image.to(dt), dim=-1)
        caps = F.normalize(teacher_captions.to(dt), dim=-1)
        if caps.dim() == 3:
            if caption_image_index is not None:
                raise ValueError("caption_image_index is only for flat [Ncap, d] captions")
            cap_mean = caps.mean(dim=1)
        else:
            if caption_image_index is None:
                raise ValueError("flat [Ncap, d] captions need caption_image_index")
            idx = caption_image_index.to(img.device)
            sums = torch.zeros_like(img).index_add_(0, idx, caps)
            counts = torch.bincount(idx, minlength=len(img)).to(dt).clamp_min(1)
            cap_mean = sums / counts[:, None]
        return F.normalize(alpha * img + (1 - alpha) * cap_mean, dim=-1)


class ReferenceAlignmentLoss(nn.Module):
    r"""InfoNCE of student caption embeddings against multi-modal references; target = own image.

    .. math::
        \ell_i = -\log \frac{\exp(\cos(g(s_i), r_{y_i})/\tau)}{\sum_{m \notin E_i} \exp(\cos(g(s_i), r_m)/\tau)}

    ``s_i`` is a student caption embedding, ``g`` an optional projection into the reference space
    (``projection`` module, e.g. ``nn.Linear(d_s, d_t)``, owned by the loss and trained with it; None =
    identity, the caller projects), ``r`` the references from :func:`build_references` (constants),
    ``y_i`` the row of the caption's image in ``references``. Several captions of the same image share a
    target; ``exclude [B, M]`` removes references (never ``y_i``).

    Args:
        temperature: ``tau`` (0.05).
        projection: optional module ``[B, d_s] -> [B, d_r]``.

    Inputs:
        captions ``[B, d_s]``, references ``[M, d_r]``, image_index ``[B]`` long,
        exclude ``BoolTensor [B, M]`` or None.

    Returns:
        scalar loss.

    Reference:
        "Multi-modal Reference Learning for Fine-grained Text-to-Image Retrieval", arXiv 2504.07718.
    """

    def __init__(self, temperature: float = 0.05, projection: nn.Module | None = None):
        super().__init__()
        self.temperature = temperature
        self.projection = projection

    def forward(self, captions: Tensor, references: Tensor, image_index: Tensor,
                exclude: Tensor | None = None) -> Tensor:
        if self.projection is not None:
            captions = self.projection(captions)
        targets = image_index.to(device=captions.device, dtype=torch.long)
        return info_nce(cosine_logits(captions, references.detach(), self.temperature), targets, exclude)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


def rerank_with_references(sim_text_image: Tensor, sim_text_reference: Tensor, beta: float = 0.5) -> Tensor:
    r"""Reference-based re-ranking score for retrieval evaluation.

    .. math:: S_{qm} = (1 - \beta)\, \mathrm{sim}(q, v_m) + \beta\, \mathrm{sim}(q, r_m)

    Args:
        sim_text_image: ``[Q, M]`` query-image scores.
        sim_text_reference: ``[Q, M]`` query-reference scores (same gallery order).
        beta: reference weight in ``[0, 1]`` (0 = no re-ranking).

    Returns:
        ``[Q, M]`` fused scores; rank each row in descending order.
    """
    if sim_text_image.shape != sim_text_reference.shape:
        raise ValueError(f"{tuple(sim_text_image.shape)} != {tuple(sim_text_reference.shape)}")
    return (1 - beta) * sim_text_image + beta * sim_text_reference

r"""False-negative masks for the contrastive losses (boolean matrices, not losses).

Every function returns ``BoolTensor [B, N]`` where ``True`` = "candidate j is a false negative for
anchor i, remove it from the softmax", and never marks a row's positive (column
``positive_offset + i``). Masks combine with ``|``::

    exclude = same_image_mask(img_ids, img_ids) | threshold_mask(teacher_cc, 0.9)

The losses additionally force the positive back in, so a hand-made mask is also safe.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._common import cosine_matrix, positive_mask


def _ids_tensor(ids: Tensor | Sequence, table: dict) -> Tensor:
    if isinstance(ids, Tensor):
        return ids.reshape(-1)
    return torch.tensor([table.setdefault(x, len(table)) for x in ids], dtype=torch.long)


def same_image_mask(anchor_image_ids: Tensor | Sequence, candidate_image_ids: Tensor | Sequence,
                    positive_offset: int = 0) -> Tensor:
    r"""Mask candidates that show the same image as the anchor (KDMCSE: the 5 captions of one image
    are separate examples, so a batch can hold one image twice).

    .. math:: M_{ij} = [\,\mathrm{id}(a_i) = \mathrm{id}(c_j)\,] \wedge [\,j \ne o+i\,]

    Args:
        anchor_image_ids: ``[B]`` int tensor, or a sequence of hashables (str ids are fine).
        candidate_image_ids: ``[N]``, same kind as the anchors' ids.
        positive_offset: the positive of anchor ``i`` is candidate ``positive_offset + i``.
    """
    table: dict = {}
    a, c = _ids_tensor(anchor_image_ids, table), _ids_tensor(candidate_image_ids, table)
    c = c.to(a.device)
    return (a[:, None] == c[None, :]) & ~positive_mask(len(a), len(c), positive_offset, a.device)


def threshold_mask(teacher_sims: Tensor, threshold: float, positive_offset: int = 0) -> Tensor:
    r"""KDMCSE's fixed-threshold filter: a negative the teacher finds too similar is removed.

    .. math:: M_{ij} = [\,s_{ij} > \delta\,] \wedge [\,j \ne o+i\,]

    ``s`` is any teacher similarity of the same (anchor, candidate) pairs: caption-caption cosines
    (``false_negative_filter: threshold``, delta 0.9) or the cross-modal caption-image scores of the
    released KDMCSE code (``teacher_cross_modal``, delta 0.8; docs/objective.md).

    Args:
        teacher_sims: ``[B, N]`` teacher similarities.
        threshold: ``delta``.
        positive_offset: column of row ``i``'s positive is ``positive_offset + i``.
    """
    B, N = teacher_sims.shape
    return (teacher_sims > threshold) & ~positive_mask(B, N, positive_offset, teacher_sims.device)


def cross_modal_mask(anchors: Tensor, candidates: Tensor, threshold: float = 0.8, similarity: str = "dot",
                     positive_offset: int = 0) -> Tensor:
    r"""The released KDMCSE filter of one L_inter term: candidates the teacher scores too close *across
    modalities* to the anchor are removed.

    .. math:: M_{ij} = [\,s(a_i, c_j) > \delta\,] \wedge [\,j \ne o+i\,], \qquad
              s = a_i \cdot c_j \ (\text{dot}) \ \text{or}\ \cos(a_i, c_j)\ (\text{cosine})

    For the image term (sentence i vs image j) the anchors are the teacher's captions and the candidates
    its images (``caption_i . image_j``); for the caption term (sentence i vs caption j) the anchors are
    the images and the candidates the captions (``image_i . caption_j``). Both need a teacher whose text
    and image embeddings share one space (CLIP).

    Args:
        anchors: ``[B, d]`` teacher embeddings of the local rows (one modality).
        candidates: ``[N, d]`` teacher embeddings of the candidates (the other modality).
        threshold: ``delta`` (0.8 in the released scripts).
        similarity: ``"dot"`` (raw dot product, as released) or ``"cosine"``.
        positive_offset: column of row ``i``'s positive is ``positive_offset + i``.
    """
    if anchors.shape[1] != candidates.shape[1]:
        raise ValueError(f"teacher_cross_modal compares {anchors.shape[1]}-d with {candidates.shape[1]}-d "
                         "embeddings: it needs a teacher whose text and image embeddings share one space (CLIP)")
    if similarity == "dot":
        scores = anchors @ candidates.T
    elif similarity == "cosine":
        scores = cosine_matrix(anchors, candidates)
    else:
        raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
    return threshold_mask(scores, threshold, positive_offset)


def gist_mask(guide_sims: Tensor, margin: float = 0.0, mode: str = "absolute",
              positive_offset: int = 0) -> Tensor:
    r"""GISTEmbed's guided filter: a per-anchor threshold set by the guide's score of the true pair.

    With ``g_ij = guide(a_i, c_j)`` and ``g_i^+ = g_{i, o+i}``:

    .. math::
        \text{absolute:}\ M_{ij} = [\,g_{ij} > g_i^+ - \mu\,], \qquad
        \text{relative:}\ M_{ij} = [\,g_{ij} > g_i^+ (1 - \mu)\,], \qquad
        \text{and always } M_{i,o+i} = 0

    i.e. any candidate the guide (here: the frozen teacher) rates at least about as similar as the true
    positive is treated as a false negative.

    Args:
        guide_sims: ``[B, N]`` guide-model similarities.
        margin: ``mu`` (0 = mask candidates the guide scores above the positive).
        mode: ``"absolute"`` or ``"relative"``.
        positive_offset: column of row ``i``'s positive is ``positive_offset + i``.

    Reference:
        Solatorio. "GISTEmbed: Guided In-sample Selection of Training Negatives for Text Embedding
        Fine-tuning", arXiv 2402.16829 (sentence-transformers ``GISTEmbedLoss``).
    """
    B, N = guide_sims.shape
    pos = positive_mask(B, N, positive_offset, guide_sims.device)
    g_pos = guide_sims[pos].unsqueeze(1)  # [B, 1], row-major order = anchor order
    if mode == "absolute":
        thresh = g_pos - margin
    elif mode == "relative":
        thresh = g_pos * (1 - margin)
    else:
        raise ValueError(f"mode must be 'absolute' or 'relative', got {mode!r}")
    return (guide_sims > thresh) & ~pos

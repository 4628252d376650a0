"""MCSE's grounding loss: InfoNCE from sentence grounding vectors to images (arXiv 2204.10931)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._common import as_views, cosine_logits, info_nce, positive_targets


class MCSEGroundingLoss(nn.Module):
    r"""Plain InfoNCE from each dropout view's grounding vector to the image adapter, averaged over views.

    .. math::
        L = \frac{1}{V}\sum_{p \in \{p_1..p_V\}} \frac{1}{B}\sum_i
            -\log \frac{\exp(\cos(p_i, v_{o+i}) / \tau)}{\sum_{j \notin E_i} \exp(\cos(p_i, v_j) / \tau)}

    ``p = L2norm(Tanh(Linear(h_[CLS])))`` (grounding head), ``v = L2norm(Tanh(Linear(image feature)))``
    (image adapter); both are computed by the caller. MCSE adds ``lambda * L`` (``lambda = 0.01``) to the
    SimCSE text loss on image-caption batches.

    Args:
        temperature: ``tau`` (0.05).

    Inputs:
        views: sequence of ``[B, d]`` (or ``[B, d]`` / ``[V, B, d]``); image ``[N, d]``;
        exclude ``BoolTensor [B, N]`` or None; positive_offset ``int``.

    Returns:
        scalar loss.

    Reference:
        Zhang, Mosbach, Adelani, Hedderich, Klakow. "MCSE: Multimodal Contrastive Learning of Sentence
        Embeddings", NAACL 2022, arXiv 2204.10931.
    """

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        self.temperature = temperature

    def forward(self, views: Sequence[Tensor] | Tensor, image: Tensor, exclude: Tensor | None = None,
                positive_offset: int = 0) -> Tensor:
        views = as_views(views)
        targets = positive_targets(len(views[0]), len(image), positive_offset, image.device)
        return torch.stack(
            [info_nce(cosine_logits(p, image, self.temperature), targets, exclude) for p in views]
        ).mean()

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

"""SimCSE / InfoNCE with cosine similarity (Gao et al., EMNLP 2021, arXiv 2104.08821)."""
from __future__ import annotations

from torch import Tensor, nn

from ._common import cosine_logits, info_nce, positive_targets


class SimCSELoss(nn.Module):
    r"""InfoNCE over in-batch candidates, as in unsupervised SimCSE.

    .. math::
        \ell_i = -\log \frac{\exp(\cos(a_i, c_{o+i}) / \tau)}
                            {\sum_{j \notin E_i} \exp(\cos(a_i, c_j) / \tau)},
        \qquad L = \frac{1}{B} \sum_i \ell_i

    with ``o = positive_offset`` and ``E_i = {j : exclude[i, j]} \ {o+i}``. In unsupervised SimCSE
    ``a`` and ``c`` are two dropout views of the same sentences (``c_{o+i}`` is ``a_i``'s second view).

    Args:
        temperature: ``tau`` (0.05 in SimCSE / MCSE / KDMCSE).

    Inputs:
        anchors ``[B, d]``; candidates ``[N, d]`` (``N >= B``, any float dtype, normalised inside);
        exclude ``BoolTensor [B, N]`` or None; positive_offset ``int``.

    Returns:
        scalar loss (float32, or float64 for float64 inputs).

    Reference:
        Gao, Yao, Chen. "SimCSE: Simple Contrastive Learning of Sentence Embeddings", EMNLP 2021,
        arXiv 2104.08821.
    """

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        self.temperature = temperature

    def forward(self, anchors: Tensor, candidates: Tensor, exclude: Tensor | None = None,
                positive_offset: int = 0) -> Tensor:
        targets = positive_targets(len(anchors), len(candidates), positive_offset, anchors.device)
        return info_nce(cosine_logits(anchors, candidates, self.temperature), targets, exclude)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

"""Student-side state of AAHR's ambiguity handling (arXiv 2507.09256): a momentum queue of extra
negatives, online teacher prototypes, and same-cluster down-weighting of negatives (the weights feed
:class:`WeightedInfoNCELoss`). :class:`distill.terms.aahr.AAHR` wires them into the objective; under DDP
it passes *gathered* tensors to ``enqueue`` and ``update``, so every rank keeps identical state.

Reference: "Ambiguity-Aware and High-Order Relation Learning for Multi-Grained Image-Text Matching",
Knowledge-Based Systems 2025, arXiv 2507.09256. Only the prototype, soft-positive and queue ideas
are carried over; the GNN and global/local fusion are image-text-matching specific.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import cosine_matrix, positive_mask


class MomentumQueue(nn.Module):
    """FIFO of earlier (detached) embeddings used as extra negatives (MoCo-style).

    ``enqueue(x [n, d], ids [n] | None)`` appends rows, overwriting the oldest once ``size`` rows are
    held; ``negatives`` returns the ``[min(seen, size), d]`` stored rows (oldest first) and ``ids`` their
    optional integer labels (``-1`` where none was given), e.g. image ids for
    :func:`same_image_mask` or cluster ids for :func:`same_cluster_weights`. Rows are stored in float32
    as given (losses normalise). State is in buffers, so it follows ``.to(device)`` and ``state_dict``.

    Append the queue *after* the positives: candidates ``cat([c, queue.negatives])`` keep the positives
    at ``positive_offset + arange(B)``, and an ``exclude`` mask must be padded with ``False`` columns.

    Args:
        size: capacity (rows).
        dim: embedding dimension.

    Reference: He et al. "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020,
    arXiv 1911.05722; AAHR arXiv 2507.09256 (momentum contrast to enlarge the negative set).
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size, self.dim = size, dim
        self.register_buffer("queue", torch.zeros(size, dim))
        self.register_buffer("queue_ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, x: Tensor, ids: Tensor | None = None) -> None:
        x = x.detach()[-self.size:]
        ids = torch.full((len(x),), -1, dtype=torch.long) if ids is None else ids.reshape(-1)[-self.size:]
        slots = (self.ptr + torch.arange(len(x), device=self.queue.device)) % self.size
        self.queue[slots] = x.to(self.queue)
        self.queue_ids[slots] = ids.to(self.queue_ids)
        self.ptr.copy_((self.ptr + len(x)) % self.size)
        self.count.copy_(torch.clamp(self.count + len(x), max=self.size))

    def _order(self) -> Tensor:
        n = int(self.count)
        start = int(self.ptr) if n == self.size else 0
        return (torch.arange(n, device=self.queue.device) + start) % self.size

    @property
    def negatives(self) -> Tensor:
        """``[n, d]`` stored embeddings, oldest first (``n = min(rows seen, size)``)."""
        return self.queue[self._order()]

    @property
    def ids(self) -> Tensor:
        """``[n]`` integer labels of :attr:`negatives` (``-1`` = none given)."""
        return self.queue_ids[self._order()]

    def __len__(self) -> int:
        return int(self.count)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"


class OnlinePrototypes(nn.Module):
    r"""Online spherical k-means over teacher embeddings (AAHR's dynamic clustering prototypes).

    Centroids ``C [K, d]`` live on the unit sphere. For a batch ``x [B, d]`` (normalised inside):

    .. math::
        k(i) = \arg\max_k \cos(x_i, C_k), \qquad
        \bar x_k = \mathrm{mean}_{i: k(i)=k}\, \hat x_i, \qquad
        C_k \leftarrow \mathrm{normalize}\big(\mu\, C_k + (1 - \mu)\, \bar x_k\big)

    for every centroid with at least one member (the others are unchanged). The first ``update``
    initialises ``C`` from ``K`` distinct rows of that batch chosen by a ``torch.Generator`` seeded with
    ``seed`` (so a given first batch always gives the same centroids); if the batch has fewer than
    ``K`` rows, rows are reused with a small seeded Gaussian jitter so no two centroids coincide.
    No gradient flows (teacher side). Under DDP call ``update`` with embeddings gathered from all ranks.

    Args:
        num_prototypes: ``K``.
        dim: teacher embedding dimension ``d``.
        momentum: ``mu`` (EMA keep rate, 0.99).
        seed: seed of the initial row selection.
    """

    def __init__(self, num_prototypes: int, dim: int, momentum: float = 0.99, seed: int = 0):
        super().__init__()
        self.num_prototypes, self.dim, self.momentum, self.seed = num_prototypes, dim, momentum, seed
        self.register_buffer("centroids", torch.zeros(num_prototypes, dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def _init_from(self, x: Tensor) -> None:
        g = torch.Generator().manual_seed(self.seed)
        K, B = self.num_prototypes, len(x)
        if B >= K:
            rows = x[torch.randperm(B, generator=g)[:K].to(x.device)]
        else:
            reused = (torch.arange(K) >= B).to(x.dtype)[:, None]  # rows B..K-1 repeat earlier rows
            jitter = 1e-2 * torch.randn(K, x.shape[1], generator=g, dtype=x.dtype) * reused
            rows = x[(torch.arange(K) % B).to(x.device)] + jitter.to(x.device)
        self.centroids.copy_(F.normalize(rows, dim=-1))
        self.initialized.fill_(True)

    @torch.no_grad()
    def assign(self, x: Tensor) -> Tensor:
        """``[B]`` index of the nearest centroid (cosine) for each row of ``x [B, d]``."""
        return cosine_matrix(x, self.centroids).argmax(dim=1)

    @torch.no_grad()
    def update(self, x: Tensor) -> Tensor:
        """Assign ``x [B, d]`` to the current centroids, EMA-update them; returns the ``[B]`` assignments."""
        x = F.normalize(x.detach().to(self.centroids), dim=-1)
        if not bool(self.initialized):
            self._init_from(x)
        k = self.assign(x)
        sums = torch.zeros_like(self.centroids).index_add_(0, k, x)
        counts = torch.bincount(k, minlength=self.num_prototypes).to(x.dtype)
        hit = counts > 0
        means = sums[hit] / counts[hit, None]
        self.centroids[hit] = F.normalize(self.momentum * self.centroids[hit] + (1 - self.momentum) * means, dim=-1)
        return k

    def extra_repr(self) -> str:
        return f"num_prototypes={self.num_prototypes}, dim={self.dim}, momentum={self.momentum}"


def same_cluster_weights(anchor_clusters: Tensor, candidate_clusters: Tensor, weight: float,
                         positive_offset: int = 0) -> Tensor:
    r"""``[B, N]`` negative weights: ``w`` where anchor and candidate share a cluster, 1 elsewhere.

    .. math:: W_{ij} = w \text{ if } k(a_i) = k(c_j) \wedge j \ne o+i \text{ else } 1

    Candidates with cluster id ``-1`` (unknown, e.g. unlabelled queue rows) are never down-weighted.
    """
    a, c = anchor_clusters.reshape(-1), candidate_clusters.reshape(-1).to(anchor_clusters.device)
    same = (a[:, None] == c[None, :]) & (c[None, :] >= 0)
    same &= ~positive_mask(len(a), len(c), positive_offset, a.device)
    return torch.where(same, torch.tensor(float(weight), device=a.device), torch.tensor(1.0, device=a.device))

"""Minimal torch.distributed helpers for in-batch negatives across ranks (open_clip-style "local loss").

Each rank computes the loss of its *local* anchors against the candidates of *all* ranks. The
candidates are gathered with :func:`gather_with_grad`: the local slice keeps its autograd history,
the other ranks' slices are constants. Every candidate therefore receives the gradient from the
anchors of its own rank; DDP's gradient averaging combines the ranks. The positives of the local
anchors sit at ``positive_offset + arange(B)`` in the gathered tensor, which is exactly the
``positive_offset`` argument of the losses in :mod:`distill.losses`.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """Concatenate ``x [B_r, ...]`` over ranks (rank order); only the local slice keeps its gradient.

    Ranks may hold different ``B_r`` (sizes are exchanged first, rows padded for the collective).
    Works for any dtype (e.g. int image ids, which simply have no gradient).

    Returns:
        ``(gathered [sum_r B_r, ...], positive_offset = sum_{r < rank} B_r)`` — ``rank * B`` when all
        ranks have the same batch. Without an initialised process group: ``(x, 0)``.
    """
    if not is_distributed() or dist.get_world_size() == 1:
        return x, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    longest = max(sizes)
    padded = x.detach().contiguous()
    if x.shape[0] < longest:
        padded = torch.cat([padded, padded.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    parts = [p[:n] for p, n in zip(parts, sizes)]
    parts[rank] = x
    return torch.cat(parts), sum(sizes[:rank])

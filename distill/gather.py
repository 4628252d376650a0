"""Gathering across ranks for in-batch negatives, with the exact global-batch gradient.

Each rank computes the loss of its *local* anchors against the candidates of *all* ranks
(open_clip's ``local_loss``). Student candidates are gathered **with autograd**
(open_clip's ``gather_with_grad``): the backward pass sums, over every rank, the gradient each
rank's loss sends to every gathered row, and hands each rank the sum for its own rows. So with
``L_r`` the mean over rank r's ``B`` anchors, rank r's parameters receive
``d(sum_s L_s)/d(theta through rank r)``, and DDP's average over the W ranks gives
``d((1/W) sum_s L_s)/d theta`` = the gradient of the mean over all ``W B`` anchors: exactly one
process on the concatenated batch. Teacher tensors and ids (no ``requires_grad``) are gathered
as constants. The positives of the local anchors sit at ``positive_offset + arange(B)`` in the
gathered tensor, which is the ``positive_offset`` argument of the losses in :mod:`distill.losses`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor


def gather_with_grad(x: Tensor, sizes: Sequence[int] | None = None) -> tuple[Tensor, int]:
    """Concatenate ``x [B_r, ...]`` over ranks (rank order); differentiable when ``x`` requires grad.

    Ranks may hold different ``B_r`` (rows padded for the collective). ``sizes``: every rank's ``B_r``
    when the caller knows them; the trainer does, from the batch schedule, so its gathers need no
    collective for the sizes and no host-device sync. None exchanges them first (one all_gather and a
    host sync: the sizes decide the shapes). Works for any dtype (e.g. int image ids, gathered as constants).

    Returns:
        ``(gathered [sum_r B_r, ...], positive_offset = sum_{r < rank} B_r)`` — ``rank * B`` when all
        ranks have the same batch. Without an initialised process group: ``(x, 0)``.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    rank = dist.get_rank()
    sizes = _batch_sizes(x) if sizes is None else [int(n) for n in sizes]
    if len(sizes) != dist.get_world_size() or sizes[rank] != x.shape[0]:
        raise ValueError(f"sizes {sizes} do not match {dist.get_world_size()} ranks with {x.shape[0]} rows on rank {rank}")
    offset = sum(sizes[:rank])
    if x.requires_grad:
        return _GatherWithGrad.apply(x, sizes), offset
    return _gather(x.detach(), sizes), offset


def _batch_sizes(x: Tensor) -> list[int]:
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]  # host sync: the rows per rank decide the shapes below


def _gather(x: Tensor, sizes: list[int]) -> Tensor:
    longest = max(sizes)
    padded = x.contiguous()
    if x.shape[0] < longest:
        padded = torch.cat([padded, padded.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums the gathered gradient over ranks and keeps the local rows.

    An all_reduce rather than a reduce_scatter, because gloo (the CPU backend) has no reduce_scatter.
    """

    @staticmethod
    def forward(ctx, x: Tensor, sizes: list[int]) -> Tensor:
        ctx.sizes = sizes
        return _gather(x.detach(), sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[:dist.get_rank()])
        return grad[start:start + ctx.sizes[dist.get_rank()]], None

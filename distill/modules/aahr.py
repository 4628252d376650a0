r"""Ambiguity-aware soft positives and a momentum queue, student form of AAHR (arXiv 2507.09256).

The paper
    "Ambiguity-Aware and High-Order Relation Learning for Multi-Grained Image-Text Matching"
    (Knowledge-Based Systems 2025, arXiv 2507.09256) treats semantically similar pairs that are labelled
    negative as *soft positives*: dynamic clustering prototypes group samples, and a sample's prototype
    assignments supervise it softly instead of a one-hot contrast; global and local features are fused
    adaptively, a GNN over intra-/inter-modal correlation matrices propagates high-order neighbour
    relations, and a momentum queue enlarges the set of negatives.

The student form here (the teacher's text embeddings define the clusters)
    - Online prototypes: ``K`` centroids ``C`` on the unit sphere, online spherical k-means over the
      *gathered* teacher text embeddings of every step (:class:`distill.losses.OnlinePrototypes`; EMA
      keep rate ``loss.aahr.momentum``); ``k(i)`` = nearest centroid.
    - Prototype soft targets (term ``aahr_prototypes``, weight ``loss.aahr.weight``), on both dropout views
      of the student's grounded sentence ``g_i = ground(h_i)``:

      .. math::
          q_{ik} = \mathrm{softmax}_k(\cos(t_i, C_k)/\tau_t),\quad
          p_{ik} = \mathrm{softmax}_k(\cos(g_i, \mathrm{adapt}(C_k))/\tau),\quad
          L = \frac{1}{B}\sum_i \mathrm{KL}(q_i \,\|\, p_i)

      The student-side prototypes are the teacher centroids passed through the student's trainable
      caption adapter (``adapt_captions``, the map KDMCSE already learns from teacher captions into the
      grounding space), so prototype ``k`` is tied to centroid ``k`` by construction and needs no
      parameters of its own.
    - Same-cluster negatives down-weighted (``cluster_negative_weight = w``): in the text loss a
      candidate in the anchor's cluster enters the partition function with weight ``w``
      (``logit + log w``, :func:`distill.losses.same_cluster_weights`); the positive keeps weight 1.
    - Momentum queue (``loss.aahr.queue_size``): the gathered candidate embeddings ``z2`` of earlier steps
      (detached, with their cluster ids) are appended *after* the in-batch candidates of the text loss,
      so ``positive_offset`` stays valid; ``exclude`` is padded with False (no same-image or teacher
      filtering against queue rows). Unlike MoCo there is no momentum encoder: rows are the student's
      own earlier outputs (a memory bank), so keep the queue a few steps long.

    Not carried over: the GNN over correlation matrices and the global/local fusion (the student has one
    sentence vector). Every rank feeds the same gathered tensors to the queue and the prototypes, so all
    ranks hold identical state; both live in buffers (checkpointed with the objective).

Cost: a ``[N, K]`` assignment and a ``[K, d_t]`` update per step, a ``[B, K]`` KL per view, and ``Q``
extra columns in the text logits (``Q = queue_size``; ``B x Q x d`` multiply-adds) - negligible next
to the encoder for ``K, Q`` in the hundreds.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distill import losses
from distill.config import AAHRConfig, LossConfig
from distill.losses._common import compute_dtype
from distill.step import StepTensors
from distill.term import Dims, Needs, Term, register_term


class AAHR(Term):
    """Queue, online prototypes and the prototype soft-target term (see the module docstring).

    Args:
        cfg: ``loss.aahr``.
        student_dim: width of the text loss's embeddings ``z`` (the queue's rows).
        teacher_dim: width of the teacher's text embeddings (the prototypes' rows).
        teacher_temperature: teacher ``tau_t`` of the prototype assignments (``loss.teacher_temperature``).
    """

    def __init__(self, cfg: AAHRConfig, student_dim: int, teacher_dim: int, teacher_temperature: float):
        super().__init__()
        self.cfg, self.teacher_temperature = cfg, teacher_temperature
        self.needs = Needs(teacher_rows=True, grounding=cfg.weight > 0)
        self.queue = losses.MomentumQueue(cfg.queue_size, student_dim) if cfg.queue_size else None
        self.prototypes = losses.OnlinePrototypes(cfg.prototypes, teacher_dim, cfg.momentum) \
            if cfg.prototypes else None

    # --- state ------------------------------------------------------------------------------------

    def observe(self, step: StepTensors) -> None:
        """Start of a step: the gathered teacher rows' cluster ids go to ``step.clusters``."""
        step.clusters = self.assign(step.teacher_text_all)

    def after_step(self, step: StepTensors) -> None:
        """End of a step: the gathered candidates (and their cluster ids) go into the queue."""
        self.enqueue(step.candidates, step.clusters)

    @torch.no_grad()
    def assign(self, teacher_text_all: Tensor) -> Tensor | None:
        """Assign the gathered teacher rows to the prototypes and update them; returns the ``[N]``
        cluster ids (None without prototypes)."""
        return self.prototypes.update(teacher_text_all) if self.prototypes is not None else None

    @torch.no_grad()
    def enqueue(self, candidates: Tensor, clusters: Tensor | None) -> None:
        """Push the gathered candidates (and their cluster ids) into the queue."""
        if self.queue is not None:
            self.queue.enqueue(candidates, ids=clusters)

    # --- the text loss's candidates -------------------------------------------------------------

    def extend_text(self, candidates: Tensor, exclude: Tensor | None,
                    step: StepTensors) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return self.extend(candidates, exclude, step.clusters, step.offset, len(step.z1))

    def extend(self, candidates: Tensor, exclude: Tensor | None, clusters: Tensor | None,
               positive_offset: int, batch: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``(candidates + queue rows, exclude padded with False, same-cluster weights or None)``.

        ``candidates [N, d]`` are the gathered in-batch candidates, ``clusters [N]`` their cluster ids,
        ``batch`` the number of local anchors (rows ``positive_offset ... + batch`` of ``clusters``).
        """
        candidate_clusters = clusters
        if self.queue is not None and len(self.queue):
            extra = self.queue.negatives
            dt = compute_dtype(candidates, extra)
            candidates = torch.cat([candidates.to(dt), extra.to(dt)])
            if exclude is not None:
                exclude = F.pad(exclude, (0, len(extra)), value=False)
            if clusters is not None:
                candidate_clusters = torch.cat([clusters, self.queue.ids.to(clusters.device)])
        weights = None
        if clusters is not None and self.cfg.cluster_negative_weight < 1:
            anchors = clusters[positive_offset:positive_offset + batch]
            weights = losses.same_cluster_weights(anchors, candidate_clusters, self.cfg.cluster_negative_weight,
                                                  positive_offset)
        return candidates, exclude, weights

    # --- the prototype term ------------------------------------------------------------------------

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        """``aahr_prototypes``: ``weight`` x the prototype soft-target KL (when ``weight > 0``)."""
        if self.cfg.weight <= 0:
            return {}
        loss = self.prototype_loss(step.grounded, step.inputs.teacher_text, step.student.heads.adapt_captions)
        return {"aahr_prototypes": self.cfg.weight * loss}

    def prototype_loss(self, student_views: list[Tensor], teacher_text: Tensor,
                       adapt: Callable[[Tensor], Tensor]) -> Tensor:
        """Mean over views of ``KL(q_i || p_i)`` (module docstring); ``adapt`` maps teacher-space
        centroids into the student views' space (the caption adapter)."""
        centroids = self.prototypes.centroids.detach()
        student_prototypes = adapt(centroids)
        teacher_logits = losses.cosine_logits(teacher_text.detach(), centroids, self.teacher_temperature)
        terms = [losses.soft_target_kl(losses.cosine_logits(v, student_prototypes, self.cfg.temperature),
                                       teacher_logits)
                 for v in student_views]
        return torch.stack(terms).mean()

    def extra_repr(self) -> str:
        return f"{self.cfg}, teacher_temperature={self.teacher_temperature}"


@register_term("aahr")
def _aahr(cfg: LossConfig, dims: Dims) -> AAHR | None:
    if cfg.aahr is None:
        return None
    if dims.student is None or dims.teacher is None:
        raise ValueError("loss.aahr sizes its queue and prototypes from the student's and teacher's widths: "
                         "build DistillationObjective(cfg, student_dim=..., teacher_dim=...)")
    return AAHR(cfg.aahr, dims.student, dims.teacher, cfg.teacher_temperature)

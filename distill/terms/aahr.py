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

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses._common import compute_dtype, cosine_logits
from distill.losses.aahr import MomentumQueue, OnlinePrototypes, same_cluster_weights
from distill.losses.soft_target import soft_target_kl
from distill.config import LossConfig
from distill.step import StepTensors
from distill.term import CardRow, Dims, Needs, Term, register_term
from kdmcse_base.typed_config import POSITIVE, UNIT_INTERVAL, ConfigError, at_least


@dataclass
class AAHRConfig:
    """AAHR (arXiv 2507.09256; docs/modules.md): a queue of earlier student text embeddings as extra
    negatives of the text loss (``queue_size``), and ``prototypes`` = K online prototypes of the teacher
    text embeddings, which feed the prototype soft-target term (``weight``; student temperature
    ``temperature``, teacher ``loss.teacher_temperature``) and down-weight same-cluster negatives of the
    text loss (``cluster_negative_weight`` < 1). ``momentum`` is the centroids' EMA keep rate. The
    defaults are the offline benchmark's settings."""

    queue_size: int = field(default=512, metadata=at_least(0))
    prototypes: int = field(default=32, metadata=at_least(0))
    weight: float = field(default=0.1, metadata=at_least(0))
    cluster_negative_weight: float = field(default=0.5, metadata=UNIT_INTERVAL)
    temperature: float = field(default=0.1, metadata=POSITIVE)
    momentum: float = field(default=0.99, metadata=UNIT_INTERVAL)

    def __post_init__(self) -> None:
        if self.prototypes == 1:
            raise ValueError("prototypes must be 0 (off) or >= 2")
        if self.uses_prototypes and self.prototypes == 0:
            raise ValueError("weight > 0 or cluster_negative_weight < 1 needs prototypes >= 2")
        if self.prototypes and not self.uses_prototypes:
            raise ValueError("prototypes is set but nothing uses them: set weight > 0 and/or "
                             "cluster_negative_weight < 1")
        if not self.queue_size and not self.prototypes:
            raise ValueError("switches nothing on: set queue_size > 0 and/or prototypes >= 2 (or remove loss.aahr)")
        if self.momentum == 1:
            raise ValueError("momentum must be < 1 (1 would freeze the centroids at their first batch)")

    @property
    def uses_prototypes(self) -> bool:
        return self.weight > 0 or self.cluster_negative_weight < 1

    @property
    def reshapes_text(self) -> bool:
        """Queue negatives or cluster weights change the text loss."""
        return self.queue_size > 0 or self.cluster_negative_weight < 1


@register_term("aahr", order=60, section=AAHRConfig)
class AAHR(Term):
    """Queue, online prototypes and the prototype soft-target term (see the module docstring).

    Args:
        cfg: ``loss.aahr``.
        student_dim: width of the text loss's embeddings ``z`` (the queue's rows).
        teacher_dim: width of the teacher's text embeddings (the prototypes' rows).
        teacher_temperature: teacher ``tau_t`` of the prototype assignments (``loss.teacher_temperature``).
    """

    citation = "arXiv 2507.09256"

    def __init__(self, cfg: AAHRConfig, student_dim: int, teacher_dim: int, teacher_temperature: float):
        super().__init__()
        self.cfg, self.teacher_temperature = cfg, teacher_temperature
        self.needs = Needs(teacher_rows=True, grounding=cfg.weight > 0, reshapes_text=cfg.reshapes_text)
        self.queue = MomentumQueue(cfg.queue_size, student_dim) if cfg.queue_size else None
        self.prototypes = OnlinePrototypes(cfg.prototypes, teacher_dim, cfg.momentum) \
            if cfg.prototypes else None
        self._clusters: Tensor | None = None  # this step's cluster ids of the gathered rows

    @classmethod
    def build(cls, loss: LossConfig, section: AAHRConfig, dims: Dims) -> AAHR:
        if dims.student is None or dims.teacher is None:
            raise ValueError("loss.aahr sizes its queue and prototypes from the student's and teacher's widths: "
                             "build DistillationObjective(cfg, Dims(student=..., teacher=...))")
        return cls(section, dims.student, dims.teacher, loss.teacher_temperature)

    @classmethod
    def check(cls, loss: LossConfig, section: AAHRConfig) -> None:
        if loss.text == "none" and section.reshapes_text:
            raise ConfigError("loss.aahr's queue and cluster weights reshape the text loss, which loss.text=none "
                              "switches off (set queue_size=0 and cluster_negative_weight=1, or a text loss)")

    @classmethod
    def card_rows(cls, loss: LossConfig, section: AAHRConfig) -> list[CardRow]:
        rows = [("AAHR prototype KL", section.weight, f"{section.prototypes} prototypes")] if section.weight > 0 else []
        if section.queue_size > 0:
            rows.append(("AAHR negative queue", "-", f"{section.queue_size} embeddings"))
        return rows

    # --- state ------------------------------------------------------------------------------------

    def observe(self, step: StepTensors) -> None:
        """Start of a step: assign the gathered teacher rows to the prototypes (this step's clusters)."""
        self._clusters = self.assign(step.teacher_text_all)

    def after_step(self, step: StepTensors) -> None:
        """End of a step: the gathered candidates (and their cluster ids) go into the queue."""
        self.enqueue(step.candidates, self._clusters)
        self._clusters = None

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
        return self.extend(candidates, exclude, self._clusters, step.offset, len(step.z1))

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
            weights = same_cluster_weights(anchors, candidate_clusters, self.cfg.cluster_negative_weight,
                                                  positive_offset)
        return candidates, exclude, weights

    # --- the prototype term ------------------------------------------------------------------------

    def terms(self, step: StepTensors) -> dict[str, Tensor]:
        """``aahr_prototypes``: ``weight`` x the prototype soft-target KL (when ``weight > 0``)."""
        if self.cfg.weight <= 0:
            return {}
        loss = self.prototype_loss(step.grounded, step.inputs.teacher_text, step.heads.adapt_captions)
        return {"aahr_prototypes": self.cfg.weight * loss}

    def prototype_loss(self, student_views: list[Tensor], teacher_text: Tensor,
                       adapt: Callable[[Tensor], Tensor]) -> Tensor:
        """Mean over views of ``KL(q_i || p_i)`` (module docstring); ``adapt`` maps teacher-space
        centroids into the student views' space (the caption adapter)."""
        centroids = self.prototypes.centroids.detach()
        student_prototypes = adapt(centroids)
        teacher_logits = cosine_logits(teacher_text.detach(), centroids, self.teacher_temperature)
        terms = [soft_target_kl(cosine_logits(v, student_prototypes, self.cfg.temperature),
                                       teacher_logits)
                 for v in student_views]
        return torch.stack(terms).mean()

    def extra_repr(self) -> str:
        return f"{self.cfg}, teacher_temperature={self.teacher_temperature}"

"""The contract of one training step between the trainer, the objective and the loss terms: what the
trainer looked up (``StepInputs``), and the tensors the terms of a step share (``StepTensors``, with a
paired step's image side in ``PairedTensors``). Terms and modules read these; only
``distill/objective.py`` builds them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distill.gather import gather_with_grad
from distill.student import GroundingHeads, Student


@dataclass
class StepInputs:
    """What the trainer looked up for the local rows of one step. ``features``: the sentences as
    ``Student.tokenise`` returns them, prepared ahead by the trainer's loader (None: tokenised here).
    ``rank_sizes``: every rank's row count this step, from the schedule (None: exchanged by the gathers)."""

    sentences: list[str]
    teacher_text: Tensor  # [B, d_t], L2-normalised
    teacher_image: Tensor | None = None  # [B, d_i], paired steps only
    image_ids: Tensor | None = None  # [B] int64, paired steps only
    features: dict[str, Any] | None = None
    rank_sizes: tuple[int, ...] | None = None

    def to(self, device: torch.device | str) -> StepInputs:
        """The tensors on ``device``; copies from pinned memory do not block the host."""
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> StepInputs:
        """The tensors in page-locked memory (what a DataLoader with ``pin_memory=True`` calls)."""
        return self._map(Tensor.pin_memory)

    def _map(self, move: Callable[[Tensor], Tensor]) -> StepInputs:
        def apply(value):
            return move(value) if isinstance(value, Tensor) else value

        features = None if self.features is None else {k: apply(v) for k, v in self.features.items()}
        return StepInputs(self.sentences, apply(self.teacher_text), apply(self.teacher_image),
                          apply(self.image_ids), features, self.rank_sizes)


def twice(features: dict[str, Any]) -> dict[str, Any]:
    """The batch followed by itself: the two dropout views in one forward. Equal to tokenising the
    sentences twice over (padding is to the longest sentence, which both halves share)."""
    return {k: torch.cat([v, v]) if isinstance(v, Tensor) else v for k, v in features.items()}


def gather_all(x: Tensor, sizes: tuple[int, ...] | None) -> Tensor:
    """Rows of every rank (teacher tensors and ids: nothing there needs a gradient)."""
    return gather_with_grad(x, sizes)[0]


@dataclass(eq=False)
class PairedTensors:
    """A paired step's gathered image side: ``images`` / ``captions`` are the adapted teacher images and
    captions of every rank (``[N, g]``; None where no term reads them); ``image_exclude`` and
    ``caption_exclude`` mask the two L_inter terms (they differ under ``teacher_cross_modal``)."""

    teacher_image_all: Tensor
    image_ids: Tensor
    images: Tensor | None
    captions: Tensor | None
    image_exclude: Tensor | None
    caption_exclude: Tensor | None


@dataclass(eq=False)
class StepTensors:
    """The tensors the terms of one step share. ``h``: sentence embeddings of the dropout views
    (``h2`` None on a one-view step, where nothing below is built), ``z``: their MLP outputs;
    ``candidates``: ``z2`` of every rank (local anchors' positives at ``offset``); ``teacher_text_all``:
    the teacher text rows of every rank and ``s_cc`` the local x gathered cosines (when a term reads
    them); ``exclude``: candidates removed from every text-side softmax; ``grounded``: grounding-head
    outputs of both views (when a term reads them); ``heads``: the objective's grounding heads (ground,
    adapt images and captions; None when no term reads the grounding space); ``text_contrast`` (:class:`distill.losses.WeightedInfoNCELoss`), ``text_logits`` /
    ``text_exclude``: the general text contrast, its logits (queue negatives and cluster weights
    included) and mask, when a term reads them (``distill.term.Needs.text_logits``); ``text_reshaped``:
    a term reshaped that contrast (``Needs.reshapes_text``) or ``loss.focal_gamma`` weights it, so the
    text term is computed from those logits."""

    student: Student
    inputs: StepInputs
    h1: Tensor
    h2: Tensor | None = None
    z1: Tensor | None = None
    z2: Tensor | None = None
    candidates: Tensor | None = None
    offset: int = 0
    teacher_text_all: Tensor | None = None
    s_cc: Tensor | None = None
    exclude: Tensor | None = None
    paired: PairedTensors | None = None
    grounded: list[Tensor] | None = None
    heads: GroundingHeads | None = None
    text_contrast: nn.Module | None = None
    text_logits: Tensor | None = None
    text_exclude: Tensor | None = None
    text_reshaped: bool = False

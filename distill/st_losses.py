"""The project's losses as sentence-transformers losses: ``loss(model, ...)`` for ``SentenceTransformerTrainer``.

Each wrapper embeds the batch with the model it was given and calls the tensor loss of
:mod:`distill.losses` (whose docstrings give the formulas); the trainable heads of the multimodal
losses (grounding head, teacher adapters) belong to the loss, as sentence-transformers' losses own
their parameters. Datasets:

- text losses: one sentence column (two dropout views of it, unsupervised SimCSE) or two columns
  (anchor, positive);
- ``AdapACSEModelLoss`` / ``MCSEModelLoss``: a sentence column plus a ``label`` column holding the
  frozen teacher's vectors of that row, built from ``teacher_text`` / ``teacher_image`` columns by
  :func:`with_teacher_label`;
- ``RegressionModelLoss``: a sentence column plus ``label``, the teacher's text vector of the row;
  :func:`cache_dataset` turns a built teacher cache into exactly that.

The trainer passes every column but ``label`` to the loss as inputs, in order, so a dataset keeps only
the columns its loss reads (``dataset.select_columns(["sentence", "label"])``): a text contrast given
two text columns takes them as (anchor, positive).

docs/sentence_transformers.md has a worked example.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn

from distill.losses import AdapACSELoss, AngularMarginLoss, EmbeddingRegressionLoss, MCSEGroundingLoss, SimCSELoss
from distill.student import GroundingHeads
from teacher_cache import TeacherCache

Features = Iterable[dict[str, Tensor]]


def with_teacher_label(dataset: Dataset, columns: Sequence[str] = ("teacher_text", "teacher_image")) -> Dataset:
    """Concatenate the teacher-vector ``columns`` of each row into the ``label`` column the trainer passes
    to a loss (it passes exactly one label column), and drop them."""
    missing = [name for name in columns if name not in dataset.column_names]
    if missing:
        raise ValueError(f"dataset has no column(s) {missing}; its columns are {dataset.column_names}")

    def concat(row: dict) -> dict:
        return {"label": [value for name in columns for value in row[name]]}

    return dataset.map(concat, remove_columns=list(columns))


def check_columns(dataset: Dataset, loss: nn.Module) -> None:
    """Refuse, before training starts, a dataset whose columns ``loss`` cannot read: the trainer passes every
    column but ``label`` as an input, so a stray column (a source name, an id) would become a second view
    or fail at the first step. One line naming the columns and what to keep."""
    inputs = [name for name in dataset.column_names if name != "label"]
    wanted = getattr(loss, "input_columns", None)
    name = type(loss).__name__
    if wanted is not None and len(inputs) not in wanted:
        counts = " or ".join(map(str, wanted))
        raise ValueError(f"{name} reads {counts} sentence column(s) besides 'label'; the dataset has {len(inputs)} "
                         f"({', '.join(inputs)}): keep only those it reads, e.g. "
                         f"dataset.select_columns({[*inputs[:wanted[0]], *(['label'] if loss.needs_label else [])]})")
    if getattr(loss, "needs_label", False) and "label" not in dataset.column_names:
        raise ValueError(f"{name} needs the teacher's vectors in a 'label' column; the dataset has "
                         f"{', '.join(dataset.column_names)} (see distill.st_losses.with_teacher_label, cache_dataset)")


def cache_dataset(cache: TeacherCache | str | Path, rows: Sequence[int] | None = None) -> Dataset:
    """The ``sentence`` and ``label`` (the teacher's text vector, float32) of a teacher cache's text rows,
    all of them or ``rows`` (cache text indices), ready for :class:`RegressionModelLoss` or
    sentence-transformers' own ``MSELoss``."""
    cache = cache if isinstance(cache, TeacherCache) else TeacherCache.open(cache)
    rows = np.arange(len(cache.text_ids)) if rows is None else np.asarray(rows, dtype=np.int64)
    return Dataset.from_dict({"sentence": cache.texts.take(rows),
                              "label": cache.text(rows).float().numpy()})


def two_views(model: SentenceTransformer, sentence_features: Features) -> tuple[Tensor, Tensor]:
    """Embeddings of (anchor, positive): the two columns, or one column embedded twice (dropout noise)."""
    features = list(sentence_features)
    first = features[0]
    second = features[1] if len(features) > 1 else first
    # a copy each: the model's modules add their outputs to the dict they are given
    return model(dict(first))["sentence_embedding"], model(dict(second))["sentence_embedding"]


class TextContrastModelLoss(nn.Module):
    input_columns, needs_label = (1, 2), False
    """A text contrastive loss of :mod:`distill.losses` applied to the model's two views of a batch."""

    def __init__(self, model: SentenceTransformer, loss: nn.Module):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, sentence_features: Features, labels: Tensor | None = None) -> Tensor:
        return self.contrast(*two_views(self.model, sentence_features))

    def contrast(self, anchors: Tensor, positives: Tensor) -> Tensor:
        """The loss of precomputed views (the multimodal wrappers share their views with it)."""
        return self.loss(anchors, positives)

    def get_config_dict(self) -> dict[str, float]:
        return {name: getattr(self.loss, name) for name in ("temperature", "margin") if hasattr(self.loss, name)}


class SimCSEModelLoss(TextContrastModelLoss):
    """Unsupervised SimCSE (:class:`distill.losses.SimCSELoss`): InfoNCE between two dropout views."""

    def __init__(self, model: SentenceTransformer, temperature: float = 0.05):
        super().__init__(model, SimCSELoss(temperature))


class AngularMarginModelLoss(TextContrastModelLoss):
    """KDMCSE's text loss (:class:`distill.losses.AngularMarginLoss`): InfoNCE with an angular margin."""

    def __init__(self, model: SentenceTransformer, margin: float = 0.15, temperature: float = 0.05):
        super().__init__(model, AngularMarginLoss(margin, temperature))


class GroundedModelLoss(nn.Module):
    input_columns, needs_label = (1, 2), True
    """Shared part of the multimodal wrappers: views, grounding heads owned by the loss, an optional
    text loss on the same views. Returns ``{"text": ..., name: weight * multimodal}`` (the trainer
    sums the terms and logs them apart), or the weighted multimodal term alone."""

    name = "multimodal"

    def __init__(self, model: SentenceTransformer, heads: GroundingHeads, text_loss: TextContrastModelLoss | None,
                 weight: float):
        super().__init__()
        self.model = model
        self.heads = heads
        self.text_loss = text_loss
        self.weight = weight

    def forward(self, sentence_features: Features, labels: Tensor) -> dict[str, Tensor] | Tensor:
        if labels is None:
            raise ValueError(f"{type(self).__name__} needs the teacher's vectors in a 'label' column "
                             "(see distill.st_losses.with_teacher_label)")
        h1, h2 = two_views(self.model, sentence_features)
        grounded = [self.heads.ground(h) for h in (h1, h2)]
        term = self.weight * self.multimodal(grounded, labels.to(h1.device, torch.float32))
        if self.text_loss is None:
            return term
        return {"text": self.text_loss.contrast(h1, h2), self.name: term}

    def multimodal(self, grounded: list[Tensor], labels: Tensor) -> Tensor:
        raise NotImplementedError


class AdapACSEModelLoss(GroundedModelLoss):
    """KDMCSE's multimodal loss (:class:`distill.losses.AdapACSELoss`) on the model's grounded views.

    ``label`` per row: the teacher's caption vector (``teacher_text_dim``) followed by its image vector
    (``teacher_image_dim``), as :func:`with_teacher_label` builds it. The adapters map both into the
    grounding space; the teacher's own caption-caption and image-image cosines shrink the margin.
    KDMCSE: ``text_loss=AngularMarginModelLoss(model)``, ``weight=0.01``.
    """

    name = "adapacse"

    def __init__(self, model: SentenceTransformer, teacher_text_dim: int, teacher_image_dim: int,
                 grounding_dim: int = 256, text_loss: TextContrastModelLoss | None = None, weight: float = 1.0,
                 margin: float = 0.15, temperature: float = 0.05):
        heads = GroundingHeads.create(model.get_embedding_dimension(), grounding_dim, teacher_text_dim,
                                      teacher_image_dim)
        super().__init__(model, heads, text_loss, weight)
        self.teacher_text_dim = teacher_text_dim
        self.loss = AdapACSELoss(margin, temperature)

    def multimodal(self, grounded: list[Tensor], labels: Tensor) -> Tensor:
        teacher_text = F.normalize(labels[:, :self.teacher_text_dim], dim=-1)
        teacher_image = F.normalize(labels[:, self.teacher_text_dim:], dim=-1)
        return self.loss(grounded, self.heads.adapt_images(teacher_image), self.heads.adapt_captions(teacher_text),
                         s_vv=teacher_image @ teacher_image.T, s_cc=teacher_text @ teacher_text.T)

    def get_config_dict(self) -> dict[str, float]:
        return {"margin": self.loss.margin, "temperature": self.loss.temperature, "weight": self.weight}


class MCSEModelLoss(GroundedModelLoss):
    """MCSE's grounding loss (:class:`distill.losses.MCSEGroundingLoss`): InfoNCE from the grounded views
    to the adapted teacher image vector in ``label`` (``with_teacher_label(ds, ["teacher_image"])``).
    MCSE: ``text_loss=SimCSEModelLoss(model)``, ``weight=0.01``.
    """

    name = "mcse"

    def __init__(self, model: SentenceTransformer, teacher_image_dim: int, grounding_dim: int = 256,
                 text_loss: TextContrastModelLoss | None = None, weight: float = 1.0, temperature: float = 0.05):
        heads = GroundingHeads.create(model.get_embedding_dimension(), grounding_dim, None, teacher_image_dim)
        super().__init__(model, heads, text_loss, weight)
        self.loss = MCSEGroundingLoss(temperature)

    def multimodal(self, grounded: list[Tensor], labels: Tensor) -> Tensor:
        return self.loss(grounded, self.heads.adapt_images(F.normalize(labels, dim=-1)))

    def get_config_dict(self) -> dict[str, float]:
        return {"temperature": self.loss.temperature, "weight": self.weight}


class RegressionModelLoss(nn.Module):
    input_columns, needs_label = (1,), True
    """Regression onto the teacher's text vector in ``label`` (:class:`distill.losses.EmbeddingRegressionLoss`,
    MSE): sentence-transformers' distillation recipe and this project's best. Where the student's width
    differs from the teacher's, a linear map owned by the loss (``loss.regression``) projects the student
    first, as the project's trainer does; with equal widths it is sentence-transformers' ``MSELoss``.
    One forward per batch (no second dropout view). Dataset: :func:`cache_dataset`."""

    def __init__(self, model: SentenceTransformer, teacher_text_dim: int):
        super().__init__()
        self.model = model
        self.teacher_text_dim = teacher_text_dim
        dim = model.get_embedding_dimension()
        self.regression = nn.Identity() if dim == teacher_text_dim else nn.Linear(dim, teacher_text_dim)
        self.loss = EmbeddingRegressionLoss()

    def forward(self, sentence_features: Features, labels: Tensor) -> Tensor:
        if labels is None:
            raise ValueError("RegressionModelLoss needs the teacher's vectors in a 'label' column "
                             "(see distill.st_losses.cache_dataset)")
        (features, *extra) = list(sentence_features)
        if extra:
            raise ValueError(f"RegressionModelLoss reads one sentence column, got {1 + len(extra)}: keep only it "
                             "and label (dataset.select_columns)")
        embeddings = self.model(dict(features))["sentence_embedding"]
        return self.loss(self.regression(embeddings), labels.to(embeddings.device, embeddings.dtype))

    def get_config_dict(self) -> dict[str, int]:
        return {"teacher_text_dim": self.teacher_text_dim}

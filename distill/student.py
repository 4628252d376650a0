"""The student: a sentence-transformers encoder plus heads that exist only during training.

At save time only ``encoder`` is written, so the result loads with ``SentenceTransformer(path)``
and embeds exactly what the STS evaluation scored during training. The encoder keeps the base
model's maximum sequence length; ``StudentConfig.max_seq_length`` truncates training batches only
(``Student.tokenise``), so neither the evaluation nor a later user of the saved model truncates at it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling
from torch import nn

from distill.config import ConfigError, StudentConfig
from kdmcse_base.offline_models import resolve_model_name
from kdmcse_base.torch_files import load_tensors



def build_encoder(cfg: StudentConfig, device: str | torch.device = "cpu") -> SentenceTransformer:
    """The student encoder of ``cfg.kind``: a transformer (below) or a static one (distill/static_student.py)."""
    if cfg.kind == "static":
        from distill.static_student import build_static_encoder  # model2vec is needed only here

        return build_static_encoder(cfg, device)
    return build_transformer_encoder(cfg, device)


def build_transformer_encoder(cfg: StudentConfig, device: str | torch.device = "cpu") -> SentenceTransformer:
    """Load the student encoder, set its pooling and cut it to ``cfg.layers`` layers if asked.

    The encoder keeps the base model's own maximum length: ``cfg.max_seq_length`` is a training
    setting that ``Student.embed`` applies per batch.
    """
    encoder = SentenceTransformer(resolve_model_name(cfg.model), device=str(device))
    if cfg.pooling != "model":
        set_pooling(encoder, cfg.pooling)
    if cfg.layers is not None:
        keep_layers(encoder, cfg.layers, cfg.layer_choice)
    if cfg.freeze_word_embeddings:
        encoder[0].auto_model.get_input_embeddings().requires_grad_(False)
    return encoder


def set_pooling(encoder: SentenceTransformer, mode: str) -> None:
    """Swap the encoder's Pooling module for one of ``mode``; every other module (a sentence-transformers
    model's Normalize or Dense) and the maximum length stay as the base model has them. A plain Hugging
    Face encoder comes with sentence-transformers' default mean Pooling, which this replaces."""
    index = next((i for i, module in enumerate(encoder) if isinstance(module, Pooling)), None)
    if index is None:
        raise ConfigError(f"student.pooling={mode}: the model has no Pooling module to set "
                          f"(its modules: {[type(m).__name__ for m in encoder]}); use student.pooling=model")
    encoder[index] = Pooling(encoder[0].get_embedding_dimension(), pooling_mode=mode)


def kept_layer_indices(total: int, k: int, choice: str) -> list[int]:
    """``first``: 0..k-1; ``spread``: k layers evenly spaced from layer 0 (6 -> 3: 0, 2, 4; 12 -> 4: 0, 3, 6, 9)."""
    if not 1 <= k <= total:
        raise ConfigError(f"student.layers={k}: the model has {total} layers; choose 1 to {total}")
    return list(range(k)) if choice == "first" else [i * total // k for i in range(k)]


def keep_layers(encoder: SentenceTransformer, k: int, choice: str = "first") -> None:
    """Keep k transformer layers (``kept_layer_indices``) and drop the others
    (BERT, RoBERTa, MPNet, MiniLM share this layout)."""
    backbone = encoder[0].auto_model
    layers = _layer_list(backbone)
    kept = kept_layer_indices(len(layers), k, choice)
    for index in reversed(range(len(layers))):
        if index not in kept:
            del layers[index]
    backbone.config.num_hidden_layers = k


def _layer_list(backbone: nn.Module) -> nn.ModuleList:
    for path in ("encoder.layer", "encoder.layers", "layers", "transformer.layer"):
        module = backbone
        for attr in path.split("."):
            module = getattr(module, attr, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"cannot find the transformer layer list of {type(backbone).__name__}")


def _projection(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.Tanh())


class Student(nn.Module):
    """Encoder + SimCSE's train-time MLP (KDMCSE, docs/reference.md): ``mlp`` is Linear(d, d) + Tanh on
    the sentence embedding for the text loss, identity when ``mlp_head`` is off. The heads the loss terms
    train (the grounding heads, the regression head) belong to the objective (distill/objective.py)."""

    def __init__(self, encoder: SentenceTransformer, cfg: StudentConfig):
        super().__init__()
        self.encoder = encoder
        self.train_max_length = cfg.max_seq_length
        dim = encoder.get_embedding_dimension()
        self.mlp = _projection(dim, dim) if cfg.mlp_head else nn.Identity()

    def tokenise(self, sentences: list[str]) -> dict[str, Any]:
        """The encoder's own preprocessing of ``sentences`` (CPU tensors), truncated at the training length,
        not at the saved model's maximum: what ``embed`` feeds the encoder. The trainer calls it a step
        ahead (in a loader worker when ``train.loader_workers`` > 0)."""
        limit = {"text": {"max_length": self.train_max_length, "truncation": True}}
        return self.encoder.preprocess(sentences, processing_kwargs=limit)

    def embed_features(self, features: dict[str, Any]) -> torch.Tensor:
        """Sentence embeddings of tokenised sentences (``tokenise``), with dropout active in train mode;
        tensors not yet on the encoder's device are copied there without blocking (from pinned memory
        that copy overlaps the work queued before it)."""
        device = next(self.encoder.parameters()).device
        features = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                    for k, v in features.items()}
        return self.encoder(features)["sentence_embedding"]

    def embed(self, sentences: list[str]) -> torch.Tensor:
        """Sentence embeddings (the evaluated representation) of ``sentences`` tokenised at the training length."""
        return self.embed_features(self.tokenise(sentences))


class GroundingHeads(nn.Module):
    """The grounding space of the multimodal terms: the grounding head Linear(d, g) + Tanh and the trainable
    adapters Linear(teacher_dim, g) + Tanh of the frozen teacher's cached image and caption embeddings (all
    L2-normalised). The objective holds them when a term reads that space; they are kept beside a saved
    encoder so retrieval can be evaluated later.

    ``ground(sentence_embedding)`` and ``adapt_images(teacher_image)`` map both sides into the
    shared grounding space where image-text retrieval is scored.
    """

    def __init__(self, grounding: nn.Module, image_adapter: nn.Module | None, caption_adapter: nn.Module | None):
        super().__init__()
        self.grounding = grounding
        self.image_adapter = image_adapter
        self.caption_adapter = caption_adapter

    @classmethod
    def create(cls, student_dim: int, grounding_dim: int, teacher_text_dim: int | None,
               teacher_image_dim: int | None) -> "GroundingHeads":
        """Freshly initialised heads; an adapter whose teacher dimension is None is left out (a text-only
        run has no image adapter, MCSE no caption adapter)."""
        return cls(
            grounding=_projection(student_dim, grounding_dim),
            image_adapter=_projection(teacher_image_dim, grounding_dim) if teacher_image_dim else None,
            caption_adapter=_projection(teacher_text_dim, grounding_dim) if teacher_text_dim else None,
        )

    def ground(self, sentence_embedding: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.grounding(sentence_embedding), dim=-1)

    def adapt_images(self, teacher_images: torch.Tensor) -> torch.Tensor:
        if self.image_adapter is None:
            raise ValueError("these heads were trained without images")
        return F.normalize(self.image_adapter(teacher_images), dim=-1)

    def adapt_captions(self, teacher_captions: torch.Tensor) -> torch.Tensor:
        if self.caption_adapter is None:
            raise ValueError("these heads were trained without a caption adapter")
        return F.normalize(self.caption_adapter(teacher_captions), dim=-1)

    def save(self, path: str | Path) -> None:
        """Write the heads with their shapes, so ``load`` needs nothing else."""
        shapes = {
            "student_dim": self.grounding[0].in_features,
            "grounding_dim": self.grounding[0].out_features,
            "teacher_text_dim": self.caption_adapter[0].in_features if self.caption_adapter is not None else None,
            "teacher_image_dim": self.image_adapter[0].in_features if self.image_adapter is not None else None,
        }
        torch.save({"shapes": shapes, "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "GroundingHeads":
        payload = load_tensors(path, map_location)
        shapes = payload["shapes"]
        heads = cls.create(shapes["student_dim"], shapes["grounding_dim"], shapes["teacher_text_dim"],
                           shapes["teacher_image_dim"])
        heads.load_state_dict(payload["state_dict"])
        return heads.eval()

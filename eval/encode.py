"""Turn sentences into embeddings with any SentenceTransformer, under a chosen pooler.

Evaluation suites repeat sentences (STS years share headlines; MRPC and SICK reuse sentences), so
``encode`` embeds each distinct sentence once, in length-sorted batches (less padding), and puts
the rows back in the caller's order.

Poolers (the names SimCSE's evaluation uses):

* ``model``: the SentenceTransformer's own pipeline (its Pooling, Dense, Normalize modules).
* ``cls_before_pooler``: the raw last-layer [CLS] vector; what SimCSE/MCSE/KDMCSE report.
* ``cls``: the BERT pooler output (dense + tanh on [CLS]); only for transformers that have one.
* ``mean``: attention-masked mean of the last-layer token vectors.
"""
from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from tqdm.auto import tqdm

from kdmcse_base.offline_models import resolve_model_name
from kdmcse_base.torch_files import UnsafeFileError
from eval.choices import DEFAULT_BF16, POOLERS, Pooler  # noqa: F401  (callers import them from here too)


def load_model(model: str | Path | SentenceTransformer, device: str | None = None) -> SentenceTransformer:
    """A SentenceTransformer from a local path, a hub id, the alias ``offline:all-MiniLM-L6-v2``, or as is."""
    if isinstance(model, SentenceTransformer):
        return model if device is None else model.to(device)
    try:
        return SentenceTransformer(resolve_model_name(str(model)), device=device)
    except pickle.UnpicklingError:  # torch's own message would suggest weights_only=False
        raise UnsafeFileError(f"a weights file of {model}") from None


def encode(
    model: SentenceTransformer,
    sentences: Sequence[str],
    pooler: Pooler = "model",
    batch_size: int = 128,
    bf16: bool = DEFAULT_BF16,
    show_progress: bool = True,
) -> np.ndarray:
    """Embeddings of ``sentences`` as a float32 array ``(len(sentences), dim)``, rows in input order.

    Each distinct sentence goes through the model once. The model is put in eval mode (no dropout)
    for the call and restored afterwards, so a trainer can call this mid-training.
    ``bf16`` runs the forward pass under bfloat16 autocast; outputs are still float32.
    """
    if isinstance(sentences, str):
        raise TypeError("encode() takes a sequence of sentences; wrap a single sentence in a list")
    if pooler not in POOLERS:
        raise ValueError(f"unknown pooler {pooler!r}; choose one of {', '.join(POOLERS)}")
    if pooler != "model":
        _check_transformer_pooler(model, pooler)
    distinct = list(dict.fromkeys(sentences))
    vectors = _encode_distinct(model, distinct, pooler, batch_size, bf16, show_progress)
    row_of = {sentence: row for row, sentence in enumerate(distinct)}
    return vectors[[row_of[sentence] for sentence in sentences]]


def _encode_distinct(
    model: SentenceTransformer, sentences: list[str], pooler: str, batch_size: int, bf16: bool, show_progress: bool
) -> np.ndarray:
    """Encode longest-first (batches of similar length pad little), return rows in the given order."""
    if not sentences:
        return np.zeros((0, _embedding_dim(model, pooler)), dtype=np.float32)
    by_length = sorted(range(len(sentences)), key=lambda i: len(sentences[i]), reverse=True)
    chunks = []
    with _eval_mode(model), torch.inference_mode(), bf16_autocast(model, bf16):
        progress = tqdm(total=len(sentences), unit="sent", desc=f"encode ({pooler})", disable=not show_progress)
        for batch in _batches([sentences[i] for i in by_length], batch_size):
            chunks.append(_embed_batch(model, batch, pooler).float().cpu().numpy())
            progress.update(len(batch))
        progress.close()
    vectors = np.empty((len(sentences), chunks[0].shape[1]), dtype=np.float32)
    vectors[by_length] = np.concatenate(chunks)
    return vectors


@dataclass(frozen=True)
class EmbeddingTable:
    """Embeddings of a set of distinct sentences, looked up by sentence text.

    Evaluators collect the sentences of every task they run, encode them in one ``build`` call
    (each distinct sentence once per run), then score each task from the table.
    """

    row_of: dict[str, int]
    vectors: np.ndarray

    @classmethod
    def build(
        cls,
        model: SentenceTransformer,
        sentences: Sequence[str],
        pooler: Pooler = "model",
        batch_size: int = 128,
        bf16: bool = DEFAULT_BF16,
        show_progress: bool = True,
    ) -> EmbeddingTable:
        distinct = list(dict.fromkeys(sentences))
        vectors = encode(model, distinct, pooler, batch_size, bf16, show_progress)
        return cls({sentence: row for row, sentence in enumerate(distinct)}, vectors)

    def __len__(self) -> int:
        return len(self.row_of)

    def __getitem__(self, sentences: Sequence[str]) -> np.ndarray:
        """Rows for ``sentences``, in order; a sentence that was never encoded raises KeyError."""
        return self.vectors[[self.row_of[sentence] for sentence in sentences]]


def hf_transformer(model: SentenceTransformer) -> torch.nn.Module:
    """The Hugging Face model inside the SentenceTransformer's first (Transformer) module."""
    first = model[0]
    hf_model = getattr(first, "auto_model", None)
    if hf_model is None:
        raise ValueError(
            f"the first module of this SentenceTransformer is {type(first).__name__}, not a Transformer; "
            "only pooler='model' works for it"
        )
    return hf_model


def _check_transformer_pooler(model: SentenceTransformer, pooler: str) -> None:
    hf_model = hf_transformer(model)
    if pooler == "cls" and getattr(hf_model, "pooler", None) is None:
        raise ValueError(
            f"pooler='cls' needs the BERT pooler (dense + tanh on [CLS]), but {type(hf_model).__name__} "
            "has none; use 'cls_before_pooler' for the raw [CLS] vector"
        )


def _embed_batch(model: SentenceTransformer, batch: list[str], pooler: str) -> torch.Tensor:
    features = _tokenize(model, batch)
    if pooler == "model":
        return model(features)["sentence_embedding"]
    inputs = {key: features[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in features}
    output = hf_transformer(model)(**inputs, return_dict=True)
    if pooler == "cls":
        return output.pooler_output
    hidden = output.last_hidden_state
    if pooler == "cls_before_pooler":
        return hidden[:, 0]
    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def _tokenize(model: SentenceTransformer, batch: list[str]) -> dict:
    """Tokenised batch on the model's device (``preprocess`` in sentence-transformers >= 6, else ``tokenize``)."""
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    features = tokenize(batch)
    return {key: value.to(model.device) if torch.is_tensor(value) else value for key, value in features.items()}


def _embedding_dim(model: SentenceTransformer, pooler: str) -> int:
    if pooler == "model":
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())
    return int(hf_transformer(model).config.hidden_size)


def _batches(items: list[str], batch_size: int) -> Iterator[list[str]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def bf16_autocast(model: SentenceTransformer, bf16: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on the model's device when ``bf16``, else nothing."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=model.device.type, dtype=torch.bfloat16)

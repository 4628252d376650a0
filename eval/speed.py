"""How fast a SentenceTransformer encodes: throughput over a batch stream and single-sentence latency.

Both go through ``SentenceTransformer.encode``, the call a deployment makes (tokenisation, the
transformer, pooling and normalisation included; sentences sorted by length inside each call, as
sentence-transformers does), so a PyTorch model and one whose transformer runs on onnxruntime
(``distill.export.load_onnx_student``) are timed on the same path. ``bf16`` runs the call under
bfloat16 autocast on the CPU.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from eval.encode import bf16_autocast


def sentences_per_second(model: SentenceTransformer, sentences: Sequence[str], batch_size: int = 64,
                         bf16: bool = False) -> float:
    """Sentences encoded per second when all of ``sentences`` go through in batches of ``batch_size``."""
    with torch.inference_mode(), bf16_autocast(model, bf16):
        started = time.perf_counter()
        model.encode(list(sentences), batch_size=batch_size, show_progress_bar=False)
        return len(sentences) / (time.perf_counter() - started)


def latencies_ms(model: SentenceTransformer, sentences: Sequence[str], bf16: bool = False) -> np.ndarray:
    """Milliseconds to encode each sentence alone (batch size 1), one value per sentence."""
    times = []
    with torch.inference_mode(), bf16_autocast(model, bf16):
        for sentence in sentences:
            started = time.perf_counter()
            model.encode([sentence], batch_size=1, show_progress_bar=False)
            times.append((time.perf_counter() - started) * 1000.0)
    return np.asarray(times)


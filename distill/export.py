"""Export a saved student to ONNX (float32, and int8 by dynamic quantisation) and run it on onnxruntime.

The files go where sentence-transformers' own export helpers put them, beside the PyTorch weights:

* ``onnx/model.onnx``: the transformer in float32 (inputs ``input_ids``, ``attention_mask`` and, for
  BERT-like models, ``token_type_ids``; output ``last_hidden_state``), exported with ``torch.onnx``'s
  dynamo exporter, batch size and sequence length dynamic;
* ``onnx/model_qint8.onnx``: the same graph with its MatMul weights quantised to int8 per output channel
  and its activations quantised per batch at run time (``onnxruntime.quantization.quantize_dynamic``).
  Per-channel weights matter: per-tensor int8 on all-MiniLM-L6-v2 gave a minimum cosine of 0.87 to the
  float32 embeddings over 640 STS-B sentences, per-channel 0.98.

* ``onnx/sentence_model.onnx`` (format ``onnx-sentence``) and ``onnx/sentence_model_qint8.onnx``
  (``onnx-sentence-int8``): the whole SentenceTransformer in one graph, pooling and normalisation inside,
  whose output ``sentence_embedding`` is the sentence's vector: usable from any ONNX runtime with the
  model's ``tokenizer.json`` and nothing else. Inputs are the tokeniser's: ``input_ids``,
  ``attention_mask`` (and ``token_type_ids``) of shape (batch, sequence) for a transformer; for a static
  student the flat ``input_ids`` of all sentences and the ``offsets`` where each sentence starts
  (``EmbeddingBag``'s layout). sentence-transformers' own export writes the transformer only (its issue
  #3258 asks for pooling inside the graph); a static student has no transformer, so this is its only format.

In the first two files pooling and normalisation stay the SentenceTransformer's own modules, as with
sentence-transformers' ``backend="onnx"``, which reads this layout:
``SentenceTransformer(model_dir, backend="onnx", model_kwargs={"file_name": "onnx/model_qint8.onnx"})``.
That loader needs optimum-onnx, whose current release (0.1.0) requires transformers < 4.58 and so cannot
install beside sentence-transformers 6 (transformers 5). ``load_onnx_student`` does the same without it:
it plugs an onnxruntime session into the SentenceTransformer in place of its PyTorch transformer, and
``encode``, the evaluations and the benchmarks work on it unchanged.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from distill.config import EXPORT_FILES, TRANSFORMER_EXPORTS
EXTRA_HINT = "pip install 'kdmcse-distill[export]'"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "offsets")
OPSET = 18


class ExportError(RuntimeError):
    """An export cannot be done as asked; the message says why and what to do."""


def require_export_extra() -> None:
    """Fail in one line, naming the extra, when the packages an ONNX export needs are missing."""
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if not _importable(name)]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)} (the 'export' extra): {EXTRA_HINT}")


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def export_model(model_dir: str | Path, formats: Sequence[str]) -> list[Path]:
    """Write the ONNX files of ``formats`` into ``model_dir`` (a saved SentenceTransformer); returns them.

    Each file appears complete or not at all (written beside, then renamed)."""
    if not formats:
        return []
    unknown = sorted(set(formats) - set(EXPORT_FILES))
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}; choose from {sorted(EXPORT_FILES)}")
    require_export_extra()
    model_dir = Path(model_dir)
    encoder = SentenceTransformer(str(model_dir), device="cpu")
    refuse_formats_without_transformer(encoder, formats)
    (model_dir / "onnx").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir / "onnx", prefix=".export-") as scratch:
        written = {}
        for graph, quantised, export in (("onnx", "onnx-int8", export_fp32),
                                         ("onnx-sentence", "onnx-sentence-int8", export_sentence_graph)):
            if graph in formats or quantised in formats:
                written[graph] = export(encoder, Path(scratch) / Path(EXPORT_FILES[graph]).name)
            if quantised in formats:
                written[quantised] = quantize_int8(written[graph], Path(scratch) / Path(EXPORT_FILES[quantised]).name)
        targets = []
        for name in dict.fromkeys(formats):
            target = model_dir / EXPORT_FILES[name]
            os.replace(written[name], target)
            targets.append(target)
    return targets


def formats_of(model_dir: str | Path) -> list[str]:
    """Every export format the saved model in ``model_dir`` has: all for a transformer, the whole-model
    graph for a static student (whose first module is no transformer)."""
    import json

    modules = json.loads((Path(model_dir) / "modules.json").read_text())
    static = modules and modules[0].get("type", "").endswith("StaticEmbedding")
    return ["onnx-sentence"] if static else list(EXPORT_FILES)


def refuse_formats_without_transformer(encoder: SentenceTransformer, formats: Sequence[str]) -> None:
    """sentence-transformers' ONNX layout replaces a Transformer module; a static student has none."""
    wanted = [name for name in formats if name in TRANSFORMER_EXPORTS]
    if wanted and not hasattr(encoder[0], "auto_model"):
        raise ExportError(f"{', '.join(wanted)} export the transformer of a SentenceTransformer, and this model's "
                          f"first module is a {type(encoder[0]).__name__}; export it with onnx-sentence (the whole "
                          "model in one graph)")


class _LastHiddenState(torch.nn.Module):
    """The transformer as a function of positional tensors, returning its last hidden state."""

    def __init__(self, transformer: torch.nn.Module, names: Sequence[str]):
        super().__init__()
        self.transformer, self.names = transformer, tuple(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.transformer(**dict(zip(self.names, tensors)), return_dict=True).last_hidden_state


class _SentenceEmbedding(torch.nn.Module):
    """The whole SentenceTransformer as a function of positional tensors, returning the sentence embedding."""

    def __init__(self, encoder: SentenceTransformer, names: Sequence[str]):
        super().__init__()
        self.encoder, self.names = encoder, tuple(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.encoder(dict(zip(self.names, tensors)))["sentence_embedding"]


EXAMPLE = ["A short one.", "A somewhat longer example sentence to export with."]


def export_fp32(encoder: SentenceTransformer, path: Path) -> Path:
    """The encoder's transformer as one float32 ONNX file, batch size and sequence length dynamic."""
    transformer = encoder[0]
    features = transformer.preprocess(EXAMPLE)
    names = [name for name in INPUT_NAMES if name in features]
    wrapper = _LastHiddenState(transformer.model, names).eval()
    return _export(wrapper, features, names, "last_hidden_state", path)


def export_sentence_graph(encoder: SentenceTransformer, path: Path) -> Path:
    """The whole encoder (tokens in, normalised sentence embedding out) as one float32 ONNX file."""
    features = encoder.preprocess(EXAMPLE)
    names = [name for name in INPUT_NAMES if name in features]
    return _export(_SentenceEmbedding(encoder, names).eval(), features, names, "sentence_embedding", path)


def _export(wrapper: torch.nn.Module, features: dict[str, torch.Tensor], names: list[str], output: str,
            path: Path) -> Path:
    """``torch.onnx`` (dynamo) export with every input's sizes dynamic: (batch, sequence) for padded token
    matrices; for a static student's flat token ids and offsets, their one dimension each."""
    if "offsets" in names:
        dims = tuple({0: torch.export.Dim("tokens" if name == "input_ids" else "batch")} for name in names)
    else:
        batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
        dims = tuple({0: batch, 1: length} for _ in names)
    # the exporter reports its passes on stdout and warns about every traced branch; neither helps a user
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, tuple(features[name] for name in names), str(path), input_names=names,
                          output_names=[output], dynamic_shapes=(dims,), opset_version=OPSET, dynamo=True,
                          external_data=False, verbose=False)
    return path


def encode_with_sentence_graph(model_dir: str | Path, sentences: Sequence[str],
                               file_name: str = EXPORT_FILES["onnx-sentence"]) -> np.ndarray:
    """Sentence embeddings computed by the whole-sentence graph alone (onnxruntime), from the model's own
    tokenisation: what a deployment without PyTorch computes."""
    require_export_extra()
    import onnxruntime

    path = Path(model_dir) / file_name
    if not path.is_file():
        raise ExportError(f"{path} does not exist; write it with: kdmcse-export {model_dir} "
                          f"--formats {_format_of(file_name)}")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    features = SentenceTransformer(str(model_dir), device="cpu").preprocess(list(sentences))
    feed = {node.name: features[node.name].numpy().astype(np.int64) for node in session.get_inputs()}
    return session.run(["sentence_embedding"], feed)[0]


def quantize_int8(fp32_path: Path, path: Path) -> Path:
    """Dynamic int8: MatMul weights per output channel, activations per batch at run time.

    Weights use 7 of their 8 bits (``reduce_range``): onnxruntime's u8 x s8 kernels on x86 CPUs without
    VNNI (AVX2 only, e.g. some AMD EPYC) add pairs of products in 16 bits, which saturate with full-range
    weights (onnxruntime's quantization docs); on such a CPU the tiny test BERT's int8 embeddings drifted
    to a cosine distance of 0.10 from float32 with full range."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(path), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                     op_types_to_quantize=["MatMul"])
    return path


class OnnxTransformer(torch.nn.Module):
    """Stands in for the PyTorch transformer inside a SentenceTransformer: same inputs, same
    ``last_hidden_state`` output, computed by an onnxruntime session on the CPU."""

    def __init__(self, path: Path, config: Any, threads: int | None = None):
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.config = config
        # sentence-transformers reads the device and dtype off the first parameter it finds
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, **features: Any) -> dict[str, torch.Tensor]:
        feed = {name: np.ascontiguousarray(features[name].cpu().numpy(), dtype=np.int64)
                for name in self.input_names}
        (hidden,) = self.session.run(["last_hidden_state"], feed)
        return {"last_hidden_state": torch.from_numpy(hidden)}


def load_onnx_student(model_dir: str | Path, file_name: str = EXPORT_FILES["onnx"],
                      threads: int | None = None) -> SentenceTransformer:
    """The SentenceTransformer in ``model_dir`` with its transformer run from ``model_dir/file_name``."""
    require_export_extra()
    path = Path(model_dir) / file_name
    if not path.is_file():
        raise ExportError(f"{path} does not exist; write it with: kdmcse-export {model_dir} "
                          f"--formats {_format_of(file_name)}")
    encoder = SentenceTransformer(str(model_dir), device="cpu")
    transformer = encoder[0]
    transformer.model = OnnxTransformer(path, transformer.model.config, threads)
    return encoder


def _format_of(file_name: str) -> str:
    return next((name for name, file in EXPORT_FILES.items() if file == file_name), "onnx")

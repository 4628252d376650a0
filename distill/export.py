"""Export a saved student to ONNX (float32, and int8 by dynamic quantisation) and run it on onnxruntime.

The files go where sentence-transformers' own export helpers put them, beside the PyTorch weights:

* ``onnx/model.onnx``: the transformer in float32 (inputs ``input_ids``, ``attention_mask`` and, for
  BERT-like models, ``token_type_ids``; output ``last_hidden_state``), exported with ``torch.onnx``'s
  dynamo exporter, batch size and sequence length dynamic;
* ``onnx/model_qint8.onnx``: the same graph with its MatMul weights quantised to int8 per output channel
  and its activations quantised per batch at run time (``onnxruntime.quantization.quantize_dynamic``).
  Per-channel weights matter: per-tensor int8 on all-MiniLM-L6-v2 gave a minimum cosine of 0.87 to the
  float32 embeddings over 640 STS-B sentences, per-channel 0.98.

Pooling and normalisation stay the SentenceTransformer's own modules, as with sentence-transformers'
``backend="onnx"``, which reads this layout:
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

EXPORT_FILES: dict[str, str] = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_qint8.onnx"}
EXTRA_HINT = "pip install 'kdmcse-distill[export]'"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
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
    (model_dir / "onnx").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir / "onnx", prefix=".export-") as scratch:
        fp32 = Path(scratch) / "model.onnx"
        export_fp32(encoder, fp32)
        written = {"onnx": fp32}
        if "onnx-int8" in formats:
            written["onnx-int8"] = quantize_int8(fp32, Path(scratch) / "model_qint8.onnx")
        targets = []
        for name in dict.fromkeys(formats):
            target = model_dir / EXPORT_FILES[name]
            os.replace(written[name], target)
            targets.append(target)
    return targets


class _LastHiddenState(torch.nn.Module):
    """The transformer as a function of positional tensors, returning its last hidden state."""

    def __init__(self, transformer: torch.nn.Module, names: Sequence[str]):
        super().__init__()
        self.transformer, self.names = transformer, tuple(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.transformer(**dict(zip(self.names, tensors)), return_dict=True).last_hidden_state


def export_fp32(encoder: SentenceTransformer, path: Path) -> Path:
    """The encoder's transformer as one float32 ONNX file, batch size and sequence length dynamic."""
    transformer = encoder[0]
    features = transformer.preprocess(["A short one.", "A somewhat longer example sentence to export with."])
    names = [name for name in INPUT_NAMES if name in features]
    example = tuple(features[name] for name in names)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    wrapper = _LastHiddenState(transformer.model, names).eval()
    # the exporter reports its passes on stdout and warns about every traced branch; neither helps a user
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, example, str(path), input_names=names, output_names=["last_hidden_state"],
                          dynamic_shapes=(tuple({0: batch, 1: length} for _ in names),), opset_version=OPSET,
                          dynamo=True, external_data=False, verbose=False)
    return path


def quantize_int8(fp32_path: Path, path: Path) -> Path:
    """Dynamic int8: MatMul weights per output channel, activations per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_path), str(path), weight_type=QuantType.QInt8, per_channel=True,
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

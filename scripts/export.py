"""Export a saved SentenceTransformer (a run's model/, or any local folder) to ONNX for deployment.

Examples:
    python scripts/export.py runs/offline_default/model                       # every format
    python scripts/export.py runs/offline_default/model --formats onnx-sentence

Writes onnx/model.onnx (float32) and onnx/model_qint8.onnx (dynamic int8), the transformer alone in
the layout of sentence-transformers' own export helpers, and onnx/sentence_model.onnx (+ _qint8), the
whole model with pooling and normalisation in one graph, into the folder; the model card says how to
load them. A static student has no transformer: it gets the whole-model graph only. Needs the export
extra: pip install 'kdmcse-distill[export]'. Training can do the same at its end: train.export=[onnx,onnx-int8].
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, never an installed copy

from distill.config import EXPORT_FILES  # noqa: E402  (not distill.export: a quick --help)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="folder of a saved SentenceTransformer (e.g. runs/NAME/model)")
    parser.add_argument("--formats", help=f"comma-separated, among {','.join(EXPORT_FILES)} (default: every "
                        "format the model has)")
    args = parser.parse_args(argv)
    if args.formats is None:
        return args
    args.formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    unknown = sorted(set(args.formats) - set(EXPORT_FILES)) or ([] if args.formats else ["(none)"])
    if unknown:
        parser.error(f"--formats: unknown {unknown}; choose from {','.join(EXPORT_FILES)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from distill.export import ExportError, export_model, formats_of
    from distill.model_card import card_header_of, is_project_card, onnx_usage, set_card_section
    from distill.run_folder import is_complete, seal

    if not (args.model / "modules.json").is_file():
        hint = f"; its saved model is {args.model / 'model'}" if (args.model / "model" / "modules.json").is_file() else ""
        print(f"error: {args.model} is not a saved SentenceTransformer (no modules.json){hint}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        written = export_model(args.model, args.formats or formats_of(args.model))
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if is_project_card(card_header_of(card.read_text()) if (card := args.model / "README.md").is_file() else {}):
        set_card_section(args.model, "deploy", onnx_usage(args.model), before="## Results of this checkpoint")
    if is_complete(args.model):  # a trainer's model/ lists its files: the new ones belong to it too
        seal(args.model)
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    print(f"exported in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

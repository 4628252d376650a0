"""Image-text retrieval of a trained run on its held-out images, and embedding geometry of any model.

Examples:
  python scripts/evaluate_retrieval.py --run runs/kdmcse_offline
  python scripts/evaluate_retrieval.py --run runs/kdmcse_offline --rerank-beta 0.5 --geometry
  python scripts/evaluate_retrieval.py --geometry offline:all-MiniLM-L6-v2 --out results/minilm_geometry.json

Retrieval (--run): captions of the run's held-out images (train.retrieval_holdout_images > 0 at
training time) are embedded by <run>/model and its grounding head, images by the teacher (from the
run's teacher cache) and the image adapter; cosine scores give image-to-text and text-to-image
Recall@1/5/10 (x100) and rSum, their sum (600 = perfect). --rerank-beta adds a row re-ranked with
MMRef multi-modal references (image + the teacher's embeddings of its other captions; see
eval/retrieval.py): it uses gallery-side captions, so it is not comparable with the plain row.

Geometry (--geometry [MODEL]): Wang & Isola alignment and uniformity on STS-B (lower is better for
both); MODEL is a SentenceTransformer folder, hub id or offline:all-MiniLM-L6-v2, and defaults to
<run>/model when --run is given.

Writes results/NAME.json and results/NAME.md and prints the markdown tables.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, never an installed copy

RETRIEVAL_HEADERS: dict[str, str] = {
    "i2t_r1": "i2t R@1", "i2t_r5": "i2t R@5", "i2t_r10": "i2t R@10",
    "t2i_r1": "t2i R@1", "t2i_r5": "t2i R@5", "t2i_r10": "t2i R@10",
    "rsum": "rSum",
}
GEOMETRY_HEADERS: dict[str, str] = {"alignment": "alignment (lower better)", "uniformity": "uniformity (lower better)"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from eval.encode import POOLERS

    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run", type=Path, metavar="RUN_DIR",
                        help="training run folder (model/, grounding_heads.pt, config.yaml, train_summary.json)")
    parser.add_argument("--rerank-beta", type=_unit_interval, metavar="BETA",
                        help="also report MMRef reference re-ranking, "
                        "score = (1-BETA) cos(q, image) + BETA cos(q, reference); e.g. 0.5 (default: off)")
    parser.add_argument("--alpha", type=_unit_interval, default=0.5,
                        help="image weight inside a reference, the rest is its captions' mean (default: 0.5)")
    parser.add_argument("--include-query-in-reference", action="store_true",
                        help="let a caption's own teacher embedding into the reference it is scored against "
                        "(leaks the query into its target; off by default)")
    parser.add_argument("--geometry", nargs="?", const="", default=None, metavar="MODEL",
                        help="also (or only) report alignment/uniformity on STS-B of MODEL (default: <run>/model)")
    parser.add_argument("--geometry-split", default="test", choices=("train", "dev", "test"),
                        help="STS-B split for --geometry (default: test)")
    parser.add_argument("--pooler", default="model", choices=POOLERS,
                        help="sentence pooler for --geometry (retrieval always uses the model's own, as in "
                        "training; default: model)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="data root (default: the run's data_dir, $DISTILL_DATA_DIR or ../shared/data)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON path; the .md goes beside it "
                        "(default: results/<run>_retrieval.json or results/<model>_geometry.json)")
    parser.add_argument("--batch-size", type=int, default=128, help="sentences per forward pass (default: 128)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    if args.run is None and not args.geometry:
        parser.error("give --run RUN_DIR (retrieval) and/or --geometry MODEL (alignment/uniformity)")
    if args.rerank_beta is not None and args.run is None:
        parser.error("--rerank-beta needs --run")
    return args


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


# --- markdown -------------------------------------------------------------------------------------


def table(first_header: str, headers: Mapping[str, str], rows: Mapping[str, Mapping[str, Any]], digits: int = 2) -> str:
    """A markdown table, one row per name; ``headers`` maps result keys to column titles."""
    from eval.report import as_float, markdown_table

    cells = ([name, *(as_float(values.get(key)) for key in headers)] for name, values in rows.items())
    return markdown_table([first_header, *headers.values()], cells, digits)


def render_markdown(payload: Mapping[str, Any]) -> str:
    """The retrieval and geometry tables of one payload (only the sections present), with notes."""
    sections = []
    if payload.get("retrieval"):
        rows = payload["retrieval"]
        first = next(iter(rows.values()))
        sections.append("### Image-text retrieval on held-out images (Recall@k x100)\n\n"
                        + table("run", RETRIEVAL_HEADERS, rows)
                        + f"\n\n{first['n_images']} images, {first['n_captions']} captions; ties ranked pessimistically; "
                        "i2t counts an image as found when any of its captions is in the top k."
                        + (" With 10 images or fewer, t2i R@10 is 100 by construction." if first["n_images"] <= 10 else ""))
    if payload.get("geometry"):
        rows = payload["geometry"]
        first = next(iter(rows.values()))
        sections.append("### Alignment / uniformity (Wang & Isola 2020)\n\n"
                        + table("model", GEOMETRY_HEADERS, rows, digits=4)
                        + f"\n\nSTS-B {first['split']}: {first['n_positive_pairs']} pairs with gold >= "
                        f"{first['positive_threshold']} for alignment, {first['n_sentences']} distinct sentences for "
                        f"uniformity; pooler `{first['pooler']}`.")
    return "\n\n".join(sections) + "\n"


def write_outputs(out: Path, payload: Mapping[str, Any]) -> tuple[Path, Path]:
    json_path = out.with_suffix(".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(f"# Retrieval / geometry: {payload['model']}\n\n" + render_markdown(payload))
    return json_path, md_path


# --- evaluation -----------------------------------------------------------------------------------


def run_retrieval(args: argparse.Namespace) -> dict[str, dict]:
    """Plain retrieval, and the re-ranked row when asked, from one load of the run."""
    from eval.retrieval import load_retrieval_run

    run = load_retrieval_run(args.run, args.data_dir, with_teacher_captions=args.rerank_beta is not None,
                             device=args.device)
    common = dict(batch_size=args.batch_size, show_progress=not args.no_progress)
    rows = {args.run.name: run.evaluate(**common).to_dict()}
    if args.rerank_beta is not None:
        leave_out = not args.include_query_in_reference
        result = run.evaluate(args.rerank_beta, args.alpha, leave_out, **common)
        label = f"{args.run.name} + MMRef re-rank (beta={args.rerank_beta:g}, alpha={args.alpha:g}"
        rows[label + ("" if leave_out else ", query in reference") + ")"] = result.to_dict()
    return rows


def run_geometry(args: argparse.Namespace) -> dict[str, dict]:
    from eval.encode import load_model
    from eval.geometry import alignment_uniformity

    name = args.geometry or str(args.run / "model")
    model = load_model(name, device=args.device)
    result = alignment_uniformity(model, args.data_dir, args.geometry_split, args.pooler, args.batch_size,
                                  show_progress=not args.no_progress)
    return {name: result.to_dict()}


def default_out_path(args: argparse.Namespace) -> Path:
    if args.run is not None:
        return Path("results") / f"{args.run.resolve().name}_retrieval.json"
    name = args.geometry.split(":", 1)[-1].rstrip("/").split("/")[-1] or "model"
    return Path("results") / f"{name}_geometry.json"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from eval.report import build_payload
    from eval.retrieval import RetrievalRunError
    from kdmcse_base.torch_files import UnsafeFileError

    extra: dict[str, Any] = {}
    try:
        if args.run is not None:
            extra["retrieval"] = run_retrieval(args)
    except (RetrievalRunError, UnsafeFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.geometry is not None:
        extra["geometry"] = run_geometry(args)
    config = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    payload = build_payload(str(args.run or args.geometry), config, extra=extra)
    json_path, md_path = write_outputs(args.out or default_out_path(args), payload)
    print(render_markdown(payload), end="")
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

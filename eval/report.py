"""Results as JSON and as markdown tables in the papers' format. Computes nothing.

STS table columns: STS12 STS13 STS14 STS15 STS16 STS-B SICK-R Avg (Spearman x100);
transfer table columns: MR CR SUBJ MPQA SST2 TREC MRPC Avg (accuracy x100). One row per model.
A missing task shows as "-" and then so does Avg, so a partial run never looks like a full one.

Saved JSON files can be re-rendered side by side: ``python -m eval.report results/*.json``.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .mteb_bridge import MTEBResults
from .sts import STSResults
from .transfer import TRANSFER_TASKS, TransferResults

STS_HEADERS: dict[str, str] = {
    "STS12": "STS12",
    "STS13": "STS13",
    "STS14": "STS14",
    "STS15": "STS15",
    "STS16": "STS16",
    "STSBenchmark": "STS-B",
    "SICKRelatedness": "SICK-R",
}
TRANSFER_HEADERS: dict[str, str] = {task: task for task in TRANSFER_TASKS}

Scores = Mapping[str, float | None]


def markdown_table(first_header: str, headers: Mapping[str, str], rows: Mapping[str, Scores]) -> str:
    """A markdown table with one row per name; ``headers`` maps score keys to column titles, plus Avg."""
    lines = [
        "| " + " | ".join([first_header, *headers.values(), "Avg"]) + " |",
        "|" + "---|" * (len(headers) + 2),
    ]
    for name, scores in rows.items():
        cells = [_cell(scores.get(key)) for key in headers]
        lines.append("| " + " | ".join([name, *cells, _cell(_average(scores, headers))]) + " |")
    return "\n".join(lines)


def sts_scores(results: STSResults | Mapping[str, Any]) -> dict[str, float]:
    """Task -> headline Spearman of an STSResults (or of its ``to_dict()``)."""
    payload = results.to_dict() if isinstance(results, STSResults) else results
    return {task: result["spearman"] for task, result in payload["tasks"].items()}


def transfer_scores(results: TransferResults | Mapping[str, Any]) -> dict[str, float]:
    """Task -> test accuracy of a TransferResults (or of its ``to_dict()``)."""
    payload = results.to_dict() if isinstance(results, TransferResults) else results
    return {task: result["accuracy"] for task, result in payload["tasks"].items()}


def sts_table(rows: Mapping[str, STSResults | Mapping[str, Any]]) -> str:
    return markdown_table("model", STS_HEADERS, {name: sts_scores(r) for name, r in rows.items()})


def transfer_table(rows: Mapping[str, TransferResults | Mapping[str, Any]]) -> str:
    return markdown_table("model", TRANSFER_HEADERS, {name: transfer_scores(r) for name, r in rows.items()})


def mteb_table(rows: Mapping[str, MTEBResults | Mapping[str, Any]]) -> str:
    scores = {name: (r.scores if isinstance(r, MTEBResults) else r["scores"]) for name, r in rows.items()}
    return markdown_table("model (mteb)", STS_HEADERS, scores)


def build_payload(
    model_name: str,
    config: Mapping[str, Any],
    sts: STSResults | None = None,
    transfer: TransferResults | None = None,
    mteb: MTEBResults | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything one evaluation run produced, JSON-ready."""
    payload: dict[str, Any] = {"model": model_name, "config": dict(config)}
    for key, results in (("sts", sts), ("transfer", transfer), ("mteb", mteb)):
        if results is not None:
            payload[key] = results.to_dict()
    payload.update(extra or {})
    return payload


def render_markdown(payloads: Sequence[Mapping[str, Any]]) -> str:
    """The STS, transfer and mteb tables of one or more saved payloads (only the sections present)."""
    labelled = list(zip(row_labels(payloads), payloads))
    sections = []
    for key, title, table in (
        ("sts", "STS (Spearman x100)", sts_table),
        ("transfer", "Transfer (accuracy x100)", transfer_table),
        ("mteb", "mteb cross-check (cosine Spearman x100)", mteb_table),
    ):
        rows = {label: p[key] for label, p in labelled if key in p}
        if rows:
            sections.append(f"### {title}\n\n{table(rows)}")
    notes = [_sts_note(label, p) for label, p in labelled if "sts" in p]
    return "\n\n".join(sections + notes) + "\n"


def row_labels(payloads: Sequence[Mapping[str, Any]]) -> list[str]:
    """One table label per payload: the model name, plus its settings where names repeat."""
    names = [p["model"] for p in payloads]
    labels = []
    for name, payload in zip(names, payloads):
        config = payload.get("config", {})
        settings = [config.get("pooler"), "bf16" if config.get("bf16") else "fp32", config.get("aggregation")]
        labels.append(name if names.count(name) == 1 else f"{name} ({', '.join(str(s) for s in settings if s)})")
    return [label if labels.count(label) == 1 else f"{label} #{i + 1}" for i, label in enumerate(labels)]


def write_results(out_path: str | Path, payload: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``<out>.json`` and the markdown tables beside it as ``<out>.md``; return both paths."""
    json_path = Path(out_path).with_suffix(".json")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(f"# Evaluation: {payload['model']}\n\n" + render_markdown([payload]))
    return json_path, md_path


def _sts_note(label: str, payload: Mapping[str, Any]) -> str:
    sts = payload["sts"]
    note = f"{label}: STS12-16 aggregation `{sts['aggregation']}`, pooler `{sts['pooler']}`"
    if sts.get("stsb_dev") is not None:
        note += f"; STS-B dev {sts['stsb_dev']:.2f} (not in Avg)"
    return note + "."


def _average(scores: Scores, headers: Mapping[str, str]) -> float | None:
    values = [scores.get(key) for key in headers]
    if any(v is None for v in values):
        return None
    return round(sum(values) / len(values), 2)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the tables of saved evaluation JSON files side by side.")
    parser.add_argument("results", nargs="+", type=Path, help="JSON files written by scripts/evaluate.py")
    args = parser.parse_args(argv)
    print(render_markdown([json.loads(path.read_text()) for path in args.results]), end="")


if __name__ == "__main__":
    main()

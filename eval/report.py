"""Results as JSON and as markdown tables in the papers' format. Computes nothing.

STS table columns: STS12 STS13 STS14 STS15 STS16 STS-B SICK-R Avg (Spearman x100);
transfer table columns: MR CR SUBJ MPQA SST2 TREC MRPC Avg (accuracy x100). One row per model.
A missing task shows as "-" and then so does Avg, so a partial run never looks like a full one.
Every table names the encoding precision (fp32 or bf16) and, for transfer, the classifier protocol
(``senteval`` or ``fast``): in its title when all rows share them, else in each row's label.

``markdown_table`` is the project's one markdown table writer (the retrieval script and the
offline benchmark report use it too).

Saved JSON files can be re-rendered side by side: ``python -m eval.report results/*.json``.
"""
from __future__ import annotations

import argparse
import numbers
import json
from collections.abc import Iterable, Mapping, Sequence
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


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 2) -> str:
    """A markdown table: a header of ``columns``, then one line per row.

    A real non-integer number (float, numpy float) is written with ``digits`` decimals, ``None`` as
    "-", anything else (text, integers) with ``str``.
    """
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(value, digits) for value in row) + " |")
    return "\n".join(lines)


def scores_table(first_header: str, headers: Mapping[str, str], rows: Mapping[str, Scores]) -> str:
    """One row per name; ``headers`` maps score keys to column titles, plus Avg (only when all are present)."""
    return markdown_table(
        [first_header, *headers.values(), "Avg"],
        ([name, *(as_float(scores.get(key)) for key in headers), _average(scores, headers)]
         for name, scores in rows.items()),
    )


def sts_scores(results: STSResults | Mapping[str, Any]) -> dict[str, float]:
    """Task -> headline Spearman of an STSResults (or of its ``to_dict()``)."""
    payload = results.to_dict() if isinstance(results, STSResults) else results
    return {task: result["spearman"] for task, result in payload["tasks"].items()}


def transfer_scores(results: TransferResults | Mapping[str, Any]) -> dict[str, float]:
    """Task -> test accuracy of a TransferResults (or of its ``to_dict()``)."""
    payload = results.to_dict() if isinstance(results, TransferResults) else results
    return {task: result["accuracy"] for task, result in payload["tasks"].items()}


def sts_table(rows: Mapping[str, STSResults | Mapping[str, Any]]) -> str:
    return scores_table("model", STS_HEADERS, {name: sts_scores(r) for name, r in rows.items()})


def transfer_table(rows: Mapping[str, TransferResults | Mapping[str, Any]]) -> str:
    return scores_table("model", TRANSFER_HEADERS, {name: transfer_scores(r) for name, r in rows.items()})


def mteb_table(rows: Mapping[str, MTEBResults | Mapping[str, Any]]) -> str:
    scores = {name: (r.scores if isinstance(r, MTEBResults) else r["scores"]) for name, r in rows.items()}
    return scores_table("model (mteb)", STS_HEADERS, scores)


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
        present = [(label, p) for label, p in labelled if key in p]
        if not present:
            continue
        settings = {label: run_settings(p, key) for label, p in present}
        if len(set(settings.values())) == 1:
            title = f"{title[:-1]}; {next(iter(settings.values()))})"
            rows = {label: p[key] for label, p in present}
        else:
            rows = {f"{label} [{settings[label]}]": p[key] for label, p in present}
        sections.append(f"### {title}\n\n{table(rows)}")
    notes = [_sts_note(label, p) for label, p in labelled if "sts" in p]
    return "\n\n".join(sections + notes) + "\n"


def run_settings(payload: Mapping[str, Any], section: str) -> str:
    """What produced a section's numbers besides the model: encoding precision, transfer protocol."""
    bf16 = payload.get("config", {}).get("bf16")
    precision = "precision not recorded" if bf16 is None else ("bf16" if bf16 else "fp32") + " encoding"
    if section != "transfer":
        return precision
    # Results saved before the senteval protocol existed came from the scikit-learn ("fast") one.
    protocol = payload["transfer"].get("protocol", "fast")
    return f"{protocol} protocol, {precision}"


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


def as_float(value: Any) -> float | None:
    """A score as a float cell (so an integral score still gets its decimals); None stays None."""
    return None if value is None else float(value)


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    is_real = isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral)
    return f"{value:.{digits}f}" if is_real else str(value)


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

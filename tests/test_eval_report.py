"""eval.report tables and files, and the scripts/evaluate.py command line end to end on tiny data."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from eval.report import (
    build_payload,
    markdown_table,
    render_markdown,
    scores_table,
    sts_table,
    transfer_table,
    write_results,
)
from eval.sts import STS_TASKS, STSResults, STSTaskResult
from eval.transfer import TRANSFER_TASKS, TransferResults, TransferTaskResult

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"


def _sts(values: list[float]) -> STSResults:
    tasks = {name: STSTaskResult(name, v, 10, "all", ()) for name, v in zip(STS_TASKS, values)}
    return STSResults(tasks, "all", "cls_before_pooler", stsb_dev=80.5)


def test_sts_table_is_in_the_papers_format():
    table = sts_table({"SimCSE": _sts([68.40, 82.41, 74.38, 80.91, 78.56, 76.85, 72.23])})
    header, rule, row = table.splitlines()
    assert header == "| model | STS12 | STS13 | STS14 | STS15 | STS16 | STS-B | SICK-R | Avg |"
    assert rule == "|---|---|---|---|---|---|---|---|---|"
    assert row == "| SimCSE | 68.40 | 82.41 | 74.38 | 80.91 | 78.56 | 76.85 | 72.23 | 76.25 |"  # published avg


def test_transfer_table_columns_and_average():
    tasks = {
        t: TransferTaskResult(t, acc, acc, "p", {"all": 1}, (1e-4,))
        for t, acc in zip(TRANSFER_TASKS, [81.18, 86.46, 94.45, 88.88, 85.50, 89.80, 74.43])
    }
    header, _, row = transfer_table({"SimCSE": TransferResults(tasks, "cls")}).splitlines()
    assert header == "| model | MR | CR | SUBJ | MPQA | SST2 | TREC | MRPC | Avg |"
    assert row.endswith("| 74.43 | 85.81 |")  # SimCSE-BERT-base's published transfer average


def test_missing_task_shows_dash_and_no_average():
    row = scores_table("model", {"A": "A", "B": "B"}, {"m": {"A": 1}}).splitlines()[-1]
    assert row == "| m | 1.00 | - | - |"  # an integral score still gets its decimals


def test_markdown_table_formats_each_kind_of_cell():
    table = markdown_table(["name", "x", "n", "note"], [["a", 0.12345, 7, None], ["b", 2.0, 0, "—"]], digits=3)
    assert table.splitlines() == ["| name | x | n | note |", "|---|---|---|---|",
                                  "| a | 0.123 | 7 | - |", "| b | 2.000 | 0 | — |"]


def test_write_results_round_trips_json_and_markdown(tmp_path):
    config = {"pooler": "cls_before_pooler"}
    payload = build_payload("tiny", config, sts=_sts([70.0] * 7), extra={"seconds": {"sts": 1.0}})
    json_path, md_path = write_results(tmp_path / "out" / "tiny.json", payload)
    saved = json.loads(json_path.read_text())
    assert saved["sts"]["average"] == 70.0 and saved["sts"]["tasks"]["STS12"]["spearman"] == 70.0
    assert saved["seconds"] == {"sts": 1.0}
    markdown = md_path.read_text()
    assert "| tiny | 70.00 |" in markdown and "STS-B dev 80.50 (not in Avg)" in markdown
    assert "### STS (Spearman x100; precision not recorded)" in markdown
    assert render_markdown([saved, {**saved, "model": "other"}]).count("| other |") == 1
    fp32 = {**saved, "config": {"pooler": "cls_before_pooler", "bf16": False}}
    twice = render_markdown([fp32, {**saved, "config": {"pooler": "mean", "bf16": True}}])
    # Precisions differ, so each row names its own; the title names none.
    assert "| tiny (cls_before_pooler, fp32) [fp32 encoding] |" in twice
    assert "| tiny (mean, bf16) [bf16 encoding] |" in twice and "### STS (Spearman x100)" in twice


def test_transfer_title_names_protocol_and_precision():
    tasks = {t: TransferTaskResult(t, 80.0, 80.0, "p", {"all": 1}, (1e-4,)) for t in TRANSFER_TASKS}
    payload = build_payload("m", {"bf16": False}, transfer=TransferResults(tasks, "model", "senteval"))
    assert "### Transfer (accuracy x100; senteval protocol, fp32 encoding)" in render_markdown([payload])
    old = {**payload, "transfer": {k: v for k, v in payload["transfer"].items() if k != "protocol"}}
    assert "### Transfer (accuracy x100; fast protocol, fp32 encoding)" in render_markdown([old])


def _load_cli():
    spec = importlib.util.spec_from_file_location("evaluate_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # importing must not run anything
    return module


def test_cli_rejects_unknown_task_groups(capsys):
    cli = _load_cli()
    with pytest.raises(SystemExit):
        cli.parse_args(["--model", "x", "--tasks", "sts,glue"])
    assert "unknown group" in capsys.readouterr().err
    assert cli.default_out_path("offline:all-MiniLM-L6-v2") == Path("results/all-MiniLM-L6-v2.json")


def test_a_runs_model_is_named_after_its_run(tmp_path):
    cli = _load_cli()
    run = tmp_path / "my_run"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("name: my_run\n")
    assert cli.default_out_path(str(run / "model")) == Path("results/my_run.json")
    assert cli.default_out_path(str(run / "best")) == Path("results/my_run-best.json")
    assert cli.default_out_path(str(tmp_path / "elsewhere" / "model")) == Path("results/model.json")  # no run


def test_cli_defaults_are_the_papers_protocol_and_fp32():
    cli = _load_cli()
    defaults = cli.parse_args(["--model", "x"])
    assert (defaults.transfer_protocol, defaults.bf16) == ("senteval", False)
    chosen = cli.parse_args(["--model", "x", "--transfer-protocol", "fast", "--bf16"])
    assert (chosen.transfer_protocol, chosen.bf16) == ("fast", True)


def test_cli_runs_sts_on_tiny_data(tiny_bert_dir, tiny_senteval_dir, tmp_path, capsys):
    cli = _load_cli()
    out = tmp_path / "tiny.json"
    argv = ["--model", str(tiny_bert_dir), "--tasks", "sts", "--pooler", "mean", "--aggregation", "wmean",
            "--data-dir", str(tiny_senteval_dir), "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    saved = json.loads(out.read_text())
    assert saved["config"]["aggregation"] == "wmean" and saved["sts"]["pooler"] == "mean"
    assert saved["config"]["bf16"] is False and saved["config"]["transfer_protocol"] == "senteval"  # defaults
    assert set(saved["sts"]["tasks"]) == set(STS_TASKS) and out.with_suffix(".md").exists()
    assert "| STS12 | STS13 |" in capsys.readouterr().out

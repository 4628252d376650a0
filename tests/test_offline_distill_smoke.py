"""The offline benchmark in smoke mode (2 steps, 1 seed, tiny models): it must keep running end to end."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture()
def mixed_data_dir(tmp_path, tiny_senteval_dir) -> Path:
    """Tiny random SentEval files (fast evaluation) beside the real training corpora and images."""
    from teacher_cache.corpora import resolve_data_dir

    real = resolve_data_dir(None)
    root = tmp_path / "data"
    root.mkdir()
    (root / "senteval").symlink_to(tiny_senteval_dir / "senteval")
    for name in ("wiki1m", "flickr30k", "coco", "images"):
        (root / name).symlink_to(real / name)
    return root


def tiny_benchmark_args(tmp_path: Path, report: Path, tiny_bert_dir: Path, data_dir: Path) -> list[str]:
    """Folders, batch 8, and the tiny student and teacher text tower on a few rows of each corpus."""
    return ["--out-root", str(tmp_path / "runs"), "--cache-root", str(tmp_path / "cache"), "--report", str(report),
            "--data-dir", str(data_dir), "--batch-size", "8",
            "--set", f"student.model={tiny_bert_dir}", "--set", f"teacher.text_model={tiny_bert_dir}",
            "--set", "data.limits={wiki1m: 64, flickr30k_train: 4, coco_val2017: 4, coco2017_mini: 12}",
            "--set", "train.retrieval_holdout_images=4", "--set", "student.layers=1"]


def run_benchmark(cmd: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "FAILED" not in result.stdout, result.stdout
    return result


@pytest.mark.benchmark  # end to end in subprocesses
def test_benchmark_smoke_writes_the_report(tmp_path, tiny_bert_dir, mixed_data_dir):
    report = tmp_path / "report" / "offline_distill.md"
    # one method per kind of run: text contrast alone, image-grounded distillation with the soft-target KL,
    # embedding regression, and sentence-transformers' own trainer (every method's config is valid:
    # tests/test_offline_report.py; every term trains: tests/test_modules_train.py)
    methods = "simcse,kdmcse_kl,regression,st_recipe"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "offline_distill.py"), "--smoke", "--jobs", "3", "--methods", methods,
           *tiny_benchmark_args(tmp_path, report, tiny_bert_dir, mixed_data_dir)]
    run_benchmark(cmd)
    text = report.read_text()
    for label in ("SimCSE", "KDMCSE + soft-target KL", "Embedding regression (MSE)"):  # a row each, 1 seed
        assert f"| {label} (n=1) |" in text
    assert "teacher" in text
    assert (report.parent / "figures" / "offline_distill_dev_curves.png").stat().st_size > 0
    kdmcse = json.loads((tmp_path / "runs" / "kdmcse_kl" / "seed1234" / "results.json").read_text())
    assert kdmcse["train"]["steps"] == 2 and "rsum" in kdmcse["retrieval"]
    # the anchor row: sentence-transformers' own trainer on the cached teacher rows, scored like the rest
    recipe = json.loads((tmp_path / "runs" / "st_recipe" / "seed1234" / "results.json").read_text())
    assert recipe["train"]["best_step"] in (1, 2) and [s for s, _ in recipe["train"]["dev_history"]] == [1, 2]
    assert recipe["train"]["train_seconds"] > 0 and "STS12" in recipe["sts"]["tasks"]
    recipe_config = yaml.safe_load((tmp_path / "runs" / "st_recipe" / "seed1234" / "config.yaml").read_text())
    assert recipe_config["student"]["layer_choice"] == "spread" and recipe_config["train"]["lr"] == 1e-4
    assert "sentence-transformers recipe" in text

    rerun = run_benchmark(cmd)
    assert rerun.stdout.count("already done") == 4 and " ok in " not in rerun.stdout  # finished runs are skipped



@pytest.mark.benchmark  # end to end in subprocesses
def test_race_against_sentence_transformers_smoke(tmp_path, tiny_bert_dir, mixed_data_dir):
    """Speed rounds, then a budget turned into each method's own step count, then the report."""
    report = tmp_path / "report" / "race_st.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "race_st.py"),
           "--methods", "regression_spread,st_recipe,st_recipe_bf16",
           "--rounds", "1", "--speed-steps", "3", "--budgets", "0.002", "--seeds", "1",
           *tiny_benchmark_args(tmp_path, report, tiny_bert_dir, mixed_data_dir)]
    run_benchmark(cmd)
    runs = tmp_path / "runs"
    speed = json.loads((runs / "speed" / "round0" / "st_recipe" / "seed1234" / "results.json").read_text())
    assert speed["train"]["steps"] == 3 and "sts" not in speed  # speed rounds train only
    for method in ("regression_spread", "st_recipe", "st_recipe_bf16"):  # a few tens of steps: the tiny model is fast
        row = json.loads((runs / "budget0.002min" / method / "seed1234" / "results.json").read_text())
        steps = row["train"]["steps"]
        assert steps % 10 == 0 and len(row["train"]["dev_history"]) == 10 and "STS12" in row["sts"]["tasks"]
    text = report.read_text()
    assert "## (a) Steps per second, side by side" in text and "### 0.002 training minutes" in text
    assert "on the STS average (" in text and "of 1 seeds): " in text and "on seed 1234" in text
    # the anchor trains as its example does (fp32) unless its bf16 row is asked for; the report says which
    assert ("Training precision (bf16: autocast): Embedding regression, spread layers bf16, sentence-transformers "
            "recipe (spread layers, MSELoss) fp32, sentence-transformers recipe (spread layers, MSELoss, bf16) bf16."
            in text)
    assert ("The project's steps/s over sentence-transformers recipe (spread layers, MSELoss, bf16)'s, per round: "
            in text)
    assert (report.parent / "figures" / "race_st_dev_minutes.png").stat().st_size > 0
    assert speed["train"]["train_seconds"] > 0
    # the summaries kept beside the report rebuild it with the runs (and their models) gone
    kept = report.parent / "race_st_results"
    assert (kept / "budget0.002min" / "st_recipe" / "seed1234" / "config.yaml").is_file()
    assert "--speed-steps 3" in (kept / "commands.txt").read_text()
    # a resumed race (the same command again) trains nothing anew and lists its command once
    resumed = run_benchmark(cmd)
    assert " ok in " not in resumed.stdout and resumed.stdout.count(", skipped") == 6  # 3 methods x (speed, budget)
    assert len((kept / "commands.txt").read_text().splitlines()) == 1
    shutil.rmtree(runs)
    # resumed on a fresh machine (no runs): the kept teacher row is put back, not scored again
    teacher = json.loads((kept / "teacher" / "results.json").read_text())
    (kept / "teacher" / "results.json").write_text(json.dumps({**teacher, "kept": True}))
    fresh = run_benchmark(cmd)
    assert " ok in " not in fresh.stdout and json.loads((runs / "teacher" / "results.json").read_text())["kept"]
    (kept / "notes.md").write_text("Round 1 shared the cores.")
    run_benchmark([*cmd, "--report-only"])
    rebuilt = report.read_text()
    assert rebuilt.split("## (a)")[1].split("## Notes")[0].rstrip() == text.split("## (a)")[1].rstrip()
    assert rebuilt.rstrip().endswith("## Notes\n\nRound 1 shared the cores.")

"""The offline benchmark's report, built from hand-made results by the benchmark's own ``--report-only`` (run
as a user rebuilds a report): every number it prints is checked."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.config import load_config
from distill.recipes import CONFIG, METHODS

ROOT = Path(__file__).resolve().parents[1]
STS_COLUMNS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")
TRANSFER_COLUMNS = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")


def benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python benchmarks/<script> ARGS`` from the clone, as its docstring says to run it."""
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"},
                          capture_output=True, text=True, timeout=300)


def rebuild_report(out_root: Path, report: Path, *args: str) -> str:
    result = benchmark("offline_distill.py", "--report-only", "--out-root", str(out_root), "--report", str(report),
                       *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report written to {report}" in result.stdout
    return report.read_text()


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_a_valid_config(name):
    loss = load_config(CONFIG, list(METHODS[name].overrides)).loss
    assert METHODS[name].multimodal == (loss.multimodal != "none")


def _result(sts: float, transfer: float | None, seconds: float = 60.0, device: str = "NVIDIA H100", seed=1234) -> dict:
    result = {
        "seed": seed,
        "sts": {"tasks": {task: {"spearman": sts} for task in STS_COLUMNS}},
        "stsb_test_cosines": [0.1, 0.5, 0.9],
        "train": {"steps": 10, "best_step": 10, "best_stsb_dev": sts + 5, "train_seconds": seconds,
                  "steps_per_second": 10 / seconds,
                  "dev_history": [[5, sts - 1], [10, sts]], "device": device},
        "retrieval": {"rsum": 100.0},
    }
    if transfer is not None:
        result["transfer"] = {"tasks": {task: {"accuracy": transfer} for task in TRANSFER_COLUMNS}}
    return result


def _save(path: Path, result: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(result))


@pytest.fixture()
def saved_results(tmp_path) -> Path:
    root = tmp_path / "results"
    _save(root / "untrained", _result(50.0, 80.0))
    _save(root / "teacher", _result(80.0, 84.0))
    scores = {"simcse": (60.0, 61.0), "kdmcse": (66.0, 67.0), "regression": (76.0, 76.2),
              "regression_kl": (76.0, 76.8)}
    for name, (first, second) in scores.items():
        _save(root / name / "seed1234", _result(first, 82.0 + first / 100, seed=1234))
        _save(root / name / "seed1235", _result(second, None, seed=1235))
    _save(tmp_path / "cpu" / "regression" / "seed1234", _result(76.0, None, 600.0, "cpu (2 threads)"))
    for seed, sts, seconds in ((1234, 77.6, 1700.0), (1235, 78.0, 1790.0)):  # a second setting, two seeds, its lr saved
        run = tmp_path / "cpu" / "lr2e-4" / "regression" / f"seed{seed}"
        _save(run, _result(sts, None, seconds, "cpu (2 threads)", seed=seed))
        (run / "config.yaml").write_text("train:\n  lr: 0.0002\n")
    for lr, sts in ((0.0001, 70.0), (0.0004, 71.0)):  # the short runs the learning rate was chosen from
        run = tmp_path / "lr_choice" / f"lr{lr:g}" / "regression" / "seed1234"
        _save(run, _result(sts, None, seed=1234))
        (run / "config.yaml").write_text(f"train:\n  lr: {lr}\n")
    return tmp_path


@pytest.mark.benchmark
def test_report_states_the_goals_from_the_numbers(saved_results):
    report = saved_results / "report" / "offline_distill.md"
    text = rebuild_report(saved_results / "results", report, "--transfer-seeds", "1",
                          "--cpu-check", str(saved_results / "cpu"), "--lr-choice", str(saved_results / "lr_choice"))

    assert "Best method on the 7-task STS average: **Regression + soft-target KL** (76.40)." in text
    assert "It recovers 95.5% of the teacher's 80.00" in text
    assert "vs SimCSE: +6.00 points (goal: >= +5) (KDMCSE alone: +6.00)." in text
    assert "These KDMCSE variants lose to plain embedding regression (76.10): KDMCSE." in text
    assert "Regression + soft-target KL vs embedding regression: +0.30 STS average (within seed noise" in text
    # transfer: first seed only, so each method's cell says n=1 and the per-task table has its values
    assert "| SimCSE | 82.60 (n=1) |" in text
    assert "| untrained 3-layer student | " + " | ".join(["80.00"] * 8) + " |" in text
    assert "range from 82.60 (SimCSE) to 82.76 (Embedding regression (MSE))" in text
    assert "the untrained student scores 80.00 and the teacher scores 84.00." in text
    # results that do not record them came from the defaults of their time: fast protocol, bf16 encoding
    assert "## Transfer tasks (accuracy x100; MRPC: accuracy; fast protocol, bf16 encoding)" in text
    assert "Avg as mean ± std; bf16 encoding)" in text
    # the 2-CPU-core section quotes the saved CPU runs, a row per seed and a verdict per setting
    assert "| Embedding regression (MSE) | — | 1234 | cpu (2 threads) | 10 | 10.0 | 0.02 | 76.00 | 95.00% |" in text
    assert "| Embedding regression (MSE) | 0.0002 | 1235 | cpu (2 threads) | 10 | 29.8 | 0.01 | 78.00 | 97.50% |" in text
    assert ("- Embedding regression (MSE), lr —, 10 steps: STS Avg 76.00 over 1 seed(s) = 95.00% of the teacher's "
            "80.00 (per seed 95.00-95.00%), slowest training 10.0 min: goal (>= 97% within 30 min) **not met**.") in text
    assert ("- Embedding regression (MSE), lr 0.0002, 10 steps: STS Avg 77.80 ± 0.28 over 2 seed(s) = 97.25% of the "
            "teacher's 80.00 (per seed 97.00-97.50%), slowest training 29.8 min: goal (>= 97% within 30 min) "
            "**met**.") in text
    # the learning rate's evidence: dev scores only (best_stsb_dev is sts + 5 here), best first and in bold
    assert ("| Embedding regression (MSE) | 0.0004 | 10 | **76.00** |\n"
            "| Embedding regression (MSE) | 0.0001 | 10 | 75.00 |") in text
    assert (report.parent / "figures" / "offline_distill_dev_curves.png").stat().st_size > 0


@pytest.mark.benchmark
def test_report_without_kdmcse_runs_claims_nothing_about_them(tmp_path):
    root = tmp_path / "results"
    _save(root / "teacher", _result(80.0, 84.0))
    for name, sts in (("simcse", 60.0), ("regression", 76.0)):
        _save(root / name / "seed1234", _result(sts, 82.0, seed=1234))
    text = rebuild_report(root, tmp_path / "report" / "offline_distill.md", "--methods", "simcse,regression")
    assert "Best method on the 7-task STS average: **Embedding regression (MSE)** (76.00)." in text
    assert "KDMCSE variant" not in text and "2-CPU-core" not in text


@pytest.mark.benchmark
def test_recipes_are_compared_seed_by_seed(tmp_path):
    root = tmp_path / "results"
    _save(root / "teacher", _result(80.0, None))
    scores = {"regression_spread": (76.0, 76.4, 76.2), "st_recipe": (75.9, 76.1, 76.1),
              "kdmcse_kl_mse_spread": (75.5, 75.9, 75.6)}
    for name, values in scores.items():
        for seed, sts in zip((1234, 1235, 1236), values):
            _save(root / name / f"seed{seed}", _result(sts, None, seed=seed))
    _save(root / "st_recipe" / "seed1237", _result(70.0, None, seed=1237))  # no partner seed: left out of the pairs
    text = rebuild_report(root, tmp_path / "recipe.md", "--no-transfer")

    # gaps 0.1, 0.3, 0.1: mean 0.17, std 0.12, t = 2.5 on 2 degrees of freedom
    assert ("Embedding regression, spread layers vs sentence-transformers recipe (spread layers, MSELoss), paired: "
            "+0.17 ± 0.12 STS average per seed (ahead on 3 of 3 seeds 1234, 1235, 1236; paired t-test p = 0.130), "
            "STS-B dev +0.17 ± 0.12.") in text
    assert ("Best KDMCSE-family row (KDMCSE + KL + regression, spread layers) vs the best regression-only recipe "
            "(Embedding regression, spread layers): -0.53 STS average (goal: >= +0.30 with seed stds below 0.15; "
            "seed stds 0.21 and 0.20); paired: -0.53 ± 0.06 STS average per seed (ahead on 0 of 3") in text
    assert (tmp_path / "figures" / "recipe_dev_curves.png").stat().st_size > 0  # named after its report


@pytest.mark.benchmark
def test_cpu_check_without_results_is_refused(tmp_path):
    result = benchmark("offline_distill.py", "--report-only", "--cpu-check", str(tmp_path))
    assert result.returncode == 2
    assert f"--cpu-check {tmp_path}: no <method>/seed*/results.json under it" in result.stderr


def race_result(seed: int, steps_per_second: float, sts: float, dev: float) -> dict:
    """A kept run summary of ``benchmarks/race_st.py``, with every field its report reads."""
    return {"seed": seed, "sts": {"tasks": {t: {"spearman": sts} for t in STS_COLUMNS}},
            "train": {"steps": 100, "steps_per_second": steps_per_second, "train_seconds": 100 / steps_per_second,
                      "best_stsb_dev": dev, "dev_history": [[50, dev - 1], [100, dev]]}}


def test_the_race_under_bf16_reads_every_ratio_and_verdict_against_its_anchor(tmp_path):
    """The race at one precision under bf16 names ``st_recipe_bf16`` second: the ratio and the paired verdict
    are against it, not against the fp32 example."""
    report = tmp_path / "race_st_bf16.md"
    kept = tmp_path / "race_st_bf16_results"
    runs = [("speed/round0", "regression_spread", 1234, 3.0, 0.0), ("speed/round0", "st_recipe_bf16", 1234, 2.0, 0.0)]
    for seed, ours, theirs in ((1234, 77.0, 76.5), (1235, 77.2, 76.6)):
        runs += [("budget5min", "regression_spread", seed, 3.0, ours), ("budget5min", "st_recipe_bf16", seed, 2.0, theirs)]
    for group, method, seed, rate, sts in runs:
        folder = kept / group / method / f"seed{seed}"
        folder.mkdir(parents=True)
        dev = 85.0 if method == "regression_spread" else 84.0
        (folder / "results.json").write_text(json.dumps(race_result(seed, rate, sts, dev)))
    args = ["--report-only", "--methods", "regression_spread,st_recipe_bf16", "--budgets", "5", "--seeds", "2",
            "--rounds", "1", "--report", str(report)]
    result = benchmark("race_st.py", *args)
    assert result.returncode == 0, result.stderr
    text = report.read_text()
    assert "over sentence-transformers recipe (spread layers, MSELoss, bf16)'s in the same round" in text
    assert "| 1 | 3.000 | 2.000 | **1.50x** |" in text
    assert "**At 5 minutes the project's recipe is ahead** on the STS average (2 of 2 seeds): +0.55" in text
    wrong = benchmark("race_st.py", *args[:2], "st_recipe_bf16,regression_spread", *args[3:])
    assert wrong.returncode == 2 and "--methods: regression_spread, then one of st_recipe, st_recipe_bf16" in wrong.stderr

"""The paper-size benchmarks, run as a user runs them (``python benchmarks/<script>``): their bad input, and the
scripts end to end at tiny size on CPU, each number of their reports recomputed by hand."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

# three of the step kinds benchmarks/paper_speed.py's report names (the others are the project's other objectives)
SIMCSE, REGRESSION = "SimCSE (project)", "Embedding regression, one view (project)"
ST_TRAINER = "sentence-transformers trainer, MSELoss (its own step)"

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TRANSFORMERS_VERBOSITY": "error"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _table(report: str) -> list[dict[str, str]]:
    lines = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| step ")]
    header = ["step", "precision", "compile", "ms", "tflop_step", "tflops", "ratio"]
    return [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))) for line in lines]


# --- paper_speed ------------------------------------------------------------------------------------


@pytest.mark.benchmark  # ~25 s on 2 idle cores, over a minute on shared ones
def test_paper_speed_tiny_reports_every_row(tmp_path):
    out = tmp_path / "speed.md"
    # fp32 only: a bf16 row is the same arithmetic on another dtype, and each row costs a compile
    _run("paper_speed.py", ["--size", "tiny", "--steps", "2", "--warmup", "1", "--threads", "1", "--precisions", "fp32",
                            "--compile", "eager", "--device", "cpu", "--out", str(out)])
    report = out.read_text()
    assert "RANDOM weights" in report and "torch " in report
    # the tiny BERT's 2 layers: attention 4 x (128x128 + 128) + 2 LayerNorms 4 x 128 + MLP 128x512 + 512 + 512x128 + 128
    per_layer = 4 * (128 * 128 + 128) + 4 * 128 + (128 * 512 + 512) + (512 * 128 + 128)
    assert f"({2 * per_layer / 1e6:.1f}M parameters besides the embeddings)" in report
    rows = _table(report)
    names = list(dict.fromkeys(r["step"] for r in rows))
    assert {SIMCSE, REGRESSION, ST_TRAINER} <= set(names) and len(names) >= 6
    expected = {(name, "fp32", compiled) for name in names
                for compiled in ("no", "yes") if name != ST_TRAINER or compiled == "no"}  # its trainer compiles
    assert {(r["step"], r["precision"], r["compile"]) for r in rows} == expected and len(rows) == 2 * len(names) - 1
    simcse = {(r["precision"], r["compile"]): float(r["ms"]) for r in rows if r["step"] == SIMCSE}
    for row in rows:
        ms, per_step, rate, ratio = (float(row[k]) for k in ("ms", "tflop_step", "tflops", "ratio"))
        assert all(math.isfinite(v) and v > 0 for v in (ms, per_step, rate, ratio)), row
        assert rate == pytest.approx(per_step / (ms / 1e3), rel=2e-3), row
        assert ratio == pytest.approx(ms / simcse[row["precision"], row["compile"]], abs=2e-3), row
    # FLOPs are counted once per step kind: eager and compiled rows share them
    assert len({(r["step"], r["tflop_step"]) for r in rows}) == len(names)
    # the race line: the project's one-view regression against sentence-transformers' step, eager
    eager = {(r["step"], r["precision"]): float(r["ms"]) for r in rows if r["compile"] == "no"}
    ratio = eager[ST_TRAINER, "fp32"] / eager[REGRESSION, "fp32"]
    assert f"- fp32: {eager[REGRESSION, 'fp32']:.3f} ms against " \
           f"{eager[ST_TRAINER, 'fp32']:.3f} ms, **{ratio:.2f}x**" in report


# --- paper_scale ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, says", [
    (["--scale", "2"], "--scale must be in (0, 1]"),
    (["--image-size", "big"], "--image-size expects WxH"),
    (["--source-data", "EMPTY"], "--source-data lacks"),
])
@pytest.mark.benchmark
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(tmp_path, flags, says):
    (tmp_path / "empty").mkdir()
    flags = [str(tmp_path / "empty") if flag == "EMPTY" else flag for flag in flags]
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "paper_scale.py"), "--work-dir",
                             str(tmp_path / "work"), *flags], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {says}") and result.stderr.count("\n") == 1
    assert not (tmp_path / "work").exists()


@pytest.mark.benchmark  # three Python processes (cache, train, the driver): ~35 s on 2 idle cores
def test_paper_scale_tiny_end_to_end(tmp_path):
    work = tmp_path / "work"
    _run("paper_scale.py", ["--work-dir", str(work), "--scale", "0.001", "--tiny-models", "--image-size", "32x24"])
    result = json.loads((work / "paper_scale.json").read_text())
    assert result["layout"] == {"wiki_lines": 1000, "images": 29, "captions": 145}
    assert len((work / "data" / "wiki1m" / "wiki1m_for_simcse.txt").read_text().splitlines()) == 1000
    photos = sorted((work / "data" / "flickr30k" / "images").glob("*.jpg"))
    assert len(photos) == 29
    from PIL import Image

    assert Image.open(photos[0]).size == (32, 24)  # --image-size
    manifest = json.loads(next((work / "cache").glob("*/manifest.json")).read_text())
    assert manifest["modalities"]["text"]["count"] == 1000 + 145
    assert manifest["modalities"]["image"]["count"] == 29
    assert result["pools"] == {"text": 1000, "paired": 145}
    assert result["train_steps_asked"] == 8 and result["train_summary"]["steps"] == 8
    # the paper config's official schedule keeps short last batches: ceil(1000 / 64) = 16 text batches and
    # ceil(145 / 64) = 3 paired ones, 19 steps an epoch, 57 in 3 epochs
    here, paper = result["this_layout"], result["paper_size"]
    per_step = result["train_summary"]["train_seconds"] / 8
    cache = result["stages_seconds"]["cache (scripts/cache_teacher.py)"]
    assert (here["steps_per_epoch"], here["epoch_steps_total"]) == (19, 57)
    assert here["seconds_per_step"] == pytest.approx(per_step)
    assert here["total_seconds"] == pytest.approx(cache + 57 * per_step)
    assert (paper["steps_per_epoch"], paper["epoch_steps_total"]) == (17_891, 53_673)  # the paper config: official
    assert paper["total_seconds"] == pytest.approx(cache / 0.001 + 53_673 * per_step)


# --- paper_cache_speed ------------------------------------------------------------------------------


@pytest.mark.benchmark  # builds 4 small caches with a 1-layer open_clip: ~15 s on 2 shared cores
def test_paper_cache_speed_tiny_reports_builds_against_the_bare_forward(tmp_path):
    from teacher_cache.towers.config import default_num_workers

    _run("paper_cache_speed.py", ["--size", "tiny", "--device", "cpu", "--work-dir", str(tmp_path / "work"),
                                  "--out", str(tmp_path / "cache_speed_{device}.md")])
    report = (tmp_path / "cache_speed_cpu.md").read_text()
    assert "RANDOM weights" in report and "512 Wiki1M lines" in report
    lines = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| modality")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    workers = default_num_workers()
    runs = ["build_cache, 0 workers", f"build_cache, {workers} worker{'s' if workers != 1 else ''}",
            "bare forward, prepared input"]
    assert [(r[0], r[1], r[2]) for r in rows] == [(m, run, n) for m, n in (("text", "512"), ("image", "48"))
                                                  for run in runs]
    for modality in ("text", "image"):
        mine = [r for r in rows if r[0] == modality]
        bare_rate = float(mine[2][4].replace(",", ""))
        assert mine[2][5] == "1.00"
        for row in mine:
            rows_done, seconds, rate, ratio = int(row[2]), float(row[3]), float(row[4].replace(",", "")), float(row[5])
            if seconds >= 0.05:  # shorter times are printed with too few digits to recompute the rate
                assert rate == pytest.approx(rows_done / seconds, rel=0.02, abs=1), row
            assert ratio == pytest.approx(rate / bare_rate, abs=0.01 + 0.01 * ratio), row
    # every cache the run built holds the rows it timed
    manifests = sorted((tmp_path / "work").glob("cache-*/*/manifest.json"))
    assert len(manifests) == 4

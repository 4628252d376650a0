"""The command-line scripts from a clone: they import this checkout, and a user's mistake is one line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("cache_teacher.py", "train_student.py", "evaluate.py")  # the others start with the same line


def run_script(name: str, args: list[str], cwd: Path, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_script_imports_this_checkout_before_an_installed_copy(script, tmp_path):
    decoy = tmp_path / "installed"
    for package in ("teacher_cache", "distill", "eval"):
        (decoy / package).mkdir(parents=True)
        (decoy / package / "__init__.py").write_text("raise ImportError('the installed copy was imported')\n")
    result = run_script(script, ["--help"], cwd=tmp_path, pythonpath=str(decoy))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_evaluate_points_from_a_run_folder_to_its_model(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "modules.json").write_text("[]")
    result = run_script("evaluate.py", ["--model", str(run)], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --model {run} is a training run folder; its saved model is --model {run / 'model'}"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script("evaluate.py", ["--model", str(empty)], cwd=tmp_path)
    assert result.returncode == 2 and "holds no model (no modules.json or config.json)" in result.stderr


def test_evaluate_names_a_model_it_cannot_load_in_one_line(tmp_path, capsys):
    from kdmcse_cli import evaluate

    (tmp_path / "weights.bin").write_text("not a model")
    cases = {str(tmp_path / "typo" / "model"): f"cannot load it (Path {tmp_path / 'typo' / 'model'} not found)",
             "offline:all-MiniLM-L6-v3": "cannot load it (unknown offline model 'offline:all-MiniLM-L6-v3'; the "
                                         "offline models are offline:all-MiniLM-L6-v2 (text) and "
                                         "offline:efficientnet-lite0 (images))",
             str(tmp_path / "weights.bin"): "is a file; pass the folder of a saved SentenceTransformer"}
    for model, message in cases.items():
        assert evaluate.main(["--model", model, "--out", str(tmp_path / "r.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: --model {model}" + (": " if "cannot" in message else " ") + message


def test_evaluate_names_missing_eval_data_in_one_line(tiny_bert_dir, tmp_path, capsys):
    from kdmcse_cli import evaluate

    code = evaluate.main(["--model", str(tiny_bert_dir), "--data-dir", str(tmp_path), "--no-progress",
                          "--out", str(tmp_path / "r.json")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: {tmp_path / 'senteval'}") and "file not found" in errors[0]
    assert errors[0].endswith("(--data-dir names the folder that holds senteval/)")


def test_evaluate_does_not_write_into_a_run_folder_a_trainer_holds(tiny_bert_dir, tmp_path, tiny_senteval_dir):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, str(ROOT / "tests" / "hold_lock.py"), str(run), "training"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_script("evaluate.py", ["--model", str(tiny_bert_dir), "--data-dir", str(tiny_senteval_dir),
                                            "--no-progress", "--out", str(run / "eval" / "r.json")], cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {run} is in use by process {holder.pid} training")
    assert not (run / "eval").exists()


def test_evaluate_scores_the_untrained_student_of_a_config(tiny_bert_dir, tiny_senteval_dir, tmp_path, capsys):
    import json

    from kdmcse_cli import evaluate

    config = tmp_path / "tiny.yaml"
    config.write_text(f"base: offline_default\nname: tiny\nstudent: {{model: {tiny_bert_dir}, layers: 1}}\n")
    out = tmp_path / "r.json"
    assert evaluate.main(["--untrained", str(config), "--data-dir", str(tiny_senteval_dir), "--no-progress",
                          "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "untrained:tiny" and "STSBenchmark" in json.dumps(result["sts"])
    assert evaluate.main(["--untrained", str(tmp_path / "nope.yaml"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --untrained {tmp_path / 'nope.yaml'}: cannot load it (config file {tmp_path / 'nope.yaml'} does not exist)")

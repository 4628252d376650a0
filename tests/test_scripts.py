"""The command-line scripts from a clone: they import this checkout, and a user's mistake is one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# A script from a clone imports the clone, never an installed copy: tests/test_readme.py launches every
# script's --help with such a copy on PYTHONPATH.


def test_evaluate_points_from_a_run_folder_to_its_model(tmp_path, capsys):
    from kdmcse_cli import evaluate

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "modules.json").write_text("[]")
    assert evaluate.main(["--model", str(run)]) == 2
    assert capsys.readouterr().err.strip() == \
        f"error: --model {run} is a training run folder; its saved model is --model {run / 'model'}"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert evaluate.main(["--model", str(empty)]) == 2
    assert "holds no model (no modules.json or config.json)" in capsys.readouterr().err


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


def test_evaluate_does_not_write_into_a_run_folder_a_trainer_holds(tiny_bert_dir, tmp_path, tiny_senteval_dir,
                                                                   capsys):
    from kdmcse_cli import evaluate

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, str(ROOT / "tests" / "hold_lock.py"), str(run), "training"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = evaluate.main(["--model", str(tiny_bert_dir), "--data-dir", str(tiny_senteval_dir), "--no-progress",
                              "--out", str(run / "eval" / "r.json")])
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"error: {run} is in use by process {holder.pid} training")
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


def test_evaluate_runs_some_tasks_of_a_group_and_ctrl_c_is_one_line(tiny_st, tiny_senteval_dir, tmp_path, capsys,
                                                                   monkeypatch):
    import json

    import eval.transfer as transfer
    from kdmcse_cli import evaluate

    from eval.transfer import TransferSettings

    model = tmp_path / "model"
    tiny_st.save(str(model))
    out = tmp_path / "r.json"
    small = TransferSettings("fast", n_folds=2, inner_folds=2, n_jobs=1)  # the tiny files hold 10 rows a class
    real_score = transfer.score_task
    monkeypatch.setattr(transfer, "score_task", lambda task, data, table, settings: real_score(task, data, table, small))
    common = ["--model", str(model), "--data-dir", str(tiny_senteval_dir), "--no-progress", "--out", str(out),
              "--transfer-protocol", "fast"]
    assert evaluate.main(common + ["--tasks", "sts:STSBenchmark+SICKRelatedness,transfer:TREC"]) == 0
    result = json.loads(out.read_text())
    assert set(result["sts"]["tasks"]) == {"STSBenchmark", "SICKRelatedness"}
    assert set(result["transfer"]["tasks"]) == {"TREC"}

    original = transfer.score_task  # the small-fold one

    def interrupted(task, *args):
        if task == "CR":
            raise KeyboardInterrupt
        return original(task, *args)

    monkeypatch.setattr(transfer, "score_task", interrupted)
    assert evaluate.main(common + ["--tasks", "transfer:MR+CR"]) == 130
    partial = tmp_path / "r.transfer-partial.json"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted; finished transfer tasks are kept in {partial}; rerun the same command to go on")
    assert set(json.loads(partial.read_text())["tasks"]) == {"MR"}

    with pytest.raises(SystemExit):
        evaluate.parse_args(["--model", "x", "--tasks", "transfer:TRECC"])
    assert "--tasks: transfer has no task TRECC; its tasks are MR+CR+SUBJ+MPQA+SST2+TREC+MRPC" in capsys.readouterr().err


class _RunsCode:
    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_planted_pickle_is_never_loaded_and_never_suggests_weights_only_false(tiny_bert_dir, tmp_path, capsys):
    import shutil

    import torch

    from kdmcse_cli import evaluate, evaluate_retrieval

    marker = tmp_path / "payload_ran"
    model = Path(shutil.copytree(tiny_bert_dir, tmp_path / "model"))
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    torch.save({"weight": _RunsCode(marker)}, model / "pytorch_model.bin")
    assert evaluate.main(["--model", str(model), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: --model {model}: cannot load it (a weights file of {model} is not a safe checkpoint "
                   "(unpickling it would run code it carries); it was not loaded)")

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    torch.save({"shapes": _RunsCode(marker)}, run / "grounding_heads.pt")
    (run / "config.yaml").write_text("{}\n")
    (run / "train_summary.json").write_text('{"heldout_image_ids": ["a"]}')
    assert evaluate_retrieval.main(["--run", str(run), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {run / 'grounding_heads.pt'} is not a safe checkpoint (unpickling it would run code it "
                   "carries); it was not loaded")
    assert not marker.exists()


@pytest.mark.parametrize("key, value", [("train.device", "cuda"), ("train.device", "cuda:7"), ("train.device", "mps"),
                                        ("train.device", "meta"), ("teacher.device", "cuda")])
def test_a_device_this_machine_lacks_is_one_line_before_anything_loads(tmp_path, key, value, capsys):
    """In process, through the script's main (the exit code it returns is the process's: ``sys.exit(main())``;
    a launch from a clone is test_a_script_imports_this_checkout_before_an_installed_copy)."""
    import torch

    from kdmcse_cli import train_student

    if torch.cuda.is_available() and value.startswith("cuda") and value != "cuda:7":
        pytest.skip("this machine has a GPU")
    code = train_student.main([f"{key}={value}", f"train.output_dir={tmp_path / 'run'}",
                               f"train.cache_root={tmp_path / 'cache'}"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}={value}: "), err[-2000:]
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()

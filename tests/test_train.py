"""End-to-end training on real data slices with a tiny random student and teacher text tower.

The image tower is the real EfficientNet-Lite0 (a few images only). Each run builds its own
teacher cache under tmp, so these tests also cover the trainer's automatic cache build.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from distill.config import ConfigError, load_config
from distill.student import GroundingHeads, build_encoder
from distill.export import EXPORT_FILES, load_onnx_student
from distill.run_folder import LISTING
from distill.stopping import TrainingDiverged
from distill.trainer import train
from eval.sts import stsb_dev_evaluator

import forked
from train_testkit import ROOT, assert_same_weights, tiny_overrides

SCRIPT = str(ROOT / "scripts" / "train_student.py")


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, SCRIPT, *args],
                          env=env, capture_output=True, text=True, **kwargs)


@pytest.mark.slow  # training end to end (cache build, steps, evaluation, save)
def test_training_writes_a_plain_sentence_transformer(tiny_bert_dir, tmp_path, capsys):
    cfg = load_config(ROOT / "configs" / "kdmcse_offline.yaml", tiny_overrides(tiny_bert_dir, tmp_path))
    evaluate_dev = stsb_dev_evaluator(cfg)
    model_dir = train(cfg, evaluate_dev)
    run = tmp_path / "run"

    model = SentenceTransformer(str(model_dir), device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling"]  # no training heads inside
    assert model[0].auto_model.config.num_hidden_layers == 1
    assert torch.isfinite(model.encode(["a dog runs"], convert_to_tensor=True)).all()
    heads = GroundingHeads.load(run / "grounding_heads.pt")  # training-only: beside model/, not in it
    assert heads.grounding[0].out_features == 16 and heads.image_adapter is not None
    assert not (model_dir / "grounding_heads.pt").exists()

    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 4 and [s for s, _ in summary["dev_history"]] == [2, 4]
    assert len(summary["heldout_image_ids"]) == 2
    card = (model_dir / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: sentence-transformers" in card
    assert "all-MiniLM-L6-v2" not in card.split("# kdmcse_offline")[0]  # not the base model's card
    local = f"<local>/{tiny_bert_dir.name}"  # the card names no folder of this machine
    assert f"student **`{local}`**, a **transformer cut** to 1 layer (the first)" in card and str(tmp_path) not in card
    assert f"`{local}` (text) + `EfficientNet-Lite0 (ImageNet)` (images)" in card
    assert "| angular margin contrastive (text) | 1.0 |" in card and "| embedding regression (MSE) | 1.0 |" in card
    best_step, best_dev = summary["best_step"], summary["best_stsb_dev"]
    assert f"| STS-B dev (step {best_step} of 4) | {best_dev:.2f} |" in card
    assert 'SentenceTransformer("path/to/this/folder")' in card
    # training truncates at student.max_seq_length=32; the saved model keeps the base's 64
    assert model.max_seq_length == 64 == SentenceTransformer(str(tiny_bert_dir)).max_seq_length
    assert json.loads((model_dir / "tokenizer_config.json").read_text())["model_max_length"] == 64
    assert load_config(run / "config.yaml") == cfg
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    # the saved model is the one the best dev score was measured on (the untrained student at step 0
    # is the first candidate): rescoring it gives that score
    best = list(max([(0, summary["baseline_stsb_dev"]), *summary["dev_history"]], key=lambda x: x[1]))
    assert [summary["best_step"], summary["best_stsb_dev"]] == best
    assert evaluate_dev(model) == pytest.approx(summary["best_stsb_dev"], abs=1e-9)
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 0 (untrained)", "step 2", "step 4"]
    assert captured.err.rsplit("best_dev=", 1)[1].startswith(f"{best[1]:.2f}")  # the bar's last state is current
    assert lines[-1].endswith(f"best {best[1]:.2f} at step {best[0]}")
    # the baseline: the student the config starts from (what evaluate.py --untrained loads), before step 1
    baseline = summary["baseline_stsb_dev"]
    assert evaluate_dev(build_encoder(cfg.student)) == pytest.approx(baseline, abs=1e-9)
    assert lines[0] == f"step 0 (untrained): STS-B dev {baseline:.2f}"
    assert f"| STS-B dev before training (step 0) | {baseline:.2f} |" in card


@pytest.mark.slow  # training end to end
def test_a_run_that_never_beats_its_start_keeps_the_starting_weights(tiny_bert_dir, tmp_path, capsys):
    cfg = load_config(ROOT / "configs" / "offline_default.yaml", tiny_overrides(tiny_bert_dir, tmp_path))
    scores = iter([70.0, 60.0, 65.0])  # step 0, then every evaluation worse than the start
    model_dir = train(cfg, lambda encoder: next(scores))
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert (summary["best_step"], summary["best_stsb_dev"], summary["kept_starting_point"]) == (0, 70.0, True)
    untrained = build_encoder(cfg.student).encode(["a dog runs", "two cats"])
    saved = SentenceTransformer(str(model_dir), device="cpu").encode(["a dog runs", "two cats"])
    np.testing.assert_allclose(saved, untrained, atol=1e-6)
    out = capsys.readouterr().out
    assert "no evaluation beat the starting point (STS-B dev 70.00 before the first step)" in out
    assert "this checkpoint is the untrained student" in (model_dir / "README.md").read_text()
    # the end-of-run summary: baseline, best and last dev, the model's folder, the next commands
    assert ("STS-B dev: 70.00 before training -> best 70.00 at step 0 (the untrained student: no evaluation "
            "beat it), last 65.00 at step 4") in out
    assert f"model: {model_dir} (dev curve: {model_dir.parent / 'dev_curve.png'})" in out
    assert f"python scripts/evaluate.py --model {model_dir} --tasks sts,transfer" in out
    assert (model_dir.parent / "dev_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


ARGS = ["--config", str(ROOT / "configs" / "kdmcse_offline.yaml")]


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """scripts/train_student.py's main in this process: (exit code, stdout, stderr), the exit code the script
    exits with (``sys.exit(main())``). For a refusal, and for the rerun that resumes a killed or signalled
    launch (which the kill needs: a process of its own, forked: tests/forked.py)."""
    from kdmcse_cli import train_student

    capsys.readouterr()
    code = train_student.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow  # training end to end
def test_a_non_finite_loss_stops_the_run_before_anything_is_saved(tiny_bert_dir, tmp_path, monkeypatch):
    from distill import trainer

    cfg = load_config(ROOT / "configs" / "offline_default.yaml",
                      tiny_overrides(tiny_bert_dir, tmp_path, **{"train.max_steps": 6, "train.log_every": 1}))
    real, steps = trainer.read_terms, iter(range(1, 100))

    def diverging_at_step_3(terms, env):  # log_every=1: read once per step
        values = real(terms, env)
        return {**values, "loss": math.nan} if next(steps) >= 3 else values

    monkeypatch.setattr(trainer, "read_terms", diverging_at_step_3)
    with pytest.raises(TrainingDiverged, match=r"^the loss diverged: loss=nan at step 3 .*the last good "
                                                        r"checkpoint is .*checkpoint.pt \(step 2\)"):
        train(cfg, stsb_dev_evaluator(cfg))
    run = tmp_path / "run"
    assert not (run / "model").exists() and not (run / "train_summary.json").exists()


@pytest.mark.slow  # training end to end
def test_no_finite_dev_score_saves_no_model(tiny_bert_dir, tmp_path):

    cfg = load_config(ROOT / "configs" / "offline_default.yaml", tiny_overrides(tiny_bert_dir, tmp_path))
    with pytest.raises(TrainingDiverged, match="no evaluation scored a finite STS-B dev"):
        train(cfg, lambda encoder: math.nan)
    assert not (tmp_path / "run" / "model").exists() and not (tmp_path / "run" / "best").exists()


@pytest.mark.parametrize("value", [".inf", ".nan", "2.0"])
def test_a_learning_rate_that_can_only_diverge_is_refused(value):
    with pytest.raises(ConfigError, match=r"^train\.lr must be"):
        load_config(None, [f"train.lr={value}"])


@pytest.mark.slow  # training end to end, then an ONNX export
def test_export_at_the_end_of_training_belongs_to_model(tiny_bert_dir, tmp_path):
    overrides = tiny_overrides(tiny_bert_dir, tmp_path, **{"train.max_steps": 2, "train.export": "[onnx, onnx-int8]"})
    cfg = load_config(ROOT / "configs" / "offline_default.yaml", overrides)
    model_dir = train(cfg, stsb_dev_evaluator(cfg))
    assert {EXPORT_FILES["onnx"], EXPORT_FILES["onnx-int8"]} <= set(json.loads((model_dir / LISTING).read_text()))
    card = (model_dir / "README.md").read_text()
    assert card.count("## Deploy") == 1 and f'model_kwargs={{"file_name": "{EXPORT_FILES["onnx-int8"]}"}}' in card
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(["a dog runs", "two cats sleep on a mat"])
    onnx = load_onnx_student(model_dir, EXPORT_FILES["onnx"]).encode(["a dog runs", "two cats sleep on a mat"])
    assert np.allclose(onnx, reference, atol=1e-4)
    assert train(cfg, stsb_dev_evaluator(cfg)) == model_dir  # the folder is still the trainer's: rerun accepted


@pytest.fixture(scope="module")
def straight_run(tiny_bert_dir, tmp_path_factory) -> tuple[list[str], Path]:
    """An uninterrupted 6-step run the kill tests compare with: (its overrides without output_dir, folder)."""
    tmp_path = tmp_path_factory.mktemp("straight")
    common = tiny_overrides(tiny_bert_dir, tmp_path, **{"train.max_steps": 6})
    result = forked.run([SCRIPT, *ARGS, *common, f"train.output_dir={tmp_path / 'straight'}"])
    assert result.returncode == 0, result.stderr[-2000:]
    return common, tmp_path / "straight"


@pytest.mark.slow  # training runs in processes of their own
def test_kill_and_rerun_resumes_to_the_same_weights(straight_run, tmp_path, capsys):
    common, straight = straight_run
    resumed = tmp_path / "resumed"
    args = ARGS

    proc = forked.Forked([SCRIPT, *args, *common, f"train.output_dir={resumed}"])
    deadline = time.time() + 300
    while not (resumed / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "model").exists(), "the run finished before it could be killed"

    code, out, err = run_main(args + common + [f"train.output_dir={resumed}"], capsys)  # the same command again
    assert code == 0, err[-2000:]
    assert "resuming" in out + err
    assert_same_weights(straight / "model", resumed / "model")


@pytest.mark.slow  # training runs in processes of their own
def test_kill_inside_the_best_swap_leaves_a_complete_best_and_resumes(straight_run, tmp_path, capsys):
    """SIGKILL at the first rename of a complete best.new/ into best/: the rerun puts it in place."""
    common, straight = straight_run
    out = tmp_path / "swapped"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KILL_AT_REPLACE": "best:1"}
    killed = forked.run([str(ROOT / "tests" / "kill_at_replace.py"), SCRIPT, *ARGS, *common, f"train.output_dir={out}"],
                        env=env)
    assert killed.returncode == -signal.SIGKILL
    # the first best/ of the run: nothing to exchange with, so a rename, killed before it happened
    assert not (out / "best").exists() and (out / "best.new" / ".trainer_files.json").is_file()

    code, _, err = run_main(ARGS + common + [f"train.output_dir={out}"], capsys)  # the same command again
    assert code == 0, err[-2000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in straight.iterdir())
    assert_same_weights(straight / "best", out / "best")
    assert_same_weights(straight / "model", out / "model")


@pytest.mark.slow  # training runs in processes of their own
@pytest.mark.parametrize("name, at, extra", [  # one handler takes both signals (distill/stopping.py)
    ("SIGTERM", "3", []),
    ("SIGTERM", "3:group", ["train.loader_workers=2"]),  # Slurm's way: the loader workers get it too
    ("SIGINT", "0", []),  # Ctrl-C during the step-0 evaluation
])
def test_a_signal_checkpoints_the_current_step_and_resumes_without_losing_it(straight_run, tmp_path, name, at, extra,
                                                                             capsys):
    """Schedulers send SIGTERM before killing; Ctrl-C sends SIGINT: the step it arrives in is kept."""
    common, straight = straight_run
    out = tmp_path / "signalled"
    step = int(at.split(":")[0])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SIGNAL_AT_STEP": f"{name}:{at}"}
    stopped = forked.run([str(ROOT / "tests" / "signal_at_step.py"), SCRIPT, *ARGS, *common, *extra,
                          f"train.output_dir={out}"], env=env, new_session=True)
    assert stopped.returncode == 128 + getattr(signal, name), stopped.stderr[-2000:]
    assert stopped.stderr.strip().splitlines()[-1] == (
        f"stopped by {name} after step {step} of 6; checkpoint written ({out / 'checkpoint.pt'}); "
        "rerun the same command to resume")
    assert "Traceback" not in stopped.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=True)["state"]["step"] == step

    code, _, err = run_main(ARGS + common + extra + [f"train.output_dir={out}"], capsys)  # the same command again
    assert code == 0, err[-2000:]
    assert_same_weights(straight / "model", out / "model")


def finished_copy(straight: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "finished"
    shutil.copytree(straight, out, symlinks=True)
    return out


@pytest.mark.slow  # training runs in processes of their own
def test_a_finished_run_without_its_checkpoint_is_never_overwritten(straight_run, tmp_path, capsys):
    """``rm checkpoint.pt`` to save space, then another lr into the same folder: refused; the same
    config: "already finished", nothing rewritten."""
    common, straight = straight_run
    out = finished_copy(straight, tmp_path)
    (out / "checkpoint.pt").unlink()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    code, _, err = run_main(ARGS + common + ["train.lr=0.002", f"train.output_dir={out}"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {out} holds a finished or stopped run with a different config (train.lr); choose another "
        "train.output_dir or delete that folder to start over"]
    code, same_out, err = run_main(ARGS + common + [f"train.output_dir={out}"], capsys)
    assert code == 0, err[-2000:]
    assert "already finished" in same_out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == \
        {p: t for p, t in before.items() if p.name != ".lock"}


@pytest.mark.slow  # training runs in processes of their own
@pytest.mark.parametrize("how", ["cp -a + own file", "mv"])  # every name and kind: tests/test_run_folder.py
@pytest.mark.parametrize("name", ["model.old", "best.new"])
def test_a_users_copy_in_the_run_folder_is_never_deleted(straight_run, tmp_path, how, name, capsys):
    import shutil

    common, straight = straight_run
    out = finished_copy(straight, tmp_path)
    source = out / name.split(".")[0]
    if how == "mv":
        os.rename(source, out / name)
    else:
        shutil.copytree(source, out / name, symlinks=True)
    if how.endswith("own file"):
        (out / name / "notes.txt").write_text("mine")
    kept = sorted(p.relative_to(out).as_posix() for p in (out / name).rglob("*"))
    code, _, err = run_main(ARGS + common + [f"train.output_dir={out}"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: train.output_dir={out} holds files this trainer did not write ({name}/); choose a new or empty "
        "folder, or move them away"]
    assert sorted(p.relative_to(out).as_posix() for p in (out / name).rglob("*")) == kept


@pytest.mark.slow  # two training runs end to end
def test_changed_config_refuses_to_resume(tiny_bert_dir, tmp_path):
    config = ROOT / "configs" / "offline_default.yaml"  # the bare defaults also encode all of Flickr30k and COCO val
    cfg = load_config(config, tiny_overrides(tiny_bert_dir, tmp_path, **{"train.max_steps": 2}))
    train(cfg, stsb_dev_evaluator(cfg))
    changed = load_config(config, tiny_overrides(tiny_bert_dir, tmp_path, **{"train.max_steps": 2, "train.lr": 0.5}))
    with pytest.raises(ValueError, match="train.lr"):
        train(changed, stsb_dev_evaluator(changed))


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("train.eval_every=0", "train.eval_every must be >= 1, got 0"),
    ("train.lr=-1e-4", "train.lr must be > 0 and <= 1.0, got -0.0001"),
    ("train.warmup_ratio=2", "train.warmup_ratio must be >= 0 and <= 1, got 2.0"),
    ("student.max_seq_length=0", "student.max_seq_length must be >= 1, got 0"),
    ("train.loader_workers=-1", "train.loader_workers must be >= 0, got -1"),
])
def test_out_of_range_values_are_refused_at_load(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "configs" / "kdmcse_offline.yaml", [override])
    assert str(err.value) == message


def test_out_of_range_value_exits_2_before_anything_is_loaded(tmp_path):
    result = run_cli([f"train.output_dir={tmp_path}", "train.batch_size=0"], timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "config error: train.batch_size must be >= 1, got 0"
    assert not any(tmp_path.iterdir())


def test_bad_config_value_fails_fast_with_the_key_named(tmp_path):
    started = time.time()
    result = run_cli(["loss.text=infonce", f"train.output_dir={tmp_path}"], timeout=120)
    assert result.returncode == 2
    assert "loss.text must be one of" in result.stderr
    assert time.time() - started < 60
    assert not any(tmp_path.iterdir())


def torchrun(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", str(forked.free_port()), *args],
                            env=env or {**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_losses(run: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


@pytest.mark.slow
def test_two_processes_compute_the_global_batch(tiny_bert_dir, tmp_path):
    """With dropout off, 2 ranks x 4 rows log the same loss as 1 process x 8 rows: at step 1 (the same
    function of the same rows) and at step 2 (after the same, exact, update). The ranks are forked with
    torchrun's environment; the launches below go through torchrun itself."""
    wrapper = [str(ROOT / "tests" / "no_dropout.py"), str(ROOT / "scripts" / "train_student.py")]
    common = tiny_overrides(tiny_bert_dir, tmp_path, **{"train.max_steps": 2, "train.eval_every": 2,
                                                        "train.log_every": 1})
    for rank in forked.ranks([*wrapper, *common, "train.batch_size=4", f"train.output_dir={tmp_path / 'two'}"]):
        assert rank.returncode == 0, rank.stderr[-3000:]
    one = forked.run([*wrapper, *common, f"train.output_dir={tmp_path / 'one'}"])
    assert one.returncode == 0, one.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["effective_batch_size"] == 8
    two_losses, one_losses = logged_losses(tmp_path / "two"), logged_losses(tmp_path / "one")
    assert sorted(two_losses) == [1, 2]
    assert two_losses[1] == pytest.approx(one_losses[1], rel=1e-5)
    assert two_losses[2] == pytest.approx(one_losses[2], rel=1e-4)
    assert two_losses[2] != pytest.approx(two_losses[1], rel=1e-3)  # the update did change the loss


def node_launch(args: list[str], endpoint: str) -> subprocess.Popen:
    """One node of a two-node torchrun (one process per node), meeting the other at ``endpoint``
    (c10d rendezvous), as each node of a cluster is launched. One thread per process, as torchrun gives
    each of several processes on one node: CPU sums in another thread split round differently."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                             "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "rehearsal",
                             *args], env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def two_rank_straight(tiny_bert_dir, tmp_path_factory) -> tuple[list[str], Path]:
    """An uninterrupted 6-step run of one node with two processes (dropout on, forked with torchrun's
    environment), which the two-node and the torchrun kill tests compare with: (its overrides without
    output_dir, its folder)."""
    tmp_path = tmp_path_factory.mktemp("two_rank_straight")
    common = tiny_overrides(tiny_bert_dir, tmp_path, **{"train.max_steps": 6, "train.batch_size": 4})
    for rank in forked.ranks([SCRIPT, *common, f"train.output_dir={tmp_path / 'one'}"]):
        assert rank.returncode == 0, rank.stderr[-3000:]
    return common, tmp_path / "one"


@pytest.mark.slow
def test_two_nodes_train_the_weights_of_one_node_with_the_same_global_batch(two_rank_straight, tmp_path):
    """A rehearsal of a cluster launch on one machine: two node launches (``--nnodes 2``, c10d rendezvous on
    localhost, a shared run folder and cache) train, dropout on, the weights one node with two processes
    trains; the cache is built by both nodes together."""
    script = str(ROOT / "scripts" / "train_student.py")
    common, one = two_rank_straight
    endpoint = f"localhost:{forked.free_port()}"
    nodes = [node_launch([script, *common, f"train.output_dir={tmp_path / 'two'}",
                          f"train.cache_root={tmp_path / 'cache_two'}"], endpoint) for _ in range(2)]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, err[-3000:]
    assert list((tmp_path / "cache_two").glob("*/manifest.json"))  # built here, by the two nodes
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["effective_batch_size"] == 8
    assert_same_weights(one / "model", tmp_path / "two" / "model")


@pytest.mark.slow
def test_torchrun_kill_and_resume_is_bit_identical(two_rank_straight, tmp_path):
    """Both ranks' RNG states (dropout on) travel in the checkpoint: a killed 2-process run resumes exactly."""
    script = str(ROOT / "scripts" / "train_student.py")
    common, straight = two_rank_straight
    resumed = tmp_path / "resumed"
    killer = {**os.environ, "HF_HUB_OFFLINE": "1", "KILL_AT_REPLACE": "checkpoint.pt:2"}  # rank 0, at step 4
    proc = torchrun([str(ROOT / "tests" / "kill_at_replace.py"), script, *common, f"train.output_dir={resumed}"],
                    env=killer)
    proc.communicate(timeout=600)
    assert proc.returncode != 0 and not (resumed / "model").exists()
    rerun = torchrun([script, *common, f"train.output_dir={resumed}"])
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    assert "resuming" in out + err
    assert_same_weights(straight / "model", resumed / "model")

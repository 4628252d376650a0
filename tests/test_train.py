"""End-to-end training on real data slices with a tiny random student and teacher text tower.

The image tower is the real EfficientNet-Lite0 (a few images only). Each run builds its own
teacher cache under tmp, so these tests also cover the trainer's automatic cache build.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer

from distill.config import load_config
from distill.student import GroundingHeads
from distill.trainer import train
from eval.sts import stsb_dev_evaluator

ROOT = Path(__file__).resolve().parents[1]


def tiny_overrides(tiny_bert_dir: Path, tmp_path: Path, **extra) -> list[str]:
    values = {
        "student.model": str(tiny_bert_dir), "student.layers": 1, "student.grounding_dim": 16,
        "teacher.text_model": str(tiny_bert_dir), "teacher.batch_size": 32,
        "data.limits": "{wiki1m: 48, coco2017_mini: 8}",
        "train.output_dir": str(tmp_path / "run"), "train.cache_root": str(tmp_path / "cache"),
        "train.batch_size": 8, "train.max_steps": 4, "train.eval_every": 2, "train.lr": 1e-3,
        "train.retrieval_holdout_images": 2, "train.precision": "fp32", "train.eval_batch_size": 512,
        "loss.soft_target_weight": 1.0, "loss.regression_weight": 1.0, "loss.false_negative_filter": "gist",
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train_student.py"), *args],
                          env=env, capture_output=True, text=True, **kwargs)


def test_training_writes_a_plain_sentence_transformer(tiny_bert_dir, tmp_path):
    cfg = load_config(ROOT / "configs" / "offline_default.yaml", tiny_overrides(tiny_bert_dir, tmp_path))
    model_dir = train(cfg, stsb_dev_evaluator(cfg))
    run = tmp_path / "run"

    model = SentenceTransformer(str(model_dir), device="cpu")
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling"]  # no training heads inside
    assert model[0].auto_model.config.num_hidden_layers == 1
    assert torch.isfinite(model.encode(["a dog runs"], convert_to_tensor=True)).all()
    heads = GroundingHeads.load(model_dir / "grounding_heads.pt")
    assert heads.grounding[0].out_features == 16 and heads.image_adapter is not None

    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 4 and [s for s, _ in summary["dev_history"]] == [2, 4]
    assert len(summary["heldout_image_ids"]) == 2
    card = (model_dir / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: sentence-transformers" in card
    assert "all-MiniLM-L6-v2" not in card.split("# offline_default")[0]  # not the base model's card
    assert f"student **`{tiny_bert_dir}`**, first 1 layers" in card
    assert f"`{tiny_bert_dir}` (text) + `EfficientNet-Lite0 (ImageNet)` (images)" in card
    assert "| angular margin contrastive (text) | 1.0 |" in card and "| embedding regression (MSE) | 1.0 |" in card
    best_step, best_dev = summary["best_step"], summary["best_stsb_dev"]
    assert f"| STS-B dev (step {best_step} of 4) | {best_dev:.2f} |" in card
    assert f'SentenceTransformer("{run / "model"}")' in card
    # training truncates at student.max_seq_length=32; the saved model keeps the base's 64
    assert model.max_seq_length == 64 == SentenceTransformer(str(tiny_bert_dir)).max_seq_length
    assert json.loads((model_dir / "tokenizer_config.json").read_text())["model_max_length"] == 64
    assert load_config(run / "config.yaml") == cfg
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    from eval.mteb_bridge import evaluate_mteb_sts  # the saved student runs in mteb as it is

    scores = evaluate_mteb_sts(str(model_dir), tasks=["STSBenchmark"]).scores
    assert 0 < scores["STSBenchmark"] <= 100


def test_kill_and_rerun_resumes_to_the_same_weights(tiny_bert_dir, tmp_path):
    straight = tmp_path / "straight"
    resumed = tmp_path / "resumed"
    args = ["--config", str(ROOT / "configs" / "offline_default.yaml")]
    common = tiny_overrides(tiny_bert_dir, tmp_path, **{"train.max_steps": 6})
    assert run_cli(args + common + [f"train.output_dir={straight}"], timeout=600).returncode == 0

    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train_student.py"), *args, *common,
                             f"train.output_dir={resumed}"], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (resumed / "checkpoint.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "model").exists(), "the run finished before it could be killed"

    rerun = run_cli(args + common + [f"train.output_dir={resumed}"], timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming" in rerun.stdout + rerun.stderr
    a = load_file(straight / "model" / "model.safetensors")
    b = load_file(resumed / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_changed_config_refuses_to_resume(tiny_bert_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_bert_dir, tmp_path, **{"train.max_steps": 2}))
    train(cfg, stsb_dev_evaluator(cfg))
    changed = load_config(None, tiny_overrides(tiny_bert_dir, tmp_path, **{"train.max_steps": 2, "train.lr": 0.5}))
    with pytest.raises(ValueError, match="train.lr"):
        train(changed, stsb_dev_evaluator(changed))


def test_bad_config_value_fails_fast_with_the_key_named(tmp_path):
    started = time.time()
    result = run_cli(["loss.text=infonce", f"train.output_dir={tmp_path}"], timeout=120)
    assert result.returncode == 2
    assert "loss.text must be one of" in result.stderr
    assert time.time() - started < 60
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_bert_dir, tmp_path):
    overrides = tiny_overrides(tiny_bert_dir, tmp_path, **{"train.max_steps": 2, "train.eval_every": 2})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           str(ROOT / "scripts" / "train_student.py"), *overrides]
    result = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["effective_batch_size"] == 16
    SentenceTransformer(str(tmp_path / "run" / "model"), device="cpu")

"""One tiny end-to-end training run with all four related-method modules switched on."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from distill.config import load_config
from distill.trainer import train
from eval.sts import stsb_dev_evaluator
from train_testkit import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
MODULES_ON = {
    "loss.aahr.queue_size": 16, "loss.aahr.prototypes": 4, "loss.aahr.weight": 0.1,
    "loss.aahr.cluster_negative_weight": 0.5,
    "loss.focal_gamma": 2.0, "loss.soft_mask.weight": 1.0, "loss.soft_mask.strength": 0.5,
    "loss.mmref.weight": 0.01,
    "loss.dias.dimension_weight": 0.001, "loss.dias.relation_weight": 1.0, "loss.dias.top_k": 3,
}


def test_three_steps_with_every_module_log_finite_terms(tiny_bert_dir, tmp_path):
    overrides = tiny_overrides(tiny_bert_dir, tmp_path, **{
        "train.max_steps": 3, "train.eval_every": 3, "train.paired_every": 2, "train.log_every": 1, **MODULES_ON})
    cfg = load_config(ROOT / "configs" / "kdmcse_offline.yaml", overrides)
    train(cfg, stsb_dev_evaluator(cfg))
    run = tmp_path / "run"

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    logged = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    every_step = ["text", "soft_mask_view", "soft_target", "regression", "aahr_prototypes", "dias_relation", "loss"]
    paired_only = ["multimodal", "mmref", "dias_dimension"]  # step 2 is the paired one
    for name in every_step:
        assert len(logged[f"train/{name}"]) == 3, name
    for name in paired_only:
        assert len(logged[f"train/{name}"]) == 1, name
    assert all(math.isfinite(v) for name in every_step + paired_only for v in logged[f"train/{name}"])

    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["trainable"]
    assert int(state["objective.aahr.queue.count"]) == 16  # 3 steps x 8 rows, capacity 16
    assert bool(state["objective.aahr.prototypes.initialized"])

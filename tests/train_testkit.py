"""Shared builders of the trainer tests: tiny-run overrides, a one-process run without a real cache, and a
bit-for-bit weight comparison."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from distill.config import load_config
from distill.pools import TrainingPools
from distill.run import TrainingRun, build_run
from kdmcse_base.process_group import DistEnv

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


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    a = load_file(a_dir / "model.safetensors")
    b = load_file(b_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


TEXT_DIM, IMAGE_DIM, ROWS = 12, 10, 16


class VectorTable:
    """Stands in for the teacher cache: fixed unit vectors by row."""

    text_dim, image_dim = TEXT_DIM, IMAGE_DIM

    def __init__(self, generator: torch.Generator):
        self.texts = F.normalize(torch.randn(ROWS, TEXT_DIM, generator=generator), dim=-1)
        self.images = F.normalize(torch.randn(ROWS, IMAGE_DIM, generator=generator), dim=-1)

    def text(self, idx, device):
        return self.texts[torch.as_tensor(idx)].to(device)

    def image(self, idx, device):
        return self.images[torch.as_tensor(idx)].to(device)


def tiny_run(tiny_bert_dir, env: DistEnv = DistEnv(0, 1, torch.device("cpu")), overrides: tuple[str, ...] = ()) -> TrainingRun:
    """The trainer's own run (``build_run``) of the offline KDMCSE config on the tiny student, over
    ``VectorTable`` instead of a teacher cache: a 3-step schedule at lr 1e-4."""
    cfg = load_config(ROOT / "configs" / "kdmcse_offline.yaml", [
        f"student.model={tiny_bert_dir}", "student.layers=1", "student.grounding_dim=16", "train.lr=1e-4",
        "train.weight_decay=0", "train.max_steps=3", *overrides])
    torch.manual_seed(0)
    rows = np.arange(ROWS)
    pools = TrainingPools(sentences=[f"a dog runs in the park {i}" for i in rows], text_rows=rows,
                          paired_text_rows=rows, paired_image_rows=rows, heldout_image_ids=[])
    return build_run(cfg, env, VectorTable(torch.Generator().manual_seed(1)), pools)

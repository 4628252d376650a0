from pathlib import Path

import pytest

from distill.config import ConfigError, RunConfig, load_config, save_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert cfg.train.batch_size > 0


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.lr=1e-4", "student.layers=3", "loss.text=simcse", "train.max_steps=null"])
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.student.layers == 3
    assert cfg.loss.text == "simcse"
    assert cfg.train.max_steps is None


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown key"),
    ("loss.text=infonce", "loss.text must be one of"),
    ("train.batch_size=big", "train.batch_size must be int"),
    ("train.batch_size=true", "train.batch_size must be int"),
    ("nonsense", "must look like key.sub=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["student.layers=2", "train.precision=bf16"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")

import re
from pathlib import Path

import pytest

from distill.config import ConfigError, RunConfig, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


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


@pytest.mark.parametrize("override, message", [
    ("loss.temperature=0", "loss.temperature must be > 0, got 0.0"),
    ("loss.teacher_temperature=-0.05", "loss.teacher_temperature must be > 0, got -0.05"),
    ("loss.text_margin=-0.1", "loss.text_margin must be >= 0, got -0.1"),
    ("loss.multimodal_margin=-1", "loss.multimodal_margin must be >= 0, got -1.0"),
    ("loss.gist_margin=-0.1", "loss.gist_margin must be >= 0, got -0.1"),
    ("loss.multimodal_weight=-0.01", "loss.multimodal_weight must be >= 0, got -0.01"),
    ("loss.soft_target_weight=-1", "loss.soft_target_weight must be >= 0, got -1.0"),
    ("loss.regression_weight=-1", "loss.regression_weight must be >= 0, got -1.0"),
    ("loss.focal_gamma=-2", "loss.focal_gamma must be >= 0, got -2.0"),
    ("loss.filter_threshold=1.5", "loss.filter_threshold must be >= -1 and <= 1, got 1.5"),
    ("loss.cross_modal_threshold=-1.2", "loss.cross_modal_threshold must be >= -1 and <= 1, got -1.2"),
])
def test_out_of_range_loss_values_exit_2_naming_the_key(override, message, capsys):
    from distill.config import run_config_from_argv

    with pytest.raises(SystemExit) as stop:
        run_config_from_argv([override], "test", CONFIGS / "offline_default.yaml")
    assert stop.value.code == 2
    assert capsys.readouterr().err == f"config error: {message}\n"


@pytest.mark.parametrize("override", ["loss.text_margin=0", "loss.multimodal_weight=0", "loss.filter_threshold=-1",
                                      "loss.cross_modal_threshold=1", "loss.gist_margin=0"])
def test_loss_values_on_the_range_edges_are_accepted(override):
    key, value = override.split("=")
    assert getattr(load_config(None, [override]).loss, key.split(".")[1]) == float(value)


def test_a_config_with_a_base_holds_only_what_differs(tmp_path):
    """``base: offline_default``: every unset key is the base's; ``data`` is the run's own whole; a run
    that names itself writes to runs/<name>."""
    (tmp_path / "mine.yaml").write_text(
        "base: offline_default\nname: mine\nstudent: {max_seq_length: 64}\n"
        "data:\n  text_sources: [{path: my.txt}]\ntrain: {max_steps: 20}\n")
    mine, base = load_config(tmp_path / "mine.yaml"), load_config(ROOT / "configs" / "offline_default.yaml")
    assert mine.loss == base.loss and (mine.train.lr, mine.train.precision) == (base.train.lr, base.train.precision)
    assert (mine.student.layers, mine.student.layer_choice, mine.student.max_seq_length) == (3, "spread", 64)
    assert [s.path for s in mine.data.text_sources] == ["my.txt"] and mine.data.image_sources == ()
    assert (mine.train.max_steps, mine.train.output_dir) == (20, "runs/mine")

    (tmp_path / "child.yaml").write_text("base: mine.yaml\ntrain: {lr: 1.0e-4}\n")  # a path beside the file
    child = load_config(tmp_path / "child.yaml", ["loss.regression_weight=2"])
    assert (child.train.lr, child.train.max_steps, child.train.output_dir) == (1e-4, 20, "runs/mine")
    assert child.loss.regression_weight == 2.0


@pytest.mark.parametrize("text, message", [
    ("base: no_such_config\n", "base 'no_such_config' is neither a file beside it nor a shipped config"),
    ("base: loop.yaml\n", "base 'loop.yaml' leads back to itself"),
    ("base: [offline_default]\n", "base must be a config name or path"),
])
def test_a_bad_base_is_a_config_error(tmp_path, text, message):
    (tmp_path / "loop.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(tmp_path / "loop.yaml")


@pytest.mark.parametrize("images, held_out", [(4, 1), (7, 1), (3, 0), (397, 99), (29000, 1000)])
def test_auto_holdout_is_a_quarter_of_the_images_at_most_1000(images, held_out):
    import numpy as np
    import pyarrow as pa

    from distill.pools import HOLDOUT_SEED, choose_heldout_images
    from teacher_cache.rows import StringColumn

    ids = [f"i{k}" for k in np.random.default_rng(images).permutation(images)]  # rows not in id order
    chosen = choose_heldout_images(StringColumn(pa.chunked_array([ids])), np.arange(images), "auto")
    assert len(chosen) == held_out
    # the rows of the ids the list-based selection picked: ids sorted, a fixed permutation, its first n
    order = np.random.default_rng(HOLDOUT_SEED).permutation(images)
    by_id = sorted(ids)
    assert sorted(ids[row] for row in chosen) == sorted(by_id[i] for i in order[:held_out])


@pytest.mark.parametrize("section, message", [
    ({"teacher": {"batch_size": "64"}}, "teacher.batch_size must be int, got '64'"),
    ({"teacher": {"precison": "fp32"}}, "unknown key(s) teacher.precison"),
    ({"data": {"skip_bad": "yes"}}, "data.skip_bad must be bool, got 'yes'"),
    ({"data": {"text_sources": "wiki1m"}}, "data.text_sources must be a list, got 'wiki1m'"),
])
def test_cache_teacher_checks_its_sections_as_training_does(section, message, tmp_path, capsys):
    """scripts/cache_teacher.py reads teacher: and data: through the same typed reader as a training
    config: the same checks, one line naming the key, exit 2."""
    import yaml

    from kdmcse_cli import cache_teacher

    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(section))
    assert cache_teacher.main(["--config", str(config), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(config)

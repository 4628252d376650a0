"""--print-config: every key with its type, value, default and a line of doc, from the dataclasses."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from distill.config import ConfigError, LossConfig, RunConfig, StudentConfig, TrainConfig, run_config_from_argv, to_dict
from distill.config_help import config_keys

ROOT = Path(__file__).resolve().parents[1]


def flat_keys(raw: dict, prefix: str = "") -> list[str]:
    return [k for name, value in raw.items()
            for k in (flat_keys(value, f"{prefix}{name}.") if isinstance(value, dict) and name not in ("limits", "terms")
                      else [prefix + name])]


def test_print_config_lists_every_key_with_value_default_and_doc(capsys):
    config = ROOT / "configs" / "offline_default.yaml"
    with pytest.raises(SystemExit) as stop:
        run_config_from_argv(["--config", str(config), "--print-config", "train.max_steps=50"], "d", config)
    assert stop.value.code == 0
    out = capsys.readouterr().out.splitlines()
    listed = [line.split(":")[0] for line in out[1:] if not line.startswith("    ")]
    assert listed == flat_keys(to_dict(RunConfig()))
    i = out.index("train.max_steps: int | None = 50 (default null)")
    assert out[i + 1] == "    `epochs` over the text rows, or `max_steps` when set."
    i = out.index("student.max_seq_length: int = 32")
    assert "truncated" in out[i + 1]
    assert "train.precision: 'auto' | 'fp32' | 'bf16' | 'fp16' = auto" in out


@pytest.mark.parametrize("section", [StudentConfig, LossConfig, TrainConfig])
def test_every_key_of_the_training_sections_is_documented(section):
    assert [key.key for key in config_keys(section()) if not key.doc] == []


def test_doc_comes_from_metadata_then_comment_then_docstring():
    @dataclass
    class Example:
        """Docs. ``beta`` counts things; ``gamma`` scales ``x * delta``."""

        alpha: int = field(default=1, metadata={"doc": "from metadata"})
        beta: int = 2
        gamma: float = 0.5  # from a comment
        delta: Literal["a", "b"] = "a"
        epsilon: tuple[str, ...] = ()

    docs = {key.key: (key.type, key.doc) for key in config_keys(Example())}
    assert docs == {"alpha": ("int", "from metadata"), "beta": ("int", "`beta` counts things"),
                    "gamma": ("float", "from a comment"), "delta": ("'a' | 'b'", "`gamma` scales `x * delta`."),
                    "epsilon": ("tuple[str, ...]", "")}


OWN_SOURCES = {
    "text file": "{path: my/sentences.txt}",
    "table column": "{path: my/table.tsv, column: text}",
    "datasets": "{dataset: my/ds, split: train, column: sentence}",
    "image folder": "{images: my/photos, captions: my/photos/c.csv, image_column: file, caption_column: caption}",
}


def print_config(script: str, config: Path, capsys, monkeypatch) -> str:
    """``scripts/<script>.py --config CONFIG --print-config`` through the script's main, in this process, from
    the config's folder: what it prints (a launch of each script is tests/test_readme.py's ``--help``)."""
    import importlib

    monkeypatch.chdir(config.parent)
    capsys.readouterr()
    try:
        code = importlib.import_module(f"kdmcse_cli.{script}").main(["--config", str(config), "--print-config"])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    assert code in (0, None), captured.err[-2000:]
    return captured.out


@pytest.mark.parametrize("script", ["train_student", "cache_teacher"])
@pytest.mark.parametrize("form", sorted(OWN_SOURCES))
def test_print_config_shows_every_own_source_form(tmp_path, form, script, capsys, monkeypatch):
    """Own sources print as the mappings they were written as (they are dataclasses inside)."""
    key = "image_sources" if form == "image folder" else "text_sources"
    config = tmp_path / "mine.yaml"
    config.write_text(f"base: offline_default\nname: mine\ndata:\n  {key}: [{OWN_SOURCES[form]}]\n")
    printed = print_config(script, config, capsys, monkeypatch)
    (line,) = [line for line in printed.splitlines() if line.startswith(f"data.{key}:")]
    written = OWN_SOURCES[form].strip("{}").split(", ")
    assert all(item in line for item in written), line


def test_cache_teacher_reads_the_base_chain(tmp_path, capsys, monkeypatch):
    """A config that names a base caches with the base's teacher: the same resolution as training."""
    config = tmp_path / "mine.yaml"
    config.write_text("base: kdmcse_bert_flickr\nname: mine\ndata:\n  text_sources: [{path: my/sentences.txt}]\n")
    printed = print_config("cache_teacher", config, capsys, monkeypatch)
    backend = next(line for line in printed.splitlines() if line.startswith("teacher.backend:"))
    assert backend.split(" = ")[1].startswith("open_clip")  # kdmcse_bert_flickr's CLIP teacher
    assert "data.image_sources: tuple[ImageCaptionSource | str, ...] = []" in printed


def test_cache_teacher_takes_overrides_and_aliases_as_train_student_does(tmp_path):
    """One config system: ``section.key=value`` overrides, the older flags as aliases, a cache-only YAML,
    a misspelled key refused with "did you mean", and the shard size under the key the trainer reads."""
    from kdmcse_cli import cache_teacher

    cfg = cache_teacher.resolve_config(cache_teacher.parse_args(
        ["--shard-rows", "8", "--limit", "coco2017_mini=4", "teacher.batch_size=16", "--backend", "composite"]))
    assert (cfg.train.cache_shard_rows, cfg.teacher.batch_size, cfg.teacher.backend) == (8, 16, "composite")
    assert cfg.data.limits == {"coco2017_mini": 4}
    cache_only = tmp_path / "cache.yaml"
    cache_only.write_text("cache_root: somewhere\nshard_rows: 16\nteacher: {batch_size: 8}\n")
    cfg = cache_teacher.resolve_config(cache_teacher.parse_args(["--config", str(cache_only)]))
    assert (cfg.train.cache_root, cfg.train.cache_shard_rows, cfg.teacher.batch_size) == ("somewhere", 16, 8)
    with pytest.raises(ConfigError, match=r"teacher.bach_size \(did you mean teacher.batch_size\?\)"):
        cache_teacher.resolve_config(cache_teacher.parse_args(["teacher.bach_size=3"]))


def test_the_trainer_finds_the_cache_of_its_shard_size(monkeypatch, tmp_path):
    import distill.pools as pools
    from distill.config import load_config

    seen = {}
    monkeypatch.setattr(pools, "open_cache", lambda *a, **kw: seen.update(kw))
    pools.open_run_cache(load_config(None, ["train.cache_shard_rows=8"]), tmp_path)  # trainer, demo, retrieval
    assert seen["shard_rows"] == 8

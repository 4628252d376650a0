"""Typed run configuration: nested dataclasses loaded from YAML, with ``key.sub=value`` overrides.

Every field is checked against its annotation when the config is loaded, so a typo or a bad value
stops the run with a clear message before any model is loaded or any data is read.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from teacher_cache.data import CacheDataConfig
from teacher_cache.towers.config import TeacherConfig


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


@dataclass
class StudentConfig:
    """The sentence encoder being trained.

    ``model`` is a hub id, a local path, or ``offline:all-MiniLM-L6-v2``. A plain Hugging Face
    encoder gets a Pooling module of kind ``pooling``; ``model`` keeps a sentence-transformers
    folder's own pooling. ``layers: k`` keeps only the first k transformer layers.
    """

    model: str = "offline:all-MiniLM-L6-v2"
    layers: int | None = None
    pooling: Literal["model", "cls", "mean"] = "model"
    max_seq_length: int = 32
    mlp_head: bool = False
    grounding_dim: int = 256


@dataclass
class LossConfig:
    """Which objective terms are on, and their weights (REFERENCE.md gives the papers' values)."""

    text: Literal["simcse", "angular", "none"] = "angular"
    temperature: float = 0.05
    text_margin: float = 0.15
    multimodal: Literal["adapacse", "mcse", "none"] = "adapacse"
    multimodal_margin: float = 0.15
    multimodal_weight: float = 0.01
    same_image_mask: bool = True
    false_negative_filter: Literal["none", "threshold", "gist"] = "none"
    filter_threshold: float = 0.9
    gist_margin: float = 0.1
    gist_mode: Literal["absolute", "relative"] = "absolute"
    soft_target_weight: float = 0.0
    teacher_temperature: float = 0.05
    regression_weight: float = 0.0


@dataclass
class TrainConfig:
    """Optimisation, schedule, evaluation and output settings."""

    output_dir: str = "runs/offline_default"
    cache_root: str = "cache/teacher"
    batch_size: int = 64
    lr: float = 3e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    grad_clip: float = 1.0
    epochs: int = 1
    max_steps: int | None = None
    seed: int = 1234
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    paired_every: int | None = None
    eval_every: int = 125
    retrieval_holdout_images: int = 0
    eval_batch_size: int = 256
    log_every: int = 10
    device: str | None = None


@dataclass
class RunConfig:
    """A whole training run: student, teacher, data, objective and trainer settings."""

    name: str = "offline_default"
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: CacheDataConfig = field(default_factory=CacheDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data_dir: str | None = None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML file (or start from defaults) and apply ``a.b=value`` overrides (YAML-parsed values)."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(RunConfig, raw, prefix="")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, value = item.split("=", 1)
    node = raw
    *parents, leaf = key.strip().split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(value)


def from_dict(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, checking names and types; ``prefix`` names the section."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + k for k in unknown)}; known: {sorted(known)}")
    values = {name: _coerce(hints[name], value, prefix + name) for name, value in raw.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # the dataclass's own checks (__post_init__)
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err}") from err


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(hint) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(item_type, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}")
        return value
    return value

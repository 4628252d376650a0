"""Typed run configuration: nested dataclasses loaded from YAML, with ``key.sub=value`` overrides.

Every field is checked against its annotation when the config is loaded, so a typo or a bad value
stops the run with a clear message before any model is loaded or any data is read.
"""
from __future__ import annotations

import argparse
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


# Allowed ranges of numeric fields, as dataclass field metadata (checked by ``from_dict``, naming the key).
def at_least(low: float) -> dict[str, Any]:
    return {"range": (low, None, False)}


POSITIVE = {"range": (0, None, True)}  # > 0
UNIT_INTERVAL = {"range": (0, 1, False)}  # in [0, 1]


@dataclass
class StudentConfig:
    """The sentence encoder being trained.

    ``model`` is a hub id, a local path, or ``offline:all-MiniLM-L6-v2``. A plain Hugging Face
    encoder gets a Pooling module of kind ``pooling``; ``model`` keeps a sentence-transformers
    folder's own pooling. ``layers: k`` keeps only the first k transformer layers.
    """

    model: str = "offline:all-MiniLM-L6-v2"
    layers: int | None = field(default=None, metadata=at_least(1))
    pooling: Literal["model", "cls", "mean"] = "model"
    max_seq_length: int = field(default=32, metadata=at_least(1))
    mlp_head: bool = False
    grounding_dim: int = field(default=256, metadata=at_least(1))


@dataclass
class LossConfig:
    """Which objective terms are on, and their weights (REFERENCE.md gives the papers' values).

    The four related-method modules (docs/modules.md) are off by default; when they are off the
    objective computes exactly the KDMCSE terms above them.

    - AAHR: ``aahr_queue_size`` > 0 appends a queue of earlier student text embeddings as extra
      negatives of the text loss; ``aahr_prototypes`` = K > 0 keeps K online prototypes of the teacher
      text embeddings, which feed ``aahr_weight`` (prototype soft-target KL, student temperature
      ``aahr_temperature``, teacher ``teacher_temperature``) and ``aahr_cluster_negative_weight`` (< 1
      down-weights same-cluster negatives of the text loss). ``aahr_prototype_momentum`` is the
      centroid EMA keep rate.
    - Text-driven soft masks: ``focal_gamma`` > 0 weights the text contrastive terms by
      ``(1 - p_ii)^gamma``; ``soft_mask_view_weight`` > 0 adds a third, saliency-masked view as an extra
      positive, its most salient tokens' word embeddings scaled by ``1 - soft_mask_strength * M``.
    - MMRef: ``mmref_weight`` > 0 aligns grounded captions with per-image references fusing the adapted
      teacher image (weight ``mmref_alpha``) and its captions (paired steps).
    - DIAS: ``dias_weight`` > 0 pushes the cross-correlation of grounding vs adapted teacher image
      dimensions to identity (off-diagonal weight ``dias_off_diagonal_weight``; paired steps);
      ``dias_relation_weight`` > 0 matches student to teacher text cosines on each row's
      ``dias_top_k`` strongest teacher neighbours (every step).
    """

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
    # AAHR (arXiv 2507.09256)
    aahr_queue_size: int = 0
    aahr_prototypes: int = 0
    aahr_weight: float = 0.0
    aahr_cluster_negative_weight: float = 1.0
    aahr_temperature: float = 0.1
    aahr_prototype_momentum: float = 0.99
    # Text-driven soft masks and focal contrast (arXiv 2304.00719)
    focal_gamma: float = 0.0
    soft_mask_view_weight: float = 0.0
    soft_mask_strength: float = 1.0
    # MMRef (arXiv 2504.07718)
    mmref_weight: float = 0.0
    mmref_alpha: float = 0.5
    # DIAS (arXiv 2410.16853)
    dias_weight: float = 0.0
    dias_off_diagonal_weight: float = 5e-3
    dias_relation_weight: float = 0.0
    dias_top_k: int = 5

    def __post_init__(self) -> None:
        for name in ("aahr_queue_size", "aahr_prototypes", "aahr_weight", "focal_gamma", "soft_mask_view_weight",
                     "mmref_weight", "dias_weight", "dias_off_diagonal_weight", "dias_relation_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.aahr_prototypes == 1:
            raise ValueError("aahr_prototypes must be 0 (off) or >= 2")
        if not 0 <= self.aahr_cluster_negative_weight <= 1:
            raise ValueError("aahr_cluster_negative_weight must be in [0, 1], "
                             f"got {self.aahr_cluster_negative_weight}")
        uses_prototypes = self.aahr_weight > 0 or self.aahr_cluster_negative_weight < 1
        if uses_prototypes and self.aahr_prototypes == 0:
            raise ValueError("aahr_weight > 0 or aahr_cluster_negative_weight < 1 needs aahr_prototypes >= 2")
        if self.aahr_prototypes and not uses_prototypes:
            raise ValueError("aahr_prototypes is set but nothing uses the prototypes: "
                             "set aahr_weight > 0 and/or aahr_cluster_negative_weight < 1")
        if not 0 <= self.aahr_prototype_momentum < 1:
            raise ValueError(f"aahr_prototype_momentum must be in [0, 1), got {self.aahr_prototype_momentum}")
        if self.aahr_temperature <= 0:
            raise ValueError(f"aahr_temperature must be > 0, got {self.aahr_temperature}")
        if not 0 < self.soft_mask_strength <= 1:
            raise ValueError(f"soft_mask_strength must be in (0, 1], got {self.soft_mask_strength}")
        if not 0 <= self.mmref_alpha <= 1:
            raise ValueError(f"mmref_alpha must be in [0, 1], got {self.mmref_alpha}")
        if self.dias_top_k < 1:
            raise ValueError(f"dias_top_k must be >= 1, got {self.dias_top_k}")
        reshapes_text = {"aahr_queue_size": self.aahr_queue_size > 0, "focal_gamma": self.focal_gamma > 0,
                         "aahr_cluster_negative_weight": self.aahr_cluster_negative_weight < 1,
                         "soft_mask_view_weight": self.soft_mask_view_weight > 0}
        if self.text == "none" and any(reshapes_text.values()):
            keys = ", ".join(k for k, on in reshapes_text.items() if on)
            raise ValueError(f"{keys} reshape the text loss, which loss.text=none switches off")


@dataclass
class TrainConfig:
    """Optimisation, schedule, evaluation and output settings.

    ``batch_size`` is per process (the global batch is ``batch_size`` x world size); ``grad_clip`` 0
    turns clipping off; ``log_every`` is how often the loss terms are read from the device (the only
    host-device sync of a training step); ``compile`` runs the student's transformer under
    ``torch.compile`` (worth it on GPUs, slow to start on CPUs).
    """

    output_dir: str = "runs/offline_default"
    cache_root: str = "cache/teacher"
    batch_size: int = field(default=64, metadata=at_least(1))
    lr: float = field(default=3e-5, metadata=POSITIVE)
    weight_decay: float = field(default=0.0, metadata=at_least(0))
    warmup_ratio: float = field(default=0.0, metadata=UNIT_INTERVAL)
    grad_clip: float = field(default=1.0, metadata=at_least(0))
    epochs: int = field(default=1, metadata=at_least(1))
    max_steps: int | None = field(default=None, metadata=at_least(1))
    seed: int = field(default=1234, metadata=at_least(0))
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    paired_every: int | None = field(default=None, metadata=at_least(1))
    eval_every: int = field(default=125, metadata=at_least(1))
    retrieval_holdout_images: int = field(default=0, metadata=at_least(0))
    eval_batch_size: int = field(default=256, metadata=at_least(1))
    log_every: int = field(default=10, metadata=at_least(1))
    device: str | None = None
    compile: bool = False


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


def add_cli_arguments(parser, default_config: Path) -> None:
    """The flags every run script shares: --config, --data-dir, --output-dir and key=value overrides."""
    parser.add_argument("--config", default=str(default_config), help="YAML run config (default: %(default)s)")
    parser.add_argument("--data-dir", help="data directory (else $DISTILL_DATA_DIR, ../shared/data, ./data)")
    parser.add_argument("--output-dir", help="shortcut for train.output_dir=...")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def run_config_from_argv(argv: list[str] | None, description: str, default_config: Path) -> RunConfig:
    """Parse a run script's command line into a RunConfig; a bad config exits 2 naming the key."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli_arguments(parser, default_config)
    try:
        return config_from_cli(parser.parse_args(argv))
    except ConfigError as err:
        parser.exit(2, f"config error: {err}\n")


def config_from_cli(args) -> RunConfig:
    """The RunConfig that ``add_cli_arguments``' flags describe (raises ConfigError)."""
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    return load_config(args.config, overrides)


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
    for f in dataclasses.fields(cls):
        if f.name in values and "range" in f.metadata:
            _check_range(values[f.name], f.metadata["range"], prefix + f.name)
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # the dataclass's own checks (__post_init__)
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err}") from err


def _check_range(value: Any, bounds: tuple[float, float | None, bool], key: str) -> None:
    low, high, low_open = bounds
    if value is None:
        return
    if low_open and not value > low or not low_open and not value >= low:
        raise ConfigError(f"{key} must be {'>' if low_open else '>='} {low}"
                          f"{f' and <= {high}' if high is not None else ''}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{key} must be >= {low} and <= {high}, got {value!r}")


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
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{key} must be float, got {value!r}") from None
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}")
        return value
    return value

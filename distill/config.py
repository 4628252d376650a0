"""Typed run configuration: nested dataclasses loaded from YAML, with ``key.sub=value`` overrides.

Every field is checked against its annotation when the config is loaded, so a typo or a bad value
stops the run with a clear message before any model is loaded or any data is read.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from distill.config_help import PRINT_CONFIG_HEADER, describe_config
from kdmcse_base.typed_config import (COSINE, POSITIVE, SECTIONS, UNIT_INTERVAL, ConfigError, as_mapping, at_least,
                                     from_dict)
from teacher_cache.data import DEFAULT_SHARD_ROWS, CacheDataConfig
from kdmcse_base.offline_models import MINILM_ALIAS, check_offline_name
from teacher_cache.towers.config import TeacherConfig


TRANSFORMER_EXPORTS = ("onnx", "onnx-int8")
"""Export formats in sentence-transformers' layout: the transformer module alone (a static student has none)."""
EXPORT_FILES: dict[str, str] = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_qint8.onnx",
                                 "onnx-sentence": "onnx/sentence_model.onnx",
                                 "onnx-sentence-int8": "onnx/sentence_model_qint8.onnx"}
"""Each export format's file in the model folder (``distill/export.py`` writes them)."""


@dataclass
class StudentConfig:
    """The sentence encoder being trained (docs/students.md: which kind to choose).

    ``kind``: ``transformer`` trains ``model`` itself, optionally cut to ``layers``; ``static`` trains one
    vector per token of ``model``'s tokenizer, a sentence being their mean (sentence-transformers'
    ``StaticEmbedding``; distill/static_student.py), initialised by Model2Vec's distillation of ``model``
    to ``static_dim`` dimensions (None: the model's own width) with the extra words of
    ``static_vocabulary`` (a file, one word per line) and kept under ``init_cache`` for later runs.

    ``model`` is a hub id, a local path, or ``offline:all-MiniLM-L6-v2``. ``pooling``: ``model``
    keeps the model's own Pooling (sentence-transformers' mean pooling for a plain Hugging Face
    encoder); ``cls`` or ``mean`` replaces that one module, every other (a Normalize, a Dense) and the
    maximum length staying as the base model has them. ``layers: k`` keeps k transformer layers: the first k
    (``layer_choice: first``) or k spread evenly over the model (``spread``: layers 0, 2, 4 of 6, as
    sentence-transformers' layer-reduction recipe keeps them).

    ``max_seq_length``: tokens a training batch is truncated at (the saved model keeps the base's own
    maximum). ``mlp_head``: the Linear + Tanh head of SimCSE on the text loss, training only.
    ``grounding_dim``: width of the grounding head and teacher adapters of the multimodal loss.
    ``freeze_word_embeddings``: keep the transformer's word embedding matrix as the base model has it
    (most of a small student's parameters: 11.7M of the offline student's 17.4M), so no gradient or
    optimiser state is computed for it.
    """

    kind: Literal["transformer", "static"] = "transformer"
    model: str = "offline:all-MiniLM-L6-v2"
    layers: int | None = field(default=None, metadata=at_least(1))
    layer_choice: Literal["first", "spread"] = "first"
    pooling: Literal["model", "cls", "mean"] = "model"
    max_seq_length: int = field(default=32, metadata=at_least(1))
    mlp_head: bool = False
    freeze_word_embeddings: bool = False
    grounding_dim: int = field(default=256, metadata=at_least(1))
    static_dim: int | None = field(default=256, metadata=at_least(1))
    static_vocabulary: str | None = None
    init_cache: str = "cache/student_init"

    def __post_init__(self) -> None:
        check_offline_name(self.model, MINILM_ALIAS, "model")
        if self.kind == "static" and self.layers is not None:
            raise ValueError("layers cuts a transformer student; a static student has none (set "
                             "student.layers=null)")
        if self.kind == "static" and self.freeze_word_embeddings:
            raise ValueError("freeze_word_embeddings would freeze all of a static student (its token vectors are "
                             "what it trains)")


@dataclass
class LossConfig:
    """Which objective terms are on, and their weights (docs/objective.md: every term's formula;
    docs/reference.md: the papers' values).

    - KDMCSE: ``text`` is the text loss L_intra (SimCSE InfoNCE, angular margin, or none), at
      ``temperature`` with angular margin ``text_margin`` (radians). ``multimodal`` is the paired-batch
      loss L_inter (AdapACSE or MCSE), weighted ``multimodal_weight``, with AdapACSE margin
      ``multimodal_margin``. ``same_image_mask`` removes captions of the same image as negatives (this
      project's addition). ``false_negative_filter`` removes negatives the teacher rates too similar:
      caption-caption cosine above ``filter_threshold``, GIST's rule with ``gist_margin`` in
      ``gist_mode``, or the released code's cross-modal filter on L_inter only (``cross_modal_threshold``
      on a ``cross_modal_similarity`` of dot or cosine); docs/objective.md says what each masks.
      ``focal_gamma`` > 0 weights the text contrast by ``(1 - p_ii)^gamma``.
    - Distillation: ``soft_target_weight`` weights the KL to the teacher's in-batch similarity rows at
      ``teacher_temperature``; ``regression_weight`` weights the MSE to the teacher's text vectors.
    - ``dropout_views``: ``auto`` encodes each sentence once when regression is the only term (it
      reads one embedding per sentence) and twice otherwise (every contrast pairs two dropout views);
      ``two`` always encodes twice, regression then averaging over both (every config before the
      one-view step).
    - Every other term has a section of its own, ``loss.<name>``, off when absent: the related-method
      modules ``aahr``, ``soft_mask``, ``mmref``, ``dias`` (docs/modules.md) and any term registered from
      outside the package (docs/extending.md). Their typed configs live beside the terms
      (``distill/terms/<name>.py``), which check them (``distill.term.resolve_terms``); ``terms`` holds
      the sections as given. ``term_modules``: Python modules imported before the objective is built, so
      their terms are registered (e.g. ``my_terms``).
    """

    text: Literal["simcse", "angular", "none"] = "angular"
    temperature: float = field(default=0.05, metadata=POSITIVE)
    text_margin: float = field(default=0.15, metadata=at_least(0))
    focal_gamma: float = field(default=0.0, metadata=at_least(0))
    multimodal: Literal["adapacse", "mcse", "none"] = "adapacse"
    multimodal_margin: float = field(default=0.15, metadata=at_least(0))
    multimodal_weight: float = field(default=0.01, metadata=at_least(0))
    same_image_mask: bool = True
    false_negative_filter: Literal["none", "threshold", "gist", "teacher_cross_modal"] = "none"
    filter_threshold: float = field(default=0.9, metadata=COSINE)
    gist_margin: float = field(default=0.1, metadata=at_least(0))
    gist_mode: Literal["absolute", "relative"] = "absolute"
    cross_modal_threshold: float = field(default=0.8, metadata=COSINE)
    cross_modal_similarity: Literal["dot", "cosine"] = "dot"
    soft_target_weight: float = field(default=0.0, metadata=at_least(0))
    teacher_temperature: float = field(default=0.05, metadata=POSITIVE)
    regression_weight: float = field(default=0.0, metadata=at_least(0))
    dropout_views: Literal["auto", "two"] = "auto"
    terms: dict[str, dict[str, Any]] = field(default_factory=dict, metadata=SECTIONS)
    term_modules: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.text == "none" and self.focal_gamma > 0:
            raise ValueError("focal_gamma reshapes the text loss, which loss.text=none switches off")


@dataclass
class TrainConfig:
    """Optimisation, schedule, evaluation and output settings.

    ``output_dir``: the run folder (config, checkpoints, ``model/``); rerunning resumes it.
    ``cache_root``: where teacher caches are built and found; ``cache_shard_rows``: rows per shard file of a
    cache built for the run (part of the cache's identity: ``scripts/cache_teacher.py`` reads the same key,
    so the cache it builds is the one the trainer finds). ``teacher_cache``: a finished cache folder
    (the path ``scripts/cache_teacher.py`` printed) to train from without reading the corpora, for corpora
    of millions of rows whose reading and fingerprinting would cost minutes per start; its manifest must
    record this config's ``teacher`` and ``data`` sections (a data file edited since is not noticed).
    ``batch_size``: rows per rank and step.
    ``lr``: AdamW peak learning rate, with ``weight_decay``, linear decay after ``warmup_ratio`` of the
    steps, gradient norm clipped at ``grad_clip`` (0 = off). ``epochs`` over the text rows, or
    ``max_steps`` when set. ``seed`` fixes batch order, dropout and initialisation. ``precision``:
    autocast dtype of the training forward; ``auto`` (default) is ``bf16`` where the device computes it
    natively (CUDA with bf16, CPUs with avx512_bf16 or AMX) and ``fp32`` elsewhere, where bf16 is emulated
    and slower; the run folder's ``config.yaml``, the log and the card record what it resolved to. ``paired_every``: a paired image-caption batch every k
    steps (None: KDMCSE's floor(#text / #paired batches)). ``schedule``: the paired-batch schedule
    (distill/schedule.py): one_pass = one pass over each pool per epoch, official = the released KDMCSE
    loop's cycling loaders (the paper configs). ``length_grouped``: text batches of sentences of similar
    token length (``one_pass`` only; distill/schedule.py), so less of each batch is padding; the batches
    stay in random order. ``eval_every``: steps between STS-B dev
    evaluations and checkpoints. ``retrieval_holdout_images``: images kept out of training for the
    retrieval evaluation (``auto``: a quarter of the image set, at most 1000). ``eval_batch_size``: sentences per forward in the dev evaluation.
    ``log_every``: steps between TensorBoard scalars, and how often the loss terms are read
    from the device (the only host-device sync this project makes in a training step, on one process
    or many: tests/test_step_syncs.py; transformers' SDPA attention adds one per forward to check the
    mask). ``device``: torch device (None: cuda if available, else cpu; torchrun sets one per rank).
    ``compile`` runs the forward of the student's transformer under ``torch.compile`` (inductor; the
    second batch length switches it to dynamic shapes, so it does not recompile per length); the run's
    summary says how many graphs it built (reports/step_levers.md measures it on CPU).
    ``loader_workers``: processes that prepare the next steps' inputs (tokenised sentences, teacher rows)
    while the current step runs; 0 prepares them in the training process between steps, which costs a
    CPU run nothing extra; on a GPU a few workers keep tokenisation off the step's path.
    ``export``: ONNX files written into ``model/`` at the end (distill/export.py): ``onnx`` (float32,
    ``onnx/model.onnx``) and/or ``onnx-int8`` (dynamic int8, ``onnx/model_qint8.onnx``), the transformer
    alone as sentence-transformers lays it out; ``onnx-sentence`` (+ ``-int8``): the whole model, pooling
    and normalisation inside, in one graph (the only ONNX form of a static student); needs the
    ``export`` extra, checked before training starts. ``report_to``: where the loss terms, lr and STS-B
    dev go (distill/metrics_log.py): ``tensorboard`` (default, the run folder's ``tensorboard/``),
    ``wandb``, ``mlflow`` (the ``tracking`` extra), any of them, or ``[]``; a sink whose package is missing
    is refused before the run starts.
    """

    output_dir: str = "runs/offline_default"
    cache_root: str = "cache/teacher"
    cache_shard_rows: int = field(default=DEFAULT_SHARD_ROWS, metadata=at_least(1))
    teacher_cache: str | None = None
    batch_size: int = field(default=64, metadata=at_least(1))
    lr: float = field(default=3e-5, metadata={"range": (0, 1.0, True)})  # AdamW peak learning rate, at most 1 (above, AdamW only diverges)
    weight_decay: float = field(default=0.0, metadata=at_least(0))
    warmup_ratio: float = field(default=0.0, metadata=UNIT_INTERVAL)
    grad_clip: float = field(default=1.0, metadata=at_least(0))
    epochs: int = field(default=1, metadata=at_least(1))
    max_steps: int | None = field(default=None, metadata=at_least(1))
    seed: int = field(default=1234, metadata=at_least(0))
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    paired_every: int | None = field(default=None, metadata=at_least(1))
    schedule: Literal["official", "one_pass"] = "one_pass"
    length_grouped: bool = False
    eval_every: int = field(default=125, metadata=at_least(1))
    retrieval_holdout_images: int | Literal["auto"] = field(default=0, metadata=at_least(0))
    eval_batch_size: int = field(default=256, metadata=at_least(1))
    log_every: int = field(default=10, metadata=at_least(1))
    device: str | None = None
    compile: bool = False
    loader_workers: int = field(default=0, metadata=at_least(0))
    export: list[Literal["onnx", "onnx-int8", "onnx-sentence", "onnx-sentence-int8"]] = field(default_factory=list)
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = field(default_factory=lambda: ["tensorboard"])

    def __post_init__(self) -> None:
        if self.length_grouped and self.schedule == "official":
            raise ValueError("length_grouped reorders the one_pass schedule's text batches; the official schedule "
                             "replays the released loop's order (set schedule: one_pass)")
        if self.device is not None:
            import torch

            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"device {self.device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps)") \
                    from None


@dataclass
class CardConfig:
    """What the model card says for publishing; changing it changes no number of the run.

    ``license``: the model's licence as the hub spells it (an SPDX id such as ``apache-2.0``); None
    takes the base model's where its folder's card names one (the offline MiniLM: apache-2.0).
    ``repo_id``: the hub id the model will be published under; the card's usage example loads it
    (None: a path to the folder).
    """

    license: str | None = None
    repo_id: str | None = None


@dataclass
class RunConfig:
    """A whole training run: student, teacher, data, objective and trainer settings.

    ``name``: the run's name (model card title). ``card``: what the model card says for publishing
    (licence, hub id). ``data_dir``: the data directory (None: the
    ``--data-dir`` flag, else $DISTILL_DATA_DIR, ../shared/data or ./data).
    """

    name: str = "offline_default"
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: CacheDataConfig = field(default_factory=CacheDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    card: CardConfig = field(default_factory=CardConfig)
    data_dir: str | None = None  # the built-in corpora (own sources name their files themselves)
    eval_data_dir: str | None = None  # the SentEval layout (STS-B dev); default: where data_dir resolves

    def __post_init__(self) -> None:
        transformer_only = [name for name in self.train.export if name in TRANSFORMER_EXPORTS]
        if self.student.kind == "static" and transformer_only:
            raise ConfigError(f"train.export: {', '.join(transformer_only)} export a transformer, and a static "
                              "student has none; use onnx-sentence (the whole model in one graph)")
        if self.student.kind == "static" and self.train.length_grouped:
            raise ConfigError("train.length_grouped groups sentences by padded length, and a static student pads "
                              "nothing (it averages token vectors): set train.length_grouped=false")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML file (or start from defaults) and apply ``a.b=value`` overrides (YAML-parsed values).

    A file may name ``base:``, a shipped config (``offline_default``) or a YAML path relative to the
    file, and then holds only what differs from it (``merge_base`` says how the two combine)."""
    return config_from_mapping(read_config_yaml(path) if path is not None else {}, overrides)


def config_from_mapping(raw: dict[str, Any], overrides: list[str] = ()) -> RunConfig:
    """The RunConfig of a config mapping (``read_config_yaml``'s) with ``a.b=value`` overrides applied;
    an unknown key or a bad value is a ``ConfigError`` naming it (with a "did you mean")."""
    for item in overrides:
        _apply_override(raw, item)
    return from_dict(RunConfig, raw, prefix="")


def read_config_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a config file describes, its ``base:`` chain merged in (not yet checked or typed)."""
    return _read_with_base(Path(path), seen=())


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return raw


def _read_with_base(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    raw = _read_yaml(path)
    name = raw.pop("base", None)
    if name is None:
        return raw
    if not isinstance(name, str):
        raise ConfigError(f"{path}: base must be a config name or path, got {name!r}")
    beside = path.parent / name
    base_path = beside if beside.is_file() else resolve_config_path(name)
    if not base_path.is_file():
        raise ConfigError(f"{path}: base {name!r} is neither a file beside it nor a shipped config "
                          f"({', '.join(sorted(p.stem for p in configs_dir().glob('*.yaml')))})")
    if base_path.resolve() in seen:
        raise ConfigError(f"{path}: base {name!r} leads back to itself")
    return merge_base(_read_with_base(base_path, (*seen, path.resolve())), raw)


def merge_base(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A config that extends ``base``: each section key by key (a value, list included, replaces the
    base's), except ``data``, which is the run's own whole when it gives one (a run on its own
    sentences does not also train on the base's corpora or images: a source list it leaves out is
    empty). A config that names itself and no
    ``train.output_dir`` writes to ``runs/<name>``, not into the base's run folder."""
    merged = _merged(base, {k: v for k, v in own.items() if k != "data"})
    if "data" in own:  # a source list it leaves out is empty, not the built-in corpora
        merged["data"] = {"text_sources": [], "image_sources": [], **(own["data"] or {})}
    if "name" in own and "output_dir" not in (own.get("train") or {}):
        merged["train"] = {**(merged.get("train") or {}), "output_dir": f"runs/{own['name']}"}
    return merged


def configs_dir() -> Path:
    """The shipped run configs: ``configs/`` of this checkout, or the copy installed inside ``distill/``."""
    package = Path(__file__).resolve().parent
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


def resolve_config_path(name: str | Path) -> Path:
    """A config file path as given, else a shipped config by name (``kdmcse_bert_flickr`` or with .yaml)."""
    path = Path(name)
    if path.is_file() or path.parent != Path("."):
        return path
    shipped = configs_dir() / (path.name if path.suffix else f"{path.name}.yaml")
    return shipped if shipped.is_file() else path


def add_cli_arguments(parser, default_config: Path) -> None:
    """The flags every run script shares: --config, --data-dir, --output-dir, --print-config and overrides."""
    parser.add_argument("--config", default=str(default_config),
                        help="YAML run config, or the name of a shipped one such as kdmcse_bert_flickr "
                        "(default: %(default)s)")
    parser.add_argument("--data-dir", help="data directory (else $DISTILL_DATA_DIR, ../shared/data, ./data)")
    parser.add_argument("--eval-data-dir", help="folder with senteval/ for STS-B dev (default: the data directory)")
    parser.add_argument("--output-dir", help="shortcut for train.output_dir=...")
    parser.add_argument("--print-config", action="store_true",
                        help="list every config key with its type, value (after --config and overrides), "
                        "default and doc, then exit")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, e.g. train.max_steps=50 (--print-config lists the keys)")


def run_config_from_argv(argv: list[str] | None, description: str, default_config: Path) -> RunConfig:
    """Parse a run script's command line into a RunConfig; a bad config exits 2 naming the key, and
    ``--print-config`` prints the keys and exits 0."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cli_arguments(parser, default_config)
    args = parser.parse_args(argv)
    try:
        cfg = config_from_cli(args)
    except ConfigError as err:
        parser.exit(2, f"config error: {err}\n")
    if args.print_config:
        print(PRINT_CONFIG_HEADER, describe_config(cfg), sep="\n")
        parser.exit(0)
    return cfg


def config_from_cli(args) -> RunConfig:
    """The RunConfig that ``add_cli_arguments``' flags describe (raises ConfigError)."""
    overrides = list(args.overrides)
    if args.data_dir:
        overrides.append(f"data_dir={args.data_dir}")
    if args.eval_data_dir:
        overrides.append(f"eval_data_dir={args.eval_data_dir}")
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    return load_config(resolve_config_path(args.config), overrides)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as the mapping a YAML file holds (a term's section under ``loss.<name>``)."""
    return as_mapping(cfg)


def config_yaml(cfg: Any) -> str:
    """The YAML text of a config (what ``config.yaml`` of a run folder holds)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(config_yaml(cfg))


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


def _merged(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """``own`` over ``base``, mappings merged key by key at every depth."""
    merged = {**base}
    for key, value in own.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both else value
    return merged

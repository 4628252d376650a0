#!/usr/bin/env python
"""Encode the training corpora with a frozen teacher into <cache root>/<teacher>-<fingerprint>/.

    python scripts/cache_teacher.py                         # what configs/offline_default.yaml trains on
    python scripts/cache_teacher.py --config my_run.yaml    # the very cache train_student.py will read
    python scripts/cache_teacher.py teacher.backend=open_clip teacher.clip_model=ViT-L-14 teacher.clip_pretrained=openai
    python scripts/cache_teacher.py "data.limits={coco2017_mini: 8}" "data.text_sources=[coco2017_mini]"
    torchrun --nproc_per_node 2 scripts/cache_teacher.py    # input tars and cache shards split across ranks
    python scripts/cache_teacher.py --index-part 3/16       # read WebDataset tars 3::16 into indexes only
    python scripts/cache_teacher.py --verify [CACHE_DIR]    # recompute checksums; exit 1 if any is off

It reads a run config exactly as scripts/train_student.py does: ``--config`` (a YAML file or a shipped
config's name, with its ``base:`` chain) and ``section.key=value`` overrides, checked key by key (an
unknown key is one line with a "did you mean"). The ``teacher`` and ``data`` sections say what is
encoded (your own files and datasets: docs/data.md), ``train.cache_root`` and ``train.cache_shard_rows``
where and how it is stored: the trainer reads the same keys, so it finds this cache. A cache-only YAML
with top-level ``cache_root`` / ``shard_rows`` still works. The older flags remain as aliases
(``--backend X`` is ``teacher.backend=X``, ``--limit coco2017_mini=8`` is ``data.limits``, ``--shard-rows``
is ``train.cache_shard_rows``, ``--skip-bad`` is ``data.skip_bad=true``, ``--no-reuse`` is
``data.reuse_rows=false``). Rerunning finishes an interrupted build, or does nothing if the cache is
complete; after an edit of the data, a new cache copies the vectors of unchanged rows from a finished
cache of the same teacher and encodes only the new or changed rows. ``--index-part K/N`` only reads the
WebDataset input tars ``K::N`` (K from 0) into their indexes beside ``data.image_store``, loading no
teacher: N Slurm array tasks read the tars in parallel, then one build (torchrun) finds every index
(docs/data.md, "On a cluster"). ``--print-config`` lists every
teacher.*, data.* and cache key with its type, value, default and doc, and the resolved cache folder.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, never an installed copy

from teacher_cache import (  # noqa: E402
    IMAGE_SOURCES,
    TEXT_SOURCES,
    USER_ERRORS,
    build_cache,
    build_teacher,
    collect_data,
    find_complete_cache,
    index_input_shards,
    locate_cache,
    verify_cache,
)
from kdmcse_base.process_group import init_distributed, leave_distributed  # noqa: E402
from teacher_cache.towers.config import BACKENDS, PRECISIONS  # noqa: E402
from distill.config import (  # noqa: E402
    ConfigError, RunConfig, config_from_mapping, configs_dir, read_config_yaml, resolve_config_path)
from distill.config_help import PRINT_CONFIG_HEADER, describe_config  # noqa: E402

DEFAULT_RUN_CONFIG = configs_dir() / "offline_default.yaml"
TEACHER_FLAGS = ("backend", "text_model", "image_model", "image_weights", "clip_model", "clip_pretrained",
                 "batch_size", "precision", "device", "max_seq_length", "num_workers")
CACHE_ONLY_KEYS = {"cache_root": "cache_root", "shard_rows": "cache_shard_rows"}  # top level of a cache-only YAML


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=resolve_config_path, default=DEFAULT_RUN_CONFIG,
                        help="a run config (YAML path or shipped name), so the cache is the one train_student.py "
                             "will read (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, e.g. teacher.batch_size=64 (--print-config lists the keys)")
    parser.add_argument("--data-dir", help="default: $DISTILL_DATA_DIR or ../shared/data")
    aliases = parser.add_argument_group("older flags, aliases of the keys they name")
    aliases.add_argument("--backend", choices=BACKENDS, help="teacher.backend")
    for flag in TEACHER_FLAGS[1:]:
        if flag == "precision":
            aliases.add_argument("--precision", choices=PRECISIONS, help="teacher.precision")
        else:
            aliases.add_argument(f"--{flag.replace('_', '-')}", type=int if flag in ("batch_size", "max_seq_length",
                                                                                     "num_workers") else str,
                                 help=f"teacher.{flag}")
    aliases.add_argument("--text-sources", nargs="*", choices=TEXT_SOURCES, help="data.text_sources")
    aliases.add_argument("--image-sources", nargs="*", choices=IMAGE_SOURCES, help="data.image_sources")
    aliases.add_argument("--limit", action="append", default=[], metavar="SOURCE=N", help="data.limits: keep the first N")
    aliases.add_argument("--cache-root", help="train.cache_root")
    aliases.add_argument("--shard-rows", type=int, help="train.cache_shard_rows")
    aliases.add_argument("--skip-bad", action="store_true", default=None, help="data.skip_bad=true")
    aliases.add_argument("--no-reuse", action="store_true", help="data.reuse_rows=false")
    parser.add_argument("--verify", nargs="?", const="", metavar="CACHE_DIR",
                        help="recompute checksums of CACHE_DIR (default: the cache of this configuration)")
    parser.add_argument("--index-part", metavar="K/N",
                        help="only read the WebDataset input tars K::N (K from 0) into their indexes, no teacher "
                             "(one Slurm array task: --index-part $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--print-config", action="store_true",
                        help="list every teacher.*, data.* and cache key with its type, value, default and doc, "
                             "and the resolved cache folder, then exit")
    return parser.parse_args(argv)


def alias_overrides(args: argparse.Namespace) -> list[str]:
    """The ``section.key=value`` overrides the older flags stand for (given after the YAML, before the
    explicit overrides, so an explicit ``teacher.backend=...`` wins)."""
    overrides = [f"teacher.{flag}={getattr(args, flag)}" for flag in TEACHER_FLAGS if getattr(args, flag) is not None]
    if args.text_sources is not None:
        overrides.append(f"data.text_sources=[{', '.join(args.text_sources)}]")
    if args.image_sources is not None:
        overrides.append(f"data.image_sources=[{', '.join(args.image_sources)}]")
    for item in args.limit:
        name, _, number = item.partition("=")
        if not number.isdigit():
            raise ConfigError(f"--limit expects SOURCE=N, got {item!r}")
        overrides.append(f"data.limits.{name}={number}")
    if args.cache_root:
        overrides.append(f"train.cache_root={args.cache_root}")
    if args.shard_rows:
        overrides.append(f"train.cache_shard_rows={args.shard_rows}")
    if args.skip_bad:
        overrides.append("data.skip_bad=true")
    if args.no_reuse:
        overrides.append("data.reuse_rows=false")
    return overrides


def resolve_config(args: argparse.Namespace) -> RunConfig:
    """The run config the cache is built for: the YAML (a cache-only file's top-level keys moved into
    ``train``), the aliases, then the explicit overrides; raises ConfigError naming a bad key."""
    raw = read_config_yaml(args.config)
    for key, train_key in CACHE_ONLY_KEYS.items():
        if key in raw:
            raw.setdefault("train", {})[train_key] = raw.pop(key)
    return config_from_mapping(raw, [*alias_overrides(args), *args.overrides])


def data_dir_of(args: argparse.Namespace, cfg: RunConfig) -> str | None:
    return args.data_dir or cfg.data_dir


def cache_folder_line(cfg: RunConfig, data_dir: str | None) -> str:
    """Where this configuration's cache is: the finished folder the index knows, or where it will be built."""
    try:
        found = find_complete_cache(cfg.teacher, cfg.data, Path(cfg.train.cache_root),
                                    collect_data(cfg.data, data_dir), cfg.train.cache_shard_rows)
    except USER_ERRORS as err:
        return f"cache folder: unknown until the data reads ({err})"
    if found is not None:
        return f"cache folder: {found} (complete)"
    return f"cache folder: not built yet; it will be built under {cfg.train.cache_root} (named <teacher>-<fingerprint>)"


def verify(args: argparse.Namespace, cfg: RunConfig) -> int:
    teacher_cfg, data_cfg, cache_root = cfg.teacher, cfg.data, Path(cfg.train.cache_root)
    if args.verify:
        directory = Path(args.verify)
    else:
        data = collect_data(data_cfg, data_dir_of(args, cfg))
        directory = find_complete_cache(teacher_cfg, data_cfg, cache_root, data, cfg.train.cache_shard_rows)
        if directory is None:  # not in the index: fingerprint the loaded teacher
            teacher = build_teacher(teacher_cfg)
            directory = locate_cache(teacher, teacher_cfg, data_cfg, cache_root, data_dir_of(args, cfg),
                                     cfg.train.cache_shard_rows)
    problems = verify_cache(directory)
    for problem in problems:
        print(f"CORRUPT {problem}", file=sys.stderr)
    print(f"{directory}: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'OK, every checksum matches'}")
    return 1 if problems else 0


def index_part(spec: str, cfg: RunConfig) -> int:
    """``--index-part K/N``: index this part's input tars and say what it did (a bad K/N is one line)."""
    part, slash, parts = spec.partition("/")
    if not (slash and part.isdigit() and parts.isdigit() and int(part) < int(parts)):
        print(f"error: --index-part expects K/N with 0 <= K < N, got {spec!r}", file=sys.stderr)
        return 2
    print(index_input_shards(cfg.data, int(part), int(parts)).summary())
    return 0


def print_config(cfg: RunConfig, data_dir: str | None) -> None:
    cache_keys = describe_config(cfg.train, "train.").splitlines()
    print(PRINT_CONFIG_HEADER, describe_config(cfg.teacher, "teacher."), describe_config(cfg.data, "data."),
          *[line for line in cache_keys if line.startswith(("train.cache_root", "train.cache_shard_rows"))],
          cache_folder_line(cfg, data_dir), sep="\n")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ConfigError as err:  # the config file or a key in it: one line, with "did you mean"
        print(f"config error ({args.config}): {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print_config(cfg, data_dir_of(args, cfg))
        return 0
    if args.verify is not None or args.index_part is not None:
        try:
            return verify(args, cfg) if args.verify is not None else index_part(args.index_part, cfg)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    init_distributed()
    try:
        report = build_cache(cfg.teacher, cfg.data, Path(cfg.train.cache_root), data_dir_of(args, cfg),
                             shard_rows=cfg.train.cache_shard_rows, progress=not args.no_progress)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        leave_distributed()
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

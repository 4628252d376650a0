#!/usr/bin/env python
"""Encode the training corpora with a frozen teacher into <cache root>/<teacher>-<fingerprint>/.

    python scripts/cache_teacher.py                         # what configs/offline_default.yaml trains on
    python scripts/cache_teacher.py --limit coco2017_mini=8 --text-sources coco2017_mini
    python scripts/cache_teacher.py --backend open_clip --clip-model ViT-L-14 --clip-pretrained openai
    torchrun --nproc_per_node 2 scripts/cache_teacher.py    # shards split across ranks
    python scripts/cache_teacher.py --verify [CACHE_DIR]    # recompute checksums; exit 1 if any is off

A YAML file given with --config may hold ``teacher:`` (TeacherConfig fields), ``data:``
(CacheDataConfig fields, including your own files and datasets: docs/data.md; ``skip_bad`` among
them), ``cache_root`` and ``shard_rows``; flags override it (--text-sources / --image-sources take
built-in names). Rerunning finishes an interrupted build, or does nothing if the cache is complete.
After an edit of the data, a new cache copies the vectors of unchanged rows from a finished cache
of the same teacher and encodes only the new or changed rows; --no-reuse encodes every row. A
cache built with --skip-bad is trained on with ``data.skip_bad=true``. The teacher: and data: sections are
checked as a training config's are (kdmcse_base.typed_config: names, types, ranges). --print-config lists every
teacher.* and data.* key with its type, default and doc.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, never an installed copy

from teacher_cache import (  # noqa: E402
    DEFAULT_CACHE_ROOT,
    DEFAULT_SHARD_ROWS,
    IMAGE_SOURCES,
    TEXT_SOURCES,
    USER_ERRORS,
    CacheDataConfig,
    TeacherConfig,
    build_cache,
    build_teacher,
    collect_data,
    find_complete_cache,
    locate_cache,
    verify_cache,
)
from kdmcse_base.process_group import init_distributed, leave_distributed  # noqa: E402
from teacher_cache.towers.config import BACKENDS, PRECISIONS  # noqa: E402
from distill.config import RunConfig, configs_dir, read_config_yaml, resolve_config_path  # noqa: E402
from kdmcse_base.typed_config import refuse_unknown_keys  # noqa: E402
from distill.config_help import PRINT_CONFIG_HEADER, describe_config  # noqa: E402

DEFAULT_RUN_CONFIG = configs_dir() / "offline_default.yaml"
TEACHER_FLAGS = ("backend", "text_model", "image_model", "image_weights", "clip_model", "clip_pretrained",
                 "batch_size", "precision", "device", "max_seq_length", "num_workers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=resolve_config_path, default=DEFAULT_RUN_CONFIG,
                        help="YAML with teacher:/data: sections, e.g. a training run config, so the cache is "
                             "the one train_student.py will read (default: %(default)s)")
    teacher = parser.add_argument_group("teacher (TeacherConfig)")
    teacher.add_argument("--backend", choices=BACKENDS)
    teacher.add_argument("--text-model", help="composite: sentence-transformers name or path")
    teacher.add_argument("--image-model", help="composite: offline:efficientnet-lite0 or a timm model name")
    teacher.add_argument("--image-weights", help="composite: local weights file for the timm image model")
    teacher.add_argument("--clip-model", help="open_clip: name / local-dir:PATH / hf-hub:ID; hf_clip: hub id or folder")
    teacher.add_argument("--clip-pretrained", help="open_clip: pretrained tag or checkpoint file")
    teacher.add_argument("--batch-size", type=int)
    teacher.add_argument("--precision", choices=PRECISIONS)
    teacher.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    teacher.add_argument("--max-seq-length", type=int)
    teacher.add_argument("--num-workers", type=int,
                         help="processes tokenising and decoding images beside the model (0: none; "
                              "default: cores - 1, at most 8); never changes the cache")
    data = parser.add_argument_group("data (CacheDataConfig)")
    data.add_argument("--text-sources", nargs="*", choices=TEXT_SOURCES)
    data.add_argument("--image-sources", nargs="*", choices=IMAGE_SOURCES)
    data.add_argument("--limit", action="append", default=[], metavar="SOURCE=N", help="keep the first N items")
    data.add_argument("--data-dir", help="default: $DISTILL_DATA_DIR or ../shared/data")
    parser.add_argument("--cache-root", type=Path)
    parser.add_argument("--shard-rows", type=int)
    parser.add_argument("--skip-bad", action="store_true", default=None,
                        help="leave bad rows out and record them (train on it with data.skip_bad=true)")
    parser.add_argument("--no-reuse", action="store_true",
                        help="encode every row, copying none from an earlier cache of the same teacher "
                             "(data.reuse_rows=false)")
    parser.add_argument("--verify", nargs="?", const="", metavar="CACHE_DIR",
                        help="recompute checksums of CACHE_DIR (default: the cache of this configuration)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--print-config", action="store_true",
                        help="list every teacher.* and data.* key with its type, value, default and doc, then exit")
    return parser.parse_args(argv)


def resolve_configs(args: argparse.Namespace) -> tuple[TeacherConfig, CacheDataConfig, dict[str, Any]]:
    """YAML values first, then every flag that was given."""
    loaded = read_config_yaml(args.config) if args.config else {}  # with its base: chain
    # a run config's sections, or a cache-only file's own keys; anything else is a typo, not ignored
    refuse_unknown_keys(loaded, {f.name for f in dataclasses.fields(RunConfig)} | {"cache_root", "shard_rows"}, "")
    teacher_values = dict(loaded.get("teacher", {}))
    teacher_values.update({k: getattr(args, k) for k in TEACHER_FLAGS if getattr(args, k) is not None})
    data_values = dict(loaded.get("data", {}))
    if args.text_sources is not None:
        data_values["text_sources"] = args.text_sources
    if args.image_sources is not None:
        data_values["image_sources"] = args.image_sources
    if args.limit:
        data_values["limits"] = {**data_values.get("limits", {}), **_parse_limits(args.limit)}
    if args.skip_bad is not None:
        data_values["skip_bad"] = args.skip_bad
    if args.no_reuse:
        data_values["reuse_rows"] = False
    run = {
        "cache_root": Path(args.cache_root or loaded.get("cache_root")
                           or loaded.get("train", {}).get("cache_root", DEFAULT_CACHE_ROOT)),
        "shard_rows": int(args.shard_rows or loaded.get("shard_rows", DEFAULT_SHARD_ROWS)),
    }
    return TeacherConfig.from_dict(teacher_values), CacheDataConfig.from_dict(data_values), run


def _parse_limits(items: list[str]) -> dict[str, int]:
    limits = {}
    for item in items:
        name, _, number = item.partition("=")
        if not number.isdigit():
            raise SystemExit(f"--limit expects SOURCE=N, got {item!r}")
        limits[name] = int(number)
    return limits


def verify(args: argparse.Namespace, teacher_cfg: TeacherConfig, data_cfg: CacheDataConfig, run: dict) -> int:
    if args.verify:
        directory = Path(args.verify)
    else:
        data = collect_data(data_cfg, args.data_dir)
        directory = find_complete_cache(teacher_cfg, data_cfg, run["cache_root"], data, run["shard_rows"])
        if directory is None:  # not in the index: fingerprint the loaded teacher
            teacher = build_teacher(teacher_cfg)
            directory = locate_cache(teacher, teacher_cfg, data_cfg, run["cache_root"], args.data_dir, run["shard_rows"])
    problems = verify_cache(directory)
    for problem in problems:
        print(f"CORRUPT {problem}", file=sys.stderr)
    print(f"{directory}: {'FAILED, ' + str(len(problems)) + ' problem(s)' if problems else 'OK, every checksum matches'}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        teacher_cfg, data_cfg, run = resolve_configs(args)
    except (OSError, ValueError, yaml.YAMLError) as err:  # the config file or a key in it
        print(f"config error ({args.config}): {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(PRINT_CONFIG_HEADER, describe_config(teacher_cfg, "teacher."), describe_config(data_cfg, "data."), sep="\n")
        return 0
    if args.verify is not None:
        try:
            return verify(args, teacher_cfg, data_cfg, run)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    init_distributed()
    try:
        report = build_cache(teacher_cfg, data_cfg, run["cache_root"], args.data_dir,
                             shard_rows=run["shard_rows"], progress=not args.no_progress)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        leave_distributed()
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())

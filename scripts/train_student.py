#!/usr/bin/env python
"""Train a student sentence encoder against a cached teacher (KDMCSE and relatives).

Examples:
  python scripts/train_student.py                                   # offline default
  python scripts/train_student.py --config configs/kdmcse_bert_flickr.yaml --data-dir /data
  python scripts/train_student.py --config configs/offline_default.yaml train.max_steps=50 loss.soft_target_weight=1
  torchrun --nproc_per_node 2 scripts/train_student.py --config configs/offline_default.yaml

Any config key can be overridden as section.key=value (values are parsed as YAML); --print-config
lists every key with its type, value, default and doc. The resolved
config is written next to the run's outputs; rerunning the same command resumes from the last
checkpoint. The output folder must be new, empty, or a folder this trainer wrote (exit 2 otherwise).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, never an installed copy

from distill.config import ConfigError, configs_dir, run_config_from_argv  # noqa: E402

DEFAULT_CONFIG = configs_dir() / "offline_default.yaml"


def main(argv: list[str] | None = None) -> int:
    cfg = run_config_from_argv(argv, __doc__, DEFAULT_CONFIG)
    from distill.export import ExportError
    from distill.run_folder import RunFolderError
    from distill.stopping import TrainingDiverged, TrainingInterrupted
    from distill.trainer import train
    from eval.sts import stsb_dev_evaluator
    from teacher_cache import USER_ERRORS

    try:
        train(cfg, stsb_dev_evaluator(cfg))
    except (*USER_ERRORS, ConfigError, RunFolderError, ExportError) as err:  # the user's data, cache or run folder: one line
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as err:  # SIGTERM / SIGINT: checkpointed after the step, resumable
        print(str(err), file=sys.stderr)
        return err.exit_code
    except TrainingDiverged as err:  # not the user's input, but not a result either: one line, exit 1
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0  # the trainer printed the run's summary and the model's folder


if __name__ == "__main__":
    sys.exit(main())

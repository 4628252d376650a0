#!/usr/bin/env python
"""The main job on the offline default: cache the teacher -> train the student -> evaluate.

Prints the 7-task STS table (SentEval protocol, "all" aggregation) of the untrained student, the
trained student and the teacher side by side, and writes it to <output_dir>/demo.{json,md}.
Every stage is resumable: rerunning reuses the finished cache, the finished training and the
evaluations already written.

  python scripts/demo.py                          # configs/offline_default.yaml
  python scripts/demo.py train.max_steps=100      # any train_student.py override
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, never an installed copy

from distill.config import ConfigError, RunConfig, configs_dir, run_config_from_argv  # noqa: E402
from distill.run_folder import RunFolder  # noqa: E402

DEFAULT_CONFIG = configs_dir() / "offline_default.yaml"


def evaluate_once(name: str, model, cfg: RunConfig, out: Path) -> dict:
    """STS results of one model, reused from ``out/eval/<name>.json`` when already computed."""
    from eval.encode import DEFAULT_BF16
    from eval.report import build_payload, write_results
    from eval.sts import evaluate_sts

    cached = RunFolder(out).eval_dir / f"{name}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    print(f"\n== evaluating {name} on STS12-16, STS-B, SICK-R")
    results = evaluate_sts(model, data_dir=cfg.eval_data_dir or cfg.data_dir, batch_size=cfg.train.eval_batch_size)
    payload = build_payload(name, {"pooler": "model", "aggregation": "all", "bf16": DEFAULT_BF16}, sts=results)
    write_results(cached, payload)
    return payload


def main(argv: list[str] | None = None) -> int:
    cfg = run_config_from_argv(argv, __doc__, DEFAULT_CONFIG)
    from distill.export import ExportError
    from distill.run_folder import RunFolderError
    from distill.stopping import TrainingDiverged, TrainingInterrupted
    from teacher_cache import USER_ERRORS

    try:
        return run_demo(cfg)
    except (*USER_ERRORS, ConfigError, RunFolderError, ExportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as err:  # SIGTERM / SIGINT: checkpointed after the step, resumable
        print(str(err), file=sys.stderr)
        return err.exit_code
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def run_demo(cfg: RunConfig) -> int:
    from kdmcse_base.files import folder_lock

    with folder_lock(Path(cfg.train.output_dir), "demo"):  # also over its evaluations, written beside the run
        return _run_demo(cfg)


def _run_demo(cfg: RunConfig) -> int:
    from distill.pools import open_run_cache
    from teacher_cache import data_dir_for
    from kdmcse_base.offline_models import resolve_model_name
    from distill.student import build_encoder
    from distill.trainer import train
    from eval.report import render_markdown
    from eval.sts import stsb_dev_evaluator

    started = time.perf_counter()
    data_dir = data_dir_for(cfg.data, cfg.data_dir)  # fail now, not after the cache is built
    cfg.data_dir = str(data_dir) if data_dir else None
    evaluate_dev = stsb_dev_evaluator(cfg)
    out = Path(cfg.train.output_dir)
    print("== 1/3 teacher cache")
    print(open_run_cache(cfg, cfg.data_dir).path)
    print("== 2/3 training the student")
    model_dir = train(cfg, evaluate_dev)
    print("== 3/3 evaluation")
    payloads = [
        evaluate_once("student (untrained)", build_encoder(cfg.student), cfg, out),
        evaluate_once("student (trained)", str(model_dir), cfg, out),
        evaluate_once("teacher", resolve_model_name(cfg.teacher.text_model), cfg, out),
    ]
    table = render_markdown(payloads)
    folder = RunFolder(out)
    folder.demo_markdown.write_text(f"# Demo: {cfg.name}\n\n{table}")
    folder.demo_json.write_text(json.dumps(payloads, indent=2))
    print(f"\n{table}\nwritten to {folder.demo_markdown}; total {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())

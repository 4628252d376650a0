"""``train.report_to``: TensorBoard by default, W&B or MLflow when installed, a missing package in one line."""
from __future__ import annotations

import sys
import types

import pytest

from distill.config import ConfigError, load_config
from distill.metrics_log import check_report_to, open_metrics_log


def test_a_missing_package_is_one_line_before_the_run(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    assert load_config(None).train.report_to == ["tensorboard"]
    check_report_to(["tensorboard"])
    with pytest.raises(ConfigError) as err:
        check_report_to(["tensorboard", "wandb"])
    assert str(err.value) == ("train.report_to=wandb needs the wandb package, which is not installed: pip install "
                              "wandb (or leave wandb out of train.report_to)")
    with pytest.raises(ConfigError, match="report_to"):
        load_config(None, ["train.report_to=[comet]"])


def test_every_sink_gets_the_same_scalars(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, values, step):
            calls.append(("wandb", values, step))

        def finish(self):
            calls.append(("wandb", "finish"))

    wandb = types.SimpleNamespace(init=lambda **kw: calls.append(("wandb", "init", kw["id"], kw["resume"])) or Run())
    mlflow = types.SimpleNamespace(start_run=lambda run_name: calls.append(("mlflow", "start", run_name)),
                                   log_params=lambda params: calls.append(("mlflow", "params", params["train.lr"])),
                                   log_metrics=lambda values, step: calls.append(("mlflow", values, step)),
                                   end_run=lambda: calls.append(("mlflow", "end")))
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "mlflow", mlflow)
    log = open_metrics_log(["tensorboard", "wandb", "mlflow"], "demo", "abc123", tmp_path, tmp_path / "tb",
                           {"train": {"lr": 0.001}})
    log.log({"train/loss": 0.5}, 3)
    log.close()
    assert calls == [("wandb", "init", "demo-abc123", "allow"), ("mlflow", "start", "demo"), ("mlflow", "params", 0.001),
                     ("wandb", {"train/loss": 0.5}, 3), ("mlflow", {"train_loss": 0.5}, 3),
                     ("wandb", "finish"), ("mlflow", "end")]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))

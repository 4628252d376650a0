"""Where a run's scalars go (``train.report_to``), as Hugging Face's trainer lets a user choose:
TensorBoard event files in the run folder (the default), Weights & Biases, MLflow, or several.

Each sink takes the same calls: ``log({"train/loss": ...}, step)`` and ``close()``. A sink whose package
is not installed is refused in one line before the run starts (``check_report_to``), never after hours.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

from distill.config import ConfigError


class MetricSink(Protocol):
    def log(self, values: dict[str, float], step: int) -> None: ...

    def close(self) -> None: ...


def check_report_to(report_to: list[str]) -> None:
    """Every sink's package (named as the sink is) is importable; else a ``ConfigError`` naming it."""
    for sink in report_to:
        if importlib.util.find_spec(sink) is None:
            raise ConfigError(f"train.report_to={sink} needs the {sink} package, which is not installed: "
                              f"pip install {sink} (or leave {sink} out of train.report_to)")


class TensorBoardSink:
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def log(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """One W&B run per training run, resumed by the run's token when the training resumes."""

    def __init__(self, name: str, token: str, folder: Path, config: dict[str, Any]):
        import wandb

        self.run = wandb.init(name=name, id=f"{name}-{token}", resume="allow", dir=str(folder), config=config)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    def __init__(self, name: str, config: dict[str, Any]):
        import mlflow

        self.mlflow = mlflow
        mlflow.start_run(run_name=name)
        mlflow.log_params(_flat(config))

    def log(self, values: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics({name.replace("/", "_"): value for name, value in values.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class MetricsLog:
    """The run's sinks, called together."""

    def __init__(self, sinks: list[MetricSink]):
        self.sinks = sinks

    def log(self, values: dict[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.log(values, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_metrics_log(report_to: list[str], name: str, token: str, run_folder: Path, tensorboard: Path,
                     config: dict[str, Any]) -> MetricsLog:
    builders = {"tensorboard": lambda: TensorBoardSink(tensorboard),
                "wandb": lambda: WandbSink(name, token, run_folder, config),
                "mlflow": lambda: MlflowSink(name, config)}
    return MetricsLog([builders[sink]() for sink in report_to])

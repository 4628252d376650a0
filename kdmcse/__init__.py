"""The pipeline from Python: what ``scripts/train_student.py`` does, as one call.

.. code-block:: python

    from kdmcse import train_from_config

    model_dir = train_from_config("my_run.yaml", ["train.max_steps=200"])  # or "offline_default"

This package sits above ``teacher_cache``, ``distill`` and ``eval`` (it joins the trainer with the
STS-B dev evaluation that selects its checkpoint), so none of them imports it.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from distill.config import RunConfig, load_config, resolve_config_path

__all__ = ["RunConfig", "load_config", "train_from_config"]


def train_from_config(config: str | Path | RunConfig = "offline_default", overrides: Sequence[str] = ()) -> Path:
    """Build the teacher cache if needed, train the student with checkpoints chosen on STS-B dev, and
    return the saved model folder (a SentenceTransformer). ``config``: a YAML path, a shipped config's
    name, or a loaded :class:`RunConfig`; ``overrides``: ``section.key=value`` items, as on the command
    line. Rerunning resumes the run folder. Raises ``ConfigError`` (a bad key or value) and the
    trainer's errors (``RunFolderError``, ``TrainingDiverged``) rather than exiting."""
    from distill.trainer import train
    from eval.sts import stsb_dev_evaluator

    if isinstance(config, RunConfig):
        if overrides:
            raise ValueError("overrides apply to a config file; change a loaded RunConfig with dataclasses.replace")
        cfg = config
    else:
        cfg = load_config(resolve_config_path(config), list(overrides))
    return train(cfg, stsb_dev_evaluator(cfg))

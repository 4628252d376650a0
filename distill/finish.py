"""The end of a run: the best encoder copied to ``model/`` with its model card and ONNX files, the
training-only heads beside it in the run folder, and ``train_summary.json``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from distill.export import export_model
from distill.model_card import write_model_card
from distill.run import StudentWithObjective, TrainingRun, compiled_graphs, device_name
from distill.run_folder import HEADS_FILE, LISTING, RunFolderError, TrainSummary, is_complete
from distill.stopping import TrainingDiverged


def finish(run: TrainingRun) -> Path:
    """Copy the best encoder to ``model/`` with its model card; returns that folder."""
    folder, state, cfg, env = run.folder, run.state, run.cfg, run.env
    if env.is_main:
        best = folder.best
        if state.best_step < 0:
            raise TrainingDiverged(f"no evaluation scored a finite STS-B dev ({state.dev_history}); no model is "
                                   f"saved in {folder.path}; lower train.lr and train into a new folder")
        if not is_complete(best):
            raise RunFolderError(f"{best} is missing although step {state.best_step} was saved as best; "
                                 "delete the run folder to start over")

        def write_model(model: Path) -> None:
            shutil.copytree(best, model, ignore=shutil.ignore_patterns(LISTING, HEADS_FILE), dirs_exist_ok=True)
            export_model(model, cfg.train.export)
            write_model_card(model, cfg, run.cache.manifest, state)

        if state.best_step == 0:
            print(f"no evaluation beat the starting point (STS-B dev {state.best_dev:.2f} before the first step): "
                  f"{folder.model} holds the untrained student; try another train.lr or objective", flush=True)
        folder.replace("model", write_model)
        if (best / HEADS_FILE).is_file():  # training-only: not in model/
            folder.write(folder.path / HEADS_FILE, (best / HEADS_FILE).read_bytes())
        summary = TrainSummary(
            steps=state.step, best_step=state.best_step, best_stsb_dev=state.best_dev,
            train_seconds=state.train_seconds, dev_history=state.dev_history, device=device_name(env.device),
            effective_batch_size=cfg.train.batch_size * env.world_size, world_size=env.world_size,
            baseline_stsb_dev=state.baseline_dev, heldout_image_ids=run.pools.heldout_image_ids,
            skipped_rows=run.cache.skipped_rows, compiled_graphs=compiled_graphs() if cfg.train.compile else None)
        folder.write_summary(summary)
        print(summary.describe(folder.model, cfg.train.precision), flush=True)
    env.barrier()
    return folder.model


def save_encoder(trainable: StudentWithObjective, folder: Path) -> None:
    """The encoder is saved as a plain SentenceTransformer, with the objective's grounding heads (when a
    term trained them) beside it in ``best/`` (``finish`` moves them out of the published ``model/`` into
    the run folder, where retrieval evaluation reads them)."""
    trainable.student.encoder.save(str(folder))
    if trainable.objective.grounding is not None:
        trainable.objective.grounding.save(folder / HEADS_FILE)

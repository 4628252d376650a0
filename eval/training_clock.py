"""Training time of a run of sentence-transformers' own trainer, counted as ``distill.trainer`` counts its
``train_seconds``: steps, not the evaluate-and-save pauses between them. benchmarks/st_recipe.py times its
anchor recipe with it, so the two trainers' steps per second are measured alike."""
from __future__ import annotations

import time


def training_clock():
    """A ``TrainerCallback`` that times training as ``distill.trainer`` does: ``seconds`` runs from the start
    of training to the end of the last step, less every evaluate-and-save pause between one step's end and
    the next step's start. The trainer saves after it evaluates, so ``on_save`` closes a pause; a pause is
    subtracted only once the next step begins, because the one after the last step lies outside the span
    (subtracting it made a short run's time negative and every run's a final evaluation too short)."""
    from transformers import TrainerCallback

    class TrainingClock(TrainerCallback):
        def __init__(self):
            self.started = self.last_step_end = 0.0
            self.paused = self.pending_pause = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = self.last_step_end = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            self.paused += self.pending_pause
            self.pending_pause = 0.0

        def on_step_end(self, args, state, control, **kwargs):
            self.last_step_end = time.perf_counter()

        def on_save(self, args, state, control, **kwargs):
            self.pending_pause = time.perf_counter() - self.last_step_end

        @property
        def seconds(self) -> float:
            return self.last_step_end - self.started - self.paused

    return TrainingClock()

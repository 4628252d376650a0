"""The anchor recipe's training clock (benchmarks/st_recipe.py's) counts what the project's trainer counts:
steps, not dev pauses."""
from eval import training_clock as clock_module


def _run(clock, monkeypatch, events):
    """Feed ``(event, time)`` pairs to the callback as the trainer would call them."""
    for event, now in events:
        monkeypatch.setattr(clock_module.time, "perf_counter", lambda now=now: now)
        getattr(clock, event)(None, None, None)
    return clock.seconds


def test_pauses_between_steps_are_left_out_and_the_final_one_is_outside_the_span(monkeypatch):
    # two 1-second steps, each followed by a 5-second evaluate-and-save (the trainer's order at max_steps)
    events = [("on_train_begin", 0.0),
              ("on_step_begin", 0.0), ("on_step_end", 1.0), ("on_save", 6.0),
              ("on_step_begin", 6.0), ("on_step_end", 7.0), ("on_save", 12.0)]
    assert _run(clock_module.training_clock(), monkeypatch, events) == 2.0


def test_a_second_save_after_one_step_is_not_subtracted_twice(monkeypatch):
    events = [("on_train_begin", 0.0), ("on_step_begin", 0.0), ("on_step_end", 2.0),
              ("on_save", 3.0), ("on_save", 4.0), ("on_step_begin", 4.5), ("on_step_end", 6.5)]
    # 2 s + 2 s of steps, and the 0.5 s before the second step (loading its batch) is training time
    assert _run(clock_module.training_clock(), monkeypatch, events) == 4.5

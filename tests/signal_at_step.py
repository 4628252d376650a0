"""Run a script with the trainer's ``training_step`` patched to send this process a signal after step N (tests only).

    SIGNAL_AT_STEP=SIGTERM:3 python tests/signal_at_step.py scripts/train_student.py ARGS...

sends SIGTERM to itself right after the 3rd training step of this process returns, as a scheduler would.
"""
import os
import runpy
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import distill.trainer as trainer  # noqa: E402

name, nth = os.environ["SIGNAL_AT_STEP"].split(":")
real_step = trainer.training_step
calls = 0


def training_step(*args, **kwargs):
    global calls
    terms = real_step(*args, **kwargs)
    calls += 1
    if calls == int(nth):
        os.kill(os.getpid(), getattr(signal, name))
    return terms


trainer.training_step = training_step
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")

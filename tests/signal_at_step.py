"""Run a script with the trainer patched to send a signal at a chosen moment (tests only).

    SIGNAL_AT_STEP=SIGTERM:3 python tests/signal_at_step.py scripts/train_student.py ARGS...

sends SIGTERM to this process right after its 3rd training step returns, as a scheduler would;
``SIGINT:0`` sends it during the step-0 evaluation; a third field ``group`` (``SIGTERM:3:group``) sends
it to the whole process group, loader workers included, as Slurm and a terminal's Ctrl-C do (start the
script in a session of its own).
"""
import os
import runpy
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import distill.trainer as trainer  # noqa: E402

name, nth, *how = os.environ["SIGNAL_AT_STEP"].split(":")
real_step, real_dev_score = trainer.training_step, trainer.dev_score
calls = 0


def send() -> None:
    if how == ["group"]:
        os.killpg(os.getpgid(0), getattr(signal, name))
    else:
        os.kill(os.getpid(), getattr(signal, name))


def training_step(*args, **kwargs):
    global calls
    terms = real_step(*args, **kwargs)
    calls += 1
    if calls == int(nth):
        send()
    return terms


def dev_score(run):
    if int(nth) == 0 and run.state.step == 0 and not run.state.dev_history:
        send()  # arrives while the step-0 evaluation runs
    return real_dev_score(run)


trainer.training_step = training_step
trainer.dev_score = dev_score
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")

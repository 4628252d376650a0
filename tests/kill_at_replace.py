"""Run a script with ``os.replace`` and the run folder's ``exchange`` patched to SIGKILL this process at a
chosen call (tests only).

    KILL_AT_REPLACE=best:1 python tests/kill_at_replace.py scripts/train_student.py ARGS...

kills the process at the 1st rename or exchange whose destination is named ``best``, i.e. inside the swap
of ``best/``, before it happens.
"""
import os
import runpy
import signal
import sys
from pathlib import Path

target, nth = os.environ["KILL_AT_REPLACE"].split(":")
real_replace = os.replace
seen = 0


def count(dst) -> None:
    global seen
    if Path(dst).name == target:
        seen += 1
        if seen == int(nth):
            os.kill(os.getpid(), signal.SIGKILL)


def replace(src, dst, *args, **kwargs):
    count(dst)
    return real_replace(src, dst, *args, **kwargs)


def exchange(a, b):
    count(b)
    return real_exchange(a, b)


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import distill.run_folder  # noqa: E402

real_exchange = distill.run_folder.exchange
distill.run_folder.exchange = exchange
os.replace = replace
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")

"""What the machine has: devices checked before anything loads, loader workers that die with their parent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kdmcse_base.machine import device_problem

ROOT = Path(__file__).resolve().parents[1]


def test_device_problem_names_what_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert device_problem(None) is None and device_problem("auto") is None and device_problem("cpu") is None
    assert "no CUDA GPU" in device_problem("cuda") and "no CUDA GPU" in device_problem("cuda:7")
    assert "no Apple GPU" in device_problem("mps")
    assert device_problem("meta") == "torch cannot compute on 'meta' here; use cpu, cuda or mps"
    assert device_problem("gpu") == "not a torch device (e.g. cpu, cuda, cuda:1, mps)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_problem("cuda:1") is None
    assert device_problem("cuda:7") == "this machine has 2 CUDA GPUs (cuda:0 to cuda:1)"


WORKERS_SCRIPT = """
import os, sys, time
sys.path.insert(0, {root!r})
from torch.utils.data import DataLoader
from kdmcse_base.process_group import loader_worker_init

class Slow:
    def __len__(self): return 1000
    def __getitem__(self, i):
        time.sleep(0.05)
        return os.getpid()

for pid in DataLoader(Slow(), batch_size=None, num_workers=2, worker_init_fn=loader_worker_init,
                      multiprocessing_context="fork"):
    print(pid, flush=True)
"""


@pytest.mark.slow  # a process with loader worker processes
def test_loader_workers_ignore_a_group_signal_and_die_with_a_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", WORKERS_SCRIPT.format(root=str(ROOT))], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    workers = set()
    while len(workers) < 2:
        workers.add(int(parent.stdout.readline()))
    os.kill(min(workers), signal.SIGTERM)  # what a signal to the whole group does to a worker: nothing
    time.sleep(0.5)
    assert parent.poll() is None
    parent.kill()  # -9: the parent cannot shut its workers down
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return state not in ("Z", "X")  # a zombie waits for its reaper, it runs nothing

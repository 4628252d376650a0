"""``python SCRIPT ARGS`` in a fork of the test process instead of a new interpreter (tests only).

The child is the script's own process (its pid, environment, signals, exit code, stdout and stderr) but
inherits the torch, transformers and sentence-transformers the test process has imported: a new
interpreter spends about 10 CPU-seconds importing them on a slow core, and the suite launches dozens.
``ranks`` forks the processes of one torchrun node the same way (the environment torchrun gives its
workers); tests of the launcher itself still run ``torchrun``.
"""
from __future__ import annotations

import os
import runpy
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback


class Forked:
    """A forked ``python SCRIPT ARGS``, with Popen's ``poll``, ``wait``, ``send_signal`` and ``returncode``
    (minus the signal number when a signal ended it) and, once it has ended, ``stdout`` and ``stderr``."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, new_session: bool = False):
        self._out, self._err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.returncode: int | None = None
        self.stdout = self.stderr = ""
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            _child(argv, env, new_session, self._out.fileno(), self._err.fileno())

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._ended(status)
        return self.returncode

    def wait(self, timeout: float = 600) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.send_signal(signal.SIGKILL)
                self._ended(os.waitpid(self.pid, 0)[1])
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def _ended(self, status: int) -> None:
        self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        for stream, name in ((self._out, "stdout"), (self._err, "stderr")):
            stream.seek(0)
            setattr(self, name, stream.read().decode(errors="replace"))
            stream.close()


def _child(argv: list[str], env: dict[str, str] | None, new_session: bool, out: int, err: int) -> None:
    """Never returns: runs the script as ``__main__`` and leaves with its exit code, skipping the test
    process's own exit handlers."""
    code = 1
    try:
        if new_session:
            os.setsid()
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if "torch" in sys.modules and "OMP_NUM_THREADS" in os.environ:  # read once, when torch started
            sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        for sig in (signal.SIGINT, signal.SIGTERM):  # as a new interpreter starts: the script installs its own
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
        sys.argv = list(argv)
        try:
            runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if not isinstance(stop.code, int | None):
                print(stop.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001  (reported as the interpreter would, then exit 1)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600,
        new_session: bool = False) -> Forked:
    """``subprocess.run(capture_output=True)`` for ``python ARGV``: the ended child."""
    child = Forked(argv, env, new_session)
    child.wait(timeout)
    return child


def free_port() -> int:
    """A port no process listens on now, so launches can run side by side."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def ranks(argv: list[str], world: int = 2, env: dict[str, str] | None = None, timeout: float = 600) -> list[Forked]:
    """The ``world`` processes ``torchrun --nproc_per_node WORLD ARGV`` starts on one node, forked, each with
    torchrun's environment (one thread each, as torchrun gives several processes on one node); all ended."""
    base = {**(env if env is not None else os.environ), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
            "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world), "GROUP_RANK": "0", "OMP_NUM_THREADS": "1"}
    children = [Forked(argv, {**base, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(world)]
    for child in children:
        child.wait(timeout)
    return children


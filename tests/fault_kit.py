"""Faults planted on purpose, shared by the tests and benchmarks/fault_probe.py (which imports this file):
a flipped exponent byte in a cache shard, a checkpoint whose unpickling runs code, and how a script's error
is read off its stderr."""
from __future__ import annotations

import os
from pathlib import Path


def last_line(text: str) -> str:
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def error_message(stderr: str) -> str:
    """The error a script ended with: from its last ``error:`` / ``config error:`` line to the end."""
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith(("error:", "config error:"))]
    return "\n".join(lines[starts[-1]:]) if starts else last_line(stderr)


def flip_byte(path: Path, keep_mtime: bool) -> None:
    """Flip the top byte of the 10th float of the first row (an exponent byte: the row's norm blows up)."""
    stat = path.stat()
    raw = bytearray(path.read_bytes())
    header = raw.index(b"\n") + 1  # .npy header ends with a newline, then the little-endian data
    position = header + 4 * 9 + 3
    raw[position] ^= 0x40
    path.write_bytes(bytes(raw))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


class CreatesFile:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant_pickle_checkpoint(run: Path, marker: Path) -> None:
    """Overwrite ``run/checkpoint.pt`` with a zip checkpoint whose unpickling would create ``marker``."""
    import torch

    torch.save({"step": 2, "payload": CreatesFile(marker)}, run / "checkpoint.pt")

"""What this machine computes natively, so a precision of ``auto`` can pick the fast one.

bfloat16 autocast is fast only where the hardware computes it: CUDA devices that support it, and CPUs
with ``avx512_bf16`` or AMX. Elsewhere torch emulates it, and a training step of the offline student
took 1.69x as long under bf16 as in fp32 on an Intel Xeon without either flag.
"""
from __future__ import annotations

import platform

import torch


def native_bf16_flags() -> list[str]:
    """This CPU's native bfloat16 flags (``amx_bf16``, ``avx512_bf16``); without any, autocast emulates."""
    flags = _cpuinfo_field("flags").split()
    return [flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags]


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(native_bf16_flags())


def emulates_bf16(device: torch.device | str) -> bool:
    """Whether bf16 autocast runs on ``device`` only emulated (a CPU without avx512_bf16 or AMX, a CUDA
    device without bf16): slower than fp32 there."""
    device = torch.device(device)
    return device.type in ("cpu", "cuda") and not native_bf16(device)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto``: ``bf16`` where ``device`` computes it natively, else ``fp32``; any other value as given."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "fp32"


def precision_reason(device: torch.device | str) -> str:
    """Why ``auto`` chose what it chose on ``device``, for a log line."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} " + ("computes bf16" if native_bf16(device) else "has no bf16")
    flags = native_bf16_flags()
    return f"{cpu_name()} " + (f"has {', '.join(flags)}" if flags else "has no avx512_bf16 or AMX")


def cpu_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (the machine type elsewhere)."""
    return _cpuinfo_field("model name") or platform.machine()


def _cpuinfo_field(name: str) -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            line = next((line for line in handle if line.startswith(name)), "")
    except OSError:
        return ""
    return line.split(":", 1)[-1].strip()


def device_problem(name: str | None) -> str | None:
    """Why the device ``name`` (a config value: ``auto``/None, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)
    cannot compute on this machine, or None when it can: checked before any model or data is loaded."""
    if name in (None, "auto", "cpu"):
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        return "not a torch device (e.g. cpu, cuda, cuda:1, mps)"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return "this machine has no CUDA GPU that torch can use; use cpu (or leave it unset)"
        if device.index is not None and device.index >= count:
            return f"this machine has {count} CUDA GPU{'s' if count > 1 else ''} (cuda:0 to cuda:{count - 1})"
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            return "this machine has no Apple GPU (mps) that torch can use; use cpu (or leave it unset)"
    elif device.type != "cpu":
        return f"torch cannot compute on {device.type!r} here; use cpu, cuda or mps"
    return None

"""The device and precision an engine command runs with: ``--device`` (auto = CUDA when present), ``--dtype``
(autocast), and how a device is named in a result."""

from __future__ import annotations

import contextlib
import platform

import torch

from ..errors import UsageError


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; other names are checked and returned."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    return device


def check_device(device: str) -> None:
    """One line for a device this machine does not have (before any work starts)."""
    if not device.startswith(("cpu", "cuda")):
        raise UsageError(f"--device must be cpu or cuda, got '{device}'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available; use --device cpu")


AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_dtype(dtype: str, device: str) -> None:
    if dtype not in AUTOCAST_DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(AUTOCAST_DTYPES)}, got '{dtype}'")
    if dtype == "fp16" and not device.startswith("cuda"):
        raise UsageError(
            "--dtype fp16 needs --device cuda (CPU fp16 kernels are slow and unrepresentative); use bf16 or fp32 on CPU"
        )


def autocast(dtype: str, device: str):
    """The autocast context for ``--dtype`` (a no-op for fp32)."""
    if AUTOCAST_DTYPES[dtype] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=AUTOCAST_DTYPES[dtype])


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU ({torch.get_num_threads()} threads)"

"""Forward latency / throughput measurement (``lrbench speed``).

GPU: CUDA events around each forward, synchronised, cudnn.benchmark as requested, peak memory from the allocator.
CPU: ``time.perf_counter``. Always ``torch.inference_mode``; warm-up iterations are discarded; median and
inter-quartile range are reported (robust to the odd slow iteration). Results carry the device, torch version and
every setting, so a number is never separated from how it was measured.
"""
from __future__ import annotations

import platform
import statistics
import time
from contextlib import nullcontext
from typing import Any, Callable

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_forward(fn: Callable[[], Any], device: str = "cpu", warmup: int = 3, iters: int = 10) -> dict:
    """Run ``fn`` ``warmup`` times, then time ``iters`` calls; returns per-call milliseconds and summary stats."""
    if iters < 1 or warmup < 0:
        raise ValueError(f"--iters must be >= 1 and --warmup >= 0, got iters={iters}, warmup={warmup}")
    cuda = device.startswith("cuda")
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        _sync(device)
        for _ in range(iters):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {"median_ms": statistics.median(times), "iqr_ms": q[2] - q[0], "mean_ms": statistics.fmean(times),
            "min_ms": min(times), "times_ms": times}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU ({torch.get_num_threads()} threads)"


def measure_speed(model_name: str, shape: tuple[int, int], batch_size: int = 1, dtype: str = "fp32",
                  channels_last: bool = False, compile: bool = False, device: str = "cpu", warmup: int = 3,
                  iters: int = 10, num_classes: int | None = None, cudnn_benchmark: bool = False) -> dict:
    """Latency and images/s of one model's forward at ``shape`` (H, W) with random normalised input."""
    from .models import create_model
    from .recipes import default_num_classes

    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if dtype == "fp16" and not device.startswith("cuda"):
        raise ValueError("--dtype fp16 needs --device cuda (CPU fp16 kernels are slow and unrepresentative); "
                         "use bf16 or fp32 on CPU")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    num_classes = num_classes or default_num_classes(model_name)
    model = create_model(model_name, num_classes=num_classes).to(device)
    x = torch.randn(batch_size, 3, *shape, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = cudnn_benchmark
        torch.cuda.reset_peak_memory_stats()
    fwd = torch.compile(model) if compile else model
    amp = torch.autocast(device_type=device.split(":")[0], dtype=DTYPES[dtype]) if dtype != "fp32" else nullcontext()

    def step():
        with amp:
            return fwd(x)

    t = time_forward(step, device, warmup, iters)
    return {
        "model": model_name, "shape": list(shape), "batch_size": batch_size, "dtype": dtype,
        "channels_last": channels_last, "compile": compile, "device": device, "device_name": device_name(device),
        "torch": torch.__version__, "warmup": warmup, "iters": iters,
        "median_ms": t["median_ms"], "iqr_ms": t["iqr_ms"], "mean_ms": t["mean_ms"], "min_ms": t["min_ms"],
        "images_per_s": batch_size * 1e3 / t["median_ms"],
        "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None,
    }

"""Forward latency / throughput measurement (``lrbench speed``).

GPU: CUDA events around each forward, synchronised, cudnn.benchmark off (mmseg's test setting), peak memory from the allocator.
CPU: ``time.perf_counter``. Always ``torch.inference_mode``; warm-up iterations are discarded; median and
inter-quartile range are reported (robust to the odd slow iteration). Results carry the device, torch version and
every setting, so a number is never separated from how it was measured. With ``compile``, the first call (where
torch.compile compiles) is timed on its own (``compile_s``) and is not part of the warm-up or the latency.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ..errors import UsageError
from ..settings import check_shape
from .devices import autocast, check_device, check_dtype, device_name
from .models import create_model


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_forward(
    fn: Callable[[], Any],
    device: str = "cpu",
    warmup: int = 3,
    iters: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Run ``fn`` ``warmup`` times, then time ``iters`` calls; returns per-call milliseconds and summary stats.
    ``progress(done, total)`` is called after every call (warm-up included)."""
    if iters < 1 or warmup < 0:
        raise UsageError(f"--iters must be >= 1 and --warmup >= 0, got iters={iters}, warmup={warmup}")
    cuda = device.startswith("cuda")
    times = []
    with torch.inference_mode():
        for i in range(warmup):
            fn()
            if progress:
                progress(i + 1, warmup + iters)
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
            if progress:
                progress(warmup + len(times), warmup + iters)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return {
        "median_ms": statistics.median(times),
        "iqr_ms": q[2] - q[0],
        "mean_ms": statistics.fmean(times),
        "min_ms": min(times),
        "times_ms": times,
    }


def measure_speed(
    model_name: str,
    shape: tuple[int, int],
    batch_size: int = 1,
    dtype: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    device: str = "cpu",
    warmup: int = 3,
    iters: int = 10,
    num_classes: int = 150,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Latency and images/s of one architecture's forward at ``shape`` (H, W) with random normalised input."""
    check_device(device)
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    check_dtype(dtype, device)
    shape = check_shape(shape, model_name)
    model = create_model(model_name, num_classes=num_classes).to(device)
    x = torch.randn(batch_size, 3, *shape, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False  # mmseg's test setting
        torch.cuda.reset_peak_memory_stats()
    fwd = torch.compile(model) if compile else model
    amp = autocast(dtype, device)

    def step():
        with amp:
            return fwd(x)

    compile_s = None
    if compile:  # the first call compiles: timed on its own, never mixed into the steady-state latency
        with torch.inference_mode():
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            compile_s = time.perf_counter() - t0
    t = time_forward(step, device, warmup, iters, progress)
    return {
        "model": model_name,
        "shape": list(shape),
        "num_classes": num_classes,
        "batch_size": batch_size,
        "dtype": dtype,
        "channels_last": channels_last,
        "compile": compile,
        "compile_s": compile_s,
        "device": device,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "warmup": warmup,
        "iters": iters,
        "median_ms": t["median_ms"],
        "iqr_ms": t["iqr_ms"],
        "mean_ms": t["mean_ms"],
        "min_ms": t["min_ms"],
        "images_per_s": batch_size * 1e3 / t["median_ms"],
        "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None,
        "timer": timer_scope(device, warmup, iters),
    }


def timer_scope(device: str, warmup: int, iters: int) -> dict:
    """What a latency covers and how it was taken: the questions behind "FPS does not match the paper"."""
    cuda = device.startswith("cuda")
    return {
        "covers": "the model's forward only, on a random normalised batch already on the device (no image decoding, "
        "resize, sliding window, flip, argmax or upsampling to the image size)",
        "clock": "CUDA events around each forward, synchronised after each (cudnn.benchmark off)"
        if cuda
        else "time.perf_counter around each forward (CPU: synchronous)",
        "mode": "torch.inference_mode, model.eval()",
        "warmup": warmup,
        "iters": iters,
        "statistic": "median and inter-quartile range (IQR) of the per-iteration times",
    }

"""Measuring the LRSA scaling study (``lrbench claims``, judged by :mod:`lrbench.claims`): attention layers and
whole models counted on the meta device and timed on the device asked for."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..claims import KINDS, MODELS, SIZES, SR_RATIOS, STAGE_DIMS, STAGE_HEADS, STAGE_STRIDES, classes_for, judge_claims
from .complexity import count_macs
from .devices import check_device, device_name
from .models import create_model
from .models.lrformer import PoolingAttention
from .models.segformer import EfficientAttention
from .speed import time_forward


class LRSALayer(nn.Module):
    """One LRSA token mixer with its stage's shared depth-wise convs (as in an LRFormer block)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = PoolingAttention(dim, heads)
        self.d_convs = nn.ModuleList(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim) for _ in range(4))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        return self.attn(x, H, W, self.d_convs)


def attention_layer(kind: str, stage: int) -> nn.Module:
    """One layer of ``kind`` at a stage's width, in the channels-last layout the models run it in (its convs see
    channels-last maps: weights in the same layout, so no kind pays for a conversion)."""
    C, h = STAGE_DIMS[stage], STAGE_HEADS[stage]
    layer = LRSALayer(C, h) if kind == "LRSA" else EfficientAttention(C, h, 1 if kind == "MHSA" else SR_RATIOS[stage])
    return layer.to(memory_format=torch.channels_last)


def meta_macs(fn) -> tuple[float, float]:
    """(total GMACs, attention-kernel GMACs) of ``fn()`` in ``lrbench flops``' convention."""
    res = count_macs(fn)
    # attention kernels: SDPA, or the batched matmuls it decomposes into on the meta device (linears are mm/addmm)
    core = sum(v for k, v in res["by_operator"].items() if k in ("attention", "matmul (attention)"))
    return res["total"] / 1e9, core / 1e9


def _stage_hw(size: tuple[int, int], stage: int) -> tuple[int, int]:
    s = STAGE_STRIDES[stage]
    return math.ceil(size[0] / s), math.ceil(size[1] / s)


def attention_cost(kind: str, size: tuple[int, int]) -> dict:
    """GMACs of one layer of ``kind`` at every stage for an input of ``size`` (meta device)."""
    total = core = 0.0
    for stage in range(4):
        with torch.device("meta"):
            layer = attention_layer(kind, stage)
        H, W = _stage_hw(size, stage)
        x = torch.zeros(1, H * W, STAGE_DIMS[stage], device="meta")
        t, c = meta_macs(lambda: layer(x, H, W))
        total, core = total + t, core + c
    return {"gmacs": total, "core_gmacs": core}


def attention_latency(kind: str, size: tuple[int, int], device: str, warmup: int, iters: int) -> float:
    """Median ms of one layer of ``kind`` per stage (summed over the four stages), random weights and input."""
    total = 0.0
    for stage in range(4):
        layer = attention_layer(kind, stage).to(device).eval()
        H, W = _stage_hw(size, stage)
        x = torch.randn(1, H * W, STAGE_DIMS[stage], device=device)
        total += time_forward(lambda: layer(x, H, W), device, warmup, iters)["median_ms"]
    return total


def model_gmacs(name: str, size: tuple[int, int]) -> float:
    with torch.device("meta"):
        model = create_model(name, num_classes=classes_for(size))
    x = torch.zeros(1, 3, *size, device="meta")
    return meta_macs(lambda: model(x))[0]


def run_claims(
    sizes: list[tuple[int, int]] | None = None,
    device: str = "cpu",
    warmup: int = 1,
    iters: int = 3,
    max_gmacs: float = 150.0,
    progress=None,
) -> dict:
    """Measure attention and whole-model cost over ``sizes`` and judge each claim from the measurements."""
    check_device(device)
    sizes = [tuple(s) for s in (sizes or SIZES)]
    attn_rows, model_rows = [], []
    steps = len(sizes) * (len(KINDS) + len(MODELS))
    done = 0
    for size in sizes:
        for kind in KINDS:
            cost = attention_cost(kind, size)
            row = {"size": list(size), "kind": kind, **cost, "latency_ms": None}
            if cost["gmacs"] <= max_gmacs:
                row["latency_ms"] = attention_latency(kind, size, device, warmup, iters)
            attn_rows.append(row)
            done += 1
            if progress:
                progress(done, steps, f"{kind} {size[0]}x{size[1]}")
        for name in MODELS:
            model_rows.append({"size": list(size), "model": name, "gmacs": model_gmacs(name, size)})
            done += 1
            if progress:
                progress(done, steps, f"{name} {size[0]}x{size[1]}")
    return {
        "meta": {
            "device": device,
            "device_name": device_name(device),
            "torch": torch.__version__,
            "max_gmacs": max_gmacs,
            "warmup": warmup,
            "iters": iters,
        },
        "attention": attn_rows,
        "models": model_rows,
        "claims": judge_claims(attn_rows, model_rows),
    }

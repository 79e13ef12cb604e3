"""The scaling study behind LRFormer's central claim (``lrbench claims``).

LRSA pools queries and keys/values to a fixed low-resolution grid, so its attention matmuls cost the same at any input
size; only the pooling and the bilinear upsampling back to full resolution grow (linearly) with the pixels. This
module measures that against full multi-head self-attention (MHSA) and SegFormer's spatial-reduction attention (SRA,
reduction 8/4/2/1 by stage), one attention layer per stage at matched channels (LRFormer-S / SegFormer-B2 stage
widths 64/128/320/512), and compares whole-model cost of LRFormer-S, SegFormer-B2 and UperNet-Swin-T, and of LRFormer-S+
against Mask2Former-Swin-T/S (all Mask2Former models counted over their whole inference, image to per-class scores).

FLOPs here are counted on the meta device with ``lrbench flops``' own counter (:func:`lrbench.complexity.count_macs`:
no memory, any resolution, multiply-adds in the papers' convention); "attention" FLOPs are its attention kernels. Latencies are real CPU/GPU forwards; a layer whose cost exceeds ``max_gmacs`` is not timed (MHSA at high
resolution would take minutes) and is marked as skipped. Every verdict is computed from these measurements.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .complexity import count_macs
from .fileio import atomic_write_bytes
from .models import create_model
from .models.lrformer import PoolingAttention
from .models.segformer import EfficientAttention
from .results import check_device, device_name
from .speed import time_forward

SIZES: list[tuple[int, int]] = [
    (256, 256),
    (512, 512),
    (768, 768),
    (1024, 1024),
    (1536, 1536),
    (2048, 2048),
    (1024, 2048),
]
STAGE_DIMS = (64, 128, 320, 512)  # LRFormer-S == SegFormer-B2 widths
STAGE_HEADS = (2, 4, 10, 16)  # LRFormer heads; FLOPs do not depend on the head split
SR_RATIOS = (8, 4, 2, 1)
STAGE_STRIDES = (4, 8, 16, 32)
KINDS = ("LRSA", "MHSA", "SRA")
QUICK_SIZES: list[tuple[int, int]] = [(256, 256), (512, 512), (1024, 1024), (1024, 2048)]
LRHEAD_MODELS = ("lrformer-s", "segformer-b2", "upernet-swin-t")  # LRFormer-S and its rivals
PLUS_RIVALS = ("mask2former-swin-t", "mask2former-swin-s")  # the Mask2Former baselines LRFormer-S+ is set against
MODELS = LRHEAD_MODELS + ("lrformer-s-plus",) + PLUS_RIVALS


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


def classes_for(size: tuple[int, int]) -> int:
    """Cityscapes' 19 classes at its 1024x2048 input, ADE20K's 150 otherwise (as the published counts)."""
    return 19 if tuple(size) == (1024, 2048) else 150


def model_gmacs(name: str, size: tuple[int, int]) -> float:
    with torch.device("meta"):
        model = create_model(name, num_classes=classes_for(size))
    x = torch.zeros(1, 3, *size, device="meta")
    return meta_macs(lambda: model(x))[0]


def _slope(rows: list[dict], key: str) -> float:
    """log-log growth exponent of ``key`` w.r.t. pixel count between the two largest square sizes."""
    sq = sorted((r for r in rows if r["size"][0] == r["size"][1]), key=lambda r: r["size"][0])[-2:]
    (a, b) = sq
    pa, pb = a["size"][0] * a["size"][1], b["size"][0] * b["size"][1]
    return math.log(b[key] / a[key]) / math.log(pb / pa)


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


def _claim(claim: str, holds: bool, evidence: str) -> dict:
    return {"claim": claim, "verdict": "holds" if holds else "fails", "evidence": evidence}


def judge_claims(attn_rows: list[dict], model_rows: list[dict]) -> list[dict]:
    """Verdicts from measured rows (see ``run_claims``); pure function so reports can re-judge stored results."""
    by = {k: [r for r in attn_rows if r["kind"] == k] for k in KINDS}
    square = {k: [r for r in v if r["size"][0] == r["size"][1]] for k, v in by.items()}
    out = []

    cores = [r["core_gmacs"] for r in square["LRSA"]]
    spread = max(cores) / min(cores)
    out.append(
        _claim(
            "LRSA attention (QK^T, AV) FLOPs are constant in input resolution",
            spread <= 1.0 + 1e-9,
            f"core GMACs {min(cores):.4f}-{max(cores):.4f} over "
            f"{square['LRSA'][0]['size'][0]}²-{square['LRSA'][-1]['size'][0]}² (max/min {spread:.3f}); "
            f"MHSA core grows {square['MHSA'][-1]['core_gmacs'] / square['MHSA'][0]['core_gmacs']:.0f}x",
        )
    )

    s_lrsa, s_mhsa, s_sra = (_slope(square[k], "gmacs") for k in KINDS)
    out.append(
        _claim(
            "LRSA layer cost grows at most linearly with pixels, MHSA quadratically",
            s_lrsa <= 1.05 and s_mhsa >= 1.9,
            f"growth exponent vs pixels (largest sizes): LRSA {s_lrsa:.2f}, SRA {s_sra:.2f}, MHSA {s_mhsa:.2f}",
        )
    )

    ratios = [
        (s["gmacs"] / lr["gmacs"], lr["size"])
        for lr, s in zip(by["LRSA"], by["SRA"])
        if lr["size"][0] * lr["size"][1] >= 512 * 512
    ]
    if ratios:  # only judged when a size >= 512² was measured
        worst = min(ratios)
        out.append(
            _claim(
                "LRSA costs fewer FLOPs than SegFormer's SRA at every resolution >= 512²",
                worst[0] > 1.0,
                f"SRA/LRSA GMACs from {worst[0]:.1f}x ({worst[1][0]}x{worst[1][1]}) to "
                f"{max(ratios)[0]:.1f}x ({max(ratios)[1][0]}x{max(ratios)[1][1]})",
            )
        )

    timed = [(lr, s) for lr, s in zip(square["LRSA"], square["SRA"]) if lr["latency_ms"] and s["latency_ms"]]
    if len(timed) >= 2:
        r0 = timed[0][1]["latency_ms"] / timed[0][0]["latency_ms"]
        r1 = timed[-1][1]["latency_ms"] / timed[-1][0]["latency_ms"]
        out.append(
            _claim(
                "LRSA's latency advantage over SRA widens with resolution",
                r1 > r0,
                f"SRA/LRSA latency {r0:.2f}x at {timed[0][0]['size'][0]}² -> {r1:.2f}x at {timed[-1][0]['size'][0]}²",
            )
        )

    m = {(r["model"], tuple(r["size"])): r["gmacs"] for r in model_rows}
    for size in [(512, 512), (1024, 2048)]:
        if ("lrformer-s", size) in m:
            lr, sf, sw = (m[(n, size)] for n in LRHEAD_MODELS)
            out.append(
                _claim(
                    f"LRFormer-S needs fewer FLOPs than SegFormer-B2 and UperNet-Swin-T at {size[0]}x{size[1]}",
                    lr < sf and lr < sw,
                    f"GMACs ({classes_for(size)} classes) LRFormer-S {lr:.1f}, SegFormer-B2 {sf:.1f} "
                    f"({sf / lr:.2f}x), "
                    f"UperNet-Swin-T {sw:.1f} ({sw / lr:.1f}x)",
                )
            )
    sq_sizes = sorted({tuple(r["size"]) for r in model_rows if r["size"][0] == r["size"][1]})
    if len(sq_sizes) >= 2:
        a, b = sq_sizes[0], sq_sizes[-1]
        ra, rb = m[("segformer-b2", a)] / m[("lrformer-s", a)], m[("segformer-b2", b)] / m[("lrformer-s", b)]
        out.append(
            _claim(
                "LRFormer-S's FLOP advantage over SegFormer-B2 widens with resolution",
                rb > ra,
                f"SegFormer-B2/LRFormer-S {ra:.2f}x at {a[0]}² -> {rb:.2f}x at {b[0]}²",
            )
        )
    # LRFormer+ vs Mask2Former-Swin: both counted over the whole inference (image -> per-class scores)
    if ("lrformer-s-plus", (512, 512)) in m and all((n, (512, 512)) in m for n in PLUS_RIVALS):
        plus, rivals = m[("lrformer-s-plus", (512, 512))], [m[(n, (512, 512))] for n in PLUS_RIVALS]
        out.append(
            _claim(
                "LRFormer-S+ needs fewer FLOPs than Mask2Former-Swin-T and -S at 512x512",
                all(plus < r for r in rivals),
                f"GMACs (150 classes, whole inference) LRFormer-S+ {plus:.1f}, "
                + ", ".join(f"{n.replace('mask2former-', 'M2F-')} {r:.1f}" for n, r in zip(PLUS_RIVALS, rivals)),
            )
        )
    if len(sq_sizes) >= 2 and ("lrformer-s-plus", sq_sizes[0]) in m:
        a, b = sq_sizes[0], sq_sizes[-1]
        ra = m[("mask2former-swin-t", a)] / m[("lrformer-s-plus", a)]
        rb = m[("mask2former-swin-t", b)] / m[("lrformer-s-plus", b)]
        out.append(
            _claim(
                "LRFormer-S+'s FLOP advantage over Mask2Former-Swin-T widens with resolution",
                rb > ra,
                f"M2F-Swin-T/LRFormer-S+ {ra:.2f}x at {a[0]}² -> {rb:.2f}x at {b[0]}²",
            )
        )
    return out


def plot_claims(result: dict, path: str) -> None:
    """PNG: attention GMACs and latency vs pixels (log-log) per kind, and whole-model GMACs per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    sq = lambda rows: sorted((r for r in rows if r["size"][0] == r["size"][1]), key=lambda r: r["size"][0])  # noqa: E731
    for kind, style in zip(KINDS, ("o-", "s--", "^-.")):
        rows = sq([r for r in result["attention"] if r["kind"] == kind])
        px = [r["size"][0] ** 2 for r in rows]
        axes[0].plot(px, [r["gmacs"] for r in rows], style, label=kind)
        t = [(p, r["latency_ms"]) for p, r in zip(px, rows) if r["latency_ms"]]
        if t:
            axes[1].plot(*zip(*t), style, label=kind)
    for name, style in zip(MODELS, ("o-", "s--", "^-.", "D-", "v:", "x:")):
        rows = sq([r for r in result["models"] if r["model"] == name])
        axes[2].plot([r["size"][0] ** 2 for r in rows], [r["gmacs"] for r in rows], style, label=name)
    titles = (
        "Attention GMACs (1 layer/stage)",
        f"Attention latency, ms ({result['meta']['device_name']})",
        "Whole-model GMACs",
    )
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("input pixels (square)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)

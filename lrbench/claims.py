"""Judging the LRSA scaling study (``lrbench claims``): the verdicts and the plot, from measured rows (the
measuring is :mod:`lrbench.engine.measure`). Reading only: a report re-judges stored results without torch.

LRSA pools queries and keys/values to a fixed low-resolution grid, so its attention matmuls cost the same at any input
size; only the pooling and the bilinear upsampling back to full resolution grow (linearly) with the pixels. The study
measures that against full multi-head self-attention (MHSA) and SegFormer's spatial-reduction attention (SRA,
reduction 8/4/2/1 by stage), one attention layer per stage at matched channels (LRFormer-S / SegFormer-B2 stage
widths 64/128/320/512), and compares whole-model cost of LRFormer-S, SegFormer-B2 and UperNet-Swin-T, and of LRFormer-S+
against Mask2Former-Swin-T/S (all Mask2Former models counted over their whole inference, image to per-class scores).

FLOPs here are counted on the meta device with ``lrbench flops``' own counter (:func:`lrbench.engine.complexity.count_macs`:
no memory, any resolution, multiply-adds in the papers' convention); "attention" FLOPs are its attention kernels. Latencies are real CPU/GPU forwards; a layer whose cost exceeds ``max_gmacs`` is not timed (MHSA at high
resolution would take minutes) and is marked as skipped. Every verdict is computed from these measurements.
"""

from __future__ import annotations

import math

from .fileio import atomic_write_bytes

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


def classes_for(size: tuple[int, int]) -> int:
    """Cityscapes' 19 classes at its 1024x2048 input, ADE20K's 150 otherwise (as the published counts)."""
    return 19 if tuple(size) == (1024, 2048) else 150


def _slope(rows: list[dict], key: str) -> float:
    """log-log growth exponent of ``key`` w.r.t. pixel count between the two largest square sizes."""
    sq = sorted((r for r in rows if r["size"][0] == r["size"][1]), key=lambda r: r["size"][0])[-2:]
    (a, b) = sq
    pa, pb = a["size"][0] * a["size"][1], b["size"][0] * b["size"][1]
    return math.log(b[key] / a[key]) / math.log(pb / pa)


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
    import matplotlib.pyplot as plt

    fig = draw_claims(result)
    atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def draw_claims(result: dict):
    """The figure of :func:`plot_claims`."""
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
    return fig

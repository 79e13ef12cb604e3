"""Forward latency of LRFormer vs SegFormer vs UperNet-Swin at several resolutions, as ratios to a reference model
measured in the same run (absolute milliseconds depend on the machine; ratios travel better).

    python benchmarks/speed_compare.py [--models lrformer-s segformer-b2 upernet-swin-t] [--reference segformer-b2]
        [--sizes 512 1024] [--device cpu|cuda] [--dtype fp32|fp16|bf16] [--iters 5] [--json]

On CUDA it uses CUDA events and reports peak memory; see `lrbench speed --help` for the single-model command.
"""

from __future__ import annotations

import argparse
import json

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lrformer-s", "segformer-b2", "upernet-swin-t"])
    ap.add_argument("--reference", default="segformer-b2")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from lrbench.engine.speed import measure_speed

    models = list(dict.fromkeys([args.reference, *args.models]))
    rows = []
    for size in args.sizes:
        ref = None
        for name in models:
            r = measure_speed(
                name, (size, size), dtype=args.dtype, device=args.device, warmup=args.warmup, iters=args.iters
            )
            ref = ref or r["median_ms"]
            rows.append(
                {
                    "size": size,
                    "model": name,
                    "median_ms": r["median_ms"],
                    "iqr_ms": r["iqr_ms"],
                    "vs_reference": ref / r["median_ms"],
                    "peak_mem_mb": r["peak_mem_mb"],
                    "device": r["device_name"],
                    "torch": r["torch"],
                    "dtype": args.dtype,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"device {rows[0]['device']}, torch {rows[0]['torch']}, {args.dtype}; speed-up vs {args.reference} "
        f"(> 1: faster)"
    )
    for r in rows:
        mem = f"  peak {r['peak_mem_mb']:.0f} MiB" if r["peak_mem_mb"] else ""
        print(
            f"{r['size']:5d}²  {r['model']:16s} {r['median_ms']:9.1f} ms (IQR {r['iqr_ms']:.1f})  "
            f"{r['vs_reference']:.2f}x{mem}"
        )


if __name__ == "__main__":
    main()

"""lrbench's LRFormer (channels-last maps, depth-wise residuals folded into the kernel) against the reference
implementation (tests/reference_lrformer.py: the official code op for op, NCHW), on the same weights.

Interleaved timing in one run (reference, fast, reference, fast, ...), so both see the same machine state; prints the
speed-up (median reference / median fast) and the max abs logit difference for LRFormer-T and -S at 512x512 (150
classes) and 1024x2048 (19 classes).

    python benchmarks/fast_vs_reference.py [--iters 5] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import reference_lrformer  # noqa: E402

from lrbench.engine.devices import device_name  # noqa: E402
from lrbench.engine.models import create_model  # noqa: E402

CASES = [
    ("lrformer-t", (512, 512), 150),
    ("lrformer-s", (512, 512), 150),
    ("lrformer-t", (1024, 2048), 19),
    ("lrformer-s", (1024, 2048), 19),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, shape, k in CASES:
        fast = create_model(name, num_classes=k)
        ref = reference_lrformer.build(name, k).eval()
        ref.load_state_dict(fast.state_dict())
        x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
        times = {"reference": [], "fast": []}
        with torch.inference_mode():
            diff = (fast(x) - ref(x)).abs().max().item()  # also the warm-up
            for _ in range(args.iters):
                for label, model in (("reference", ref), ("fast", fast)):
                    t0 = time.perf_counter()
                    model(x)
                    times[label].append((time.perf_counter() - t0) * 1e3)
        r, f = statistics.median(times["reference"]), statistics.median(times["fast"])
        rows.append(
            {
                "model": name,
                "shape": list(shape),
                "reference_ms": r,
                "fast_ms": f,
                "speedup": r / f,
                "max_abs_logit_diff": diff,
            }
        )
    meta = {"device": device_name("cpu"), "torch": torch.__version__, "iters": args.iters}
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return
    print(f"{meta['device']}, torch {meta['torch']}, {args.iters} interleaved iterations, fp32")
    for row in rows:
        print(
            f"{row['model']:<11} {row['shape'][0]}x{row['shape'][1]:<5} reference {row['reference_ms']:8.1f} ms   "
            f"fast {row['fast_ms']:8.1f} ms   speed-up {row['speedup']:.2f}x   max |diff| "
            f"{row['max_abs_logit_diff']:.1e}"
        )


if __name__ == "__main__":
    main()

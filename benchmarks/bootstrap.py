"""The bootstrap's speed target: a 95% interval for 2,000 images x 171 classes with 1,000 resamples in < 2 s, and a
paired comparison of two such results, on this machine (a ratio to the target, not a test).

    PYTHONPATH=. python benchmarks/bootstrap.py [--images 2000] [--classes 171] [--resamples 1000]

Measured on the 2-core CPU machine (numpy BLAS, 2026-12-01): interval 196 ms (0.10x the target), paired 252 ms.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lrbench.stats import miou_ci, paired_diff

TARGET_S = 2.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--classes", type=int, default=171)
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    union = rng.integers(0, 5000, size=(args.images, args.classes))
    inter = (union * rng.uniform(0, 1, size=union.shape)).astype(np.int64)
    names = np.array([f"img{i}" for i in range(args.images)])
    rows = []
    for what, fn in (
        ("interval", lambda: miou_ci(inter, union, args.resamples)),
        (
            "paired",
            lambda: paired_diff(
                {"names": names, "intersect": inter, "union": union},
                {"names": names, "intersect": inter // 2, "union": union},
                args.resamples,
            ),
        ),
    ):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        rows.append((what, float(np.median(times))))
    print(f"{args.images} images x {args.classes} classes, {args.resamples} resamples (median of 5):")
    for what, t in rows:
        print(f"  {what:9s} {t * 1000:8.1f} ms   = {t / TARGET_S:.2f} x the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()

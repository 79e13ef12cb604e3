"""What keeping the confusion matrix costs an eval (issue: at most 2% of eval time), on this machine's CPU.

The eval's metric stage before: mmseg's three masked ``bincount``s per image (``lrbench.engine.metrics._counts``);
now: one ``bincount`` into the (K+1) x (K+1) confusion matrix, the areas read from it
(``lrbench.engine.metrics.confusion`` + ``areas_of``). Both are timed per image at ADE20K's test size (512 x 683,
150 classes) and Cityscapes' (1024 x 2048, 19 classes), next to what the eval spends on one image besides: LRFormer-T's
forward at that size (the cheapest model; any other makes the share smaller). Median of ``--repeat`` runs.

    PYTHONPATH=. python benchmarks/confusion.py

Measured (2 CPU threads, torch 2.14.1; ms per image; share = (now - before) / forward):

    dataset      before ms    now ms  forward ms    share
    ade20k           10.80      4.76       478.3   -1.26%
    cityscapes       45.31     59.73      3211.4    0.45%

The matrix is cheaper than the three masked bincounts at 150 classes and costs 0.45% of LRFormer-T's forward at
Cityscapes' size (the ss protocol; ms runs 12 forwards per image, so its share is smaller still): within the 2%.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lrbench.engine.metrics import _counts, areas_of, confusion
from lrbench.engine.models import create_model

CASES = (("ade20k", (512, 683), 150), ("cityscapes", (1024, 2048), 19))


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"{'dataset':<12}{'before ms':>10}{'now ms':>10}{'forward ms':>12}{'share':>9}")
    for name, (h, w), K in CASES:
        pred = torch.randint(0, K, (h, w))
        label = torch.randint(0, K, (h, w)).to(torch.uint8)
        label[torch.rand(h, w) < 0.1] = 255
        before = median_ms(lambda: _counts(pred, label, K, 255), args.repeat)
        now = median_ms(lambda: areas_of(confusion(pred, label, K, 255)), args.repeat)
        model = create_model("lrformer-t", num_classes=K).eval()
        x = torch.randn(1, 3, h, w)
        with torch.inference_mode():
            forward = median_ms(lambda: model(x), max(3, args.repeat // 2))
        print(f"{name:<12}{before:>10.2f}{now:>10.2f}{forward:>12.1f}{(now - before) / forward:>9.2%}")


if __name__ == "__main__":
    main()

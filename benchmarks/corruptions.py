"""How long making one corrupted image takes, per corruption of the robustness protocol, with the
``imagecorruptions`` package (``lrbench.engine.corruptions``), and glass_blur before / after lrbench's fast path
(``glass_blur_fast``: the same bytes, tests/test_analysis.py). One image of ADE20K's test size (512 x 683) and one
of Cityscapes' (1024 x 2048, glass_blur's package loop only with ``--slow``: minutes), severity 3.

    PYTHONPATH=. python benchmarks/corruptions.py [--slow]

Measured (2 CPU threads; seconds per image):

    corruption             512x683   1024x2048
    motion_blur               0.07        0.68
    defocus_blur              0.02        0.15
    glass_blur                0.69        4.89     <- lrbench's fast path
    gaussian_blur             0.03        0.29
    gaussian_noise            0.03        0.17
    impulse_noise             0.02        0.16
    shot_noise                0.08        0.54
    speckle_noise             0.03        0.18
    brightness                0.27        1.15
    contrast                  0.02        0.13
    saturate                  0.17        1.13
    jpeg_compression          0.02        0.03
    snow                      0.08        0.51
    spatter                   0.04        0.29
    fog                       0.04        0.20
    frost                     0.01        0.07
    glass (package)          12.13                 <- the package's own loop (about 75 s at 1024x2048, by pixels)

glass_blur: 12.1 s -> 0.69 s per ADE-sized image (17x), the same bytes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from lrbench.engine.corruptions import corrupt_image
from lrbench.names import CORRUPTIONS


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slow", action="store_true", help="Also the package's glass_blur at 1024 x 2048.")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sizes = {"512x683": (512, 683), "1024x2048": (1024, 2048)}
    images = {k: (rng.random((*v, 3)) * 255).astype(np.uint8) for k, v in sizes.items()}
    corrupt_image(images["512x683"][:64, :64], "fog", 1, "warm-up")  # imports the package
    print(f"{'corruption':<18}" + "".join(f"{k:>12}" for k in sizes))
    for name in CORRUPTIONS:
        row = [seconds(lambda img=img: corrupt_image(img, name, 3, "x.png")) for img in images.values()]
        print(f"{name:<18}" + "".join(f"{t:>12.2f}" for t in row))
    slow = {k: img for k, img in images.items() if args.slow or k == "512x683"}
    row = [seconds(lambda img=img: corrupt_image(img, "glass_blur", 3, "x.png", fast=False)) for img in slow.values()]
    print(f"{'glass (package)':<18}" + "".join(f"{t:>12.2f}" for t in row))


if __name__ == "__main__":
    main()

"""Fixed vocabularies shared by the command line and the library, importable without torch (the CLI offers them as
choices before anything heavy is imported). The library checks its own tables against these in tests."""

from __future__ import annotations

FAMILIES = ("lrformer", "segformer", "upernet-swin", "lrformer-plus", "mask2former-swin", "mask2former-resnet")
PROTOCOLS = ("ss", "ms")  # single scale | six scales + flip
MODES = ("whole", "slide")
MS_MERGES = ("logits", "softmax")  # mean of the model's outputs as they are | mean of per-view probabilities
LIBRARIES = ("mmseg", "detectron2")  # whose test pipeline a recipe follows (recipe test.library)
MS_MERGE = {
    "mmseg": "softmax",
    "detectron2": "logits",
}  # each library's multi-scale merge (see lrbench.engine.pipeline)
DTYPES = ("fp32", "bf16", "fp16")
DEVICES = ("cpu", "cuda")

# Every registered architecture and its family (lrbench.engine.models checks its CONFIGS against this at import), so that
# an unknown name is answered before torch is imported.
ARCHITECTURES: dict[str, str] = {
    **{f"lrformer-{v}": "lrformer" for v in ("t", "s", "b", "l", "xl")},
    **{f"segformer-b{i}": "segformer" for i in range(6)},
    **{f"segformer-b{i}-mmseg": "segformer" for i in range(6)},
    **{f"upernet-swin-{v}": "upernet-swin" for v in ("t", "s", "b", "b-w7", "l")},
    **{f"lrformer-{v}-plus": "lrformer-plus" for v in ("t", "s", "b", "l", "xl")},
    **{f"mask2former-swin-{v}": "mask2former-swin" for v in ("t", "s", "b", "l")},
    **{f"mask2former-r{d}": "mask2former-resnet" for d in (50, 101)},
}
SIZE_DIVISOR = {"lrformer-plus": 32, "mask2former-swin": 32, "mask2former-resnet": 32}  # input sides (Mask2Former)

# Corruption robustness (Kamann & Rother, CVPR 2020: the Cityscapes-C protocol the SegFormer paper used): 16
# corruptions of the `imagecorruptions` package in four groups; noise at severities 1-3, the others at 1-5.
CORRUPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "blur": ("motion_blur", "defocus_blur", "glass_blur", "gaussian_blur"),
    "noise": ("gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise"),
    "digital": ("brightness", "contrast", "saturate", "jpeg_compression"),
    "weather": ("snow", "spatter", "fog", "frost"),
}
CORRUPTIONS: tuple[str, ...] = tuple(c for group in CORRUPTION_GROUPS.values() for c in group)
SEVERITY_RANGE = (1, 5)  # what the package accepts for every corruption
PROTOCOL_SEVERITIES: dict[str, tuple[int, ...]] = {
    c: (1, 2, 3) if group == "noise" else (1, 2, 3, 4, 5) for group, cs in CORRUPTION_GROUPS.items() for c in cs
}

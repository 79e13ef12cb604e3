"""Fixed vocabularies shared by the command line and the library, importable without torch (the CLI offers them as
choices before anything heavy is imported). The library checks its own tables against these in tests."""

from __future__ import annotations

FAMILIES = ("lrformer", "segformer", "upernet-swin", "lrformer-plus", "mask2former-swin", "mask2former-resnet")
PROTOCOLS = ("ss", "ms")  # single scale | six scales + flip
MODES = ("whole", "slide")
MS_MERGES = ("logits", "softmax")
DTYPES = ("fp32", "bf16", "fp16")
DEVICES = ("cpu", "cuda")

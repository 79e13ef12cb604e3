"""One way from a name to a running model: resolve the name once, get its weights (the zoo's, pulled and verified,
or a local file), build the model, and the recipe's test pipeline -- what ``lrbench eval``, ``lrbench predict`` and
``lrbench.create_model(..., pretrained=True)`` all start from (:func:`load`).

Test pipeline (recipe ``test:``): keep-ratio resize to ``resize`` (mmcv ``imrescale``: factor = min(long/long_side,
short/short_side), sizes rounded half up), then with ``size_divisor`` > 1 each side resized *up* to the next multiple
(LRFormer / SegFormer AlignResize), bilinear, rounded back to uint8 as cv2 does; ImageNet mean/std in RGB. With
``pad_divisor`` (the Mask2Former models: mmseg's data preprocessor, detectron2's size divisibility) the normalised image
is instead zero-padded right/bottom to a multiple and the padding is cropped off the scores before the final resize.
``ms_max_long`` (detectron2) fixes the long-side limit of the multi-scale views instead of scaling it.
Inference: ``whole`` = one forward; ``slide`` = crop windows (mmseg grid: last window flush with the border),
logits resized to each crop, summed and divided by the per-pixel count. Logits are resized bilinearly
(align_corners=False) to the network input, then to the original image, before argmax.
Multi-scale (``protocol="ms"``): test scale times [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], each with a horizontal flip;
logits at the original size are averaged (softmax-free; ``merge="softmax"`` averages probabilities as mmseg 1.x's
SegTTAModel does).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .datasets import DATASETS, DEFAULT_DATASET, get_spec
from .errors import UsageError, ZooError
from .models import create_model
from .models.base import IMAGENET_MEAN, IMAGENET_STD
from .names import MODES, MS_MERGES, PROTOCOLS
from .sources import sha256_file
from .zoo import Resolved, fetch, resolve

MS_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


# ----------------------------------------------------------------------------------------------------------------
# Pipeline and inference
# ----------------------------------------------------------------------------------------------------------------
def rescale_size(
    h: int, w: int, scale: tuple[int, int] | None, ratio: float = 1.0, max_long: float | None = None
) -> tuple[int, int]:
    """mmcv ``rescale_size`` with keep_ratio for the test ``scale`` (long, short) times ``ratio``; None = as is.
    ``max_long`` replaces the scaled long-side limit (detectron2's fixed ``TEST.AUG.MAX_SIZE`` for every scale)."""
    if scale is None:
        return h, w
    long_edge, short_edge = (max_long or max(scale) * ratio), min(scale) * ratio
    f = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def resize_steps(h: int, w: int, test: dict, ratio: float = 1.0) -> list[tuple[int, int]]:
    """The sizes an (h, w) image goes through under a recipe's ``test`` settings: the keep-ratio rescale, then, with
    ``size_divisor`` > 1, AlignResize's second resize of each side up to a multiple (two resizes, as mmseg does)."""
    max_long = test.get("ms_max_long") if ratio != 1.0 else None
    nh, nw = rescale_size(h, w, test.get("resize"), ratio, max_long)
    d = int(test.get("size_divisor") or 1)
    return [(nh, nw), (math.ceil(nh / d) * d, math.ceil(nw / d) * d)]


def input_size(h: int, w: int, test: dict, ratio: float = 1.0) -> tuple[int, int]:
    """Network input size for an (h, w) image under a recipe's ``test`` settings."""
    return resize_steps(h, w, test, ratio)[-1]


def preprocess(images: torch.Tensor, sizes: list[tuple[int, int]]) -> torch.Tensor:
    """uint8 (B, H, W, 3) RGB -> normalised float (B, 3, h, w): bilinear resizes through ``sizes`` (each rounded back
    to uint8, as cv2 returns), then the ImageNet mean/std."""
    x = images.permute(0, 3, 1, 2).float()
    for size in sizes:
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False).round_().clamp_(0, 255)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=x.device)[None, :, None, None]
    return (x - mean) / std


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad a normalised batch on the right and bottom to sides that are multiples of ``divisor`` (mmseg
    ``stack_batch(size_divisor, pad_val=0)`` after normalisation)."""
    H, W = x.shape[-2:]
    return F.pad(x, (0, -W % divisor, 0, -H % divisor)) if divisor > 1 else x


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return (
        x
        if tuple(x.shape[-2:]) == tuple(size)
        else F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    )


def forward_whole(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits at the input size (the head's 1/s logits resized bilinearly)."""
    return _resize(model(x).float(), x.shape[-2:])


def forward_slide(model: nn.Module, x: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """mmseg ``slide_inference``: windows on a grid whose last row/column is flush with the border."""
    (ch, cw), (sh, sw) = crop, stride
    H, W = x.shape[-2:]
    rows = max(H - ch + sh - 1, 0) // sh + 1
    cols = max(W - cw + sw - 1, 0) // sw + 1
    out = count = None
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, H), min(c * sw + cw, W)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            logits = forward_whole(model, x[..., y1:y2, x1:x2])
            if out is None:
                out = x.new_zeros(x.shape[0], logits.shape[1], H, W)
                count = x.new_zeros(1, 1, H, W)
            out[..., y1:y2, x1:x2] += logits
            count[..., y1:y2, x1:x2] += 1
    return out / count


def predict_logits(
    model: nn.Module, images: torch.Tensor, test: dict, protocol: str = "ss", mode: str = "whole", merge: str = "logits"
) -> torch.Tensor:
    """(B, K, H, W) logits at the original image size for uint8 images of one size, (B, H, W, 3) or (H, W, 3)."""
    images = images[None] if images.dim() == 3 else images
    H, W = images.shape[1:3]
    crop = tuple(test.get("crop") or (512, 512))
    stride = tuple(test.get("stride") or (341, 341))
    run = (lambda x: forward_slide(model, x, crop, stride)) if mode == "slide" else (lambda x: forward_whole(model, x))
    views = [(1.0, False)] if protocol == "ss" else [(r, f) for r in MS_RATIOS for f in (False, True)]
    pad = int(test.get("pad_divisor") or 1)
    total = None
    for ratio, flip in views:
        x = preprocess(images, resize_steps(H, W, test, ratio))
        h, w = x.shape[-2:]
        logits = run(pad_to_multiple(x.flip(-1) if flip else x, pad))[..., :h, :w]  # flip, pad, infer, crop
        logits = _resize(logits.flip(-1) if flip else logits, (H, W))
        if merge == "softmax":
            logits = logits.softmax(1)
        total = logits if total is None else total + logits
    return total / len(views)


@dataclass(frozen=True)
class TestConfig:
    """Everything that decides the numbers: the dataset, the recipe's test pipeline and the protocol."""

    dataset: str
    recipe: str | None
    test: dict = field(hash=False)
    protocol: str = "ss"
    mode: str = "whole"
    merge: str = "logits"

    @classmethod
    def build(
        cls, dataset: str, recipe: dict, protocol: str = "ss", mode: str | None = None, merge: str = "logits"
    ) -> TestConfig:
        get_spec(dataset)
        for flag, value, allowed in (
            ("--protocol", protocol, PROTOCOLS),
            ("--ms-merge", merge, MS_MERGES),
            ("--mode", mode or "whole", MODES),
        ):
            if value not in allowed:
                raise UsageError(f"{flag} must be one of {', '.join(allowed)}, got '{value}'")
        test = dict(recipe.get("test") or {})
        return cls(dataset, recipe.get("name"), test, protocol, mode or test.get("mode", "whole"), merge)


@dataclass(frozen=True)
class Weights:
    """Which weights an eval runs: from the zoo (pulled and verified) or a local file, with the original file's
    sha256 (for a zoo pull, the hub file's; the report compares it with the manifest's)."""

    arch: str
    model: str  # the name the user gave
    entry: str | None
    source: str  # "zoo" | "file" | "module"
    path: str | None
    sha256: str | None
    verified: bool = False  # checked against a sha256 known before the download (manifest, hub, file-name prefix)
    origin: str | None = None  # where a zoo file came from, pinned ("hub REPO/FILE@COMMIT", "url URL")


# ----------------------------------------------------------------------------------------------------------------
# Loading: name -> weights -> model -> test pipeline
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Loaded:
    """A model ready to run with its recipe's test pipeline: which weights, what the name resolved to, the test
    configuration. The model is built (and its weights loaded) when first used, so a caller that only needs to know
    which weights a name means (a finished ``--resume``) never builds it."""

    weights: Weights
    cfg: TestConfig
    num_classes: int
    resolved: Resolved | None = None
    _model: nn.Module | None = field(default=None, repr=False)

    @functools.cached_property
    def model(self) -> nn.Module:
        net = self._model
        if net is None:
            net = create_model(self.weights.arch, num_classes=self.num_classes, checkpoint=self.weights.path)
        return net.eval()


def dataset_of(model: nn.Module) -> str:
    """The dataset a model object's class count belongs to (ADE20K when it is ambiguous or unknown)."""
    k = getattr(model, "num_classes", None)
    fits = [name for name, spec in DATASETS.items() if spec.num_classes == k]
    return fits[0] if len(fits) == 1 else DEFAULT_DATASET


def load(
    model: str | nn.Module,
    dataset: str | None = None,
    checkpoint: str | None = None,
    recipe: dict | None = None,
    protocol: str = "ss",
    mode: str | None = None,
    merge: str = "logits",
) -> Loaded:
    """What ``model`` means and the weights it runs: a zoo entry or architecture name (on ``dataset``; the zoo's weights
    are pulled unless ``checkpoint`` names a local file), or a model object (its recipe from its registered name unless
    ``recipe`` is given, its dataset from its class count unless given)."""
    if isinstance(model, nn.Module):
        name = getattr(model, "name", type(model).__name__)
        dataset = dataset or dataset_of(model)
        if recipe is None and getattr(model, "name", None):
            recipe = resolve(model.name, dataset).recipe
        cfg = TestConfig.build(dataset, recipe or {"test": {}}, protocol, mode, merge)
        w = Weights(name, name, None, "module", checkpoint, None)
        return Loaded(w, cfg, get_spec(dataset).num_classes, None, model)
    r = resolve(model, dataset)
    cfg = TestConfig.build(r.dataset, recipe or r.recipe, protocol, mode, merge)
    entry = r.entry.name if r.entry else None
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise UsageError(f"--checkpoint {checkpoint}: file not found")
        w = Weights(r.arch, model, entry, "file", str(checkpoint), sha256_file(checkpoint), origin=f"file {checkpoint}")
        return Loaded(w, cfg, r.num_classes, r)
    if r.entry is None or r.entry.source is None:
        what = model if r.entry and model == r.entry.name else f"{r.arch} on {r.dataset}"
        raise ZooError(
            f"no released weights for {what}: pass --checkpoint FILE (an official .pth, transformers or "
            f"lrbench .safetensors)"
        )
    pulled, net = fetch(r.entry.name)
    w = Weights(r.arch, model, entry, "zoo", pulled["path"], pulled["sha256"], pulled["verified"], pulled["origin"])
    return Loaded(w, cfg, r.num_classes, r, net)

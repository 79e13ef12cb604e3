"""The recipe's test pipeline: image sizes, pre-processing, the forward (whole / slide), the protocol's views, and
the label maps at the original size -- by the reference path (:func:`predict_logits`, every view's K-channel scores
resized to the image and merged) and the fast path (:func:`predict_labels`, :mod:`lrbench.engine.postprocess`).
:class:`TestConfig` holds everything that decides the numbers.

Test pipeline (recipe ``test:``), as the library named by ``test.library`` runs it (the one whose code made the
recipe's published numbers; mmseg when unsaid): keep-ratio resize to ``resize`` (mmseg: mmcv ``rescale_size``,
factor = min(long/long_side, short/short_side), sides rounded half up; detectron2: ``ResizeShortestEdge``), then with
``size_divisor`` > 1 each side resized *up* to the next multiple (LRFormer / SegFormer AlignResize). Each resize is
the library's own on the uint8 image: mmseg ``mmcv.imresize`` = ``cv2.resize(INTER_LINEAR)`` (fixed point),
detectron2 ``ResizeTransform`` = PIL ``BILINEAR`` (antialiased when shrinking); then ImageNet mean/std in RGB. With
``pad_divisor`` (the Mask2Former models: mmseg's data preprocessor, detectron2's size divisibility) the normalised
image is zero-padded right/bottom to a multiple and the padding is cropped off the scores before the final resize.
``ms_max_long`` (detectron2) fixes the long-side limit of the multi-scale views instead of scaling it.
Inference: ``whole`` = one forward; ``slide`` = crop windows (mmseg grid: last window flush with the border),
logits resized to each crop, summed and divided by the per-pixel count. Logits are resized bilinearly
(align_corners=False) to the network input, then to the original image, before argmax.
Multi-scale (``protocol="ms"``): mmseg 0.x's views (``MultiScaleFlipAug``: the test scale times [0.5, 0.75, 1.0,
1.25, 1.5, 1.75], each with a horizontal flip; the published 0.x numbers were made so; mmseg 1.x's ``tta_pipeline``
scales the image itself by those ratios instead), merged at the original size as the library does: mmseg (0.x
``aug_test`` and 1.x ``SegTTAModel``) averages the views' softmax, detectron2's Mask2Former TTA averages the scores as
they are (``merge="softmax"`` / ``"logits"``; ``--ms-merge`` overrides).

Deviation kept: on CUDA the resize runs on the CPU (the library's arithmetic), so images go to the GPU after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ..datasets import get_spec
from ..errors import UsageError
from ..names import MODES, MS_MERGES, PROTOCOLS
from ..recipes import default_merge, library_of
from .models.base import IMAGENET_MEAN, IMAGENET_STD
from .postprocess import View, merged_labels, to_device, view_of
from .timing import Stages

MS_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


# ----------------------------------------------------------------------------------------------------------------
# Pipeline and inference
# ----------------------------------------------------------------------------------------------------------------
def rescale_size(
    h: int,
    w: int,
    scale: tuple[int, int] | None,
    ratio: float = 1.0,
    max_long: float | None = None,
    library: str = "mmseg",
) -> tuple[int, int]:
    """The keep-ratio size for the test ``scale`` (long, short) times ``ratio``; None = as is. mmseg: mmcv
    ``rescale_size`` (one factor min(long/long side, short/short side), sides rounded half up); detectron2:
    ``ResizeShortestEdge.get_output_shape`` (the short side set, then both scaled down to the long-side limit, in that
    order of float operations). ``max_long`` replaces the scaled long-side limit (detectron2's fixed
    ``TEST.AUG.MAX_SIZE`` for every scale)."""
    if scale is None:
        return h, w
    long_edge, short_edge = (max_long or max(scale) * ratio), min(scale) * ratio
    if library == "detectron2":
        s = short_edge / min(h, w)
        nh, nw = (short_edge, s * w) if h < w else (s * h, short_edge)
        if max(nh, nw) > long_edge:
            s = long_edge / max(nh, nw)
            nh, nw = nh * s, nw * s
        return int(nh + 0.5), int(nw + 0.5)
    f = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def resize_steps(h: int, w: int, test: dict, ratio: float = 1.0) -> list[tuple[int, int]]:
    """The sizes an (h, w) image goes through under a recipe's ``test`` settings: the keep-ratio rescale, then, with
    ``size_divisor`` > 1, AlignResize's second resize of each side up to a multiple (two resizes, as mmseg does)."""
    max_long = test.get("ms_max_long") if ratio != 1.0 else None
    nh, nw = rescale_size(h, w, test.get("resize"), ratio, max_long, library_of(test))
    d = int(test.get("size_divisor") or 1)
    return [(nh, nw), (math.ceil(nh / d) * d, math.ceil(nw / d) * d)]


def input_size(h: int, w: int, test: dict, ratio: float = 1.0) -> tuple[int, int]:
    """Network input size for an (h, w) image under a recipe's ``test`` settings."""
    return resize_steps(h, w, test, ratio)[-1]


def resize_image(image: np.ndarray, size: tuple[int, int], library: str = "mmseg") -> np.ndarray:
    """One resize of a uint8 (H, W, 3) image to ``size`` (h, w), bit for bit as the library does it: mmseg
    (``mmcv.imresize``) calls ``cv2.resize(INTER_LINEAR)``, whose 8-bit bilinear works in fixed point; detectron2
    (``ResizeTransform.apply_image``) calls PIL's ``Image.resize(BILINEAR)``, which also antialiases when shrinking."""
    h, w = size
    if library == "detectron2":
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)


def resize_images(images: torch.Tensor, sizes: list[tuple[int, int]], library: str = "mmseg") -> torch.Tensor:
    """uint8 (B, H, W, 3) through the resizes of ``sizes`` (skipping those to the current size), on the CPU in the
    library's own arithmetic; the result goes back to the images' device (on CUDA: one copy each way)."""
    todo = []
    for size in sizes:
        if tuple(size) != (tuple(todo[-1]) if todo else tuple(images.shape[1:3])):
            todo.append(tuple(size))
    if not todo:
        return images
    out = []
    for image in images.cpu().numpy():
        for size in todo:
            image = resize_image(image, size, library)
        out.append(image)
    return torch.from_numpy(np.stack(out)).to(images.device)


def preprocess(images: torch.Tensor, sizes: list[tuple[int, int]], library: str = "mmseg") -> torch.Tensor:
    """uint8 (B, H, W, 3) RGB -> normalised float (B, 3, h, w): the library's resizes through ``sizes``
    (:func:`resize_images`), then the ImageNet mean/std."""
    x = resize_images(images, sizes, library).permute(0, 3, 1, 2).float()
    mean, std = to_device(torch.tensor([IMAGENET_MEAN, IMAGENET_STD])[:, None, :, None, None], x.device)
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


def ms_views(test: dict) -> str:
    """What ``--protocol ms`` runs under a recipe's ``test`` settings, in words (written into each ms eval record)."""
    lib = library_of(test)
    scale = "x".join(map(str, test.get("resize") or [])) or "the image size"
    align = f", each side then resized up to /{test['size_divisor']}" if int(test.get("size_divisor") or 1) > 1 else ""
    limit = f" (long side <= {test['ms_max_long']} off 1.0)" if test.get("ms_max_long") else ""
    merge = "mean of the views' softmax" if default_merge(test) == "softmax" else "mean of the views' scores"
    return (
        f"{lib}: test scale {scale} x {', '.join(map(str, MS_RATIOS))}{limit}{align}, each with a horizontal flip; "
        f"{'mmseg 0.x MultiScaleFlipAug views' if lib == 'mmseg' else 'detectron2 ResizeShortestEdge views'}; "
        f"default merge: {merge}"
    )


def protocol_settings(test: dict, protocol: str) -> tuple[list[tuple[float, bool]], tuple, tuple, int]:
    """(views as (scale ratio, flip), slide crop, slide stride, pad divisor) of a recipe's test settings."""
    views = [(1.0, False)] if protocol == "ss" else [(r, f) for r in MS_RATIOS for f in (False, True)]
    crop = tuple(test.get("crop") or (512, 512))
    stride = tuple(test.get("stride") or (341, 341))
    return views, crop, stride, int(test.get("pad_divisor") or 1)


def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    test: dict,
    protocol: str = "ss",
    mode: str = "whole",
    merge: str | None = None,
) -> torch.Tensor:
    """(B, K, H, W) scores at the original image size for uint8 images of one size, (B, H, W, 3) or (H, W, 3): one
    view's logits, or the mean over the views of their softmax (``merge="softmax"``) or of the outputs as they are
    (``"logits"``); ``merge`` None = the recipe's library's (mmseg: softmax, detectron2: logits)."""
    images = images[None] if images.dim() == 3 else images
    H, W = images.shape[1:3]
    views, crop, stride, pad = protocol_settings(test, protocol)
    merge = (merge or default_merge(test)) if len(views) > 1 else "logits"
    run = (lambda x: forward_slide(model, x, crop, stride)) if mode == "slide" else (lambda x: forward_whole(model, x))
    total = None
    for ratio, flip in views:
        x = preprocess(images, resize_steps(H, W, test, ratio), library_of(test))
        h, w = x.shape[-2:]
        logits = run(pad_to_multiple(x.flip(-1) if flip else x, pad))[..., :h, :w]  # flip, pad, infer, crop
        logits = _resize(logits.flip(-1) if flip else logits, (H, W))
        if merge == "softmax":
            logits = logits.softmax(1)
        total = logits if total is None else total + logits
    return total / len(views)


def protocol_views(
    model: nn.Module,
    images: torch.Tensor,
    test: dict,
    protocol: str = "ss",
    mode: str = "whole",
    stages: Stages | None = None,
) -> list[View]:
    """Run the protocol's views (scales, flips; whole or slide) and return them with their maps to the original
    size, without resizing anything to it."""
    images = images[None] if images.dim() == 3 else images
    H, W = images.shape[1:3]
    views, crop, stride, pad = protocol_settings(test, protocol)
    out, x, done = [], None, None
    for ratio, flip in views:
        if ratio != done:  # a view and its flip share the pre-processing
            x, done = preprocess(images, resize_steps(H, W, test, ratio), library_of(test)), ratio
        h, w = x.shape[-2:]
        xp = pad_to_multiple(x.flip(-1) if flip else x, pad)
        if stages:
            stages.mark("preprocess")
        logits = forward_slide(model, xp, crop, stride) if mode == "slide" else model(xp)
        if stages:
            stages.mark("forward")
        out.append(view_of(logits, tuple(xp.shape[-2:]), (h, w), (H, W), flip))
    return out


def predict_labels(
    model: nn.Module,
    images: torch.Tensor,
    test: dict,
    protocol: str = "ss",
    mode: str = "whole",
    merge: str | None = None,
    stages: Stages | None = None,
) -> torch.Tensor:
    """(B, H, W) predicted class indices at the original size: the fast path of ``predict_logits(...).argmax(1)``."""
    views = protocol_views(model, images, test, protocol, mode, stages)
    labels = merged_labels(views, merge or default_merge(test))
    if stages:
        stages.mark("post-process")
    return labels


@dataclass(frozen=True)
class TestConfig:
    """Everything that decides the numbers: the dataset, the recipe's test pipeline and the protocol."""

    dataset: str
    recipe: str | None
    test: dict = field(hash=False)
    protocol: str = "ss"
    mode: str = "whole"
    merge: str = "softmax"

    @classmethod
    def build(
        cls, dataset: str, recipe: dict, protocol: str = "ss", mode: str | None = None, merge: str | None = None
    ) -> TestConfig:
        """``merge`` None: the recipe's library's (mmseg averages probabilities, detectron2 the scores as they are)."""
        get_spec(dataset)
        test = dict(recipe.get("test") or {})
        merge = merge or default_merge(test)
        for flag, value, allowed in (
            ("--protocol", protocol, PROTOCOLS),
            ("--ms-merge", merge, MS_MERGES),
            ("--mode", mode or "whole", MODES),
        ):
            if value not in allowed:
                raise UsageError(f"{flag} must be one of {', '.join(allowed)}, got '{value}'")
        return cls(dataset, recipe.get("name"), test, protocol, mode or test.get("mode", "whole"), merge)

"""``lrbench predict``: what a model predicts on your images, as label maps and overlays.

A prediction is exactly what ``lrbench eval`` scores: the same recipe (keep-ratio resize, AlignResize, ImageNet
normalisation, whole / slide inference, optional multi-scale + flip) through :func:`lrbench.engine.pipeline.predict_labels`,
then the argmax at the original image size. Per image it writes

- ``NAME.png``: the label map as a palette PNG whose pixel values are the predicted class indices (0..K-1, the order of
  the dataset's class list; the palette is the dataset's, so viewers show the usual colours and tools read the
  indices). Note that ADE20K's annotation files store index + 1 (0 = "other"); Cityscapes / COCO-Stuff
  ``labelTrainIds`` files store the index itself.
- ``NAME_overlay.jpg``: the image blended with the colour mask (``alpha``) and, inside its bottom edge, a legend of
  the classes present (name and colour, largest area first). It has the input image's size.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..datasets import DatasetSpec, get_spec
from ..errors import OutputError, UsageError
from ..fileio import atomic_write_bytes, check_writable
from .devices import autocast, check_device, check_dtype
from .inference import load
from .pipeline import TestConfig, predict_labels

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------
def collect_inputs(inputs: list[str]) -> list[tuple[Path, str]]:
    """(image path, output name) for image files, folders (recursively) and glob patterns. A folder's images are
    named by their path inside it, so equal file names in different sub-folders do not collide."""
    found: list[tuple[Path, str]] = []
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
            found += [(p, p.relative_to(path).with_suffix("").as_posix()) for p in images]
        elif path.is_file():
            found.append((path, path.stem))
        elif glob.has_magic(arg):
            found += [(Path(p), Path(p).stem) for p in sorted(glob.glob(arg, recursive=True)) if Path(p).is_file()]
        else:
            raise UsageError(f"INPUT {arg}: no such file or folder")
    if not found:
        raise UsageError(f"INPUT {' '.join(inputs)}: no images found ({', '.join(IMAGE_EXTS)})")
    names = [name for _, name in found]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        clash = [str(p) for p, n in found if n == dup]
        raise UsageError(
            f"INPUT {clash[0]} and {clash[1]} would both be written as {dup}.png; pass their folder "
            f"instead, or predict them in separate runs"
        )
    return found


def load_image(image: str | Path | Image.Image | np.ndarray) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array from a path, a PIL image or an array, turned the way image viewers show it (the
    EXIF orientation of phone photos applied, as cv2.imread does for mmcv)."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise UsageError(f"image arrays must be H x W x 3 uint8, got {image.dtype} {list(image.shape)}")
        return image
    if isinstance(image, Image.Image):
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    try:
        with Image.open(image) as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        raise UsageError(f"{image}: unreadable image ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------------------------------------------
# The model and its test pipeline
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Predictor:
    """A model with the test pipeline of its recipe: ``predictor(images)`` -> class indices at the images' size."""

    model: nn.Module
    cfg: TestConfig
    spec: DatasetSpec
    device: str = "cpu"
    dtype: str = "fp32"

    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """uint8 images of one size, (B, H, W, 3) or (H, W, 3) -> int64 labels (B, H, W) or (H, W)."""
        x = torch.as_tensor(np.array(images) if isinstance(images, np.ndarray) else images).to(self.device)
        single = x.dim() == 3
        ctx = autocast(self.dtype, self.device)
        with torch.inference_mode(), ctx:
            labels = predict_labels(self.model, x, self.cfg.test, self.cfg.protocol, self.cfg.mode, self.cfg.merge)
        labels = labels.cpu().numpy()
        return labels[0] if single else labels


def load_predictor(
    model: str | nn.Module,
    dataset: str | None = None,
    checkpoint: str | None = None,
    protocol: str = "ss",
    mode: str | None = None,
    device: str = "cpu",
    dtype: str = "fp32",
    recipe: dict | None = None,
) -> Predictor:
    """A zoo entry (its weights are pulled), an architecture with ``checkpoint``, or a model object (recipe from its
    ``name`` when registered, else ``recipe``; dataset from its class count unless given): see
    :func:`lrbench.engine.inference.load`."""
    check_device(device)
    check_dtype(dtype, device)
    loaded = load(model, dataset, checkpoint, recipe, protocol, mode)
    return Predictor(loaded.model.to(device).eval(), loaded.cfg, get_spec(loaded.cfg.dataset), device, dtype)


def predict(
    model: str | nn.Module | Predictor,
    image: str | Path | Image.Image | np.ndarray,
    dataset: str | None = None,
    **kwargs,
) -> np.ndarray:
    """The label map (H, W) of class indices a model predicts for one image (a path, PIL image or H x W x 3 uint8
    array), through the model's test recipe exactly as ``lrbench eval`` scores it.

    ``model`` is a zoo entry (``"lrformer-s_ade20k"``), an architecture with ``checkpoint=FILE``, a model object, or a
    :class:`Predictor` (reuse one for many images). Other keyword arguments go to :func:`load_predictor`.
    """
    predictor = model if isinstance(model, Predictor) else load_predictor(model, dataset, **kwargs)
    return predictor(load_image(image))


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------
def label_image(labels: np.ndarray, spec: DatasetSpec) -> Image.Image:
    """A palette PNG image: pixel values are class indices, the palette the dataset's colours."""
    if labels.max(initial=0) > 255:
        raise UsageError(f"{spec.name} has {spec.num_classes} classes: more than a palette PNG holds")
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    colours = [c for rgb in spec.palette for c in rgb]
    im.putpalette(colours + [0] * (768 - len(colours)))
    return im


def class_areas(labels: np.ndarray, spec: DatasetSpec) -> dict[str, float]:
    """Fraction of pixels per predicted class, largest first."""
    counts = np.bincount(labels.ravel(), minlength=spec.num_classes)
    order = np.argsort(-counts, kind="stable")
    return {spec.classes[i]: float(counts[i]) / labels.size for i in order if counts[i]}


def overlay_image(image: np.ndarray, labels: np.ndarray, spec: DatasetSpec, alpha: float = 0.5) -> Image.Image:
    """The image blended with the colour mask, with a legend of the classes present inside its bottom edge."""
    colours = np.asarray(spec.palette, dtype=np.float32)[labels]
    blended = (image.astype(np.float32) * (1 - alpha) + colours * alpha).round().clip(0, 255).astype(np.uint8)
    out = Image.fromarray(blended)
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    x, y0, row = 2, out.height - 14, 12
    if y0 < 0:
        return out
    draw.rectangle([0, y0 - 2, out.width, out.height], fill=(0, 0, 0))
    for name in class_areas(labels, spec):
        rgb = spec.palette[spec.classes.index(name)]
        width = int(draw.textlength(name, font=font)) + row + 8
        if x + width > out.width:
            break
        draw.rectangle([x, y0, x + row - 2, y0 + row - 2], fill=tuple(rgb))
        draw.text((x + row + 1, y0), name, fill=(255, 255, 255), font=font)
        x += width
    return out


def _save_image(im: Image.Image, path: Path, fmt: str, **kw) -> None:
    atomic_write_bytes(path, lambda tmp: im.save(tmp, format=fmt, **kw))


def predict_files(
    predictor: Predictor,
    inputs: list[str],
    out_dir: str,
    alpha: float = 0.5,
    overwrite: bool = False,
    skip_bad: bool = False,
    batch_size: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict]:
    """Predict every input image and write its label PNG and overlay JPEG under ``out_dir``; returns one record per
    image (paths and class areas) plus one ``{"image", "error"}`` per skipped file. Outputs that exist are refused
    (before any work) unless ``overwrite``."""
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha must be between 0 and 1, got {alpha}")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    items = collect_inputs(inputs)
    out = Path(out_dir)
    targets = [(src, out / f"{name}.png", out / f"{name}_overlay.jpg") for src, name in items]
    existing = [p for _, a, b in targets for p in (a, b) if p.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{existing[0]} already exists ({len(existing)} outputs in all); pass --overwrite to "
            f"replace them, or choose another --out"
        )
    bad = []
    for src, _, _ in targets:  # every image is decoded once up front: a broken one stops the run before any output
        try:
            load_image(src)
        except UsageError as e:
            if not skip_bad:
                raise UsageError(f"{e}; fix or remove it, or pass --skip-bad") from None
            bad.append(src)
    check_writable(out / ".lrbench-probe", "--out")
    records: list[dict] = [{"image": str(src), "error": "unreadable image"} for src in bad]
    targets = [t for t in targets if t[0] not in bad]
    pending: list[tuple[np.ndarray, tuple]] = []

    def flush() -> None:
        labels = predictor(np.stack([img for img, _ in pending]))
        for lab, (img, (src, png, jpg)) in zip(labels, pending):
            png.parent.mkdir(parents=True, exist_ok=True)
            _save_image(label_image(lab, predictor.spec), png, "PNG")
            _save_image(overlay_image(img, lab, predictor.spec, alpha), jpg, "JPEG", quality=90)
            records.append(
                {"image": str(src), "label": str(png), "overlay": str(jpg), "areas": class_areas(lab, predictor.spec)}
            )
        pending.clear()

    for i, target in enumerate(targets):
        image = load_image(target[0])
        if pending and (len(pending) >= batch_size or pending[0][0].shape != image.shape):
            flush()
        pending.append((image, target))
        if progress:
            progress(i, len(targets), target[0].name)
    if pending:
        flush()
    if progress:
        progress(len(targets), len(targets), "")
    return records

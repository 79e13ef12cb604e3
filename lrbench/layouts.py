"""Validation sets in their standard (mmseg) folder layouts: ADE20K, COCO-Stuff-164k and Cityscapes -- finding
the pairs, reading labels, ``lrbench data check`` (reading only; the torch dataset is :mod:`lrbench.engine.loader`).

Each item is the decoded RGB image (uint8, H x W x 3), its label map with the dataset's id convention applied
(ADE20K: ``reduce_zero_label`` -- 0 becomes ignore 255, the rest shift down by one; COCO-Stuff / Cityscapes:
``labelTrainIds`` as stored, 255 = ignore), and its index. Labels are read as the official archives ship them when the
converted ``labelTrainIds`` files are absent: Cityscapes ``*_gtFine_labelIds.png`` and COCO-Stuff's raw
``annotations/val2017/<id>.png`` are mapped on the fly with the lookups of :mod:`lrbench.datasets` (the same ids
mmseg's converters write); converted files win when every image has one, as in mmseg, and a folder that mixes the two
forms is refused naming a file. Problems with a file (unreadable, image/label size
mismatch, label ids outside the class range) are returned as an ``error`` naming the file rather than raised in
a DataLoader worker, so the caller can stop with one clear line or skip it (``--skip-bad``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .datasets import IGNORE_INDEX, DatasetSpec, get_spec
from .errors import DatasetError

__all__ = ["DatasetError", "Layout", "check_dataset", "find_layout", "read_label", "reduce_zero_label", "train_ids"]
CONVERTED = "labelTrainIds"  # the label form mmseg's converters write (and ADE20K's only form)


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg's ADE20K convention: 0 ("other") -> 255 (ignore), every other id minus one, 255 stays 255."""
    out = label.astype(np.int64) - 1
    out[label == 0] = IGNORE_INDEX
    out[label == IGNORE_INDEX] = IGNORE_INDEX
    return out


@dataclass
class Layout:
    """What a dataset folder holds: its root, the image/label pairs found, the label form read, and what does not
    pair up (images without a label, labels without an image)."""

    spec: DatasetSpec
    root: Path
    form: str  # CONVERTED, or spec.raw_form when only the shipped labels are there
    items: list[tuple[Path, Path]] = field(default_factory=list)
    images_without_label: list[tuple[Path, Path]] = field(default_factory=list)  # (image, the label expected)
    labels_without_image: list[Path] = field(default_factory=list)

    @property
    def raw(self) -> bool:
        return self.form != CONVERTED


def find_layout(name: str, data_root: str | Path) -> Layout:
    """Find the dataset's folders under ``data_root``, pair images with labels and decide the label form; raises one
    line naming a folder or file when there is nothing to evaluate or the forms are mixed."""
    spec = get_spec(name)
    root = Path(data_root)
    if not root.is_dir():
        raise DatasetError(f"--data-root {root}: folder not found")
    if (root / spec.folder).is_dir() and not (root / spec.img_dir).is_dir():
        root = root / spec.folder
    img_dir, ann_dir = root / spec.img_dir, root / spec.ann_dir
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise DatasetError(
                f"{d}: folder not found; --data-root must hold the standard {spec.name} layout "
                f"({spec.folder}/{spec.img_dir} and {spec.folder}/{spec.ann_dir})"
            )
    pattern = f"*{spec.img_suffix}"
    images = sorted(img_dir.rglob(pattern) if spec.recursive else img_dir.glob(pattern))
    if not images:
        raise DatasetError(f"{img_dir}: no *{spec.img_suffix} images found")
    labels = set(ann_dir.rglob("*.png") if spec.recursive else ann_dir.glob("*.png"))

    def label(img: Path, suffix: str) -> Path:
        rel = img.relative_to(img_dir)
        return ann_dir / rel.parent / (img.name[: -len(spec.img_suffix)] + suffix)

    converted = [label(i, spec.ann_suffix) for i in images]
    raw = [label(i, spec.raw_ann_suffix) for i in images] if spec.raw_ann_suffix else None
    has_conv = [p in labels for p in converted]
    if all(has_conv) or raw is None or not any(p in labels for p in raw):
        form, chosen = CONVERTED, converted
    elif not any(has_conv):
        form, chosen = spec.raw_form, raw
    else:
        done = next(p for p, ok in zip(converted, has_conv) if ok)
        lacking = next(img for img, ok in zip(images, has_conv) if not ok)
        raise DatasetError(
            f"{ann_dir}: mixes label forms ({done.name} is converted {CONVERTED}, {lacking.name} has only the "
            f"shipped {spec.raw_form}); convert every label or remove the converted ones"
        )
    lay = Layout(spec, root, form)
    for img, ann in zip(images, chosen):
        if ann in labels:
            lay.items.append((img, ann))
        else:
            lay.images_without_label.append((img, ann))
    suffix = spec.ann_suffix if form == CONVERTED else spec.raw_ann_suffix
    expected = set(chosen)
    lay.labels_without_image = sorted(p for p in labels if p.name.endswith(suffix) and p not in expected)
    if form != CONVERTED and spec.ann_suffix.endswith(suffix):  # COCO-Stuff: a raw <id>.png is not <id>_labelTrainIds
        lay.labels_without_image = [p for p in lay.labels_without_image if not p.name.endswith(spec.ann_suffix)]
    return lay


def read_label(path: Path, lay: Layout) -> np.ndarray:
    """A label map in train ids (a raw form mapped through the dataset's lookup); raises ValueError naming what is
    wrong (the ids a raw lookup does not know)."""
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"label map must be a single-channel PNG, got mode {im.mode}")
        ids = np.asarray(im).astype(np.int64)
    if not lay.raw:
        return ids
    valid = (ids >= 0) & (ids <= 255)
    label = np.where(valid, np.asarray(lay.spec.raw_lookup, dtype=np.int64)[ids.clip(0, 255)], -1)
    if (label < 0).any():
        unknown = sorted(np.unique(ids[label < 0]).tolist())
        raise ValueError(
            f"ids {unknown[:5]} are not {lay.spec.raw_form} of {lay.spec.name} (known ids: lrbench.datasets); "
            f"is this the right folder?"
        )
    return label


def train_ids(
    label: np.ndarray, hw: tuple[int, int], img_path: Path, ann_path: Path, spec: DatasetSpec
) -> tuple[np.ndarray, str | None]:
    """(label with the dataset's convention applied, None) or (_, the one line naming what is wrong)."""
    if label.shape != tuple(hw):
        return label, (
            f"{ann_path}: label size {label.shape[1]}x{label.shape[0]} differs from "
            f"image size {hw[1]}x{hw[0]} ({img_path.name})"
        )
    if spec.reduce_zero_label:
        label = reduce_zero_label(label)
    bad = (label >= spec.num_classes) & (label != IGNORE_INDEX) | (label < 0)
    if bad.any():
        values = sorted(set(np.unique(label[bad]).tolist()))[:5]
        raw = [v + 1 for v in values] if spec.reduce_zero_label else values
        return label, (
            f"{ann_path}: label ids {raw} outside the {spec.num_classes} classes of {spec.name} "
            f"(ignore is {IGNORE_INDEX})"
        )
    return label, None


def check_dataset(
    name: str, data_root: str | Path, full: bool = False, progress: Callable[[int, int], None] | None = None
) -> dict:
    """``lrbench data check``: the layout and label form found, image / label counts against the official
    validation size, files that do not pair up, and with ``full`` every label read and its ids checked (image sizes
    from the file headers only)."""
    lay = find_layout(name, data_root)
    spec = lay.spec
    bad = []
    if full:
        for i, (img, ann) in enumerate(lay.items):
            try:
                with Image.open(img) as im:
                    hw = (im.height, im.width)
                label = read_label(ann, lay)
                error = train_ids(label, hw, img, ann, spec)[1]
            except ValueError as e:
                error = f"{ann}: {e}"
            except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
                error = f"{img.name} / {ann.name}: unreadable ({type(e).__name__}: {e})"
            if error:
                bad.append(error)
            if progress:
                progress(i + 1, len(lay.items))
    return {
        "dataset": spec.name,
        "root": str(lay.root),
        "label_form": lay.form,
        "pairs": len(lay.items),
        "images": len(lay.items) + len(lay.images_without_label),
        "labels": len(lay.items) + len(lay.labels_without_image),
        "val_size": spec.val_size,
        "complete": len(lay.items) == spec.val_size and not lay.images_without_label,
        "images_without_label": [str(i) for i, _ in lay.images_without_label],
        "labels_without_image": [str(p) for p in lay.labels_without_image],
        "checked": len(lay.items) if full else 0,
        "bad": bad,
    }

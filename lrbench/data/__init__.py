"""Validation sets in their standard (mmseg) folder layouts: ADE20K, COCO-Stuff-164k and Cityscapes.

Each item is the decoded RGB image (uint8, H x W x 3), its label map with the dataset's id convention applied
(ADE20K: ``reduce_zero_label`` -- 0 becomes ignore 255, the rest shift down by one; COCO-Stuff / Cityscapes:
``labelTrainIds`` as stored, 255 = ignore), and its index. Problems with a file (unreadable, image/label size
mismatch, label ids outside the class range) are returned as an ``error`` naming the file rather than raised in
a DataLoader worker, so the caller can stop with one clear line or skip it (``--skip-bad``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..datasets import IGNORE_INDEX, get_spec
from ..errors import DatasetError

__all__ = ["DatasetError", "SegDataset", "collate_list", "reduce_zero_label"]


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg's ADE20K convention: 0 ("other") -> 255 (ignore), every other id minus one, 255 stays 255."""
    out = label.astype(np.int64) - 1
    out[label == 0] = IGNORE_INDEX
    out[label == IGNORE_INDEX] = IGNORE_INDEX
    return out


class SegDataset(torch.utils.data.Dataset):
    """(image, label) pairs of one validation set, sorted by file name (mmseg's order)."""

    def __init__(self, name: str, data_root: str | Path):
        self.spec = spec = get_spec(name)
        root = Path(data_root)
        if not root.is_dir():
            raise DatasetError(f"--data-root {root}: folder not found")
        if (root / spec.folder).is_dir() and not (root / spec.img_dir).is_dir():
            root = root / spec.folder
        self.root = root
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
        self.items: list[tuple[Path, Path]] = []
        for img in images:
            rel = img.relative_to(img_dir)
            ann = ann_dir / rel.parent / (img.name[: -len(spec.img_suffix)] + spec.ann_suffix)
            if not ann.is_file():
                raise DatasetError(f"{img}: no annotation (expected {ann})")
            self.items.append((img, ann))

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> dict:
        img_path, ann_path = self.items[index]
        try:
            with Image.open(img_path) as im:
                image = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
            return {"index": index, "error": f"{img_path}: unreadable image ({type(e).__name__}: {e})"}
        try:
            with Image.open(ann_path) as im:
                if im.mode not in ("L", "P", "I", "I;16"):
                    return {
                        "index": index,
                        "error": f"{ann_path}: label map must be a single-channel PNG, got mode {im.mode}",
                    }
                label = np.asarray(im).astype(np.int64)
        except Exception as e:  # noqa: BLE001
            return {"index": index, "error": f"{ann_path}: unreadable label map ({type(e).__name__}: {e})"}
        if label.shape != image.shape[:2]:
            return {
                "index": index,
                "error": f"{ann_path}: label size {label.shape[1]}x{label.shape[0]} differs from "
                f"image size {image.shape[1]}x{image.shape[0]} ({img_path.name})",
            }
        if self.spec.reduce_zero_label:
            label = reduce_zero_label(label)
        bad = (label >= self.spec.num_classes) & (label != IGNORE_INDEX) | (label < 0)
        if bad.any():
            values = sorted(set(np.unique(label[bad]).tolist()))[:5]
            raw = [v + 1 for v in values] if self.spec.reduce_zero_label else values
            return {
                "index": index,
                "error": f"{ann_path}: label ids {raw} outside the {self.spec.num_classes} "
                f"classes of {self.spec.name} (ignore is {IGNORE_INDEX})",
            }
        return {
            "index": index,
            "image": torch.from_numpy(image.copy()),
            "label": torch.from_numpy(label),
            "path": str(img_path),
        }

    __getitem__ = load


def collate_list(batch: list[dict]) -> list[dict]:
    """Images differ in size: keep the batch as a list; the evaluator runs equal shapes through the model together."""
    return batch

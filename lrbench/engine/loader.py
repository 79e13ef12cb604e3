"""The validation set as a torch dataset over :mod:`lrbench.layouts`: decoded RGB images and label maps with the
dataset's id convention applied (optionally corrupted, :mod:`lrbench.engine.corruptions`); a bad file is returned as
an ``error`` naming it (never raised in a worker)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DatasetError
from ..layouts import find_layout, read_label, train_ids
from .corruptions import corrupt_image

__all__ = ["DatasetError", "SegDataset", "collate_list"]


class SegDataset(torch.utils.data.Dataset):
    """(image, label) pairs of one validation set, sorted by file name (mmseg's order)."""

    def __init__(self, name: str, data_root: str | Path, corruption: tuple[str, int] | None = None):
        lay = find_layout(name, data_root)
        if lay.images_without_label:
            img, expected = lay.images_without_label[0]
            raise DatasetError(f"{img}: no annotation (expected {expected})")
        self.layout, self.spec, self.root, self.items = lay, lay.spec, lay.root, lay.items
        self.corruption = corruption  # (name, severity): images corrupted as they are decoded, seeded per image

    def key(self, index: int) -> str:
        """An image's path inside the dataset root: what its corruption seed is made from."""
        return self.items[index][0].relative_to(self.root).as_posix()

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
            label = read_label(ann_path, self.layout)
        except ValueError as e:
            return {"index": index, "error": f"{ann_path}: {e}"}
        except Exception as e:  # noqa: BLE001
            return {"index": index, "error": f"{ann_path}: unreadable label map ({type(e).__name__}: {e})"}
        label, error = train_ids(label, image.shape[:2], img_path, ann_path, self.spec)
        if error:
            return {"index": index, "error": error}
        if self.corruption is not None:
            name, severity = self.corruption
            image = corrupt_image(image, name, severity, self.key(index))
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

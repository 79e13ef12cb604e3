"""Small synthetic validation sets written in the real ADE20K / COCO-Stuff / Cityscapes folder layouts.

The image's red channel holds the stored label id, so an "oracle" model can read the ground truth back from the
image alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

LAYOUT = {  # dataset -> (top folder, image path, label path) for item i
    "ade20k": (
        "ADEChallengeData2016",
        "images/validation/ADE_val_{i:08d}.jpg",
        "annotations/validation/ADE_val_{i:08d}.png",
    ),
    "coco-stuff": ("coco_stuff164k", "images/val2017/{i:012d}.jpg", "annotations/val2017/{i:012d}_labelTrainIds.png"),
    "cityscapes": (
        "cityscapes",
        "leftImg8bit/val/{city}/{city}_000000_{i:06d}_leftImg8bit.png",
        "gtFine/val/{city}/{city}_000000_{i:06d}_gtFine_labelTrainIds.png",
    ),
}
NUM_CLASSES = {"ade20k": 150, "coco-stuff": 171, "cityscapes": 19}


def raw_labels(dataset: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Blocky random label maps in the dataset's stored id convention, with some ignore pixels."""
    k = NUM_CLASSES[dataset]
    lo, hi = (0, k + 1) if dataset == "ade20k" else (0, k)  # ADE: 0 = other (ignored), 1..150
    blocks = rng.integers(lo, hi, size=(-(-h // 8), -(-w // 8)))
    lab = np.kron(blocks, np.ones((8, 8), dtype=np.int64))[:h, :w]
    if dataset != "ade20k":
        lab[rng.random((h, w)) < 0.05] = 255
    return lab.astype(np.uint8)


def write_dataset(
    root: Path, dataset: str, n: int = 4, sizes=((64, 96), (96, 64)), seed: int = 0, lossless: bool = True
) -> Path:
    """Write ``n`` image/label pairs; returns the dataset's top folder. JPEG layouts are written as PNG data under
    the .jpg name when ``lossless`` (PIL reads by content), so the red-channel encoding survives."""
    rng = np.random.default_rng(seed)
    top, img_t, ann_t = LAYOUT[dataset]
    base = Path(root) / top
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        lab = raw_labels(dataset, h, w, rng)
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        img[..., 0] = lab
        city = ("frankfurt", "lindau", "munster")[i % 3]
        ip, ap = base / img_t.format(i=i, city=city), base / ann_t.format(i=i, city=city)
        ip.parent.mkdir(parents=True, exist_ok=True)
        ap.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(ip, format="PNG" if lossless or ip.suffix == ".png" else "JPEG")
        Image.fromarray(lab, mode="L").save(ap)
    return base


class Oracle(nn.Module):
    """Reads the stored label id from the red channel and returns it as one-hot logits (output stride 1)."""

    def __init__(self, dataset):
        super().__init__()
        self.k, self.offset = NUM_CLASSES[dataset], 1 if dataset == "ade20k" else 0

    def forward(self, x):
        raw = (x[:, 0] * 58.395 + 123.675).round().long()
        cls = (raw - self.offset).clamp(0, self.k - 1)
        return F.one_hot(cls, self.k).permute(0, 3, 1, 2).float()


def write_eval_result(folder: Path, name: str, inter: np.ndarray, union: np.ndarray) -> Path:
    """An lrbench eval result file over images img0..imgN and its per-image counts (pred = label = union areas)."""
    import json

    names = np.array([f"img{i}.jpg" for i in range(len(inter))])
    np.savez(
        folder / f"{name}.per_image.npz", names=names, intersect=inter, union=union, pred_area=union, label_area=union
    )
    rec = {
        "kind": "eval",
        "model": name,
        "dataset": "ade20k",
        "protocol": "ss",
        "num_images": len(inter),
        "mIoU": 50.0,
        "per_image_file": f"{name}.per_image.npz",
    }
    (folder / f"{name}.json").write_text(json.dumps(rec))
    return folder / f"{name}.json"

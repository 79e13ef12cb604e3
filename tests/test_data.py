"""Datasets as they are downloaded: Cityscapes gtFine_labelIds and COCO-Stuff raw stuffthingmaps read on the fly give
exactly the mIoU of the converted labelTrainIds; `lrbench data check` on good, incomplete and mixed folders."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from typer.testing import CliRunner

from lrbench.cli import app
from lrbench.engine.evaluate import evaluate
from lrbench.engine.loader import SegDataset
from lrbench.errors import DatasetError
from lrbench.layouts import check_dataset
from lrbench.settings import EvalSettings

# The conversions, written here from ../shared/real-world-facts.md section 3 (not from lrbench.datasets).
CITY_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13}
CITY_TRAIN |= {27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
COCO_UNUSED = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}
COCO_TRAIN = {raw: train for train, raw in enumerate(i for i in range(182) if i not in COCO_UNUSED)}
IDENTITY = {"name": "identity", "test": {"resize": None, "size_divisor": 1, "mode": "whole"}}
CASES = {
    "cityscapes": (
        "cityscapes",
        "leftImg8bit/val/{city}/{city}_000000_{i:06d}_leftImg8bit.png",
        "gtFine/val/{city}/{city}_000000_{i:06d}_gtFine_labelIds.png",
        "gtFine/val/{city}/{city}_000000_{i:06d}_gtFine_labelTrainIds.png",
        list(range(34)),  # every labelId, void ones (0-6, 9, 10, 14-16, 18, 29, 30) included
        lambda v: CITY_TRAIN.get(v, 255),
    ),
    "coco-stuff": (
        "coco_stuff164k",
        "images/val2017/{i:012d}.jpg",
        "annotations/val2017/{i:012d}.png",
        "annotations/val2017/{i:012d}_labelTrainIds.png",
        list(range(182)) + [255],  # unused thing ids and 255 (unlabeled) included
        lambda v: COCO_TRAIN.get(v, 255),
    ),
}


class PixelLinear(nn.Module):
    """Context-free 1x1 conv with K outputs: imperfect predictions, so every confusion count matters."""

    def __init__(self, k: int):
        super().__init__()
        self.conv = nn.Conv2d(3, k, 1)
        g = torch.Generator().manual_seed(4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(k, 3, 1, 1, generator=g))
            self.conv.bias.copy_(torch.randn(k, generator=g) * 0.5)
        self.num_classes = k

    def forward(self, x):
        return self.conv(x)


def write(root, dataset: str, forms=("raw",), n: int = 4, seed: int = 0, raw_ids=None):
    """Images with raw label maps (blocks of random raw ids) and/or their converted train-id maps."""
    top, img_t, raw_t, conv_t, ids, to_train = CASES[dataset]
    rng = np.random.default_rng(seed)
    for i in range(n):
        city = ("frankfurt", "lindau", "munster")[i % 3]
        raw = np.kron(rng.choice(raw_ids or ids, size=(8, 10)), np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
        img = rng.integers(0, 256, size=(*raw.shape, 3), dtype=np.uint8)
        paths = {"img": img_t, "raw": raw_t, "converted": conv_t}
        paths = {k: root / top / v.format(i=i, city=city) for k, v in paths.items()}
        for p in paths.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(paths["img"], format="PNG")
        if "raw" in forms:
            Image.fromarray(raw, mode="L").save(paths["raw"])
        if "converted" in forms:
            Image.fromarray(np.vectorize(to_train)(raw).astype(np.uint8), mode="L").save(paths["converted"])
    return root / top


@pytest.mark.parametrize("dataset", ["cityscapes", "coco-stuff"])
def test_raw_labels_give_the_converted_mIoU(tmp_path, dataset):
    write(tmp_path / "raw", dataset, forms=("raw",))
    write(tmp_path / "conv", dataset, forms=("converted",))
    write(tmp_path / "both", dataset, forms=("raw", "converted"))
    k = {"cityscapes": 19, "coco-stuff": 171}[dataset]
    res = {}
    for form in ("raw", "conv", "both"):
        res[form] = evaluate(EvalSettings(PixelLinear(k), tmp_path / form, dataset, recipe=IDENTITY, workers=0))
    assert res["raw"]["areas"] == res["conv"]["areas"] and res["raw"]["mIoU"] == res["conv"]["mIoU"]
    assert sum(res["conv"]["areas"]["label"]) > 0 and res["raw"]["label_form"] != "labelTrainIds"
    assert res["both"]["label_form"] == res["conv"]["label_form"] == "labelTrainIds"  # converted files win
    assert res["both"]["areas"] == res["conv"]["areas"]


def test_mixed_forms_and_unknown_ids_name_a_file(tmp_path):
    write(tmp_path / "mixed", "cityscapes", forms=("raw",), n=3)
    write(tmp_path / "mixed", "cityscapes", forms=("converted",), n=1)  # item 0 converted, items 1-2 raw only
    with pytest.raises(DatasetError, match=r"gtFine/val: mixes label forms \(frankfurt_000000_000000_gtFine_labelT"):
        SegDataset("cityscapes", tmp_path / "mixed")
    write(tmp_path / "odd", "cityscapes", forms=("raw",), n=2, raw_ids=[7, 40])  # 40 is no Cityscapes labelId
    with pytest.raises(DatasetError, match=r"_gtFine_labelIds.png: ids \[40\] are not gtFine_labelIds of cityscapes"):
        evaluate(EvalSettings(PixelLinear(19), tmp_path / "odd", "cityscapes", recipe=IDENTITY, workers=0))


def test_data_check_good_incomplete_and_mixed(tmp_path):
    root = write(tmp_path / "good", "coco-stuff", forms=("raw",), n=3)
    r = CliRunner().invoke(app, ["data", "check", "coco-stuff", "--data-root", str(tmp_path / "good"), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert (res["label_form"], res["pairs"], res["val_size"], res["complete"]) == (
        "raw stuffthingmaps ids",
        3,
        5000,
        False,
    )
    assert res["images_without_label"] == res["labels_without_image"] == [] and res["checked"] == 0
    r = CliRunner().invoke(app, ["data", "check", "coco-stuff", "--data-root", str(tmp_path / "good"), "--full"])
    assert r.exit_code == 0 and "checked 3 labels: 0 bad" in r.stdout
    # incomplete: an image without its label, a label without its image, a label with an unknown id
    (root / "annotations/val2017/000000000001.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(root / "annotations/val2017/000000000099.png")
    Image.fromarray(np.full((64, 80), 200, np.uint8), mode="L").save(root / "annotations/val2017/000000000002.png")
    res = check_dataset("coco-stuff", tmp_path / "good", full=True)
    assert res["images_without_label"] == [str(root / "images/val2017/000000000001.jpg")]
    assert res["labels_without_image"] == [str(root / "annotations/val2017/000000000099.png")]
    assert len(res["bad"]) == 1 and "000000000002.png: ids [200] are not raw stuffthingmaps ids" in res["bad"][0]
    r = CliRunner().invoke(app, ["data", "check", "coco-stuff", "--data-root", str(tmp_path / "good")])
    assert r.exit_code == 1 and "images without label: " in r.stdout
    # mixed forms: one line naming a file, exit 2
    write(tmp_path / "good", "coco-stuff", forms=("converted",), n=1)
    r = CliRunner().invoke(app, ["data", "check", "coco-stuff", "--data-root", str(tmp_path / "good")])
    assert r.exit_code == 2 and "mixes label forms (000000000000_labelTrainIds.png is converted" in r.stderr
    r = CliRunner().invoke(app, ["data", "check", "ade20k", "--data-root", str(tmp_path / "good")])
    assert r.exit_code == 2 and "folder not found; --data-root must hold the standard ade20k layout" in r.stderr

"""The Cityscapes authors' own code (cityscapesscripts 2.3.0) as the oracle of lrbench's Cityscapes labels and metric.

lrbench reads ``*_gtFine_labelIds.png`` as shipped and maps them to the 19 train ids; its mIoU and per-class IoU must
equal ``evalPixelLevelSemanticLabeling`` on the same predictions written back as label ids. (The script's pixel
accuracy and nIoU call ``np.in1d``, gone in numpy 2, and need instance files: both are turned off.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from cityscapesscripts.helpers import labels as cs_labels
from PIL import Image

from lrbench.datasets import CITYSCAPES_LOOKUP, get_spec
from lrbench.engine.evaluate import evaluate
from lrbench.settings import EvalSettings

pytestmark = pytest.mark.peer

IDENTITY = {"name": "identity", "test": {"resize": None, "size_divisor": 1, "mode": "whole"}}


def test_label_lookup_equals_cityscapesscripts():
    for i in range(256):
        label = cs_labels.id2label.get(i)
        want = 255 if label is None or label.trainId in (255, -1) or label.ignoreInEval else label.trainId
        if label is None and i > 33:
            continue  # no such id: lrbench refuses the file (-1), cityscapesscripts has no label for it
        assert CITYSCAPES_LOOKUP[i] == want, i
    assert [cs_labels.trainId2label[k].name for k in range(19)] == list(get_spec("cityscapes").classes)


class Guess(nn.Module):
    """A fixed, imperfect segmenter: the class hidden in the red channel, except where the green channel is high
    (then a class derived from it), as one-hot scores at the input size."""

    def forward(self, x):
        rgb = (
            (
                x * torch.tensor([58.395, 57.12, 57.375])[:, None, None]
                + torch.tensor([123.675, 116.28, 103.53])[:, None, None]
            )
            .round()
            .long()
        )
        cls = rgb[:, 0].clamp(0, 18)
        cls = torch.where(rgb[:, 1] > 200, rgb[:, 1] % 19, cls)
        return F.one_hot(cls, 19).permute(0, 3, 1, 2).float()


def test_miou_equals_cityscapesscripts(tmp_path):
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval

    rng = np.random.default_rng(0)
    ids = np.array(sorted(cs_labels.id2label))  # every label id, ignored ones (0-6, 9, 10, 14-16, 18, 29, 30, -1) too
    ids = ids[(ids >= 0) & (ids <= 33)]
    to_train = {lab.id: lab.trainId for lab in cs_labels.labels if lab.id >= 0}
    root = tmp_path / "cityscapes"
    gts, preds = [], []
    for i, city in enumerate(("frankfurt", "lindau", "munster")):
        h, w = 64, 96
        lab_ids = np.kron(rng.choice(ids, size=(h // 8, w // 8)), np.ones((8, 8), dtype=np.int64)).astype(np.uint8)
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        train = np.vectorize(lambda v: to_train.get(int(v), 255))(lab_ids)
        img[..., 0] = np.where(train == 255, rng.integers(0, 19, size=(h, w)), train)
        stem = f"{city}_000000_{i:06d}"
        ip = root / "leftImg8bit/val" / city / f"{stem}_leftImg8bit.png"
        gp = root / "gtFine/val" / city / f"{stem}_gtFine_labelIds.png"
        ip.parent.mkdir(parents=True, exist_ok=True)
        gp.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(ip)
        Image.fromarray(lab_ids).save(gp)
        gts.append(str(gp))
        # the prediction, as lrbench's pipeline makes it (identity recipe: the model's one-hot argmax), in label ids
        with torch.no_grad():
            x = (
                torch.from_numpy(img).permute(2, 0, 1).float() - torch.tensor([123.675, 116.28, 103.53])[:, None, None]
            ) / torch.tensor([58.395, 57.12, 57.375])[:, None, None]
            pred_train = Guess()(x[None])[0].argmax(0).numpy()
        pred_ids = np.vectorize(lambda t: cs_labels.trainId2label[int(t)].id)(pred_train).astype(np.uint8)
        pp = tmp_path / "pred" / f"{stem}_pred.png"
        pp.parent.mkdir(exist_ok=True)
        Image.fromarray(pred_ids).save(pp)
        preds.append(str(pp))
    res = evaluate(EvalSettings(Guess(), str(tmp_path), "cityscapes", recipe=IDENTITY, workers=0))
    assert res["label_form"] == "gtFine_labelIds"

    args = cs_eval.args
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    official = cs_eval.evaluateImgLists(preds, gts, args)
    ours = {r["class"]: r["IoU"] for r in res["per_class"]}
    scored = {n: v for n, v in official["classScores"].items() if not cs_labels.name2label[n].ignoreInEval}
    assert sorted(scored) == sorted(ours)
    for name, iou in scored.items():
        if np.isnan(iou):
            assert ours[name] is None, name  # absent from prediction and ground truth: NaN, left out of the mean
        else:
            assert abs(ours[name] - 100 * iou) < 1e-9, name
    assert abs(res["mIoU"] - 100 * official["averageScoreClasses"]) < 1e-9

"""mmseg's own test pipeline, TTA and IoUMetric against ``lrbench eval`` on the same checkpoint and images.

A small ADE20K-layout set of real JPEGs at awkward sizes (one upscaled, one downscaled by the test scale) is scored by
mmsegmentation 1.2.2 -- its dataset class, ``LoadImageFromFile`` / ``Resize`` / ``PackSegInputs``, data preprocessor,
``EncoderDecoder.predict`` (or ``SegTTAModel`` over mmseg 0.x's multi-scale views: the test scale times each ratio,
with flips) and ``IoUMetric`` -- and by lrbench's eval. The label maps must be identical except where the top-two
scores tie within float rounding, and mIoU / aAcc agree within 0.01 (mmseg rounds its summary to 2 decimals).
"""

from __future__ import annotations

import shutil

import numpy as np
import peers
import pytest
import torch
from PIL import Image
from test_peers_mmseg import MMSEG, built, config

from lrbench.engine.evaluate import evaluate
from lrbench.engine.models import create_model
from lrbench.engine.pipeline import MS_RATIOS, predict_labels, predict_logits
from lrbench.settings import EvalSettings
from lrbench.zoo import resolve

pytestmark = pytest.mark.peer

SIZES = [(150, 226), (600, 944)]  # h, w: upscaled to 512 x 771, downscaled to 512 x 805


def _write_images(root, sizes, seed=0):
    """Smooth JPEG photos-to-be (bicubic upscales of random colour grids) in ADE20K's layout."""
    rng = np.random.default_rng(seed)
    base = root / "ADEChallengeData2016"
    (base / "images/validation").mkdir(parents=True)
    (base / "annotations/validation").mkdir(parents=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        small = rng.integers(0, 256, size=(h // 24 + 2, w // 24 + 2, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        p = base / f"images/validation/ADE_val_{i:08d}.jpg"
        img.save(p, quality=90)
        paths.append(p)
    return base, paths


def _labels_from(base, paths, preds, seed=1):
    """Ground truth: a prediction (so that mIoU is far from 0 and every differing pixel moves it), with blocks
    relabelled at random and some 'other' (0, ignored) pixels; ADE20K's stored ids (class + 1)."""
    rng = np.random.default_rng(seed)
    for p, pred in zip(paths, preds):
        lab = pred.astype(np.int64) + 1
        h, w = lab.shape
        for _ in range(6):
            y, x = rng.integers(0, h - 16), rng.integers(0, w - 16)
            lab[y : y + 16, x : x + 16] = rng.integers(0, 151)
        Image.fromarray(lab.astype(np.uint8)).save(base / "annotations/validation" / (p.stem + ".png"))


def _mmseg_run(cfg, model, data_root, tta_scale=None):
    """mmseg's dataset, pipeline, (TTA) model and IoUMetric over the set: (metrics, label maps, score maps)."""
    from mmengine.dataset import pseudo_collate
    from mmengine.evaluator import Evaluator
    from mmseg.models import SegTTAModel
    from mmseg.registry import DATASETS

    dcfg = cfg.test_dataloader.dataset.copy()
    dcfg["data_root"] = str(data_root)
    net = model
    if tta_scale is not None:  # mmseg 0.x MultiScaleFlipAug(img_scale, img_ratios): scales int(scale x ratio)
        resizes = [
            dict(type="Resize", scale=(int(tta_scale[0] * r), int(tta_scale[1] * r)), keep_ratio=True)
            for r in MS_RATIOS
        ]
        flips = [dict(type="RandomFlip", prob=p, direction="horizontal") for p in (0.0, 1.0)]
        dcfg["pipeline"] = [
            dict(type="LoadImageFromFile"),
            dict(
                type="TestTimeAug",
                transforms=[resizes, flips, [dict(type="LoadAnnotations")], [dict(type="PackSegInputs")]],
            ),
        ]
        net = SegTTAModel(module=model)
    ds = DATASETS.build(dcfg)
    ev = Evaluator(cfg.test_evaluator)
    ev.dataset_meta = ds.metainfo
    labels, scores = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            batch = pseudo_collate([ds[i]])
            out = net.test_step(batch)
            labels.append(out[0].pred_sem_seg.data[0].numpy())
            scores.append(out[0].seg_logits.data.numpy() if "seg_logits" in out[0] else None)
            ev.process(data_samples=out, data_batch=batch)
    return ev.evaluate(len(ds)), labels, scores


def _near_ties(a: np.ndarray, b: np.ndarray, scores: np.ndarray | None, tol: float = 1e-4) -> bool:
    """Every pixel where the label maps differ is a near-tie of the top two scores (``scores``: K x H x W)."""
    diff = a != b
    if not diff.any():
        return True
    if scores is None:
        return False
    s = np.sort(scores[:, diff], axis=0)
    return bool(((s[-1] - s[-2]) <= tol * (scores.max() - scores.min())).all())


@pytest.fixture(scope="module")
def segformer_b0(tmp_path_factory):
    """mmseg's SegFormer-B0 (ADE20K config, seeded weights) saved as a release checkpoint, and a set labelled from
    lrbench's own reading of it."""
    entry = MMSEG["segformer-b0-mmseg_ade20k"]
    cfg = config(entry)
    mm, state = built(str(peers.config_of_url()[entry.source.url]))
    tmp = tmp_path_factory.mktemp("peer-pipeline")
    ckpt = tmp / "segformer_b0.pth"
    torch.save({"meta": {"mmseg_version": "1.2.2"}, "state_dict": state}, ckpt)
    base, paths = _write_images(tmp / "data", SIZES)
    net = create_model(entry.arch, checkpoint=str(ckpt))
    test = resolve(entry.name).recipe["test"]
    with torch.no_grad():
        preds = [
            predict_labels(net, torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()), test)[0].numpy()
            for p in paths
        ]
    _labels_from(base, paths, preds)
    # the small image alone, for multi-scale: at a test scale of 128 its views are shrunk (0.5, 0.75, 1.0) and
    # enlarged (1.25-1.75), at a fraction of the big image's cost
    small = tmp / "small" / "ADEChallengeData2016"
    for sub_dir, name in (("images/validation", paths[0].name), ("annotations/validation", paths[0].stem + ".png")):
        (small / sub_dir).mkdir(parents=True)
        shutil.copy(base / sub_dir / name, small / sub_dir / name)
    return {
        "small": small,
        "entry": entry,
        "cfg": cfg,
        "mm": mm,
        "ckpt": ckpt,
        "base": base,
        "root": tmp / "data",
        "paths": paths,
        "tmp": tmp,
    }


def _lrbench_eval(s, protocol, recipe=None, root=None):
    return evaluate(
        EvalSettings(
            s["entry"].name,
            str(root or s["root"]),
            checkpoint=str(s["ckpt"]),
            protocol=protocol,
            recipe=recipe,
            workers=0,
            out=str(s["tmp"] / f"{protocol}.json"),
            overwrite=True,
        )
    )


def _lrbench_labels(s, protocol, test, paths):
    net = create_model(s["entry"].arch, checkpoint=str(s["ckpt"]))
    out = []
    with torch.no_grad():
        for p in paths:
            img = torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy())
            out.append(predict_logits(net, img, test, protocol, merge="softmax")[0].argmax(0).numpy())
    return out


def test_single_scale_equals_mmseg(segformer_b0):
    s = segformer_b0
    mm_metrics, mm_labels, mm_scores = _mmseg_run(s["cfg"], s["mm"], s["base"])
    ours = _lrbench_labels(s, "ss", resolve(s["entry"].name).recipe["test"], s["paths"])
    for a, b, sc in zip(ours, mm_labels, mm_scores):
        assert a.shape == b.shape and _near_ties(a, b, sc), f"{(a != b).sum()} of {a.size} pixels differ"
    res = _lrbench_eval(s, "ss")
    assert 20 < mm_metrics["mIoU"] < 100  # a set where every differing pixel would show
    assert abs(res["mIoU"] - mm_metrics["mIoU"]) <= 0.01 + 0.005  # mmseg prints 2 decimals
    assert abs(res["aAcc"] - mm_metrics["aAcc"]) <= 0.01 + 0.005
    assert res["test"]["library"] == "mmseg"


def test_multi_scale_flip_equals_mmseg_tta(segformer_b0):
    """0.x-style views (the test scale times each ratio, as lrbench's ms and the published 0.x numbers), merged by
    mmseg 1.x's SegTTAModel: the mean of the views' softmax. A smaller test scale keeps it quick on a CPU."""
    s = segformer_b0
    scale = (512, 128)
    recipe = dict(resolve(s["entry"].name).recipe)
    recipe["test"] = {**recipe["test"], "resize": list(scale)}
    mm_metrics, mm_labels, _ = _mmseg_run(s["cfg"], s["mm"], s["small"], tta_scale=scale)
    ours = _lrbench_labels(s, "ms", recipe["test"], s["paths"][:1])
    net = create_model(s["entry"].arch, checkpoint=str(s["ckpt"]))
    for p, a, b in zip(s["paths"][:1], ours, mm_labels):
        if (a != b).any():  # only near-ties of the merged probabilities may differ
            img = torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy())
            with torch.no_grad():
                sc = predict_logits(net, img, recipe["test"], "ms", merge="softmax")[0].numpy()
            assert _near_ties(a, b, sc), f"{(a != b).sum()} of {a.size} pixels differ"
    res = _lrbench_eval(s, "ms", recipe, root=s["small"].parent)
    assert res["merge"] == "softmax"  # the recipe's library's merge, without --ms-merge
    assert res["ms_views"].startswith("mmseg: test scale 512x128 x 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, each with a")
    assert abs(res["mIoU"] - mm_metrics["mIoU"]) <= 0.01 + 0.005
    assert abs(res["aAcc"] - mm_metrics["aAcc"]) <= 0.01 + 0.005


def test_the_old_logits_merge_differs_from_mmseg(segformer_b0):
    """The check above can fail: averaging logits (lrbench's earlier default) is not mmseg's merge."""
    s = segformer_b0
    test = {**resolve(s["entry"].name).recipe["test"], "resize": [512, 128]}
    net = create_model(s["entry"].arch, checkpoint=str(s["ckpt"]))
    img = torch.from_numpy(np.asarray(Image.open(s["paths"][0]).convert("RGB")).copy())
    with torch.no_grad():
        a = predict_logits(net, img, test, "ms", merge="softmax")[0].argmax(0)
        b = predict_logits(net, img, test, "ms", merge="logits")[0].argmax(0)
    assert int((a != b).sum()) > 0


class _AsBackbone(torch.nn.Module):
    """An lrbench model inside mmseg's EncoderDecoder: it hands the decode head its logits (the head passes them on)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def _align_resize():
    """The LRFormer fork's AlignResize (lrformer-facts.md section 5): mmseg's keep-ratio ``Resize``, then each side
    resized up to the next multiple of ``size_divisor`` with ``mmcv.imresize`` (a transcription of the fork, built on
    mmcv's own functions)."""
    import mmcv
    from mmcv.transforms import BaseTransform
    from mmseg.registry import TRANSFORMS

    @TRANSFORMS.register_module(name="AlignResizeForTest", force=True)
    class AlignResize(BaseTransform):
        def __init__(self, size_divisor=32):
            self.d = size_divisor

        def transform(self, results):
            h, w = results["img"].shape[:2]
            H, W = -(-h // self.d) * self.d, -(-w // self.d) * self.d
            results["img"] = mmcv.imresize(results["img"], (W, H))
            results["img_shape"] = (H, W)
            return results

    return "AlignResizeForTest"


def test_lrformer_pipeline_equals_mmseg(segformer_b0, randomize):
    """LRFormer's own protocol (Resize to (2048, 512), AlignResize to /32, logits to the aligned size then to the
    original) run by mmseg's dataset, pipeline, EncoderDecoder post-processing and IoUMetric around lrbench's
    LRFormer-T, against `lrbench eval lrformer-t_ade20k`."""
    s = segformer_b0
    net = randomize(create_model("lrformer-t"), seed=4).eval()
    ckpt = s["tmp"] / "lrformer_t.pth"
    torch.save({"state_dict": net.state_dict()}, ckpt)
    cfg = s["cfg"].copy()
    cfg.test_dataloader.dataset.pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="Resize", scale=(2048, 512), keep_ratio=True),
        dict(type=_align_resize(), size_divisor=32),
        dict(type="LoadAnnotations", reduce_zero_label=True),
        dict(type="PackSegInputs"),
    ]
    mm = peers.build_model(cfg)
    mm.backbone = _AsBackbone(net)
    mm.decode_head.forward = lambda x: x  # the logits, which mmseg resizes to img_shape, then to ori_shape
    mm_metrics, mm_labels, mm_scores = _mmseg_run(cfg, mm, s["base"])
    test = resolve("lrformer-t_ade20k").recipe["test"]
    with torch.no_grad():
        for p, b, sc in zip(s["paths"], mm_labels, mm_scores):
            img = torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy())
            a = predict_labels(net, img, test)[0].numpy()
            assert _near_ties(a, b, sc), f"{(a != b).sum()} of {a.size} pixels differ"
    res = evaluate(
        EvalSettings(
            "lrformer-t_ade20k",
            str(s["root"]),
            checkpoint=str(ckpt),
            workers=0,
            out=str(s["tmp"] / "lrf.json"),
            overwrite=True,
        )
    )
    assert abs(res["mIoU"] - mm_metrics["mIoU"]) <= 0.01 + 0.005
    assert abs(res["aAcc"] - mm_metrics["aAcc"]) <= 0.01 + 0.005


def test_mask2former_pipeline_equals_mmseg(segformer_b0):
    """mmseg's Mask2Former-R50 (ADE20K config: pad to /32 at test time, scores at the padded size, cropped, resized
    to the original) against lrbench's pipeline on the same checkpoint; a quarter of the test scale keeps it quick."""
    s = segformer_b0
    entry = MMSEG["mask2former-r50-mmseg_ade20k"]
    cfg = config(entry).copy()
    scale = (512, 128)
    for t in cfg.test_dataloader.dataset.pipeline:
        if t["type"] == "Resize":
            t["scale"] = scale
    mm, state = built(str(peers.config_of_url()[entry.source.url]))
    ckpt = s["tmp"] / "m2f_r50.pth"
    torch.save({"state_dict": state}, ckpt)
    _, mm_labels, mm_scores = _mmseg_run(cfg, mm, s["base"])
    net = create_model(entry.arch, checkpoint=str(ckpt))
    test = {**resolve(entry.name).recipe["test"], "resize": list(scale)}
    with torch.no_grad():
        for p, b, sc in zip(s["paths"], mm_labels, mm_scores):
            img = torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy())
            a = predict_labels(net, img, test)[0].numpy()
            assert _near_ties(a, b, sc), f"{(a != b).sum()} of {a.size} pixels differ"

"""lrbench eval: exact mmseg metric, dataset conventions, inference modes, resume, distributed, bad input, CLI."""

import json
import os
import socket

import mmcv
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from lrbench.cli import app
from lrbench.engine.evaluate import evaluate
from lrbench.engine.loader import DatasetError, SegDataset
from lrbench.engine.metrics import IoUAccumulator
from lrbench.engine.models import create_model
from lrbench.engine.pipeline import MS_RATIOS, input_size, predict_logits
from lrbench.settings import EvalSettings

from synth import NUM_CLASSES, Oracle

IDENTITY = {"name": "identity", "test": {"resize": None, "size_divisor": 1, "mode": "whole"}}


def mmseg_reference(preds, labels, num_classes, ignore=255):
    """numpy transcription of mmseg IoUMetric.intersect_and_union + compute_metrics (histograms, nan-means)."""
    tot = np.zeros((4, num_classes))
    for p, l in zip(preds, labels):
        m = l != ignore
        p, l = p[m], l[m]
        inter = p[p == l]
        bins = np.arange(num_classes + 1)
        ai, ap, al = (np.histogram(v, bins=bins)[0] for v in (inter, p, l))
        tot += np.stack([ai, ai * 0 + ap + al - ai, ap, al])
    inter, union, _, lab = tot
    with np.errstate(invalid="ignore", divide="ignore"):
        iou, acc = inter / union, inter / lab
    return {
        "aAcc": inter.sum() / lab.sum() * 100,
        "mIoU": np.nanmean(iou) * 100,
        "mAcc": np.nanmean(acc) * 100,
        "IoU": iou * 100,
    }


def test_metric_equals_numpy_mmseg_reference():
    rng = np.random.default_rng(0)
    K = 12
    preds = [rng.integers(0, K - 2, size=(17, 23)) for _ in range(5)]  # ids 0..9: 10, 11 never predicted
    labels = [rng.integers(0, K - 3, size=(17, 23)) for _ in range(5)]  # ids 0..8: 9, 10, 11 never labelled
    for l in labels:
        l[rng.random(l.shape) < 0.2] = 255
    acc = IoUAccumulator(K)
    for p, l in zip(preds, labels):
        acc.update(torch.from_numpy(p), torch.from_numpy(l))
    got, ref = acc.summary(), mmseg_reference(preds, labels, K)
    for k in ("aAcc", "mIoU", "mAcc"):
        assert got[k] == pytest.approx(ref[k], abs=1e-9)
    ious = [r["IoU"] for r in got["per_class"]]
    assert ious[10] is None and ious[11] is None and ious[9] == 0.0  # absent from both: NaN; predicted only: 0
    np.testing.assert_allclose([np.nan if i is None else i for i in ious], ref["IoU"], atol=1e-9)


def test_confusion_matrix_holds_the_iou_counts_exactly():
    """The confusion matrix (the CPU's bincount and the CUDA path's sync-free scatter-adds alike) holds mmseg's
    counts exactly: diagonal = intersect, column sums = pred area, row sums = label area, with ignored pixels and
    label ids outside the classes (which count in no label area; their predictions still count)."""
    from lrbench.engine.metrics import _counts, areas_of, confusion

    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 7, (31, 37), generator=g)
    label = torch.randint(0, 9, (31, 37), generator=g).to(torch.uint8)  # 7 and 8: outside the 7 classes
    label[torch.rand(31, 37, generator=g) < 0.2] = 255
    m, scattered = confusion(pred, label, 7, 255), confusion(pred, label, 7, 255, scatter=True)
    assert torch.equal(m, scattered) and m.shape == (8, 8) and int(m.sum()) == int((label != 255).sum())
    host = _counts(pred, label, 7, 255)
    assert [h.tolist() for h in host] == [a.tolist() for a in areas_of(m)]
    assert int(host[1].sum()) == int((label != 255).sum()) > int(host[2].sum())  # ids 7, 8: predictions only
    # and by hand: every kept pixel lands in row label, column prediction
    want = torch.zeros(8, 8, dtype=torch.int64)
    for p, t in zip(pred.flatten().tolist(), label.flatten().tolist()):
        if t != 255:
            want[min(t, 7), p] += 1
    assert torch.equal(m, want)


def test_metric_hand_computed():
    pred = torch.tensor([[0, 0, 1], [1, 2, 2]])
    label = torch.tensor([[0, 1, 1], [255, 2, 0]])
    acc = IoUAccumulator(4)
    acc.update(pred, label)
    # kept pixels: (0,0) (0,1) (1,1) (2,2) (2,0): intersect [1,1,1,0], pred [2,1,2,0], label [2,2,1,0]
    assert acc.areas["intersect"].tolist() == [1, 1, 1, 0] and acc.areas["union"].tolist() == [3, 2, 2, 0]
    # rows = label, columns = prediction (a fifth row / column for ids that are not classes)
    assert acc.confusion[:4, :4].tolist() == [[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    s = acc.summary()
    assert s["mIoU"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3 * 100)
    assert s["aAcc"] == pytest.approx(3 / 5 * 100) and s["mAcc"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3 * 100)


@pytest.mark.parametrize("dataset", ["ade20k", "coco-stuff", "cityscapes"])
def test_oracle_scores_100_in_each_layout(dataset, tmp_path, synth):
    synth(tmp_path, dataset, n=3)
    res = evaluate(EvalSettings(Oracle(dataset), dataset=dataset, data_root=tmp_path, recipe=IDENTITY, workers=0))
    assert res["mIoU"] == 100.0 and res["aAcc"] == 100.0 and res["num_images"] == 3
    assert len(res["per_class"]) == NUM_CLASSES[dataset]


def test_label_conventions(tmp_path, synth):
    root = synth(tmp_path, "ade20k", n=1)
    raw = np.asarray(Image.open(next((root / "annotations/validation").glob("*.png")))).astype(np.int64)
    item = SegDataset("ade20k", tmp_path)[0]
    expect = np.where(raw == 0, 255, raw - 1)
    assert np.array_equal(item["label"].numpy(), expect) and (raw == 0).any()
    # the edge ids by hand: 0 ("other") -> ignore, 1 -> 0, 150 -> 149, 255 stays ignore
    edges = np.array([[0, 1, 150, 255]], np.uint8).repeat(64, 0).repeat(24, 1)  # 64 x 96, the image's size
    Image.fromarray(edges).save(next((root / "annotations/validation").glob("*.png")))
    got = SegDataset("ade20k", tmp_path)[0]["label"].numpy()
    assert got[0, ::24].tolist() == [255, 0, 149, 255]
    synth(tmp_path, "cityscapes", n=3)
    ds = SegDataset("cityscapes", tmp_path / "cityscapes")
    assert len(ds) == 3 and {p.parent.name for p, _ in ds.items} == {"frankfurt", "lindau", "munster"}
    raw = np.asarray(Image.open(ds.items[0][1])).astype(np.int64)
    assert np.array_equal(ds[0]["label"].numpy(), raw)  # labelTrainIds are used as stored


class PixelLinear(nn.Module):
    """Context-free: a 1x1 conv, so each pixel's logits depend on that pixel alone."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 19, 1)
        g = torch.Generator().manual_seed(4)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(19, 3, 1, 1, generator=g))
            self.conv.bias.copy_(torch.randn(19, generator=g) * 0.5)

    def forward(self, x):
        return self.conv(x)


def test_whole_equals_slide_for_context_free_model(tmp_path, synth):
    synth(tmp_path, "cityscapes", n=3, sizes=((64, 96),))
    slide = {
        "name": "s",
        "test": {"resize": None, "size_divisor": 1, "mode": "slide", "crop": [40, 40], "stride": [24, 24]},
    }
    a = evaluate(EvalSettings(PixelLinear(), dataset="cityscapes", data_root=tmp_path, recipe=IDENTITY, workers=0))
    b = evaluate(EvalSettings(PixelLinear(), dataset="cityscapes", data_root=tmp_path, recipe=slide, workers=0))
    assert b["mode"] == "slide" and a["areas"] == b["areas"] and a["mIoU"] < 100


def test_ms_flip_matches_hand_written_reference(randomize):
    model = randomize(nn.Conv2d(3, 5, 3, stride=2, padding=1), seed=2).eval()  # position dependent, stride 2
    image = torch.randint(0, 256, (50, 70, 3), dtype=torch.uint8)
    test = {"resize": [140, 100], "size_divisor": 8}
    views = []
    for r in MS_RATIOS:
        # keep-ratio scale (long 140 r, short 100 r), then each side up to a multiple of 8
        f = min(140 * r / 70, 100 * r / 50)
        h, w = int(50 * f + 0.5), int(70 * f + 0.5)
        size = (-(-h // 8) * 8, -(-w // 8) * 8)
        assert input_size(50, 70, test, r) == size
        img = image.numpy()
        for step in [(h, w), size]:  # mmcv: imrescale, then AlignResize's imresize (cv2 on the uint8 image)
            if img.shape[:2] != step:
                img = mmcv.imresize(img, (step[1], step[0]))
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float()
        x = (x - torch.tensor([123.675, 116.28, 103.53])[:, None, None]) / torch.tensor([58.395, 57.12, 57.375])[
            :, None, None
        ]
        for flip in (False, True):
            xi = torch.flip(x, dims=[3]) if flip else x
            y = F.interpolate(model(xi), size=size, mode="bilinear", align_corners=False)
            y = torch.flip(y, dims=[3]) if flip else y
            views.append(F.interpolate(y, size=(50, 70), mode="bilinear", align_corners=False).detach())
    assert len(views) == 12
    with torch.no_grad():
        got = predict_logits(model, image, test, protocol="ms", merge="logits")
        torch.testing.assert_close(got, sum(views) / 12, rtol=1e-5, atol=1e-5)
        soft = predict_logits(model, image, test, protocol="ms")  # mmseg's (the default): mean of softmax
        torch.testing.assert_close(soft, sum(v.softmax(1) for v in views) / 12, rtol=1e-5, atol=1e-6)


def test_resume_after_interruption_is_bit_identical(tmp_path, synth):
    synth(tmp_path, "cityscapes", n=6)
    model = PixelLinear()

    def run(progress=None, **kw):
        return evaluate(EvalSettings(model, tmp_path, "cityscapes", recipe=IDENTITY, workers=0, **kw), progress)

    ref = run()
    out = tmp_path / "res.json"

    def interrupt(done, total, summary):
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(out=str(out), state_every=3, progress=interrupt)
    assert not out.exists() and (tmp_path / "res.json.state.pt").exists()
    with pytest.raises(FileExistsError, match="res.json.state.pt: an interrupted run can be continued; pass --resume"):
        run(out=str(out))
    seen = []
    res = run(out=str(out), resume=True, progress=lambda d, t, s: seen.append(d))
    assert seen == [5, 6]  # only the two images not yet processed
    assert res["areas"] == ref["areas"] and json.loads(out.read_text())["areas"] == ref["areas"]
    assert not (tmp_path / "res.json.state.pt").exists()
    whole = tmp_path / "whole.json"
    run(out=str(whole))  # an uninterrupted run: the resumed one's per-image counts and interval are the same
    a, b = np.load(tmp_path / "res.per_image.npz"), np.load(tmp_path / "whole.per_image.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files) and len(a["names"]) == 6
    assert res["miou_ci95"] == json.loads(whole.read_text())["miou_ci95"]
    with pytest.raises(FileExistsError, match="res.json already exists; pass --overwrite"):
        run(out=str(out))
    before = out.read_bytes()
    seen.clear()
    again = run(out=str(out), resume=True, progress=lambda d, t, s: seen.append(d))
    assert seen == [] and again["areas"] == ref["areas"] and out.read_bytes() == before  # nothing recomputed


def _dist_worker(rank, world, port, root, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    evaluate(
        EvalSettings(
            PixelLinear(),
            dataset="cityscapes",
            data_root=root,
            recipe=IDENTITY,
            workers=0,
            out=out,
            skip_bad=True,
            calibration=True,
        )
    )
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_equals_one_process(tmp_path, synth):
    synth(tmp_path, "cityscapes", n=5)
    bad = sorted((tmp_path / "cityscapes" / "leftImg8bit").rglob("*.png"))[3]  # index 3: rank 1's shard
    bad.write_bytes(b"broken")
    ref = evaluate(
        EvalSettings(PixelLinear(), dataset="cityscapes", data_root=tmp_path, recipe=IDENTITY, workers=0, skip_bad=True)
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "dist.json"
    torch.multiprocessing.spawn(_dist_worker, args=(2, port, str(tmp_path), str(out)), nprocs=2)
    res = json.loads(out.read_text())
    assert res["world_size"] == 2 and res["areas"] == ref["areas"] and res["mIoU"] == ref["mIoU"]
    assert res["skipped"] == ref["skipped"] and len(ref["skipped"]) == 1 and bad.name in ref["skipped"][0]
    # the per-image counts, gathered from both ranks in dataset order, equal one process's
    one = tmp_path / "one.json"
    single = evaluate(
        EvalSettings(
            PixelLinear(),
            tmp_path,
            "cityscapes",
            recipe=IDENTITY,
            workers=0,
            skip_bad=True,
            out=str(one),
            calibration=True,
        )
    )
    a, b = np.load(tmp_path / "one.per_image.npz"), np.load(tmp_path / "dist.per_image.npz")
    assert res["per_image_file"] == "dist.per_image.npz" and list(a["names"]) == list(b["names"])
    assert len(a["names"]) == 4 and all(np.array_equal(a[k], b[k]) for k in a.files)  # confusion matrix included
    assert "confusion" in a.files and res["miou_ci95"] == single["miou_ci95"]
    assert res["per_class"] == single["per_class"]  # per-class intervals too
    keep = ("ece", "count", "accuracy", "mean_confidence", "pixels")
    assert {k: res["calibration"][k] for k in keep} == {k: single["calibration"][k] for k in keep}
    # and what analyze reads of the two is the same
    from lrbench.analysis import analyze

    x, y = analyze(str(one), worst=3, plots=None), analyze(str(out), worst=3, plots=None)
    assert x["top_confusions"] == y["top_confusions"] and x["worst_images"] == y["worst_images"]


def test_bad_inputs_name_the_file(tmp_path, synth):
    with pytest.raises(DatasetError, match=r"--data-root .*nowhere: folder not found"):
        SegDataset("ade20k", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        DatasetError,
        match=r"images/validation: folder not found; --data-root must hold the standard "
        r"ade20k layout",
    ):
        SegDataset("ade20k", tmp_path / "empty")
    root = synth(tmp_path, "ade20k", n=4)
    ann = sorted((root / "annotations/validation").glob("*.png"))
    ann[0].unlink()
    with pytest.raises(DatasetError, match=r"ADE_val_00000000.jpg: no annotation \(expected .*ADE_val_00000000.png\)"):
        SegDataset("ade20k", tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(ann[0])
    with pytest.raises(DatasetError, match=r"ADE_val_00000000.png: label size 10x10 differs from image size 96x64"):
        evaluate(EvalSettings(Oracle("ade20k"), dataset="ade20k", data_root=tmp_path, recipe=IDENTITY, workers=0))
    Image.fromarray(np.full((64, 96), 151, np.uint8)).save(ann[0])
    with pytest.raises(
        DatasetError, match=r"ADE_val_00000000.png: label ids \[151\] outside the 150 classes of ade20k"
    ):
        evaluate(
            EvalSettings(Oracle("ade20k"), dataset="ade20k", data_root=tmp_path, recipe=IDENTITY, workers=2)
        )  # raised from a worker, same text
    img = sorted((root / "images/validation").glob("*.jpg"))[1]
    img.write_bytes(b"not an image")
    res = evaluate(
        EvalSettings(Oracle("ade20k"), dataset="ade20k", data_root=tmp_path, recipe=IDENTITY, workers=0, skip_bad=True)
    )
    assert res["num_images"] == 4 and len(res["skipped"]) == 2 and "unreadable image" in res["skipped"][1]
    assert res["mIoU"] == 100.0


def test_cli_end_to_end_with_local_checkpoint(tmp_path, monkeypatch, synth, randomize):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("LRBENCH_HOME", str(tmp_path / "lrbench"))
    synth(tmp_path / "data", "ade20k", n=2, sizes=((64, 80),))
    model = randomize(create_model("lrformer-t"), seed=1)
    torch.save({"meta": {}, "state_dict": model.state_dict()}, tmp_path / "lrformer-t.pth")
    out = tmp_path / "results" / "t.json"
    args = [
        "eval",
        "lrformer-t",
        "--dataset",
        "ade20k",
        "--data-root",
        str(tmp_path / "data"),
        "--checkpoint",
        str(tmp_path / "lrformer-t.pth"),
        "--workers",
        "0",
        "--out",
        str(out),
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["arch"] == "lrformer-t" and res["recipe"] == "lrformer_ade20k" and res["num_images"] == 2
    assert res["test"]["resize"] == [2048, 512] and 0 <= res["mIoU"] <= 100 and len(res["checkpoint_sha256"]) == 64
    assert "mIoU" in r.stdout
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "t.json already exists; pass --overwrite" in r.stderr
    r = CliRunner().invoke(app, ["eval", "lrformer-t", "--dataset", "ade20k", "--data-root", str(tmp_path / "data")])
    assert r.exit_code == 2 and "lrformer-t_ade20k: yuhuan-wu/LRFormer-Models/" in r.stderr  # zoo weights, offline
    assert "is not in the cache and HF_HUB_OFFLINE is set" in r.stderr
    synth(tmp_path / "data", "coco-stuff", n=1)
    r = CliRunner().invoke(
        app, ["eval", "lrformer-s", "--dataset", "coco-stuff", "--data-root", str(tmp_path / "data")]
    )
    assert r.exit_code == 2 and "no released weights for lrformer-s on coco-stuff: pass --checkpoint FILE" in r.stderr


def test_cli_error_text_is_not_read_as_markup(tmp_path, synth):
    root = synth(tmp_path, "ade20k", n=1)
    ann = next((root / "annotations/validation").glob("*.png"))
    Image.fromarray(np.full((64, 96), 151, np.uint8)).save(ann)
    model = create_model("lrformer-t")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "t.pth")
    r = CliRunner().invoke(
        app,
        [
            "eval",
            "lrformer-t",
            "--dataset",
            "ade20k",
            "--data-root",
            str(tmp_path),
            "--checkpoint",
            str(tmp_path / "t.pth"),
            "--workers",
            "0",
            "--out",
            str(tmp_path / "r.json"),
        ],
    )
    assert r.exit_code == 2 and "label ids [151] outside the 150 classes of ade20k" in r.stderr
    assert not (tmp_path / "r.json").exists()


class CountingPixelLinear(PixelLinear):
    """PixelLinear that records how many images each forward received."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x):
        self.batches.append(x.shape[0])
        return super().forward(x)


def test_batch_size_runs_same_size_images_in_one_forward(tmp_path, synth):
    synth(tmp_path / "same", "cityscapes", n=8, sizes=((64, 96),))
    one, four = CountingPixelLinear(), CountingPixelLinear()
    a = evaluate(EvalSettings(one, dataset="cityscapes", data_root=tmp_path / "same", recipe=IDENTITY, workers=0))
    b = evaluate(
        EvalSettings(four, dataset="cityscapes", data_root=tmp_path / "same", recipe=IDENTITY, workers=0, batch_size=4)
    )
    assert one.batches == [1] * 8 and four.batches == [4, 4] and b["timings"]["forwards"] == 2
    assert b["areas"] == a["areas"] and b["mIoU"] == a["mIoU"]
    # mixed sizes in one loaded batch: each size is one forward (files sort as 64x96, 96x64, 96x64, 64x96)
    synth(tmp_path / "mixed", "cityscapes", n=4, sizes=((64, 96), (96, 64)))
    mixed = CountingPixelLinear()
    c = evaluate(
        EvalSettings(
            mixed, dataset="cityscapes", data_root=tmp_path / "mixed", recipe=IDENTITY, workers=0, batch_size=4
        )
    )
    d = evaluate(
        EvalSettings(PixelLinear(), dataset="cityscapes", data_root=tmp_path / "mixed", recipe=IDENTITY, workers=0)
    )
    assert mixed.batches == [2, 2] and c["areas"] == d["areas"]


def test_cli_batch_size_gives_the_same_miou(tmp_path, synth, randomize, save_mmengine):
    synth(tmp_path / "data", "ade20k", n=4, sizes=((64, 80),))
    save_mmengine(randomize(create_model("lrformer-t"), seed=1), tmp_path / "t.pth")
    res = {}
    for bs in ("1", "4"):
        out = tmp_path / f"b{bs}.json"
        r = CliRunner().invoke(
            app,
            [
                "eval",
                "lrformer-t",
                "--data-root",
                str(tmp_path / "data"),
                "--checkpoint",
                str(tmp_path / "t.pth"),
                "--workers",
                "0",
                "--batch-size",
                bs,
                "--out",
                str(out),
            ],
        )
        assert r.exit_code == 0, r.output
        res[bs] = json.loads(out.read_text())
    assert res["1"]["timings"]["forwards"] == 4 and res["4"]["timings"]["forwards"] == 1
    assert res["4"]["areas"] == res["1"]["areas"] and res["4"]["mIoU"] == res["1"]["mIoU"]

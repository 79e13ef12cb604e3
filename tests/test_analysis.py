"""Why a number differs: the confusion matrix of an eval, per-class intervals and paired differences, the worst
images, corruptions (the imagecorruptions package's own output) and calibration (ECE), each against an independent
computation: hand counts, a direct numpy ECE, a bootstrap done by hand, the package called directly."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from lrbench import analysis, stats
from lrbench.cli import app
from lrbench.engine.corruptions import corrupt_image, glass_blur_fast, image_seed, package
from lrbench.engine.evaluate import evaluate
from lrbench.engine.loader import SegDataset
from lrbench.engine.metrics import CalibrationAccumulator, IoUAccumulator
from lrbench.engine.pipeline import predict_logits
from lrbench.engine.robust import robust
from lrbench.names import CORRUPTIONS, PROTOCOL_SEVERITIES
from lrbench.settings import EvalSettings

from synth import Oracle

IDENTITY = {"name": "identity", "test": {"resize": None, "size_divisor": 1, "mode": "whole"}}


class Erring(Oracle):
    """The oracle, wrong on purpose: the left third of every image is called the next class, and its scores are
    soft (so that confidences spread over the calibration bins)."""

    def forward(self, x):
        onehot = super().forward(x)
        W = onehot.shape[-1]
        onehot[..., : W // 3] = onehot[..., : W // 3].roll(1, dims=1)
        wobble = torch.sin(x[:, 1:2] * 3.0)  # input-dependent, deterministic
        return onehot * (2.0 + wobble) + 0.1 * torch.cos(x[:, 2:3] + torch.arange(self.k).view(1, -1, 1, 1))


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def erring_eval(tmp_path_factory):
    """One eval of the erring model on a synthetic Cityscapes set, with calibration: (result, data folder)."""
    from synth import write_dataset

    root = tmp_path_factory.mktemp("an")
    write_dataset(root / "data", "cityscapes", n=5, sizes=((48, 64), (40, 72)))
    settings = EvalSettings(
        Erring("cityscapes"),
        data_root=str(root / "data"),
        dataset="cityscapes",
        recipe=IDENTITY,
        workers=0,
        calibration=True,
        out=str(root / "r.json"),
    )
    return evaluate(settings), root


# ---------------------------------------------------------------- confusion matrix
def test_the_eval_keeps_a_confusion_matrix_that_holds_its_counts(erring_eval):
    res, root = erring_eval
    data = stats.load_per_image(root / res["per_image_file"])
    m, K = data["confusion"], 19
    assert m.shape == (K + 1, K + 1) == tuple(res["confusion_matrix"]["shape"])
    assert m.diagonal()[:K].tolist() == res["areas"]["intersect"]
    assert m[:K].sum(1).tolist() == res["areas"]["label"] and m[:, :K].sum(0).tolist() == res["areas"]["pred"]
    assert data["intersect"].sum(0).tolist() == res["areas"]["intersect"]  # the per-image counts add up to it
    assert m[:K, :K].sum() > m.diagonal().sum() > 0  # the model errs, so the matrix has off-diagonal mass


def _mmseg_confusion_tool():
    """mmseg's tools/analysis_tools/confusion_matrix.py as shipped in the mmsegmentation wheel."""
    import importlib.util

    import peers

    peers.mmseg()
    path = peers.configs_dir().parent / "tools" / "analysis_tools" / "confusion_matrix.py"
    spec = importlib.util.spec_from_file_location("mmseg_confusion_tool", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _mmseg_dataset(labels: list[np.ndarray], K: int):
    """What the tool reads of an mmseg dataset: metainfo, ignore index, and packed samples with gt_sem_seg."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    class Dataset:
        METAINFO = {"classes": tuple(str(k) for k in range(K))}
        ignore_index, reduce_zero_label = 255, False

        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            sample = SegDataSample()
            sample.gt_sem_seg = PixelData(data=torch.from_numpy(labels[i][None].astype(np.int64)))
            return {"data_samples": sample}

    return Dataset()


def _preds_and_labels(K: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    preds = [rng.integers(0, K, size=(23, 31)) for _ in range(4)]
    labels = [rng.integers(0, K, size=(23, 31)).astype(np.uint8) for _ in range(4)]
    for lab in labels:
        lab[rng.random(lab.shape) < 0.15] = 255
    return preds, labels


def _hand_count(preds, labels, K):
    m = np.zeros((K, K), np.int64)
    for p, lab in zip(preds, labels):
        for t, q in zip(lab.ravel(), p.ravel()):
            if t != 255:
                m[t, q] += 1
    return m


@pytest.mark.peer
def test_confusion_matrix_equals_mmseg_tool():
    """mmseg's own confusion-matrix computation on the same predictions and labels, with 16 classes -- the most its
    tool counts correctly: it forms ``n * gt + pred`` on the uint8 label map, which wraps past 255 (17+ classes,
    e.g. Cityscapes' 19), where it differs from a count by hand and lrbench does not."""
    tool = _mmseg_confusion_tool()
    for K in (16, 19):
        preds, labels = _preds_and_labels(K)
        acc = IoUAccumulator(K)
        for p, lab in zip(preds, labels):
            acc.update(torch.from_numpy(p), torch.from_numpy(lab))
        mm = tool.calculate_confusion_matrix(_mmseg_dataset(labels, K), preds).astype(np.int64)
        hand = _hand_count(preds, labels, K)
        assert np.array_equal(acc.confusion[:K, :K].numpy(), hand)
        assert np.array_equal(mm, hand) == (K == 16), K  # the tool's uint8 overflow from 17 classes on


def test_top_confusions_and_worst_images_by_hand():
    classes = ["a", "b", "c"]
    m = np.array([[5, 3, 0, 0], [1, 6, 4, 0], [0, 0, 2, 0], [0, 1, 0, 0]])  # + the row/column of non-classes
    top = analysis.top_confusions(m, classes, top=2)
    assert top == [
        {"true": "b", "predicted": "c", "pixels": 4, "share_of_true": 4 / 11},
        {"true": "a", "predicted": "b", "pixels": 3, "share_of_true": 3 / 8},
    ]
    assert analysis.top_confusions(m, classes, top=1, sort="share")[0]["true"] == "a"  # 3/8 > 4/11
    data = {
        "names": np.array(["x.jpg", "y.jpg", "z.jpg"]),
        "intersect": np.array([[1, 0, 0], [2, 2, 0], [0, 0, 0]]),
        "union": np.array([[2, 2, 0], [2, 2, 0], [0, 0, 0]]),
        "label_area": np.array([[2, 1, 0], [2, 2, 0], [0, 0, 0]]),
    }
    worst = analysis.worst_images(data, classes, 5)  # z has no labelled pixel: left out
    assert [(w["image"], w["mIoU"]) for w in worst] == [("x.jpg", 25.0), ("y.jpg", 100.0)]


def test_analyze_cli_json_heatmap_and_errors(erring_eval, tmp_path):
    res, root = erring_eval
    r = run("analyze", root / "r.json", "--worst", "2", "--top", "3", "--plots", tmp_path / "plots", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert len(out["top_confusions"]) == 3 and len(out["worst_images"]) == 2
    assert out["worst_images"][0]["mIoU"] <= out["worst_images"][1]["mIoU"]
    assert (tmp_path / "plots" / "confusion_r.png").read_bytes()[:4] == b"\x89PNG"
    r = run("analyze", root / "r.json", "--plots", tmp_path / "p2")
    assert r.exit_code == 0 and "top confusions (true -> predicted)" in r.stdout
    # a result without the matrix (an earlier lrbench): one line, nothing written
    old = json.loads((root / "r.json").read_text())
    npz = dict(np.load(root / old["per_image_file"]))
    npz.pop("confusion")
    np.savez(tmp_path / "old.per_image.npz", **npz)
    (tmp_path / "old.json").write_text(json.dumps(old | {"per_image_file": "old.per_image.npz"}))
    r = run("analyze", tmp_path / "old.json", "--plots", tmp_path / "p3")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "has no confusion matrix" in r.stderr
    assert not (tmp_path / "p3").exists()
    r = run("analyze", tmp_path / "old.json", "--overlays", tmp_path / "ov")
    assert r.exit_code == 2 and "--overlays needs --worst K" in r.stderr


# ---------------------------------------------------------------- per-class intervals
def test_per_class_paired_intervals_equal_a_bootstrap_by_hand():
    rng = np.random.default_rng(0)
    N, K = 6, 3
    union_a = rng.integers(1, 20, size=(N, K))
    union_a[:, 2] = 0  # class 2 occurs in no image of A...
    a = {"names": np.array([f"i{i}" for i in range(N)]), "union": union_a}
    a["intersect"] = (union_a * rng.random((N, K))).astype(np.int64)
    union_b = rng.integers(1, 20, size=(N, K))
    union_b[:, 2] = 0  # ...nor of B: left out
    b = {"names": a["names"][::-1].copy(), "union": union_b[::-1].copy()}
    b["intersect"] = (union_b * rng.random((N, K))).astype(np.int64)[::-1].copy()
    rows = stats.paired_class_diff(a, b, ["x", "y", "z"], resamples=40, seed=7)
    assert [r["class"] for r in rows] == sorted(
        ["x", "y"], key=lambda c: -next(r["diff"] for r in rows if r["class"] == c)
    )
    counts = stats.resample_counts(N, 40, 7)
    ib, ub = b["intersect"][::-1], b["union"][::-1]  # B in A's image order
    for k, name in enumerate(["x", "y"]):
        diffs = []
        for draw in counts:  # each resample: the drawn images' summed areas, per model
            ia_k, ua_k = (draw * a["intersect"][:, k]).sum(), (draw * a["union"][:, k]).sum()
            ib_k, ub_k = (draw * ib[:, k]).sum(), (draw * ub[:, k]).sum()
            diffs.append(100 * ia_k / ua_k - 100 * ib_k / ub_k)
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        row = next(r for r in rows if r["class"] == name)
        assert row["ci95"] == pytest.approx([lo, hi]) and row["significant"] == (lo > 0 or hi < 0)
        full = 100 * a["intersect"][:, k].sum() / a["union"][:, k].sum() - 100 * ib[:, k].sum() / ub[:, k].sum()
        assert row["diff"] == pytest.approx(full)


def test_eval_records_per_class_intervals_and_compare_per_class(erring_eval, tmp_path):
    res, root = erring_eval
    row = next(r for r in res["per_class"] if r["IoU"] is not None)
    lo, hi = row["IoU_ci95"]
    assert lo <= row["IoU"] <= hi
    r = run("compare", root / "r.json", root / "r.json", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["diff"] == 0 and all(c["diff"] == 0 and not c["significant"] for c in out["per_class"])
    assert "left out" in out["absent_classes"]
    r = run("compare", root / "r.json", root / "r.json")
    assert r.exit_code == 0 and "not significant" in r.stdout and "absent classes:" in r.stdout


# ---------------------------------------------------------------- corruptions
def test_corrupted_images_are_the_packages_for_the_same_seed():
    """Every corruption of the protocol, through lrbench, equals the imagecorruptions package called directly with
    NumPy seeded as lrbench seeds it; and two calls give the same bytes."""
    ic = package()
    img = (np.random.default_rng(1).random((40, 56, 3)) * 255).astype(np.uint8)
    for name in CORRUPTIONS:
        severity = PROTOCOL_SEVERITIES[name][-1]
        got = corrupt_image(img, name, severity, "val/a.png")
        np.random.seed(image_seed(name, severity, "val/a.png"))
        want = ic.corrupt(img, corruption_name=name, severity=severity)
        assert got.dtype == np.uint8 and np.array_equal(got, want), name
        assert np.array_equal(got, corrupt_image(img, name, severity, "val/a.png")), name
    assert not np.array_equal(corrupt_image(img, "fog", 3, "val/a.png"), corrupt_image(img, "fog", 3, "val/b.png"))


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_glass_blur_fast_path_equals_the_package(severity):
    from PIL import Image

    impl = package().corruptions  # the package's module, imported (and adapted) by lrbench
    img = (np.random.default_rng(severity).random((37, 45, 3)) * 255).astype(np.uint8)
    np.random.seed(11)
    want = impl.glass_blur(Image.fromarray(img), severity)  # the package's pixel-by-pixel loop
    after_want = np.random.random()
    np.random.seed(11)
    got = glass_blur_fast(img, severity)
    assert np.array_equal(np.uint8(got), np.uint8(want)) and np.random.random() == after_want  # same draws


def test_the_loader_corrupts_what_it_decodes(tmp_path, synth):
    synth(tmp_path, "cityscapes", n=2, sizes=((40, 48),))
    clean, foggy = SegDataset("cityscapes", tmp_path), SegDataset("cityscapes", tmp_path, ("fog", 2))
    item = clean.load(1)
    want = corrupt_image(item["image"].numpy(), "fog", 2, clean.key(1))
    assert np.array_equal(foggy.load(1)["image"].numpy(), want) and clean.key(1).startswith("leftImg8bit/val/")
    assert torch.equal(foggy.load(1)["label"], item["label"])  # labels untouched


def test_corruption_arguments_fail_before_any_work(tmp_path):
    for args, fragment in (
        (["--corruption", "fgo", "--severity", "2"], "--corruption must be one of motion_blur"),
        (["--corruption", "fog", "--severity", "6"], "--severity must be 1..5, got 6"),
        (["--corruption", "fog"], "--corruption and --severity go together"),
    ):
        r = run("eval", "lrformer-t", "--data-root", tmp_path, "--out", tmp_path / "r.json", *args)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and fragment in r.stderr, r.stderr
    r = run("robust", "lrformer-t", "--data-root", tmp_path, "--corruptions", "fog,nope")
    assert r.exit_code == 2 and "--corruption must be one of" in r.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- robustness runs
def test_robust_killed_midway_and_resumed_equals_an_uninterrupted_run(tmp_path, synth):
    synth(tmp_path / "data", "cityscapes", n=3, sizes=((40, 48),))
    settings = EvalSettings(
        Oracle("cityscapes"), data_root=str(tmp_path / "data"), dataset="cityscapes", recipe=IDENTITY, workers=0
    )
    chosen = ["gaussian_noise", "fog"]
    whole = robust(settings, out_dir=str(tmp_path / "whole"), corruptions=chosen)
    assert len(whole["runs"]) == 1 + 3 + 5 and whole["clean_mIoU"] == 100.0
    assert whole["mean_corrupted_mIoU"] < 100.0 and set(whole["per_group"]) == {"noise", "weather"}

    def killer(done, total, what):
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        robust(settings, out_dir=str(tmp_path / "cut"), corruptions=chosen, progress=killer)
    from dataclasses import replace

    with pytest.raises(Exception, match="pass --resume to continue"):
        robust(settings, out_dir=str(tmp_path / "cut"), corruptions=chosen)
    resumed = robust(replace(settings, resume=True), out_dir=str(tmp_path / "cut"), corruptions=chosen)
    keys = ("clean_mIoU", "per_corruption", "per_group", "mean_corrupted_mIoU", "relative_robustness")
    assert {k: resumed[k] for k in keys} == {k: whole[k] for k in keys}
    # compare works on the summaries (the same model: every difference 0, not significant)
    r = run("compare", tmp_path / "whole.json", tmp_path / "cut.json", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["mean_corrupted"]["diff"] == 0 and set(out["per_corruption"]) == set(chosen)
    # and the report shows them
    from lrbench.report import render
    from lrbench.results import load_results
    from lrbench.zoo import load_zoo

    md, _ = render(load_results(tmp_path), load_zoo(), commit="x")
    assert "## Robustness to corruptions" in md and "| 100.00 |" in md and "partial |" in md
    assert "corrupted images (fog, severity 5)" in md  # listed, never counted toward a paper row


# ---------------------------------------------------------------- calibration
def numpy_ece(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE by the textbook: equal-width bins over [0, 1], |accuracy - mean confidence| weighted by the bin's share."""
    b = np.minimum((conf * bins).astype(np.int64), bins - 1)
    ece = 0.0
    for i in range(bins):
        sel = b == i
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return 100 * ece


def test_ece_accumulator_equals_numpy():
    rng = np.random.default_rng(0)
    conf = rng.random((30, 40)).astype(np.float32)
    pred, label = rng.integers(0, 5, (30, 40)), rng.integers(0, 6, (30, 40))  # 5: not a class, left out
    label[rng.random((30, 40)) < 0.1] = 255
    cal = CalibrationAccumulator(5, 255)
    cal.update(torch.from_numpy(conf), torch.from_numpy(pred), torch.from_numpy(label))
    keep = (label != 255) & (label < 5)
    assert cal.summary()["ece"] == pytest.approx(numpy_ece(conf[keep].astype(np.float64), (pred == label)[keep]))
    assert cal.summary()["pixels"] == keep.sum()


def test_eval_ece_equals_numpy_on_the_full_resolution_softmax(erring_eval):
    res, root = erring_eval
    ds = SegDataset("cityscapes", root / "data")
    model = Erring("cityscapes")
    confs, corrects = [], []
    for i in range(len(ds)):
        item = ds.load(i)
        with torch.inference_mode():
            probs = F.softmax(predict_logits(model, item["image"], IDENTITY["test"]), 1)[0]
        conf, pred = probs.max(0)
        keep = item["label"] != 255
        confs.append(conf[keep].double().numpy())
        corrects.append((pred == item["label"].long())[keep].numpy())
    cal = res["calibration"]
    assert cal["ece"] == pytest.approx(numpy_ece(np.concatenate(confs), np.concatenate(corrects)), rel=1e-9)
    assert cal["confidence"] == "softmax of the full-resolution scores" and cal["bins"] == 15
    assert (root / cal["diagram"]).read_bytes()[:4] == b"\x89PNG"
    assert sum(cal["count"]) == cal["pixels"] > 0 and len([c for c in cal["count"] if c]) > 3  # spread over bins


def test_overlays_of_the_worst_images(tmp_path, synth, randomize, save_mmengine):
    """--worst K --overlays DIR: image | ground truth | prediction for the K worst images, made again with the eval's
    model and weights (the prediction panel equals what `lrbench predict` colours)."""
    from PIL import Image

    from lrbench.engine.models import create_model
    from lrbench.engine.overlays import colour
    from lrbench.engine.predictions import load_predictor

    synth(tmp_path / "data", "ade20k", n=2, sizes=((48, 64),))
    save_mmengine(randomize(create_model("segformer-b0"), seed=4), tmp_path / "b0.pth")
    out = tmp_path / "r.json"
    evaluate(
        EvalSettings(
            "segformer-b0", str(tmp_path / "data"), checkpoint=str(tmp_path / "b0.pth"), workers=0, out=str(out)
        )
    )
    r = run("analyze", out, "--worst", "1", "--overlays", tmp_path / "ov", "--plots", tmp_path / "p", "--device", "cpu")
    assert r.exit_code == 0, r.output
    (png,) = sorted((tmp_path / "ov").glob("*.png"))
    worst = json.loads(run("analyze", out, "--worst", "1", "--plots", tmp_path / "p", "--json").stdout)["worst_images"]
    assert png.name == f"00_{worst[0]['image'].rsplit('.', 1)[0]}.png"
    panel = np.asarray(Image.open(png))
    scale = -(-240 // 64)
    assert panel.shape == (48 * scale + 14, 3 * 64 * scale, 3)
    ds = SegDataset("ade20k", tmp_path / "data")
    item = ds.load([p.name for p, _ in ds.items].index(worst[0]["image"]))
    pred = load_predictor("segformer-b0", checkpoint=str(tmp_path / "b0.pth"))(item["image"].numpy())
    want = colour(pred, ds.spec.palette)
    assert np.array_equal(panel[14::scale, 2 * 64 * scale :: scale], want)  # the prediction panel
    r = run("analyze", out, "--worst", "1", "--overlays", tmp_path / "ov", "--plots", tmp_path / "p")
    assert r.exit_code == 2 and "already exists; pass --overwrite" in r.stderr


def _robust_worker(rank, world, port, root, out):
    import os

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    settings = EvalSettings(Oracle("cityscapes"), data_root=root, dataset="cityscapes", recipe=IDENTITY, workers=0)
    robust(settings, out_dir=out, corruptions=["shot_noise"])
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_robust_sharded_over_two_processes_equals_one(tmp_path, synth):
    """torchrun-style: every run of a robust job sharded over 2 gloo processes gives one process's summary, and
    analyze reads the same from each run."""
    import socket

    synth(tmp_path / "data", "cityscapes", n=5, sizes=((40, 48), (48, 40)))
    settings = EvalSettings(
        Oracle("cityscapes"), data_root=str(tmp_path / "data"), dataset="cityscapes", recipe=IDENTITY, workers=0
    )
    one = robust(settings, out_dir=str(tmp_path / "one"), corruptions=["shot_noise"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = (2, port, str(tmp_path / "data"), str(tmp_path / "two"))
    torch.multiprocessing.spawn(_robust_worker, args=args, nprocs=2)
    two = json.loads((tmp_path / "two.json").read_text())
    keys = ("clean_mIoU", "per_corruption", "per_group", "mean_corrupted_mIoU", "relative_robustness", "runs")
    assert {k: two[k] for k in keys} == {k: one[k] for k in keys}
    for run in one["runs"]:
        a = analysis.analyze(str(tmp_path / "one" / run["file"]), worst=5, plots=None)
        b = analysis.analyze(str(tmp_path / "two" / run["file"]), worst=5, plots=None)
        assert a["top_confusions"] == b["top_confusions"] and a["worst_images"] == b["worst_images"]

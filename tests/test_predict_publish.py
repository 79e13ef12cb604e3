"""lrbench predict (label maps and overlays, exactly what eval scores) and lrbench zoo publish (hub mirror -> pull)."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from PIL import Image
from typer.testing import CliRunner

import lrbench
from lrbench.cli import app
from lrbench.datasets import DATASETS
from lrbench.engine.models import create_model
from lrbench.engine.predictions import load_predictor, predict_files
from lrbench.zoo import ZOO_FILE

from synth import Oracle

IDENTITY = {"name": "identity", "test": {"resize": None, "size_divisor": 1, "mode": "whole"}}


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------- predict
def test_predict_writes_the_known_labels_with_the_dataset_palette(tmp_path, synth):
    """The oracle's output is the stored label (from the red channel): the PNGs must hold exactly those ids."""
    root = synth(tmp_path / "data", "cityscapes", n=3, sizes=((64, 96), (96, 64)))
    predictor = load_predictor(Oracle("cityscapes"), "cityscapes", recipe=IDENTITY)
    records = predict_files(predictor, [str(root / "leftImg8bit")], str(tmp_path / "out"), batch_size=2)
    assert len(records) == 3
    for rec in records:
        img = Path(rec["image"])
        label_file = Path(
            str(img).replace("leftImg8bit", "gtFine", 1).replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
        )
        stored = np.asarray(Image.open(label_file)).astype(np.int64)
        expect = np.clip(stored, 0, 18)  # 255 (ignore) pixels read as the last class by the oracle
        png = Image.open(rec["label"])
        assert png.mode == "P" and np.array_equal(np.asarray(png), expect)
        assert png.getpalette()[: 3 * 19] == [c for rgb in DATASETS["cityscapes"].palette for c in rgb]
        overlay = Image.open(rec["overlay"])
        assert overlay.format == "JPEG" and overlay.size == Image.open(img).size
        areas = rec["areas"]
        assert abs(sum(areas.values()) - 1) < 1e-9 and list(areas.values()) == sorted(areas.values(), reverse=True)
        assert rec["label"].endswith(img.relative_to(root / "leftImg8bit").with_suffix("").as_posix() + ".png")


def test_predict_turns_phone_photos_as_viewers_do(tmp_path):
    """A portrait phone photo is stored landscape with EXIF orientation 6 (turn 90° clockwise): the label map and the
    overlay come out upright, as an image viewer shows the photo."""
    rng = np.random.default_rng(0)
    stored = np.kron(rng.integers(0, 19, size=(8, 12)), np.ones((8, 8), dtype=np.int64)).astype(np.uint8)  # 64x96
    pixels = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    pixels[..., 0] = stored
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    im.save(tmp_path / "portrait.png", exif=exif.tobytes())
    predictor = load_predictor(Oracle("cityscapes"), "cityscapes", recipe=IDENTITY)
    (rec,) = predict_files(predictor, [str(tmp_path / "portrait.png")], str(tmp_path / "out"))
    labels = np.asarray(Image.open(rec["label"]))
    assert labels.shape == (96, 64) and np.array_equal(labels, np.rot90(stored, k=-1))
    assert Image.open(rec["overlay"]).size == (64, 96)


def test_predict_equals_what_eval_scores(tmp_path, synth, randomize, save_mmengine):
    """predict's labels, written back as the ground truth, give eval a perfect score on every pixel."""
    root = synth(tmp_path / "data", "ade20k", n=3, sizes=((64, 80), (80, 64)), lossless=False)
    save_mmengine(randomize(create_model("lrformer-t"), seed=2), tmp_path / "t.pth")
    r = run(
        "predict",
        "lrformer-t",
        root / "images/validation",
        "--checkpoint",
        tmp_path / "t.pth",
        "--out",
        tmp_path / "pred",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--json",
    )
    assert r.exit_code == 0, r.output
    records = json.loads(r.stdout)
    assert [Path(x["label"]).name for x in records] == [f"ADE_val_{i:08d}.png" for i in range(3)]
    for x in records:  # ADE20K annotations store index + 1
        labels = np.asarray(Image.open(x["label"])).astype(np.uint8)
        Image.fromarray(labels + 1).save(root / "annotations/validation" / Path(x["label"]).name)
    r = run(
        "eval",
        "lrformer-t",
        "--data-root",
        tmp_path / "data",
        "--checkpoint",
        tmp_path / "t.pth",
        "--workers",
        "0",
        "--out",
        tmp_path / "e.json",
    )
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["aAcc"] == 100.0 and res["mIoU"] == 100.0
    # the Python API gives the same map, from a path, a PIL image or an array
    img = records[0]["image"]
    expect = np.asarray(Image.open(records[0]["label"]))
    predictor = load_predictor("lrformer-t", "ade20k", checkpoint=str(tmp_path / "t.pth"))
    for src in (img, Image.open(img), np.asarray(Image.open(img).convert("RGB"))):
        assert np.array_equal(lrbench.predict(predictor, src), expect)


def test_predict_bad_input_and_existing_outputs(tmp_path, synth, save_mmengine):
    root = synth(tmp_path / "data", "ade20k", n=3, sizes=((64, 80),))
    save_mmengine(create_model("lrformer-t"), tmp_path / "t.pth")
    images = root / "images/validation"
    (images / "ADE_val_00000001.jpg").write_bytes(b"not an image")
    args = ["predict", "lrformer-t", images, "--checkpoint", tmp_path / "t.pth", "--out", tmp_path / "p"]
    r = run(*args)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "ADE_val_00000001.jpg: unreadable image" in r.stderr and "--skip-bad" in r.stderr
    assert not (tmp_path / "p").exists()  # nothing written
    r = run(*args, "--skip-bad", "--json")
    assert r.exit_code == 0, r.output
    recs = json.loads(r.stdout)
    assert [x.get("error") is not None for x in recs] == [True, False, False]
    before = (tmp_path / "p/ADE_val_00000000.png").stat().st_mtime_ns
    r = run(*args, "--skip-bad")
    assert r.exit_code == 2 and "ADE_val_00000000.png already exists (4 outputs in all); pass --overwrite" in r.stderr
    assert (tmp_path / "p/ADE_val_00000000.png").stat().st_mtime_ns == before
    assert run(*args, "--skip-bad", "--overwrite").exit_code == 0
    r = run("predict", "lrformer-t", tmp_path / "nothing-here", "--checkpoint", tmp_path / "t.pth", "--out", "x")
    assert r.exit_code == 2 and "nothing-here: no such file or folder" in r.stderr


# ---------------------------------------------------------------- publish
def _pin(tmp_path, monkeypatch, name: str, sha: str) -> None:
    """A local manifest pinning ``name``'s published weights to ``sha``."""
    entry = yaml.safe_load(ZOO_FILE.read_text())["models"][name]
    entry["hub"]["sha256"] = sha
    (tmp_path / "pinned.yaml").write_text(yaml.safe_dump({"models": {name: entry}}))
    monkeypatch.setenv("LRBENCH_ZOO", str(tmp_path / "pinned.yaml"))


def test_publish_claims_nothing_for_other_weights(tmp_path, randomize, save_mmengine):
    """Random weights published under a zoo entry: the card lists no result (not the paper's 37.4 / 38.0, not the
    eval of another file) and says why."""
    path = save_mmengine(randomize(create_model("segformer-b0"), seed=2), tmp_path / "random.pth")
    results = tmp_path / "results"
    results.mkdir()
    run_of_other = {
        "kind": "eval",
        "model": "segformer-b0_ade20k",
        "zoo_entry": "segformer-b0_ade20k",
        "dataset": "ade20k",
        "protocol": "ss",
        "num_images": 2000,
        "complete": True,
        "skipped": [],
        "recipe": "segformer_ade20k",
        "mode": "whole",
        "weights": "zoo",
        "checkpoint_sha256": "1" * 64,
        "mIoU": 37.2,
    }
    (results / "b0.json").write_text(json.dumps(run_of_other))
    args = ["zoo", "publish", "segformer-b0_ade20k", "--checkpoint", path, "--repo-id", "me/b0"]
    r = run(*args, "--dry-run", tmp_path / "card", "--results", results, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["published_weights"] is False
    card = ModelCard.load(tmp_path / "card" / "README.md")
    assert card.data.eval_results is None and "model-index" not in (tmp_path / "card" / "README.md").read_text()
    assert "No mIoU is listed: this file is not the entry's published weights" in card.text
    # a complete eval of this very file is true of it, and is listed
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    (results / "b0.json").write_text(json.dumps(run_of_other | {"checkpoint_sha256": sha, "weights": "file"}))
    assert run(*args, "--dry-run", tmp_path / "card2", "--results", results).exit_code == 0
    card = ModelCard.load(tmp_path / "card2" / "README.md")
    assert [(e.metric_name, e.metric_value) for e in card.data.eval_results] == [
        ("mIoU single scale (measured with lrbench)", 37.2)
    ]


@pytest.fixture
def official(tmp_path, randomize, save_mmengine):
    model = randomize(create_model("lrformer-t"), seed=4).eval()
    return save_mmengine(model, tmp_path / "lrformer-t-160k_ade20k_46.7.pth"), model


def test_publish_dry_run_writes_card_config_and_weights(tmp_path, official, monkeypatch):
    path, model = official
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    _pin(tmp_path, monkeypatch, "lrformer-t_ade20k", sha)  # this file *is* the entry's published weights
    results = tmp_path / "results"
    results.mkdir()
    counted = {
        "kind": "eval",
        "model": "lrformer-t_ade20k",
        "zoo_entry": "lrformer-t_ade20k",
        "dataset": "ade20k",
        "protocol": "ss",
        "num_images": 2000,
        "complete": True,
        "skipped": [],
        "recipe": "lrformer_ade20k",
        "mode": "whole",
        "weights": "file",
        "checkpoint_sha256": sha,
        "mIoU": 46.61,
    }
    (results / "t.json").write_text(json.dumps(counted))
    other = counted | {"checkpoint_sha256": "0" * 64, "mIoU": 12.0}  # a complete eval of other weights
    (results / "o.json").write_text(json.dumps(other))
    r = run(
        "zoo",
        "publish",
        "lrformer-t_ade20k",
        "--checkpoint",
        path,
        "--repo-id",
        "me/lrformer-t",
        "--dry-run",
        tmp_path / "card",
        "--results",
        results,
        "--json",
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    card_dir = tmp_path / "card"
    assert sorted(p.name for p in card_dir.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert res["sha256"] == hashlib.sha256((card_dir / "model.safetensors").read_bytes()).hexdigest()
    config = json.loads((card_dir / "config.json").read_text())
    assert config["architecture"] == "lrformer-t" and config["num_classes"] == 150
    assert (
        config["recipe"]["name"] == "lrformer_ade20k"
        and config["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    card = ModelCard.load(card_dir / "README.md")  # huggingface_hub's own parser
    assert card.data.library_name == "lrbench" and "semantic-segmentation" in card.data.tags
    values = {(e.metric_name.split(" (")[1].split(":")[0].rstrip(")"), e.metric_value) for e in card.data.eval_results}
    assert values == {("published", 46.7), ("measured with lrbench", 46.61)}
    assert all(e.dataset_type == "scene_parse_150" for e in card.data.eval_results)
    loaded = create_model("lrformer-t", checkpoint=str(card_dir / "model.safetensors"))
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))
    r = run("zoo", "publish", "lrformer-t_ade20k", "--checkpoint", path, "--repo-id", "me/x", "--dry-run", card_dir)
    assert r.exit_code == 2 and "exists and is not an empty folder" in r.stderr


def test_publish_then_pull_round_trips(tmp_path, official, hub, monkeypatch, save_mmengine):
    path, model = official
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("LRBENCH_ZOO", str(tmp_path / "my-zoo.yaml"))
    save_mmengine(create_model("lrformer-s"), tmp_path / "s.pth")
    r = run("zoo", "publish", "lrformer-t_ade20k", "--checkpoint", tmp_path / "s.pth", "--repo-id", "me/t")
    assert r.exit_code == 2 and "looks like lrformer-s with 150 classes, not lrformer-t" in r.stderr
    assert hub.commits == [] and hub.repos == {}  # verified before anything is uploaded
    r = run("zoo", "publish", "lrformer-t_ade20k", "--checkpoint", path, "--repo-id", "me/lrformer-t-ade20k", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert hub.repos == {"me/lrformer-t-ade20k": {"private": False}}
    assert hub.commits[0]["files"] == ["README.md", "config.json", "model.safetensors"]
    pinned = res["hub"]
    assert pinned["revision"] == hub.commit and res["manifest_file"] == str(tmp_path / "my-zoo.yaml")
    r = run("zoo", "pull", "lrformer-t_ade20k", "--json")  # from the local manifest: pinned and verified
    assert r.exit_code == 0, r.output
    pulled = json.loads(r.stdout)
    assert pulled["sha256"] == pinned["sha256"] and f"/resolve/{pinned['revision']}/model.safetensors" in str(
        hub.requests
    )
    assert Path(pulled["source"]).read_bytes() == hub.files[("me/lrformer-t-ade20k", "model.safetensors")]
    got = lrbench.create_model("lrformer-t_ade20k", pretrained=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        assert torch.equal(got(x), model(x))
    shutil.rmtree(tmp_path / "lrbench")  # a user without the cache pulls the same bytes
    assert json.loads(run("zoo", "pull", "lrformer-t_ade20k", "--json").stdout)["sha256"] == pinned["sha256"]

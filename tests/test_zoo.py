"""The zoo against a local hub on 127.0.0.1: pull -> verify -> convert -> create_model(pretrained=True)."""

import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from lrbench import create_model
from lrbench.cli import app
from lrbench.engine.models import list_models
from lrbench.engine.weights import pull
from lrbench.errors import UnknownNameError
from lrbench.zoo import ZOO_FILE, ZooError, get_entry, load_zoo

REPO, FILE = "yuhuan-wu/LRFormer-Models", "lrformer-t-160k_ade20k_46.7.pth"


@pytest.fixture
def official_t(hub, tmp_path, randomize, mmengine_bytes):
    """A random-weight LRFormer-T checkpoint in the official mmengine layout, served by the local hub."""
    model = randomize(create_model("lrformer-t"), seed=3).eval()
    data = mmengine_bytes(model)
    (tmp_path / FILE).write_bytes(data)
    return hub.add(REPO, FILE, data), tmp_path / FILE


def _local_manifest(tmp_path, monkeypatch, **hub_overrides) -> None:
    entry = yaml.safe_load(ZOO_FILE.read_text())["models"]["lrformer-t_ade20k"]
    entry["hub"].update(hub_overrides)
    path = tmp_path / "my-zoo.yaml"
    path.write_text(yaml.safe_dump({"models": {"lrformer-t_ade20k": entry}}))
    monkeypatch.setenv("LRBENCH_ZOO", str(path))


def test_manifest_schema_and_coverage():
    zoo = load_zoo()
    for e in zoo.values():
        assert e.arch in list_models()
        assert e.published["source"] or e.arch == "upernet-swin-l"
    # every published number of the reference table is present
    assert zoo["lrformer-s_ade20k"].published["miou_ss"] == 50.0
    assert zoo["lrformer-l_ade20k"].source.filename == "lrformer-l-160k_ade20k_52.6.pth"
    assert zoo["lrformer-l_ade20k"].source.filename_verified and not zoo["lrformer-t_ade20k"].source.filename_verified
    assert zoo["lrformer-b_cityscapes"].published["miou_ss"] == 83.0 and zoo["lrformer-b_cityscapes"].source is None
    assert zoo["lrformer-l_coco-stuff"].num_classes == 171
    assert zoo["segformer-b5_ade20k"].source.repo_id == "nvidia/segformer-b5-finetuned-ade-640-640"
    assert zoo["upernet-swin-t_ade20k"].published["gflops"] == 945
    assert sum(e.family == "segformer" and e.origin == "paper" for e in zoo.values()) == 12


def test_manifest_errors_name_the_file(tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "x": {
                        "arch": "lrformer-q",
                        "dataset": "ade20k",
                        "recipe": "lrformer_ade20k",
                        "hub": None,
                        "published": {},
                    }
                }
            }
        )
    )
    monkeypatch.setenv("LRBENCH_ZOO", str(bad))
    with pytest.raises(ZooError, match=r"bad.yaml: entry 'x': arch 'lrformer-q' is not a registered model"):
        load_zoo()


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match=r"unknown zoo entry 'lrformer-s_ade'; did you mean lrformer-s_ade20k"):
        get_entry("lrformer-s_ade")


def test_pull_convert_and_pretrained_logits(hub, official_t, tmp_path, rand_images):
    digest, original = official_t
    res = pull("lrformer-t_ade20k")
    assert res["sha256"] == digest and not res["cached"]
    assert Path(res["path"]).suffix == ".safetensors" and str(tmp_path / "lrbench") in res["path"]
    assert hub.gets() == 1

    ref = create_model("lrformer-t", checkpoint=str(original))
    got = create_model("lrformer-t_ade20k", pretrained=True)  # a zoo entry name
    x = rand_images(256, 320)
    with torch.inference_mode():
        assert torch.equal(got(x), ref(x))

    # second pull: the remembered file (a HEAD to check it, no listing, no download)
    lists = hub.lists()
    again = pull("lrformer-t_ade20k")
    assert again["cached"] and again["path"] == res["path"] and hub.gets() == 1 and hub.lists() == lists


def test_offline_uses_cache_and_fails_clearly_without(hub, official_t, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ZooError,
        match=r"lrformer-t_ade20k: yuhuan-wu/LRFormer-Models/lrformer-t-160k_ade20k_46.7"
        r".pth@main is not in the cache and HF_HUB_OFFLINE is set",
    ):
        pull("lrformer-t_ade20k")
    assert hub.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    first = pull("lrformer-t_ade20k")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    assert pull("lrformer-t_ade20k")["path"] == first["path"]
    assert len(hub.requests) == n  # nothing reached the server


def test_checksum_mismatch_removes_file(hub, official_t, tmp_path, monkeypatch):
    _local_manifest(tmp_path, monkeypatch, sha256="0" * 64)
    with pytest.raises(ZooError, match=r"checksum mismatch .* expected 0{64}, got [0-9a-f]{64}; the file was removed"):
        pull("lrformer-t_ade20k")
    leftovers = [p for p in (tmp_path / "hf").rglob("*") if p.is_file() or p.is_symlink()]
    assert not [p for p in leftovers if "blobs" in p.parts or "snapshots" in p.parts]
    assert not (tmp_path / "lrbench").exists()
    # the right checksum passes
    _local_manifest(tmp_path, monkeypatch, sha256=official_t[0])
    assert pull("lrformer-t_ade20k")["sha256"] == official_t[0]


def test_server_errors_and_missing_files(hub, official_t):
    hub.fail_with = 403  # (5xx answers are retried by huggingface_hub for ~25 s before the same error)
    with pytest.raises(
        ZooError,
        match=r"lrformer-t_ade20k: the hub at http://127.0.0.1:\d+ answered HTTP 403 for "
        r"yuhuan-wu/LRFormer-Models/lrformer-t-160k_ade20k_46.7.pth@main",
    ):
        pull("lrformer-t_ade20k")
    hub.fail_with = None
    with pytest.raises(
        ZooError,
        match=r"lrformer-s_ade20k: no weight file in yuhuan-wu/LRFormer-Models@main names lrformer-s and ade20k "
        r"\(weight files: lrformer-t-160k_ade20k_46.7.pth\); pick one with `lrbench zoo pull lrformer-s_ade20k "
        r"--filename FILE`",
    ):
        pull("lrformer-s_ade20k")
    with pytest.raises(ZooError, match=r"lrformer-t_cityscapes: no released weights are known"):
        pull("lrformer-t_cityscapes")


def test_not_a_checkpoint_and_wrong_variant(hub, tmp_path, monkeypatch, mmengine_bytes):
    hub.add(REPO, FILE, b"<html>not a checkpoint</html>")
    with pytest.raises(ZooError, match=r"lrformer-t_ade20k: .*not a PyTorch checkpoint"):
        pull("lrformer-t_ade20k")
    assert not (tmp_path / "lrbench").exists()
    hub.add(REPO, FILE, mmengine_bytes(create_model("lrformer-s")))
    with pytest.raises(ZooError, match=r"looks like lrformer-s with 150 classes, not lrformer-t: wrong variant"):
        pull("lrformer-t_ade20k", force=True)


def test_override_from_command_line(hub, official_t):
    digest, _ = official_t
    hub.add("me/mirror", "t.pth", hub.files[(REPO, FILE)])
    res = pull("lrformer-t_ade20k", repo_id="me/mirror", filename="t.pth", sha256=digest)
    # downloaded pinned to the commit the hub served for "main"
    assert res["sha256"] == digest and ("GET", f"/me/mirror/resolve/{hub.commit}/t.pth") in hub.requests
    assert res["origin"] == f"hub me/mirror/t.pth@{hub.commit}"


def test_transformers_segformer_from_hub(hub, tmp_path, rand_images, randomize):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.SegformerConfig(num_labels=150)  # B0
    hf = randomize(transformers.SegformerForSemanticSegmentation(cfg), seed=1).eval()
    buf = io.BytesIO()
    torch.save(hf.state_dict(), buf)
    hub.add("nvidia/segformer-b0-finetuned-ade-512-512", "pytorch_model.bin", buf.getvalue())
    model = create_model("segformer-b0_ade20k", pretrained=True)
    x = rand_images(128, 160)
    with torch.inference_mode():
        ref = hf(pixel_values=x).logits
        assert (model(x) - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_cli_zoo(hub, official_t):
    runner = CliRunner()
    r = runner.invoke(app, ["zoo", "list", "--dataset", "cityscapes", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert {e["name"] for e in rows} >= {"lrformer-t_cityscapes", "segformer-b5_cityscapes"}
    assert all(e["dataset"] == "cityscapes" for e in rows)
    r = runner.invoke(app, ["zoo", "list"])
    assert r.exit_code == 0 and "lrformer-l_ade20k" in r.stdout and "52.6" in r.stdout
    r = runner.invoke(app, ["zoo", "info", "lrformer-l_ade20k", "--json"])
    assert json.loads(r.stdout)["published"]["gflops"] == 183
    r = runner.invoke(app, ["zoo", "pull", "lrformer-t_ade20k", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sha256"] == official_t[0]
    r = runner.invoke(app, ["zoo", "pull", "lrformer-x_ade20k"])
    assert r.exit_code == 2 and "unknown zoo entry 'lrformer-x_ade20k'" in r.stderr

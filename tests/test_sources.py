"""Weights from where they really live: hub repositories laid out like the real ones (files found by listing, pinned
to a commit, remembered, locked), plain URLs like download.openmmlab.com (hash prefix, resume, offline) and mmseg's
checkpoints pulled, converted and loaded strictly."""

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from lrbench import create_model
from lrbench.cli import app
from lrbench.engine.models import list_models
from lrbench.engine.weights import pull
from lrbench.errors import ZooError
from lrbench.sources import HASH_PREFIX, Want, choose_weights, names_arch
from lrbench.zoo import ZOO_FILE, get_entry, load_zoo, resolution

REPO = "yuhuan-wu/LRFormer-Models"
T_FILE = "model_release/lrformer-t-160k_ade20k_46.7.pth"  # moved: the manifest names it at the root
ARCHS = tuple(list_models())
SHARED = Path(__file__).resolve().parents[2] / "shared" / "real-world-facts.md"


def want(arch="lrformer-t", dataset="ade20k", entry=None):
    return Want(entry or f"{arch}_{dataset}", arch, dataset, ARCHS)


def _pth(model) -> bytes:
    buf = io.BytesIO()
    torch.save({"meta": {"mmengine_version": "0.10.6"}, "state_dict": model.state_dict()}, buf)
    return buf.getvalue()


# ---------------------------------------------------------------- choosing a file from a listing
AUTHOR_REPO = [
    ".gitattributes",
    "README.md",
    "configs/lrformer-t-160k_ade20k.py",
    "model_release/lrformer-l-160k_ade20k_52.6.pth",
    T_FILE,
    "model_release/lrformer-t-plus-160k_ade20k-512x512_49.4.pth",  # the "+" model of the same size
    "model_release/lrformer-s-160k_ade20k_50.0.pth",  # another variant
    "pretrained/lrformer_t_in1k.pth",  # backbone only: names no dataset
]


def test_choose_in_a_repo_of_many_models():
    assert choose_weights(AUTHOR_REPO, want(), "lrformer-t-160k_ade20k_46.7.pth", "r") == T_FILE  # moved file
    assert choose_weights(AUTHOR_REPO, want(), "lrformer-t-80k_ade20k_45.0.pth", "r") == T_FILE  # a wrong guess
    assert choose_weights(AUTHOR_REPO, want(), None, "r") == T_FILE
    assert (
        choose_weights(AUTHOR_REPO, want("lrformer-t-plus"), None, "r")
        == "model_release/lrformer-t-plus-160k_ade20k-512x512_49.4.pth"
    )
    assert choose_weights(AUTHOR_REPO, want("lrformer-l"), None, "r") == "model_release/lrformer-l-160k_ade20k_52.6.pth"
    # lrformer-t never matches lrformer-t-plus (nor "+"), and a bare word is not a substring match
    assert not names_arch("lrformer-t-plus-160k_ade20k.pth", "lrformer-t", ARCHS)
    assert not names_arch("LRFormer-T+_ade20k.pth", "lrformer-t", ARCHS)
    assert names_arch("LRFormer_T_ade20k.safetensors", "lrformer-t", ARCHS)
    assert not names_arch("lrformer-tiny_ade20k.pth", "lrformer-t", ARCHS)


def test_choose_in_a_transformers_repo():
    files = ["README.md", "config.json", "preprocessor_config.json", "pytorch_model.bin", "model.safetensors"]
    assert choose_weights(files, want("segformer-b0"), "pytorch_model.bin", "r") == "model.safetensors"
    assert choose_weights(files[:-1], want("segformer-b0"), "model.safetensors", "r") == "pytorch_model.bin"


def test_choose_refuses_ambiguity_and_nothing():
    two = [T_FILE, "model_release/lrformer-t-80k_ade20k_45.9.pth"]
    with pytest.raises(
        ZooError,
        match=r"^lrformer-t_ade20k: 2 files in r fit equally well \(model_release/lrformer-t-160k_ade20k_46.7.pth, "
        r"model_release/lrformer-t-80k_ade20k_45.9.pth\); pick one with `lrbench zoo pull lrformer-t_ade20k "
        r"--filename FILE`",
    ):
        choose_weights(two, want(), None, "r")
    with pytest.raises(ZooError, match=r"no weight file in r names lrformer-b and ade20k \(weight files: .*\.pth"):
        choose_weights(AUTHOR_REPO, want("lrformer-b"), None, "r")
    with pytest.raises(ZooError, match=r"names lrformer-t and cityscapes"):
        choose_weights(AUTHOR_REPO, want("lrformer-t", "cityscapes"), None, "r")


# ---------------------------------------------------------------- the hub, laid out like the real repositories
@pytest.fixture
def author_repo(hub, randomize):
    """yuhuan-wu/LRFormer-Models as it may really be: README, configs, model_release/ with T, T+ and S, and a
    backbone-only file; returns (T's bytes, T's model)."""
    t = randomize(create_model("lrformer-t"), seed=3).eval()
    data = _pth(t)
    hub.add(REPO, "README.md", b"# LRFormer models\n")
    hub.add(REPO, "configs/lrformer-t-160k_ade20k.py", b"_base_ = []\n")
    hub.add(REPO, T_FILE, data)
    hub.add(REPO, "model_release/lrformer-t-plus-160k_ade20k-512x512_49.4.pth", b"decoy: the + model")
    hub.add(REPO, "model_release/lrformer-s-160k_ade20k_50.0.pth", b"decoy: another variant")
    hub.add(REPO, "pretrained/lrformer_t_in1k.pth", b"decoy: a backbone")
    return data, t


def test_moved_file_found_pinned_and_remembered(hub, author_repo, tmp_path, monkeypatch, rand_images):
    data, t = author_repo
    from huggingface_hub.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_info()  # a caller's own level: lrbench quiets the hub for its call only
    try:
        res = pull("lrformer-t_ade20k")
        assert hf_logging.get_verbosity() == hf_logging.INFO
    finally:
        hf_logging.set_verbosity(before)
    assert res["notes"][0] == (f"chose {T_FILE} in {REPO}@main (the manifest names lrformer-t-160k_ade20k_46.7.pth)")
    assert res["sha256"] == __import__("hashlib").sha256(data).hexdigest() and res["verified"]  # the hub's LFS sha256
    assert res["origin"] == f"hub {REPO}/{T_FILE}@{hub.commit}"
    assert (hub.lists(), hub.gets()) == (1, 1)
    assert ("GET", f"/{REPO}/resolve/{hub.commit}/{T_FILE}") in hub.requests  # downloaded at the commit
    x = rand_images(128, 160)
    with torch.inference_mode():
        assert torch.equal(create_model("lrformer-t_ade20k", pretrained=True)(x), t(x))
    assert resolution("lrformer-t_ade20k").filename == T_FILE

    # the repository moves on (a new commit): the remembered commit is still what is used, with no listing
    hub.add(REPO, "model_release/lrformer-t-80k_ade20k_45.9.pth", b"a second T: listing would now be ambiguous")
    again = pull("lrformer-t_ade20k")
    assert again["sha256"] == res["sha256"] and (hub.lists(), hub.gets()) == (1, 1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    n = len(hub.requests)
    assert pull("lrformer-t_ade20k")["path"] == res["path"] and len(hub.requests) == n  # offline: nothing sent

    # a new machine with only the lock file: no listing, the same file at the same commit
    monkeypatch.delenv("HF_HUB_OFFLINE")
    r = CliRunner().invoke(app, ["zoo", "lock", "--out", str(tmp_path / "zoo.lock.yaml"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["entries"] == ["lrformer-t_ade20k"]
    locked = yaml.safe_load((tmp_path / "zoo.lock.yaml").read_text())["models"]["lrformer-t_ade20k"]
    assert locked["hub"] == {
        "repo_id": REPO,
        "filename": T_FILE,
        "revision": res["origin"].rsplit("@", 1)[1],
        "sha256": res["sha256"],
        "filename_verified": True,
    }
    assert locked["published"]["miou_ss"] == 46.7 and locked["recipe"] == "lrformer_ade20k"
    r = CliRunner().invoke(app, ["zoo", "lock", "--out", str(tmp_path / "zoo.lock.yaml")])
    assert r.exit_code == 2 and "already exists; pass --overwrite" in r.stderr
    monkeypatch.setenv("LRBENCH_ZOO", str(tmp_path / "zoo.lock.yaml"))
    monkeypatch.setenv("LRBENCH_HOME", str(tmp_path / "fresh"))
    lists = hub.lists()
    fresh = pull("lrformer-t_ade20k")
    assert fresh["sha256"] == res["sha256"] and hub.lists() == lists and fresh["notes"] == []
    info = CliRunner().invoke(app, ["zoo", "info", "lrformer-t_ade20k", "--json"])
    assert json.loads(info.stdout)["resolved"] == res["origin"]


def test_ambiguous_repo_exits_2_naming_both(hub, author_repo, tmp_path):
    hub.add(REPO, "model_release/lrformer-t-80k_ade20k_45.9.pth", _pth(create_model("lrformer-t")))
    hub.remove(REPO, T_FILE)
    hub.add(REPO, "old/lrformer-t_ade20k.pth", author_repo[0])
    r = CliRunner().invoke(app, ["zoo", "pull", "lrformer-t_ade20k"])
    assert r.exit_code == 2 and r.stdout == ""
    line = " ".join(r.stderr.split())
    assert "2 files in yuhuan-wu/LRFormer-Models@main fit equally well" in line
    assert "model_release/lrformer-t-80k_ade20k_45.9.pth, old/lrformer-t_ade20k.pth" in line
    assert "lrbench zoo pull lrformer-t_ade20k --filename FILE" in line
    assert not (tmp_path / "lrbench" / "resolved.json").exists()
    # picking one: later runs use it without listing
    r = CliRunner().invoke(app, ["zoo", "pull", "lrformer-t_ade20k", "--filename", "old/lrformer-t_ade20k.pth"])
    assert r.exit_code == 0, r.output
    lists = hub.lists()
    assert pull("lrformer-t_ade20k")["source"].endswith("old/lrformer-t_ade20k.pth") and hub.lists() == lists


def test_transformers_repo_prefers_safetensors(hub, tmp_path, monkeypatch, randomize, rand_images):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save as st_save

    repo = "nvidia/segformer-b0-finetuned-ade-512-512"
    cfg = transformers.SegformerConfig(num_labels=150)
    hf = randomize(transformers.SegformerForSemanticSegmentation(cfg), seed=1).eval()
    other = randomize(transformers.SegformerForSemanticSegmentation(cfg), seed=2).eval()
    buf = io.BytesIO()
    torch.save(other.state_dict(), buf)
    hub.add(repo, "README.md", b"---\nlicense: other\n---\n")
    hub.add(repo, "config.json", json.dumps(cfg.to_dict()).encode())
    hub.add(repo, "pytorch_model.bin", buf.getvalue())
    hub.add(repo, "model.safetensors", st_save({k: v.contiguous() for k, v in hf.state_dict().items()}))
    entry = yaml.safe_load(ZOO_FILE.read_text())["models"]["segformer-b0_ade20k"]
    entry["hub"]["filename_verified"] = False  # as if the manifest's pytorch_model.bin were a guess
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump({"models": {"segformer-b0_ade20k": entry}}))
    monkeypatch.setenv("LRBENCH_ZOO", str(tmp_path / "zoo.yaml"))
    res = pull("segformer-b0_ade20k")
    assert res["origin"].startswith(f"hub {repo}/model.safetensors@")
    assert not [p for m, p in hub.requests if m == "GET" and p.endswith("pytorch_model.bin")]
    x = rand_images(128, 160)
    with torch.inference_mode():
        ref = hf(pixel_values=x).logits
        got = create_model("segformer-b0_ade20k", pretrained=True)(x)
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()


# ---------------------------------------------------------------- plain URLs (download.openmmlab.com)
SWIN_T = get_entry("upernet-swin-t-mmseg_ade20k").source.url  # .../upernet_swin_tiny_..._20210531_112542-e380ad3e.pth
SWIN_T_PATH = SWIN_T.split("download.openmmlab.com", 1)[1]


@pytest.fixture(scope="module")
def mmseg_swin_t():
    """Random UperNet-Swin-T weights written as an mmseg checkpoint by the test's own transcription of mmseg's naming
    (tests/test_upernet_swin.py::_to_mmseg: mmseg SwinTransformer keys, Unfold channel order) with mmseg's whole
    training-only auxiliary FCN head; returns (checkpoint bytes, the lrbench model)."""
    from conftest import _randomize
    from test_upernet_swin import _to_mmseg

    model = _randomize(create_model("upernet-swin-t"), seed=11).eval()
    sd = _to_mmseg(model.state_dict())
    sd["auxiliary_head.convs.0.conv.weight"] = torch.randn(256, 384, 3, 3)
    for k in ("weight", "bias", "running_mean", "running_var"):
        sd[f"auxiliary_head.convs.0.bn.{k}"] = torch.rand(256)
    sd["auxiliary_head.conv_seg.bias"] = torch.zeros(150)
    buf = io.BytesIO()
    torch.save({"meta": {"CLASSES": ("wall",), "mmseg_version": "0.14.1"}, "state_dict": sd}, buf)
    return buf.getvalue(), model


def _url_manifest(tmp_path, monkeypatch, entries: dict) -> None:
    shipped = yaml.safe_load(ZOO_FILE.read_text())["models"]
    models = {}
    for name, (base, url) in entries.items():
        e = dict(shipped[base])
        e.pop("hub", None)
        e["url"] = {"url": url, "sha256": None}
        models[name] = e
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump({"models": models}))
    monkeypatch.setenv("LRBENCH_ZOO", str(tmp_path / "zoo.yaml"))


def test_mmseg_facts_are_in_the_zoo():
    """Every checkpoint of the facts file is an entry, with its URL's file name and mmseg's mIoU."""
    zoo = load_zoo()
    mm = {e.source.filename: e for e in zoo.values() if e.origin == "mmseg"}
    assert len(mm) == 32 and all(e.source.kind == "url" for e in mm.values())
    assert all(e.source.url.startswith("https://download.openmmlab.com/mmsegmentation/v0.5/") for e in mm.values())
    e = mm["segformer_mit-b0_512x512_160k_ade20k_20210726_101530-8ffa8fda.pth"]
    assert (e.arch, e.published["miou_ss"], e.published["miou_ms"]) == ("segformer-b0-mmseg", 37.41, 38.34)
    assert (
        mm["mask2former_swin-l-in22k-384x384-pre_8xb2-160k_ade20k-640x640_20221203_235933-7120c214.pth"].published[
            "miou_ss"
        ]
        == 56.01
    )
    if SHARED.is_file():  # the facts file itself, when the checkout sits beside it
        lines = SHARED.read_text().splitlines()
        for name, entry in mm.items():
            suffix = "_".join(name[: -len(".pth")].rsplit("_", 2)[1:])  # <date>_<time>-<hash>
            row = next(line for line in lines if suffix in line)
            assert f"| {entry.published['miou_ss']} |" in row, name
    # torch.hub's own convention agrees on every hash prefix
    from torch.hub import HASH_REGEX

    for name, entry in mm.items():
        assert HASH_REGEX.search(name).group(1) == entry.source.hash_prefix == HASH_PREFIX.search(name).group(1)


def test_mmseg_pull_converts_and_equals_checkpoint(files, mmseg_swin_t, tmp_path, monkeypatch, rand_images):
    data, model = mmseg_swin_t
    digest = files.add(
        SWIN_T_PATH.rsplit("-", 1)[0] + f"-{__import__('hashlib').sha256(data).hexdigest()[:8]}.pth", data
    )
    url = "https://download.openmmlab.com" + next(iter(files.files))
    _url_manifest(tmp_path, monkeypatch, {"upernet-swin-t-mmseg_ade20k": ("upernet-swin-t-mmseg_ade20k", url)})
    (tmp_path / "local.pth").write_bytes(data)
    files.cut_after = len(data) // 3  # the first download is cut short
    r = CliRunner().invoke(app, ["zoo", "pull", "upernet-swin-t-mmseg_ade20k"])
    assert r.exit_code == 2 and "was cut short" in r.stderr and "pull again to continue" in r.stderr
    assert list((tmp_path / "lrbench" / "downloads").rglob("*.pth")) == []  # no file under the cached name yet
    r = CliRunner().invoke(app, ["zoo", "pull", "upernet-swin-t-mmseg_ade20k", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert files.requests[-1][2] == f"bytes={len(data) // 3}-"  # resumed
    assert res["sha256"] == digest and res["verified"] and res["origin"] == f"url {url}"
    assert res["notes"] == ["dropped 7 auxiliary_head keys (training-only FCN head)"]
    x = rand_images(128, 160)
    with torch.inference_mode():
        ref = create_model("upernet-swin-t", checkpoint=str(tmp_path / "local.pth"))(x)
        got = create_model("upernet-swin-t-mmseg_ade20k", pretrained=True)(x)
        assert torch.equal(got, ref) and torch.equal(got, model(x))
    # the cache serves it from now on, offline too
    n = len(files.requests)
    monkeypatch.setenv("LRBENCH_OFFLINE", "1")
    assert pull("upernet-swin-t-mmseg_ade20k")["sha256"] == digest and len(files.requests) == n


def test_wrong_hash_prefix_leaves_nothing(files, mmseg_swin_t, tmp_path):
    files.add(SWIN_T_PATH, mmseg_swin_t[0])  # the shipped entry's real file name: its prefix e380ad3e does not fit
    r = CliRunner().invoke(app, ["zoo", "pull", "upernet-swin-t-mmseg_ade20k"])
    assert r.exit_code == 2 and r.stdout == ""
    line = " ".join(r.stderr.split())
    assert "checksum mismatch for https://download.openmmlab.com/mmsegmentation/v0.5/swin/" in line
    assert "expected a sha256 starting e380ad3e (the file name's hash prefix)" in line
    assert "the download was deleted" in line
    leftovers = [p for p in (tmp_path / "lrbench").rglob("*") if p.is_file()]
    assert leftovers == []


@pytest.mark.slow
def test_url_offline_and_unreachable(tmp_path, monkeypatch):
    monkeypatch.setenv("LRBENCH_HOME", str(tmp_path / "lrbench"))
    monkeypatch.setenv("LRBENCH_OFFLINE", "0")  # restored after the test: `--offline` below sets it in this process
    env = {"LRBENCH_HOME": str(tmp_path / "lrbench"), "LRBENCH_URL_MIRROR": "http://127.0.0.1:9"}
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "lrbench", "zoo", "pull", "segformer-b0-mmseg_ade20k"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **env},
    )
    assert time.monotonic() - t0 < 10
    assert r.returncode == 2 and "segformer-b0-mmseg_ade20k: cannot reach 127.0.0.1:9" in r.stderr
    r = CliRunner().invoke(app, ["--offline", "zoo", "pull", "segformer-b0-mmseg_ade20k"])
    assert r.exit_code == 2
    assert "is not in the cache and offline mode is on (LRBENCH_OFFLINE)" in " ".join(r.stderr.split())


def test_url_and_hub_entries_of_the_same_weights_agree(hub, files, author_repo, tmp_path, monkeypatch, rand_images):
    data, _ = author_repo
    files.add("/mirror/lrformer-t-160k_ade20k_46.7.pth", data)
    shipped = yaml.safe_load(ZOO_FILE.read_text())["models"]["lrformer-t_ade20k"]
    url_entry = {k: v for k, v in shipped.items() if k != "hub"} | {
        "url": {"url": "https://example.org/mirror/lrformer-t-160k_ade20k_46.7.pth", "sha256": None}
    }
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump({"models": {"lrformer-t-url_ade20k": url_entry}}))
    monkeypatch.setenv("LRBENCH_ZOO", str(tmp_path / "zoo.yaml"))
    x = rand_images(96, 128)
    with torch.inference_mode():
        a = create_model("lrformer-t_ade20k", pretrained=True)(x)
        b = create_model("lrformer-t-url_ade20k", pretrained=True)(x)
    assert torch.equal(a, b)
    assert pull("lrformer-t_ade20k")["sha256"] == pull("lrformer-t-url_ade20k")["sha256"]


def test_manifest_source_errors(tmp_path, monkeypatch):
    shipped = yaml.safe_load(ZOO_FILE.read_text())["models"]["lrformer-t_ade20k"]
    for bad, msg in (
        (
            {"hub": None, "url": {"url": "ftp://x/y.pth"}},
            "url must start with https:// (or http://), got 'ftp://x/y.pth'",
        ),
        ({"url": "https://x/y.pth"}, "give either hub or url, not both"),
        ({"hub": {"repo_id": "a/b", "sha256": "XYZ"}}, "hub.sha256 must be 64 lower-case hex digits or null"),
    ):
        (tmp_path / "z.yaml").write_text(yaml.safe_dump({"models": {"x": shipped | bad}}))
        monkeypatch.setenv("LRBENCH_ZOO", str(tmp_path / "z.yaml"))
        with pytest.raises(ZooError) as e:
            load_zoo()
        assert str(e.value) == f"{tmp_path / 'z.yaml'}: entry 'x': {msg}"

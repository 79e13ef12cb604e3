"""UperNet + Swin: equal to transformers on converted weights, mmseg checkpoints, published parameter counts."""

import logging

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

import lrbench
from lrbench.cli import app
from lrbench.engine.checkpoint import save_safetensors
from lrbench.engine.models import create_model, load_checkpoint
from lrbench.engine.models.upernet_swin import CONFIGS, PatchMerging, auxiliary_head_params

transformers = pytest.importorskip("transformers")

# Swin paper, UperNet on ADE20K, params incl. the auxiliary head (millions)
PUBLISHED_PARAMS_M = {"upernet-swin-t": 60, "upernet-swin-s": 81, "upernet-swin-b": 121}


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS_M))
def test_params_match_published(name):
    with torch.device("meta"):
        m = create_model(name)
    n = (sum(p.numel() for p in m.parameters()) + auxiliary_head_params(name)) / 1e6
    assert abs(n - PUBLISHED_PARAMS_M[name]) / PUBLISHED_PARAMS_M[name] < 0.02, n


def hf_upernet(randomize, name="upernet-swin-t", num_classes=150, seed=0):
    cfg = CONFIGS[name]
    bc = transformers.SwinConfig(
        embed_dim=cfg.embed_dim,
        depths=list(cfg.depths),
        num_heads=list(cfg.num_heads),
        window_size=cfg.window_size,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    c = transformers.UperNetConfig(backbone_config=bc, num_labels=num_classes)
    torch.manual_seed(seed)
    return randomize(transformers.UperNetForSemanticSegmentation(c), seed).eval()


@pytest.fixture(scope="module")
def hf_t(randomize):
    return hf_upernet(randomize)


def hf_logits(hf, x):
    """The decode head's logits at 1/4 (transformers' forward upsamples them to the input size)."""
    return hf.decode_head(hf.backbone(x).feature_maps)


def _close(got, ref):
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max(), (got - ref).abs().max()


@pytest.mark.peer
def test_equal_to_transformers(hf_t, tmp_path, rand_images):
    save_safetensors(hf_t.state_dict(), tmp_path / "model.safetensors")
    ours = create_model("upernet-swin-t")
    notes = load_checkpoint(ours, tmp_path / "model.safetensors")
    assert notes == ["dropped 8 auxiliary_head keys (training-only FCN head)"]
    # non-square; then sides that are multiples of neither the window (7) nor 32
    for hw in [(256, 352), (300, 420)]:
        x = rand_images(*hw)
        with torch.inference_mode():
            ref, got = hf_logits(hf_t, x), ours(x)
        _close(got, ref)
        assert got.shape[-2:] == (-(-hw[0] // 4), -(-hw[1] // 4))


def _to_mmseg(sd: dict) -> dict:
    """lrbench naming -> mmseg's, written from mmseg's swin2mmseg conversion (independent of lrbench's converter)."""

    def unfold_order_weight(x):
        o, i = x.shape
        return x.reshape(o, 4, i // 4)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(o, i)

    def unfold_order_norm(x):
        return x.reshape(4, x.shape[0] // 4)[[0, 2, 1, 3], :].transpose(0, 1).reshape(-1)

    out = {}
    for k, v in sd.items():
        if ".downsample.reduction." in k:
            v = unfold_order_weight(v)
        elif ".downsample.norm." in k:
            v = unfold_order_norm(v)
        k = k.replace("backbone.patch_embed.proj.", "backbone.patch_embed.projection.")
        k = k.replace("backbone.layers.", "backbone.stages.").replace(".attn.", ".attn.w_msa.")
        k = k.replace(".mlp.fc1.", ".ffn.layers.0.0.").replace(".mlp.fc2.", ".ffn.layers.1.")
        out[k] = v
    out["auxiliary_head.conv_seg.weight"] = torch.zeros(150, 256, 1, 1)
    return out


def test_mmseg_checkpoint(hf_t, tmp_path, rand_images, caplog):
    ref_model = create_model("upernet-swin-t")
    save_safetensors(hf_t.state_dict(), tmp_path / "hf.safetensors")
    load_checkpoint(ref_model, tmp_path / "hf.safetensors")
    torch.save({"meta": {}, "state_dict": _to_mmseg(ref_model.state_dict())}, tmp_path / "mmseg.pth")
    ours = create_model("upernet-swin-t")
    note = "dropped 1 auxiliary_head keys (training-only FCN head)"
    assert load_checkpoint(ours, tmp_path / "mmseg.pth") == [note] and ours.load_notes == [note]
    # the conversion's notes are never dropped: the Python API keeps and logs them, `lrbench convert` prints them
    with caplog.at_level(logging.INFO, logger="lrbench"):
        api_model = lrbench.create_model("upernet-swin-t", checkpoint=str(tmp_path / "mmseg.pth"))
    assert api_model.load_notes == [note] and note in caplog.text
    r = CliRunner().invoke(
        app, ["convert", "upernet-swin-t", str(tmp_path / "mmseg.pth"), str(tmp_path / "o.safetensors")]
    )
    assert r.exit_code == 0 and f"note: {note}" in r.stdout, r.output
    x = rand_images(256, 288)
    with torch.inference_mode():
        _close(ours(x), hf_logits(hf_t, x))


def test_patch_merging_matches_mmseg_unfold(randomize):
    """mmseg merges 2x2 patches with nn.Unfold; converted weights must give the same output in Swin's order."""
    C, H, W = 8, 6, 10
    x = torch.randn(2, H * W, C)
    norm, red = nn.LayerNorm(4 * C), nn.Linear(4 * C, 2 * C, bias=False)
    randomize(norm), randomize(red)
    with torch.no_grad():
        unf = nn.Unfold(2, stride=2)(x.transpose(1, 2).reshape(2, C, H, W)).transpose(1, 2)  # (B, L, 4C) in c*4+k
        ref = red(norm(unf))
        from lrbench.engine.models.upernet_swin import _unfold_to_swin_order

        pm = PatchMerging(C)
        pm.norm.weight.copy_(_unfold_to_swin_order(norm.weight))
        pm.norm.bias.copy_(_unfold_to_swin_order(norm.bias))
        pm.reduction.weight.copy_(_unfold_to_swin_order(red.weight))
        got, h, w = pm(x, H, W)
    assert (h, w) == (3, 5)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)

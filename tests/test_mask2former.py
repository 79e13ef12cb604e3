"""Mask2Former (LRFormer+, Mask2Former-Swin/ResNet): the official key layout, checkpoints and the attention-mask
rule. Equality with transformers is in test_mask2former_hf.py."""

import pytest
import torch

from lrbench.engine.checkpoint import CheckpointError
from lrbench.engine.models import create_model
from lrbench.engine.models.mask2former import Mask2FormerHead

PLUS = ["lrformer-t-plus", "lrformer-s-plus", "lrformer-b-plus", "lrformer-l-plus", "lrformer-xl-plus"]
DIMS = {  # embed_dims of the official configs
    "lrformer-t-plus": (48, 96, 240, 384),
    "lrformer-s-plus": (64, 128, 320, 512),
    "lrformer-b-plus": (80, 160, 400, 512),
    "lrformer-l-plus": (96, 192, 480, 640),
    "lrformer-xl-plus": (128, 256, 640, 768),
}


def official_head_keys(dims) -> dict[str, tuple]:
    """The 292 mmdet-3.x ``decode_head.`` keys and shapes of an LRFormer+ checkpoint, enumerated from the official
    module structure (MSDeformAttnPixelDecoder + Mask2FormerTransformerDecoder, 150 classes)."""
    C0, C1, C2, C3 = dims
    keys: dict[str, tuple] = {}
    pd = "decode_head.pixel_decoder."
    for i, c in enumerate((C3, C2, C1)):
        keys |= {f"{pd}input_convs.{i}.conv.weight": (256, c, 1, 1), f"{pd}input_convs.{i}.conv.bias": (256,)}
        keys |= {f"{pd}input_convs.{i}.gn.weight": (256,), f"{pd}input_convs.{i}.gn.bias": (256,)}
    for layer in range(6):
        p = f"{pd}encoder.layers.{layer}."
        for name, out, inp in (
            ("self_attn.sampling_offsets", 192, 256),
            ("self_attn.attention_weights", 96, 256),
            ("self_attn.value_proj", 256, 256),
            ("self_attn.output_proj", 256, 256),
            ("ffn.layers.0.0", 1024, 256),
            ("ffn.layers.1", 256, 1024),
        ):
            keys |= {f"{p}{name}.weight": (out, inp), f"{p}{name}.bias": (out,)}
        for n in range(2):
            keys |= {f"{p}norms.{n}.weight": (256,), f"{p}norms.{n}.bias": (256,)}
    keys[f"{pd}level_encoding.weight"] = (3, 256)
    keys |= {f"{pd}lateral_convs.0.conv.weight": (256, C0, 1, 1)}
    keys |= {f"{pd}lateral_convs.0.gn.weight": (256,), f"{pd}lateral_convs.0.gn.bias": (256,)}
    keys |= {f"{pd}output_convs.0.conv.weight": (256, 256, 3, 3)}
    keys |= {f"{pd}output_convs.0.gn.weight": (256,), f"{pd}output_convs.0.gn.bias": (256,)}
    keys |= {f"{pd}mask_feature.weight": (256, 256, 1, 1), f"{pd}mask_feature.bias": (256,)}
    for layer in range(9):
        p = f"decode_head.transformer_decoder.layers.{layer}."
        for attn in ("self_attn", "cross_attn"):
            keys |= {f"{p}{attn}.attn.in_proj_weight": (768, 256), f"{p}{attn}.attn.in_proj_bias": (768,)}
            keys |= {f"{p}{attn}.attn.out_proj.weight": (256, 256), f"{p}{attn}.attn.out_proj.bias": (256,)}
        keys |= {f"{p}ffn.layers.0.0.weight": (2048, 256), f"{p}ffn.layers.0.0.bias": (2048,)}
        keys |= {f"{p}ffn.layers.1.weight": (256, 2048), f"{p}ffn.layers.1.bias": (256,)}
        for n in range(3):
            keys |= {f"{p}norms.{n}.weight": (256,), f"{p}norms.{n}.bias": (256,)}
    keys |= {"decode_head.transformer_decoder.post_norm.weight": (256,)}
    keys |= {"decode_head.transformer_decoder.post_norm.bias": (256,)}
    keys |= {"decode_head.query_embed.weight": (100, 256), "decode_head.query_feat.weight": (100, 256)}
    keys |= {"decode_head.level_embed.weight": (3, 256)}
    keys |= {"decode_head.cls_embed.weight": (151, 256), "decode_head.cls_embed.bias": (151,)}
    for i in (0, 2, 4):
        keys |= {f"decode_head.mask_embed.{i}.weight": (256, 256), f"decode_head.mask_embed.{i}.bias": (256,)}
    return keys


@pytest.mark.parametrize(
    "name,total,params_m",
    [
        ("lrformer-t-plus", 639, 31.0),
        ("lrformer-s-plus", 811, 47.7),
        ("lrformer-b-plus", 1027, 79.8),
        ("lrformer-l-plus", 1133, 119.2),
        ("lrformer-xl-plus", 1271, 204.7),
    ],
)
def test_official_key_layout_and_params(name, total, params_m):
    with torch.device("meta"):
        m = create_model(name)
    sd = m.state_dict()
    head = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("decode_head.")}
    assert len(official_head_keys(DIMS[name])) == 292
    assert head == official_head_keys(DIMS[name])
    assert list(head) == list(official_head_keys(DIMS[name]))  # registration order too (self_attn before cross_attn)
    assert len(sd) == total
    assert all(k.startswith(("backbone.", "decode_head.")) for k in sd)
    n = sum(p.numel() for p in m.parameters()) / 1e6
    assert abs(n - params_m) / params_m < 0.005


def test_official_checkpoint_loads_strictly(randomize, save_mmengine, tmp_path, rand_images):
    src = randomize(create_model("lrformer-t-plus"), seed=3)
    path = save_mmengine(src, tmp_path / "lrformer-t-plus-160k_ade20k-512x512_49.4.pth")
    dst = create_model("lrformer-t-plus", checkpoint=str(path))
    x = rand_images(64, 96)
    with torch.no_grad():
        a, b = src(x), dst(x)
        (ca, ma), (cb, mb) = src.forward_queries(x), dst.forward_queries(x)
    assert torch.equal(a, b) and torch.equal(ca, cb) and torch.equal(ma, mb)
    assert a.shape == (1, 150, 64, 96) and ca.shape == (1, 100, 151) and ma.shape == (1, 100, 16, 24)

    with pytest.raises(CheckpointError) as e:  # wrong variant
        create_model("lrformer-s-plus", checkpoint=str(path))
    assert "looks like lrformer-t-plus with 150 classes, not lrformer-s-plus: wrong variant" in str(e.value)
    with pytest.raises(CheckpointError) as e:  # wrong class count (COCO-Stuff model)
        create_model("lrformer-t-plus", num_classes=171, checkpoint=str(path))
    assert str(e.value).endswith(
        "Likely cause: the checkpoint's head has 150 classes, the model 171: it was trained for another dataset "
        "(that is ade20k: --dataset ade20k)"
    )


def test_any_side_runs(rand_images):
    """mmseg's Mask2Former 640 configs feed unpadded images (no test-time size_divisor): any size must run, with
    scores at the input size (equality with mmseg at such a size: test_peers_mmseg.py)."""
    m = create_model("lrformer-t-plus")
    with torch.no_grad():
        assert m(rand_images(64, 80)).shape == (1, 150, 64, 80)


def test_blocked_everywhere_query_is_unblocked():
    logits = torch.full((1, 3, 4, 4), -5.0)  # query 0: sigmoid < 0.5 everywhere -> blocked everywhere -> unblocked
    logits[0, 1, :2] = 5.0  # query 1: visible in the top half only
    logits[0, 2] = 5.0  # query 2: visible everywhere
    mask = Mask2FormerHead.attention_mask(logits, (4, 4))
    assert mask.shape == (8, 3, 16)  # (B * heads, queries, h*w)
    assert not mask[:, 0].any()
    assert torch.equal(mask[0, 1], torch.tensor([False] * 8 + [True] * 8))
    assert not mask[:, 2].any()
    assert all(torch.equal(mask[h], mask[0]) for h in range(8))


def test_mmseg_swin_checkpoint_loads(randomize, save_mmengine, tmp_path):
    """mmseg 1.x Mask2Former-Swin checkpoints: mmseg Swin keys (backbone.stages..., w_msa, Unfold order) + the
    mmdet head keys, as in the mmseg model zoo."""
    from test_upernet_swin import _to_mmseg

    src = randomize(create_model("mask2former-swin-t"), seed=4)
    own = src.state_dict()
    sd = _to_mmseg({k: v for k, v in own.items() if k.startswith("backbone.")})
    sd |= {k: v for k, v in own.items() if k.startswith("decode_head.")}  # mmdet head keys: lrbench's own naming
    assert any(k.startswith("backbone.stages.") for k in sd)
    dst = create_model("mask2former-swin-t", checkpoint=str(save_mmengine(sd, tmp_path / "m2f_swin.pth")))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_resnet_baselines_are_torchvision_resnets_with_mmseg_keys(randomize, save_mmengine, tmp_path):
    """mask2former-r50/r101: an mmseg checkpoint (torchvision ResNet names under ``backbone.``, mmdet head) loads
    strictly, and the backbone computes what torchvision's ResNet computes (detectron2's R-50 as Mask2Former uses it)."""
    torchvision = pytest.importorskip("torchvision")
    ref = randomize(torchvision.models.resnet50(), seed=6).eval()
    head = randomize(create_model("mask2former-r50"), seed=7).decode_head
    state = {f"backbone.{k}": v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    state |= {f"decode_head.{k}": v for k, v in head.state_dict().items()}
    path = save_mmengine(state, tmp_path / "mask2former_r50_8xb2-160k_ade20k-512x512.pth")
    model = create_model("mask2former-r50", checkpoint=str(path))
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        got = model.backbone(x)
        y = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        for stage, feat in zip((ref.layer1, ref.layer2, ref.layer3, ref.layer4), got):
            y = stage(y)
            torch.testing.assert_close(feat, y, rtol=1e-4, atol=1e-4)
    with pytest.raises(CheckpointError, match="looks like mask2former-r50 with 150 classes, not mask2former-r101"):
        create_model("mask2former-r101", checkpoint=str(path))
    for name, published in (("mask2former-r50", 44), ("mask2former-r101", 63)):
        with torch.device("meta"):
            n = sum(p.numel() for p in create_model(name).parameters()) / 1e6
        assert abs(n / published - 1) < 0.005


def test_convert_needs_no_test_recipe(randomize, save_mmengine, tmp_path):
    """Converting a Cityscapes LRFormer+ checkpoint works although no "+" Cityscapes recipe exists."""
    from typer.testing import CliRunner

    from lrbench.cli import app

    src = randomize(create_model("lrformer-t-plus", num_classes=19), seed=8)
    path = save_mmengine(src, tmp_path / "t-plus-cityscapes.pth")
    out = tmp_path / "t.safetensors"
    r = CliRunner().invoke(app, ["convert", "lrformer-t-plus", str(path), str(out), "--dataset", "cityscapes"])
    assert r.exit_code == 0, r.output
    dst = create_model("lrformer-t-plus", num_classes=19, checkpoint=str(out))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))

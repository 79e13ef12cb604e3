"""Mask2Former (LRFormer+ and Mask2Former-Swin): the official key layout, checkpoints, and equality with transformers.

The transformers oracle: lrbench's head weights are mapped into transformers' own ``Mask2FormerPixelDecoder`` +
``Mask2FormerTransformerModule`` + class predictor with the mmdet -> transformers key map written out below (from the
transformers conversion script's naming, independently of lrbench's reverse map), and both must produce the same
class and mask logits.
"""

import re

import pytest
import torch

from lrbench.checkpoint import CheckpointError
from lrbench.models import create_model, load_state
from lrbench.models.mask2former import Mask2FormerHead

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


def test_sides_must_be_multiples_of_32(rand_images):
    m = create_model("lrformer-t-plus")
    with pytest.raises(ValueError, match=r"multiples of 32, got 64x80: zero-pad the normalised image"):
        m(rand_images(64, 80))


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


# ----------------------------------------------------------------------------------------------------------------
# transformers as the oracle
# ----------------------------------------------------------------------------------------------------------------
transformers = pytest.importorskip("transformers")
pytest.importorskip("scipy")  # transformers' Mask2Former loss needs it at construction

MMDET_TO_HF = [  # regex on the key after "decode_head." (the transformers conversion naming)
    (r"pixel_decoder\.input_convs\.(\d)\.conv\.", r"model.pixel_level_module.decoder.input_projections.\1.0."),
    (r"pixel_decoder\.input_convs\.(\d)\.gn\.", r"model.pixel_level_module.decoder.input_projections.\1.1."),
    (
        r"pixel_decoder\.encoder\.layers\.(\d)\.ffn\.layers\.0\.0\.",
        r"model.pixel_level_module.decoder.encoder.layers.\1.fc1.",
    ),
    (
        r"pixel_decoder\.encoder\.layers\.(\d)\.ffn\.layers\.1\.",
        r"model.pixel_level_module.decoder.encoder.layers.\1.fc2.",
    ),
    (
        r"pixel_decoder\.encoder\.layers\.(\d)\.norms\.0\.",
        r"model.pixel_level_module.decoder.encoder.layers.\1.self_attn_layer_norm.",
    ),
    (
        r"pixel_decoder\.encoder\.layers\.(\d)\.norms\.1\.",
        r"model.pixel_level_module.decoder.encoder.layers.\1.final_layer_norm.",
    ),
    (
        r"pixel_decoder\.encoder\.layers\.(\d)\.self_attn\.",
        r"model.pixel_level_module.decoder.encoder.layers.\1.self_attn.",
    ),
    (r"pixel_decoder\.level_encoding\.weight", "model.pixel_level_module.decoder.level_embed"),
    (r"pixel_decoder\.lateral_convs\.0\.conv\.", "model.pixel_level_module.decoder.adapter_1.0."),
    (r"pixel_decoder\.lateral_convs\.0\.gn\.", "model.pixel_level_module.decoder.adapter_1.1."),
    (r"pixel_decoder\.output_convs\.0\.conv\.", "model.pixel_level_module.decoder.layer_1.0."),
    (r"pixel_decoder\.output_convs\.0\.gn\.", "model.pixel_level_module.decoder.layer_1.1."),
    (r"pixel_decoder\.mask_feature\.", "model.pixel_level_module.decoder.mask_projection."),
    (
        r"transformer_decoder\.layers\.(\d)\.self_attn\.attn\.out_proj\.",
        r"model.transformer_module.decoder.layers.\1.self_attn.out_proj.",
    ),
    (
        r"transformer_decoder\.layers\.(\d)\.cross_attn\.attn\.",
        r"model.transformer_module.decoder.layers.\1.cross_attn.",
    ),
    (r"transformer_decoder\.layers\.(\d)\.ffn\.layers\.0\.0\.", r"model.transformer_module.decoder.layers.\1.fc1."),
    (r"transformer_decoder\.layers\.(\d)\.ffn\.layers\.1\.", r"model.transformer_module.decoder.layers.\1.fc2."),
    (
        r"transformer_decoder\.layers\.(\d)\.norms\.0\.",
        r"model.transformer_module.decoder.layers.\1.cross_attn_layer_norm.",
    ),
    (
        r"transformer_decoder\.layers\.(\d)\.norms\.1\.",
        r"model.transformer_module.decoder.layers.\1.self_attn_layer_norm.",
    ),
    (r"transformer_decoder\.layers\.(\d)\.norms\.2\.", r"model.transformer_module.decoder.layers.\1.final_layer_norm."),
    (r"transformer_decoder\.post_norm\.", "model.transformer_module.decoder.layernorm."),
    (r"query_embed\.", "model.transformer_module.queries_embedder."),
    (r"query_feat\.", "model.transformer_module.queries_features."),
    (r"level_embed\.", "model.transformer_module.level_embed."),
    (r"cls_embed\.", "class_predictor."),
    (r"mask_embed\.0\.", "model.transformer_module.decoder.mask_predictor.mask_embedder.0.0."),
    (r"mask_embed\.2\.", "model.transformer_module.decoder.mask_predictor.mask_embedder.1.0."),
    (r"mask_embed\.4\.", "model.transformer_module.decoder.mask_predictor.mask_embedder.2.0."),
]


def to_hf(head_state: dict) -> dict:
    """lrbench/mmdet head keys (without ``decode_head.``) -> transformers keys; in_proj of the decoder self-attention
    split into q/k/v (rows 0:256, 256:512, 512:768)."""
    out = {}
    for k, v in head_state.items():
        m = re.fullmatch(r"transformer_decoder\.layers\.(\d)\.self_attn\.attn\.in_proj_(weight|bias)", k)
        if m:
            for j, part in enumerate("qkv"):
                out[f"model.transformer_module.decoder.layers.{m.group(1)}.self_attn.{part}_proj.{m.group(2)}"] = v[
                    256 * j : 256 * (j + 1)
                ]
            continue
        for pat, rep in MMDET_TO_HF:
            if re.match(pat, k):
                out[re.sub(pat, rep, k, count=1)] = v
                break
        else:
            raise AssertionError(f"no mapping for {k}")
    return out


class HFHead(torch.nn.Module):
    """transformers' Mask2Former pixel decoder + transformer module + class predictor on given backbone features."""

    def __init__(self, feature_channels, num_classes=150):
        super().__init__()
        from transformers.models.mask2former import modeling_mask2former as hf

        cfg = transformers.Mask2FormerConfig(num_labels=num_classes)
        self.model = torch.nn.Module()
        self.model.pixel_level_module = torch.nn.Module()
        self.model.pixel_level_module.decoder = hf.Mask2FormerPixelDecoder(cfg, feature_channels=feature_channels)
        self.model.transformer_module = hf.Mask2FormerTransformerModule(in_features=256, config=cfg)
        self.class_predictor = torch.nn.Linear(256, num_classes + 1)

    def forward(self, feats):
        pd = self.model.pixel_level_module.decoder(feats)
        out = self.model.transformer_module(pd.multi_scale_features, pd.mask_features)
        cls = self.class_predictor(out.intermediate_hidden_states[-1].transpose(0, 1))
        return cls, out.masks_queries_logits[-1]


def assert_queries_match(got, ref):
    """Class and mask logits equal up to float rounding, allowing a rare flipped attention-mask bit."""
    (c1, m1), (c2, m2) = got, ref
    assert c1.shape == c2.shape and m1.shape == m2.shape
    pix = (m1 > 0) == (m2 > 0)
    assert pix.float().mean() >= 0.999
    close = torch.allclose(c1, c2, atol=1e-4, rtol=1e-4) and torch.allclose(m1, m2, atol=1e-4, rtol=1e-4)
    assert close or pix.float().mean() < 1, (c1 - c2).abs().max()


def jitter_vectors(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Keep the default (realistic) matrix init, under which queries stay distinct and masks are partly open, but
    make every norm and bias different, so that a swapped norm or bias cannot go unnoticed. (Fully random weights
    collapse the 100 queries onto nearly one output and block almost every pixel: a weak test.)"""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in module.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if n.endswith("weight") else 0.0))
    return module


@pytest.fixture(scope="module")
def head_pair():
    feats_ch = list(DIMS["lrformer-t-plus"])
    torch.manual_seed(5)
    ours = jitter_vectors(Mask2FormerHead(feats_ch, 150), seed=5).eval()
    hf = HFHead(feats_ch).eval()
    missing, unexpected = hf.load_state_dict(to_hf(ours.state_dict()), strict=True)
    return ours, hf


def test_head_equals_transformers(head_pair):
    ours, hf = head_pair
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, c, 96 // s, 128 // s, generator=g) for c, s in zip(DIMS["lrformer-t-plus"], (4, 8, 16, 32))]
    with torch.no_grad():
        got, ref = ours(feats), hf(feats)
    assert_queries_match(got, ref)
    assert got[0].shape == (2, 100, 151) and got[1].shape == (2, 100, 24, 32)


def test_query_roles_are_pinned(head_pair):
    """query_embed is the positional part, query_feat the content: swapping them loads fine but changes the output."""
    ours, hf = head_pair
    feats = [torch.randn(1, c, 64 // s, 64 // s) for c, s in zip(DIMS["lrformer-t-plus"], (4, 8, 16, 32))]
    swapped = Mask2FormerHead(list(DIMS["lrformer-t-plus"]), 150).eval()
    sd = dict(ours.state_dict())
    sd["query_embed.weight"], sd["query_feat.weight"] = sd["query_feat.weight"], sd["query_embed.weight"]
    swapped.load_state_dict(sd)
    with torch.no_grad():
        ref, good, bad = hf(feats), ours(feats), swapped(feats)
    assert_queries_match(good, ref)
    assert (good[0].std(1).mean() > 0.01) and 0.05 < (good[1] > 0).float().mean() < 0.95  # distinct queries, open masks
    assert (bad[0] - ref[0]).abs().max() > 0.1 and (bad[1] - ref[1]).abs().max() > 0.1


@pytest.fixture(scope="module")
def hf_swin_t():
    """A transformers Mask2Former-Swin-T for ADE20K (the facebook/mask2former-swin-tiny-ade-semantic config) with
    realistic random weights."""
    bc = transformers.SwinConfig(
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    torch.manual_seed(2)
    hf = transformers.Mask2FormerForUniversalSegmentation(
        transformers.Mask2FormerConfig(backbone_config=bc, num_labels=150)
    )
    # transformers initialises the head's layers at std 0.02, under which the 100 queries give one output: use
    # torch's default init there (as for the head above)
    head = [hf.model.pixel_level_module.decoder, hf.model.transformer_module, hf.class_predictor]
    for m in (m for part in head for m in part.modules()):
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return jitter_vectors(hf, seed=2).eval()


def test_mask2former_swin_t_equals_transformers(hf_swin_t, rand_images):
    hf = hf_swin_t
    ours = create_model("mask2former-swin-t")
    notes = load_state(ours, hf.state_dict(), "transformers Mask2Former")
    assert "dropped criterion.empty_weight (training loss weights)" in notes
    x = rand_images(256, 288)  # stage 4 (8x9) is larger than the window: transformers keeps the shift there too
    with torch.no_grad():
        out = hf(pixel_values=x)
        got = ours.forward_queries(x)
        scores = ours(x)
    assert_queries_match(got, (out.class_queries_logits, out.masks_queries_logits))
    assert got[0].std(1).mean() > 0.01 and 0.05 < (got[1] > 0).float().mean() < 0.95  # not a degenerate case
    # the semantic scores: mask logits upsampled to the input, softmax(cls) without "no object" x sigmoid(mask)
    up = torch.nn.functional.interpolate(out.masks_queries_logits, size=(256, 288), mode="bilinear")
    ref = torch.einsum("bqc,bqhw->bchw", out.class_queries_logits.softmax(-1)[..., :-1], up.sigmoid())
    assert (scores.argmax(1) == ref.argmax(1)).float().mean() > 0.999


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


def test_transformers_checkpoint_from_the_hub(hub, hf_swin_t, rand_images):
    """The zoo entry pulls the transformers checkpoint, converts it once to lrbench safetensors and loads it."""
    import io

    buf = io.BytesIO()
    torch.save(hf_swin_t.state_dict(), buf)
    hub.add("facebook/mask2former-swin-tiny-ade-semantic", "pytorch_model.bin", buf.getvalue())
    from lrbench import create_model as create_pretrained

    model = create_pretrained("mask2former-swin-t_ade20k", pretrained=True)
    x = rand_images(256, 256)
    with torch.no_grad():
        out = hf_swin_t(pixel_values=x)
        assert_queries_match(model.forward_queries(x), (out.class_queries_logits, out.masks_queries_logits))

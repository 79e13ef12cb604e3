"""Mask2Former against transformers, the oracle: lrbench's head weights are mapped into transformers' own
``Mask2FormerPixelDecoder`` + ``Mask2FormerTransformerModule`` + class predictor with the mmdet -> transformers key map
written out below (from the transformers conversion script's naming, independently of lrbench's reverse map), and both
must produce the same class and mask logits; whole transformers Mask2Former-Swin models load and match too."""

import io
import re
import zlib

import pytest
import torch

from lrbench import create_model as create_pretrained
from lrbench.engine.models import create_model, load_state
from lrbench.engine.models.mask2former import Mask2FormerHead

pytestmark = pytest.mark.peer

T_DIMS = (48, 96, 240, 384)  # LRFormer-T+ stage widths

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
    feats_ch = list(T_DIMS)
    torch.manual_seed(5)
    ours = jitter_vectors(Mask2FormerHead(feats_ch, 150), seed=5).eval()
    hf = HFHead(feats_ch).eval()
    missing, unexpected = hf.load_state_dict(to_hf(ours.state_dict()), strict=True)
    return ours, hf


def test_head_equals_transformers(head_pair):
    ours, hf = head_pair
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, c, 96 // s, 128 // s, generator=g) for c, s in zip(T_DIMS, (4, 8, 16, 32))]
    with torch.no_grad():
        got, ref = ours(feats), hf(feats)
    assert_queries_match(got, ref)
    assert got[0].shape == (2, 100, 151) and got[1].shape == (2, 100, 24, 32)


def test_query_roles_are_pinned(head_pair):
    """query_embed is the positional part, query_feat the content: swapping them loads fine but changes the output."""
    ours, hf = head_pair
    feats = [torch.randn(1, c, 64 // s, 64 // s) for c, s in zip(T_DIMS, (4, 8, 16, 32))]
    swapped = Mask2FormerHead(list(T_DIMS), 150).eval()
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
    hf = transformers.Mask2FormerForUniversalSegmentation(
        transformers.Mask2FormerConfig(backbone_config=bc, num_labels=150)
    )
    return set_weights(hf, seed=5).eval()


def set_weights(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight set here, from a generator seeded by the parameter's name: no reliance on any library's random
    init (which changes between versions) or on parameter order. Matrices uniform in +-1/sqrt(fan_in) (torch's
    Linear scale), the query and level embeddings N(0, 1) (embedding scale: distinct queries), norms and biases
    jittered around 1 and 0. Seed 5 gives distinct queries and masks about 70% open on the test input."""
    with torch.no_grad():
        for n, p in module.named_parameters():
            g = torch.Generator().manual_seed(seed * 100003 + zlib.crc32(n.encode()))
            if p.dim() == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if n.endswith("weight") else 0.0))
            elif "queries" in n or "level_embed" in n:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / p[0].numel() ** 0.5)
    return module


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


def test_transformers_checkpoint_from_the_hub(hub, hf_swin_t, rand_images):
    """The zoo entry pulls the transformers checkpoint, converts it once to lrbench safetensors and loads it."""
    buf = io.BytesIO()
    torch.save(hf_swin_t.state_dict(), buf)
    hub.add("facebook/mask2former-swin-tiny-ade-semantic", "pytorch_model.bin", buf.getvalue())
    model = create_pretrained("mask2former-swin-t_ade20k", pretrained=True)
    x = rand_images(256, 256)
    with torch.no_grad():
        out = hf_swin_t(pixel_values=x)
        assert_queries_match(model.forward_queries(x), (out.class_queries_logits, out.masks_queries_logits))

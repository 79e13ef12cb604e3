"""SegFormer B0-B5: equal to transformers' implementation on converted weights; published parameter counts."""

import pytest
import torch
import torch.nn.functional as F

from lrbench.engine.checkpoint import CheckpointError, save_safetensors
from lrbench.engine.models import create_model, load_checkpoint
from lrbench.engine.models.segformer import CONFIGS

transformers = pytest.importorskip("transformers")

# SegFormer paper, ADE20K (150 classes): params in millions
PUBLISHED_PARAMS_M = {
    "segformer-b0": 3.8,
    "segformer-b1": 13.7,
    "segformer-b2": 27.5,
    "segformer-b3": 47.3,
    "segformer-b4": 64.1,
    "segformer-b5": 84.7,
}


@pytest.mark.parametrize("name", list(PUBLISHED_PARAMS_M))
def test_params_match_published(name):
    with torch.device("meta"):
        m = create_model(name)
    n = sum(p.numel() for p in m.parameters()) / 1e6
    assert abs(n - PUBLISHED_PARAMS_M[name]) / PUBLISHED_PARAMS_M[name] < 0.02, n


@pytest.fixture
def hf_segformer(randomize):
    """make(name, num_classes=150, seed=0): a randomly initialised transformers SegFormer of lrbench variant ``name``."""

    def make(name: str, num_classes: int = 150, seed: int = 0):
        cfg = CONFIGS[name]
        hf_cfg = transformers.SegformerConfig(
            hidden_sizes=list(cfg.embed_dims),
            depths=list(cfg.depths),
            decoder_hidden_size=cfg.decoder_dim,
            num_labels=num_classes,
        )
        torch.manual_seed(seed)
        return randomize(transformers.SegformerForSemanticSegmentation(hf_cfg), seed).eval()

    return make


@pytest.mark.peer
@pytest.mark.parametrize("name", ["segformer-b0", "segformer-b2"])
def test_equal_to_transformers(name, tmp_path, rand_images, hf_segformer):
    hf = hf_segformer(name)
    save_safetensors(hf.state_dict(), tmp_path / "model.safetensors")
    ours = create_model(name)
    notes = load_checkpoint(ours, tmp_path / "model.safetensors")
    assert notes == ["converted from transformers SegFormer naming"]
    for hw in [(256, 352), (200, 264)]:  # non-square; and sides that are not multiples of 32
        x = rand_images(*hw)
        with torch.inference_mode():
            ref = hf(pixel_values=x).logits
            got = ours(x)
        assert got.shape == ref.shape == (1, 150, -(-hw[0] // 4), -(-hw[1] // 4))
        assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_transformers_4x_hub_naming(tmp_path, rand_images, hf_segformer):
    """Hub files (nvidia/segformer-*) were written by transformers 4.x, whose names differ from 5.x."""
    hf = hf_segformer("segformer-b0", num_classes=19, seed=3)
    renames = [
        ("segformer.stages.", "segformer.encoder."),
        ("layernorm_before", "layer_norm_1"),
        ("layernorm_after", "layer_norm_2"),
        ("attention.q_proj", "attention.self.query"),
        ("attention.k_proj", "attention.self.key"),
        ("attention.v_proj", "attention.self.value"),
        ("attention.o_proj", "attention.output.dense"),
        ("mlp.fc1", "mlp.dense1"),
        ("mlp.fc2", "mlp.dense2"),
        ("attention.sequence_reduction.sequence_reduction", "attention.self.sr"),
        ("attention.sequence_reduction.layer_norm", "attention.self.layer_norm"),
        ("decode_head.linear_projections", "decode_head.linear_c"),
    ]
    old = {}
    for k, v in hf.state_dict().items():
        for a, b in renames:
            k = k.replace(a, b)
        # 4.x: segformer.encoder.{patch_embeddings,block,layer_norm}.{stage}...
        parts = k.split(".")
        if parts[:2] == ["segformer", "encoder"] and parts[3] in ("patch_embeddings", "blocks", "layer_norm"):
            stage, kind = (
                parts[2],
                {"patch_embeddings": "patch_embeddings", "blocks": "block", "layer_norm": "layer_norm"}[parts[3]],
            )
            k = ".".join(["segformer", "encoder", kind, stage] + parts[4:])
        old[k] = v
    assert "segformer.encoder.block.0.0.attention.self.query.weight" in old
    assert "segformer.encoder.patch_embeddings.0.proj.weight" in old and "segformer.encoder.layer_norm.3.bias" in old
    torch.save(old, tmp_path / "pytorch_model.bin")
    ours = create_model("segformer-b0", num_classes=19, checkpoint=str(tmp_path / "pytorch_model.bin"))
    x = rand_images(128, 192)
    with torch.inference_mode():
        ref, got = hf(pixel_values=x).logits, ours(x)
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_official_and_mmseg_checkpoints(tmp_path, rand_images, hf_segformer):
    """The NVlabs release (fused kv, linear_c1..4) and an mmseg MiT backbone with the MLP head load identically."""
    hf = hf_segformer("segformer-b0", seed=5)
    ref_model = create_model("segformer-b0")
    save_safetensors(hf.state_dict(), tmp_path / "hf.safetensors")
    load_checkpoint(ref_model, tmp_path / "hf.safetensors")
    sd = ref_model.state_dict()
    x = rand_images(160, 224)
    with torch.inference_mode():
        ref = hf(pixel_values=x).logits

    official = {}
    for k, v in sd.items():  # written from the NVlabs module names
        if ".attn.k." in k:
            official[k.replace(".attn.k.", ".attn.kv.")] = torch.cat([v, sd[k.replace(".attn.k.", ".attn.v.")]], 0)
            continue
        if ".attn.v." in k:
            continue
        k = k.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv.").replace(
            "decode_head.conv_seg.", "decode_head.linear_pred."
        )
        if k.startswith("decode_head.linear_c."):
            i = int(k.split(".")[2])
            k = f"decode_head.linear_c{i + 1}." + k.split(".", 3)[3]
        official[k] = v
    torch.save({"state_dict": official}, tmp_path / "segformer.b0.512x512.ade.160k.pth")
    m = create_model("segformer-b0", checkpoint=str(tmp_path / "segformer.b0.512x512.ade.160k.pth"))
    with torch.inference_mode():
        assert (m(x) - ref).abs().max() <= 1e-4 * ref.abs().max()

    mm = {}
    for k, v in sd.items():  # mmseg 1.x mit.py names
        parts = k.split(".")
        if k.startswith("backbone.patch_embed"):
            mm[
                f"backbone.layers.{int(parts[1][-1]) - 1}.0.{'projection' if parts[2] == 'proj' else 'norm'}.{parts[3]}"
            ] = v
        elif k.startswith("backbone.norm"):
            mm[f"backbone.layers.{int(parts[1][-1]) - 1}.2.{parts[2]}"] = v
        elif k.startswith("backbone.block"):
            pre = f"backbone.layers.{int(parts[1][-1]) - 1}.1.{parts[2]}."
            sub = ".".join(parts[3:])
            if sub.startswith(("attn.q.", "attn.k.", "attn.v.")):
                if sub.startswith("attn.q."):
                    kind = parts[-1]
                    qkv = [sd[k.replace(".attn.q.", f".attn.{n}.")] for n in "qkv"]
                    mm[pre + f"attn.attn.in_proj_{kind}"] = torch.cat(qkv, 0)
                continue
            sub = sub.replace("attn.proj.", "attn.attn.out_proj.").replace("mlp.fc1.", "ffn.layers.0.")
            sub = sub.replace("mlp.dwconv.", "ffn.layers.1.").replace("mlp.fc2.", "ffn.layers.4.")
            mm[pre + sub] = (
                v[..., None, None] if sub.startswith("ffn.layers.") and sub.endswith("weight") and v.dim() == 2 else v
            )
        else:
            mm[k] = v
    torch.save({"meta": {}, "state_dict": mm}, tmp_path / "mmseg.pth")
    m = create_model("segformer-b0")
    assert load_checkpoint(m, tmp_path / "mmseg.pth") == ["converted from mmseg MixVisionTransformer naming"]
    with torch.inference_mode():
        assert (m(x) - ref).abs().max() <= 1e-4 * ref.abs().max()

    # mmseg's own SegFormer checkpoints carry mmseg's SegformerHead: they load into segformer-b0-mmseg only
    g = torch.Generator().manual_seed(9)
    head = {}
    for i, c in enumerate((32, 64, 160, 256)):
        head[f"decode_head.convs.{i}.conv.weight"] = torch.randn(256, c, 1, 1, generator=g) / c**0.5
    head["decode_head.fusion_conv.conv.weight"] = torch.randn(256, 1024, 1, 1, generator=g) / 32
    for name in [f"convs.{i}" for i in range(4)] + ["fusion_conv"]:
        head[f"decode_head.{name}.bn.weight"] = torch.rand(256, generator=g) + 0.5
        head[f"decode_head.{name}.bn.bias"] = torch.randn(256, generator=g) * 0.1
        head[f"decode_head.{name}.bn.running_mean"] = torch.randn(256, generator=g) * 0.1
        head[f"decode_head.{name}.bn.running_var"] = torch.rand(256, generator=g) + 0.5
        head[f"decode_head.{name}.bn.num_batches_tracked"] = torch.tensor(7)
    head["decode_head.conv_seg.weight"] = torch.randn(150, 256, 1, 1, generator=g) / 16
    head["decode_head.conv_seg.bias"] = torch.randn(150, generator=g)
    mm_head = {**{k: v for k, v in mm.items() if not k.startswith("decode_head.")}, **head}
    torch.save({"meta": {}, "state_dict": mm_head}, tmp_path / "mmseg_head.pth")
    with pytest.raises(
        CheckpointError,
        match=r"looks like segformer-b0-mmseg \(mmseg's SegformerHead\), not "
        r"segformer-b0: wrong variant",
    ):
        load_checkpoint(create_model("segformer-b0"), tmp_path / "mmseg_head.pth")
    m = create_model("segformer-b0-mmseg", checkpoint=str(tmp_path / "mmseg_head.pth"))

    def conv_module(x, name):  # mmcv ConvModule in eval mode, written from mmseg's SegformerHead
        x = F.conv2d(x, head[f"decode_head.{name}.conv.weight"])
        bn = [head[f"decode_head.{name}.bn.{k}"] for k in ("running_mean", "running_var", "weight", "bias")]
        return F.relu(F.batch_norm(x, *bn, training=False, eps=1e-5))

    with torch.inference_mode():
        feats = hf.segformer(x, output_hidden_states=True).hidden_states  # the 4 stage outputs, NCHW
        outs = [
            F.interpolate(conv_module(f, f"convs.{i}"), size=feats[0].shape[2:], mode="bilinear", align_corners=False)
            for i, f in enumerate(feats)
        ]
        ref = F.conv2d(
            conv_module(torch.cat(outs, 1), "fusion_conv"),
            head["decode_head.conv_seg.weight"],
            head["decode_head.conv_seg.bias"],
        )
        assert (m(x) - ref).abs().max() <= 1e-4 * ref.abs().max()

"""LRFormer: official parameter/key counts, shapes, LRSA invariants, an independent LRSA reference, checkpoints."""

import math
import pickle
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from lrbench.engine.checkpoint import CheckpointError, read_state_dict
from lrbench.engine.models import create_model, list_models, load_checkpoint
from lrbench.engine.models.lrformer import PoolingAttention, pooled_size, pyramid_sizes

# Analytic counts from the official code (../shared/lrformer-facts.md §1.4, §2), 150 classes.
ANALYTIC_PARAMS_M = {"lrformer-t": 13.26, "lrformer-s": 32.22, "lrformer-b": 67.51, "lrformer-l": 110.98}
KEY_COUNTS = {"lrformer-t": 417, "lrformer-s": 589, "lrformer-b": 805, "lrformer-l": 911}


def test_registry_lists_all_variants():
    assert {"lrformer-t", "lrformer-s", "lrformer-b", "lrformer-l", "lrformer-xl"} <= set(list_models())


@pytest.mark.parametrize("name", list(ANALYTIC_PARAMS_M))
def test_params_and_official_keys(name):
    with torch.device("meta"):
        model = create_model(name)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(n - ANALYTIC_PARAMS_M[name]) / ANALYTIC_PARAMS_M[name] < 1e-3
    keys = model.state_dict().keys()
    assert len(keys) == KEY_COUNTS[name]
    for k in (
        "backbone.patch_embed1.conv1.9.weight",
        "backbone.patch_embed1.conv1.7.num_batches_tracked",
        "backbone.d_convs4.3.weight",
        "backbone.block3.0.attn.q.0.weight",
        "backbone.block3.0.attn.kv.0.bias",
        "backbone.block3.0.layer_scale_1",
        "decode_head.squeeze1.bn.running_mean",
        "decode_head.fuse_block2.attn.q.weight",
        "decode_head.fuse_block1.attn.kv.weight",
        "decode_head.conv_seg.weight",
    ):
        assert k in keys, k
    # layer scale only in stages 3 and 4; no pre_norm outside XL
    assert "backbone.block1.0.layer_scale_1" not in keys and "backbone.block2.0.layer_scale_2" not in keys
    assert not any("pre_norm" in k for k in keys)


def test_xl_backbone_prenorm():
    with torch.device("meta"):
        bb = create_model("lrformer-xl")
    keys = bb.state_dict().keys()
    assert len(keys) == 979
    assert abs(sum(p.numel() for p in bb.parameters()) / 1e6 - 184.72) < 0.01
    assert {k.split(".")[1] for k in keys if "pre_norm" in k} == {"7", "15"}


@pytest.mark.parametrize("name", list(ANALYTIC_PARAMS_M))
@pytest.mark.parametrize("hw", [(512, 512), (512, 704)])
def test_forward_shapes(name, hw, rand_images):
    model = create_model(name)
    with torch.inference_mode():
        out = model(rand_images(*hw))
    assert out.shape == (1, 150, hw[0] // 8, hw[1] // 8)
    assert torch.isfinite(out).all()


def test_forward_cityscapes_resolution_and_odd_sizes(rand_images):
    model = create_model("lrformer-t", num_classes=19)
    with torch.inference_mode():
        assert model(rand_images(1024, 2048)).shape == (1, 19, 128, 256)
        # sides that are not multiples of 32 work (real conv output sizes), logits at ceil(H/8) x ceil(W/8)
        assert model(rand_images(500, 375)).shape == (1, 19, math.ceil(500 / 8), math.ceil(375 / 8))
    feats = create_model("lrformer-t", features_only=True)(rand_images(512, 704))
    assert [tuple(f.shape[1:]) for f in feats] == [(48, 128, 176), (96, 64, 88), (240, 32, 44), (384, 16, 22)]


def test_bad_inputs_have_clear_errors():
    model = create_model("lrformer-t")
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\), got \(3, 64, 64\)"):
        model(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="normalised float tensor, got dtype torch.uint8"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at least 32x32"):
        model(torch.zeros(1, 3, 16, 64))


# ---------------------------------------------------------------- LRSA invariants
def _token_counts(model, images):
    """Record (Nq, Nk) at every attention: the inputs of the q and kv projections."""
    seen = []
    for name, mod in model.named_modules():
        if name.endswith("attn"):
            rec = {"name": name}
            mod.q.register_forward_hook(lambda m, i, o, r=rec: r.update(q=tuple(i[0].shape)))
            mod.kv.register_forward_hook(lambda m, i, o, r=rec: r.update(kv=tuple(i[0].shape)))
            seen.append(rec)
    with torch.inference_mode():
        model(images)
    return seen


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_lrsa_token_counts_constant_in_resolution(size, rand_images):
    seen = _token_counts(create_model("lrformer-t"), rand_images(size, size))
    backbone = [r for r in seen if r["name"].startswith("backbone")]
    head = [r for r in seen if r["name"].startswith("decode_head")]
    assert len(backbone) == 2 + 2 + 6 + 3 and len(head) == 2
    for r in backbone:  # every stage: 16x16 queries, 11^2 + 8^2 + 6^2 + 4^2 = 237 keys/values
        assert r["q"][1] == 256 and r["kv"][1] == 237, r
    for r in head:  # head q is a 1x1 conv on the 32x32 pooled map; 22^2 + 16^2 + 12^2 + 8^2 = 948 keys/values
        assert r["q"][2:] == (32, 32) and r["kv"][1] == 948, r


def test_lrsa_grids_for_cityscapes(rand_images):
    assert pooled_size(16, 256, 512) == (16, 32) and pooled_size(16, 32, 64) == (16, 32)
    assert [pooled_size(p, 256, 512) for p in pyramid_sizes(16)] == [(11, 22), (8, 16), (6, 12), (4, 8)]
    assert [pooled_size(p, 128, 176) for p in pyramid_sizes(16)] == [(11, 15), (8, 11), (6, 8), (4, 6)]
    assert pooled_size(16, 128, 176) == (16, 22) and pooled_size(16, 176, 128) == (22, 16)
    assert pyramid_sizes(32) == [22, 16, 12, 8]
    seen = _token_counts(create_model("lrformer-t", num_classes=19), rand_images(1024, 2048))
    for r in seen:
        if r["name"].startswith("backbone"):
            assert r["q"][1] == 16 * 32 and r["kv"][1] == 474, r
        else:
            assert r["q"][2:] == (32, 64) and r["kv"][1] == 1896, r


def _ref_adaptive_avg_pool(x, oh, ow):
    """Adaptive average pooling written out from its definition: bin i spans [floor(i*H/oh), ceil((i+1)*H/oh))."""
    B, C, H, W = x.shape
    out = torch.empty(B, C, oh, ow, dtype=x.dtype)
    for i in range(oh):
        h0, h1 = (i * H) // oh, -((-(i + 1) * H) // oh)
        for j in range(ow):
            w0, w1 = (j * W) // ow, -((-(j + 1) * W) // ow)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(dim=(2, 3))
    return out


def _ref_bilinear(x, H, W):
    """Bilinear upsampling with align_corners=False, written out: src = (dst + 0.5) * in/out - 0.5, clamped at 0."""
    B, C, h, w = x.shape

    def weights(n_out, n_in):
        m = torch.zeros(n_out, n_in, dtype=x.dtype)
        for d in range(n_out):
            s = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(int(math.floor(s)), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            f = s - i0
            m[d, i0] += 1 - f
            m[d, i1] += f
        return m

    return torch.einsum("Hh,bchw,Ww->bcHW", weights(H, h), x, weights(W, w))


def test_lrsa_matches_independent_reference(randomize):
    """PoolingAttention against a from-the-definition reference (loops, explicit softmax), non-square map."""
    torch.manual_seed(0)
    C, heads, H, W = 32, 4, 20, 28
    attn = randomize(PoolingAttention(C, heads, q_pooled_size=16)).double()
    d_convs = randomize(torch.nn.ModuleList(torch.nn.Conv2d(C, C, 3, 1, 1, groups=C) for _ in range(4))).double()
    x = torch.randn(2, H * W, C, dtype=torch.double)
    with torch.no_grad():
        got = attn(x, H, W, d_convs)

        xm = x.transpose(1, 2).reshape(2, C, H, W)
        qh, qw = 16, round(W * 16 / H + 0.001)  # 16 x 22
        q = _ref_adaptive_avg_pool(xm, qh, qw).flatten(2).transpose(1, 2) @ attn.q[0].weight.T + attn.q[0].bias
        pools = []
        for p in (11, 8, 6, 4):
            pm = _ref_adaptive_avg_pool(xm, p, round(W * p / H + 0.001))
            pools.append((pm + d_convs[len(pools)](pm)).flatten(2))
        kvin = torch.cat(pools, 2).transpose(1, 2)
        kvin = F.layer_norm(kvin, (C,), attn.norm.weight, attn.norm.bias, eps=1e-5)
        kv = kvin @ attn.kv[0].weight.T + attn.kv[0].bias
        k, v = kv[..., :C], kv[..., C:]
        hd = C // heads
        outs = []
        for h in range(heads):
            s = q[..., h * hd : (h + 1) * hd] @ k[..., h * hd : (h + 1) * hd].transpose(1, 2) / math.sqrt(hd)
            outs.append(torch.softmax(s, -1) @ v[..., h * hd : (h + 1) * hd])
        out = torch.cat(outs, -1) @ attn.proj.weight.T + attn.proj.bias
        ref = _ref_bilinear(out.transpose(1, 2).reshape(2, C, qh, qw), H, W).flatten(2).transpose(1, 2)
    assert kvin.shape[1] == 11 * 15 + 8 * 11 + 6 * 8 + 4 * 6
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- checkpoints
class FakeHistoryBuffer:
    """Stands for mmengine's HistoryBuffer, which training checkpoints keep in 'message_hub'."""

    def __init__(self, values):
        self.values = values


@pytest.mark.parametrize("name", list(ANALYTIC_PARAMS_M))
def test_official_checkpoint_roundtrip(name, tmp_path, rand_images, randomize, save_mmengine):
    src = randomize(create_model(name), seed=1).eval()
    path = tmp_path / f"{name}.pth"
    save_mmengine(src, path)
    dst = create_model(name, checkpoint=str(path))
    x = rand_images(256, 320)
    with torch.inference_mode():
        ref, got = src(x), dst(x)
    assert torch.equal(ref, got)
    assert ref.std() > 1e-2  # random layer scales: the attention/FFN branches really contribute
    fresh = create_model(name)
    with torch.inference_mode():
        assert not torch.allclose(fresh(x), got)


def test_checkpoint_formats(tmp_path, rand_images, randomize, monkeypatch):
    # mmengine's HistoryBuffer lives in mmengine.logging.history_buffer: pickle records it by that name
    for name in ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    FakeHistoryBuffer.__module__, FakeHistoryBuffer.__qualname__ = "mmengine.logging.history_buffer", "HistoryBuffer"
    sys.modules["mmengine.logging.history_buffer"].HistoryBuffer = FakeHistoryBuffer
    src = randomize(create_model("lrformer-t"), seed=2).eval()
    sd = src.state_dict()
    x = rand_images(128, 128)
    with torch.inference_mode():
        ref = src(x)
    variants = {
        "model.pth": {"model": sd},
        "raw.pth": sd,
        "ddp.pth": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "hub.pth": {"meta": {}, "state_dict": sd, "message_hub": {"log_scalars": {"loss": FakeHistoryBuffer([1.0])}}},
    }
    for fname, obj in variants.items():
        torch.save(obj, tmp_path / fname)
        m = create_model("lrformer-t")
        load_checkpoint(m, tmp_path / fname)
        with torch.inference_mode():
            assert torch.equal(m(x), ref), fname
    from lrbench.engine.checkpoint import save_safetensors

    save_safetensors(sd, tmp_path / "m.safetensors")
    m = create_model("lrformer-t", checkpoint=str(tmp_path / "m.safetensors"))
    with torch.inference_mode():
        assert torch.equal(m(x), ref)


def test_checkpoint_never_executes_pickled_code(tmp_path, monkeypatch):
    """A pickle that would run code in 'meta' is refused with one line saying so; nothing runs."""

    class Evil:
        def __reduce__(self):
            return (eval, ("open('PWNED', 'w').close()",))

    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {"a": torch.ones(2)}, "meta": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only refuses it ...
        torch.load(tmp_path / "evil.pth", weights_only=True)
    with pytest.raises(CheckpointError) as e:  # ... and lrbench says why, without executing anything
        read_state_dict(tmp_path / "evil.pth")
    assert str(e.value) == (
        f"{tmp_path / 'evil.pth'}: refused: the file asks to run code while loading "
        f"(builtins.eval); lrbench never executes code from a checkpoint. Use the official "
        f"file, or re-save only its tensors (torch.save(model.state_dict(), ...)) where you "
        f"trust it"
    )
    assert "weights_only=False" not in str(e.value)
    assert not (tmp_path / "PWNED").exists()


def test_wrong_variant_and_class_count_errors(tmp_path, save_mmengine):
    s = create_model("lrformer-s")
    save_mmengine(s, tmp_path / "s.pth")
    with pytest.raises(CheckpointError) as e:
        create_model("lrformer-t", checkpoint=str(tmp_path / "s.pth"))
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 's.pth'} does not fit lrformer-t (150 classes): ")
    assert "172 unexpected keys" in msg and "shape mismatches" in msg
    assert msg.endswith(
        "Likely cause: the checkpoint looks like lrformer-s with 150 classes, not lrformer-t: wrong variant"
    )
    assert "\n" not in msg

    save_mmengine(create_model("lrformer-t", num_classes=19), tmp_path / "t19.pth")
    with pytest.raises(CheckpointError) as e:
        create_model("lrformer-t", checkpoint=str(tmp_path / "t19.pth"))
    assert str(e.value) == (
        f"{tmp_path / 't19.pth'} does not fit lrformer-t (150 classes): 2 shape mismatches "
        "(decode_head.conv_seg.weight: checkpoint [19, 256, 1, 1] vs model [150, 256, 1, 1], "
        "decode_head.conv_seg.bias: checkpoint [19] vs model [150]). "
        "Likely cause: the checkpoint's head has 19 classes, the model 150: it was trained for another dataset "
        "(that is cityscapes: --dataset cityscapes)"
    )


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes.pth: not a PyTorch checkpoint"):
        read_state_dict(bad)
    with pytest.raises(CheckpointError, match=r"missing.pth: checkpoint file not found"):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "x.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        read_state_dict(tmp_path / "x.safetensors")
    torch.save({"meta": {"a": 1}}, tmp_path / "meta_only.pth")
    with pytest.raises(CheckpointError, match="no state dict found"):
        read_state_dict(tmp_path / "meta_only.pth")


def test_convert_cli_roundtrip(tmp_path, rand_images, randomize):
    from typer.testing import CliRunner

    from lrbench.cli import app

    model = randomize(create_model("lrformer-t", num_classes=19), seed=7)
    torch.save({"meta": {}, "state_dict": model.state_dict()}, tmp_path / "t.pth")
    args = ["convert", "lrformer-t", str(tmp_path / "t.pth"), str(tmp_path / "t.safetensors"), "--num-classes", "19"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    x = rand_images(64, 96)
    with torch.inference_mode():
        assert torch.equal(
            create_model("lrformer-t", 19, checkpoint=str(tmp_path / "t.safetensors"))(x), model.eval()(x)
        )
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "t.safetensors already exists; pass --overwrite" in r.stderr


@pytest.mark.parametrize("name", ["lrformer-t", "lrformer-s"])
def test_fast_path_equals_the_reference_implementation(name, randomize, rand_images):
    """lrbench's inference path (channels-last maps, depth-wise residuals in the kernel) against the official code's
    op-for-op NCHW implementation (tests/reference_lrformer.py) on the same random weights. The fast path is as close
    to the exact (float64) result as the reference itself is in float32; where the logits have a realistic scale
    (T, max |logit| ~ 25) that is within 1e-4."""
    import reference_lrformer

    fast = randomize(create_model(name), seed=3).eval()
    ref = reference_lrformer.build(name, 150).eval()
    ref.load_state_dict(fast.state_dict())
    exact = reference_lrformer.build(name, 150).eval().double()
    exact.load_state_dict(fast.state_dict())
    assert fast.backbone.patch_embed1.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not ref.backbone.patch_embed1.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    for hw in [(128, 160), (200, 264)]:  # non-square; sides that are not multiples of 32
        x = rand_images(*hw)
        with torch.inference_mode():
            a, b, c = fast(x), ref(x), exact(x.double())
        assert a.shape == b.shape and b.abs().max() > 1
        assert (a - c).abs().max() <= 2 * (b - c).abs().max() + 1e-5
        if name == "lrformer-t":
            assert (a - b).abs().max() <= 1e-4

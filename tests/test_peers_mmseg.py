"""mmsegmentation 1.2.2 (and mmdet 3.3.0 for Mask2Former) as the oracle of every ``origin: mmseg`` zoo entry.

For each entry, mmseg's own model is built from the config its URL names (``metafile.yaml``: ``Weights`` -> ``Config``,
configs shipped inside the mmsegmentation wheel), given seeded random weights and saved as a release checkpoint; lrbench
must load that checkpoint strictly through the entry's architecture (every parameter from the file, the same parameter
count) and give the same logits at an awkward input size, in float64 (<= 1e-5 x the logit range; the two agree to
~1e-13 there, so an eps or a missing bias shows, where fp32 rounding alone reaches 1e-5 on the deepest models).
Each entry's recipe is compared with its config's test protocol. The records of what was verified are written to
``zoo/verified.yaml`` by :func:`verified.record` (``lrbench zoo info`` shows them).
"""

from __future__ import annotations

import functools

import peers
import pytest
import torch
from verified import record

from lrbench.engine.models import create_model, load_state
from lrbench.engine.pipeline import MS_RATIOS
from lrbench.recipes import get_recipe
from lrbench.zoo import load_zoo

MMSEG = {n: e for n, e in load_zoo().items() if e.origin == "mmseg"}
TOL = 1e-5  # x the logit range
SIZE = (72, 104)  # awkward: not a multiple of 32 (Swin pads inside; SegFormer's strided convs round)


def config(entry):
    return peers.load_config(peers.config_of_url()[entry.source.url])


def seeded(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random values for every entry of the model's state dict (BN variances positive), loaded into it and
    returned: what a release checkpoint holds. Non-persistent buffers (the data preprocessor's mean/std) stay."""
    g = torch.Generator().manual_seed(seed)
    sd = model.state_dict()
    with torch.no_grad():
        for name, t in sd.items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() <= 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
            else:
                t.copy_(torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


@functools.cache
def built(config_file: str):
    """mmseg's model of a config with seeded weights, and those weights (built once per config)."""
    mm = peers.build_model(peers.load_config(config_file))
    return mm, seeded(mm)


def mm_logits(mm, x: torch.Tensor) -> torch.Tensor:
    """What lrbench's forward returns, from mmseg's modules: the decode head's logits (EncoderDecoder), or
    Mask2Former's per-class scores at the input size."""
    feats = mm.extract_feat(x)
    if type(mm.decode_head).__name__ == "Mask2FormerHead":
        metas = [
            {
                "batch_input_shape": tuple(x.shape[-2:]),
                "img_shape": tuple(x.shape[-2:]),
                "pad_shape": tuple(x.shape[-2:]),
            }
        ]
        return mm.decode_head.predict(feats, metas, mm.test_cfg)
    return mm.decode_head(feats)


def own_params(mm) -> int:
    """Parameters of the model lrbench reproduces: mmseg's training-only auxiliary head left out."""
    return sum(p.numel() for n, p in mm.named_parameters() if not n.startswith("auxiliary_head."))


ARCHS = sorted({(e.arch, e.source.url) for e in MMSEG.values()}, key=lambda a: a[0])
ONE_PER_ARCH = {}
for name, e in MMSEG.items():
    ONE_PER_ARCH.setdefault(e.arch, name)


@pytest.mark.parametrize("name", sorted(ONE_PER_ARCH.values()))
def test_lrbench_equals_mmseg(name):
    entry = MMSEG[name]
    cfg_file = str(peers.config_of_url()[entry.source.url])
    mm, state = built(cfg_file)
    net = create_model(entry.arch, num_classes=entry.num_classes)
    load_state(net, dict(state), source=f"mmseg {cfg_file}")  # strict: raises on any missing or unexpected key
    assert sum(p.numel() for p in net.parameters()) == own_params(mm)
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    try:  # in float64, where the two agree to ~1e-13 unless an operation differs (fp32 rounding alone reaches 1e-5)
        with torch.no_grad():
            want, got = mm_logits(mm.double(), x), net.double().eval()(x)
    finally:
        mm.float()
    assert got.shape == want.shape
    rng = float(want.max() - want.min())
    err = float((got - want).abs().max()) / rng
    assert err <= TOL, f"{name}: max |lrbench - mmseg| = {err:.2e} x the range"
    record(
        entry.arch,
        peer="mmdet" if "mask2former" in entry.arch else "mmsegmentation",
        check=f"strict load, parameter count and float64 logits at {SIZE[0]}x{SIZE[1]} vs the model of "
        f"{cfg_file.split('.mim/')[-1]}",
        tolerance=TOL,
        error=err,
        test="tests/test_peers_mmseg.py::test_lrbench_equals_mmseg",
    )


def protocol_of(cfg) -> dict:
    """The test protocol an mmseg config runs, in a recipe's terms."""
    resize = next(t for t in cfg.test_pipeline if t["type"] == "Resize")
    assert resize.get("keep_ratio") is True
    test_cfg = cfg.model.get("test_cfg") or {}
    pre = cfg.model.data_preprocessor.get("test_cfg") or {}
    out = {
        "library": "mmseg",
        "resize": sorted(resize["scale"], reverse=True),
        "size_divisor": 1,  # no AlignResize in mmseg's own pipelines
        "pad_divisor": int(pre.get("size_divisor") or 1),
        "mode": test_cfg.get("mode", "whole"),
    }
    if out["mode"] == "slide":
        out |= {"crop": list(test_cfg["crop_size"]), "stride": list(test_cfg["stride"])}
    tta = cfg.get("tta_pipeline")
    if tta:  # the ms ratios and flips of the config's TestTimeAug
        aug = next(t for t in tta if t["type"] == "TestTimeAug")["transforms"]
        out["ms_ratios"] = [t["scale_factor"] for t in aug[0]]
        out["ms_flips"] = sorted(t["prob"] for t in aug[1])
    return out


@pytest.mark.parametrize("name", sorted(MMSEG))
def test_recipe_follows_the_config(name):
    entry = MMSEG[name]
    want = protocol_of(config(entry))
    test = dict(get_recipe(entry.recipe)["test"])
    got = {
        "library": test.get("library"),
        "resize": list(test["resize"]),
        "size_divisor": int(test.get("size_divisor") or 1),
        "pad_divisor": int(test.get("pad_divisor") or 1),
        "mode": test.get("mode", "whole"),
    }
    if got["mode"] == "slide":
        got |= {"crop": list(test["crop"]), "stride": list(test["stride"])}
    if "ms_ratios" in want:
        got |= {"ms_ratios": list(MS_RATIOS), "ms_flips": [0.0, 1.0]}
    assert got == want, f"recipes/{entry.recipe}.yaml vs {peers.config_of_url()[entry.source.url].name}"

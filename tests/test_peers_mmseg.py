"""mmsegmentation 1.2.2 (and mmdet 3.3.0 for Mask2Former) as the oracle of every ``origin: mmseg`` zoo entry.

For each entry, mmseg's own model is built from the config its URL names (``metafile.yaml``: ``Weights`` -> ``Config``,
configs shipped inside the mmsegmentation wheel), given seeded random weights and saved as a release checkpoint; lrbench
must load that checkpoint strictly through the entry's architecture (every parameter from the file, the same parameter
count) and give the same logits at an awkward input size, in float64 (<= 1e-5 x the logit range; the two agree to
~1e-13 there, so an eps or a missing bias shows, where fp32 rounding alone reaches 1e-5 on the deepest models).
Each entry's recipe is compared with its config's test protocol. What was verified is the committed record
``zoo/verified.yaml`` (``lrbench zoo info`` shows it): each run checks its errors against it (:func:`verified.check`),
and ``LRBENCH_RECORD_VERIFIED=1`` rewrites it.
"""

from __future__ import annotations

import contextlib
import functools

import peers
import pytest
import torch
import verified
from conftest import fill_random

from lrbench.engine.models import convert_weights, create_model, load_state, model_family
from lrbench.engine.pipeline import MS_RATIOS
from lrbench.recipes import get_recipe
from lrbench.zoo import load_zoo

pytestmark = pytest.mark.peer

MMSEG = {n: e for n, e in load_zoo().items() if e.origin == "mmseg"}
TOL = 1e-5  # x the logit range
SIZE = (72, 104)  # awkward: not a multiple of 32 (Swin pads inside; SegFormer's strided convs round)


def config(entry):
    return peers.load_config(peers.config_of_url()[entry.source.url])


def seeded(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random values for every entry of the model's state dict (BN variances positive), loaded into it and
    returned: what a release checkpoint holds. Non-persistent buffers (the data preprocessor's mean/std) stay."""
    fill_random(model.state_dict().items(), seed)  # state_dict tensors share the model's storage
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
    verified.check(
        entry.arch,
        peer="mmdet" if "mask2former" in entry.arch else "mmsegmentation",
        check=f"strict load, parameter count and float64 logits at {SIZE[0]}x{SIZE[1]} vs the model of "
        f"{cfg_file.split('.mim/')[-1]}",
        tolerance=TOL,
        error=err,
        test="tests/test_peers_mmseg.py::test_lrbench_equals_mmseg",
    )


def test_the_committed_record_covers_every_architecture():
    """zoo/verified.yaml (what `lrbench zoo info` shows) has a record of the parity test for every architecture it
    runs on, each within its tolerance."""
    records = verified.committed()
    test = "tests/test_peers_mmseg.py::test_lrbench_equals_mmseg"
    for name in ONE_PER_ARCH.values():
        rows = [r for r in records.get(MMSEG[name].arch, []) if r["test"] == test]
        assert len(rows) == 1 and rows[0]["measured"] <= rows[0]["tolerance"] == TOL, name
    assert set(records) <= {e.arch for e in MMSEG.values()}  # no record of an architecture this test does not run


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


@contextlib.contextmanager
def shapes_only():
    """Build models on the meta device (no memory, no init): ``Tensor.item`` of a meta tensor (mmseg's MiT reads its
    drop-path rates with it) answers 0.0, which changes no shape."""
    item = torch.Tensor.item
    torch.Tensor.item = lambda t: 0.0 if t.is_meta else item(t)
    try:
        with torch.device("meta"):
            yield
    finally:
        torch.Tensor.item = item


@pytest.mark.parametrize("name", sorted(MMSEG))
def test_every_entry_loads_its_configs_keys_strictly(name):
    """All 32 entries, each with its dataset's class count: the state dict of mmseg's model of the entry's config
    (shapes only), converted by lrbench's loader, has exactly the keys and shapes of the entry's lrbench model."""
    entry = MMSEG[name]
    with shapes_only():
        mm = peers.build_model(config(entry))
        net = create_model(entry.arch, num_classes=entry.num_classes)
    zeros = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in mm.state_dict().items()}  # the converter reads some
    converted, _ = convert_weights(zeros, model_family(entry.arch))
    got = {k: tuple(v.shape) for k, v in converted.items() if not k.startswith("auxiliary_head.")}
    assert got == {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert sum(p.numel() for p in net.parameters()) == own_params(mm)


def test_a_peer_checkpoint_through_its_zoo_entry(files, tmp_path, monkeypatch):
    """The way a user gets mmseg's weights: `lrbench zoo pull ENTRY` downloads the entry's URL (a local server here,
    serving mmseg's model of the entry's config with seeded weights), converts it strictly, and both
    ``create_model(ENTRY, pretrained=True)`` and ``create_model(ENTRY, checkpoint=FILE)`` give mmseg's logits."""
    import io

    import yaml
    from typer.testing import CliRunner

    from lrbench import create_model as api_create_model
    from lrbench.cli import app
    from lrbench.zoo import ZOO_FILE

    entry = MMSEG["segformer-b0-mmseg_cityscapes"]
    mm = peers.build_model(config(entry))
    state = seeded(mm, seed=3)
    buf = io.BytesIO()
    torch.save({"meta": {"mmseg_version": "1.2.2"}, "state_dict": state}, buf)
    digest = files.add(entry.source.url.split("download.openmmlab.com", 1)[1], buf.getvalue())
    manifest = yaml.safe_load(ZOO_FILE.read_text())["models"][entry.name]
    manifest["url"]["sha256"] = digest  # seeded weights cannot match the real file name's hash prefix
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump({"models": {entry.name: manifest}}))
    monkeypatch.setenv("LRBENCH_ZOO", str(tmp_path / "zoo.yaml"))
    r = CliRunner().invoke(app, ["zoo", "pull", entry.name])
    assert r.exit_code == 0, r.output
    (tmp_path / "b0.pth").write_bytes(buf.getvalue())
    x = torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        want = mm_logits(mm.double(), x)
        for net in (
            api_create_model(entry.name, pretrained=True),
            api_create_model(entry.name, checkpoint=str(tmp_path / "b0.pth")),
        ):
            assert net.num_classes == 19
            got = net.double()(x)
            assert float((got - want).abs().max()) <= TOL * float(want.max() - want.min())

"""The Mask2Former test protocol ("+" models, detectron2 baselines): keep-ratio resize, zero-pad the normalised image
to /32, infer, crop the padding, resize to the original; multi-scale + flip; end to end through the CLI."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from lrbench.cli import app
from lrbench.engine.evaluate import evaluate
from lrbench.engine.models import create_model
from lrbench.engine.pipeline import MS_RATIOS, predict_logits
from lrbench.settings import EvalSettings

from synth import Oracle

MEAN = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
STD = torch.tensor([58.395, 57.12, 57.375])[:, None, None]


class PaddedOnly(nn.Module):
    """Refuses inputs whose sides are not multiples of 32 (as the Mask2Former models do) and records them."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0, x.shape
        self.seen.append(x.clone())
        return self.inner(x)


def test_pad_protocol_matches_hand_written_reference(randomize):
    conv = randomize(nn.Conv2d(3, 5, 3, padding=1), seed=3).eval()  # position dependent, sees the padding
    model = PaddedOnly(conv)
    image = torch.randint(0, 256, (50, 70, 3), dtype=torch.uint8)
    test = {"library": "detectron2", "resize": [140, 100], "size_divisor": 1, "pad_divisor": 32, "ms_max_long": 180}
    views = []
    for r in MS_RATIOS:
        # detectron2 ResizeShortestEdge: short side 100 r, long side at most 180 (fixed) for the extra scales; its
        # ResizeTransform resizes uint8 images with PIL's bilinear
        long_max = 140 if r == 1.0 else 180
        f = min(long_max / 70, 100 * r / 50)
        h, w = int(50 * f + 0.5), int(70 * f + 0.5)
        img = (
            image.numpy()
            if (h, w) == (50, 70)
            else np.asarray(Image.fromarray(image.numpy()).resize((w, h), Image.BILINEAR))
        )
        x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float()
        x = (x - MEAN) / STD
        for flip in (False, True):
            xi = torch.flip(x, dims=[3]) if flip else x
            xi = F.pad(xi, (0, -w % 32, 0, -h % 32))  # zeros right/bottom, after the flip
            y = conv(xi)[..., :h, :w]
            y = torch.flip(y, dims=[3]) if flip else y
            views.append(F.interpolate(y, size=(50, 70), mode="bilinear", align_corners=False).detach())
    with torch.no_grad():
        got = predict_logits(model, image, test, protocol="ms")
        torch.testing.assert_close(got, sum(views) / 12, rtol=1e-5, atol=1e-5)
        ss = predict_logits(model, image, test)
        torch.testing.assert_close(ss, views[4], rtol=1e-5, atol=1e-5)  # ratio 1.0, no flip
    last = model.seen[-1]  # the single-scale view: 100x140 padded to 128x160, zeros in normalised space
    assert last.shape[-2:] == (128, 160) and last[..., 100:, :].abs().max() == 0 and last[..., 140:].abs().max() == 0


def test_oracle_scores_100_through_pad_and_crop(tmp_path, synth):
    """Odd image sizes, padding to /32, flips: a model that reads the truth scores exactly 100 only if every view is
    cropped and flipped back correctly."""
    synth(tmp_path, "ade20k", n=3, sizes=((50, 70), (45, 97), (64, 64)))
    recipe = {"name": "pad-only", "test": {"resize": None, "size_divisor": 1, "pad_divisor": 32, "mode": "whole"}}
    model = PaddedOnly(Oracle("ade20k"))
    for protocol in ("ss", "ms"):
        res = evaluate(
            EvalSettings(model, dataset="ade20k", data_root=tmp_path, recipe=recipe, protocol=protocol, workers=0)
        )
        assert res["aAcc"] == 100 and res["mIoU"] == 100
    assert {tuple(x.shape[-2:]) for x in model.seen} == {(64, 96), (64, 128), (64, 64)}


@pytest.mark.slow
def test_cli_eval_lrformer_plus_official_checkpoint(tmp_path, synth, randomize, save_mmengine):
    synth(tmp_path / "data", "ade20k", n=2, sizes=((48, 64), (40, 56)))
    ckpt = save_mmengine(randomize(create_model("lrformer-t-plus"), seed=1), tmp_path / "t-plus.pth")
    base = ["eval", "lrformer-t-plus", "--dataset", "ade20k", "--data-root", str(tmp_path / "data")]
    base += ["--checkpoint", str(ckpt), "--workers", "0"]
    r = CliRunner().invoke(app, base + ["--out", str(tmp_path / "ss.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ss.json").read_text())
    assert res["arch"] == "lrformer-t-plus" and res["recipe"] == "lrformer-plus_ade20k" and res["num_images"] == 2
    assert res["test"] == {
        "library": "mmseg",
        "resize": [2048, 512],
        "size_divisor": 1,
        "pad_divisor": 32,
        "mode": "whole",
    }
    assert 0 <= res["mIoU"] <= 100 and res["complete"]
    # ms: the same path at a quarter of the test scale (12 forwards of up to 1.75 x 128 instead of 1.75 x 512 pixels)
    recipe = {"name": "lrformer-plus_ade20k", "test": {**res["test"], "resize": [512, 128]}}
    res = evaluate(
        EvalSettings(
            "lrformer-t-plus",
            str(tmp_path / "data"),
            checkpoint=str(ckpt),
            protocol="ms",
            limit=1,
            workers=0,
            recipe=recipe,
        )
    )
    assert res["protocol"] == "ms" and res["num_images"] == 1 and res["timings"]["forwards"] == 12
    assert res["merge"] == "softmax"  # mmseg's merge, the recipe's library's


def test_sizes_that_are_not_multiples_of_32_are_refused_before_work():
    r = CliRunner().invoke(app, ["speed", "lrformer-t-plus", "--shape", "500", "500"])
    assert r.exit_code == 2
    assert r.stderr.strip() == (
        "error: --shape 500 500: lrformer-t-plus takes sides that are multiples of 32 (its test protocol zero-pads "
        "images to them); use e.g. --shape 512 512"
    )
    r = CliRunner().invoke(app, ["flops", "mask2former-swin-t", "--shape", "512", "520"])
    assert r.exit_code == 2 and "use e.g. --shape 512 544" in r.stderr


def test_resume_of_a_plus_model_is_bit_identical(tmp_path, synth):
    """Interrupt an LRFormer+ eval (pad protocol) and resume it: the areas equal an uninterrupted run."""
    synth(tmp_path, "ade20k", n=4, sizes=((50, 70), (64, 64)))
    torch.manual_seed(0)
    model = create_model("lrformer-t-plus")
    recipe = {"name": "pad-only", "test": {"resize": None, "size_divisor": 1, "pad_divisor": 32, "mode": "whole"}}
    kw = dict(recipe=recipe, workers=0)
    ref = evaluate(EvalSettings(model, dataset="ade20k", data_root=tmp_path, **kw))
    out = tmp_path / "res.json"

    def interrupt(done, total, summary):
        if done == 2:
            raise KeyboardInterrupt

    try:
        evaluate(
            EvalSettings(model, dataset="ade20k", data_root=tmp_path, out=str(out), state_every=1, **kw),
            progress=interrupt,
        )
    except KeyboardInterrupt:
        pass
    assert not out.exists() and (tmp_path / "res.json.state.pt").exists()
    seen = []
    res = evaluate(
        EvalSettings(model, dataset="ade20k", data_root=tmp_path, out=str(out), resume=True, **kw),
        progress=lambda d, t, s: seen.append(d),
    )
    assert seen == [3, 4] and res["areas"] == ref["areas"]

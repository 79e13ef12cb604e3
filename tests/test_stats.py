"""Error bars: the bootstrap against hand computation, per-image counts against the totals, paired comparisons."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lrbench.cli import app
from lrbench.engine.evaluate import evaluate
from lrbench.errors import ResultError
from lrbench.settings import EvalSettings
from lrbench.stats import counts_from_indices, interval, miou, miou_ci, paired_diff, resampled_miou

from synth import Oracle

IDENTITY = {"name": "identity", "test": {"resize": None, "size_divisor": 1, "mode": "whole"}}

# 3 images x 3 classes; class 2 occurs in image 2 only (elsewhere union 0: skipped by the nan-mean)
INTER = np.array([[2, 0, 0], [1, 3, 0], [0, 1, 1]])
UNION = np.array([[4, 1, 0], [2, 3, 0], [1, 2, 4]])


def test_bootstrap_equals_hand_computation():
    draws = [[0, 0, 1], [1, 2, 2], [0, 1, 2], [2, 2, 2]]
    got = resampled_miou(INTER, UNION, counts_from_indices(draws, 3))
    # by hand: summed areas of each draw, IoU per class present, mean
    # [0,0,1]: I 5,3 / U 10,5 (class 2 absent)  -> (0.5 + 0.6) / 2
    # [1,2,2]: I 1,5,2 / U 4,7,8                -> (0.25 + 5/7 + 0.25) / 3
    # [0,1,2]: I 3,4,1 / U 7,6,4                -> (3/7 + 2/3 + 0.25) / 3
    # [2,2,2]: I 0,3,3 / U 3,6,12               -> (0 + 0.5 + 0.25) / 3
    hand = [55.0, 100 * (0.5 + 5 / 7) / 3, 100 * (3 / 7 + 2 / 3 + 0.25) / 3, 25.0]
    np.testing.assert_allclose(got, hand, rtol=1e-12)
    lo, hi = interval(got)  # percentiles 2.5 / 97.5, linear between the sorted values
    s = sorted(hand)
    assert lo == pytest.approx(s[0] + 0.075 * (s[1] - s[0])) and hi == pytest.approx(s[2] + 0.925 * (s[3] - s[2]))
    assert miou(INTER.sum(0), UNION.sum(0)) == pytest.approx(100 * (3 / 7 + 4 / 6 + 1 / 4) / 3)


def test_interval_narrows_as_one_over_sqrt_n():
    rng = np.random.default_rng(0)
    union = rng.integers(50, 200, size=(300, 20))
    inter = (union * rng.uniform(0.2, 0.9, size=(300, 20))).astype(np.int64)
    w1 = np.diff(miou_ci(inter, union))[0]
    w4 = np.diff(miou_ci(np.tile(inter, (4, 1)), np.tile(union, (4, 1))))[0]  # the same set repeated: 4x the images
    assert 0.4 < w4 / w1 < 0.6  # about 1/sqrt(4)


def test_per_image_counts_sum_to_the_totals_and_compare(tmp_path, synth):
    synth(tmp_path / "data", "ade20k", n=6, sizes=((64, 96), (96, 64)))
    a = evaluate(
        EvalSettings(
            Oracle("ade20k"), tmp_path / "data", "ade20k", recipe=IDENTITY, workers=0, out=str(tmp_path / "a.json")
        )
    )
    z = np.load(tmp_path / a["per_image_file"])
    assert list(z["names"]) == [f"ADE_val_{i:08d}.jpg" for i in range(6)]
    for key, total in (("intersect", "intersect"), ("union", "union"), ("pred_area", "pred"), ("label_area", "label")):
        assert z[key].shape == (6, 150) and z[key].dtype == np.int64
        assert z[key].sum(0).tolist() == a["areas"][total]
    lo, hi = a["miou_ci95"]
    assert lo <= a["mIoU"] <= hi == 100.0  # the oracle: every resample scores 100
    # a result against itself: 0 with a zero-width interval
    r = CliRunner().invoke(app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert {k: got[k] for k in ("miou_a", "miou_b", "diff", "ci95", "n_images")} == {
        "miou_a": 100.0,
        "miou_b": 100.0,
        "diff": 0.0,
        "ci95": [0.0, 0.0],
        "n_images": 6,
    }
    assert all(c["diff"] == 0.0 and c["ci95"] == [0.0, 0.0] for c in got["per_class"])  # the oracle: every class
    # another image list: one clear line
    evaluate(
        EvalSettings(
            Oracle("ade20k"),
            tmp_path / "data",
            "ade20k",
            recipe=IDENTITY,
            workers=0,
            limit=4,
            out=str(tmp_path / "b.json"),
        )
    )
    r = CliRunner().invoke(app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert r.exit_code == 2 and r.stdout == ""
    assert "the two results are over different images (6 vs 4; e.g. ADE_val_00000004.jpg is in only one)" in r.stderr


def test_paired_interval_sees_what_unpaired_ones_miss():
    """B = A with one class slightly worse on every image: the unpaired intervals overlap, the paired one is > 0."""
    rng = np.random.default_rng(1)
    union = rng.integers(50, 400, size=(200, 10))
    inter = (union * rng.uniform(0.1, 0.9, size=(200, 10))).astype(np.int64)
    worse = inter.copy()
    worse[:, 0] = (worse[:, 0] * 0.97).astype(np.int64)
    names = np.array([f"img{i}" for i in range(200)])
    a = {"names": names, "intersect": inter, "union": union}
    b = {"names": names[::-1], "intersect": worse[::-1], "union": union[::-1]}  # matched by name, not by order
    d = paired_diff(a, b)
    (alo, ahi), (blo, bhi) = miou_ci(inter, union), miou_ci(worse, union)
    assert blo < ahi and alo < bhi  # the single intervals overlap
    assert 0 < d["ci95"][0] < d["diff"] < d["ci95"][1] and d["n_images"] == 200
    with pytest.raises(ResultError, match="over different images"):
        paired_diff(a, {**b, "names": np.array([f"x{i}" for i in range(200)])})

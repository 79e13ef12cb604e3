"""lrbench report: fixed result files -> tables, deltas and verdicts; byte-identical when regenerated."""

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lrbench.cli import app
from lrbench.report import render, write_report
from lrbench.results import load_results
from lrbench.zoo import load_zoo


def _write(d, name, obj):
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(json.dumps(obj))


@pytest.fixture
def results(tmp_path):
    r = tmp_path / "results"
    flops = dict(
        kind="flops",
        date="2026-11-25T08:00:00+00:00",
        by_operator={},
        unsupported_ops={},
        params_backbone=0,
        params_head=0,
        gflops_backbone=0,
        gflops_head=0,
    )
    _write(
        r,
        "f1.json",
        {**flops, "model": "lrformer-s", "shape": [512, 512], "num_classes": 150, "params": 32.22e6, "gflops": 39.98},
    )
    _write(
        r,
        "f2.json",
        {**flops, "model": "segformer-b2", "shape": [512, 512], "num_classes": 150, "params": 27.46e6, "gflops": 62.66},
    )
    _write(
        r,
        "f3.json",
        {**flops, "model": "lrformer-t", "shape": [512, 512], "num_classes": 150, "params": 13.26e6, "gflops": 20.0},
    )  # a (pretend) 17.6% miss -> "differs"
    ev = dict(
        kind="eval",
        date="2026-11-25T09:00:00+00:00",
        dataset="ade20k",
        skipped=[],
        device_name="test CPU",
        recipe="lrformer_ade20k",
        mode="whole",
        weights="zoo",
        complete=True,
        checkpoint_sha256="ab" * 32,
    )
    _write(
        r / "eval",
        "s.json",
        {
            **ev,
            "model": "lrformer-s_ade20k",
            "zoo_entry": "lrformer-s_ade20k",
            "protocol": "ss",
            "num_images": 2000,
            "mIoU": 50.21,
        },
    )
    _write(
        r / "eval",
        "b.json",
        {
            **ev,
            "model": "lrformer-b_ade20k",
            "zoo_entry": "lrformer-b_ade20k",
            "protocol": "ss",
            "num_images": 2000,
            "mIoU": 49.0,
        },
    )
    _write(
        r / "eval",
        "t.json",
        {
            **ev,
            "model": "lrformer-t_ade20k",
            "zoo_entry": "lrformer-t_ade20k",
            "protocol": "ss",
            "num_images": 10,
            "mIoU": 60.0,
            "complete": False,
        },
    )
    _write(
        r / "eval",
        "sb2.json",
        {
            **ev,
            "model": "segformer-b2",
            "zoo_entry": "segformer-b2_ade20k",
            "protocol": "ss",
            "num_images": 2000,
            "mIoU": 51.5,
            "recipe": "segformer_ade20k",
        },
    )  # higher: the claim must fail
    _write(
        r / "eval",
        "l.json",
        {
            **ev,
            "model": "lrformer-l",
            "zoo_entry": "lrformer-l_ade20k",
            "protocol": "ss",
            "num_images": 2000,
            "mIoU": 52.6,
            "recipe": "lrformer-l_ade20k",
            "mode": "slide",
        },
    )  # not the protocol
    _write(
        r,
        "claims.json",
        {
            "kind": "claims",
            "date": "2026-11-25T08:30:00+00:00",
            "meta": {"device_name": "test CPU", "torch": "x", "iters": 1, "max_gmacs": 1.0},
            "claims": [{"claim": "LRSA attention FLOPs constant", "verdict": "holds", "evidence": "0.12-0.12"}],
            "attention": [],
            "models": [],
        },
    )
    _write(r, "notes.json", {"something": "else"})  # not a result: ignored
    return r


def test_tables_deltas_and_verdicts(results):
    md, csv = render(load_results(results), load_zoo(), commit="abc1234")
    ade = csv[csv.dataset == "ade20k"].set_index("model")
    s = ade.loc["lrformer-s_ade20k"]
    assert s.gflops_pub == 40 and s.gflops == pytest.approx(39.98) and s.cost_verdict == "matches"
    assert s.miou_ss_delta == pytest.approx(0.21) and s.miou_ss_verdict == "reproduced"
    assert ade.loc["lrformer-b_ade20k"].miou_ss_verdict == "not reproduced"
    assert ade.loc["lrformer-b_ade20k"].miou_ss_delta == pytest.approx(-2.0)
    assert ade.loc["lrformer-t_ade20k"].cost_verdict == "differs"
    assert ade.loc["lrformer-t_ade20k"].miou_ss_verdict.startswith("pending")  # a partial run never counts ...
    assert "| eval/t.json | lrformer-t_ade20k | ade20k | ss | 10 | 60.00 | partial: 10 of 2000 images |" in md  # listed
    assert (
        "| eval/l.json | lrformer-l | ade20k | ss | 2000 | 52.60 | not the published protocol (recipe "
        "lrformer-l_ade20k, mode slide) |" in md
    )
    assert ade.loc["lrformer-l_ade20k"].miou_ss_verdict == (
        "pending: `lrbench eval lrformer-l_ade20k --dataset ade20k --data-root PATH`"
    )
    assert ade.loc["lrformer-l_ade20k"].cost_verdict.startswith("pending: `lrbench flops lrformer-l --shape 640 640")
    cs = csv[csv.dataset == "cityscapes"].set_index("model")
    assert cs.loc["lrformer-t_cityscapes"].miou_ss_verdict.startswith("pending: no released weights")
    assert cs.loc["segformer-b2_cityscapes"].miou_ms_pub == 82.2
    # the markdown carries the same facts, the failing claim and the provenance
    assert (
        "| lrformer-s_ade20k | 512x512 | 32 / 32.22 | 40 / 40.0 (-0.1%) | matches | 50.0 / 50.21 (+0.21) | reproduced"
        in md
    )
    assert (
        "| lrformer-s beats segformer-b2 on ade20k at fewer FLOPs | **fails** | mIoU 50.2 (measured) vs 51.5 "
        "(measured) at 40.0 (measured) vs 62.7 (measured) GFLOPs |" in md
    )
    assert "| LRSA attention FLOPs constant | **holds** | 0.12-0.12 |" in md
    assert "git abc1234" in md and "results dated 2026-11-25T08:00:00+00:00 to 2026-11-25T09:00:00+00:00" in md
    # T's partial run does not count: its claim is judged on the published 46.7 and fails too
    assert (
        "failing: lrformer-t beats segformer-b2 on ade20k at fewer FLOPs, lrformer-s beats segformer-b2 on "
        "ade20k at fewer FLOPs" in md
    )


def test_report_is_byte_identical_when_regenerated(results, tmp_path):
    a = write_report(str(results), str(tmp_path / "A.md"), str(tmp_path / "plots"))
    first = (tmp_path / "A.md").read_bytes(), (tmp_path / "A.csv").read_bytes()
    write_report(str(results), str(tmp_path / "A.md"), str(tmp_path / "plots"))
    assert ((tmp_path / "A.md").read_bytes(), (tmp_path / "A.csv").read_bytes()) == first
    assert a["plots"] == [
        "plots/miou_vs_gflops_ade20k.png",
        "plots/miou_vs_gflops_cityscapes.png",
        "plots/miou_vs_gflops_coco-stuff.png",
    ]
    assert (tmp_path / "plots" / "miou_vs_gflops_ade20k.png").read_bytes()[:4] == b"\x89PNG"


def test_report_cli_and_errors(results, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the runs without --plots write the default plots/ here, not into the checkout
    r = CliRunner().invoke(
        app, ["report", "--results", str(results), "--out", str(tmp_path / "R.md"), "--plots", str(tmp_path / "p")]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "R.md").read_text().startswith("# LRFormer reproduction results")
    # a JSON file that is not an lrbench result (the fixture's notes.json, and another) is named, not silently skipped
    (results / "eval" / "other.json").write_text('{"kind": "benchmark"}')
    r = CliRunner().invoke(app, ["report", "--results", str(results), "--out", str(tmp_path / "R.md")])
    assert r.exit_code == 0, r.output
    notes = [" ".join(line.split()) for line in r.stderr.strip().split("note: ")[1:]]
    assert notes == [
        f"{results / 'eval' / 'other.json'}: not an lrbench result (its kind 'benchmark' is not one of "
        "flops, speed, claims, eval, robust); left out of the report",
        f"{results / 'notes.json'}: not an lrbench result (it has no 'kind' field); left out of the report",
    ]
    r = CliRunner().invoke(app, ["report", "--results", str(tmp_path / "none"), "--out", str(tmp_path / "N.md")])
    assert r.exit_code == 2 and "none: folder not found; run `lrbench reproduce` first" in r.stderr
    (results / "broken.json").write_text("{")
    r = CliRunner().invoke(app, ["report", "--results", str(results), "--out", str(tmp_path / "R2.md")])
    assert r.exit_code == 2 and "broken.json: not valid JSON" in r.stderr and not (tmp_path / "R2.md").exists()


@pytest.mark.slow
def test_reproduce_wiring_with_data_root(tmp_path, monkeypatch, hub, randomize, synth):
    """reproduce: cost measurements (stubbed for speed), an eval pulled through the local hub, then the report."""
    import io

    import torch

    import lrbench.engine.complexity
    import lrbench.engine.measure
    import lrbench.engine.speed
    from lrbench.engine.models import create_model
    from lrbench.engine.reproduce import reproduce

    buf = io.BytesIO()
    torch.save({"state_dict": randomize(create_model("lrformer-t")).state_dict()}, buf)
    hub.add("yuhuan-wu/LRFormer-Models", "lrformer-t-160k_ade20k_46.7.pth", buf.getvalue())
    monkeypatch.setattr(
        lrbench.engine.complexity,
        "count_flops",
        lambda arch, shape, k: {"model": arch, "shape": list(shape), "num_classes": k, "params": 1e6, "gflops": 1.0},
    )
    monkeypatch.setattr(
        lrbench.engine.measure,
        "run_claims",
        lambda sizes, device: {
            "meta": {"device_name": "stub", "torch": "x", "iters": 1, "max_gmacs": 1},
            "attention": [],
            "models": [],
            "claims": [{"claim": "stub claim", "verdict": "holds", "evidence": "-"}],
        },
    )
    monkeypatch.setattr(
        lrbench.engine.speed,
        "measure_speed",
        lambda name, shape, **kw: {
            "model": name,
            "shape": list(shape),
            "batch_size": 1,
            "dtype": "fp32",
            "channels_last": False,
            "compile": False,
            "device_name": "stub",
            "torch": "x",
            "median_ms": 1.0,
            "iqr_ms": 0.0,
            "images_per_s": 1000.0,
        },
    )
    synth(tmp_path / "data", "ade20k", n=2, sizes=((64, 80),))
    outcome = reproduce(str(tmp_path / "data"), quick=True, out=str(tmp_path / "R.md"))
    assert outcome.evals == [str(tmp_path / "results" / "eval" / "lrformer-t_ade20k_ss.json")]
    assert (tmp_path / "plots" / "miou_vs_gflops_ade20k.png").is_file()  # results/ and plots/ beside --out
    skipped = dict(outcome.skipped)
    assert (
        "no weight file in yuhuan-wu/LRFormer-Models@main names lrformer-s and ade20k" in skipped["lrformer-s_ade20k"]
    )
    assert "cannot reach 127.0.0.1:9" in skipped["segformer-b0-mmseg_ade20k"]  # url entries: the mirror (conftest)
    ev = json.loads(Path(outcome.evals[0]).read_text())
    assert ev["weights_source"] == f"hub yuhuan-wu/LRFormer-Models/lrformer-t-160k_ade20k_46.7.pth@{hub.commit}"
    assert ev["checkpoint_sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()
    assert skipped["lrformer-t_cityscapes"] == "no cityscapes folder under --data-root"
    md = (tmp_path / "R.md").read_text()
    assert "| lrformer-t_ade20k | 512x512 | 13 / 1.00 | 17 / 1.0 (-94.1%) | differs | 46.7 / " in md
    assert "partial: 2 of 2000 images" in md and "| stub claim | **holds** | - |" in md
    # entries whose weights the hub does not have stay pending with their command
    assert "pending: `lrbench eval lrformer-s_ade20k --dataset ade20k --data-root PATH`" in md


def test_runs_that_do_not_count_change_no_verdict(
    results, tmp_path, hub, synth, randomize, mmengine_bytes, save_mmengine
):
    """A partial eval of the zoo's weights and an eval of a random local checkpoint, made with the real CLI into the
    results folder, leave every claim verdict and paper row as they were, and are listed apart with the reason."""
    from lrbench.engine.models import create_model
    from lrbench.report import why_not_counted

    before, _ = render(load_results(results), load_zoo(), commit="abc1234")
    hub.add(
        "yuhuan-wu/LRFormer-Models",
        "lrformer-t-160k_ade20k_46.7.pth",
        mmengine_bytes(randomize(create_model("lrformer-t"), seed=5)),
    )
    save_mmengine(randomize(create_model("lrformer-t"), seed=6), tmp_path / "random.pth")
    synth(tmp_path / "data", "ade20k", n=2, sizes=((64, 80),))
    base = ["eval", "lrformer-t_ade20k", "--data-root", str(tmp_path / "data"), "--workers", "0"]
    r = CliRunner().invoke(app, [*base, "--limit", "1", "--out", str(results / "eval" / "smoke.json")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        app, [*base, "--checkpoint", str(tmp_path / "random.pth"), "--out", str(results / "eval" / "mine.json")]
    )
    assert r.exit_code == 0, r.output
    after, _ = render(load_results(results), load_zoo(), commit="abc1234")
    assert after.split("## Your runs")[0] == before.split("## Your runs")[0]  # claims, summary, every paper row
    assert "| eval/smoke.json | lrformer-t_ade20k | ade20k | ss | 1 | " in after and "partial: 1 of 2000" in after
    assert "| eval/mine.json | lrformer-t_ade20k | ade20k | ss | 2 | " in after
    # had the local run covered the whole split, its weights alone would still keep it out of the paper row
    mine = json.loads((results / "eval" / "mine.json").read_text()) | {"num_images": 2000}
    zoo = load_zoo()
    assert mine["weights"] == "file" and mine["complete"]
    assert why_not_counted(mine, zoo) == "local checkpoint (not the zoo's published weights)"
    assert why_not_counted(mine | {"weights": "zoo"}, zoo) is None


def test_plus_claims_compare_whole_inference_against_the_strongest_equally_cheap_rival(tmp_path):
    r = tmp_path / "results"
    base = dict(kind="flops", date="2026-11-25T08:00:00+00:00", by_operator={}, unsupported_ops={}, num_classes=150)
    base |= dict(params=1e8, params_backbone=0, params_head=0, gflops_backbone=0, gflops_head=0, shape=[640, 640])
    _write(r, "a.json", {**base, "model": "lrformer-l-plus", "gflops": 191.0, "gflops_full": 197.3})
    _write(r, "b.json", {**base, "model": "mask2former-swin-b", "gflops": 223.9, "gflops_full": 223.9})
    md, csv = render(load_results(r), load_zoo(), commit="abc1234")
    # the IN-22K Swin-B (53.9) is as cheap as the IN-1K one (52.4): the claim is judged against the stronger
    assert (
        "| lrformer-l-plus beats mask2former-swin-b-in22k on ade20k at fewer FLOPs | **holds** | mIoU 55.8 (published) "
        "vs "
        "53.9 (published) at 197.3 (measured) vs 223.9 (measured) GFLOPs (whole inference) |" in md
    )
    ade = csv[csv.dataset == "ade20k"].set_index("model")
    assert (
        ade.loc["lrformer-l-plus_ade20k"].gflops == 191.0
        and ade.loc["lrformer-l-plus_ade20k"].cost_verdict == "matches"
    )
    # without measurements the published figures are compared: T+ 53 G vs the cheapest Mask2Former above it, R50 71 G
    assert (
        "| lrformer-t-plus beats mask2former-r50 on ade20k at fewer FLOPs | **holds** | mIoU 49.4 (published) vs "
        "47.2 (published) at 53.0 (published) vs 71.0 (published) GFLOPs (whole inference) |" in md
    )


def test_mmseg_baselines_are_their_own_rows(tmp_path):
    """mmseg's retrained checkpoints: listed apart from the papers' rows, judged against mmseg's own mIoU, and never
    a rival in a claim."""
    r = tmp_path / "results"
    run = dict(kind="eval", date="2026-11-25T08:00:00+00:00", dataset="ade20k", protocol="ss", num_images=2000)
    run |= dict(complete=True, skipped=[], recipe="segformer-mmseg_ade20k", mode="whole", weights="zoo")
    run |= dict(model="segformer-b0-mmseg_ade20k", zoo_entry="segformer-b0-mmseg_ade20k", mIoU=37.5)
    _write(r, "e.json", run)
    md, csv = render(load_results(r), load_zoo(), commit="abc1234")
    paper, mmseg = md.split("### mmseg's retrained baselines on ade20k")[:2]
    assert "segformer-b0-mmseg_ade20k" not in paper.split("## ADE20K")[1]
    assert "| segformer-b0-mmseg_ade20k | – | – / – | – / – | – | 37.41 / 37.50 (+0.09) | reproduced |" in mmseg
    assert "| segformer-b0_ade20k | 512x512 |" in paper  # the paper's row is still there, with the paper's 37.4
    claims = md.split("## Claims")[1].split("\n## ")[0]
    assert "mmseg" not in claims
    assert set(csv[csv.origin == "mmseg"].model) >= {"segformer-b0-mmseg_ade20k", "mask2former-swin-l-mmseg_cityscapes"}


def test_unstable_speed_rows_are_flagged(tmp_path):
    r = tmp_path / "results"
    base = dict(kind="speed", date="2026-11-25T08:00:00+00:00", shape=[512, 512], batch_size=1, dtype="fp32")
    base |= dict(channels_last=False, compile=False, device_name="cpu", torch="x", images_per_s=100.0)
    base |= dict(warmup=3, iters=10)
    _write(r, "a.json", {**base, "model": "lrformer-t", "median_ms": 10.0, "iqr_ms": 2.5})  # 25%: still stable
    _write(r, "b.json", {**base, "model": "lrformer-s", "median_ms": 10.0, "iqr_ms": 2.6})
    md, _ = render(load_results(r), load_zoo(), commit="abc1234")
    assert "| lrformer-t | 512x512 | 1 | fp32 | cpu | x | 3 + 10 | 10.0 (2.5) | 100.00 |" in md
    assert "| lrformer-s | 512x512 | 1 | fp32 | cpu | x | 3 + 10 | 10.0 (2.6) **unstable** | 100.00 |" in md
    assert "Forward latency only (a random batch already on the device" in md  # what the timer covers
    assert "**unstable**: 1 row(s) whose spread (IQR) is over 25% of the median" in md
    assert "Rerun `lrbench speed` (or `lrbench reproduce`) on an idle machine" in md


def _counted_eval(r, name: str, entry: str, recipe: str, inter, union, ci=None):
    import numpy as np

    names = np.array([f"ADE_val_{i:08d}.jpg" for i in range(len(inter))])
    np.savez_compressed(
        r / f"{name}.per_image.npz", names=names, intersect=inter, union=union, pred_area=union, label_area=union
    )
    from lrbench.stats import miou, miou_ci

    run = dict(kind="eval", date="2026-11-25T08:00:00+00:00", dataset="ade20k", protocol="ss", num_images=2000)
    run |= dict(complete=True, skipped=[], recipe=recipe, mode="whole", weights="zoo", model=entry, zoo_entry=entry)
    run |= dict(mIoU=float(miou(inter.sum(0), union.sum(0))), per_image_file=f"{name}.per_image.npz")
    run["miou_ci95"] = ci or miou_ci(inter, union)
    _write(r, f"{name}.json", run)
    return run


def test_claims_on_two_measured_results_use_the_paired_interval(tmp_path):
    import numpy as np

    r = tmp_path / "results"
    r.mkdir()
    rng = np.random.default_rng(0)
    union = rng.integers(100, 400, size=(2000, 150))
    base = rng.uniform(0.3, 0.6, size=(2000, 150))
    b = (union * base).astype(np.int64)
    a = (union * np.minimum(base + 0.02, 1)).astype(np.int64)  # A better on every image
    _counted_eval(r, "a", "lrformer-t_ade20k", "lrformer_ade20k", a, union)
    run_b = _counted_eval(r, "b", "segformer-b2_ade20k", "segformer_ade20k", b, union)
    md, csv = render(load_results(r), load_zoo(), commit="abc1234")
    line = next(x for x in md.splitlines() if x.startswith("| lrformer-t beats segformer-b2 on ade20k"))
    assert "| **holds** (+" in line and "95% CI +" in line and "paired bootstrap over the same images" in line
    row = csv[(csv.model == "segformer-b2_ade20k") & (csv.origin == "paper")].iloc[0]
    assert (row.miou_ss_ci_lo, row.miou_ss_ci_hi) == tuple(run_b["miou_ci95"])
    lo, hi = run_b["miou_ci95"]
    assert f"| 46.5 / {run_b['mIoU']:.2f} [{lo:.2f}–{hi:.2f}] (" in md
    # better on some images, worse on others, the same on average: the margin is not significant
    shift = rng.normal(0, 0.05, size=(2000, 1))
    shift -= shift.mean()
    a2 = (union * np.clip(base + shift, 0, 1)).astype(np.int64)
    _counted_eval(r, "a", "lrformer-t_ade20k", "lrformer_ade20k", a2, union)
    md, _ = render(load_results(r), load_zoo(), commit="abc1234")
    line = next(x for x in md.splitlines() if x.startswith("| lrformer-t beats segformer-b2 on ade20k"))
    assert "| **not significant** (" in line


def test_reproduced_when_the_published_value_is_inside_the_interval(tmp_path):
    import numpy as np

    r = tmp_path / "results"
    r.mkdir()
    union = np.full((2000, 150), 100)
    inter = np.full((2000, 150), 45)
    run = _counted_eval(r, "t", "lrformer-t_ade20k", "lrformer_ade20k", inter, union, ci=[45.5, 46.8])
    md, _ = render(load_results(r), load_zoo(), commit="abc1234")
    assert run["mIoU"] == pytest.approx(45.0)  # 1.7 below the published 46.7: reproduced by the interval alone
    assert "| 46.7 / 45.00 [45.50–46.80] (-1.70) | reproduced |" in md
    run = _counted_eval(r, "t", "lrformer-t_ade20k", "lrformer_ade20k", inter, union, ci=[44.5, 45.5])
    md, _ = render(load_results(r), load_zoo(), commit="abc1234")
    assert "| 46.7 / 45.00 [44.50–45.50] (-1.70) | not reproduced |" in md

"""``lrbench report``: RESULTS.md from result files and the zoo's published numbers.

The report is a pure function of the result JSON files (``kind``: flops, speed, claims, eval), the zoo manifest
and the code version: regenerating it from the same inputs gives the same bytes (no clock is read; the date shown is
the newest result's). Verdicts:
- cost: measured GFLOPs within ``FLOPS_TOL`` (5%) of the published figure -> "matches", else "differs" (or, where the
  manifest gives ``published.gflops_unreproducible``, "published figure not reproducible from the released config"
  with its reason);
- mIoU: a measurement that *counts* within ``MIOU_TOL`` (0.5) of the published one -> "reproduced", else "not
  reproduced"; no such measurement is "pending" with the command that would make it.

An eval counts toward a paper row (and so toward a claim) only when it is a complete run (the whole validation
split, nothing skipped) of the entry's own published weights (pulled from the zoo, or a file whose sha256 equals the
manifest's) with the entry's recipe, protocol and mode. Every other eval -- a ``--limit`` smoke test, a local
checkpoint, another mode -- is listed under "Your runs" with the reason, and never changes a verdict.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from . import claims
from .datasets import DATASETS
from .fileio import atomic_write_bytes
from .names import CORRUPTION_GROUPS
from .recipes import default_merge, get_recipe, library_of
from .results import git_commit, load_results
from .robustness import robustness_rows
from .stats import load_per_image, paired_diff
from .version import __version__, torch_version
from .zoo import UNREPRODUCIBLE, ZooEntry, load_zoo

FLOPS_TOL = 0.05
MIOU_TOL = 0.5
UNSTABLE_IQR = 0.25  # a speed row whose IQR exceeds this share of its median is flagged unstable
DATASET_TITLES = {name: spec.title for name, spec in DATASETS.items()}


def _f(v, spec=".1f", none="–") -> str:
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _pub(v) -> str:
    """A published mIoU with the decimals it was published with (papers give one, mmseg's metafiles two)."""
    return _f(v, ".1f" if not _num(v) or round(v, 1) == v else ".2f")


def eval_command(entry, protocol: str) -> str:
    ms = " --protocol ms" if protocol == "ms" else ""
    return f"`lrbench eval {entry.name} --dataset {entry.dataset} --data-root PATH{ms}`"


def not_complete(run: dict, entry: ZooEntry) -> str | None:
    """None when ``run`` is a complete run of ``entry``'s protocol (the whole split, nothing skipped, its recipe
    and mode), else the reason; whose weights it ran is :func:`why_not_counted`'s other half."""
    test = get_recipe(entry.recipe)["test"]
    mode = test.get("mode", "whole")
    if run.get("recipe") != entry.recipe or run.get("mode") != mode:
        return f"not the published protocol (recipe {run.get('recipe')}, mode {run.get('mode')})"
    if "test" in run and run["test"] != test:
        return f"another test pipeline than recipes/{entry.recipe}.yaml has now (run it again)"
    if run.get("protocol") == "ms" and run.get("merge") != default_merge(test):
        return f"ms views merged by {run.get('merge')}, not as {library_of(test)} does"
    if run.get("protocol") not in ("ss", "ms"):
        return f"unknown protocol {run.get('protocol')}"
    val = DATASETS[entry.dataset].val_size
    if run.get("num_images") != val or not run.get("complete", False):
        return f"partial: {run.get('num_images')} of {val} images"
    if run.get("skipped"):
        return f"{len(run['skipped'])} images skipped"
    return None


def why_not_counted(run: dict, zoo: dict[str, ZooEntry]) -> str | None:
    """None when an eval counts toward its zoo entry's paper row (see the module docstring), else the reason."""
    corruption = run.get("corruption")
    if corruption:  # robustness runs are summarised by their `lrbench robust` table, never a paper row
        return f"corrupted images ({corruption['name']}, severity {corruption['severity']})"
    entry = zoo.get(run.get("zoo_entry") or "")
    if entry is None:
        return "not a zoo entry's run"
    why = not_complete(run, entry)
    if why:
        return why
    published_sha = entry.source.sha256 if entry.source else None
    if published_sha is not None:
        if run.get("checkpoint_sha256") != published_sha:
            return "weights differ from the published file (sha256)"
    elif run.get("weights") != "zoo":
        return "local checkpoint (not the zoo's published weights)"
    return None


def robustness_section(results: dict[str, list[dict]]) -> list[str]:
    """Markdown lines of the robustness tables (one per dataset with ``lrbench robust`` summaries); none otherwise."""
    if not results.get("robust"):
        return []
    groups = list(CORRUPTION_GROUPS)
    L = [
        "",
        "## Robustness to corruptions",
        "",
        "`lrbench robust`: the clean validation set and the 16 corruptions of Kamann & Rother (CVPR 2020; "
        "Cityscapes-C, as in the SegFormer paper), made by the `imagecorruptions` package with a seed per image; noise "
        "at severities 1-3, the others at 1-5. Per corruption the mean over its severities; a group is the mean of its "
        "corruptions; mean corrupted = the mean over the corruptions; relative robustness = mean corrupted / clean.",
    ]
    for d in DATASET_TITLES:
        rows = robustness_rows(results["robust"], d)
        if not rows:
            continue
        L += [
            "",
            f"### {d}",
            "",
            "| model | protocol | images | clean mIoU | mean corrupted | "
            + " | ".join(groups)
            + " | relative robustness | complete |",
            "|" + "---|" * (7 + len(groups)),
        ]
        for r in rows:
            g = " | ".join(_f(r["per_group"].get(k), ".2f") for k in groups)
            L.append(
                f"| {r['model']} | {r['protocol']} | {r.get('num_images', '–')} | {_f(r['clean_mIoU'], '.2f')} | "
                f"{_f(r['mean_corrupted_mIoU'], '.2f')} | {g} | {_f(r.get('relative_robustness'), '.1f')}% | "
                f"{'yes' if r.get('complete') else 'partial'} |"
            )
    return L


def split_evals(evals: list[dict], zoo: dict[str, ZooEntry]) -> tuple[list[dict], list[tuple[dict, str]]]:
    """(runs that count, [(other run, why it does not count)])."""
    counted, others = [], []
    for run in evals:
        why = why_not_counted(run, zoo)
        if why is None:
            counted.append(run)
        else:
            others.append((run, why))
    return counted, others


def _miou_cell(entry: ZooEntry, protocol: str, counted: list[dict]) -> tuple[float | None, str, dict | None]:
    """(measured mIoU, verdict, the run) for one entry and protocol, from the runs that count. Reproduced: the
    published value within ``MIOU_TOL`` of the measured one, or inside its 95% confidence interval."""
    published = entry.published.get(f"miou_{protocol}")
    runs = [r for r in counted if r.get("zoo_entry") == entry.name and r.get("protocol") == protocol]
    run = runs[-1] if runs else None
    if run is None:
        if published is None:
            return None, "–", None
        if entry.source is None:
            return (
                None,
                (
                    "pending: no released weights; with your own: "
                    + eval_command(entry, protocol)[:-1]
                    + " --checkpoint FILE`"
                ),
                None,
            )
        return None, "pending: " + eval_command(entry, protocol), None
    measured = run["mIoU"]
    if published is None:
        return measured, "measured (nothing published)", run
    lo, hi = run.get("miou_ci95") or (measured, measured)
    ok = abs(measured - published) <= MIOU_TOL or lo <= published <= hi
    return measured, "reproduced" if ok else "not reproduced", run


def dataset_table(
    dataset: str, zoo: dict, results: dict[str, list[dict]], counted: list[dict], origin: str = "paper"
) -> pd.DataFrame:
    """One row per zoo entry of ``dataset`` whose numbers come from ``origin`` (the papers', or mmseg's retrained
    baselines): published vs measured params, GFLOPs and mIoU (ss and ms)."""
    flops = {(r["model"], tuple(r["shape"]), r["num_classes"]): r for r in results["flops"]}
    rows = []
    for e in (e for e in zoo.values() if e.dataset == dataset and e.origin == origin):
        pub = e.published
        shape = tuple(pub.get("flops_shape") or ())
        f = flops.get((e.arch, shape, e.num_classes))
        params = f["params"] / 1e6 if f else None
        gflops = f["gflops"] if f else None
        gflops_full = f.get("gflops_full", gflops) if f else None
        if not shape:
            cost = "–"
        elif gflops is None:
            cost = f"pending: `lrbench flops {e.arch} --shape {shape[0]} {shape[1]} --dataset {dataset}`"
        elif pub.get("gflops") is None:
            cost = "measured (nothing published)"
        else:
            cost = "matches" if abs(gflops - pub["gflops"]) / pub["gflops"] <= FLOPS_TOL else "differs"
            if cost == "differs" and pub.get("gflops_unreproducible"):
                cost = f"{UNREPRODUCIBLE}: {pub['gflops_unreproducible']}"
        ss, v_ss, run_ss = _miou_cell(e, "ss", counted)
        ms, v_ms, run_ms = _miou_cell(e, "ms", counted)
        rows.append(
            {
                "model": e.name,
                "family": e.family,
                "input": f"{shape[0]}x{shape[1]}" if shape else None,
                "params_pub": pub.get("params_m"),
                "params": params,
                "gflops_pub": pub.get("gflops"),
                "gflops": gflops,
                "gflops_full": gflops_full,
                "gflops_delta_pct": (gflops / pub["gflops"] - 1) * 100 if gflops and pub.get("gflops") else None,
                "cost_verdict": cost,
                "miou_ss_pub": pub.get("miou_ss"),
                "miou_ss": ss,
                "miou_ss_delta": ss - pub["miou_ss"] if ss is not None and pub.get("miou_ss") is not None else None,
                "miou_ss_verdict": v_ss,
                "miou_ms_pub": pub.get("miou_ms"),
                "miou_ms": ms,
                "miou_ms_delta": ms - pub["miou_ms"] if ms is not None and pub.get("miou_ms") is not None else None,
                "miou_ms_verdict": v_ms,
                **_ci_columns("ss", run_ss),
                **_ci_columns("ms", run_ms),
            }
        )
    return pd.DataFrame(rows)


def _ci_columns(protocol: str, run: dict | None) -> dict:
    """The measured mIoU's 95% interval and where the run's per-image counts are (for paired claims)."""
    lo, hi = (run or {}).get("miou_ci95") or (None, None)
    per_image = None
    if run and run.get("per_image_file") and run.get("_file"):
        per_image = str(Path(run["_file"]).parent / run["per_image_file"])
    return {f"miou_{protocol}_ci_lo": lo, f"miou_{protocol}_ci_hi": hi, f"per_image_{protocol}": per_image}


def _md_table(df: pd.DataFrame) -> str:
    cols = [
        "model",
        "input",
        "params (M) pub / meas",
        "GFLOPs (multiply-adds) pub / meas (Δ%)",
        "cost",
        "mIoU ss pub / meas [95% CI] (Δ)",
        "mIoU ss verdict",
        "mIoU ms pub / meas [95% CI] (Δ)",
        "mIoU ms verdict",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples():
        d_g = (
            f" ({r.gflops_delta_pct:+.1f}%)"
            if r.gflops_delta_pct is not None and not pd.isna(r.gflops_delta_pct)
            else ""
        )
        d_ss = f" ({r.miou_ss_delta:+.2f})" if _num(r.miou_ss_delta) else ""
        d_ms = f" ({r.miou_ms_delta:+.2f})" if _num(r.miou_ms_delta) else ""
        d_ss = (f" [{r.miou_ss_ci_lo:.2f}–{r.miou_ss_ci_hi:.2f}]" if _num(r.miou_ss_ci_lo) else "") + d_ss
        d_ms = (f" [{r.miou_ms_ci_lo:.2f}–{r.miou_ms_ci_hi:.2f}]" if _num(r.miou_ms_ci_lo) else "") + d_ms
        lines.append(
            "| "
            + " | ".join(
                [
                    r.model,
                    r.input or "–",
                    f"{_f(r.params_pub, 'g')} / {_f(r.params, '.2f')}",
                    f"{_f(r.gflops_pub, 'g')} / {_f(r.gflops, '.1f')}{d_g}",
                    r.cost_verdict,
                    f"{_pub(r.miou_ss_pub)} / {_f(r.miou_ss, '.2f')}{d_ss}",
                    r.miou_ss_verdict,
                    f"{_pub(r.miou_ms_pub)} / {_f(r.miou_ms, '.2f')}{d_ms}",
                    r.miou_ms_verdict,
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _num(v) -> bool:
    return v is not None and not pd.isna(v)


# (family, rival families, GFLOPs column compared): each family against the other at its published convention, except
# Mask2Former models, whose published counts differ in convention (see lrbench.engine.complexity): measured figures of both
# are then compared over the whole inference.
FAMILY_PAIRS = (
    ("lrformer", ("segformer",), "gflops"),
    ("lrformer-plus", ("mask2former-swin", "mask2former-resnet"), "gflops_full"),
)


def paired_verdict(per_image_a: str, per_image_b: str) -> tuple[str, str]:
    """(verdict, detail) of "A beats B" from two measured runs: holds when the paired-bootstrap 95% interval of
    mIoU(A) - mIoU(B) lies above 0, fails when below, otherwise not significant."""
    d = paired_diff(load_per_image(per_image_a), load_per_image(per_image_b))
    lo, hi = d["ci95"]
    verdict = "holds" if lo > 0 else "fails" if hi < 0 else "not significant"
    return verdict, f"{d['diff']:+.1f}, 95% CI {lo:+.1f}…{hi:+.1f}"


def family_claims(tables: dict[str, pd.DataFrame]) -> list[dict]:
    """Each LRFormer (LRFormer+) against the cheapest SegFormer (Mask2Former) that costs at least as much; holds
    when its mIoU is higher. Measured GFLOPs / mIoU are used where present, else published; when both mIoUs are
    measured (with per-image counts), the verdict is the paired bootstrap's (:func:`paired_verdict`)."""

    def pick(r, key, pub):
        return (r[key], "measured") if _num(r[key]) else (r[pub], "published")

    out = []
    for dataset, df in tables.items():
        for family, rival, gkey in FAMILY_PAIRS:
            for _, a in df[df.family == family].iterrows():
                ga, ga_src = pick(a, gkey, "gflops_pub")
                ma, ma_src = pick(a, "miou_ss", "miou_ss_pub")
                if not _num(ga) or not _num(ma) or "-in22k" in a.model:
                    continue
                rivals = [
                    (pick(b, gkey, "gflops_pub"), pick(b, "miou_ss", "miou_ss_pub"), b.model, b.per_image_ss)
                    for _, b in df[df.family.isin(rival)].iterrows()
                ]
                # the cheapest rival that costs at least as much; of equally cheap ones the strongest (e.g. an
                # IN-22K Swin-B beside the IN-1K one)
                rivals = [r for r in rivals if _num(r[0][0]) and _num(r[1][0]) and r[0][0] >= ga]
                rivals.sort(key=lambda r: (r[0][0], -r[1][0], r[2]))
                if not rivals:
                    continue
                (gb, gb_src), (mb, mb_src), name, per_image_b = rivals[0]
                conv = " (whole inference)" if gkey == "gflops_full" else ""
                verdict, detail = ("holds" if ma > mb else "fails"), None
                if ma_src == mb_src == "measured" and a.per_image_ss and per_image_b:
                    verdict, detail = paired_verdict(a.per_image_ss, per_image_b)
                out.append(
                    {
                        "claim": f"{a.model.split('_')[0]} beats {name.split('_')[0]} on {dataset} at fewer FLOPs",
                        "verdict": verdict,
                        "detail": detail,
                        "evidence": f"mIoU {ma:.1f} ({ma_src}) vs {mb:.1f} ({mb_src}) at {ga:.1f} ({ga_src}) vs "
                        f"{gb:.1f} ({gb_src}) GFLOPs{conv}"
                        + ("; paired bootstrap over the same images" if detail else ""),
                    }
                )
    return out


def build_tables(results: dict[str, list[dict]], zoo: dict) -> dict[str, pd.DataFrame]:
    counted, _ = split_evals(results["eval"], zoo)
    return {d: dataset_table(d, zoo, results, counted) for d in DATASET_TITLES}


def render(
    results: dict[str, list[dict]],
    zoo: dict,
    plots: dict[str, str] | None = None,
    commit: str | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
) -> tuple[str, pd.DataFrame]:
    """(Markdown, combined CSV table) for the given results; deterministic in its inputs."""
    tables = tables or build_tables(results, zoo)
    claims = (results["claims"][-1]["claims"] if results["claims"] else []) + family_claims(tables)
    dates = sorted(r.get("date") for k in results for r in results[k] if r.get("date"))
    devices = sorted(
        {r.get("device_name") for k in ("speed", "claims", "eval") for r in results[k] if r.get("device_name")}
        | {r["meta"]["device_name"] for r in results["claims"]}
    )
    L = [
        "# LRFormer reproduction results",
        "",
        "_Generated by `lrbench report` from the result files and the zoo manifest; do not edit by hand._",
        "",
    ]
    held = sum(c["verdict"] == "holds" for c in claims)
    n_eval = sum(1 for t in tables.values() for v in t.miou_ss_verdict if v == "reproduced")
    pending = sum(1 for t in tables.values() for v in t.miou_ss_verdict if str(v).startswith("pending"))
    L += [
        "## Summary",
        "",
        f"- Claims: **{held} of {len(claims)} hold** on the measurements below"
        + (
            f"; failing: {', '.join(c['claim'] for c in claims if c['verdict'] != 'holds')}."
            if held < len(claims)
            else "."
        ),
        f"- Complexity: {sum((t.cost_verdict == 'matches').sum() for t in tables.values())} of "
        f"{sum(t.gflops_pub.notna().sum() for t in tables.values())} published GFLOPs figures match the measured "
        f"count within {FLOPS_TOL:.0%}.",
        f"- mIoU (single scale): {n_eval} reproduced within {MIOU_TOL} mIoU, {pending} pending "
        f"(needs a dataset and weights; each row gives the command).",
        "",
    ]
    L += ["## Claims", "", "| claim | verdict | evidence |", "|---|---|---|"]
    for c in claims:
        detail = f" ({c['detail']})" if c.get("detail") else ""
        L.append(f"| {c['claim']} | **{c['verdict']}**{detail} | {c['evidence']} |")
    if plots and plots.get("claims"):
        L += ["", f"![LRSA vs MHSA vs SRA cost]({plots['claims']})"]
    if results["claims"]:
        m = results["claims"][-1]["meta"]
        L += [
            "",
            f"Attention layers: one per stage at LRFormer-S / SegFormer-B2 widths; latency on {m['device_name']}"
            f" (torch {m['torch']}, {m['iters']} iterations, layers over {m['max_gmacs']} GMACs not timed).",
        ]
    counted, others = split_evals(results["eval"], zoo)
    mmseg = {d: dataset_table(d, zoo, results, counted, origin="mmseg") for d in DATASET_TITLES}
    for d, title in DATASET_TITLES.items():
        L += ["", f"## {title}", "", _md_table(tables[d])]
        if plots and plots.get(d):
            L += ["", f"![mIoU vs GFLOPs on {d}]({plots[d]})"]
        if len(mmseg[d]):
            L += [
                "",
                f"### mmseg's retrained baselines on {d} (mmseg's reproductions, not the papers' rows)",
                "",
                "Published = mmseg's own mIoU for its retrained checkpoints (download.openmmlab.com), with mmseg's "
                "test protocol. These rows are checked like the others but feed no claim.",
                "",
                _md_table(mmseg[d]),
            ]
    L += [
        "",
        "GFLOPs: 10^9 multiply-adds (fvcore's convention: one multiply-add = one FLOP), backbone + decode head, at the "
        "published input size; element-wise ops, activations and softmax are not counted (each flops result lists them "
        "in `skipped_ops` with an estimated share, under 1% for these models); "
        "Mask2Former models in their papers' convention: LRFormer+ backbone + head (mmseg), the Mask2Former baselines "
        "(Swin, ResNet) the whole inference including the semantic combination (detectron2); see `lrbench.engine.complexity`. "
        f"mIoU verdict tolerance ±{MIOU_TOL}; GFLOPs ±{FLOPS_TOL:.0%}.",
        "",
        "Each eval follows the library its row's numbers came from (the recipe's `test.library`): mmseg recipes resize "
        "images with cv2 (`mmcv.imresize`) and average the multi-scale views' probabilities; detectron2 recipes (the "
        "Mask2Former paper's rows) resize with PIL bilinear and average the views' scores. The ms views are mmseg 0.x's "
        "(the test scale x 0.5-1.75, each with a flip; detectron2's short sides 0.5-1.75 x the test one).",
    ]
    if others:
        L += [
            "",
            "## Your runs (not counted)",
            "",
            "Evaluations that are not a complete run of an entry's published weights with its recipe. They are "
            "listed for reference and change no verdict above.",
            "",
            "| result | model | dataset | protocol | images | mIoU | why not counted |",
            "|---|---|---|---|---|---|---|",
        ]
        for run, why in sorted(others, key=lambda o: o[0].get("_path", "")):
            L.append(
                f"| {run.get('_path', '–')} | {run['model']} | {run['dataset']} | {run['protocol']} | {run['num_images']} | "
                f"{_f(run['mIoU'], '.2f')} | {why} |"
            )
    L += robustness_section(results)
    if results["speed"]:
        L += [
            "",
            "## Speed",
            "",
            "Forward latency only (a random batch already on the device: no decoding, resize, sliding window, flip, "
            "argmax or upsampling), `torch.inference_mode`; warm-up iterations discarded, then the median and "
            "inter-quartile range of the timed ones; CUDA: events around each forward, synchronised after each "
            "(cudnn.benchmark off); CPU: `time.perf_counter`. cl = channels-last input.",
            "",
            "| model | input | batch | dtype | device | torch | warm-up + timed | median ms (IQR) | images/s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        unstable = 0
        for r in sorted(
            results["speed"], key=lambda r: (r["device_name"], r["model"], r["shape"], r["dtype"], r["batch_size"])
        ):
            flag = ""
            if r["iqr_ms"] > UNSTABLE_IQR * r["median_ms"]:
                flag, unstable = " **unstable**", unstable + 1
            L.append(
                f"| {r['model']} | {r['shape'][0]}x{r['shape'][1]} | {r['batch_size']} | {r['dtype']}"
                f"{' cl' if r['channels_last'] else ''}{' compiled' if r['compile'] else ''} | {r['device_name']} "
                f"| {r['torch']} | {r.get('warmup', '?')} + {r.get('iters', '?')} | {r['median_ms']:.1f} ({r['iqr_ms']:.1f}){flag} "
                f"| {r['images_per_s']:.2f} |"
            )
        if unstable:
            L += [
                "",
                f"**unstable**: {unstable} row(s) whose spread (IQR) is over {UNSTABLE_IQR:.0%} of the median: the "
                "machine was busy while they were measured. Rerun `lrbench speed` (or `lrbench reproduce`) on an "
                "idle machine before comparing them.",
            ]
        if plots and plots.get("latency"):
            L += ["", f"![latency vs resolution]({plots['latency']})"]
    L += [
        "",
        "## Provenance",
        "",
        f"- lrbench {__version__}, git {commit or git_commit()}, torch {torch_version()}",
        f"- devices: {', '.join(devices) or '–'}",
        f"- results dated {dates[0] if dates else '–'} to {dates[-1] if dates else '–'}",
        f"- inputs: {sum(len(v) for v in results.values())} result files "
        f"({', '.join(f'{len(v)} {k}' for k, v in results.items() if v or k != 'robust')})",
        "",
    ]
    csv = pd.concat(
        [t.assign(dataset=d, origin="paper") for d, t in tables.items()]
        + [t.assign(dataset=d, origin="mmseg") for d, t in mmseg.items() if len(t)],
        ignore_index=True,
    )
    return "\n".join(L), csv


def plot_once(path: str, inputs, draw: Callable[[], Any]) -> None:
    """Write the PNG ``draw()`` makes, unless the file at ``path`` was drawn from the same ``inputs`` by the same code
    (a digest kept in the PNG's text chunk): regenerating an unchanged report then only reads."""
    code = [_plot_code(), importlib.metadata.version("matplotlib")]
    digest = hashlib.sha256(json.dumps([inputs, code], sort_keys=True, default=str).encode()).hexdigest()
    try:
        with Image.open(path) as im:
            if getattr(im, "text", {}).get("lrbench-digest") == digest:
                return
    except (OSError, ValueError):
        pass
    import matplotlib.pyplot as plt

    fig = draw()
    meta = {"Software": None, "lrbench-digest": digest}
    atomic_write_bytes(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", metadata=meta))
    plt.close(fig)


@functools.cache
def _plot_code() -> str:
    """A digest of the code that draws the plots (this module and the claims module)."""
    return hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (claims, sys.modules[__name__]))).hexdigest()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_miou_vs_gflops(tables: dict[str, pd.DataFrame], path: str, dataset: str) -> None:
    """PNG: mIoU (measured where present, else published) vs GFLOPs, one line per family."""
    df = tables[dataset]
    cols = ["family", "model", "gflops", "gflops_pub", "miou_ss", "miou_ss_pub"]
    plot_once(path, [dataset, df[cols].astype(object).values.tolist()], lambda: _draw_miou_vs_gflops(df, dataset))


def _draw_miou_vs_gflops(df: pd.DataFrame, dataset: str):
    fig, ax = _pyplot().subplots(figsize=(6, 4.2))
    styles = (
        ("lrformer", "o-"),
        ("segformer", "s--"),
        ("upernet-swin", "^-."),
        ("lrformer-plus", "D-"),
        ("mask2former-swin", "v:"),
        ("mask2former-resnet", "P:"),
    )
    for fam, style in styles:
        sub = df[(df.family == fam) & ~df.model.str.contains("-in22k")]
        pts = sorted(
            (g if _num(g) else gp, m if _num(m) else mp, n.split("_")[0])
            for g, gp, m, mp, n in zip(sub.gflops, sub.gflops_pub, sub.miou_ss, sub.miou_ss_pub, sub.model)
            if _num(g if _num(g) else gp) and _num(m if _num(m) else mp)
        )
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=fam)
            for g, m, n in pts:
                ax.annotate(
                    n.replace("-plus", "+")
                    .replace("lrformer-", "")
                    .replace("segformer-", "")
                    .replace("upernet-swin-", "swin-")
                    .replace("mask2former-", "m2f-"),
                    (g, m),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    ax.set_xscale("log")
    ax.set_xlabel("GFLOPs at each model's published input (measured where available)")
    ax.set_ylabel("mIoU single scale (measured, else published)")
    ax.set_title(DATASET_TITLES[dataset], fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_latency_vs_resolution(speed: list[dict], path: str) -> bool:
    """PNG: batch-1 latency vs input pixels (log-log), one line per model and device and dtype with at least two
    resolutions; False (nothing written) when there is no such series."""
    series: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for r in speed:
        if r["batch_size"] == 1 and not r["compile"]:
            series.setdefault((r["model"], r["device_name"], r["dtype"]), []).append(
                (r["shape"][0] * r["shape"][1], r["median_ms"])
            )
    series = {k: sorted(set(v)) for k, v in series.items() if len({p for p, _ in v}) >= 2}
    if not series:
        return False
    plot_once(path, sorted(series.items()), lambda: _draw_latency(series))
    return True


def _draw_latency(series: dict[tuple[str, str, str], list[tuple[int, float]]]):
    fig, ax = _pyplot().subplots(figsize=(6.5, 4.5))
    for (model, device, dtype), pts in sorted(series.items()):
        style = "o-" if model.startswith("lrformer") else "s--"
        ax.plot([p for p, _ in pts], [t for _, t in pts], style, label=f"{model} {dtype} ({device})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input pixels")
    ax.set_ylabel("median latency, ms (batch 1)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def write_report(results_dir: str = "results", out: str = "RESULTS.md", plots_dir: str | None = "plots") -> dict:
    """Read results, write RESULTS.md (+ .csv beside it) and the plots; returns the paths written and the files
    left out (``ignored``: one line each)."""
    ignored: list[str] = []
    results = load_results(results_dir, ignored)
    zoo = load_zoo()
    out_path = Path(out)
    plots: dict[str, str] = {}
    tables = build_tables(results, zoo)
    if plots_dir:
        pdir = Path(plots_dir)
        for d in DATASET_TITLES:
            plot_miou_vs_gflops(tables, str(pdir / f"miou_vs_gflops_{d}.png"), d)
            plots[d] = os.path.relpath(pdir / f"miou_vs_gflops_{d}.png", out_path.parent)
        if results["claims"] and results["claims"][-1].get("attention"):
            res = results["claims"][-1]
            plot_once(str(pdir / "claims.png"), res, lambda: claims.draw_claims(res))
            plots["claims"] = os.path.relpath(pdir / "claims.png", out_path.parent)
        if plot_latency_vs_resolution(results["speed"], str(pdir / "latency_vs_resolution.png")):
            plots["latency"] = os.path.relpath(pdir / "latency_vs_resolution.png", out_path.parent)
    md, csv = render(results, zoo, plots, tables=tables)
    atomic_write_bytes(out_path, lambda tmp: Path(tmp).write_text(md))
    csv_path = out_path.with_suffix(".csv")
    atomic_write_bytes(csv_path, lambda tmp: csv.to_csv(tmp, index=False, float_format="%.4f"))
    return {"report": str(out_path), "csv": str(csv_path), "plots": sorted(plots.values()), "ignored": ignored}

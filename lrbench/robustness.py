"""Reading ``lrbench robust`` summaries (no torch): paired comparisons of two models' corruption robustness and the
report's robustness table. A summary ``<name>.json`` has its runs' results in the folder ``<name>/`` beside it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ResultError
from .results import per_image_of, read_eval
from .stats import interval, match_images, miou, resample_counts, resampled_miou


def run_results(summary: dict, path: str | os.PathLike) -> dict[tuple[str | None, int | None], dict]:
    """(corruption, severity) -> per-image data of that run, for every run of a summary (clean: (None, None))."""
    folder = Path(str(path).removesuffix(".json"))
    out = {}
    for run in summary["runs"]:
        file = folder / run["file"]
        out[(run["corruption"], run["severity"])] = per_image_of(read_eval(file), file)
    return out


def _mean_corrupted(mious: dict[tuple, np.ndarray]) -> np.ndarray:
    """Mean over corruptions of the mean over severities (the summary's definition), elementwise over resamples."""
    by_corruption: dict[str, list[np.ndarray]] = {}
    for (c, _s), v in mious.items():
        if c is not None:
            by_corruption.setdefault(c, []).append(v)
    return np.mean([np.mean(vs, axis=0) for vs in by_corruption.values()], axis=0)


def compare_robust(a: dict, path_a: str, b: dict, path_b: str) -> dict:
    """A - B in clean mIoU, in mean corrupted mIoU and per corruption, each with a 95% paired-bootstrap interval:
    the same resampled images for every run of both models (the images are the same in every run)."""
    runs_a, runs_b = run_results(a, path_a), run_results(b, path_b)
    if set(runs_a) != set(runs_b):
        only = sorted(str(k) for k in set(runs_a) ^ set(runs_b))
        raise ResultError(
            f"{path_b}: its runs differ from {path_a}'s (e.g. {only[0]}); compare robust runs of the same corruptions"
        )
    clean_a = runs_a[(None, None)]
    counts = None
    point, resampled = {}, {}
    for key in runs_a:
        pa, pb = runs_a[key], runs_b[key]
        ta, tb = match_images(clean_a, pa), match_images(clean_a, pb)  # every run in the clean run's image order
        if counts is None:
            counts = resample_counts(len(ta))
        for side, p, t in (("a", pa, ta), ("b", pb, tb)):
            inter, union = p["intersect"][t], p["union"][t]
            point[side, key] = miou(inter.sum(0), union.sum(0))
            resampled[side, key] = resampled_miou(inter, union, counts)

    def side(which: str, source: dict) -> dict:
        return {k: v for (s, k), v in source.items() if s == which}

    def diff(fa, fb) -> dict:
        d = fa(side("a", resampled)) - fb(side("b", resampled))
        value = float(fa(side("a", point)) - fb(side("b", point)))
        lo, hi = interval(d)
        return {"diff": value, "ci95": [lo, hi], "significant": bool(lo > 0 or hi < 0)}

    corruptions = sorted({c for c, _ in runs_a if c is not None})
    per = {}
    for c in corruptions:
        pick = lambda m, c=c: np.mean([v for (cc, _), v in m.items() if cc == c], axis=0)  # noqa: E731
        per[c] = diff(pick, pick)
    clean = lambda m: m[(None, None)]  # noqa: E731
    return {
        "kind": "robust",
        "model_a": a["model"],
        "model_b": b["model"],
        "n_images": len(counts[0]) if counts is not None else 0,
        "clean": diff(clean, clean),
        "mean_corrupted": diff(_mean_corrupted, _mean_corrupted),
        "per_corruption": per,
    }


def robustness_rows(summaries: list[dict], dataset: str) -> list[dict]:
    """The report's rows for one dataset: one per summary (newest per model, protocol and weights first)."""
    rows = {}
    for s in sorted(summaries, key=lambda s: s.get("date", "")):
        if s.get("dataset") == dataset:
            rows[(s["model"], s.get("protocol"), s.get("checkpoint_sha256"))] = s
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], str(k[1])))]

"""Error bars for mIoU from per-image counts: percentile bootstrap over images, and paired comparisons.

Every eval keeps mmseg's four areas per image (intersect, union, pred, label: (N images, K classes) int64). A
bootstrap resample draws N images with replacement; its mIoU is computed exactly as the dataset's (sum the areas of
the drawn images, IoU per class, nan-mean over the classes that occur), so a resample is one row of multiplicities and
all of them together are one matrix product: (R, N) counts x (N, K) areas. The 95% interval is the 2.5th and 97.5th
percentile of the R resampled mIoUs (percentile bootstrap, fixed seed).

What it covers: the choice of validation images (how much the number would move on another draw of images like
these). What it does not: training randomness (seeds), which needs several trained models.

A paired comparison resamples the same images for both results (matched by name), so what the two models share --
easy and hard images -- cancels out of A - B.

Per class, the same resamples give an interval of each class's IoU and Acc (:func:`class_intervals`) and of each
class's paired difference (:func:`paired_class_diff`). A resample in which a class does not occur (union 0) says
nothing about it and is left out of that class's percentiles; a class that occurs in no image of the set (absent from
both labels and predictions) has no IoU at all -- NaN, left out of mIoU as mmseg does -- and no interval.
"""

from __future__ import annotations

import numpy as np

from .errors import ResultError

RESAMPLES = 1000
SEED = 0
AREAS = ("intersect", "union", "pred_area", "label_area")


def miou(intersect: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU in percent over the last axis (classes): nan-mean of intersect / union, classes with union 0 skipped."""
    intersect, union = np.asarray(intersect, dtype=np.float64), np.asarray(union, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = intersect / union
    present = union > 0
    return 100 * np.where(present, iou, 0).sum(-1) / present.sum(-1)


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(R, N) multiplicities: row r says how often each of the N images is drawn in resample r (N draws each)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def counts_from_indices(draws: list[list[int]], n: int) -> np.ndarray:
    """The multiplicity matrix of explicit resamples (lists of image indices): for tests and hand computation."""
    out = np.zeros((len(draws), n))
    for r, idx in enumerate(draws):
        np.add.at(out[r], np.asarray(idx), 1)
    return out


def resampled_miou(intersect: np.ndarray, union: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(R,) mIoU of each resample: the resampled areas are counts @ per-image areas (exact in float64)."""
    return miou(counts @ np.asarray(intersect, np.float64), counts @ np.asarray(union, np.float64))


def interval(values: np.ndarray, level: float = 95.0) -> list[float]:
    lo, hi = np.percentile(values, [(100 - level) / 2, 100 - (100 - level) / 2])
    return [float(lo), float(hi)]


def miou_ci(intersect: np.ndarray, union: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> list[float]:
    """95% percentile-bootstrap interval of the mIoU of N images' areas (N, K)."""
    counts = resample_counts(len(intersect), resamples, seed)
    return interval(resampled_miou(intersect, union, counts))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100 * np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nan_interval(values: np.ndarray, level: float = 95.0) -> list:
    """Per column of (R, K): the percentile interval over the resamples where it is defined, None where none is."""
    out = []
    for col in values.T:
        col = col[~np.isnan(col)]
        out.append(interval(col, level) if len(col) else None)
    return out


def class_intervals(per_image: dict, resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, list]:
    """95% percentile-bootstrap intervals of every class's IoU and Acc (percent): ``{"IoU": [[lo, hi] | None, ...],
    "Acc": [...]}``, from the same resamples as the mIoU's."""
    counts = resample_counts(len(per_image["intersect"]), resamples, seed)
    inter = counts @ np.asarray(per_image["intersect"], np.float64)
    union = counts @ np.asarray(per_image["union"], np.float64)
    label = counts @ np.asarray(per_image["label_area"], np.float64)
    return {"IoU": _nan_interval(_ratio(inter, union)), "Acc": _nan_interval(_ratio(inter, label))}


def match_images(a: dict, b: dict) -> np.ndarray:
    """Indices into ``b`` of ``a``'s images (matched by name), or ResultError when the image sets differ."""
    names_a, names_b = [str(n) for n in a["names"]], [str(n) for n in b["names"]]
    if sorted(names_a) != sorted(names_b) or len(set(names_a)) != len(names_a):
        only_a, only_b = sorted(set(names_a) - set(names_b)), sorted(set(names_b) - set(names_a))
        example = (only_a or only_b or ["a repeated name"])[0]
        raise ResultError(
            f"the two results are over different images ({len(names_a)} vs {len(names_b)}; e.g. {example} is in "
            f"only one): compare evals of the same split, both complete or with the same --limit"
        )
    order = {n: i for i, n in enumerate(names_b)}
    return np.array([order[n] for n in names_a], dtype=np.int64)


def paired_class_diff(
    a: dict, b: dict, classes: list[str] | None = None, resamples: int = RESAMPLES, seed: int = SEED
) -> list[dict]:
    """Per class: IoU(A) - IoU(B) over the whole set with its 95% paired-bootstrap interval (the same resampled
    images for both), sorted by the difference (largest first). A class that occurs in neither result (union 0 in
    both: NaN IoU) is left out; one that occurs in only one (a class no image labels, predicted by one model only)
    is listed with ``diff`` None and why. ``significant``: the interval excludes 0."""
    take = match_images(a, b)
    counts = resample_counts(len(take), resamples, seed)
    ia, ua = np.asarray(a["intersect"], np.float64), np.asarray(a["union"], np.float64)
    ib, ub = np.asarray(b["intersect"], np.float64)[take], np.asarray(b["union"], np.float64)[take]
    iou_a, iou_b = _ratio(ia.sum(0), ua.sum(0)), _ratio(ib.sum(0), ub.sum(0))
    diffs = _ratio(counts @ ia, counts @ ua) - _ratio(counts @ ib, counts @ ub)  # (R, K); NaN where either is
    cis = _nan_interval(diffs)
    names = classes or [str(k) for k in range(len(iou_a))]
    rows, odd = [], []
    for k, name in enumerate(names):
        a_k, b_k = iou_a[k], iou_b[k]
        if np.isnan(a_k) and np.isnan(b_k):
            continue
        if np.isnan(a_k) or np.isnan(b_k):
            where = "A" if np.isnan(b_k) else "B"
            odd.append(
                {
                    "class": name,
                    "iou_a": _num(a_k),
                    "iou_b": _num(b_k),
                    "diff": None,
                    "ci95": None,
                    "significant": None,
                    "why": f"occurs only in {where} (predicted there, labelled nowhere)",
                }
            )
            continue
        lo_hi = cis[k]
        rows.append(
            {
                "class": name,
                "iou_a": float(a_k),
                "iou_b": float(b_k),
                "diff": float(a_k - b_k),
                "ci95": lo_hi,
                "significant": bool(lo_hi is not None and (lo_hi[0] > 0 or lo_hi[1] < 0)),
            }
        )
    return sorted(rows, key=lambda r: -r["diff"]) + odd


def _num(x) -> float | None:
    return None if np.isnan(x) else float(x)


ABSENT_POLICY = (
    "classes absent from both results (no label and no prediction in any image: NaN IoU) are left out, as mmseg leaves "
    "them out of mIoU; resamples in which a class does not occur are left out of its interval"
)


def load_per_image(path) -> dict[str, np.ndarray]:
    """The per-image file of an eval: ``names`` and the four (N, K) area arrays, and the (K+1, K+1) ``confusion``
    matrix when the eval kept it (lrbench 0.2 on)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in ("names", *AREAS)}
            if "confusion" in z.files:
                data["confusion"] = z["confusion"]
    except (OSError, KeyError, ValueError) as e:
        raise ResultError(f"{path}: not an lrbench per-image file ({e}); run the eval again") from None
    return data


def paired_diff(a: dict, b: dict, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """mIoU(A) - mIoU(B) with its 95% paired-bootstrap interval; ``a`` and ``b`` are per-image data (names + areas)
    of evals over the same images (any order)."""
    take = match_images(a, b)
    ia, ua = a["intersect"], a["union"]
    ib, ub = b["intersect"][take], b["union"][take]
    counts = resample_counts(len(take), resamples, seed)
    diff = resampled_miou(ia, ua, counts) - resampled_miou(ib, ub, counts)
    ma, mb = float(miou(ia.sum(0), ua.sum(0))), float(miou(ib.sum(0), ub.sum(0)))
    return {"miou_a": ma, "miou_b": mb, "diff": ma - mb, "ci95": interval(diff), "n_images": len(take)}

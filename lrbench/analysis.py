"""``lrbench analyze``: why a number is what it is, from one eval's files (no second run, no torch).

An eval keeps, beside its result, the per-image areas and the confusion matrix of the whole set (row = label, column =
prediction; :mod:`lrbench.engine.metrics`). From them:

- top confusions: the off-diagonal cells, true class -> predicted class, each with its pixels and its share of the
  true class's labelled pixels (the row sum, every prediction included);
- a heat map of the matrix (rows normalised to the true class's pixels, log colour scale, the classes that occur);
- the worst images: per-image mIoU = the mean IoU over the classes that occur in that image (labelled or predicted:
  union > 0), mmseg's definition applied to one image; images with no labelled pixel are left out. The K lowest.

The overlays of the worst images (image | ground truth | prediction) need the model again and are drawn by
:func:`lrbench.engine.overlays.write_overlays`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ResultError, UsageError
from .results import per_image_of, read_eval

SORTS = ("pixels", "share")


def load_matrix(result: dict, path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """The eval's (K+1, K+1) confusion matrix and per-image data, or one line saying why there is none."""
    data = per_image_of(result, path)
    if "confusion" not in data:
        raise ResultError(
            f"{path}: has no confusion matrix (made by an earlier lrbench); run `lrbench eval` again to analyze it"
        )
    m = data["confusion"]
    K = len(result.get("per_class") or [])
    if m.shape != (K + 1, K + 1):
        raise ResultError(f"{path}: its confusion matrix is {m.shape}, not ({K + 1}, {K + 1}); run the eval again")
    return m, data


def top_confusions(matrix: np.ndarray, classes: list[str], top: int = 10, sort: str = "pixels") -> list[dict]:
    """The ``top`` off-diagonal cells between classes: true -> predicted, pixels, share of the true class's pixels."""
    if sort not in SORTS:
        raise UsageError(f"--sort must be one of {', '.join(SORTS)}, got '{sort}'")
    K = len(classes)
    rows = matrix[:K].sum(1)  # every labelled pixel of the class, whatever was predicted
    cells = matrix[:K, :K].astype(np.int64).copy()
    np.fill_diagonal(cells, 0)
    t, p = np.nonzero(cells)
    share = cells[t, p] / rows[t]
    key = -cells[t, p] if sort == "pixels" else -share
    order = np.lexsort((p, t, key))[:top]
    return [
        {
            "true": classes[t[i]],
            "predicted": classes[p[i]],
            "pixels": int(cells[t[i], p[i]]),
            "share_of_true": float(share[i]),
        }
        for i in order
    ]


def per_image_miou(intersect: np.ndarray, union: np.ndarray) -> np.ndarray:
    """(N,) mIoU (percent) of each image over the classes that occur in it (union > 0); NaN for an image with none."""
    inter, uni = np.asarray(intersect, np.float64), np.asarray(union, np.float64)
    present = uni > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100 * np.where(present, inter / np.where(present, uni, 1), 0).sum(1) / present.sum(1)


def worst_images(data: dict, classes: list[str], k: int) -> list[dict]:
    """The ``k`` images with the lowest per-image mIoU (ties by name), with each one's worst classes."""
    scores = per_image_miou(data["intersect"], data["union"])
    labelled = np.asarray(data["label_area"]).sum(1) > 0
    idx = [i for i in np.lexsort((data["names"], scores)) if labelled[i] and not np.isnan(scores[i])][:k]
    out = []
    for i in idx:
        inter, uni = data["intersect"][i], data["union"][i]
        present = np.nonzero(uni > 0)[0]
        ious = sorted(((100 * inter[c] / uni[c], classes[c]) for c in present), key=lambda x: (x[0], x[1]))
        out.append(
            {
                "image": str(data["names"][i]),
                "mIoU": float(scores[i]),
                "classes": len(present),
                "worst_classes": [{"class": n, "IoU": float(v)} for v, n in ious[:3]],
            }
        )
    return out


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str, path: str | os.PathLike) -> str:
    """The heat map: rows normalised to the true class's pixels, log colour scale, the classes that occur."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    K = len(classes)
    m = matrix[:K, :K].astype(np.float64)
    rows = matrix[:K].sum(1).astype(np.float64)
    seen = np.nonzero((rows > 0) | (m.sum(0) > 0))[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = m[np.ix_(seen, seen)] / rows[seen, None]
    norm[~np.isfinite(norm) | (norm <= 0)] = np.nan  # empty cells stay white on the log scale
    n = len(seen)
    size = min(4 + 0.12 * n, 30)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    finite = norm[np.isfinite(norm)]
    low = max(float(finite.min()), 1e-5) if finite.size else 1e-5
    im = ax.imshow(norm, cmap="viridis", norm=LogNorm(vmin=low, vmax=1.0), interpolation="nearest")
    names = [classes[i] for i in seen]
    font = max(3, min(9, 400 / max(n, 1)))
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (label)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's pixels (log)")
    fig.tight_layout()
    return _save_figure(fig, path)


def _save_figure(fig, path: str | os.PathLike) -> str:
    """Write a matplotlib figure atomically (PNG) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return str(path)


def plot_reliability(calibration: dict, title: str, path: str | os.PathLike) -> str:
    """The reliability diagram of an eval's calibration record: accuracy per confidence bin against the diagonal,
    each bar's share of the pixels below it, and the ECE in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = calibration["bins"]
    edges = np.linspace(0, 1, bins + 1)
    acc = np.array([np.nan if a is None else a for a in calibration["accuracy"]])
    conf = np.array([np.nan if c is None else c for c in calibration["mean_confidence"]])
    share = np.asarray(calibration["count"], np.float64) / max(calibration["pixels"], 1)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    ax.bar(edges[:-1], np.nan_to_num(acc), width=1 / bins, align="edge", edgecolor="k", label="accuracy")
    ax.plot(conf, acc, "o", color="tab:red", ms=3, label="(mean confidence, accuracy) per bin")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ece = calibration.get("ece")
    ax.set_title(f"{title}: ECE {ece:.2f}% ({bins} bins)" if ece is not None else title, fontsize=9)
    bx.bar(edges[:-1], share, width=1 / bins, align="edge", edgecolor="k", color="tab:gray")
    bx.set_ylabel("pixels")
    bx.set_xlabel("top-1 confidence")
    fig.tight_layout()
    return _save_figure(fig, path)


def analyze(
    result: str | os.PathLike,
    top: int = 10,
    worst: int = 0,
    plots: str | os.PathLike | None = "plots",
    sort: str = "pixels",
) -> dict:
    """Top confusions, per-class IoU with intervals, the worst images and (with ``plots``) the heat map of one eval
    result; see the module docstring. Returns a JSON-ready dict."""
    if top < 0 or worst < 0:
        raise UsageError(f"--top and --worst must be >= 0, got {top} and {worst}")
    res = read_eval(result)
    matrix, data = load_matrix(res, result)
    classes = [r["class"] for r in res["per_class"]]
    out = {
        "result": str(result),
        "model": res["model"],
        "dataset": res["dataset"],
        "num_images": res["num_images"],
        "mIoU": res["mIoU"],
        "miou_ci95": res.get("miou_ci95"),
        "per_class": res["per_class"],
        "top_confusions": top_confusions(matrix, classes, top, sort),
        "sorted_by": sort,
        "worst_images": worst_images(data, classes, worst) if worst else [],
        "worst_convention": "per-image mIoU: mean IoU over the classes that occur in the image (labelled or "
        "predicted), images with no labelled pixel left out",
        "heatmap": None,
    }
    if plots is not None:
        stem = Path(result).name.removesuffix(".json")
        title = f"{res['model']} on {res['dataset']} ({res['num_images']} images): confusion, rows normalised"
        out["heatmap"] = plot_confusion(matrix, classes, title, Path(plots) / f"confusion_{stem}.png")
    return out

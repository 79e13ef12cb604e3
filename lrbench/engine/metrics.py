"""mIoU exactly as mmseg's ``IoUMetric`` defines it, accumulated on the model's device as a confusion matrix
(``torch.bincount`` on the CPU; on CUDA fixed-size scatter-adds, which never wait for the GPU), from which the areas
are read.

Per class c, over the whole dataset (not a per-image mean), counting only pixels whose label is not ignored:
intersect_c = #(pred == label == c), pred_c = #(pred == c), label_c = #(label == c),
union_c = pred_c + label_c - intersect_c.  IoU_c = intersect_c / union_c, Acc_c = intersect_c / label_c,
aAcc = sum(intersect) / sum(label), mIoU / mAcc = nan-mean over classes (a class absent from both prediction and
labels has 0/0 = NaN and is skipped). Reported in percent.

The confusion matrix (row = label, column = prediction; a last row / column for ids that are not classes) holds the
areas exactly: intersect = its diagonal, label area = row sums, pred area = column sums over the kept pixels. It is
what ``lrbench analyze`` reads (top confusions, heat map); it is accumulated in the same pass, so it costs no second
run (``benchmarks/confusion.py``). The four areas are also kept per image (by dataset index), for error bars
(:mod:`lrbench.stats`) and the worst images: their sums are exactly the totals.
"""

from __future__ import annotations

import torch

AREA_KEYS = ("intersect", "union", "pred", "label")


def confusion(
    pred: torch.Tensor, label: torch.Tensor, K: int, ignore: int, scatter: bool | None = None
) -> torch.Tensor:
    """(K+1, K+1) int64 pixel counts, row = label, column = prediction, over the pixels whose label is not ``ignore``;
    row / column K collects label / predicted ids that are not one of the K classes. One ``bincount`` on the CPU; on
    CUDA a fixed-size scatter-add into a spare bin for the ignored pixels, which never waits for the GPU (a boolean
    mask and ``bincount`` on CUDA each do); ``scatter`` picks the way (default: by the device)."""
    n = K + 1
    p, t = pred.long().clamp(0, K), label.long()
    keep = t != ignore
    t = t.clamp(0, K)
    if not (pred.is_cuda if scatter is None else scatter):
        return torch.bincount((t * n + p)[keep], minlength=n * n).view(n, n)
    idx = torch.where(keep, t * n + p, n * n).flatten()
    bins = torch.zeros(n * n + 1, dtype=torch.int64, device=idx.device).index_add_(0, idx, torch.ones_like(idx))
    return bins[: n * n].view(n, n)


def areas_of(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(intersect, pred area, label area) per class from a (K+1, K+1) confusion matrix: mmseg's counts exactly (a
    label id outside the classes counts in no class's label area; its prediction still counts)."""
    K = matrix.shape[0] - 1
    return matrix.diagonal()[:K], matrix[:, :K].sum(0), matrix[:K].sum(1)


def _counts(pred: torch.Tensor, label: torch.Tensor, K: int, ignore: int) -> tuple[torch.Tensor, ...]:
    """(intersect, pred area, label area) per class over the pixels whose label is not ``ignore``: mmseg's
    ``intersect_and_union`` (three masked ``bincount``s), the reference the confusion matrix is tested against."""
    keep = label != ignore
    p, t = pred[keep].long(), label[keep].long()
    return (
        torch.bincount(p[p == t], minlength=K)[:K],
        torch.bincount(p, minlength=K)[:K],
        torch.bincount(t, minlength=K)[:K],
    )


class IoUAccumulator:
    """Integer areas per class and the confusion matrix they come from; exact, order-independent, and summable
    across processes."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        n = num_classes + 1
        self.confusion = torch.zeros(n, n, dtype=torch.int64, device=device)  # row label, column prediction
        self.images: dict[int, torch.Tensor] = {}  # dataset index -> (4, K) areas of that image, AREA_KEYS order
        self.calibration: CalibrationAccumulator | None = None  # set for --calibration: saved and reduced with these

    def update(self, pred: torch.Tensor, label: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """Add one prediction (class ids) and its label map of the same shape; ``index`` keeps its own areas too.
        Returns the image's confusion matrix."""
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from label shape {tuple(label.shape)}")
        m = confusion(pred, label, self.num_classes, self.ignore_index)
        self.confusion += m
        if index is not None:
            inter, area_p, area_t = areas_of(m)
            self.images[index] = torch.stack([inter, area_p + area_t - inter, area_p, area_t])
        return m

    @property
    def areas(self) -> dict[str, torch.Tensor]:
        """mmseg's four areas per class (AREA_KEYS), read from the confusion matrix."""
        inter, area_p, area_t = areas_of(self.confusion)
        return {"intersect": inter, "union": area_p + area_t - inter, "pred": area_p, "label": area_t}

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {k: v.cpu().clone() for k, v in self.areas.items()} | {"confusion": self.confusion.cpu().clone()}
        if self.calibration is not None:
            state |= {f"calibration_{k}": v.clone() for k, v in self.calibration.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict` (the areas in it are read from the matrix, so the matrix is what counts)."""
        self.confusion.copy_(state["confusion"])
        if self.calibration is not None:
            self.calibration.load_state_dict({k[12:]: v for k, v in state.items() if k.startswith("calibration_")})

    def image_state(self) -> dict[str, torch.Tensor]:
        """The per-image areas as tensors (indices (N,), areas (N, 4, K)), for saving."""
        idx = sorted(self.images)
        K = self.num_classes
        stacked = torch.stack([self.images[i].cpu() for i in idx]) if idx else torch.zeros(0, 4, K, dtype=torch.int64)
        return {"index": torch.tensor(idx, dtype=torch.int64), "areas": stacked}

    def load_image_state(self, state: dict[str, torch.Tensor]) -> None:
        self.images = {int(i): a for i, a in zip(state["index"], state["areas"])}

    def gather_images(self) -> dict[int, torch.Tensor]:
        """Every process's per-image areas (on the CPU), by dataset index."""
        import torch.distributed as dist

        mine = {i: a.cpu() for i, a in self.images.items()}
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return mine
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, mine)
        return {i: a for part in parts for i, a in part.items()}

    def all_reduce(self) -> None:
        """Sum the confusion matrix over all processes of the default group (no-op when not distributed)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.confusion)  # the areas are read from it
        if self.calibration is not None:
            self.calibration.all_reduce()

    def summary(self, class_names: tuple[str, ...] | None = None) -> dict:
        return summarize(self.areas, class_names)


def summarize(areas: dict[str, torch.Tensor], class_names: tuple[str, ...] | None = None) -> dict:
    """aAcc / mIoU / mAcc (percent) and the per-class IoU / Acc table (NaN -> None) from accumulated areas."""
    a = {k: v.double().cpu() for k, v in areas.items()}
    iou = a["intersect"] / a["union"]  # 0/0 -> nan: class absent from both
    acc = a["intersect"] / a["label"]
    aacc = a["intersect"].sum() / a["label"].sum()
    names = class_names or tuple(str(i) for i in range(len(iou)))

    def pct(x: torch.Tensor) -> float | None:
        return None if torch.isnan(x) else float(x) * 100

    return {
        "aAcc": pct(aacc),
        "mIoU": pct(torch.nanmean(iou)),
        "mAcc": pct(torch.nanmean(acc)),
        "per_class": [
            {"class": n, "IoU": pct(i), "Acc": pct(c), "pixels": int(t)}
            for n, i, c, t in zip(names, iou, acc, a["label"])
        ],
    }


class CalibrationAccumulator:
    """Expected calibration error of the top-1 confidence, accumulated exactly per bin (counts and correct pixels as
    integers, confidences summed in float64) on the model's device without waiting for it: ``bins`` equal-width bins
    over [0, 1] (a confidence of 1, or a score above it, in the last), pixels whose label is ignored or not a class
    left out. ECE = sum over bins of (pixels in bin / pixels) x |accuracy in bin - mean confidence in bin|."""

    def __init__(self, num_classes: int, ignore_index: int = 255, bins: int = 15, device: str | torch.device = "cpu"):
        self.num_classes, self.ignore_index, self.bins = num_classes, ignore_index, bins
        self.count = torch.zeros(bins + 1, dtype=torch.int64, device=device)  # last: the spare bin of left-out pixels
        self.correct = torch.zeros(bins + 1, dtype=torch.int64, device=device)
        self.confidence = torch.zeros(bins + 1, dtype=torch.float64, device=device)

    def update(self, confidence: torch.Tensor, pred: torch.Tensor, label: torch.Tensor) -> None:
        """``confidence`` and ``pred`` (H, W): the top-1 confidence and its class; ``label`` (H, W)."""
        t = label.long()
        keep = (t != self.ignore_index) & (t < self.num_classes)
        b = torch.where(keep, (confidence.double() * self.bins).long().clamp(0, self.bins - 1), self.bins).flatten()
        self.count.index_add_(0, b, torch.ones_like(b))
        self.correct.index_add_(0, b, (pred.long() == t).long().flatten())
        self.confidence.index_add_(0, b, confidence.double().flatten())

    def all_reduce(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for t in (self.count, self.correct, self.confidence):
                dist.all_reduce(t)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"count": self.count.cpu(), "correct": self.correct.cpu(), "confidence": self.confidence.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k in ("count", "correct", "confidence"):
            getattr(self, k).copy_(state[k])

    def summary(self) -> dict:
        """ECE (percent) and the per-bin counts, accuracy and mean confidence (the reliability diagram's data)."""
        n = self.count[: self.bins].cpu().double()
        correct = self.correct[: self.bins].cpu().double()
        conf = self.confidence[: self.bins].cpu()
        total = float(n.sum())
        acc_b = torch.where(n > 0, correct / n.clamp(min=1), torch.nan)
        conf_b = torch.where(n > 0, conf / n.clamp(min=1), torch.nan)
        gaps = torch.where(n > 0, (acc_b - conf_b).abs() * n, 0.0)
        return {
            "ece": float(gaps.sum() / total) * 100 if total else None,
            "bins": self.bins,
            "pixels": int(total),
            "count": [int(c) for c in n],
            "accuracy": [None if torch.isnan(a) else float(a) for a in acc_b],
            "mean_confidence": [None if torch.isnan(c) else float(c) for c in conf_b],
        }

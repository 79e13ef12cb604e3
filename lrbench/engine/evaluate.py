"""``lrbench eval``: mIoU on a validation set with the mmseg test protocol, without mmseg.

The model, its weights and the recipe's test pipeline come from :func:`lrbench.engine.inference.load` (one resolution of the
name); this module is the evaluator around it, in four small pieces: :class:`~lrbench.settings.EvalSettings` (every
option, declared once; the CLI builds it), :class:`ResumeState` (accumulated areas saved atomically every
``state_every`` images, every ``state_seconds`` and on any interruption), :func:`run_loop` (images of equal size go
through the model together, ``batch_size`` at a time) and the record written at the end
(:func:`lrbench.results.record`). Under torchrun each rank takes a disjoint shard; rank 0 pulls the weights first and
alone writes the result.

Beside the record, ``<out>.per_image.npz`` keeps the per-image areas and the confusion matrix (what ``lrbench compare``
and ``lrbench analyze`` read); each class's IoU / Acc carries its bootstrap interval. ``corruption`` / ``severity``
evaluate on images corrupted as they are decoded (:mod:`lrbench.engine.corruptions`); ``calibration`` scores the
full-resolution scores' argmax (the reference post-processing, :func:`lrbench.engine.pipeline.predict_logits`) and
accumulates their top-1 confidence for the ECE (:class:`lrbench.engine.metrics.CalibrationAccumulator`), with a
reliability diagram beside the result.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..analysis import plot_reliability
from ..datasets import get_spec
from ..errors import LrbenchError, OutputError, ResultError
from ..fileio import atomic_write_bytes, check_writable, write_json
from ..recipes import library_of
from ..results import record, versions
from ..settings import AUTO_OUT, EvalSettings, check_corruption
from ..stats import AREAS, class_intervals, miou_ci
from ..zoo import Resolved
from .devices import autocast, check_device, check_dtype, device_name, resolve_device
from .inference import Loaded, load
from .loader import DatasetError, SegDataset, collate_list
from .metrics import CalibrationAccumulator, IoUAccumulator
from .pipeline import TestConfig, ms_views, predict_labels, predict_logits
from .timing import Intervals, Stages


# ----------------------------------------------------------------------------------------------------------------
# Resume state
# ----------------------------------------------------------------------------------------------------------------
def _describe_change(old: dict, new: dict) -> str:
    """What differs between two run fingerprints, in words."""
    parts = []
    if old.get("n") != new.get("n"):
        parts.append(f"the image list changed: {old.get('n')} → {new.get('n')} images")
    elif old.get("images") != new.get("images"):
        parts.append("the image files changed")
    for k in (
        "model",
        "weights_sha256",
        "dataset",
        "protocol",
        "mode",
        "merge",
        "test",
        "world",
        "dtype",
        "corruption",
        "calibration",
    ):
        if old.get(k) != new.get(k):
            a, b = old.get(k), new.get(k)
            if k == "weights_sha256":
                k, a, b = "checkpoint sha256", str(a)[:12], str(b)[:12]
            parts.append(f"{k}: {a} → {b}")
    return "; ".join(parts) or "the run settings differ"


@dataclass
class ResumeState:
    """The accumulated areas, processed indices and skipped files of one process, saved beside the result."""

    path: Path | None
    fingerprint: dict
    done: set = field(default_factory=set)
    skipped: list = field(default_factory=list)
    every_images: int = 50
    every_seconds: float = 60.0
    _since: int = 0
    _last: float = field(default_factory=time.monotonic)

    def restore(self, acc: IoUAccumulator, resume: bool, overwrite: bool) -> None:
        if self.path is None or not self.path.exists():
            return
        if not resume:
            if overwrite:
                return
            raise OutputError(
                f"{self.path}: an interrupted run can be continued; pass --resume, or --overwrite to start again"
            )
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != self.fingerprint:
            what = _describe_change(state["fingerprint"], self.fingerprint)
            raise ResultError(
                f"{self.path}: saved by a different run ({what}); to start this run again, replace "
                f"--resume with --overwrite"
            )
        if "confusion" not in state["areas"]:
            raise ResultError(
                f"{self.path}: saved by an earlier lrbench (no confusion matrix); replace --resume with --overwrite"
            )
        acc.load_state_dict(state["areas"])
        acc.load_image_state(state["images"])
        self.done, self.skipped = set(state["done"]), list(state["skipped"])

    def save(self, acc: IoUAccumulator) -> None:
        if self.path is not None:
            state = {
                "fingerprint": self.fingerprint,
                "areas": acc.state_dict(),
                "images": acc.image_state(),
                "done": sorted(self.done),
                "skipped": self.skipped,
            }
            atomic_write_bytes(self.path, lambda tmp: torch.save(state, tmp))
        self._since, self._last = 0, time.monotonic()

    def step(self, acc: IoUAccumulator) -> None:
        """Count one processed image; save when enough images or seconds have passed."""
        self._since += 1
        if self._since >= self.every_images or time.monotonic() - self._last >= self.every_seconds:
            self.save(acc)


def state_path(out_path: Path, rank: int, world: int) -> Path:
    """Resume state beside the result: ``<out>.state.pt``, one ``<out>.state.rankN.pt`` per process under torchrun."""
    return out_path.with_name(out_path.name + (f".state.rank{rank}.pt" if world > 1 else ".state.pt"))


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------
def _dist() -> tuple[int, int]:
    """(rank, world size); initialises the default group under torchrun (NCCL on GPUs, gloo on CPU)."""
    import torch.distributed as dist

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ  # torchrun
    if launched and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _backend() -> str | None:
    import torch.distributed as dist

    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def _gather_lists(items: list) -> list:
    """Concatenate a list over all processes (rank order); the list itself when not distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return items
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


class TimedForward(nn.Module):
    """Wraps a model to add up the time spent in its forward (on CUDA between events, read at the end: no
    synchronisation per call) and count its calls: the rest of the evaluation (decoding, resizing, the metric, waiting
    for data) is the overhead the eval benchmark reports. With ``compile``, the model is torch.compile'd and its first
    call (the compilation, synchronised) is kept apart in ``compile_s``; with ``channels_last`` the input is passed in
    channels-last memory."""

    def __init__(self, model: nn.Module, device: str, compile: bool = False, channels_last: bool = False):
        super().__init__()
        self.model = torch.compile(model) if compile else model
        self.clock, self.calls, self.compile_s = Intervals(device.startswith("cuda")), 0, None
        self.compiling = compile
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format

    @property
    def seconds(self) -> float:
        return self.clock.totals().get("forward", 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.memory_format != torch.preserve_format:
            x = x.contiguous(memory_format=self.memory_format)
        if self.compiling:  # a one-off: wall time, synchronised
            t0 = time.perf_counter()
            out = self.model(x)
            if self.clock.cuda:
                torch.cuda.synchronize()
            self.compile_s, self.compiling = time.perf_counter() - t0, False
        else:
            start = self.clock.now()
            out = self.model(x)
            self.clock.add("forward", start, self.clock.now())
        self.calls += 1
        return out


def _prefetched(loader, device: str):
    """The loader's batches; on CUDA each comes with its images and labels already copied to the GPU, the next
    batch's copies (from pinned memory, on a side stream) queued before the current one is handed out, so that the
    copies overlap its forward."""
    if not device.startswith("cuda"):
        yield from loader
        return
    stream = torch.cuda.Stream()

    def queue(batch):
        if batch is not None:
            with torch.cuda.stream(stream):
                for item in batch:
                    for key in ("image", "label"):
                        if key in item:
                            item[key] = item[key].to(device, non_blocking=True)
        return batch

    batches = iter(loader)
    upcoming = queue(next(batches, None))
    while upcoming is not None:
        torch.cuda.current_stream().wait_stream(stream)
        batch = upcoming
        for item in batch:
            for key in ("image", "label"):
                if key in item:
                    item[key].record_stream(torch.cuda.current_stream())  # made on the side stream, used on this one
        upcoming = queue(next(batches, None))
        yield batch


def _same_size_groups(items: list[dict]) -> list[list[dict]]:
    """Split a loaded batch into runs of images of one size (order kept): each run is one forward."""
    groups: dict[tuple, list[dict]] = {}
    for item in items:
        groups.setdefault(tuple(item["image"].shape), []).append(item)
    return list(groups.values())


def run_loop(
    net: nn.Module,
    ds: SegDataset,
    cfg: TestConfig,
    todo: list[int],
    total: int,
    acc: IoUAccumulator,
    state: ResumeState,
    device: str,
    batch_size: int,
    workers: int,
    dtype: str,
    skip_bad: bool,
    progress: Callable[[int, int, dict], None] | None,
    stages: Stages,
) -> None:
    """Predict and accumulate every index in ``todo``; state is saved on the way and on any interruption."""
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(ds, todo),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_list,
        pin_memory=device.startswith("cuda"),
        persistent_workers=False,
    )
    amp_ctx = autocast(dtype, device)
    try:
        with torch.inference_mode():
            for batch in _prefetched(loader, device):
                stages.mark("decode")  # waiting for the loader (decoding, when there are no workers)
                good = []
                for item in batch:
                    if "error" not in item:
                        good.append(item)
                        continue
                    if not skip_bad:
                        raise DatasetError(item["error"] + "; fix or remove the file, or pass --skip-bad")
                    state.skipped.append(item["error"])
                    state.done.add(item["index"])
                for group in _same_size_groups(good):
                    images = torch.stack([it["image"] for it in group])  # already on the device (_prefetched)
                    confidence = None
                    with amp_ctx:
                        if acc.calibration is None:
                            preds = predict_labels(net, images, cfg.test, cfg.protocol, cfg.mode, cfg.merge, stages)
                        else:  # the full-resolution scores, for their confidence (the reference path)
                            confidence, preds = top1(
                                cfg, predict_logits(net, images, cfg.test, cfg.protocol, cfg.mode, cfg.merge)
                            )
                    for j, (pred, item) in enumerate(zip(preds, group)):
                        acc.update(pred, item["label"], item["index"])
                        if confidence is not None:
                            acc.calibration.update(confidence[j], pred, item["label"])
                        state.done.add(item["index"])
                        state.step(acc)
                        if progress:
                            progress(len(state.done), total, acc.summary() if len(state.done) % 10 == 1 else {})
                    stages.mark("metric")
    except BaseException:  # Ctrl-C, SIGTERM or a bad file: keep what was measured, so --resume continues from here
        if state.done:
            state.save(acc)
        raise


def confidence_rule(cfg: TestConfig) -> tuple[bool, str]:
    """(softmax?, in words) of the calibration's top-1 confidence for a test configuration: the merged probabilities
    as they are for ms merged by softmax, detectron2's scores as they are, else the softmax of the scores."""
    merged = cfg.protocol == "ms"
    if merged and cfg.merge == "softmax":
        return False, "the merged probabilities: mean of the views' softmax at full resolution"
    if library_of(cfg.test) == "detectron2":
        what = "the mean of the views' scores" if merged else "the model's scores"
        return False, f"{what} at full resolution as they are (detectron2's Mask2Former semantic scores; no softmax)"
    return True, "softmax of the " + ("mean of the views' logits" if merged else "full-resolution scores")


def top1(cfg: TestConfig, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, class) per pixel from (B, K, H, W) full-resolution scores, by :func:`confidence_rule`."""
    softmax, _ = confidence_rule(cfg)
    probs = scores.float().softmax(1) if softmax else scores.float()
    return probs.max(1)


def _image_digest(ds: SegDataset, indices: list[int]) -> str:
    h = hashlib.sha256()
    for i in indices:
        h.update(ds.key(i).encode() + b"\0")
    return h.hexdigest()[:16]


def _load_in_turn(
    settings: EvalSettings, dataset: str | None, rank: int, world: int, resolved: Resolved | None = None
) -> Loaded:
    """:func:`load` on every rank, rank 0 first (it pulls the weights into the shared caches; the others then find
    them there), so that ranks never download the same file at once. A failure on rank 0 is every rank's."""
    s = settings
    kw = dict(
        dataset=dataset,
        checkpoint=s.checkpoint,
        recipe=s.recipe,
        protocol=s.protocol,
        mode=s.mode,
        merge=s.merge,
        resolved=resolved,
    )
    if world == 1:
        return load(s.model, **kw)
    import torch.distributed as dist

    loaded, failure = None, [None]
    if rank == 0:
        try:
            loaded = load(s.model, **kw)
        except LrbenchError as e:
            failure = [str(e)]
            dist.broadcast_object_list(failure, src=0)
            raise
    dist.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        raise LrbenchError(failure[0])
    return loaded or load(s.model, **kw)


def evaluate(
    settings: EvalSettings,
    progress: Callable[[int, int, dict], None] | None = None,
    resolved: Resolved | None = None,
) -> dict:
    """Evaluate on a validation set; returns (and with ``settings.out`` writes atomically) the result record.

    Resumable: with an output file, the accumulated areas and processed indices are saved atomically to
    ``<out>.state[.rankN].pt`` every ``state_every`` images, every ``state_seconds`` and on any interruption;
    ``resume=True`` continues from there and ends with bit-identical areas, or returns the finished result when it
    was made by the same run. Under torchrun each rank takes a disjoint shard; areas are all-reduced and rank 0
    writes the result. ``batch_size`` images of equal size go through the model in one forward. ``dtype`` autocasts
    (``amp=True`` is the earlier spelling of fp16 on CUDA / bf16 on CPU), ``channels_last`` passes channels-last
    inputs, ``compile`` torch.compiles the model (its compile time is recorded apart from the model time).
    ``resolved``: what the caller already resolved ``settings.model`` to (the CLI checks the name before torch).
    """
    s = settings.check()
    device = resolve_device(s.device)
    check_device(device)
    dtype = ("fp16" if device.startswith("cuda") else "bf16") if s.amp else s.dtype
    check_dtype(dtype, device)
    fixed = s.out != AUTO_OUT  # the default --out needs the dataset the name resolves to
    if fixed and s.out:
        _check_out(Path(s.out), s.overwrite or s.resume)
    rank, world = _dist()
    loaded = _load_in_turn(s, s.dataset, rank, world, resolved)
    dataset, weights, cfg = loaded.cfg.dataset, loaded.weights, loaded.cfg
    out = s.out_path(dataset)
    out_path = Path(out) if out else None
    if out_path is not None and not fixed:
        _check_out(out_path, s.overwrite or s.resume)
    corruption = check_corruption(s.corruption, s.severity)
    ds = SegDataset(dataset, s.data_root, corruption)
    if world > 1 and device == "cuda":  # torchrun: one GPU per local rank
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
        torch.cuda.set_device(torch.device(device))
    indices = list(range(len(ds)))[: s.limit or None]
    fingerprint = {
        "model": weights.model,
        "weights_sha256": weights.sha256,
        "dataset": dataset,
        "n": len(indices),
        "images": _image_digest(ds, indices),
        "protocol": cfg.protocol,
        "mode": cfg.mode,
        "test": cfg.test,
        "world": world,
        "merge": cfg.merge,
        "dtype": dtype,
    }
    if corruption:  # only when set: states and results of runs without them keep their fingerprints
        fingerprint["corruption"] = list(corruption)
    if s.calibration:
        fingerprint["calibration"] = True
    state = ResumeState(
        state_path(out_path, rank, world) if out_path else None,
        fingerprint,
        every_images=s.state_every,
        every_seconds=s.state_seconds,
    )
    if out_path is not None and out_path.exists() and s.resume and not (state.path and state.path.exists()):
        return _finished(out_path, fingerprint)
    net = loaded.model.to(device).eval()
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False  # mmseg's benchmark setting; shapes vary per image anyway

    spec = get_spec(dataset)
    acc = IoUAccumulator(spec.num_classes, spec.ignore_index, device)
    if s.calibration:
        acc.calibration = CalibrationAccumulator(spec.num_classes, spec.ignore_index, device=device)
    state.restore(acc, s.resume, s.overwrite)
    shard = indices[rank::world]
    todo = [i for i in shard if i not in state.done]
    timed = TimedForward(net, device, s.compile, s.channels_last)
    t_start = time.perf_counter()
    stages = Stages(device.startswith("cuda"))
    run_loop(
        timed,
        ds,
        cfg,
        todo,
        total=len(shard),
        acc=acc,
        state=state,
        device=device,
        batch_size=s.batch_size,
        workers=s.workers,
        dtype=dtype,
        skip_bad=s.skip_bad,
        progress=progress,
        stages=stages,
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # the loop queues work without waiting for it
    wall = time.perf_counter() - t_start
    state.save(acc)
    acc.all_reduce()
    skipped = _gather_lists(state.skipped)
    summary = acc.summary(spec.classes)
    per_image = per_image_arrays(acc.gather_images(), ds, spec.num_classes)
    ci = miou_ci(per_image["intersect"], per_image["union"]) if len(per_image["names"]) else None
    if len(per_image["names"]):  # each class's IoU / Acc interval from the same resamples
        cis = class_intervals(per_image)
        for row, iou_ci, acc_ci in zip(summary["per_class"], cis["IoU"], cis["Acc"]):
            row |= {"IoU_ci95": iou_ci, "Acc_ci95": acc_ci}
    per_image["confusion"] = acc.confusion.cpu().numpy()
    result = record(
        "eval",
        model=weights.model,
        arch=weights.arch,
        zoo_entry=weights.entry,
        weights=weights.source,
        checkpoint=weights.path,
        checkpoint_sha256=weights.sha256,
        weights_verified=weights.verified,
        weights_source=weights.origin or weights.source,
        dataset=dataset,
        data_root=str(ds.root.resolve()),
        label_form=ds.layout.form,
        num_images=len(indices),
        complete=s.limit is None or s.limit >= len(ds),
        recipe=cfg.recipe,
        test=cfg.test,
        protocol=cfg.protocol,
        mode=cfg.mode,
        merge=cfg.merge,
        ms_views=ms_views(cfg.test) if cfg.protocol == "ms" else None,
        aAcc=summary["aAcc"],
        mIoU=summary["mIoU"],
        miou_ci95=ci,
        per_image_file=per_image_path(out_path).name if out_path else None,
        confusion_matrix={
            "file": per_image_path(out_path).name if out_path else None,
            "key": "confusion",
            "rows": "label",
            "columns": "prediction",
            "shape": list(per_image["confusion"].shape),
            "last": "ids that are not classes (row: labels outside the classes; column: none for argmax outputs)",
        },
        mAcc=summary["mAcc"],
        per_class=summary["per_class"],
        areas={k: v.tolist() for k, v in acc.areas.items()},
        corruption=corruption_record(corruption),
        calibration=None
        if acc.calibration is None
        else acc.calibration.summary()
        | {
            "confidence": confidence_rule(cfg)[1],
            "post_processing": "reference (full-resolution scores; labels = their argmax)",
            "diagram": reliability_path(out_path).name if out_path else None,
        },
        skipped=skipped,
        device=device,
        device_name=device_name(device),
        world_size=world,
        dist_backend=_backend(),
        dtype=dtype,
        channels_last=s.channels_last,
        compile=s.compile,
        batch_size=s.batch_size,
        versions=versions(),
        fingerprint=fingerprint,
        timings={
            "wall_s": wall,
            "model_s": timed.seconds,
            "compile_s": timed.compile_s,
            "forwards": timed.calls,
            "images_per_s": len(todo) / wall if wall else None,
            "outside_model_share": 1 - (timed.seconds + (timed.compile_s or 0)) / wall if wall else None,
            "stages_s": stages.seconds,
        },
    )
    if out_path is not None and rank == 0:
        atomic_write_bytes(per_image_path(out_path), lambda tmp: _save_npz(tmp, per_image))
        if result["calibration"] is not None:
            plot_reliability(result["calibration"], f"{weights.model} on {dataset}", reliability_path(out_path))
        write_json(out_path, result)
        for r in range(world):  # the final result supersedes the resume state
            state_path(out_path, r, world).unlink(missing_ok=True)
    return result | {"out": out}


def reliability_path(out_path: Path) -> Path:
    """The reliability diagram beside a result: ``r.json`` -> ``r.reliability.png``."""
    return out_path.with_name(out_path.stem + ".reliability.png")


def corruption_record(corruption: tuple[str, int] | None) -> dict | None:
    """How the corrupted images were made (the record says it)."""
    if corruption is None:
        return None
    name, severity = corruption
    return {
        "name": name,
        "severity": severity,
        "package": f"imagecorruptions {importlib.metadata.version('imagecorruptions')}",
        "seed": "per image: sha256 of 'name/severity/<image path inside the dataset>' (first 4 bytes)",
        "glass_blur": "lrbench.engine.corruptions.glass_blur_fast (equal to the package's)"
        if name == "glass_blur"
        else None,
    }


def per_image_path(out_path: Path) -> Path:
    """The per-image counts beside a result: ``r.json`` -> ``r.per_image.npz``."""
    return out_path.with_name(out_path.stem + ".per_image.npz")


def per_image_arrays(images: dict[int, torch.Tensor], ds: SegDataset, num_classes: int) -> dict[str, np.ndarray]:
    """``names`` (image file names) and mmseg's four per-image areas as (N, K) int64, in dataset order."""
    idx = sorted(images)
    stacked = torch.stack([images[i] for i in idx]).numpy() if idx else np.zeros((0, 4, num_classes), np.int64)
    out = {"names": np.array([ds.items[i][0].name for i in idx], dtype=str)}
    return out | {key: stacked[:, j] for j, key in enumerate(AREAS)}


def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to a path
        np.savez_compressed(f, **arrays)


def _check_out(path: Path, may_exist: bool) -> None:
    if path.exists() and not may_exist:
        raise OutputError(
            f"{path} already exists; pass --overwrite to replace it, --resume to continue, or choose another --out"
        )
    check_writable(path)


def _finished(out_path: Path, fingerprint: dict) -> dict:
    """--resume on a finished result: return it only when it was made by this very run."""
    try:
        done = json.loads(out_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ResultError(f"{out_path}: cannot be read as a finished result ({e}); pass --overwrite") from None
    if done.get("fingerprint") != fingerprint:
        what = _describe_change(done.get("fingerprint") or {}, fingerprint)
        raise ResultError(
            f"{out_path} holds a finished result of a different run ({what}); choose another --out, "
            f"or --overwrite to replace it"
        )
    return done

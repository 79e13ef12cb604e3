"""``lrbench eval``: the mmseg test protocol without mmseg -- pipeline, whole / slide / multi-scale inference, mIoU.

Test pipeline (recipe ``test:``): keep-ratio resize to ``resize`` (mmcv ``imrescale``: factor = min(long/long_side,
short/short_side), sizes rounded half up), then with ``size_divisor`` > 1 each side resized *up* to the next multiple
(LRFormer / SegFormer AlignResize), bilinear, rounded back to uint8 as cv2 does; ImageNet mean/std in RGB. With
``pad_divisor`` (the Mask2Former models: mmseg's data preprocessor, detectron2's size divisibility) the normalised image
is instead zero-padded right/bottom to a multiple and the padding is cropped off the scores before the final resize.
``ms_max_long`` (detectron2) fixes the long-side limit of the multi-scale views instead of scaling it.
Inference: ``whole`` = one forward; ``slide`` = crop windows (mmseg grid: last window flush with the border),
logits resized to each crop, summed and divided by the per-pixel count. Logits are resized bilinearly
(align_corners=False) to the network input, then to the original image, before argmax.
Multi-scale (``--protocol ms``): test scale times [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], each with a horizontal flip;
logits at the original size are averaged (softmax-free; ``merge="softmax"`` averages probabilities as mmseg 1.x's
SegTTAModel does).

The evaluator is four small pieces: :class:`TestConfig` (recipe + overrides, resolved once), :class:`ResumeState`
(accumulated areas saved atomically every ``state_every`` images, every ``state_seconds`` and on any interruption),
:func:`run_loop` (images of equal size go through the model together, ``--batch-size`` at a time) and the record
written at the end (:func:`lrbench.results.record`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DatasetError, SegDataset, collate_list
from .datasets import get_spec
from .errors import OutputError, ResultError, UsageError
from .fileio import atomic_write_bytes, check_writable, write_json
from .metrics import IoUAccumulator
from .models import create_model
from .models.base import IMAGENET_MEAN, IMAGENET_STD
from .names import MODES, MS_MERGES, PROTOCOLS
from .results import autocast, check_device, check_dtype, device_name, record, versions
from .sources import sha256_file
from .zoo import fetch, resolve

MS_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


# ----------------------------------------------------------------------------------------------------------------
# Pipeline and inference
# ----------------------------------------------------------------------------------------------------------------
def rescale_size(
    h: int, w: int, scale: tuple[int, int] | None, ratio: float = 1.0, max_long: float | None = None
) -> tuple[int, int]:
    """mmcv ``rescale_size`` with keep_ratio for the test ``scale`` (long, short) times ``ratio``; None = as is.
    ``max_long`` replaces the scaled long-side limit (detectron2's fixed ``TEST.AUG.MAX_SIZE`` for every scale)."""
    if scale is None:
        return h, w
    long_edge, short_edge = (max_long or max(scale) * ratio), min(scale) * ratio
    f = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def resize_steps(h: int, w: int, test: dict, ratio: float = 1.0) -> list[tuple[int, int]]:
    """The sizes an (h, w) image goes through under a recipe's ``test`` settings: the keep-ratio rescale, then, with
    ``size_divisor`` > 1, AlignResize's second resize of each side up to a multiple (two resizes, as mmseg does)."""
    max_long = test.get("ms_max_long") if ratio != 1.0 else None
    nh, nw = rescale_size(h, w, test.get("resize"), ratio, max_long)
    d = int(test.get("size_divisor") or 1)
    return [(nh, nw), (math.ceil(nh / d) * d, math.ceil(nw / d) * d)]


def input_size(h: int, w: int, test: dict, ratio: float = 1.0) -> tuple[int, int]:
    """Network input size for an (h, w) image under a recipe's ``test`` settings."""
    return resize_steps(h, w, test, ratio)[-1]


def preprocess(images: torch.Tensor, sizes: list[tuple[int, int]]) -> torch.Tensor:
    """uint8 (B, H, W, 3) RGB -> normalised float (B, 3, h, w): bilinear resizes through ``sizes`` (each rounded back
    to uint8, as cv2 returns), then the ImageNet mean/std."""
    x = images.permute(0, 3, 1, 2).float()
    for size in sizes:
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False).round_().clamp_(0, 255)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=x.device)[None, :, None, None]
    return (x - mean) / std


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad a normalised batch on the right and bottom to sides that are multiples of ``divisor`` (mmseg
    ``stack_batch(size_divisor, pad_val=0)`` after normalisation)."""
    H, W = x.shape[-2:]
    return F.pad(x, (0, -W % divisor, 0, -H % divisor)) if divisor > 1 else x


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return (
        x
        if tuple(x.shape[-2:]) == tuple(size)
        else F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    )


def forward_whole(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits at the input size (the head's 1/s logits resized bilinearly)."""
    return _resize(model(x).float(), x.shape[-2:])


def forward_slide(model: nn.Module, x: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """mmseg ``slide_inference``: windows on a grid whose last row/column is flush with the border."""
    (ch, cw), (sh, sw) = crop, stride
    H, W = x.shape[-2:]
    rows = max(H - ch + sh - 1, 0) // sh + 1
    cols = max(W - cw + sw - 1, 0) // sw + 1
    out = count = None
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, H), min(c * sw + cw, W)
            y1, x1 = max(y2 - ch, 0), max(x2 - cw, 0)
            logits = forward_whole(model, x[..., y1:y2, x1:x2])
            if out is None:
                out = x.new_zeros(x.shape[0], logits.shape[1], H, W)
                count = x.new_zeros(1, 1, H, W)
            out[..., y1:y2, x1:x2] += logits
            count[..., y1:y2, x1:x2] += 1
    return out / count


def predict_logits(
    model: nn.Module, images: torch.Tensor, test: dict, protocol: str = "ss", mode: str = "whole", merge: str = "logits"
) -> torch.Tensor:
    """(B, K, H, W) logits at the original image size for uint8 images of one size, (B, H, W, 3) or (H, W, 3)."""
    images = images[None] if images.dim() == 3 else images
    H, W = images.shape[1:3]
    crop = tuple(test.get("crop") or (512, 512))
    stride = tuple(test.get("stride") or (341, 341))
    run = (lambda x: forward_slide(model, x, crop, stride)) if mode == "slide" else (lambda x: forward_whole(model, x))
    views = [(1.0, False)] if protocol == "ss" else [(r, f) for r in MS_RATIOS for f in (False, True)]
    pad = int(test.get("pad_divisor") or 1)
    total = None
    for ratio, flip in views:
        x = preprocess(images, resize_steps(H, W, test, ratio))
        h, w = x.shape[-2:]
        logits = run(pad_to_multiple(x.flip(-1) if flip else x, pad))[..., :h, :w]  # flip, pad, infer, crop
        logits = _resize(logits.flip(-1) if flip else logits, (H, W))
        if merge == "softmax":
            logits = logits.softmax(1)
        total = logits if total is None else total + logits
    return total / len(views)


# ----------------------------------------------------------------------------------------------------------------
# The test configuration, resolved once
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TestConfig:
    """Everything that decides the numbers: the dataset, the recipe's test pipeline and the protocol."""

    dataset: str
    recipe: str | None
    test: dict = field(hash=False)
    protocol: str = "ss"
    mode: str = "whole"
    merge: str = "logits"

    @classmethod
    def build(
        cls, dataset: str, recipe: dict, protocol: str = "ss", mode: str | None = None, merge: str = "logits"
    ) -> TestConfig:
        get_spec(dataset)
        for flag, value, allowed in (
            ("--protocol", protocol, PROTOCOLS),
            ("--ms-merge", merge, MS_MERGES),
            ("--mode", mode or "whole", MODES),
        ):
            if value not in allowed:
                raise UsageError(f"{flag} must be one of {', '.join(allowed)}, got '{value}'")
        test = dict(recipe.get("test") or {})
        return cls(dataset, recipe.get("name"), test, protocol, mode or test.get("mode", "whole"), merge)


def check_run_options(device: str, batch_size: int, workers: int, limit: int | None) -> None:
    check_device(device)
    if batch_size < 1 or workers < 0 or (limit is not None and limit < 1):
        raise UsageError("--batch-size and --limit must be >= 1 and --workers >= 0")


@dataclass(frozen=True)
class Weights:
    """Which weights an eval runs: from the zoo (pulled and verified) or a local file, with the original file's
    sha256 (for a zoo pull, the hub file's; the report compares it with the manifest's)."""

    arch: str
    model: str  # the name the user gave
    entry: str | None
    source: str  # "zoo" | "file" | "module"
    path: str | None
    sha256: str | None
    verified: bool = False  # checked against a sha256 known before the download (manifest, hub, file-name prefix)
    origin: str | None = None  # where a zoo file came from, pinned ("hub REPO/FILE@COMMIT", "url URL")


def resolve_weights(
    model: str | nn.Module, dataset: str, checkpoint: str | None, recipe: dict | None
) -> tuple[Weights, dict, nn.Module | None]:
    """(weights, recipe, model if already built) for a zoo entry / architecture name or a ready module."""
    if isinstance(model, nn.Module):
        name = getattr(model, "name", type(model).__name__)
        return Weights(name, name, None, "module", checkpoint, None), recipe or {"test": {}}, model
    r = resolve(model, dataset)
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise UsageError(f"--checkpoint {checkpoint}: file not found")
        w = Weights(r.arch, model, r.entry.name if r.entry else None, "file", str(checkpoint), sha256_file(checkpoint))
        return w, recipe or r.recipe, None
    if r.entry is None or r.entry.source is None:
        raise UsageError(
            f"no released weights for {model} on {dataset}: pass --checkpoint FILE (an official .pth, "
            f"transformers or lrbench .safetensors)"
        )
    pulled, net = fetch(r.entry.name)
    w = Weights(
        r.arch, model, r.entry.name, "zoo", pulled["path"], pulled["sha256"], pulled["verified"], pulled["origin"]
    )
    return w, recipe or r.recipe, net


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
    for k in ("model", "weights_sha256", "dataset", "protocol", "mode", "merge", "test", "world", "dtype"):
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
        acc.load_state_dict(state["areas"])
        self.done, self.skipped = set(state["done"]), list(state["skipped"])

    def save(self, acc: IoUAccumulator) -> None:
        if self.path is not None:
            state = {
                "fingerprint": self.fingerprint,
                "areas": acc.state_dict(),
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
    """Wraps a model to add up the time spent in its forward (synchronised on CUDA) and count its calls: the rest
    of the evaluation (decoding, resizing, the metric, waiting for data) is the overhead the eval benchmark reports.
    With ``compile``, the model is torch.compile'd and its first call (the compilation) is kept apart in
    ``compile_s``; with ``channels_last`` the input is passed in channels-last memory."""

    def __init__(self, model: nn.Module, device: str, compile: bool = False, channels_last: bool = False):
        super().__init__()
        self.model = torch.compile(model) if compile else model
        self.cuda, self.seconds, self.calls, self.compile_s = device.startswith("cuda"), 0.0, 0, None
        self.compiling = compile
        self.memory_format = torch.channels_last if channels_last else torch.preserve_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.model(
            x.contiguous(memory_format=self.memory_format) if self.memory_format != torch.preserve_format else x
        )
        if self.cuda:
            torch.cuda.synchronize()
        if self.compiling:
            self.compile_s, self.compiling = time.perf_counter() - t0, False
        else:
            self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


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
            for batch in loader:
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
                    images = torch.stack([it["image"] for it in group]).to(device, non_blocking=True)
                    with amp_ctx:
                        logits = predict_logits(net, images, cfg.test, cfg.protocol, cfg.mode, cfg.merge)
                    preds = logits.argmax(1)
                    for pred, item in zip(preds, group):
                        acc.update(pred, item["label"].to(device, non_blocking=True))
                        state.done.add(item["index"])
                        state.step(acc)
                        if progress:
                            progress(len(state.done), total, acc.summary() if len(state.done) % 10 == 1 else {})
    except BaseException:  # Ctrl-C, SIGTERM or a bad file: keep what was measured, so --resume continues from here
        if state.done:
            state.save(acc)
        raise


def _image_digest(ds: SegDataset, indices: list[int]) -> str:
    h = hashlib.sha256()
    for i in indices:
        h.update(str(ds.items[i][0].relative_to(ds.root)).encode() + b"\0")
    return h.hexdigest()[:16]


def evaluate(
    model: str | nn.Module,
    dataset: str,
    data_root: str | os.PathLike,
    checkpoint: str | None = None,
    protocol: str = "ss",
    mode: str | None = None,
    limit: int | None = None,
    batch_size: int = 1,
    workers: int = 2,
    device: str = "cpu",
    amp: bool = False,
    dtype: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    out: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    state_every: int = 50,
    state_seconds: float = 60.0,
    skip_bad: bool = False,
    recipe: dict | None = None,
    merge: str = "logits",
    progress: Callable[[int, int, dict], None] | None = None,
) -> dict:
    """Evaluate on a validation set; returns (and with ``out`` writes atomically) the result record.

    Resumable: with ``out``, the accumulated areas and processed indices are saved atomically to
    ``<out>.state[.rankN].pt`` every ``state_every`` images, every ``state_seconds`` and on any interruption;
    ``resume=True`` continues from there and ends with bit-identical areas, or returns the finished result when it
    was made by the same run. Under torchrun each rank takes a disjoint shard; areas are all-reduced and rank 0
    writes ``out``. ``batch_size`` images of equal size go through the model in one forward. ``dtype`` autocasts
    (``amp=True`` is the earlier spelling of fp16 on CUDA / bf16 on CPU), ``channels_last`` passes channels-last
    inputs, ``compile`` torch.compiles the model (its compile time is recorded apart from the model time).
    """
    check_run_options(device, batch_size, workers, limit)
    if amp:
        dtype = "fp16" if device.startswith("cuda") else "bf16"
    check_dtype(dtype, device)
    out_path = Path(out) if out else None
    if out_path is not None:
        if out_path.exists() and not (overwrite or resume):
            raise OutputError(
                f"{out_path} already exists; pass --overwrite to replace it, --resume to continue, "
                f"or choose another --out"
            )
        check_writable(out_path)
    ds = SegDataset(dataset, data_root)
    weights, recipe, net = resolve_weights(model, dataset, checkpoint, recipe)
    cfg = TestConfig.build(dataset, recipe, protocol, mode, merge)
    rank, world = _dist()
    if world > 1 and device == "cuda":  # torchrun: one GPU per local rank
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
        torch.cuda.set_device(torch.device(device))
    indices = list(range(len(ds)))[: limit or None]
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
    state = ResumeState(
        state_path(out_path, rank, world) if out_path else None,
        fingerprint,
        every_images=state_every,
        every_seconds=state_seconds,
    )
    if out_path is not None and out_path.exists() and resume and not (state.path and state.path.exists()):
        return _finished(out_path, fingerprint)
    net = (
        net
        if net is not None
        else create_model(weights.arch, num_classes=get_spec(dataset).num_classes, checkpoint=weights.path)
    )
    net = net.to(device).eval()
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False  # mmseg's benchmark setting; shapes vary per image anyway

    acc = IoUAccumulator(get_spec(dataset).num_classes, get_spec(dataset).ignore_index, device)
    state.restore(acc, resume, overwrite)
    shard = indices[rank::world]
    todo = [i for i in shard if i not in state.done]
    timed = TimedForward(net, device, compile, channels_last)
    t_start = time.perf_counter()
    run_loop(timed, ds, cfg, todo, len(shard), acc, state, device, batch_size, workers, dtype, skip_bad, progress)
    wall = time.perf_counter() - t_start
    state.save(acc)
    acc.all_reduce()
    skipped = _gather_lists(state.skipped)
    summary = acc.summary(get_spec(dataset).classes)
    result = record(
        "eval",
        model=weights.model,
        arch=weights.arch,
        zoo_entry=weights.entry,
        weights=weights.source,
        checkpoint=weights.path,
        checkpoint_sha256=weights.sha256,
        weights_verified=weights.verified,
        weights_source=weights.origin or (f"file {weights.path}" if weights.source == "file" else weights.source),
        dataset=dataset,
        data_root=str(ds.root),
        num_images=len(indices),
        complete=limit is None or limit >= len(ds),
        recipe=cfg.recipe,
        test=cfg.test,
        protocol=cfg.protocol,
        mode=cfg.mode,
        merge=cfg.merge,
        aAcc=summary["aAcc"],
        mIoU=summary["mIoU"],
        mAcc=summary["mAcc"],
        per_class=summary["per_class"],
        areas={k: v.tolist() for k, v in acc.state_dict().items()},
        skipped=skipped,
        device=device,
        device_name=device_name(device),
        world_size=world,
        dist_backend=_backend(),
        dtype=dtype,
        channels_last=channels_last,
        compile=compile,
        batch_size=batch_size,
        versions=versions(),
        fingerprint=fingerprint,
        timings={
            "wall_s": wall,
            "model_s": timed.seconds,
            "compile_s": timed.compile_s,
            "forwards": timed.calls,
            "images_per_s": len(todo) / wall if wall else None,
            "outside_model_share": 1 - (timed.seconds + (timed.compile_s or 0)) / wall if wall else None,
        },
    )
    if out_path is not None and rank == 0:
        write_json(out_path, result)
        for r in range(world):  # the final result supersedes the resume state
            state_path(out_path, r, world).unlink(missing_ok=True)
    return result


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

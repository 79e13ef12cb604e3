"""``lrbench eval``: the mmseg test protocol without mmseg -- pipeline, whole / slide / multi-scale inference, mIoU.

Test pipeline (recipe ``test:``): keep-ratio resize to ``resize`` (mmcv ``imrescale``: factor = min(long/long_side,
short/short_side), sizes rounded half up), then with ``size_divisor`` > 1 each side resized *up* to the next multiple
(LRFormer / SegFormer AlignResize), bilinear, rounded back to uint8 as cv2 does; ImageNet mean/std in RGB.
Inference: ``whole`` = one forward; ``slide`` = crop windows (mmseg grid: last window flush with the border),
logits resized to each crop, summed and divided by the per-pixel count. Logits are resized bilinearly
(align_corners=False) to the network input, then to the original image, before argmax.
Multi-scale (``--protocol ms``): test scale times [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], each with a horizontal flip;
logits at the original size are averaged (softmax-free; ``merge="softmax"`` averages probabilities as mmseg 1.x's
SegTTAModel does).
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fileio import atomic_write_bytes, now_iso, write_json
from .data import IGNORE_INDEX, DatasetError, SegDataset, collate_list, get_spec
from .metrics import IoUAccumulator
from .speed import device_name

MS_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
MEAN = torch.tensor([123.675, 116.28, 103.53])
STD = torch.tensor([58.395, 57.12, 57.375])


# ----------------------------------------------------------------------------------------------------------------
# Pipeline and inference
# ----------------------------------------------------------------------------------------------------------------
def rescale_size(h: int, w: int, scale: tuple[int, int] | None, ratio: float = 1.0) -> tuple[int, int]:
    """mmcv ``rescale_size`` with keep_ratio for the test ``scale`` (long, short) times ``ratio``; None = as is."""
    if scale is None:
        return h, w
    long_edge, short_edge = max(scale) * ratio, min(scale) * ratio
    f = min(long_edge / max(h, w), short_edge / min(h, w))
    return int(h * f + 0.5), int(w * f + 0.5)


def resize_steps(h: int, w: int, test: dict, ratio: float = 1.0) -> list[tuple[int, int]]:
    """The sizes an (h, w) image goes through under a recipe's ``test`` settings: the keep-ratio rescale, then, with
    ``size_divisor`` > 1, AlignResize's second resize of each side up to a multiple (two resizes, as mmseg does)."""
    nh, nw = rescale_size(h, w, test.get("resize"), ratio)
    d = int(test.get("size_divisor") or 1)
    return [(nh, nw), (math.ceil(nh / d) * d, math.ceil(nw / d) * d)]


def input_size(h: int, w: int, test: dict, ratio: float = 1.0) -> tuple[int, int]:
    """Network input size for an (h, w) image under a recipe's ``test`` settings."""
    return resize_steps(h, w, test, ratio)[-1]


def preprocess(image: torch.Tensor, sizes: list[tuple[int, int]]) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> normalised float (1, 3, h, w): bilinear resizes through ``sizes`` (each rounded back
    to uint8, as cv2 returns), then the ImageNet mean/std."""
    x = image.permute(2, 0, 1)[None].float()
    for size in sizes:
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False).round_().clamp_(0, 255)
    mean, std = MEAN.to(x.device)[None, :, None, None], STD.to(x.device)[None, :, None, None]
    return (x - mean) / std


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=tuple(size), mode="bilinear",
                                                                      align_corners=False)


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


def predict_logits(model: nn.Module, image: torch.Tensor, test: dict, protocol: str = "ss", mode: str = "whole",
                   merge: str = "logits") -> torch.Tensor:
    """(1, K, H, W) logits at the original image size for a uint8 (H, W, 3) image."""
    H, W = image.shape[:2]
    crop = tuple(test.get("crop") or (512, 512))
    stride = tuple(test.get("stride") or (341, 341))
    run = (lambda x: forward_slide(model, x, crop, stride)) if mode == "slide" else (lambda x: forward_whole(model, x))
    views = [(1.0, False)] if protocol == "ss" else [(r, f) for r in MS_RATIOS for f in (False, True)]
    total = None
    for ratio, flip in views:
        x = preprocess(image, resize_steps(H, W, test, ratio))
        logits = run(x.flip(-1) if flip else x)
        logits = _resize(logits.flip(-1) if flip else logits, (H, W))
        if merge == "softmax":
            logits = logits.softmax(1)
        total = logits if total is None else total + logits
    return total / len(views)


# ----------------------------------------------------------------------------------------------------------------
# Evaluation loop
# ----------------------------------------------------------------------------------------------------------------
def _dist() -> tuple[int, int]:
    """(rank, world size); initialises the default group under torchrun (NCCL on GPUs, gloo on CPU)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _atomic_torch_save(obj: object, path: Path) -> None:
    atomic_write_bytes(path, lambda tmp: torch.save(obj, tmp))


class TimedForward(nn.Module):
    """Wraps a model to add up the time spent in its forward (synchronised on CUDA): the rest of the evaluation
    (decoding, resizing, the metric, waiting for data) is the overhead the eval benchmark reports."""

    def __init__(self, model: nn.Module, device: str):
        super().__init__()
        self.model, self.cuda, self.seconds = model, device.startswith("cuda"), 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.model(x)
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        return out


def resolve_model(model: str | nn.Module, dataset: str, checkpoint: str | None,
                  recipe: dict | None) -> tuple[nn.Module, dict, dict]:
    """(model, recipe, info) for a zoo entry or architecture name (weights from --checkpoint or the zoo)."""
    from .models import create_model, resolve_name
    from .recipes import default_recipe, get_recipe
    from .zoo import load_zoo, pull, sha256_file

    spec = get_spec(dataset)
    if isinstance(model, nn.Module):
        return model, recipe or {"test": {}}, {"model": getattr(model, "name", type(model).__name__),
                                                "checkpoint": checkpoint}
    zoo = load_zoo()
    entry = zoo.get(model) or zoo.get(f"{model}_{dataset}")
    if entry is not None and entry.dataset != dataset:
        raise ValueError(f"zoo entry {entry.name} is for {entry.dataset}, not {dataset}; pick a {dataset} entry "
                         f"(`lrbench zoo list --dataset {dataset}`)")
    arch = entry.arch if entry else resolve_name(model)
    recipe = recipe or (get_recipe(entry.recipe) if entry else default_recipe(arch, dataset))
    if checkpoint is None:
        if entry is None or entry.hub is None:
            raise ValueError(f"no weights for {model} on {dataset}: pass --checkpoint FILE (an official .pth, "
                             f"transformers or lrbench .safetensors)")
        checkpoint = pull(entry.name)["path"]
    net = create_model(arch, num_classes=spec.num_classes, checkpoint=checkpoint)
    return net, recipe, {"model": model, "arch": arch, "zoo_entry": entry.name if entry else None,
                         "checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint)}


def evaluate(model: str | nn.Module, dataset: str, data_root: str | os.PathLike, checkpoint: str | None = None,
             protocol: str = "ss", mode: str | None = None, limit: int | None = None, batch_size: int = 1,
             workers: int = 2, device: str = "cpu", amp: bool = False, out: str | None = None, resume: bool = False,
             overwrite: bool = False, state_every: int = 50, skip_bad: bool = False, recipe: dict | None = None,
             merge: str = "logits", progress: Callable[[int, int, dict], None] | None = None) -> dict:
    """Evaluate on a validation set; returns (and with ``out`` writes atomically) the result dict.

    Resumable: with ``out``, the accumulated areas and processed indices are saved atomically to
    ``<out>.state[.rankN].pt`` every ``state_every`` images and on Ctrl-C; ``resume=True`` continues from there and
    ends with bit-identical areas. Under torchrun each rank takes a disjoint shard; areas are all-reduced and rank 0
    writes ``out``.
    """
    if protocol not in ("ss", "ms"):
        raise ValueError(f"--protocol must be ss or ms, got '{protocol}'")
    if merge not in ("logits", "softmax"):
        raise ValueError(f"--ms-merge must be logits or softmax, got '{merge}'")
    if mode not in (None, "whole", "slide"):
        raise ValueError(f"--mode must be whole or slide, got '{mode}'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if batch_size < 1 or workers < 0 or (limit is not None and limit < 1):
        raise ValueError("--batch-size and --limit must be >= 1 and --workers >= 0")
    out_path = Path(out) if out else None
    if out_path is not None and out_path.exists() and not (overwrite or resume):
        raise FileExistsError(f"{out_path} already exists; pass --overwrite to replace it, --resume to continue, "
                              f"or choose another --out")
    rank, world = _dist()
    if out_path is not None and out_path.exists() and resume and not _state_path(out_path, rank, world).exists():
        return json.loads(out_path.read_text())  # finished earlier: --resume never recomputes a final result
    if world > 1 and device == "cuda":  # torchrun: one GPU per local rank
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
        torch.cuda.set_device(torch.device(device))
    spec = get_spec(dataset)
    ds = SegDataset(dataset, data_root)
    net, recipe, info = resolve_model(model, dataset, checkpoint, recipe)
    test = dict(recipe.get("test") or {})
    mode = mode or test.get("mode", "whole")
    net = net.to(device).eval()
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False  # mmseg's benchmark setting; shapes vary per image anyway

    indices = list(range(len(ds)))[: limit or None]
    shard = indices[rank::world]
    acc = IoUAccumulator(spec.num_classes, IGNORE_INDEX, device)
    done: set[int] = set()
    skipped: list[str] = []
    state_path = _state_path(out_path, rank, world) if out_path is not None else None
    fingerprint = {"model": info["model"], "checkpoint_sha256": info.get("checkpoint_sha256"), "dataset": dataset,
                   "n": len(indices), "protocol": protocol, "mode": mode, "test": test, "world": world, "merge": merge}
    if resume and state_path is not None and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != fingerprint:
            raise ValueError(f"{state_path}: saved by a different run (model, checkpoint, dataset, protocol or "
                             f"process count differ); remove it or drop --resume")
        acc.load_state_dict(state["areas"])
        done, skipped = set(state["done"]), list(state["skipped"])
    elif state_path is not None and state_path.exists() and not overwrite:
        raise FileExistsError(f"{state_path}: an interrupted run can be continued; pass --resume, or --overwrite "
                              f"to start again")

    def save_state() -> None:
        if state_path is not None:
            _atomic_torch_save({"fingerprint": fingerprint, "areas": acc.state_dict(), "done": sorted(done),
                                "skipped": skipped}, state_path)

    todo = [i for i in shard if i not in done]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, todo), batch_size=batch_size,
                                         num_workers=workers, collate_fn=collate_list,
                                         pin_memory=device.startswith("cuda"), persistent_workers=False)
    amp_ctx = torch.autocast(device.split(":")[0], dtype=torch.float16 if device.startswith("cuda")
                             else torch.bfloat16) if amp else nullcontext()
    timed = TimedForward(net, device)
    t_start = time.perf_counter()
    since_save = 0
    try:
        with torch.inference_mode():
            for batch in loader:
                for item in batch:
                    if "error" in item:
                        if not skip_bad:
                            raise DatasetError(item["error"] + "; fix or remove the file, or pass --skip-bad")
                        skipped.append(item["error"])
                        done.add(item["index"])
                        continue
                    image = item["image"].to(device, non_blocking=True)
                    label = item["label"].to(device, non_blocking=True)
                    with amp_ctx:
                        logits = predict_logits(timed, image, test, protocol, mode, merge)
                    acc.update(logits.argmax(1)[0], label)
                    done.add(item["index"])
                    since_save += 1
                    if since_save >= state_every:
                        save_state()
                        since_save = 0
                    if progress:
                        progress(len(done), len(shard), acc.summary() if len(done) % 10 == 1 else {})
    except BaseException:  # Ctrl-C or a bad file: keep what was measured, so --resume continues from here
        if done:
            save_state()
        raise
    wall = time.perf_counter() - t_start
    save_state()
    acc.all_reduce()
    skipped = _gather_lists(skipped)
    summary = acc.summary(spec.classes)
    result = {
        "kind": "eval", "date": now_iso(), **info, "dataset": dataset, "data_root": str(ds.root), "num_images": len(indices),
        "recipe": recipe.get("name"), "test": test, "protocol": protocol, "mode": mode, "merge": merge,
        "aAcc": summary["aAcc"], "mIoU": summary["mIoU"], "mAcc": summary["mAcc"], "per_class": summary["per_class"],
        "areas": {k: v.tolist() for k, v in acc.state_dict().items()}, "skipped": skipped,
        "device": device, "device_name": device_name(device), "world_size": world, "amp": amp,
        "versions": _versions(),
        "timings": {"wall_s": wall, "model_s": timed.seconds, "images_per_s": len(todo) / wall if wall else None,
                    "outside_model_share": 1 - timed.seconds / wall if wall else None},
    }
    if out_path is not None and rank == 0:
        write_json(str(out_path), result)
        for r in range(world):  # the final result supersedes the resume state
            _state_path(out_path, r, world).unlink(missing_ok=True)
    return result


def _state_path(out_path: Path, rank: int, world: int) -> Path:
    """Resume state beside the result: ``<out>.state.pt``, one ``<out>.state.rankN.pt`` per process under torchrun."""
    return out_path.with_name(out_path.name + (f".state.rank{rank}.pt" if world > 1 else ".state.pt"))


def _gather_lists(items: list) -> list:
    """Concatenate a list over all processes (rank order); the list itself when not distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return items
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def _versions() -> dict:
    import numpy
    import PIL

    from . import __version__

    return {"lrbench": __version__, "torch": torch.__version__, "numpy": numpy.__version__, "pillow": PIL.__version__,
            "python": platform.python_version()}

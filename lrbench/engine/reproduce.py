"""``lrbench reproduce``, the main job: params + FLOPs of every zoo architecture at its published input, the LRSA
claims study, a short speed run, then (with ``data_root``) every eval whose dataset folder and weights are
available, and finally the report. Results go to a ``results/`` folder and plots to ``plots/`` beside the report
unless given elsewhere, so ``--out X`` never touches the current folder's files.

At cluster scale (``torchrun --nproc-per-node N -m lrbench reproduce --data-root D``, multi-node too) every eval is
sharded across the ranks (:func:`lrbench.engine.evaluate.evaluate`); rank 0 alone measures the costs, writes the results and
the report. Evals resume (a killed run continues where each rank stopped), so the same command finishes the job."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import claims
from ..datasets import DATASETS
from ..errors import LrbenchError
from ..fileio import check_writable
from ..report import write_report
from ..results import write_result
from ..settings import EvalSettings
from ..zoo import ZooEntry, load_zoo
from . import complexity, measure, speed
from .evaluate import evaluate

SPEED_MODELS = ("lrformer-t", "lrformer-s", "segformer-b0", "segformer-b2", "lrformer-s-plus", "mask2former-swin-t")


@dataclass
class Outcome:
    report: dict
    evals: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (zoo entry, why its eval did not run)


def _has_dataset(root: Path, entry: ZooEntry) -> bool:
    spec = DATASETS[entry.dataset]
    return (root / spec.folder).is_dir() or (root / spec.img_dir).is_dir()


def reproduce(
    data_root: str | None = None,
    quick: bool = False,
    results_dir: str | None = None,
    out: str = "RESULTS.md",
    plots_dir: str | None = None,
    device: str = "cpu",
    progress: Callable[[int, int, str], None] | None = None,
    evals_only: bool = False,
) -> Outcome:
    """Run the main job and write the report; ``quick`` keeps the FLOPs of the cheap ADE20K-sized models only, fewer
    claim sizes and fewer speed iterations; ``evals_only`` runs the evals and the report alone."""
    lead = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 measures costs and writes
    out_path = check_writable(out)
    rdir = Path(results_dir) if results_dir else out_path.parent / "results"
    pdir = Path(plots_dir) if plots_dir else out_path.parent / "plots"
    if data_root is not None and not Path(data_root).is_dir():
        raise LrbenchError(f"--data-root {data_root}: folder not found")
    zoo = load_zoo()
    flops_jobs = sorted(
        {
            (e.arch, tuple(e.published["flops_shape"]), e.num_classes)
            for e in zoo.values()
            if e.published.get("flops_shape")
        }
    )
    if quick:
        flops_jobs = [j for j in flops_jobs if j[1][0] * j[1][1] <= 640 * 640]
    costs = lead and not evals_only
    if not costs:
        flops_jobs = []
    eval_jobs = [e for e in zoo.values() if data_root and _has_dataset(Path(data_root), e)]
    total = len(flops_jobs) + (1 + len(SPEED_MODELS) if costs else 0) + len(eval_jobs) + 1
    done = 0

    def step(what: str) -> None:
        nonlocal done
        if progress and lead:
            progress(done, total, what)
        done += 1

    for arch, shape, k in flops_jobs:
        step(f"flops {arch} {shape[0]}x{shape[1]} ({k} classes)")
        res = complexity.count_flops(arch, shape, k)
        write_result(rdir / "flops" / f"{arch}_{shape[0]}x{shape[1]}_{k}.json", "flops", **res)
    if costs:
        step("claims study")
        claims_res = measure.run_claims(claims.QUICK_SIZES if quick else None, device=device)
        write_result(rdir / "claims.json", "claims", **claims_res)
        for name in SPEED_MODELS:
            step(f"speed {name} 512x512")
            iters = dict(warmup=1 if quick else 2, iters=3 if quick else 10)
            res = speed.measure_speed(name, (512, 512), device=device, **iters)
            write_result(rdir / "speed" / f"{name}_512x512_{device}.json", "speed", **res)
    outcome = Outcome(report={})
    if data_root:
        outcome.skipped += [
            (e.name, f"no {e.dataset} folder under --data-root") for e in zoo.values() if e not in eval_jobs
        ]
    offline = os.environ.get("HF_HUB_OFFLINE")
    try:
        for e in eval_jobs:
            step(f"eval {e.name}")
            path = rdir / "eval" / f"{e.name}_ss.json"
            if e.source is None:
                outcome.skipped.append((e.name, "no released weights"))
                continue
            try:
                evaluate(EvalSettings(e.name, data_root, e.dataset, out=str(path), resume=True, device=device))
                outcome.evals.append(str(path))
            except LrbenchError as err:  # weights not obtainable, a finished result of another run...: row pending
                outcome.skipped.append((e.name, str(err)))
                if "the hub cannot be reached" in str(err):
                    os.environ["HF_HUB_OFFLINE"] = "1"  # the other entries: from the cache only, no more waiting
    finally:
        if offline is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = offline
    step("report")
    if lead:
        outcome.report = write_report(str(rdir), str(out_path), str(pdir))
    return outcome

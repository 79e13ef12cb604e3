"""What each engine ``lrbench`` command does (``flops``, ``speed``, ``claims``, ``reproduce``, ``convert``,
``zoo pull``, ``predict``, ``zoo publish``): resolve names, check outputs before any work, build or run the model,
write the result record. The CLI imports this module only when one of them runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .. import claims as claims_mod
from ..commands import Progress, check_output
from ..datasets import get_spec
from ..errors import ConfigError, UsageError
from ..results import write_result
from ..zoo import resolve
from .complexity import count_flops
from .devices import resolve_device
from .measure import run_claims
from .overlays import write_overlays
from .predictions import load_predictor, predict_files
from .publish import publish
from .reproduce import Outcome, reproduce
from .robust import robust as run_robust
from .speed import measure_speed
from .weights import convert as zoo_convert
from .weights import pull


def flops(
    model: str,
    shape: tuple[int, int] | None = None,
    dataset: str | None = None,
    num_classes: int | None = None,
    out: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """``lrbench flops``: an architecture or zoo entry at its recipe's (or the given) shape and class count."""
    out_path = check_output(out, overwrite)
    r = resolve(model, dataset)
    k = num_classes if num_classes is not None else r.num_classes
    res = count_flops(r.arch, shape=shape, num_classes=k, dataset=r.dataset, progress=progress)
    res["dataset"] = r.dataset
    if out_path is not None:
        write_result(out_path, "flops", **res)
    return res


def speed(
    model: str,
    shape: tuple[int, int] | None = None,
    dataset: str | None = None,
    batch_size: int = 1,
    dtype: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    device: str = "auto",
    warmup: int = 3,
    iters: int = 10,
    out: str | None = None,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """``lrbench speed``: forward latency of an architecture or zoo entry (random weights and input)."""
    out_path = check_output(out, overwrite)
    device = resolve_device(device)
    r = resolve(model, dataset)
    res = measure_speed(
        r.arch,
        tuple(shape or r.recipe["flops_shape"]),
        batch_size=batch_size,
        dtype=dtype,
        channels_last=channels_last,
        compile=compile,
        device=device,
        warmup=warmup,
        iters=iters,
        num_classes=r.num_classes,
        progress=progress,
    )
    if out_path is not None:
        write_result(out_path, "speed", **res)
    return res


def claims(
    quick: bool = False,
    device: str = "cpu",
    out: str | None = None,
    plot: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict:
    """``lrbench claims``: the LRSA scaling study with a verdict per claim."""
    out_path = check_output(out, overwrite)
    plot_path = check_output(plot, overwrite, "--plot")
    res = run_claims(claims_mod.QUICK_SIZES if quick else None, device=resolve_device(device), progress=progress)
    if out_path is not None:
        write_result(out_path, "claims", **res)
    if plot_path is not None:
        claims_mod.plot_claims(res, str(plot_path))
    return res


def run_reproduce(
    data_root: str | None = None,
    quick: bool = False,
    results: str | None = None,
    out: str = "RESULTS.md",
    plots: str | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    evals_only: bool = False,
) -> Outcome:
    return reproduce(
        data_root,
        quick=quick,
        results_dir=results,
        out=out,
        plots_dir=plots,
        device=resolve_device(device),
        progress=progress,
        evals_only=evals_only,
    )


def convert(
    model: str,
    checkpoint: str,
    out: str,
    dataset: str | None = None,
    num_classes: int | None = None,
    overwrite: bool = False,
) -> dict:
    """``lrbench convert``: a checkpoint in lrbench-named safetensors, checked strictly against the model first."""
    if not out.endswith(".safetensors"):
        raise UsageError(f"{out}: the output must be a .safetensors file")
    check_output(out, overwrite, "OUT")
    if not Path(checkpoint).is_file():
        raise UsageError(f"CHECKPOINT {checkpoint}: file not found")
    try:
        r = resolve(model, dataset)
        arch, k = r.arch, r.num_classes
    except ConfigError:  # an architecture with no test recipe for that dataset: converting does not need one
        arch, k = model, get_spec(dataset).num_classes
    k = num_classes if num_classes is not None else k
    net, notes = zoo_convert(arch, checkpoint, out, num_classes=k)
    return {"arch": arch, "num_classes": k, "tensors": len(net.state_dict()), "out": out, "notes": notes}


def zoo_pull(name: str, **kwargs) -> dict:
    return pull(name, **kwargs)


def predict(
    model: str,
    inputs: list[str],
    out: str,
    dataset: str | None = None,
    checkpoint: str | None = None,
    protocol: str = "ss",
    mode: str | None = None,
    alpha: float = 0.5,
    batch_size: int = 1,
    device: str = "auto",
    dtype: str = "fp32",
    overwrite: bool = False,
    skip_bad: bool = False,
    progress: Progress | None = None,
) -> list[dict]:
    """``lrbench predict``: label PNGs and overlays for image files, folders or globs."""
    predictor = load_predictor(
        model,
        dataset=dataset,
        checkpoint=checkpoint,
        protocol=protocol,
        mode=mode,
        device=resolve_device(device),
        dtype=dtype,
    )
    return predict_files(
        predictor,
        inputs,
        out,
        alpha=alpha,
        overwrite=overwrite,
        skip_bad=skip_bad,
        batch_size=batch_size,
        progress=progress,
    )


def zoo_publish(
    name: str,
    checkpoint: str,
    repo_id: str,
    revision: str = "main",
    private: bool = False,
    dry_run: str | None = None,
    results: str | None = "results",
) -> dict:
    return publish(name, checkpoint, repo_id, revision=revision, private=private, dry_run=dry_run, results_dir=results)


def robust(settings, out_dir: str | None = None, corruptions: list[str] | None = None, progress=None) -> dict:
    """``lrbench robust``: see :mod:`lrbench.engine.robust`."""
    settings = replace(settings, device=resolve_device(settings.device))
    return run_robust(settings, out_dir=out_dir, corruptions=corruptions, progress=progress)


def analyze_overlays(
    result: str, images: list[str], out_dir: str, device: str = "auto", overwrite: bool = False
) -> list[dict]:
    """``lrbench analyze --overlays``: image | ground truth | prediction for the named images of an eval."""
    return write_overlays(result, images, out_dir, device=resolve_device(device), overwrite=overwrite)

"""What each reading ``lrbench`` command does (``models``, ``zoo list|info|lock``, ``compare``, ``report``), as plain
functions with typed signatures: they read the manifest, recipes and result files and never import torch. The commands
that build or run a model are :mod:`lrbench.engine.commands`. The CLI (``lrbench.cli``) only parses arguments and
renders what these return; tests call them directly too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .errors import OutputError, ResultError
from .fileio import check_writable
from .results import per_image_of, read_result
from .zoo import (
    UNREPRODUCIBLE,
    ZooEntry,
    describe_models,
    get_entry,
    list_entries,
    lock,
    resolution,
    verification,
    weights_dir,
)

Progress = Callable[[int, int, str], None]


def check_output(out: str | None, overwrite: bool, what: str = "--out") -> Path | None:
    """Refuse to replace a file without --overwrite, and check that it can be written, before any work."""
    if out is None:
        return None
    path = Path(out)
    if path.exists() and not overwrite:
        raise OutputError(f"{what} {path} already exists; pass --overwrite to replace it, or choose another {what}")
    return check_writable(path, what)


def models(family: str | None = None) -> list[dict]:
    return describe_models(family)  # an unknown family is refused by list_models


def compare(result_a: str, result_b: str) -> dict:
    """``lrbench compare``: mIoU(A) - mIoU(B) with its 95% paired-bootstrap interval over the same images, and the
    same per class; or, for two ``lrbench robust`` summaries, the mean corrupted mIoU and each corruption's."""
    from .stats import ABSENT_POLICY, paired_class_diff, paired_diff  # numpy: only for this command

    a, b = read_result(result_a), read_result(result_b)
    if a.get("kind") != b.get("kind"):
        raise ResultError(f"{result_b}: a {b.get('kind')} result; compare it with another one, not a {a.get('kind')}")
    if a["kind"] == "robust":
        from .robustness import compare_robust

        return compare_robust(a, result_a, b, result_b)
    pa, pb = per_image_of(a, result_a), per_image_of(b, result_b)
    classes = [r["class"] for r in a.get("per_class") or []] or None
    return paired_diff(pa, pb) | {
        "per_class": paired_class_diff(pa, pb, classes),
        "absent_classes": ABSENT_POLICY,
    }


def analyze(result: str, top: int = 10, worst: int = 0, plots: str | None = "plots", sort: str = "pixels") -> dict:
    """``lrbench analyze`` without ``--overlays`` (which needs the model: :mod:`lrbench.engine.overlays`)."""
    from .analysis import analyze as run  # numpy and matplotlib: only for this command

    return run(result, top=top, worst=worst, plots=plots, sort=sort)


def report(results: str = "results", out: str = "RESULTS.md", plots: str = "plots") -> dict:
    from .report import write_report  # pandas and matplotlib: only for this command

    check_writable(out)
    return write_report(results, out, plots)


def _entry_row(e: ZooEntry) -> dict:
    """A zoo entry as JSON: its manifest mapping, plus the derived facts and a one-line description of its source."""
    return (
        {"name": e.name}
        | e.manifest()
        | {
            "origin": e.origin,
            "num_classes": e.num_classes,
            "family": e.family,
            "weights": e.source.describe() if e.source else None,
        }
    )


def zoo_list(dataset: str | None = None, family: str | None = None) -> list[dict]:
    return [_entry_row(e) for e in list_entries(dataset, family)]


def zoo_info(name: str) -> dict:
    e = get_entry(name)
    pin = resolution(e.name)
    return (
        _entry_row(e)
        | {
            "resolved": pin.describe() if pin else None,
            "cache": str(weights_dir(e.name)),
            "verified": " | ".join(verification(e.arch)) or "no peer record (see zoo/verified.yaml)",
        }
        | (
            {"gflops_verdict": f"{UNREPRODUCIBLE} ({e.published['gflops']} G): {e.published['gflops_unreproducible']}"}
            if e.published.get("gflops_unreproducible")
            else {}
        )
    )


def zoo_lock(out: str, overwrite: bool = False) -> dict:
    """``lrbench zoo lock``: the remembered resolutions as a manifest to share or commit."""
    check_writable(out)
    return lock(out, overwrite)

"""``lrbench robust``: corruption robustness, the protocol of Kamann & Rother (CVPR 2020; Cityscapes-C, which the
SegFormer paper's robustness study used): the clean validation set and the 16 corruptions of the ``imagecorruptions``
package (:data:`lrbench.names.CORRUPTION_GROUPS`: blur, noise, digital, weather), noise at severities 1-3 and the
others at 1-5 -- 72 corrupted evaluations, each an ordinary ``lrbench eval`` with ``--corruption`` (resumable, sharded
under torchrun, with its per-image counts and confusion matrix).

The summary (``kind: robust``) gives, as the papers do: the clean mIoU; per corruption the mean mIoU over its
severities; per group the mean of its corruptions; the mean corrupted mIoU (the mean over the corruptions); and the
relative robustness, mean corrupted / clean. An interrupted run continues with ``resume=True``: finished evaluations
are read back (their fingerprints must match), the one that was cut continues from its saved state.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ..errors import OutputError, UsageError
from ..fileio import write_json
from ..names import CORRUPTION_GROUPS, CORRUPTIONS, PROTOCOL_SEVERITIES
from ..results import record
from ..settings import EvalSettings, check_corruptions
from ..zoo import resolve
from .evaluate import evaluate

GROUP_OF = {c: g for g, cs in CORRUPTION_GROUPS.items() for c in cs}


def plan(corruptions: list[str] | None = None) -> list[tuple[str, int] | None]:
    """The evaluations of the protocol: None (clean), then (corruption, severity) in the protocol's order."""
    chosen = check_corruptions(corruptions) or CORRUPTIONS
    return [None] + [(c, s) for c in CORRUPTIONS if c in chosen for s in PROTOCOL_SEVERITIES[c]]


def run_path(folder: Path, run: tuple[str, int] | None) -> Path:
    return folder / ("clean.json" if run is None else f"{run[0]}-{run[1]}.json")


def summarize(clean: dict, runs: list[tuple[tuple[str, int], dict]]) -> dict:
    """Clean mIoU, per corruption (mean over severities), per group, mean corrupted and relative robustness."""
    per_corruption: dict[str, list[float]] = {}
    for (name, _severity), res in runs:
        per_corruption.setdefault(name, []).append(res["mIoU"])
    means = {c: sum(v) / len(v) for c, v in per_corruption.items()}
    groups = {
        g: sum(means[c] for c in cs if c in means) / sum(c in means for c in cs)
        for g, cs in CORRUPTION_GROUPS.items()
        if any(c in means for c in cs)
    }
    mean = sum(means.values()) / len(means) if means else None
    return {
        "clean_mIoU": clean["mIoU"],
        "per_corruption": means,
        "per_group": groups,
        "mean_corrupted_mIoU": mean,
        "relative_robustness": 100 * mean / clean["mIoU"] if mean is not None and clean["mIoU"] else None,
        "complete": set(means) == set(CORRUPTIONS)
        and all(len(per_corruption[c]) == len(PROTOCOL_SEVERITIES[c]) for c in CORRUPTIONS),
    }


def robust(
    settings: EvalSettings,
    out_dir: str | None = None,
    corruptions: list[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Run the clean and corrupted evaluations of ``settings.model`` and write the summary; returns it.

    ``settings`` is an eval's (``corruption``/``severity``/``out`` are set per run). Results go to ``out_dir``
    (default ``results/robust/<model>_<dataset>_<protocol>/``, one JSON per run) and the summary beside it
    (``<out_dir>.json``). ``settings.resume`` continues an interrupted run; without it (or ``overwrite``) a folder
    that already holds results is refused."""
    if settings.corruption or settings.severity:
        raise UsageError("robust runs every corruption itself: leave --corruption and --severity out")
    s = settings.check()
    runs = plan(corruptions)
    name = s.model if isinstance(s.model, str) else getattr(s.model, "name", "model")
    if isinstance(s.model, str):
        dataset = resolve(s.model, s.dataset).dataset
    elif s.dataset is None:
        raise UsageError("robust with a model object needs dataset=")
    else:
        dataset = s.dataset
    folder = Path(out_dir or f"results/robust/{name}_{dataset}_{s.protocol}")
    summary_path = folder.parent / f"{folder.name}.json"  # beside the folder (a dot in its name is kept)
    if not (s.resume or s.overwrite) and (summary_path.exists() or any(run_path(folder, r).exists() for r in runs)):
        raise OutputError(f"{folder}: holds results of an earlier run; pass --resume to continue, or --overwrite")
    done: list[tuple[tuple[str, int] | None, dict]] = []
    for i, run in enumerate(runs):
        label = "clean" if run is None else f"{run[0]} {run[1]}"
        if progress:
            progress(i, len(runs), label)
        one = replace(
            s,
            corruption=run[0] if run else None,
            severity=run[1] if run else None,
            out=str(run_path(folder, run)),
        )
        done.append((run, evaluate(one)))
    if progress:
        progress(len(runs), len(runs), "summary")
    clean = done[0][1]
    corrupted = [(r, res) for r, res in done[1:]]
    summary = record(
        "robust",
        model=clean["model"],
        arch=clean["arch"],
        zoo_entry=clean["zoo_entry"],
        checkpoint_sha256=clean["checkpoint_sha256"],
        dataset=clean["dataset"],
        protocol=clean["protocol"],
        num_images=clean["num_images"],
        protocol_note="Kamann & Rother (CVPR 2020): 16 imagecorruptions corruptions, noise at severities 1-3, the "
        "others at 1-5; per corruption the mean over its severities, mean corrupted = mean over the corruptions",
        runs=[{"corruption": None, "severity": None, "mIoU": clean["mIoU"], "file": run_path(folder, None).name}]
        + [
            {
                "corruption": c,
                "group": GROUP_OF[c],
                "severity": sev,
                "mIoU": res["mIoU"],
                "file": run_path(folder, (c, sev)).name,
            }
            for (c, sev), res in corrupted
        ],
        folder=str(folder),
        **summarize(clean, corrupted),
    )
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun rank 0 writes, as reproduce and eval do
        write_json(summary_path, summary)
    return summary | {"out": str(summary_path)}

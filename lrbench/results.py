"""Result records and their provenance: every measurement lrbench writes (``kind``: flops, speed, claims, eval) is a
JSON object built by :func:`record` and read back by :func:`load_results`, which checks the fields the report uses
and names the file when one is missing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

from .errors import ResultError
from .fileio import now_iso, write_json
from .version import __version__, torch_version

KINDS = ("flops", "speed", "claims", "eval", "robust")
# The fields the report reads, per kind: a file without them is named in the error instead of failing later.
REQUIRED = {
    "robust": ("model", "dataset", "protocol", "runs", "clean_mIoU", "mean_corrupted_mIoU", "per_group"),
    "flops": ("model", "shape", "num_classes", "params", "gflops"),
    "speed": (
        "model",
        "shape",
        "batch_size",
        "dtype",
        "channels_last",
        "compile",
        "device_name",
        "torch",
        "median_ms",
        "iqr_ms",
        "images_per_s",
    ),
    "claims": ("meta", "claims"),
    "eval": ("model", "dataset", "protocol", "num_images", "mIoU"),
}


def record(kind: str, **fields) -> dict:
    """A result object: ``kind``, the UTC ``date`` and the lrbench version, then the fields."""
    return {"kind": kind, "date": now_iso(), "lrbench": __version__, **fields}


def write_result(path: str | os.PathLike, kind: str, **fields) -> dict:
    """Build a record and write it atomically; returns it."""
    rec = record(kind, **fields)
    write_json(path, rec)
    return rec


def versions() -> dict:
    import numpy
    import PIL

    return {
        "lrbench": __version__,
        "torch": torch_version(),
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "python": platform.python_version(),
    }


def git_commit() -> str:
    """The last commit that changed the code, zoo or recipes (+ "-dirty" if they have uncommitted changes): stable
    when only RESULTS.md itself is committed, so regenerating the report from the same inputs gives the same bytes."""
    top = Path(__file__).resolve().parent.parent
    paths = ["lrbench", "zoo", "recipes"]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args, "--", *paths], capture_output=True, text=True, timeout=5, cwd=top
        ).stdout.strip()

    try:
        commit = git("log", "-1", "--format=%h")
        return (commit + ("-dirty" if git("status", "--porcelain") else "")) if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_results(results_dir: str | os.PathLike, ignored: list[str] | None = None) -> dict[str, list[dict]]:
    """Every ``*.json`` result under ``results_dir`` grouped by kind; JSON that is not an lrbench result is left out,
    and named in ``ignored`` (one line each) when a list is given."""
    out: dict[str, list[dict]] = {k: [] for k in KINDS}
    root = Path(results_dir)
    if not root.is_dir():
        raise ResultError(f"--results {root}: folder not found; run `lrbench reproduce` first")
    for path in sorted(root.rglob("*.json")):
        try:
            obj = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ResultError(f"{path}: not valid JSON ({e}); remove or regenerate it") from None
        if isinstance(obj, dict) and obj.get("kind") in out:
            missing = [k for k in REQUIRED[obj["kind"]] if k not in obj]
            if missing:
                raise ResultError(
                    f"{path}: a {obj['kind']} result without {', '.join(missing)}; remove or regenerate it"
                )
            out[obj["kind"]].append(obj | {"_path": path.relative_to(root).as_posix(), "_file": str(path)})
        elif ignored is not None:
            kind = obj.get("kind") if isinstance(obj, dict) else None
            why = f"its kind '{kind}' is not one of {', '.join(KINDS)}" if kind else "it has no 'kind' field"
            ignored.append(f"{path}: not an lrbench result ({why}); left out of the report")
    return out


def read_result(path: str | os.PathLike, kinds: tuple[str, ...] = ("eval", "robust")) -> dict:
    """One result file of one of ``kinds``, checked to be one."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict) or obj.get("kind") not in kinds:
        what = " or ".join(f"`lrbench {k}`" for k in kinds)
        raise ResultError(f"{path}: not an lrbench {' or '.join(kinds)} result (see {what})")
    return obj


def read_eval(path: str | os.PathLike) -> dict:
    """One eval result file, checked to be one."""
    return read_result(path, ("eval",))


def per_image_of(result: dict, path: str | os.PathLike) -> dict:
    """The per-image counts an eval result names (``per_image_file``, beside the result file)."""
    from .stats import load_per_image  # numpy: only when per-image counts are read

    name = result.get("per_image_file")
    if not name:
        raise ResultError(
            f"{path}: has no per-image counts (made without --out, or by an older lrbench); run the eval again"
        )
    return load_per_image(Path(path).parent / name)

"""``lrbench zoo publish``: a verified, converted mirror of a zoo entry's weights on the Hugging Face hub.

Whoever holds an official checkpoint (from the authors' links) publishes it once; everyone else then pulls it by name,
pinned to the commit and checked by sha256. The repository gets

- ``model.safetensors``: the weights in lrbench's naming, after a strict load into the entry's architecture (no
  pickle on the hub; converted with the same writer as ``lrbench zoo pull`` / ``convert``);
- ``config.json``: architecture, dataset, classes, the test recipe, the source file's sha256 and the lrbench version;
- ``README.md``: a model card with hub metadata (``library_name``, tags, datasets, license) and a ``model-index`` that
  says only what is true of the file: the entry's published mIoU when the file *is* the published weights (its sha256
  equals the manifest's pin or the resolution a pull remembered), measured mIoU only from complete evals of that same
  sha256 in the results folder; otherwise no results, and the card says why.

Upload is ``create_repo`` + one commit (``upload_folder``) with huggingface_hub; ``--dry-run DIR`` writes the folder
only. The manifest lines to pin the entry (repo, file, revision = the commit hash, sha256) are returned, and written
into the local manifest named by ``$LRBENCH_ZOO`` when it is set.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import yaml

from ..datasets import get_spec
from ..errors import OutputError, UsageError, ZooError
from ..fileio import atomic_write_bytes, write_json
from ..recipes import get_recipe
from ..report import not_complete
from ..results import load_results
from ..settings import local_manifest
from ..sources import parse_source, remembered, sha256_file
from ..version import __version__
from ..zoo import ZOO_FILE, ZooEntry, get_entry, verification
from .weights import convert

WEIGHTS_FILE = "model.safetensors"
HUB_DATASET_IDS = {"ade20k": "scene_parse_150", "coco-stuff": "coco_stuff", "cityscapes": "cityscapes"}


def measured_runs(entry: ZooEntry, sha256: str, results_dir: str | os.PathLike | None) -> dict[str, dict]:
    """Complete evals of ``entry``'s protocol run on the file with this ``sha256`` (the report's completeness rule),
    by protocol: the only measured numbers that are true of these weights."""
    if results_dir is None or not Path(results_dir).is_dir():
        return {}
    runs = load_results(results_dir)["eval"]
    return {
        r["protocol"]: r
        for r in runs
        if r.get("zoo_entry") == entry.name and r.get("checkpoint_sha256") == sha256 and not not_complete(r, entry)
    }


def published_sha256s(entry: ZooEntry) -> set[str]:
    """The sha256 of the entry's published weights: the manifest's pin and the resolution a pull remembered."""
    pin = remembered(entry.name, entry.source) if entry.source else None
    pins = {entry.source.sha256 if entry.source else None, pin.sha256 if pin else None}
    return {p for p in pins if p}


def model_card(entry: ZooEntry, source_sha256: str, measured: dict[str, dict], is_published: bool) -> str:
    """The README.md: hub metadata (parsed by huggingface_hub's own ModelCard) and a short description. The
    model-index carries the entry's published mIoU only when the file *is* its published weights (``is_published``),
    and measured mIoU only from ``measured`` (complete evals of this very file)."""
    from huggingface_hub import EvalResult, ModelCardData

    spec = get_spec(entry.dataset)
    results = []
    for protocol, label in (("ss", "single scale"), ("ms", "multi-scale + flip")):
        common = dict(
            task_type="semantic-segmentation",
            dataset_type=HUB_DATASET_IDS[entry.dataset],
            dataset_name=spec.title,
            dataset_split="validation",
            metric_type="mIoU",
        )
        if is_published and entry.published.get(f"miou_{protocol}") is not None:
            results.append(
                EvalResult(
                    **common,
                    metric_value=entry.published[f"miou_{protocol}"],
                    metric_name=f"mIoU {label} (published: {entry.published.get('source')})",
                )
            )
        if protocol in measured:
            results.append(
                EvalResult(
                    **common,
                    metric_value=round(measured[protocol]["mIoU"], 2),
                    metric_name=f"mIoU {label} (measured with lrbench)",
                )
            )
    if results:
        why = ""
    elif is_published:
        why = "No mIoU is listed: nothing is published for this entry and no complete lrbench eval of this file exists."
    else:
        known = ", ".join(sorted(published_sha256s(entry))) or "not known here (pull the entry once to resolve it)"
        why = (
            f"No mIoU is listed: this file is not the entry's published weights (their sha256: {known}), so the "
            f"published numbers are not claimed for it, and no complete lrbench eval of this file was found."
        )
    data = ModelCardData(
        library_name="lrbench",
        license="other",
        tags=["semantic-segmentation", entry.family, "lrbench", entry.dataset],
        datasets=[HUB_DATASET_IDS[entry.dataset]],
        model_name=entry.name,
        eval_results=results or None,
    )
    pub = entry.published
    body = f"""
# {entry.name}

{entry.arch} ({entry.family}) for {spec.title}, converted to lrbench's naming and checked by a strict load into the
architecture. Published: {pub.get("params_m", "–")} M parameters, {pub.get("gflops", "–")}
GFLOPs at {"x".join(map(str, pub.get("flops_shape") or [])) or "–"}, mIoU {pub.get("miou_ss", "–")} (single scale)
— {pub.get("source", "source unknown")}.

```
lrbench zoo pull {entry.name}
lrbench eval {entry.name} --data-root PATH
```

- Source checkpoint sha256: `{source_sha256}`
- Test recipe: `{entry.recipe}` (in `config.json`)
{"".join(f"- Verified against {v}{chr(10)}" for v in verification(entry.arch))}
- Converted with lrbench {__version__}. The license of the original weights applies.
{chr(10) + why + chr(10) if why else ""}"""
    return f"---\n{data.to_yaml()}\n---\n{body}"


def build_folder(
    entry_name: str, checkpoint: str, folder: str | os.PathLike, results_dir: str | os.PathLike | None = "results"
) -> dict:
    """Write model.safetensors, config.json and README.md for ``entry_name`` into ``folder``; returns their facts."""
    entry = get_entry(entry_name, local_may_be_missing=True)
    if not Path(checkpoint).is_file():
        raise UsageError(f"--checkpoint {checkpoint}: file not found")
    folder = Path(folder)
    source_sha = sha256_file(checkpoint)
    weights = folder / WEIGHTS_FILE
    model, notes = convert(
        entry.arch, checkpoint, str(weights), entry.num_classes, entry=entry.name, source_sha256=source_sha
    )
    spec = get_spec(entry.dataset)
    config = {
        "library": "lrbench",
        "lrbench_version": __version__,
        "zoo_entry": entry.name,
        "architecture": entry.arch,
        "family": entry.family,
        "dataset": entry.dataset,
        "num_classes": entry.num_classes,
        "classes": list(spec.classes),
        "recipe": get_recipe(entry.recipe),
        "weights": WEIGHTS_FILE,
        "source_sha256": source_sha,
        "published": entry.published,
    }
    write_json(folder / "config.json", config)
    is_published = source_sha in published_sha256s(entry)
    card = model_card(entry, source_sha, measured_runs(entry, source_sha, results_dir), is_published)
    atomic_write_bytes(folder / "README.md", lambda tmp: Path(tmp).write_text(card))
    return {
        "entry": entry.name,
        "folder": str(folder),
        "files": sorted(p.name for p in folder.iterdir()),
        "sha256": sha256_file(weights),
        "source_sha256": source_sha,
        "published_weights": is_published,
        "notes": notes,
        "tensors": len(model.state_dict()),
    }


def write_local_manifest(path: Path, entry: ZooEntry, hub: dict) -> None:
    """Add or replace ``entry`` in the local manifest at ``path`` (created if needed), pinned to ``hub``."""
    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    data = data if isinstance(data, dict) and isinstance(data.get("models"), dict) else {"models": {}}
    data["models"][entry.name] = replace(entry, source=parse_source({"hub": hub})).manifest()
    text = yaml.safe_dump(data, sort_keys=False)
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text))


def publish(
    entry_name: str,
    checkpoint: str,
    repo_id: str,
    revision: str = "main",
    private: bool = False,
    dry_run: str | None = None,
    results_dir: str | None = "results",
) -> dict:
    """Verify, convert and upload (or, with ``dry_run``, only write) a zoo entry's weights; see the module docstring."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise UsageError(f"--repo-id must be OWNER/NAME, got '{repo_id}'")
    local = local_manifest(may_be_missing=True)  # written here (created when missing; its folder must exist)
    entry = get_entry(entry_name, local_may_be_missing=True)
    if dry_run is not None:
        folder = Path(dry_run)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise OutputError(f"--dry-run {folder}: exists and is not an empty folder; choose a new folder")
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:  # built aside and moved into place: a failure leaves no partial folder
            info = build_folder(entry.name, checkpoint, staging, results_dir)
            if folder.exists():
                folder.rmdir()
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        info["folder"] = str(folder)
        hub = {
            "repo_id": repo_id,
            "filename": WEIGHTS_FILE,
            "revision": revision,
            "sha256": info["sha256"],
            "filename_verified": True,
        }
        return info | {"uploaded": False, "hub": hub, "manifest": yaml.safe_dump({entry.name: {"hub": hub}})}
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    with tempfile.TemporaryDirectory(prefix="lrbench-publish-") as tmp:
        info = build_folder(entry.name, checkpoint, tmp, results_dir)
        api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp,
                revision=revision,
                commit_message=f"lrbench: {entry.name} (source sha256 {info['source_sha256'][:12]})",
            )
        except (HfHubHTTPError, OSError, ValueError) as e:
            text = str(e).strip().splitlines()
            raise ZooError(
                f"{entry.name}: publishing to {repo_id} failed ({type(e).__name__}: "
                f"{text[0] if text else ''}); check your token (HF_TOKEN) and HF_ENDPOINT"
            ) from None
    hub = {
        "repo_id": repo_id,
        "filename": WEIGHTS_FILE,
        "revision": commit.oid,
        "sha256": info["sha256"],
        "filename_verified": True,
    }
    if local is not None:
        write_local_manifest(local, entry, hub)
    return info | {
        "folder": None,
        "uploaded": True,
        "commit_url": commit.commit_url,
        "hub": hub,
        "manifest": yaml.safe_dump({entry.name: {"hub": hub}}, sort_keys=False),
        "manifest_file": str(local) if local else None,
        "shipped_manifest": str(ZOO_FILE),
    }

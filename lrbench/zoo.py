"""The model zoo: named entries (``zoo/models.yaml``), name resolution, and pulling weights from the Hugging Face hub.

One policy turns a name into what to run (:func:`resolve`): a zoo entry by its name (``lrformer-s_ade20k``), or an
architecture (``lrformer-s``) on a dataset (default ADE20K), whose entry is then ``<arch>_<dataset>`` if the zoo has
it. ``lrbench eval``, ``flops``, ``speed``, ``zoo pull``, ``convert`` and ``create_model(pretrained=True)`` all use it.

``pull`` downloads with ``hf_hub_download`` into the standard HF cache (so ``HF_ENDPOINT`` mirrors,
``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` behave as everywhere else), verifies the sha256 when the manifest has one,
then converts the checkpoint once to lrbench-named safetensors under ``$LRBENCH_HOME/weights`` (:func:`write_converted`,
the one writer of converted weights) so that later loads never unpickle. Before downloading it asks the hub for the
file's metadata once with a short timeout and no retries: an unreachable hub or a failing server is reported in
seconds instead of after huggingface_hub's ~25 s of retries. Entries can be overridden (repo, file, revision, sha256)
per call or by a local manifest named in ``$LRBENCH_ZOO`` whose entries replace or extend the shipped ones.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch.nn as nn
import yaml

from .checkpoint import CheckpointError, read_state_dict, save_safetensors
from .datasets import DATASETS, DEFAULT_DATASET, get_spec
from .errors import UnknownNameError, UsageError, ZooError
from .fileio import data_dir
from .models import ARCH_FAMILY, check_family, create_model, load_state, load_weights
from .recipes import default_recipe, get_recipe, load_recipes
from .version import __version__

ZOO_FILE = data_dir("zoo") / "models.yaml"
_HUB_KEYS = {"repo_id", "filename", "revision", "sha256", "filename_verified"}
_PUBLISHED_KEYS = {"params_m", "gflops", "flops_shape", "miou_ss", "miou_ms", "source"}
PROBE_TIMEOUT_S = 5.0  # the one metadata request before a download


@dataclass(frozen=True)
class Hub:
    repo_id: str
    filename: str
    revision: str = "main"
    sha256: str | None = None
    filename_verified: bool = False


@dataclass(frozen=True)
class ZooEntry:
    name: str
    arch: str
    dataset: str
    recipe: str
    hub: Hub | None
    published: dict = field(default_factory=dict)
    note: str | None = None

    @property
    def family(self) -> str:
        return ARCH_FAMILY[self.arch]

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset].num_classes


def _validate(name: str, raw: dict, source: Path) -> ZooEntry:
    """Schema check of one manifest entry; raises ZooError naming the file, entry and field."""

    def bad(msg: str) -> ZooError:
        return ZooError(f"{source}: entry '{name}': {msg}")

    if not isinstance(raw, dict):
        raise bad("must be a mapping")
    required = ("arch", "dataset", "recipe", "hub", "published")
    missing = [k for k in required if k not in raw]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    extra = set(raw) - set(required) - {"note"}
    if extra:
        raise bad(f"unknown fields {', '.join(sorted(extra))}")
    if raw["arch"] not in ARCH_FAMILY:
        raise bad(f"arch '{raw['arch']}' is not a registered model (see `lrbench models`)")
    if raw["dataset"] not in DATASETS:
        raise bad(f"dataset must be one of {', '.join(DATASETS)}")
    if raw["recipe"] not in load_recipes():
        raise bad(f"recipe '{raw['recipe']}' has no file recipes/{raw['recipe']}.yaml")
    hub = raw["hub"]
    if hub is not None:
        if not isinstance(hub, dict) or not {"repo_id", "filename"} <= set(hub) or set(hub) - _HUB_KEYS:
            raise bad(
                f"hub must be null or a mapping with repo_id, filename and optionally "
                f"{', '.join(sorted(_HUB_KEYS - {'repo_id', 'filename'}))}"
            )
        sha = hub.get("sha256")
        if sha is not None and (len(str(sha)) != 64 or any(c not in "0123456789abcdef" for c in str(sha))):
            raise bad("hub.sha256 must be 64 lower-case hex digits or null")
        hub = Hub(**{k: v for k, v in hub.items() if v is not None or k == "sha256"})
    pub = raw["published"]
    if not isinstance(pub, dict) or set(pub) - _PUBLISHED_KEYS:
        raise bad(f"published may only hold {', '.join(sorted(_PUBLISHED_KEYS))}")
    for k in ("params_m", "gflops", "miou_ss", "miou_ms"):
        if pub.get(k) is not None and not isinstance(pub[k], (int, float)):
            raise bad(f"published.{k} must be a number or null")
    return ZooEntry(name, raw["arch"], raw["dataset"], raw["recipe"], hub, dict(pub), raw.get("note"))


def _read_manifest(path: Path) -> dict[str, ZooEntry]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ZooError(f"{path}: zoo manifest not found") from None
    except yaml.YAMLError as e:
        raise ZooError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ZooError(f"{path}: a zoo manifest needs a top-level 'models:' mapping")
    return {name: _validate(name, raw, path) for name, raw in data["models"].items()}


@functools.lru_cache(maxsize=8)
def _load(paths: tuple[tuple[Path, int], ...]) -> dict[str, ZooEntry]:
    entries: dict[str, ZooEntry] = {}
    for p, _mtime in paths:  # the mtime is part of the cache key only: an edited manifest is read again
        entries.update(_read_manifest(p))
    return entries


def load_zoo() -> dict[str, ZooEntry]:
    """All zoo entries: the shipped manifest, then the local one in ``$LRBENCH_ZOO`` (its entries win)."""
    local = Path(os.environ["LRBENCH_ZOO"]) if os.environ.get("LRBENCH_ZOO") else None
    paths = [ZOO_FILE] + ([local] if local is not None and local.exists() else [])  # created by `zoo publish`
    return _load(tuple((p, p.stat().st_mtime_ns if p.exists() else 0) for p in paths))


def get_entry(name: str) -> ZooEntry:
    zoo = load_zoo()
    if name in zoo:
        return zoo[name]
    close = difflib.get_close_matches(name, list(zoo), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `lrbench zoo list`"
    raise UnknownNameError(f"unknown zoo entry '{name}'{hint}")


def list_entries(dataset: str | None = None, family: str | None = None) -> list[ZooEntry]:
    if dataset is not None:
        get_spec(dataset)
    check_family(family)
    return [
        e
        for e in load_zoo().values()
        if (dataset is None or e.dataset == dataset) and (family is None or e.family == family)
    ]


@dataclass(frozen=True)
class Resolved:
    """What a name means on a dataset: the architecture, the zoo entry (None for an architecture the zoo has no entry
    for on that dataset), the test recipe and the class count."""

    arch: str
    dataset: str
    recipe: dict
    entry: ZooEntry | None

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset].num_classes


def resolve(name: str, dataset: str | None = None) -> Resolved:
    """Resolve a zoo entry name or an architecture name (on ``dataset``, default ADE20K); see the module docstring."""
    if dataset is not None:
        get_spec(dataset)
    zoo = load_zoo()
    if name in zoo:
        entry = zoo[name]
        if dataset is not None and dataset != entry.dataset:
            alt = f"{entry.arch}_{dataset}"
            hint = f"use {alt}" if alt in zoo else f"use the architecture {entry.arch} with --checkpoint FILE"
            raise UsageError(f"zoo entry {name} is for {entry.dataset}, not {dataset}: drop --dataset, or {hint}")
        return Resolved(entry.arch, entry.dataset, get_recipe(entry.recipe), entry)
    if name not in ARCH_FAMILY:
        close = difflib.get_close_matches(name, list(ARCH_FAMILY) + list(zoo), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `lrbench models` and `lrbench zoo list`"
        raise UnknownNameError(f"unknown model or zoo entry '{name}'{hint}")
    dataset = dataset or DEFAULT_DATASET
    entry = zoo.get(f"{name}_{dataset}")
    return Resolved(name, dataset, get_recipe(entry.recipe) if entry else default_recipe(name, dataset), entry)


# ----------------------------------------------------------------------------------------------------------------
# Pulling
# ----------------------------------------------------------------------------------------------------------------
def lrbench_home() -> Path:
    """``$LRBENCH_HOME``, else ``$XDG_CACHE_HOME/lrbench``, else ``~/.cache/lrbench``."""
    if os.environ.get("LRBENCH_HOME"):
        return Path(os.environ["LRBENCH_HOME"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lrbench"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hf_cache_dir() -> str | None:
    # Read at call time (huggingface_hub reads these once at import).
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _remove_cached(path: str) -> None:
    """Remove a downloaded file from the HF cache: the snapshot link and the blob it points to."""
    p = Path(path)
    blob = p.resolve()
    p.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _check_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise UsageError(f"--sha256 must be 64 hexadecimal digits, got '{sha256}'")
    return sha256.lower()


def _hub_failure(entry: ZooEntry, hub: Hub, cause: BaseException, probing: bool = False) -> ZooError:
    """The one line for a download that failed, from huggingface_hub's root cause (``probing``: the metadata
    request, where a network error means the hub cannot be reached at all)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{hub.repo_id}/{hub.filename}@{hub.revision}"
    if isinstance(cause, (EntryNotFoundError, RevisionNotFoundError, RepositoryNotFoundError)) and not isinstance(
        cause, LocalEntryNotFoundError
    ):
        return ZooError(
            f"{entry.name}: {where} does not exist on the hub ({type(cause).__name__}); set the right "
            f"file with --repo-id/--filename/--revision or in a local manifest ($LRBENCH_ZOO)"
        )
    if isinstance(cause, HfHubHTTPError) and getattr(cause, "response", None) is not None:
        return ZooError(
            f"{entry.name}: the hub at {os.environ.get('HF_ENDPOINT') or 'huggingface.co'} answered "
            f"HTTP {cause.response.status_code} for {where}; try again later, or check HF_ENDPOINT "
            f"and your token"
        )
    unreachable = probing and (
        isinstance(cause, OSError)
        or any(c.__name__ in ("TransportError", "TimeoutException") for c in type(cause).__mro__)
    )  # httpx's network errors
    if isinstance(cause, LocalEntryNotFoundError) or _offline() or unreachable:
        why = "HF_HUB_OFFLINE is set" if _offline() else "the hub cannot be reached"
        return ZooError(
            f"{entry.name}: {where} is not in the cache and {why}; connect and run "
            f"`lrbench zoo pull {entry.name}`, or pass a local file with --checkpoint"
        )
    text = str(cause).strip().splitlines()
    return ZooError(
        f"{entry.name}: cannot download {where} ({type(cause).__name__}: {text[0] if text else ''}); "
        f"pull again (a partial download is resumed), or pass a local file with --checkpoint"
    )


def _probe(entry: ZooEntry, hub: Hub) -> None:
    """One metadata request, short timeout, no retries: fail in seconds when the hub is unreachable or failing and
    the cache cannot stand in."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache

    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        get_hf_file_metadata(
            hf_hub_url(hub.repo_id, hub.filename, revision=hub.revision, endpoint=endpoint),
            timeout=PROBE_TIMEOUT_S,
            endpoint=endpoint,
        )
    except Exception as e:  # noqa: BLE001 - any failure: the cache may still serve it, else one clear line
        cached = try_to_load_from_cache(hub.repo_id, hub.filename, cache_dir=_hf_cache_dir(), revision=hub.revision)
        if not isinstance(cached, str):
            raise _hub_failure(entry, hub, e, probing=True) from None


def _download(entry: ZooEntry, hub: Hub, force: bool) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # its retry warnings are not for the user: a failure ends in lrbench's one line

    if not _offline():
        _probe(entry, hub)
    try:
        return hf_hub_download(
            hub.repo_id,
            hub.filename,
            revision=hub.revision,
            cache_dir=_hf_cache_dir(),
            force_download=force,
            local_files_only=_offline(),
            etag_timeout=PROBE_TIMEOUT_S,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except Exception as e:  # noqa: BLE001 - huggingface_hub wraps the failed call as the cause of its own error
        from huggingface_hub.errors import LocalEntryNotFoundError

        cause = e.__cause__ if isinstance(e, (LocalEntryNotFoundError, ValueError)) and e.__cause__ else e
        raise _hub_failure(entry, hub, cause) from None


def weights_dir(name: str) -> Path:
    """lrbench's cache folder for one zoo entry's converted weights."""
    return lrbench_home() / "weights" / name


def converted_path(entry: ZooEntry, source: str) -> Path:
    """Where the converted safetensors of a downloaded file lives: keyed by the source blob (its etag)."""
    return weights_dir(entry.name) / f"{Path(source).resolve().name[:16]}.safetensors"


def write_converted(
    model: nn.Module, path: str | os.PathLike, source: str, source_sha256: str, entry: str | None = None
) -> None:
    """Save a loaded model's weights as lrbench safetensors with the one metadata schema every converted file has."""
    meta = {
        "format": "lrbench",
        "lrbench": __version__,
        "arch": model.name,
        "num_classes": str(getattr(model, "num_classes", "")),
        "source": source,
        "source_sha256": source_sha256,
        "zoo_entry": entry or "",
    }
    save_safetensors(model.state_dict(), path, metadata=meta)


def convert(
    arch: str, checkpoint: str, out: str, num_classes: int, entry: str | None = None, source_sha256: str | None = None
) -> tuple[nn.Module, list[str]]:
    """Load ``checkpoint`` strictly into ``arch`` and write it as lrbench safetensors (``lrbench convert``, and the
    weights ``lrbench zoo publish`` uploads for ``entry``); ``source_sha256`` when the caller has hashed it already."""
    model = create_model(arch, num_classes=num_classes)
    notes = load_weights(model, checkpoint)
    digest = source_sha256 or sha256_file(checkpoint)
    write_converted(model, out, source=Path(checkpoint).name, source_sha256=digest, entry=entry)
    return model, notes


def fetch(
    name: str,
    revision: str | None = None,
    force: bool = False,
    repo_id: str | None = None,
    filename: str | None = None,
    sha256: str | None = None,
) -> tuple[dict, nn.Module | None]:
    """Download, verify and (once) convert; returns the pull record and the loaded model when it was just built."""
    sha256 = _check_sha256(sha256)
    entry = get_entry(name)
    hub = entry.hub
    if hub is None and not (repo_id and filename):
        raise ZooError(
            f"{name}: no released weights are known for this entry (published numbers only); "
            f"pass --repo-id and --filename if you have them, or evaluate a local --checkpoint"
        )
    hub = replace(
        hub or Hub(repo_id, filename),
        **{
            k: v
            for k, v in dict(repo_id=repo_id, filename=filename, revision=revision, sha256=sha256).items()
            if v is not None
        },
    )
    source = _download(entry, hub, force)
    digest = sha256_file(source)
    if hub.sha256 and digest != hub.sha256:
        _remove_cached(source)
        raise ZooError(
            f"{name}: checksum mismatch for {hub.repo_id}/{hub.filename}: expected {hub.sha256}, got "
            f"{digest}; the file was removed from the cache. Pull again, or fix sha256 in the manifest"
        )
    out = converted_path(entry, source)
    record = {
        "name": name,
        "source": source,
        "path": str(out),
        "sha256": digest,
        "notes": [],
        "cached": True,
        "verified": bool(hub.sha256),
    }
    if out.is_file() and not force:
        return record, None
    try:
        raw = read_state_dict(source)
    except CheckpointError as e:
        _remove_cached(source)  # an error page or a truncated file: do not keep serving it from the cache
        raise ZooError(f"{name}: {e}; the file was removed from the cache") from None
    model = create_model(entry.arch, num_classes=entry.num_classes)
    try:
        notes = load_state(model, raw, source=f"{hub.repo_id}/{hub.filename}")
    except CheckpointError as e:
        raise ZooError(f"{name}: {e}") from None
    write_converted(model, out, source=f"{hub.repo_id}/{hub.filename}@{hub.revision}", source_sha256=digest, entry=name)
    return record | {"notes": notes, "cached": False}, model


def pull(name: str, **overrides) -> dict:
    """Download, verify and convert one zoo entry; returns ``{name, source, path, sha256, notes, cached, verified}``.
    ``overrides`` are :func:`fetch`'s (revision, force, repo_id, filename, sha256).

    ``path`` is the lrbench safetensors file that ``create_model(name, pretrained=True)`` loads; ``sha256`` is the
    downloaded (original) file's.
    """
    return fetch(name, **overrides)[0]


def load_pretrained(name: str, dataset: str | None = None) -> tuple[nn.Module, Resolved, dict]:
    """The model of a zoo entry (or an architecture's entry on ``dataset``) with its weights, pulled if needed."""
    r = resolve(name, dataset)
    if r.entry is None or r.entry.hub is None:
        what = r.entry.name if r.entry else f"{r.arch} on {r.dataset}"
        raise ZooError(
            f"no released weights for {what}: pass --checkpoint FILE (an official .pth, transformers or "
            f"lrbench .safetensors)"
        )
    record, model = fetch(r.entry.name)
    if model is None:
        model = create_model(r.arch, num_classes=r.num_classes, checkpoint=record["path"])
    return model.eval(), r, record

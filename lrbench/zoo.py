"""The model zoo: the ``zoo/`` manifest and pulling weights from the Hugging Face hub (``lrbench zoo ...``).

``pull`` downloads with ``hf_hub_download`` into the standard HF cache (so ``HF_ENDPOINT`` mirrors,
``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` behave as everywhere else), verifies the sha256 when the manifest has one,
then converts the checkpoint once to lrbench-named safetensors under ``$LRBENCH_HOME/weights`` so that later loads
never unpickle. Entries can be overridden (repo, file, revision, sha256) per call or by a local manifest named in
``$LRBENCH_ZOO`` whose entries replace or extend the shipped ones.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .data import DATASETS as _DATASET_SPECS
from .fileio import data_dir

ZOO_FILE = data_dir("zoo") / "models.yaml"
DATASETS = tuple(_DATASET_SPECS)
FORMATS = ("mmseg", "transformers", "safetensors")
_HUB_KEYS = {"repo_id", "filename", "revision", "sha256", "filename_verified"}
_PUBLISHED_KEYS = {"params_m", "gflops", "flops_shape", "miou_ss", "miou_ms", "source"}


class ZooError(ValueError):
    """A zoo problem the user can fix (unknown name, no network, bad checksum...); one line."""


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
    num_classes: int
    recipe: str
    format: str
    hub: Hub | None
    published: dict = field(default_factory=dict)
    note: str | None = None

    @property
    def family(self) -> str:
        from .models import model_family

        return model_family(self.arch)


def _validate(name: str, raw: dict, source: Path) -> ZooEntry:
    """Schema check of one manifest entry; raises ZooError naming the file, entry and field."""
    from .models import list_models
    from .recipes import load_recipes

    def bad(msg: str) -> ZooError:
        return ZooError(f"{source}: entry '{name}': {msg}")

    if not isinstance(raw, dict):
        raise bad("must be a mapping")
    required = ("arch", "dataset", "num_classes", "recipe", "format", "hub", "published")
    missing = [k for k in required if k not in raw]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    extra = set(raw) - set(required) - {"note"}
    if extra:
        raise bad(f"unknown fields {', '.join(sorted(extra))}")
    if raw["arch"] not in list_models():
        raise bad(f"arch '{raw['arch']}' is not a registered model (see `lrbench models`)")
    if raw["dataset"] not in DATASETS:
        raise bad(f"dataset must be one of {', '.join(DATASETS)}")
    if not isinstance(raw["num_classes"], int) or raw["num_classes"] < 1:
        raise bad("num_classes must be a positive integer")
    if raw["recipe"] not in load_recipes():
        raise bad(f"recipe '{raw['recipe']}' has no file recipes/{raw['recipe']}.yaml")
    if raw["format"] not in FORMATS:
        raise bad(f"format must be one of {', '.join(FORMATS)}")
    hub = raw["hub"]
    if hub is not None:
        if not isinstance(hub, dict) or not {"repo_id", "filename"} <= set(hub) or set(hub) - _HUB_KEYS:
            raise bad(f"hub must be null or a mapping with repo_id, filename and optionally "
                      f"{', '.join(sorted(_HUB_KEYS - {'repo_id', 'filename'}))}")
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
    return ZooEntry(name, raw["arch"], raw["dataset"], raw["num_classes"], raw["recipe"], raw["format"], hub,
                    dict(pub), raw.get("note"))


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
    paths = [ZOO_FILE] + ([Path(os.environ["LRBENCH_ZOO"])] if os.environ.get("LRBENCH_ZOO") else [])
    return _load(tuple((p, p.stat().st_mtime_ns if p.exists() else 0) for p in paths))


def get_entry(name: str) -> ZooEntry:
    zoo = load_zoo()
    if name in zoo:
        return zoo[name]
    close = difflib.get_close_matches(name, list(zoo), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `lrbench zoo list`"
    raise ZooError(f"unknown zoo entry '{name}'{hint}")


def list_entries(dataset: str | None = None, family: str | None = None) -> list[ZooEntry]:
    if dataset is not None and dataset not in DATASETS:
        raise ZooError(f"--dataset must be one of {', '.join(DATASETS)}, got '{dataset}'")
    return [e for e in load_zoo().values()
            if (dataset is None or e.dataset == dataset) and (family is None or e.family == family)]


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


def _download(entry: ZooEntry, hub: Hub, force: bool) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{hub.repo_id}/{hub.filename}@{hub.revision}"
    try:
        return hf_hub_download(hub.repo_id, hub.filename, revision=hub.revision, cache_dir=_hf_cache_dir(),
                               force_download=force, local_files_only=_offline(),
                               endpoint=os.environ.get("HF_ENDPOINT") or None)
    except (EntryNotFoundError, RevisionNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError,
            ValueError) as e:
        # huggingface_hub wraps the failed HEAD call (an HTTP status, a refused connection) as the cause of a
        # "not in the cache" error: report the root cause, it is what the user can act on.
        cause = e.__cause__ if isinstance(e, (LocalEntryNotFoundError, ValueError)) and e.__cause__ else e
        if isinstance(cause, (EntryNotFoundError, RevisionNotFoundError, RepositoryNotFoundError)) and \
                not isinstance(cause, LocalEntryNotFoundError):
            raise ZooError(f"{entry.name}: {where} does not exist on the hub ({type(cause).__name__}); set the right "
                           f"file with --repo-id/--filename/--revision or in a local manifest ($LRBENCH_ZOO)") from None
        if isinstance(cause, HfHubHTTPError) and getattr(cause, "response", None) is not None:
            raise ZooError(f"{entry.name}: the hub at {os.environ.get('HF_ENDPOINT') or 'huggingface.co'} answered "
                           f"HTTP {cause.response.status_code} for {where}; try again later, or check HF_ENDPOINT "
                           f"and your token") from None
        if isinstance(cause, LocalEntryNotFoundError) or _offline():
            why = "HF_HUB_OFFLINE is set" if _offline() else "the hub cannot be reached"
            raise ZooError(f"{entry.name}: {where} is not in the cache and {why}; connect and run "
                           f"`lrbench zoo pull {entry.name}`, or pass a local file with --checkpoint") from None
        raise ZooError(f"{entry.name}: cannot download {where} and it is not in the cache ({type(cause).__name__}: "
                       f"{cause}); check the network or HF_ENDPOINT, or pass a local file with --checkpoint") from None


def weights_dir(name: str) -> Path:
    """lrbench's cache folder for one zoo entry's converted weights."""
    return lrbench_home() / "weights" / name


def converted_path(entry: ZooEntry, source: str) -> Path:
    """Where the converted safetensors of a downloaded file lives: keyed by the source blob (its etag)."""
    return weights_dir(entry.name) / f"{Path(source).resolve().name[:16]}.safetensors"


def pull(name: str, revision: str | None = None, force: bool = False, repo_id: str | None = None,
         filename: str | None = None, sha256: str | None = None) -> dict:
    """Download, verify and convert one zoo entry; returns ``{name, source, path, sha256, notes, cached}``.

    ``path`` is the lrbench safetensors file that ``create_model(name, pretrained=True)`` loads.
    """
    from .checkpoint import CheckpointError, convert_state_dict, match_state_dict, read_state_dict, save_safetensors
    from .models import create_model

    entry = get_entry(name)
    hub = entry.hub
    if hub is None and not (repo_id and filename):
        raise ZooError(f"{name}: no released weights are known for this entry (published numbers only); "
                       f"pass --repo-id and --filename if you have them, or evaluate a local --checkpoint")
    hub = replace(hub or Hub(repo_id, filename), **{k: v for k, v in dict(
        repo_id=repo_id, filename=filename, revision=revision, sha256=sha256).items() if v is not None})
    source = _download(entry, hub, force)
    digest = sha256_file(source)
    if hub.sha256 and digest != hub.sha256:
        _remove_cached(source)
        raise ZooError(f"{name}: checksum mismatch for {hub.repo_id}/{hub.filename}: expected {hub.sha256}, got "
                       f"{digest}; the file was removed from the cache. Pull again, or fix sha256 in the manifest")
    out = converted_path(entry, source)
    if out.is_file() and not force:
        return {"name": name, "source": source, "path": str(out), "sha256": digest, "notes": [], "cached": True}
    model = create_model(entry.arch, num_classes=entry.num_classes)
    try:
        raw = read_state_dict(source)
    except CheckpointError as e:
        _remove_cached(source)  # an error page or a truncated file: do not keep serving it from the cache
        raise ZooError(f"{name}: {e}; the file was removed from the cache") from None
    try:
        state, notes = convert_state_dict(raw, model)
        match_state_dict(model, state, source=f"{hub.repo_id}/{hub.filename}")
    except CheckpointError as e:
        raise ZooError(f"{name}: {e}") from None
    meta = {"lrbench_entry": name, "repo_id": hub.repo_id, "filename": hub.filename, "revision": hub.revision,
            "source_sha256": digest, "arch": entry.arch, "num_classes": str(entry.num_classes)}
    save_safetensors(model.state_dict(), out, metadata=meta)
    return {"name": name, "source": source, "path": str(out), "sha256": digest, "notes": notes, "cached": False}


def resolve_pretrained(name: str, num_classes: int, checkpoint: str | None) -> tuple[str, int, str]:
    """For ``create_model(name, pretrained=True)``: a zoo entry name, or an architecture with exactly one ADE20K /
    single zoo entry, becomes (architecture, classes, converted weights path)."""
    zoo = load_zoo()
    if name not in zoo:
        cands = [e for e in zoo.values() if e.arch == name and e.hub is not None]
        if not cands:
            get_entry(name)  # raises with close matches
            raise ZooError(f"no zoo weights for architecture '{name}'")
        ade = [e for e in cands if e.dataset == "ade20k"]
        name = (ade or cands)[0].name
    entry = zoo[name]
    path = checkpoint or pull(name)["path"]
    return entry.arch, entry.num_classes, path

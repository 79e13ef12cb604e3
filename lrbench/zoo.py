"""The model zoo: named entries (``zoo/models.yaml``), name resolution, and where an entry's weights are pinned and
cached (reading only: pulling and converting them is :mod:`lrbench.engine.weights`).

One policy turns a name into what to run (:func:`resolve`): a zoo entry by its name (``lrformer-s_ade20k``), or an
architecture (``lrformer-s``) on a dataset (default ADE20K), whose entry is then ``<arch>_<dataset>`` if the zoo has
it. ``lrbench eval``, ``flops``, ``speed``, ``zoo pull``, ``convert`` and ``create_model(pretrained=True)`` all use it.

An entry's weights come from its source (:mod:`lrbench.sources`): ``hub:`` (a Hugging Face repository, its file found
by listing when the manifest's name is unverified or absent), ``url:`` (e.g. mmseg's checkpoints on
download.openmmlab.com) or none. A pull remembers the resolution (file, commit, sha256) so later runs use exactly
that file, and converts it once to lrbench-named safetensors under ``$LRBENCH_HOME/weights`` (:func:`converted_path`).
Entries can be overridden (repo, file, revision, sha256) per call or by a local manifest named
in ``$LRBENCH_ZOO`` whose entries replace or extend the shipped ones; :func:`lock` writes the remembered resolutions
as such a manifest. ``origin: mmseg`` marks mmseg's retrained baselines, which the report lists apart from the
papers' rows.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .datasets import DATASETS, DEFAULT_DATASET, get_spec
from .errors import OutputError, UsageError, ZooError
from .fileio import atomic_write_bytes, read_yaml
from .names import ARCHITECTURES
from .recipes import default_recipe, get_recipe, load_recipes, recipes_dir
from .settings import ZOO_FILE, check_family, list_models, local_manifest, unknown_entry, unknown_model
from .sources import (
    HubSource,
    Source,
    UrlSource,
    lrbench_home,
    parse_source,
    remembered,
)
from .version import __version__

# gflops_unreproducible: why the published GFLOPs cannot be reproduced from the released config (the report's cost
# verdict then says so, with this reason, instead of a bare "differs")
_PUBLISHED_KEYS = {"params_m", "gflops", "flops_shape", "miou_ss", "miou_ms", "source", "gflops_unreproducible"}
UNREPRODUCIBLE = "published figure not reproducible from the released config"
ORIGINS = ("paper", "mmseg")  # whose numbers an entry carries: the paper's, or mmseg's retrained reproduction


@dataclass(frozen=True)
class ZooEntry:
    name: str
    arch: str
    dataset: str
    recipe: str
    source: HubSource | UrlSource | None  # where the released weights are; None: no weights known
    published: dict = field(default_factory=dict)
    note: str | None = None
    origin: str = "paper"

    @property
    def family(self) -> str:
        return ARCHITECTURES[self.arch]

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset].num_classes

    def manifest(self) -> dict:
        """This entry as a manifest mapping (what ``zoo/models.yaml`` holds under its name)."""
        raw = {"arch": self.arch, "dataset": self.dataset, "recipe": self.recipe}
        raw |= self.source.manifest() if self.source else {"hub": None}
        raw["published"] = dict(self.published)
        raw |= {k: v for k, v in (("note", self.note), ("origin", self.origin)) if v and (k, v) != ("origin", "paper")}
        return raw


def _validate(name: str, raw: dict, path: Path) -> ZooEntry:
    """Schema check of one manifest entry; raises ZooError naming the file, entry and field."""

    def bad(msg: str) -> ZooError:
        return ZooError(f"{path}: entry '{name}': {msg}")

    if not isinstance(raw, dict):
        raise bad("must be a mapping")
    required = ("arch", "dataset", "recipe", "published")
    missing = [k for k in required if k not in raw]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    extra = set(raw) - set(required) - {"hub", "url", "note", "origin"}
    if extra:
        raise bad(f"unknown fields {', '.join(sorted(extra))}")
    if raw["arch"] not in ARCHITECTURES:
        raise bad(f"arch '{raw['arch']}' is not a registered model (see `lrbench models`)")
    if raw["dataset"] not in DATASETS:
        raise bad(f"dataset must be one of {', '.join(DATASETS)}")
    if raw["recipe"] not in load_recipes():
        raise bad(f"recipe '{raw['recipe']}' has no file recipes/{raw['recipe']}.yaml")
    if raw.get("origin", "paper") not in ORIGINS:
        raise bad(f"origin must be one of {', '.join(ORIGINS)}")
    try:
        source = parse_source(raw)
    except ValueError as e:
        raise bad(str(e)) from None
    pub = raw["published"]
    if not isinstance(pub, dict) or set(pub) - _PUBLISHED_KEYS:
        raise bad(f"published may only hold {', '.join(sorted(_PUBLISHED_KEYS))}")
    for k in ("params_m", "gflops", "miou_ss", "miou_ms"):
        if pub.get(k) is not None and not isinstance(pub[k], (int, float)):
            raise bad(f"published.{k} must be a number or null")
    if "gflops_unreproducible" in pub and not (isinstance(pub["gflops_unreproducible"], str) and pub.get("gflops")):
        raise bad("published.gflops_unreproducible must be a reason (text) beside a published gflops")
    return ZooEntry(
        name, raw["arch"], raw["dataset"], raw["recipe"], source, dict(pub), raw.get("note"), raw.get("origin", "paper")
    )


def _read_manifest(path: Path) -> dict[str, ZooEntry]:
    try:
        data = read_yaml(path)
    except FileNotFoundError:
        raise ZooError(f"{path}: zoo manifest not found") from None
    except yaml.YAMLError as e:
        raise ZooError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ZooError(f"{path}: a zoo manifest needs a top-level 'models:' mapping")
    return {name: _validate(name, raw, path) for name, raw in data["models"].items()}


@functools.lru_cache(maxsize=8)
def _load(paths: tuple[tuple[Path, int], ...], recipes: Path) -> dict[str, ZooEntry]:
    entries: dict[str, ZooEntry] = {}
    for p, _mtime in paths:  # the mtime is part of the cache key only: an edited manifest is read again
        entries.update(_read_manifest(p))
    return entries


def load_zoo(local_may_be_missing: bool = False) -> dict[str, ZooEntry]:
    """All zoo entries: the shipped manifest, then the local one in ``$LRBENCH_ZOO`` (its entries win; a missing one
    is an error unless ``local_may_be_missing``, for ``zoo publish``, which creates it)."""
    local = local_manifest(local_may_be_missing)
    paths = [ZOO_FILE] + ([local] if local is not None and local.exists() else [])
    # the recipes folder is part of the key: entries are checked against its recipes ($LRBENCH_RECIPES)
    return _load(tuple((p, p.stat().st_mtime_ns) for p in paths), recipes_dir())


def get_entry(name: str, local_may_be_missing: bool = False) -> ZooEntry:
    zoo = load_zoo(local_may_be_missing)
    if name in zoo:
        return zoo[name]
    raise unknown_entry(name, zoo)


def list_entries(dataset: str | None = None, family: str | None = None) -> list[ZooEntry]:
    if dataset is not None:
        get_spec(dataset)
    check_family(family)
    return [
        e
        for e in load_zoo().values()
        if (dataset is None or e.dataset == dataset) and (family is None or e.family == family)
    ]


ARCHITECTURES_FILE = ZOO_FILE.parent / "architectures.yaml"


@functools.cache
def architecture_facts() -> dict[str, dict]:
    """Architecture -> {params (at 150 classes), dims, depths, output_stride}: measured on the built models and
    written to ``zoo/architectures.yaml`` (``tests/test_layers.py`` checks the file against the models), so that
    ``lrbench models`` answers without building one."""
    try:
        return read_yaml(ARCHITECTURES_FILE)["architectures"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise ZooError(f"{ARCHITECTURES_FILE}: cannot read the architecture facts ({e}); reinstall lrbench") from None


VERIFIED_FILE = ZOO_FILE.parent / "verified.yaml"


@functools.cache
def verification(arch: str) -> list[str]:
    """What ``arch`` was verified against, one line per record that the peer tests wrote to ``zoo/verified.yaml``
    (peer package and version, what was compared, tolerance, measured error); empty when none."""
    try:
        rows = (read_yaml(VERIFIED_FILE) or {}).get("architectures", {}).get(arch, [])
    except (OSError, AttributeError):
        return []
    return [
        f"{r['peer']}: {r['check']} (<= {r['tolerance']:g} x range, measured {r['measured']:g}; {r['test']})"
        for r in rows
    ]


def describe_models(family: str | None = None) -> list[dict]:
    """One row per architecture: name, family, parameter count (150 classes), stage dims/depths, output stride."""
    facts = architecture_facts()
    return [{"name": n, "family": ARCHITECTURES[n], **facts[n]} for n in list_models(family)]


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
    if name not in ARCHITECTURES:
        raise unknown_model(name, zoo)
    dataset = dataset or DEFAULT_DATASET
    entry = zoo.get(f"{name}_{dataset}")
    return Resolved(name, dataset, get_recipe(entry.recipe) if entry else default_recipe(name, dataset), entry)


# ----------------------------------------------------------------------------------------------------------------
# Where pulled weights are, and the remembered resolutions
# ----------------------------------------------------------------------------------------------------------------
def weights_dir(name: str) -> Path:
    """lrbench's cache folder for one zoo entry's converted weights."""
    return lrbench_home() / "weights" / name


def converted_path(entry: ZooEntry, sha256: str) -> Path:
    """Where the converted safetensors of an original file lives: keyed by the original's sha256."""
    return weights_dir(entry.name) / f"{sha256[:16]}.safetensors"


def with_overrides(
    entry: ZooEntry, repo_id: str | None, filename: str | None, revision: str | None, sha256: str | None
) -> Source:
    """The entry's source with the command line's overrides; a hub file named on the command line is taken as is."""
    src = entry.source
    if not (repo_id or filename or revision or sha256):
        if src is None:
            raise ZooError(
                f"{entry.name}: no released weights are known for this entry (published numbers only); "
                f"pass --repo-id and --filename if you have them, or evaluate a local --checkpoint"
            )
        return src
    if isinstance(src, UrlSource):
        if repo_id or filename or revision:
            raise UsageError(f"{entry.name}: its weights come from a URL; --repo-id/--filename/--revision are for hub")
        return replace(src, sha256=sha256)
    if src is None and not (repo_id and filename):
        raise ZooError(
            f"{entry.name}: no released weights are known for this entry; pass both --repo-id and --filename"
        )
    base = src or HubSource(repo_id)
    return replace(
        base,
        repo_id=repo_id or base.repo_id,
        filename=filename or base.filename,
        revision=revision or base.revision,
        sha256=sha256 if sha256 or filename or repo_id else base.sha256,
        filename_verified=bool(filename) or base.filename_verified,
    )


def resolution(name: str) -> Source | None:
    """The pinned source a previous pull resolved ``name`` to, if any (and the manifest still names the same)."""
    entry = get_entry(name)
    return remembered(entry.name, entry.source) if entry.source else None


def lock(out: str | os.PathLike, overwrite: bool = False) -> dict:
    """Write every remembered resolution as a manifest (``$LRBENCH_ZOO`` reads it): each entry whole, its source
    pinned to the file, commit and sha256 that was pulled. Returns ``{"out", "entries"}``."""
    path = Path(out)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it, or choose another file")
    zoo = load_zoo()
    pins = {n: remembered(n, e.source) for n, e in zoo.items() if e.source is not None}
    pins = {n: p for n, p in pins.items() if p is not None}
    if not pins:
        raise ZooError("nothing to lock: no zoo entry has been pulled with this $LRBENCH_HOME; run `lrbench zoo pull`")
    models = {n: replace(zoo[n], source=p).manifest() for n, p in sorted(pins.items())}
    text = (
        f"# lrbench {__version__} lock file: zoo entries pinned to the files pulled ($LRBENCH_HOME resolved.json).\n"
        "# Use it with LRBENCH_ZOO=<this file>.\n" + yaml.safe_dump({"models": models}, sort_keys=False)
    )
    atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(text))
    return {"out": str(path), "entries": sorted(pins)}

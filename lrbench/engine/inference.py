"""One way from a name to a running model: resolve the name once, get its weights (the zoo's, pulled and verified,
or a local file), build the model, and the recipe's test pipeline -- what ``lrbench eval``, ``lrbench predict`` and
``lrbench.create_model(..., pretrained=True)`` all start from (:func:`load`).

The pipeline itself is :mod:`lrbench.engine.pipeline`; the zoo's weights are pulled by :mod:`lrbench.engine.weights`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from ..datasets import DATASETS, DEFAULT_DATASET, get_spec
from ..errors import UsageError, ZooError
from ..sources import sha256_file
from ..zoo import Resolved, resolve
from .models import create_model
from .pipeline import TestConfig
from .weights import fetch


@dataclass(frozen=True)
class Weights:
    """Which weights an eval runs: from the zoo (pulled and verified) or a local file, with the original file's
    sha256 (for a zoo pull, the hub file's; the report compares it with the manifest's)."""

    arch: str
    model: str  # the name the user gave
    entry: str | None
    source: str  # "zoo" | "file" | "module"
    path: str | None
    sha256: str | None
    verified: bool = False  # checked against a sha256 known before the download (manifest, hub, file-name prefix)
    origin: str | None = None  # where a zoo file came from, pinned ("hub REPO/FILE@COMMIT", "url URL")


@dataclass
class Loaded:
    """A model ready to run with its recipe's test pipeline: which weights and the test configuration. The model is
    built (and its weights loaded) when first used, so a caller that only needs to know which weights a name means (a
    finished ``--resume``) never builds it."""

    weights: Weights
    cfg: TestConfig
    num_classes: int
    _model: nn.Module | None = field(default=None, repr=False)

    @functools.cached_property
    def model(self) -> nn.Module:
        net = self._model
        if net is None:
            net = create_model(self.weights.arch, num_classes=self.num_classes, checkpoint=self.weights.path)
        return net.eval()


def dataset_of(model: nn.Module) -> str:
    """The dataset a model object's class count belongs to (ADE20K when it is ambiguous or unknown)."""
    k = getattr(model, "num_classes", None)
    fits = [name for name, spec in DATASETS.items() if spec.num_classes == k]
    return fits[0] if len(fits) == 1 else DEFAULT_DATASET


def load(
    model: str | nn.Module,
    dataset: str | None = None,
    checkpoint: str | None = None,
    recipe: dict | None = None,
    protocol: str = "ss",
    mode: str | None = None,
    merge: str | None = None,
    resolved: Resolved | None = None,
) -> Loaded:
    """What ``model`` means and the weights it runs: a zoo entry or architecture name (on ``dataset``; the zoo's weights
    are pulled unless ``checkpoint`` names a local file), or a model object (its recipe from its registered name unless
    ``recipe`` is given, its dataset from its class count unless given). ``resolved``: ``model`` already resolved on
    ``dataset`` by the caller."""
    if isinstance(model, nn.Module):
        name = getattr(model, "name", type(model).__name__)
        dataset = dataset or dataset_of(model)
        if recipe is None and getattr(model, "name", None):
            recipe = resolve(model.name, dataset).recipe
        cfg = TestConfig.build(dataset, recipe or {"test": {}}, protocol, mode, merge)
        w = Weights(name, name, None, "module", checkpoint, None)
        return Loaded(w, cfg, get_spec(dataset).num_classes, model)
    r = resolved or resolve(model, dataset)
    cfg = TestConfig.build(r.dataset, recipe or r.recipe, protocol, mode, merge)
    entry = r.entry.name if r.entry else None
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise UsageError(f"--checkpoint {checkpoint}: file not found")
        w = Weights(r.arch, model, entry, "file", str(checkpoint), sha256_file(checkpoint), origin=f"file {checkpoint}")
        return Loaded(w, cfg, r.num_classes)
    if r.entry is None or r.entry.source is None:
        what = model if r.entry and model == r.entry.name else f"{r.arch} on {r.dataset}"
        raise ZooError(
            f"no released weights for {what}: pass --checkpoint FILE (an official .pth, transformers or "
            f"lrbench .safetensors)"
        )
    pulled, net = fetch(r.entry.name)
    w = Weights(r.arch, model, entry, "zoo", pulled["path"], pulled["sha256"], pulled["verified"], pulled["origin"])
    return Loaded(w, cfg, r.num_classes, net)

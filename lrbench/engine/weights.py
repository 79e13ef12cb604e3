"""Pulling a zoo entry's weights (the torch half of :mod:`lrbench.zoo`): :func:`fetch` downloads and verifies
through the entry's source (:mod:`lrbench.sources`), remembers the resolution (file, commit, sha256) so later runs use
exactly that file, then converts the checkpoint once to lrbench-named safetensors under ``$LRBENCH_HOME/weights``
(:func:`write_converted`, the one writer of converted weights) so that later loads never unpickle.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch.nn as nn

from ..errors import ZooError
from ..names import ARCHITECTURES
from ..settings import check_sha256
from ..sources import Progress, Want, remember, remembered, remove_cached, sha256_file
from ..version import __version__
from ..zoo import converted_path, get_entry, with_overrides
from .checkpoint import CheckpointError, read_state_dict, save_safetensors
from .models import create_model, load_state, load_weights


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
    progress: Progress | None = None,
) -> tuple[dict, nn.Module | None]:
    """Download, verify, remember and (once) convert; returns the pull record and the loaded model when it was just
    built. A remembered resolution of the entry is used as it is (no listing, offline too) unless overridden."""
    sha256 = check_sha256(sha256)
    entry = get_entry(name)
    wanted = with_overrides(entry, repo_id, filename, revision, sha256)
    overridden = wanted != entry.source
    pinned = None if overridden else remembered(entry.name, wanted)
    want = Want(entry.name, entry.arch, entry.dataset, tuple(ARCHITECTURES))
    got = (pinned or wanted).fetch(want, force=force, progress=progress)
    out = converted_path(entry, got.sha256)
    record = {
        "name": name,
        "source": got.path,
        "origin": got.pin.describe(),
        "pin": got.pin.manifest(),
        "path": str(out),
        "sha256": got.sha256,
        "notes": [got.chosen] if got.chosen else [],
        "cached": True,
        "verified": got.verified,
    }
    if out.is_file() and not force:
        if entry.source is not None:
            remember(entry.name, entry.source, got.pin)
        return record, None
    try:
        raw = read_state_dict(got.path)
    except CheckpointError as e:
        remove_cached(got.path)  # an error page or a truncated file: do not keep serving it
        raise ZooError(f"{name}: {e}; the file was removed from the cache") from None
    model = create_model(entry.arch, num_classes=entry.num_classes)
    try:
        notes = load_state(model, raw, source=got.pin.describe())
    except CheckpointError as e:
        raise ZooError(f"{name}: {e}") from None
    write_converted(model, out, source=got.pin.describe(), source_sha256=got.sha256, entry=name)
    if entry.source is not None:  # only a file that loaded is remembered
        remember(entry.name, entry.source, got.pin)
    return record | {"notes": record["notes"] + notes, "cached": False}, model


def pull(name: str, **overrides) -> dict:
    """Download, verify and convert one zoo entry; returns ``{name, source, origin, pin, path, sha256, notes, cached,
    verified}``. ``overrides`` are :func:`fetch`'s (revision, force, repo_id, filename, sha256, progress).

    ``path`` is the lrbench safetensors file that ``create_model(name, pretrained=True)`` loads; ``sha256`` is the
    downloaded (original) file's, ``origin`` where it came from (pinned: the hub commit).
    """
    return fetch(name, **overrides)[0]

"""The Python API in one place (re-exported by ``lrbench``): build models by architecture or zoo name."""

from __future__ import annotations

import torch.nn as nn

from .. import analysis
from ..errors import UsageError
from ..names import ARCHITECTURES
from ..zoo import resolve
from .evaluate import evaluate
from .inference import load
from .models import create_model as _build
from .models import list_models, load_checkpoint
from .overlays import write_overlays
from .predictions import predict
from .robust import robust


def create_model(
    name: str,
    num_classes: int = 150,
    pretrained: bool = False,
    checkpoint: str | None = None,
    features_only: bool = False,
) -> nn.Module:
    """Build a model in eval mode.

    ``name`` is an architecture (``lrformer-s``; see ``list_models()``) or a zoo entry (``lrformer-s_ade20k``: its
    architecture and class count, as ``lrbench eval NAME`` reads it). ``pretrained=True`` pulls the entry's weights (an
    architecture's ADE20K entry); ``checkpoint`` loads a local file strictly instead. ``features_only=True`` returns
    the backbone.
    """
    if not pretrained:
        if name not in ARCHITECTURES:  # a zoo entry (or an unknown name: one line with close matches)
            r = resolve(name)
            if num_classes not in (150, r.num_classes):
                raise UsageError(f"{name} has {r.num_classes} classes, not num_classes={num_classes}")
            name, num_classes = r.arch, r.num_classes
        return _build(name, num_classes=num_classes, checkpoint=checkpoint, features_only=features_only)
    if checkpoint is not None:
        raise UsageError("pass either pretrained=True (zoo weights) or checkpoint=FILE, not both")
    loaded = load(name)
    if num_classes not in (150, loaded.num_classes):  # 150 is the default: only an explicit other count conflicts
        raise UsageError(f"{loaded.weights.entry} has {loaded.num_classes} classes, not num_classes={num_classes}")
    model = loaded.model
    if features_only:
        model = getattr(model, "backbone", model)
    return model


def analyze(
    result: str,
    top: int = 10,
    worst: int = 0,
    plots: str | None = "plots",
    overlays: str | None = None,
    sort: str = "pixels",
    device: str = "cpu",
) -> dict:
    """What ``lrbench analyze RESULT`` prints, as a dict: top confusions, per-class IoU with intervals, the ``worst``
    images (and, with ``overlays``, image | ground truth | prediction PNGs of them) and the heat map under ``plots``
    (see :mod:`lrbench.analysis`)."""
    res = analysis.analyze(result, top=top, worst=worst, plots=plots, sort=sort)
    if overlays is not None:
        res["overlays"] = write_overlays(result, [w["image"] for w in res["worst_images"]], overlays, device=device)
    return res


__all__ = ["analyze", "create_model", "evaluate", "list_models", "load_checkpoint", "predict", "robust"]

"""The Python API in one place (re-exported by ``lrbench``): build models by architecture or zoo name."""

from __future__ import annotations

import torch.nn as nn

from ..errors import UsageError
from ..names import ARCHITECTURES
from ..zoo import resolve
from .inference import load
from .models import create_model as _build
from .models import list_models, load_checkpoint
from .predictions import predict


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


__all__ = ["create_model", "list_models", "load_checkpoint", "predict"]

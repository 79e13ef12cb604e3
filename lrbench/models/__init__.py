"""Model registry: ``create_model(name, ...)`` and ``list_models()``, timm style."""
from __future__ import annotations

import difflib
from typing import Callable

import torch.nn as nn

from ..checkpoint import CONVERTERS
from . import lrformer, segformer, upernet_swin
from .base import Segmentor

# name -> builder(num_classes) ; every builder returns a module in train mode, create_model switches to eval.
_REGISTRY: dict[str, Callable[[int], nn.Module]] = {}
_FAMILY: dict[str, str] = {}


def register(name: str, family: str, builder: Callable[[int], nn.Module]) -> None:
    _REGISTRY[name] = builder
    _FAMILY[name] = family


for _module, _family in ((lrformer, "lrformer"), (segformer, "segformer"), (upernet_swin, "upernet-swin")):
    for _name in _module.CONFIGS:
        register(_name, _family, lambda num_classes, _m=_module, _n=_name: _m.build(_n, num_classes))


def _family_converter(family: str, convert):
    """Apply a family's key converter (state -> (state, notes) or None) only to models of that family."""
    def converter(state, model):
        return convert(state) if _FAMILY.get(getattr(model, "name", "")) == family else None
    return converter


CONVERTERS.extend([
    _family_converter("segformer", segformer.convert_from_transformers),
    _family_converter("segformer", segformer.convert_from_official),
    _family_converter("segformer", segformer.convert_from_mmseg),
    _family_converter("upernet-swin", upernet_swin.convert_from_transformers),
    _family_converter("upernet-swin", upernet_swin.convert_from_mmseg),
])


def list_models(family: str | None = None) -> list[str]:
    """Registered architecture names, optionally for one family (``lrformer``, ``segformer``, ``upernet-swin``)."""
    return [n for n in _REGISTRY if family is None or _FAMILY[n] == family]


def model_family(name: str) -> str:
    return _FAMILY[resolve_name(name)]


def resolve_name(name: str) -> str:
    """Return ``name`` if registered, else raise a KeyError with close matches."""
    if name in _REGISTRY:
        return name
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(_REGISTRY)}"
    raise KeyError(f"unknown model '{name}'{hint}")


def create_model(name: str, num_classes: int = 150, pretrained: bool = False, checkpoint: str | None = None,
                 features_only: bool = False) -> nn.Module:
    """Build a registered model in eval mode.

    ``checkpoint`` loads a local file (official mmseg ``.pth``, transformers ``.bin``/``.safetensors``, or
    lrbench ``.safetensors``) strictly. ``pretrained=True`` fetches the weights of a zoo entry (``name`` may then be
    a zoo entry name such as ``lrformer-s_ade20k``). ``features_only=True`` returns the backbone alone, whose
    forward gives the list of stage feature maps.
    """
    if pretrained:
        from ..zoo import resolve_pretrained  # lazy: the zoo pulls in huggingface_hub

        name, num_classes, checkpoint = resolve_pretrained(name, num_classes, checkpoint)
    model = _REGISTRY[resolve_name(name)](num_classes)
    if checkpoint is not None:
        from ..checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint)
    if features_only and isinstance(model, Segmentor):
        model = model.backbone
    return model.eval()


__all__ = ["create_model", "list_models", "model_family", "resolve_name", "register", "Segmentor"]


def guess_architecture(state) -> str | None:
    """Best guess of which registered architecture a (converted) state dict belongs to, for error messages."""
    return lrformer.guess_variant(state) or segformer.guess_variant(state)


def describe_models(family: str | None = None) -> list[dict]:
    """One row per architecture: name, family, parameter count (150 classes), stage dims/depths, output stride."""
    import torch

    rows = []
    with torch.device("meta"):  # no memory or init cost: only shapes are needed
        for name in list_models(family):
            m = _REGISTRY[name](150)
            bb = m.backbone if isinstance(m, Segmentor) else m
            rows.append({"name": name, "family": _FAMILY[name],
                         "params": sum(p.numel() for p in m.parameters()),
                         "dims": list(getattr(bb, "embed_dims", [])), "depths": list(getattr(bb, "depths", [])),
                         "output_stride": getattr(m, "output_stride", None)})
    return rows

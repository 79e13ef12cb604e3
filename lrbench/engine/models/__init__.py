"""The model families and ``create_model(name, ...)`` / ``list_models()``, timm style.

Each family module (``lrformer``, ``segformer``, ``upernet_swin``, ``lrformer_plus``, ``mask2former_swin``,
``mask2former_resnet``; the last three share the head in ``mask2former``) owns its variants (``CONFIGS``), its builder
(``build(name, num_classes)``), the converters from foreign checkpoint naming (``CONVERTERS``: each maps a state dict
onto lrbench's naming, or returns None when the keys are not its format) and ``guess_variant(state)`` for error
messages. :data:`FAMILY_MODULES` below is the one explicit table of them (family name -> module; the names alone are
:data:`lrbench.names.FAMILIES`). Pretrained weights by zoo name are one layer up
(``lrbench.create_model(name, pretrained=True)``).
"""

from __future__ import annotations

import logging
from types import ModuleType

import torch
import torch.nn as nn

from ...names import ARCHITECTURES, FAMILIES
from ...settings import check_family, check_shape, list_models, model_family, resolve_name
from ..checkpoint import match_state_dict, read_state_dict
from . import lrformer, lrformer_plus, mask2former_resnet, mask2former_swin, segformer, upernet_swin
from .base import Segmentor

logger = logging.getLogger(__name__)  # conversion notes (INFO), under the "lrbench" logger

FAMILY_MODULES: dict[str, ModuleType] = {
    "lrformer": lrformer,
    "segformer": segformer,
    "upernet-swin": upernet_swin,
    "lrformer-plus": lrformer_plus,
    "mask2former-swin": mask2former_swin,
    "mask2former-resnet": mask2former_resnet,
}
ARCH_FAMILY: dict[str, str] = {arch: fam for fam, module in FAMILY_MODULES.items() for arch in module.CONFIGS}
assert tuple(FAMILY_MODULES) == FAMILIES, "lrbench.names.FAMILIES must list the families of this table"
assert ARCH_FAMILY == ARCHITECTURES, "lrbench.names.ARCHITECTURES must list every family's CONFIGS"


def guess_architecture(state: dict[str, torch.Tensor]) -> str | None:
    """Best guess of which architecture an lrbench-named state dict belongs to, for error messages."""
    for module in FAMILY_MODULES.values():
        guess = module.guess_variant(state)
        if guess:
            return guess
    return None


def convert_weights(state: dict[str, torch.Tensor], family: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A foreign state dict (transformers, mmseg, NVlabs naming) in the family's own naming, with notes."""
    for convert in FAMILY_MODULES[family].CONVERTERS:
        out = convert(state)
        if out is not None:
            return out
    return state, []


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> list[str]:
    """Convert a state dict's naming for ``model``'s family and load it strictly; returns the conversion notes. A
    mismatch raises one :class:`~lrbench.errors.CheckpointError` naming ``source``, the keys and the likely cause
    (wrong variant or class count)."""
    state, notes = convert_weights(state, model_family(model.name))
    match_state_dict(model, state, source=source, guess=guess_architecture(state))
    for note in notes:  # what the conversion left out or changed: logged, returned, and kept on the model
        logger.info("%s: %s", source, note)
    model.load_notes = list(notes)
    return notes


def load_weights(model: nn.Module, path) -> list[str]:
    """Read a checkpoint safely and :func:`load_state` it into ``model``; returns the conversion notes."""
    return load_state(model, read_state_dict(path), str(path))


load_checkpoint = load_weights  # the name earlier versions exported


def create_model(
    name: str, num_classes: int = 150, checkpoint: str | None = None, features_only: bool = False
) -> nn.Module:
    """Build a registered architecture in eval mode, with a local ``checkpoint`` (official mmseg ``.pth``,
    transformers ``.bin``/``.safetensors`` or lrbench ``.safetensors``) loaded strictly. ``features_only=True``
    returns the backbone alone, whose forward gives the list of stage feature maps. Every model carries its
    registered ``name``; one loaded from a checkpoint also carries ``load_notes`` (what the conversion of its naming
    left out or changed, e.g. a dropped auxiliary head; also logged at INFO by ``lrbench.engine.models``)."""
    model = FAMILY_MODULES[model_family(name)].build(name, num_classes)
    model.name = name  # backbone-only variants (lrformer-xl) too: the family is read from it when loading weights
    if checkpoint is not None:
        load_weights(model, checkpoint)
    if features_only and isinstance(model, Segmentor):
        notes = getattr(model, "load_notes", None)
        model = model.backbone
        if notes is not None:
            model.load_notes = notes
    return model.eval()


def check_input_shape(model: nn.Module, shape) -> None:
    """Refuse a (H, W) the model cannot take whole, before any work: Mask2Former models need multiples of 32."""
    check_shape(shape, getattr(model, "name", None), getattr(model, "size_divisor", 1))


def architecture_facts() -> dict[str, dict]:
    """What ``zoo/architectures.yaml`` must hold (:func:`lrbench.zoo.architecture_facts`), measured on the models:
    per architecture its parameter count at 150 classes, stage dims/depths and output stride."""
    facts = {}
    with torch.device("meta"):  # no memory or init cost: only shapes are needed
        for name in list_models():
            m = FAMILY_MODULES[ARCH_FAMILY[name]].build(name, 150)
            bb = m.backbone if isinstance(m, Segmentor) else m
            facts[name] = {
                "params": sum(p.numel() for p in m.parameters()),
                "dims": [int(d) for d in getattr(bb, "embed_dims", [])],
                "depths": [int(d) for d in getattr(bb, "depths", [])],
                "output_stride": getattr(m, "output_stride", None),
            }
    return facts


__all__ = [
    "FAMILY_MODULES",
    "check_family",
    "Segmentor",
    "check_input_shape",
    "create_model",
    "architecture_facts",
    "guess_architecture",
    "list_models",
    "load_checkpoint",
    "load_state",
    "load_weights",
    "model_family",
    "resolve_name",
]

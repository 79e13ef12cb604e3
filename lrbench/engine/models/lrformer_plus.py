"""LRFormer+: the LRFormer backbone with the Mask2Former head (the official ``lrformer-*-plus`` configs).

The backbones are the LRHead models' (T+/S+ configs pass ``q_pool_ratios``, which the official constructor swallows, so
the default 16-pixel query grid applies to every variant); the head is :mod:`lrbench.engine.models.mask2former` on all four
stages. Official checkpoints (mmengine ``{'meta', 'state_dict'}``, ``backbone.`` + 292 ``decode_head.`` keys) load as
they are. ``lrformer-xl-plus`` is the XL backbone (with its two BatchNorm ``pre_norm`` blocks) and the same head.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import lrformer
from .mask2former import build_segmentor

CONFIGS: dict[str, lrformer.LRFormerConfig] = {
    f"{base}-plus": lrformer.CONFIGS[base]
    for base in ("lrformer-t", "lrformer-s", "lrformer-b", "lrformer-l", "lrformer-xl")
}


def build(name: str, num_classes: int = 150) -> nn.Module:
    cfg = CONFIGS[name]
    # the README's GFLOPs come from mmseg's tensor-mode forward: backbone + head, no semantic inference
    backbone = lrformer.build_backbone(cfg)
    return build_segmentor(name, backbone, cfg.embed_dims, num_classes, channels_last=True, flops="queries")


CONVERTERS = ()  # official checkpoints use lrbench's naming as they are


def guess_variant(state: dict[str, torch.Tensor]) -> str | None:
    """Name the LRFormer+ variant (and class count) of an official-format state dict, if it has a Mask2Former head."""
    cls = state.get("decode_head.cls_embed.weight")
    if cls is None:
        return None
    backbone = lrformer.guess_variant({k: v for k, v in state.items() if k.startswith("backbone.")})
    if backbone is None:
        return None
    arch = backbone.split(" (")[0]
    arch = f"{arch}-plus" if arch in lrformer.CONFIGS else arch
    return f"{arch} with {cls.shape[0] - 1} classes"

"""Mask2Former with a Swin backbone: the Mask2Former paper's ADE20K semantic models, the baselines of LRFormer+.

The backbone is :class:`lrbench.engine.models.upernet_swin.SwinTransformer` (four normalised stage maps, windows of 7 for
Swin-T/S and 12 for the 384-pretrained Swin-B/L), the head :mod:`lrbench.engine.models.mask2former`. Weights load from

- transformers ``Mask2FormerForUniversalSegmentation`` checkpoints (``facebook/mask2former-swin-*-ade-semantic``:
  the detectron2 models converted by the transformers team), through the mmdet <-> transformers key map and the
  Swin converter of the UperNet baselines;
- mmseg 1.x Mask2Former-Swin checkpoints (mmseg Swin keys + mmdet head keys), through the mmseg Swin converter.

Their numbers come from detectron2's protocol (recipes ``mask2former-swin*_ade20k``): short side 512 (640), long side
at most 2048 (2560), pad to /32, masks at the padded size, crop, resize; multi-scale short sides 0.5-1.75x with a fixed
long-side limit, + flip. detectron2 resizes with PIL, lrbench as cv2 does (small differences; not measured here).
Never use transformers' image processor / post-processing for mIoU: it resizes to a fixed 384x384.

Deviation: transformers' Swin shrinks windows (and drops the shift) for stage maps not larger than the window; this
backbone never does (detectron2 and mmseg behaviour). It only matters for inputs under ~256 pixels.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from . import upernet_swin
from .mask2former import build_segmentor, head_from_transformers

CONFIGS: dict[str, upernet_swin.SwinConfig] = {
    f"mask2former-swin-{v}": upernet_swin.CONFIGS[f"upernet-swin-{v}"] for v in ("t", "s", "b", "l")
}
_HF_BACKBONE = "model.pixel_level_module.encoder."


def build(name: str, num_classes: int = 150) -> nn.Module:
    cfg = CONFIGS[name]
    backbone = upernet_swin.SwinTransformer(cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.window_size)
    # NCHW like the UperNet baselines: Swin works on tokens; the head's convs are few
    # detectron2's FLOP count (the Mask2Former paper) runs the whole inference, semantic combination included
    return build_segmentor(name, backbone, backbone.embed_dims, num_classes, channels_last=False, flops="scores")


def convert_from_transformers(state: dict[str, torch.Tensor]):
    """transformers ``Mask2FormerForUniversalSegmentation`` (Swin backbone) -> lrbench (mmdet head naming)."""
    if not any(k.startswith(_HF_BACKBONE) for k in state):
        return None
    backbone = {"backbone." + k[len(_HF_BACKBONE) :]: v for k, v in state.items() if k.startswith(_HF_BACKBONE)}
    converted = upernet_swin.convert_from_transformers(backbone)
    if converted is None:
        return None
    out, notes = converted
    out.update(head_from_transformers(state))
    if "criterion.empty_weight" in state:
        notes = notes + ["dropped criterion.empty_weight (training loss weights)"]
    return out, notes


CONVERTERS = (convert_from_transformers, upernet_swin.convert_from_mmseg)


def guess_variant(state: dict[str, torch.Tensor]) -> str | None:
    """Name the Mask2Former-Swin variant (and class count) of an lrbench-named state dict."""
    cls = state.get("decode_head.cls_embed.weight")
    swin = upernet_swin.guess_variant({k: v for k, v in state.items() if k.startswith("backbone.")})
    if cls is None or swin is None:
        return None
    arch = swin.replace("upernet-swin-", "mask2former-swin-")
    return f"{arch} with {cls.shape[0] - 1} classes"

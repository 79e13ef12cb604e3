"""Mask2Former with a ResNet backbone (R50, R101): the Mask2Former paper's convolutional ADE20K baselines.

The backbone is timm's ``resnet50`` / ``resnet101`` as a features-only model (stages 1-4, strides 4-32): the
torchvision layout (stride in the 3x3 conv, BatchNorm eps 1e-5), which is both detectron2's ``R-50`` as Mask2Former
configures it (``STRIDE_IN_1X1: False``, torchvision-converted ImageNet weights) and mmseg's ``ResNet(style='pytorch')``
of its Mask2Former configs. The head is :mod:`lrbench.engine.models.mask2former`; FLOPs are counted as detectron2 does (the
whole inference), and match the paper's 71 / 90 GFLOPs within 1%.

Weights: mmseg 1.x Mask2Former-R50/R101 checkpoints (``backbone.conv1``, ``backbone.layer1.0...``: torchvision names,
plus the mmdet head keys) load as they are. detectron2's ``.pkl`` files are Python pickles with detectron2 names
(``res2.0.conv1``...): not supported (lrbench never unpickles code).
"""

from __future__ import annotations

import timm
import torch
import torch.nn as nn

from .mask2former import build_segmentor

CONFIGS: dict[str, str] = {"mask2former-r50": "resnet50", "mask2former-r101": "resnet101"}  # -> timm model
_DEPTHS = {6: "mask2former-r50", 23: "mask2former-r101"}  # blocks in stage 3 -> variant


def build(name: str, num_classes: int = 150) -> nn.Module:
    backbone = timm.create_model(CONFIGS[name], pretrained=False, features_only=True, out_indices=(1, 2, 3, 4))
    channels = backbone.feature_info.channels()  # [256, 512, 1024, 2048]
    return build_segmentor(name, backbone, channels, num_classes, channels_last=True, flops="scores")


CONVERTERS = ()  # mmseg checkpoints use torchvision's ResNet names, as timm does


def guess_variant(state: dict[str, torch.Tensor]) -> str | None:
    """Name the Mask2Former-ResNet variant (and class count) of a state dict."""
    cls = state.get("decode_head.cls_embed.weight")
    if cls is None or "backbone.layer1.0.conv1.weight" not in state:
        return None
    blocks = len({k.split(".")[2] for k in state if k.startswith("backbone.layer3.")})
    return f"{_DEPTHS.get(blocks, f'a ResNet with {blocks} blocks in stage 3')} with {cls.shape[0] - 1} classes"

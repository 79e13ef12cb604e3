"""The segmentor wrapper shared by every model family (mmseg's EncoderDecoder in tensor mode)."""

from __future__ import annotations

import torch
import torch.nn as nn

# The normalisation every model here expects: ImageNet mean/std in RGB order (mmseg SegDataPreProcessor with
# bgr_to_rgb=True). The eval pipeline applies it.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class Segmentor(nn.Module):
    """``backbone`` then ``decode_head``; ``forward(images)`` returns the decode head's logits.

    Images are normalised float tensors (B, 3, H, W); logits are (B, num_classes, H/s, W/s) with
    ``s = output_stride`` (ceil for sides that are not multiples of s). State-dict keys carry the official
    ``backbone.`` / ``decode_head.`` prefixes.

    Inference layout (every family alike): feature maps are kept channels-last (NHWC in memory), so the token view
    (B, N, C) that the transformer blocks use is a free reshape instead of a transpose copy around every op, and the
    convolutions run oneDNN / cuDNN's NHWC kernels. The weights are converted once here; the state dict is
    unchanged (``channels_last=False`` keeps the plain NCHW layout, as the official code runs).
    """

    size_divisor = 1  # input sides must be multiples of this (Mask2Former: 32)

    def __init__(
        self,
        name: str,
        backbone: nn.Module,
        decode_head: nn.Module,
        num_classes: int,
        output_stride: int,
        channels_last: bool = True,
    ):
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.decode_head = decode_head
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        return self.decode_head(self.backbone(images.contiguous(memory_format=self.memory_format)))


def tokens_to_map(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, N, C) tokens -> the (B, C, H, W) map over the same memory (channels-last strides; no copy)."""
    B, _, C = x.shape
    return x.reshape(B, H, W, C).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map -> (B, H*W, C) tokens; a free view when the map is channels-last."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def check_images(images: torch.Tensor) -> None:
    """One clear error for inputs the models cannot take (instead of a reshape traceback deep inside)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a normalised float tensor, got dtype {images.dtype}")
    if min(images.shape[-2:]) < 32:
        raise ValueError(f"images must be at least 32x32 pixels, got {tuple(images.shape[-2:])}")


class ConvModule(nn.Module):
    """mmcv's ConvModule as the decode heads use it: conv (no bias) -> BN -> ReLU, with mmcv's attribute names."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))

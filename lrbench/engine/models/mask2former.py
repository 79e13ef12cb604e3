"""Mask2Former for semantic segmentation (the LRFormer+ decoder and the Mask2Former baselines), in plain PyTorch.

A reimplementation of the mmdet 3.3.0 ``Mask2FormerHead`` as mmseg 1.1.0 wraps it (the head of every official
LRFormer+ config) with mmdet/mmcv's module names, so official checkpoints load strictly without renaming: 292
``decode_head.`` keys whatever the backbone. What it computes, in order:

- Pixel decoder (``MSDeformAttnPixelDecoder``): 1x1 conv (+bias) + GroupNorm(32) projections of the 1/32, 1/16 and 1/8
  maps (level 0 = 1/32); 6 post-norm encoder layers of multi-scale deformable attention (8 heads, 3 levels, 4 points;
  value = features, query = features + sine position + ``level_encoding``; reference points = pixel centres) and a
  ReLU FFN of 1024; then an FPN step at 1/4 (lateral 1x1 conv without bias + GN, plus the bilinearly upsampled 1/8
  encoder output, 3x3 conv without bias + GN + ReLU) and ``mask_feature`` (1x1 conv) on it.
- Transformer decoder: 100 queries (``query_feat`` = content, ``query_embed`` = position), 9 post-norm layers of
  masked cross-attention -> LN -> self-attention -> LN -> FFN(2048) -> LN on the memories 1/32, 1/16, 1/8 in turn
  (memory = features + ``level_embed``; keys also get the sine position). Before each layer the previous prediction's
  mask logits, resized to that memory, are thresholded (``sigmoid < 0.5`` blocks a pixel); a query blocked
  everywhere is unblocked. Predictions: ``post_norm`` -> ``cls_embed`` (K + 1 classes) and ``mask_embed`` (3-layer
  MLP) dotted with the 1/4 mask features.
- Semantic inference (mmseg ``Mask2FormerHead.predict``): the last layer's mask logits resized bilinearly to the input
  size, then ``einsum(softmax(cls)[..., :-1], sigmoid(mask))``. The scores are probabilities, not logits.

Cost (``lrbench flops``, details in :mod:`lrbench.engine.complexity`): the head is ~44 GFLOPs at 512x512 and ~68 at 640x640
(the 6 deformable encoder layers and the 3x3 FPN conv at 1/4 dominate). Measured totals match the Mask2Former paper's
Swin-T/S/B/L figures within 1% and the LRFormer README's T+/S+/B+/L+ within 3%; XL+ is 13% below the README's 365 G,
although its head is L+'s (whose total matches): how the README counted XL+ is not known.

Deformable attention samples with ``grid_sample`` (bilinear, zero padding, align_corners=False): mmcv's own pure
PyTorch path, equal to its CUDA kernel up to float rounding. The intermediate layers' class predictions (used only by
the training losses) are not computed. Inputs must have sides that are multiples of 32 (the protocol zero-pads the
normalised image; :func:`lrbench.engine.pipeline.predict_logits` does it).
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Segmentor, check_images, map_to_tokens

EMBED_DIMS = 256
NUM_QUERIES = 100
NUM_LEVELS = 3  # memories 1/32, 1/16, 1/8
NUM_HEADS = 8
NUM_POINTS = 4
ENCODER_LAYERS = 6
DECODER_LAYERS = 9
SIZE_DIVISOR = 32


def sine_position(h: int, w: int, device, num_feats: int = EMBED_DIMS // 2, temperature: float = 10000.0):
    """DETR sine encoding of an unpadded (h, w) grid, normalised (scale 2*pi, eps 1e-6, offset 0): (h*w, 2*num_feats),
    the y half first, sin/cos interleaved -- mmdet ``SinePositionalEncoding(normalize=True)``."""
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
    y, x = y / (h + eps) * scale, x / (w + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def enc(v: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, num_feats)
        p = v[:, None] / dim_t
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = enc(y)[:, None, :].expand(h, w, num_feats)
    pos_x = enc(x)[None, :, :].expand(h, w, num_feats)
    return torch.cat((pos_y, pos_x), dim=2).reshape(h * w, 2 * num_feats)


class ConvGN(nn.Module):
    """mmcv ConvModule with GroupNorm(32) (names ``conv``, ``gn``): conv -> GN [-> ReLU]."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, bias: bool = True, act: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=bias)
        self.gn = nn.GroupNorm(32, cout)
        self.activate = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.gn(self.conv(x)))


class FFN(nn.Module):
    """mmcv FFN with its residual: ``x + Linear(ReLU(Linear(x)))``; keys ``layers.0.0`` and ``layers.1``."""

    def __init__(self, dims: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dims, hidden), nn.ReLU(inplace=True)), nn.Linear(hidden, dims)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


# ----------------------------------------------------------------------------------------------------------------
# Pixel decoder
# ----------------------------------------------------------------------------------------------------------------
def deformable_sample(
    value: torch.Tensor, shapes: list[tuple[int, int]], locations: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """mmcv ``multi_scale_deformable_attn_pytorch``.

    value (B, Nv, heads, hd); locations (B, Nq, heads, L, P, 2) in [0, 1] (x, y); weights (B, Nq, heads, L, P)
    -> (B, Nq, heads * hd). Each level is sampled and weighted on its own (no concatenation of the samples)."""
    B, _, heads, hd = value.shape
    _, Nq, _, L, P, _ = locations.shape
    grids = 2 * locations - 1
    weights = weights.permute(0, 2, 1, 3, 4).reshape(B * heads, 1, Nq, L, P)
    out, start = None, 0
    for lvl, (h, w) in enumerate(shapes):
        v = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(B * heads, hd, h, w)
        start += h * w
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*heads, Nq, P, 2)
        # sampled in the grid's precision (float32 under autocast): half-precision coordinates would be off by a
        # sizeable fraction of a pixel on the 1/8 map
        s = F.grid_sample(v.to(g.dtype), g, mode="bilinear", padding_mode="zeros", align_corners=False)
        # s: (B*heads, hd, Nq, P)
        s = (s * weights[..., lvl, :]).sum(-1)  # (B*heads, hd, Nq)
        out = s if out is None else out + s
    return out.view(B, heads * hd, Nq).transpose(1, 2)


class MultiScaleDeformableAttention(nn.Module):
    """mmcv ``MultiScaleDeformableAttention`` (batch first, with its residual)."""

    def __init__(
        self, dims: int = EMBED_DIMS, heads: int = NUM_HEADS, levels: int = NUM_LEVELS, points: int = NUM_POINTS
    ):
        super().__init__()
        self.heads, self.levels, self.points = heads, levels, points
        self.sampling_offsets = nn.Linear(dims, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dims, heads * levels * points)
        self.value_proj = nn.Linear(dims, dims)
        self.output_proj = nn.Linear(dims, dims)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor, reference: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        # x, pos: (B, N, C); reference: (N, 2) normalised (x, y) pixel centres, the same for every level
        B, N, C = x.shape
        H, L, P = self.heads, self.levels, self.points
        q = x + pos
        value = self.value_proj(x).view(B, N, H, C // H)
        offsets = self.sampling_offsets(q).view(B, N, H, L, P, 2)
        weights = self.attention_weights(q).view(B, N, H, L * P).softmax(-1).view(B, N, H, L, P)
        normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=x.dtype, device=x.device)  # (L, 2) as (W, H)
        locations = reference[None, :, None, None, None, :] + offsets / normalizer[None, None, None, :, None, :]
        return x + self.output_proj(deformable_sample(value, shapes, locations, weights))


class EncoderLayer(nn.Module):
    """mmdet ``DeformableDetrTransformerEncoderLayer``: x = LN(x + MSDA(x)); x = LN(FFN(x))."""

    def __init__(self):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention()
        self.ffn = FFN(EMBED_DIMS, 1024)
        self.norms = nn.ModuleList(nn.LayerNorm(EMBED_DIMS) for _ in range(2))

    def forward(self, x, pos, reference, shapes):
        x = self.norms[0](self.self_attn(x, pos, reference, shapes))
        return self.norms[1](self.ffn(x))


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(ENCODER_LAYERS))


class PixelDecoder(nn.Module):
    """mmdet ``MSDeformAttnPixelDecoder`` for 4 input maps (strides 4, 8, 16, 32)."""

    def __init__(self, in_channels: list[int]):
        super().__init__()
        # low -> high resolution: input_convs.0 takes the 1/32 map
        self.input_convs = nn.ModuleList(ConvGN(c, EMBED_DIMS, 1, bias=True) for c in in_channels[:0:-1])
        self.encoder = Encoder()
        self.level_encoding = nn.Embedding(NUM_LEVELS, EMBED_DIMS)
        self.lateral_convs = nn.ModuleList([ConvGN(in_channels[0], EMBED_DIMS, 1, bias=False)])
        self.output_convs = nn.ModuleList([ConvGN(EMBED_DIMS, EMBED_DIMS, 3, bias=False, act=True)])
        self.mask_feature = nn.Conv2d(EMBED_DIMS, EMBED_DIMS, 1)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """feats: 4 maps (B, C_i, H/s, W/s), s = 4, 8, 16, 32 -> (mask features (B, 256, H/4, W/4),
        memories [(B, 256, H/32, W/32), (.., H/16, ..), (.., H/8, ..)])."""
        B = feats[0].shape[0]
        tokens, pos, refs, shapes = [], [], [], []
        for i, conv in enumerate(self.input_convs):
            f = conv(feats[3 - i])
            h, w = int(f.shape[-2]), int(f.shape[-1])
            shapes.append((h, w))
            tokens.append(map_to_tokens(f))
            pos.append(sine_position(h, w, f.device) + self.level_encoding.weight[i])
            ys, xs = torch.meshgrid(
                (torch.arange(h, device=f.device) + 0.5) / h,
                (torch.arange(w, device=f.device) + 0.5) / w,
                indexing="ij",
            )
            refs.append(torch.stack((xs.reshape(-1), ys.reshape(-1)), -1))
        x = torch.cat(tokens, 1)  # (B, N, 256), N = sum of h*w
        pos_all = torch.cat(pos, 0)[None].to(x.dtype)
        reference = torch.cat(refs, 0).to(x.dtype)
        for layer in self.encoder.layers:
            x = layer(x, pos_all, reference, shapes)
        outs, start = [], 0
        for h, w in shapes:
            outs.append(x[:, start : start + h * w].reshape(B, h, w, EMBED_DIMS).permute(0, 3, 1, 2))
            start += h * w
        lateral = self.lateral_convs[0](feats[0])
        y = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
        y = self.output_convs[0](y)
        return self.mask_feature(y), outs


# ----------------------------------------------------------------------------------------------------------------
# Transformer decoder
# ----------------------------------------------------------------------------------------------------------------
class MHA(nn.Module):
    """mmcv ``MultiheadAttention`` (batch first): ``x + attn(x + pos_q, key + pos_k, value)``; keys ``attn.*``."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(EMBED_DIMS, NUM_HEADS, batch_first=True)

    def forward(self, x, pos_q, key, pos_k, value, mask=None):
        out = self.attn(x + pos_q, key + pos_k, value, attn_mask=mask, need_weights=False)[0]
        return x + out


class DecoderLayer(nn.Module):
    """mmdet ``Mask2FormerTransformerDecoderLayer``: cross-attn -> norms.0 -> self-attn -> norms.1 -> FFN -> norms.2
    (``self_attn`` is registered first, as in mmdet, so the key order matches)."""

    def __init__(self):
        super().__init__()
        self.self_attn = MHA()
        self.cross_attn = MHA()
        self.ffn = FFN(EMBED_DIMS, 2048)
        self.norms = nn.ModuleList(nn.LayerNorm(EMBED_DIMS) for _ in range(3))

    def forward(self, q, q_pos, memory, memory_pos, mask):
        q = self.norms[0](self.cross_attn(q, q_pos, memory, memory_pos, memory, mask))
        q = self.norms[1](self.self_attn(q, q_pos, q, q_pos, q))
        return self.norms[2](self.ffn(q))


class TransformerDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(DECODER_LAYERS))
        self.post_norm = nn.LayerNorm(EMBED_DIMS)


class Mask2FormerHead(nn.Module):
    """The decode head: ``forward(feats)`` -> (class logits (B, 100, K+1), mask logits (B, 100, H/4, W/4)) of the
    last decoder layer."""

    def __init__(self, in_channels: list[int], num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.pixel_decoder = PixelDecoder(in_channels)
        self.transformer_decoder = TransformerDecoder()
        self.query_embed = nn.Embedding(NUM_QUERIES, EMBED_DIMS)  # positional part of the queries
        self.query_feat = nn.Embedding(NUM_QUERIES, EMBED_DIMS)  # content part (the decoder's input)
        self.level_embed = nn.Embedding(NUM_LEVELS, EMBED_DIMS)
        self.cls_embed = nn.Linear(EMBED_DIMS, num_classes + 1)
        self.mask_embed = nn.Sequential(
            nn.Linear(EMBED_DIMS, EMBED_DIMS),
            nn.ReLU(inplace=True),
            nn.Linear(EMBED_DIMS, EMBED_DIMS),
            nn.ReLU(inplace=True),
            nn.Linear(EMBED_DIMS, EMBED_DIMS),
        )

    def predict_masks(self, q: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        """(B, 100, 256) queries -> (B, 100, H/4, W/4) mask logits."""
        emb = self.mask_embed(self.transformer_decoder.post_norm(q))
        return torch.einsum("bqc,bchw->bqhw", emb, mask_features)

    @staticmethod
    def attention_mask(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Mask logits -> the boolean cross-attention mask for a memory of ``size`` (True = blocked), repeated per
        head: (B * heads, 100, h*w). A query blocked everywhere is unblocked everywhere."""
        m = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
        blocked = m.flatten(2).sigmoid() < 0.5  # (B, 100, h*w)
        blocked = blocked & ~blocked.all(-1, keepdim=True)
        return blocked.repeat_interleave(NUM_HEADS, dim=0)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mask_features, memories = self.pixel_decoder(feats)
        B = mask_features.shape[0]
        mem, mem_pos, sizes = [], [], []
        for i, m in enumerate(memories):
            h, w = int(m.shape[-2]), int(m.shape[-1])
            sizes.append((h, w))
            mem.append(map_to_tokens(m) + self.level_embed.weight[i])  # (B, h*w, 256)
            mem_pos.append(sine_position(h, w, m.device)[None].to(m.dtype))
        q = self.query_feat.weight.unsqueeze(0).repeat(B, 1, 1)  # (B, 100, 256); a copy, as mmdet does
        q_pos = self.query_embed.weight.unsqueeze(0).repeat(B, 1, 1)
        mask_logits = self.predict_masks(q, mask_features)
        for i, layer in enumerate(self.transformer_decoder.layers):
            lvl = i % NUM_LEVELS
            q = layer(q, q_pos, mem[lvl], mem_pos[lvl], self.attention_mask(mask_logits, sizes[lvl]))
            mask_logits = self.predict_masks(q, mask_features)
        cls_logits = self.cls_embed(self.transformer_decoder.post_norm(q))
        return cls_logits, mask_logits


def semantic_scores(cls_logits: torch.Tensor, mask_logits: torch.Tensor, size) -> torch.Tensor:
    """mmseg ``Mask2FormerHead.predict``: masks resized to ``size``, then per-class scores (B, K, *size), laid out
    channels-last (what the post-processing and the argmax read fastest)."""
    masks = F.interpolate(mask_logits, size=tuple(size), mode="bilinear", align_corners=False)
    return torch.einsum("bqc,bqhw->bhwc", cls_logits.softmax(-1)[..., :-1], masks.sigmoid()).permute(0, 3, 1, 2)


class Mask2FormerSegmentor(Segmentor):
    """``forward(images)`` -> per-class scores (B, K, H, W) at the input size; ``forward_queries(images)`` -> the raw
    (class logits (B, 100, K+1), mask logits (B, 100, H/4, W/4)). Any image size runs, as in mmseg (whose
    640 configs feed unpadded images; Swin pads inside); the test protocols that pad to multiples of 32 do it
    before the model (``pad_divisor``), and ``size_divisor`` is what ``--shape`` asks of a FLOPs or speed input.

    ``flops_convention`` says what the family's published GFLOPs count: "queries" (backbone + head, mmseg's
    tensor-mode forward) or "scores" (the whole inference, detectron2); see :mod:`lrbench.engine.complexity`."""

    flops_convention = "scores"
    size_divisor = SIZE_DIVISOR

    def forward_queries(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(images)
        return self.decode_head(self.backbone(images.contiguous(memory_format=self.memory_format)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cls_logits, mask_logits = self.forward_queries(images)
        return semantic_scores(cls_logits, mask_logits, images.shape[-2:])


def build_segmentor(
    name: str, backbone: nn.Module, in_channels: list[int], num_classes: int, channels_last: bool, flops: str
) -> Mask2FormerSegmentor:
    head = Mask2FormerHead(list(in_channels), num_classes)
    model = Mask2FormerSegmentor(name, backbone, head, num_classes, output_stride=1, channels_last=channels_last)
    model.flops_convention = flops
    return model


# ----------------------------------------------------------------------------------------------------------------
# transformers naming -> mmdet naming (the head of ``Mask2FormerForUniversalSegmentation``)
# ----------------------------------------------------------------------------------------------------------------
_PD, _TM = r"^model\.pixel_level_module\.decoder\.", r"^model\.transformer_module\."
_HEAD_RENAMES = [
    (_PD + r"input_projections\.(\d)\.0\.", r"pixel_decoder.input_convs.\1.conv."),
    (_PD + r"input_projections\.(\d)\.1\.", r"pixel_decoder.input_convs.\1.gn."),
    (_PD + r"encoder\.layers\.(\d+)\.self_attn\.", r"pixel_decoder.encoder.layers.\1.self_attn."),
    (_PD + r"encoder\.layers\.(\d+)\.fc1\.", r"pixel_decoder.encoder.layers.\1.ffn.layers.0.0."),
    (_PD + r"encoder\.layers\.(\d+)\.fc2\.", r"pixel_decoder.encoder.layers.\1.ffn.layers.1."),
    (_PD + r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"pixel_decoder.encoder.layers.\1.norms.0."),
    (_PD + r"encoder\.layers\.(\d+)\.final_layer_norm\.", r"pixel_decoder.encoder.layers.\1.norms.1."),
    (_PD + r"level_embed$", "pixel_decoder.level_encoding.weight"),
    (_PD + r"adapter_1\.0\.", "pixel_decoder.lateral_convs.0.conv."),
    (_PD + r"adapter_1\.1\.", "pixel_decoder.lateral_convs.0.gn."),
    (_PD + r"layer_1\.0\.", "pixel_decoder.output_convs.0.conv."),
    (_PD + r"layer_1\.1\.", "pixel_decoder.output_convs.0.gn."),
    (_PD + r"mask_projection\.", "pixel_decoder.mask_feature."),
    (_TM + r"decoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"transformer_decoder.layers.\1.self_attn.attn.out_proj."),
    (_TM + r"decoder\.layers\.(\d+)\.cross_attn\.", r"transformer_decoder.layers.\1.cross_attn.attn."),
    (_TM + r"decoder\.layers\.(\d+)\.fc1\.", r"transformer_decoder.layers.\1.ffn.layers.0.0."),
    (_TM + r"decoder\.layers\.(\d+)\.fc2\.", r"transformer_decoder.layers.\1.ffn.layers.1."),
    (_TM + r"decoder\.layers\.(\d+)\.cross_attn_layer_norm\.", r"transformer_decoder.layers.\1.norms.0."),
    (_TM + r"decoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer_decoder.layers.\1.norms.1."),
    (_TM + r"decoder\.layers\.(\d+)\.final_layer_norm\.", r"transformer_decoder.layers.\1.norms.2."),
    (_TM + r"decoder\.layernorm\.", "transformer_decoder.post_norm."),
    (_TM + r"queries_embedder\.", "query_embed."),  # positional
    (_TM + r"queries_features\.", "query_feat."),  # content
    (_TM + r"level_embed\.", "level_embed."),
    (r"^class_predictor\.", "cls_embed."),
    (_TM + r"decoder\.mask_predictor\.mask_embedder\.(\d)\.0\.", lambda m: f"mask_embed.{2 * int(m.group(1))}."),
]
_QKV = re.compile(_TM + r"decoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)$")


def head_from_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The head keys of a transformers Mask2Former state dict in mmdet naming (``decode_head.``-prefixed); the
    decoder self-attention's separate q/k/v projections are stacked into ``in_proj_*`` (rows q, k, v)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        m = _QKV.match(k)
        if m:
            qkv.setdefault(f"transformer_decoder.layers.{m.group(1)}.self_attn.attn.in_proj_{m.group(3)}", {})[
                m.group(2)
            ] = v
            continue
        for pat, rep in _HEAD_RENAMES:
            new, n = re.subn(pat, rep, k)
            if n:
                out["decode_head." + new] = v
                break
    for k, parts in qkv.items():
        out["decode_head." + k] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out

"""The reference LRFormer: lrbench's LRFormer as it was before its fast inference path, kept for tests and benchmarks.

It follows the official mmseg code op for op in the official NCHW layout. What follows is the original docstring.

LRFormer: Low-Resolution Self-Attention backbone and the LRHead decoder, in plain PyTorch.

A faithful reimplementation of the official mmseg code (yuhuan-wu/LRFormer, mmseg 1.1.0 fork). Module names,
parameter shapes and every numerical detail follow it so official checkpoints load without renaming:

- LRSA pools queries to a fixed 16-pixel short side and keys/values to pyramid sizes [11, 8, 6, 4] (aspect kept
  with Python ``round(.. + 0.001)``), so attention cost does not grow with the input resolution.
- LayerNorm eps is 1e-6 in blocks/embeddings but the default 1e-5 inside attention; layer scale exists only in
  stages 3-4; the 3x3 depth-wise convs applied to the pooled maps (``d_convs{1..4}``) are shared per stage.
- The LRHead uses BatchNorm in its fuse blocks, a 1x1 conv for ``q`` (a plain Linear for ``kv``) and no d_convs.

Unlike the official code, spatial sizes are taken from the real conv outputs, so inputs whose sides are not
multiples of 32 work too (logits then have ceil(H/8) x ceil(W/8) pixels).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from lrbench.engine.models.base import ConvModule, Segmentor
from lrbench.engine.models.lrformer import CONFIGS

BASE_POOLED_SIZES = (11, 8, 6, 4)  # key/value pyramid for a 16-pixel query grid
POOL_EPS = 0.001  # official tie-breaker: round(x + 0.001)


def pooled_size(size: int, H: int, W: int) -> tuple[int, int]:
    """Aspect-preserving pooled grid whose short side is ``size`` (official rounding rule)."""
    H, W = int(H), int(W)  # plain ints also under jit tracing (FLOP counting)
    if W >= H:
        return size, round(W * float(size) / H + POOL_EPS)
    return round(H * float(size) / W + POOL_EPS), size


def pyramid_sizes(q_pooled_size: int) -> list[int]:
    """Key/value pyramid sizes for a query grid: 16 -> [11, 8, 6, 4], 32 -> [22, 16, 12, 8]."""
    return [round(t * q_pooled_size / 16.0 + POOL_EPS) for t in BASE_POOLED_SIZES]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # q: (B, heads, Nq, hd); k, v: (B, heads, Nk, hd); scale = hd^-0.5 as in the official qk_scale=None.
    return F.scaled_dot_product_attention(q, k, v)


# ----------------------------------------------------------------------------------------------------------------
# Backbone
# ----------------------------------------------------------------------------------------------------------------
class Stem(nn.Module):
    """Four 3x3 convs (two with stride 2) then LayerNorm on tokens: stride 4."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        half = out_chans // 2
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, half, 3, 2, 1),
            nn.BatchNorm2d(half),
            nn.GELU(),
            nn.Conv2d(half, half, 3, 1, 1),
            nn.BatchNorm2d(half),
            nn.GELU(),
            nn.Conv2d(half, out_chans, 3, 2, 1),
            nn.BatchNorm2d(out_chans),
            nn.GELU(),
            nn.Conv2d(out_chans, out_chans, 3, 1, 1),
        )
        self.norm = nn.LayerNorm(out_chans, eps=1e-6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.conv1(x)
        H, W = int(x.shape[-2]), int(x.shape[-1])
        return self.norm(x.flatten(2).transpose(1, 2)), (H, W)


class PatchEmbed(nn.Module):
    """Overlapping 3x3 stride-2 conv downsampling between stages."""

    def __init__(self, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, 3, 2, 1)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        H, W = (
            int(x.shape[-2]),
            int(x.shape[-1]),
        )  # the real (ceil) size; the official code uses floor, equal for multiples of 32
        return self.norm(x.flatten(2).transpose(1, 2)), (H, W)


class PoolingAttention(nn.Module):
    """Low-resolution self-attention (LRSA): queries and keys/values both live in a fixed pooled space."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        q_pooled_size: int = 16,
        pooled_sizes: list[int] | tuple[int, ...] = BASE_POOLED_SIZES,
    ):
        super().__init__()
        assert dim % num_heads == 0, f"dim {dim} must be divisible by num_heads {num_heads}"
        self.num_heads = num_heads
        self.q_pooled_size = q_pooled_size
        self.pooled_sizes = list(pooled_sizes)
        self.q = nn.Sequential(nn.Linear(dim, dim, bias=qkv_bias))
        self.kv = nn.Sequential(nn.Linear(dim, dim * 2, bias=qkv_bias))
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)  # default eps 1e-5, as in the official code

    def forward(self, x: torch.Tensor, H: int, W: int, d_convs: nn.ModuleList) -> torch.Tensor:
        B, N, C = x.shape
        heads, hd = self.num_heads, C // self.num_heads
        x_ = x.transpose(1, 2).reshape(B, C, H, W)

        q = F.adaptive_avg_pool2d(x_, pooled_size(self.q_pooled_size, H, W))  # (B, C, 16, 16*W/H)
        H1, W1 = q.shape[-2:]
        q = self.q(q.flatten(2).transpose(1, 2))  # (B, Nq, C)
        q = q.reshape(B, -1, heads, hd).transpose(1, 2)  # (B, heads, Nq, hd)

        pools = []
        for size, d_conv in zip(self.pooled_sizes, d_convs):
            pool = F.adaptive_avg_pool2d(x_, pooled_size(size, H, W))
            pools.append((pool + d_conv(pool)).flatten(2))
        pools = self.norm(torch.cat(pools, dim=2).transpose(1, 2))  # (B, Nk, C), Nk = 237 for square maps
        kv = self.kv(pools).reshape(B, -1, 2, heads, hd).permute(2, 0, 3, 1, 4)  # (2, B, heads, Nk, hd)

        out = _sdpa(q, kv[0], kv[1]).transpose(1, 2).reshape(B, -1, C)  # (B, Nq, C)
        out = self.proj(out).transpose(1, 2).reshape(B, C, H1, W1)
        out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=False)
        return out.flatten(2).transpose(1, 2)  # (B, N, C)


class IRB(nn.Module):
    """Inverted residual FFN: 1x1 conv, GELU, residual 3x3 depth-wise conv, 1x1 conv."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Conv2d(in_features, hidden_features, 1)
        self.act = nn.GELU()
        self.conv = nn.Conv2d(hidden_features, hidden_features, 3, 1, 1, groups=hidden_features)
        self.fc2 = nn.Conv2d(hidden_features, in_features, 1)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))
        return self.fc2(x + self.conv(x))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        return self.forward_map(x.transpose(1, 2).reshape(B, C, H, W)).flatten(2).transpose(1, 2)


class Block(nn.Module):
    """Backbone block on tokens (B, N, C): [pre_norm] -> x + cpe(x) -> LRSA -> IRB, with optional layer scale."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        drop_path: float = 0.0,
        layer_scale: bool = False,
        pre_norm: bool = False,
        q_pooled_size: int = 16,
    ):
        super().__init__()
        self.pre_norm = nn.BatchNorm2d(dim) if pre_norm else nn.Identity()  # XL only: fp16 overflow guard
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PoolingAttention(dim, num_heads, q_pooled_size=q_pooled_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = IRB(dim, int(dim * mlp_ratio))
        self.ls = layer_scale
        if layer_scale:
            self.layer_scale_1 = nn.Parameter(1e-6 * torch.ones(dim))
            self.layer_scale_2 = nn.Parameter(1e-6 * torch.ones(dim))
        self.cpe = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int, d_convs: nn.ModuleList) -> torch.Tensor:
        B, N, C = x.shape
        x = self.pre_norm(x.transpose(1, 2).reshape(B, C, H, W))
        x = (x + self.cpe(x)).flatten(2).transpose(1, 2)
        a = self.attn(self.norm1(x), H, W, d_convs)
        x = x + self.drop_path(self.layer_scale_1 * a if self.ls else a)
        m = self.mlp(self.norm2(x), H, W)
        return x + self.drop_path(self.layer_scale_2 * m if self.ls else m)


class LRFormer(nn.Module):
    """LRFormer backbone: 4 stages at strides 4/8/16/32; returns the four NCHW feature maps (no output norms)."""

    def __init__(
        self,
        embed_dims=(64, 128, 320, 512),
        depths=(3, 3, 12, 3),
        num_heads=(2, 4, 10, 16),
        mlp_ratios=(8, 8, 4, 4),
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
        q_pooled_size: int = 16,
    ):
        super().__init__()
        self.embed_dims = list(embed_dims)
        self.depths = list(depths)
        self.patch_embed1 = Stem(in_chans, embed_dims[0])
        self.patch_embed2 = PatchEmbed(embed_dims[0], embed_dims[1])
        self.patch_embed3 = PatchEmbed(embed_dims[1], embed_dims[2])
        self.patch_embed4 = PatchEmbed(embed_dims[2], embed_dims[3])
        for i, C in enumerate(embed_dims, 1):  # one dw conv per pyramid level, shared by all blocks of a stage
            setattr(self, f"d_convs{i}", nn.ModuleList(nn.Conv2d(C, C, 3, 1, 1, groups=C) for _ in BASE_POOLED_SIZES))
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        cur = 0
        for i in range(4):
            setattr(
                self,
                f"block{i + 1}",
                nn.ModuleList(
                    Block(
                        embed_dims[i],
                        num_heads[i],
                        mlp_ratios[i],
                        drop_path=dpr[cur + j],
                        layer_scale=i >= 2,  # official: ls=False for stages 1-2, use_ls=True for 3-4
                        pre_norm=(i == 2 and depths[2] > 20 and j in (7, 15)),
                        q_pooled_size=q_pooled_size,
                    )
                    for j in range(depths[i])
                ),
            )
            cur += depths[i]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        B = x.shape[0]
        outs = []
        for i in range(1, 5):
            x, (H, W) = getattr(self, f"patch_embed{i}")(x)
            d_convs = getattr(self, f"d_convs{i}")
            for blk in getattr(self, f"block{i}"):
                x = blk(x, H, W, d_convs)
            x = x.transpose(1, 2).reshape(B, -1, H, W)
            outs.append(x)
        return outs


# ----------------------------------------------------------------------------------------------------------------
# Decoder
# ----------------------------------------------------------------------------------------------------------------
class HeadPoolingAttention(nn.Module):
    """LRHead attention on NCHW maps: Conv1x1 q, plain pools (no d_convs), plain Linear kv."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True, q_pooled_size: int = 32):
        super().__init__()
        self.num_heads = num_heads
        self.q_pooled_size = q_pooled_size
        self.pooled_sizes = pyramid_sizes(q_pooled_size)
        self.q = nn.Conv2d(dim, dim, 1, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        heads, hd = self.num_heads, C // self.num_heads
        q = self.q(F.adaptive_avg_pool2d(x, pooled_size(self.q_pooled_size, H, W)))  # (B, C, 32, 32*W/H)
        H1, W1 = q.shape[-2:]
        q = q.reshape(B, heads, hd, -1).transpose(2, 3)  # (B, heads, Nq, hd)
        pools = torch.cat([F.adaptive_avg_pool2d(x, pooled_size(s, H, W)).flatten(2) for s in self.pooled_sizes], 2)
        pools = self.norm(pools.transpose(1, 2))  # (B, Nk, C), Nk = 948 for square maps
        kv = self.kv(pools).reshape(B, -1, 2, heads, hd).permute(2, 0, 3, 1, 4)
        out = _sdpa(q, kv[0], kv[1]).transpose(1, 2).reshape(B, -1, C)
        out = self.proj(out).transpose(1, 2).reshape(B, C, H1, W1)
        return F.interpolate(out, size=(H, W), mode="bilinear", align_corners=False)


class HeadBlock(nn.Module):
    """LRHead fuse block on NCHW maps: BN norms, layer scale always on."""

    def __init__(self, dim: int, num_heads: int = 8, mlp_ratio: float = 4, q_pooled_size: int = 32):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = HeadPoolingAttention(dim, num_heads, q_pooled_size=q_pooled_size)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = IRB(dim, int(dim * mlp_ratio))
        self.cpe = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.layer_scale_1 = nn.Parameter(1e-6 * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.cpe(x)
        x = x + self.layer_scale_1[None, :, None, None] * self.attn(self.norm1(x))
        return x + self.layer_scale_2[None, :, None, None] * self.mlp.forward_map(self.norm2(x))


class LRHead(nn.Module):
    """Decoder on stages 2-4: fuse at 1/8, two LRSA fuse blocks, 1x1 classifier. Logits at 1/8 resolution."""

    def __init__(
        self,
        in_channels: list[int],
        channels: int,
        num_classes: int,
        num_heads: int = 8,
        mlp_ratio: float = 4,
        q_pooled_size: int = 32,
        dropout_ratio: float = 0.1,
    ):
        super().__init__()
        self.in_index = [1, 2, 3]
        self.squeeze1 = ConvModule(sum(in_channels), channels)
        self.squeeze2 = ConvModule(channels + in_channels[-1], channels)
        self.fuse_block1 = HeadBlock(channels, num_heads, mlp_ratio, q_pooled_size)
        self.fuse_block2 = HeadBlock(channels, num_heads, mlp_ratio, q_pooled_size)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        feats = [feats[i] for i in self.in_index]
        size = feats[0].shape[2:]
        feats = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats]
        x = self.fuse_block1(self.squeeze1(torch.cat(feats, dim=1)))
        x = self.fuse_block2(self.squeeze2(torch.cat([x, feats[-1]], dim=1)))
        return self.conv_seg(self.dropout(x))


# ----------------------------------------------------------------------------------------------------------------
# Variants: the package's configs (data, not code under test)
# ----------------------------------------------------------------------------------------------------------------
def build(name: str, num_classes: int = 150) -> nn.Module:
    """LRFormer + LRHead in the plain NCHW layout, as the official code runs."""
    cfg = CONFIGS[name]
    backbone = LRFormer(cfg.embed_dims, cfg.depths, cfg.num_heads, cfg.mlp_ratios, cfg.drop_path_rate)
    head = LRHead(list(cfg.embed_dims[1:]), cfg.head_channels, num_classes)
    return Segmentor(name, backbone, head, num_classes=num_classes, output_stride=8, channels_last=False)

"""SegFormer (MiT-B0...B5 encoder + all-MLP decode head), in plain PyTorch.

Numerically equal to Hugging Face transformers' ``SegformerForSemanticSegmentation`` (the format of the
``nvidia/segformer-*`` hub weights): overlapping patch embeddings (7x7/4 then 3x3/2), efficient self-attention whose
keys/values are spatially reduced by a strided conv (ratios 8/4/2/1), Mix-FFN (fc1, 3x3 depth-wise conv, GELU, fc2),
a LayerNorm after every stage, and the MLP head (per-stage Linear to ``decoder_dim``, upsample to 1/4, concat in
reverse stage order, 1x1 conv + BN + ReLU, 1x1 classifier). LayerNorm eps is the PyTorch default, as in transformers.
mmseg's retrained SegFormers (``segformer-bX-mmseg``) differ: mmseg's ``SegformerHead`` with 256 channels for every
size (the paper: 768 for B2-B5) and LayerNorm eps 1e-6 throughout.

lrbench's own state-dict naming (``backbone.block1.0.attn.q.weight``, ``decode_head.linear_fuse.conv.weight``, ...)
follows the original NVlabs code; converters for transformers (4.x hub files and 5.x in-memory names) are at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from .base import ConvModule, Segmentor, map_to_tokens, tokens_to_map


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int, eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        H, W = int(x.shape[-2]), int(x.shape[-1])
        return self.norm(map_to_tokens(x)), H, W


class EfficientAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a ``sr_ratio``-strided conv of the map (SRA)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, eps: float = 1e-5):
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        heads, hd = self.num_heads, C // self.num_heads
        q = self.q(x).reshape(B, N, heads, hd).transpose(1, 2)  # (B, heads, N, hd)
        kv = x
        if self.sr_ratio > 1:  # (B, N, C) -> (B, N / sr^2, C)
            kv = self.norm(map_to_tokens(self.sr(tokens_to_map(x, H, W))))
        k = self.k(kv).reshape(B, -1, heads, hd).transpose(1, 2)
        v = self.v(kv).reshape(B, -1, heads, hd).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, hd)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = self.fc1(x)
        B, N, C = x.shape
        x = map_to_tokens(self.dwconv(tokens_to_map(x, H, W)))
        return self.fc2(self.act(x))


class MiTBlock(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int, drop_path: float = 0.0, eps: float = 1e-5
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientAttention(dim, num_heads, sr_ratio, eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x), H, W))


class MixVisionTransformer(nn.Module):
    """MiT encoder: 4 stages at strides 4/8/16/32, each ending in a LayerNorm; returns NCHW maps."""

    def __init__(
        self,
        embed_dims,
        depths,
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(4, 4, 4, 4),
        sr_ratios=(8, 4, 2, 1),
        drop_path_rate: float = 0.1,
        in_chans: int = 3,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.embed_dims, self.depths = list(embed_dims), list(depths)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        cur = 0
        for i in range(4):
            setattr(
                self,
                f"patch_embed{i + 1}",
                OverlapPatchEmbed(
                    in_chans if i == 0 else embed_dims[i - 1],
                    embed_dims[i],
                    7 if i == 0 else 3,
                    4 if i == 0 else 2,
                    eps,
                ),
            )
            setattr(
                self,
                f"block{i + 1}",
                nn.ModuleList(
                    MiTBlock(embed_dims[i], num_heads[i], mlp_ratios[i], sr_ratios[i], dpr[cur + j], eps)
                    for j in range(depths[i])
                ),
            )
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=eps))
            cur += depths[i]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, 5):
            x, H, W = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, H, W)
            x = tokens_to_map(getattr(self, f"norm{i}")(x), H, W)
            outs.append(x)
        return outs


class MLPProj(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        return tokens_to_map(self.proj(map_to_tokens(x)), H, W)


class SegFormerHead(nn.Module):
    """All-MLP decoder; logits at 1/4 resolution."""

    def __init__(self, in_channels: list[int], embed_dim: int, num_classes: int, dropout_ratio: float = 0.1):
        super().__init__()
        self.linear_c = nn.ModuleList(MLPProj(c, embed_dim) for c in in_channels)
        self.linear_fuse = ConvModule(embed_dim * len(in_channels), embed_dim)
        self.dropout = nn.Dropout(dropout_ratio)
        self.conv_seg = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[2:]
        x = [F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) for p, f in zip(self.linear_c, feats)]
        return self.conv_seg(self.dropout(self.linear_fuse(torch.cat(x[::-1], dim=1))))


class MMSegFormerHead(nn.Module):
    """mmseg's ``SegformerHead``: per-stage 1x1 ConvModule (conv + BN + ReLU), resize to 1/4, concat in stage order,
    1x1 ConvModule fusion, classifier. The decoder of mmseg's own SegFormer checkpoints (``segformer-bX-mmseg``)."""

    def __init__(self, in_channels: list[int], channels: int, num_classes: int, dropout_ratio: float = 0.1):
        super().__init__()
        self.convs = nn.ModuleList(ConvModule(c, channels) for c in in_channels)
        self.fusion_conv = ConvModule(channels * len(in_channels), channels)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[2:]
        x = [
            F.interpolate(conv(f), size=size, mode="bilinear", align_corners=False)
            for conv, f in zip(self.convs, feats)
        ]
        return self.conv_seg(self.dropout(self.fusion_conv(torch.cat(x, dim=1))))


@dataclass(frozen=True)
class SegFormerConfig:
    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    decoder_dim: int
    mmseg_head: bool = False  # mmseg's SegformerHead instead of the paper's all-MLP head
    eps: float = 1e-5  # every LayerNorm's (PyTorch's default, as NVlabs and transformers; mmseg's MiT uses 1e-6)


CONFIGS: dict[str, SegFormerConfig] = {
    "segformer-b0": SegFormerConfig((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "segformer-b1": SegFormerConfig((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "segformer-b2": SegFormerConfig((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "segformer-b3": SegFormerConfig((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "segformer-b4": SegFormerConfig((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "segformer-b5": SegFormerConfig((64, 128, 320, 512), (3, 6, 40, 3), 768),
}


# mmseg's own SegFormers (configs/_base_/models/segformer_mit-b0.py and the B1-B5 configs that override only the
# backbone and the head's in_channels): SegformerHead(channels=256) for every size, LN eps=1e-6 in every norm.
CONFIGS.update(
    {
        f"{name}-mmseg": SegFormerConfig(c.embed_dims, c.depths, 256, mmseg_head=True, eps=1e-6)
        for name, c in list(CONFIGS.items())
    }
)


def build(name: str, num_classes: int = 150) -> Segmentor:
    cfg = CONFIGS[name]
    backbone = MixVisionTransformer(cfg.embed_dims, cfg.depths, eps=cfg.eps)
    head = (MMSegFormerHead if cfg.mmseg_head else SegFormerHead)(list(cfg.embed_dims), cfg.decoder_dim, num_classes)
    return Segmentor(name, backbone, head, num_classes=num_classes, output_stride=4)


# ----------------------------------------------------------------------------------------------------------------
# Converters: transformers -> lrbench. Hub files (transformers 4.x) and transformers 5.x state dicts differ in names.
# ----------------------------------------------------------------------------------------------------------------
def _inc(m: re.Match, g: int) -> str:
    return str(int(m.group(g)) + 1)


_HF_RULES: list[tuple[str, object]] = [
    # transformers 4.x (hub files)
    (r"^segformer\.encoder\.patch_embeddings\.(\d)\.proj\.", lambda m: f"backbone.patch_embed{_inc(m, 1)}.proj."),
    (r"^segformer\.encoder\.patch_embeddings\.(\d)\.layer_norm\.", lambda m: f"backbone.patch_embed{_inc(m, 1)}.norm."),
    (r"^segformer\.encoder\.layer_norm\.(\d)\.", lambda m: f"backbone.norm{_inc(m, 1)}."),
    (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.", lambda m: f"backbone.block{_inc(m, 1)}.{m.group(2)}."),
    # transformers 5.x
    (r"^segformer\.stages\.(\d)\.patch_embeddings\.proj\.", lambda m: f"backbone.patch_embed{_inc(m, 1)}.proj."),
    (r"^segformer\.stages\.(\d)\.patch_embeddings\.layer_norm\.", lambda m: f"backbone.patch_embed{_inc(m, 1)}.norm."),
    (r"^segformer\.stages\.(\d)\.layer_norm\.", lambda m: f"backbone.norm{_inc(m, 1)}."),
    (r"^segformer\.stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"backbone.block{_inc(m, 1)}.{m.group(2)}."),
]
_HF_BLOCK = {  # inside a block, both generations
    "layer_norm_1.": "norm1.",
    "layernorm_before.": "norm1.",
    "layer_norm_2.": "norm2.",
    "layernorm_after.": "norm2.",
    "attention.self.query.": "attn.q.",
    "attention.self.key.": "attn.k.",
    "attention.self.value.": "attn.v.",
    "attention.q_proj.": "attn.q.",
    "attention.k_proj.": "attn.k.",
    "attention.v_proj.": "attn.v.",
    "attention.output.dense.": "attn.proj.",
    "attention.o_proj.": "attn.proj.",
    "attention.self.sr.": "attn.sr.",
    "attention.self.layer_norm.": "attn.norm.",
    "attention.sequence_reduction.sequence_reduction.": "attn.sr.",
    "attention.sequence_reduction.layer_norm.": "attn.norm.",
    "mlp.dense1.": "mlp.fc1.",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.dense2.": "mlp.fc2.",
    "mlp.fc2.": "mlp.fc2.",
    "mlp.dwconv.dwconv.": "mlp.dwconv.",
}
_HF_HEAD = [
    (
        r"^decode_head\.(?:linear_c|linear_projections)\.(\d)\.proj\.",
        lambda m: f"decode_head.linear_c.{m.group(1)}.proj.",
    ),
    (r"^decode_head\.linear_fuse\.weight$", lambda m: "decode_head.linear_fuse.conv.weight"),
    (r"^decode_head\.batch_norm\.", lambda m: "decode_head.linear_fuse.bn."),
    (r"^decode_head\.classifier\.", lambda m: "decode_head.conv_seg."),
]


def convert_from_transformers(state: dict[str, torch.Tensor]):
    """Map transformers SegFormer keys (4.x hub or 5.x) to lrbench's; None if these are not SegFormer keys."""
    if not any(k.startswith("segformer.") for k in state):
        return None
    out = {}
    for key, v in state.items():
        new = key
        for pat, repl in _HF_RULES + _HF_HEAD:
            new, n = re.subn(pat, repl, new)
            if n:
                break
        if new.startswith("backbone.block"):
            head, _, rest = new.partition(".")  # backbone
            stage, idx, rest = rest.split(".", 2)
            for old, rep in _HF_BLOCK.items():
                if rest.startswith(old):
                    rest = rep + rest[len(old) :]
                    break
            new = ".".join((head, stage, idx, rest))
        out[new] = v
    return out, ["converted from transformers SegFormer naming"]


def convert_from_official(state: dict[str, torch.Tensor]):
    """NVlabs/SegFormer checkpoints (the paper's weights): fused ``attn.kv``, ``linear_c4..1``, ``linear_pred``."""
    if not any(k.startswith("decode_head.linear_c1.") or ".attn.kv." in k for k in state):
        return None
    out = {}
    for k, v in state.items():
        k = k.replace(".mlp.dwconv.dwconv.", ".mlp.dwconv.").replace(
            "decode_head.linear_pred.", "decode_head.conv_seg."
        )
        k = re.sub(r"^decode_head\.linear_c(\d)\.", lambda m: f"decode_head.linear_c.{int(m.group(1)) - 1}.", k)
        if ".attn.kv." in k:
            C = v.shape[0] // 2
            out[k.replace(".attn.kv.", ".attn.k.")], out[k.replace(".attn.kv.", ".attn.v.")] = v[:C], v[C:]
            continue
        out[k] = v
    return out, ["converted from the official NVlabs SegFormer naming"]


def convert_from_mmseg(state: dict[str, torch.Tensor]):
    """mmseg ``MixVisionTransformer`` keys (``backbone.layers.i.{0,1,2}``) -> lrbench.

    mmseg's own ``SegformerHead`` (``decode_head.convs.*``, ``fusion_conv``) is not the paper's all-MLP head: its keys are
    kept as they are and load into the ``segformer-bX-mmseg`` architectures.
    """
    if not any(re.match(r"^backbone\.layers\.\d\.1\.\d+\.attn\.attn\.in_proj_weight$", k) for k in state):
        return None
    out = {}
    for k, v in state.items():
        m = re.match(r"^backbone\.layers\.(\d)\.(\d)\.(.*)$", k)
        if not m:
            out[k] = v
            continue
        stage, part, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
        if part == "0":  # patch embedding
            out[f"backbone.patch_embed{stage}.{rest.replace('projection.', 'proj.')}"] = v
        elif part == "2":  # stage norm
            out[f"backbone.norm{stage}.{rest}"] = v
        else:
            j, sub = rest.split(".", 1)
            pre = f"backbone.block{stage}.{j}."
            if sub.startswith("attn.attn.in_proj_"):
                for name, chunk in zip("qkv", v.chunk(3, 0)):
                    out[pre + f"attn.{name}.{sub.rsplit('_', 1)[1]}"] = chunk
                continue
            sub = sub.replace("attn.attn.out_proj.", "attn.proj.")
            for a, b in (
                ("ffn.layers.0.", "mlp.fc1."),
                ("ffn.layers.1.", "mlp.dwconv."),
                ("ffn.layers.4.", "mlp.fc2."),
            ):
                sub = sub.replace(a, b)
            if sub.startswith(("mlp.fc1.weight", "mlp.fc2.weight")):
                v = v.flatten(1)  # mmseg uses 1x1 convs for the FFN linears
            out[pre + sub] = v
    return out, ["converted from mmseg MixVisionTransformer naming"]


def guess_variant(state: dict[str, torch.Tensor]) -> str | None:
    """Name the SegFormer variant of an lrbench-named state dict (for the error when it does not fit)."""
    try:
        dims = tuple(state[f"backbone.patch_embed{i}.proj.weight"].shape[0] for i in (1, 2, 3, 4))
    except KeyError:
        return None
    depths = tuple(len({k.split(".")[2] for k in state if k.startswith(f"backbone.block{i}.")}) for i in (1, 2, 3, 4))
    mmseg = any(k.startswith("decode_head.convs.") for k in state)
    for name, cfg in CONFIGS.items():
        if cfg.embed_dims == dims and cfg.depths == depths and cfg.mmseg_head == mmseg:
            head = " (mmseg's SegformerHead)" if mmseg else ""
            return f"{name}{head}"
    return None


CONVERTERS = (convert_from_transformers, convert_from_official, convert_from_mmseg)

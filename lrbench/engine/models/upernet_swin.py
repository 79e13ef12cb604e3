"""Swin Transformer + UperNet (the Swin paper's ADE20K setup), in plain PyTorch.

Equal to transformers' ``UperNetForSemanticSegmentation`` with a Swin backbone (``openmmlab/upernet-swin-*``) and to
mmseg's ``upernet_swin`` configs: every block pads its input to a multiple of the window size after ``norm1`` (as
mmseg and transformers do, so any input size works), shifted windows use the usual -100 region mask, patch merging pads
odd sizes, each stage output gets its own LayerNorm, and the UperNet head (PPM on stage 4 with pool scales 1/2/3/6,
FPN with 512 channels, ConvModule = conv without bias + BN + ReLU) returns logits at 1/4 resolution.

The training-only auxiliary FCN head is not part of the model; its parameter count is reported separately by
:func:`auxiliary_head_params`. Unlike transformers, windows are never shrunk for stage maps smaller than the window
(mmseg behaviour); that only matters for inputs under ~224 pixels.

State-dict naming follows the original Swin / mmseg decode head (``backbone.layers.0.blocks.0.attn.qkv.weight``,
``decode_head.fpn_bottleneck.bn.running_var``); converters for transformers and mmseg checkpoints are at the end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

from .base import ConvModule, Segmentor, map_to_tokens, tokens_to_map


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, w * w, C)."""
    B, H, W, C = x.shape
    return x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)


def window_reverse(windows: torch.Tensor, w: int, H: int, W: int) -> torch.Tensor:
    """(B * nW, w * w, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, H, W, C)


def shifted_window_mask(Hp: int, Wp: int, w: int, s: int, device=None) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask: -100 between tokens from different regions of the cyclically shifted map."""
    img = torch.zeros(1, Hp, Wp, 1, device=device)
    cnt = 0
    for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
        for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = window_partition(img, w).squeeze(-1)  # (nW, w*w)
    diff = win[:, None, :] - win[:, :, None]
    return diff.masked_fill(diff != 0, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside w x w windows with a learned relative position bias."""

    def __init__(self, dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = w = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)  # (2, w*w)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * w - 1) + rel[..., 1], persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        Bw, N, C = x.shape  # Bw = B * nW
        qkv = self.qkv(x).reshape(Bw, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, -1).permute(2, 0, 1)  # (heads, N, N)
        if mask is None:
            attn_mask = bias.unsqueeze(0)
        else:  # (nW, heads, N, N) repeated over the batch
            nW = mask.shape[0]
            attn_mask = (bias.unsqueeze(0) + mask.unsqueeze(1)).repeat(Bw // nW, 1, 1, 1)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask.to(qkv.dtype))
        return self.proj(out.transpose(1, 2).reshape(Bw, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, window_size: int, shift: bool, drop_path: float = 0.0, mlp_ratio: float = 4.0
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, L, C = x.shape
        w, s = self.window_size, self.shift_size
        h = self.norm1(x).view(B, H, W, C)
        pad_b, pad_r = (w - H % w) % w, (w - W % w) % w
        h = F.pad(h, (0, 0, 0, pad_r, 0, pad_b))  # zeros after the norm, right/bottom
        Hp, Wp = H + pad_b, W + pad_r
        mask = None
        if s > 0:
            h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))
            mask = shifted_window_mask(Hp, Wp, w, s, device=x.device)
        h = window_reverse(self.attn(window_partition(h, w), mask), w, Hp, Wp)
        if s > 0:
            h = torch.roll(h, shifts=(s, s), dims=(1, 2))
        h = h[:, :H, :W, :].reshape(B, L, C)
        x = x + self.drop_path(h)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> channels (order x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]), LN, Linear."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, H: int, W: int) -> tuple[torch.Tensor, int, int]:
        B, L, C = x.shape
        x = F.pad(x.view(B, H, W, C), (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        H, W = int(x.shape[1]), int(x.shape[2])
        return self.reduction(self.norm(x.reshape(B, H * W, 4 * C))), H, W


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, dpr: list[float], downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, shift=j % 2 == 1, drop_path=dpr[j]) for j in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        p = self.patch_size
        H, W = int(x.shape[-2]), int(x.shape[-1])
        x = self.proj(F.pad(x, (0, (p - W % p) % p, 0, (p - H % p) % p)))
        H, W = int(x.shape[-2]), int(x.shape[-1])
        return self.norm(map_to_tokens(x)), H, W


class SwinTransformer(nn.Module):
    """Swin backbone returning the four normalised stage maps (strides 4/8/16/32) as NCHW."""

    def __init__(
        self, embed_dim: int, depths, num_heads, window_size: int = 7, drop_path_rate: float = 0.3, in_chans: int = 3
    ):
        super().__init__()
        self.embed_dims = [embed_dim * 2**i for i in range(4)]
        self.depths = list(depths)
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList(
            SwinStage(
                self.embed_dims[i],
                depths[i],
                num_heads[i],
                window_size,
                dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                downsample=i < 3,
            )
            for i in range(4)
        )
        for i, C in enumerate(self.embed_dims):
            setattr(self, f"norm{i}", nn.LayerNorm(C))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x, H, W = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.layers):
            for blk in stage.blocks:
                x = blk(x, H, W)
            outs.append(tokens_to_map(getattr(self, f"norm{i}")(x), H, W))
            if stage.downsample is not None:
                x, H, W = stage.downsample(x, H, W)
        return outs


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UPerHead(nn.Module):
    """UperNet: pyramid pooling on the last stage + FPN over all stages, fused at 1/4."""

    def __init__(
        self,
        in_channels: list[int],
        channels: int,
        num_classes: int,
        pool_scales=(1, 2, 3, 6),
        dropout_ratio: float = 0.1,
    ):
        super().__init__()
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels[-1], channels)) for s in pool_scales
        )
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout_ratio)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        top = feats[-1]
        psp = [top] + [_up(m(top), top.shape[2:]) for m in self.psp_modules]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)] + [self.bottleneck(torch.cat(psp, 1))]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _up(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        outs = [outs[0]] + [_up(o, outs[0].shape[2:]) for o in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, 1))))


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    window_size: int  # 7 for the ImageNet-1K models; 12 for the IN-22K B/L checkpoints on the hub


CONFIGS: dict[str, SwinConfig] = {
    "upernet-swin-t": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "upernet-swin-s": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "upernet-swin-b": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "upernet-swin-b-w7": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), 7),  # mmseg's Swin-B (224 pretraining)
    "upernet-swin-l": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}
HEAD_CHANNELS, AUX_CHANNELS = 512, 256


def build(name: str, num_classes: int = 150) -> Segmentor:
    cfg = CONFIGS[name]
    backbone = SwinTransformer(cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.window_size)
    head = UPerHead(backbone.embed_dims, HEAD_CHANNELS, num_classes)
    # NCHW maps: the cost is the UperNet head's dense 3x3 convolutions over 512 channels, which oneDNN runs faster in
    # NCHW than channels-last (measured: benchmarks/baselines_forward.py); Swin's own blocks work on tokens anyway.
    return Segmentor(name, backbone, head, num_classes=num_classes, output_stride=4, channels_last=False)


def auxiliary_head_params(name: str, num_classes: int = 150) -> int:
    """Parameters of the training-only FCN auxiliary head (3x3 ConvModule on stage 3 to 256 ch, 1x1 classifier)."""
    c3 = CONFIGS[name].embed_dim * 4
    return (c3 * AUX_CHANNELS * 9) + 2 * AUX_CHANNELS + (AUX_CHANNELS * num_classes + num_classes)


# ----------------------------------------------------------------------------------------------------------------
# Converters
# ----------------------------------------------------------------------------------------------------------------
def _drop_aux(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    aux = [k for k in state if k.startswith("auxiliary_head.")]
    notes = [f"dropped {len(aux)} auxiliary_head keys (training-only FCN head)"] if aux else []
    return {k: v for k, v in state.items() if not k.startswith("auxiliary_head.")}, notes


_HEAD_RENAMES = [(r"\.batch_norm\.", ".bn."), (r"^decode_head\.classifier\.", "decode_head.conv_seg.")]


def convert_from_transformers(state: dict[str, torch.Tensor]):
    """transformers UperNet+Swin (4.x hub ``backbone.encoder...`` or 5.x ``backbone.swin.encoder...``) -> lrbench."""
    if not any(k.startswith(("backbone.swin.", "backbone.embeddings.", "backbone.encoder.")) for k in state):
        return None
    state, notes = _drop_aux(state)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        k = k.replace("backbone.swin.", "backbone.")
        if k.startswith("backbone.layernorm.") or k.endswith("relative_position_index"):
            continue  # the classifier's final norm (unused by the backbone) and a recomputed buffer
        k = k.replace("backbone.embeddings.patch_embeddings.projection.", "backbone.patch_embed.proj.")
        k = k.replace("backbone.embeddings.norm.", "backbone.patch_embed.norm.")
        k = re.sub(r"^backbone\.hidden_states_norms\.stage(\d)\.", lambda m: f"backbone.norm{int(m.group(1)) - 1}.", k)
        k = k.replace("backbone.encoder.layers.", "backbone.layers.")
        for a, b in (
            ("layernorm_before.", "norm1."),
            ("layernorm_after.", "norm2."),
            ("attention.relative_position_bias.relative_position_bias_table", "attn.relative_position_bias_table"),
            ("attention.self.relative_position_bias_table", "attn.relative_position_bias_table"),
            ("attention.output.dense.", "attn.proj."),
            ("attention.o_proj.", "attn.proj."),
            ("intermediate.dense.", "mlp.fc1."),
            ("output.dense.", "mlp.fc2."),
        ):
            k = k.replace(a, b)
        m = re.match(r"^(.*)\.attention\.(?:self\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$", k)
        if m:
            part = {"query": "q", "key": "k", "value": "v"}.get(m.group(2), m.group(2)[0])
            qkv.setdefault(f"{m.group(1)}.attn.qkv.{m.group(3)}", {})[part] = v
            continue
        for pat, rep in _HEAD_RENAMES:
            k = re.sub(pat, rep, k)
        out[k] = v
    for k, parts in qkv.items():
        out[k] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out, notes


def convert_from_mmseg(state: dict[str, torch.Tensor]):
    """mmseg ``upernet_swin`` checkpoints -> lrbench (undoing mmseg's Unfold channel order in patch merging)."""
    if not any(k.startswith("backbone.stages.") for k in state):
        return None
    state, notes = _drop_aux(state)
    out = {}
    for k, v in state.items():
        if k.endswith("relative_position_index"):
            continue
        if not k.startswith("backbone."):  # head keys keep their names (a Mask2Former head has ffn.layers too)
            out[k] = v
            continue
        k = k.replace("backbone.patch_embed.projection.", "backbone.patch_embed.proj.")
        k = k.replace("backbone.stages.", "backbone.layers.").replace(".attn.w_msa.", ".attn.")
        k = k.replace(".ffn.layers.0.0.", ".mlp.fc1.").replace(".ffn.layers.1.", ".mlp.fc2.")
        if ".downsample." in k:
            v = _unfold_to_swin_order(v)
        out[k] = v
    return out, notes


def _unfold_to_swin_order(v: torch.Tensor) -> torch.Tensor:
    """mmseg's nn.Unfold orders merged channels c*4 + (kh*2 + kw); Swin orders (kh, kw) blocks (0,0),(1,0),(0,1),(1,1)."""
    if v.dim() == 1:  # norm weight/bias over 4C
        return v.reshape(-1, 4)[:, [0, 2, 1, 3]].transpose(0, 1).reshape(-1)
    out_ch, in_ch = v.shape  # reduction weight (2C, 4C)
    return v.reshape(out_ch, in_ch // 4, 4)[:, :, [0, 2, 1, 3]].transpose(1, 2).reshape(out_ch, in_ch)


def guess_variant(state: dict[str, torch.Tensor]) -> str | None:
    """Name the UperNet-Swin variant of an lrbench-named state dict (for the error when it does not fit)."""
    w = state.get("backbone.patch_embed.proj.weight")
    if "decode_head.cls_embed.weight" in state:
        return None  # a Mask2Former head (mask2former_swin.guess_variant)
    if w is None or "backbone.layers.0.blocks.0.attn.relative_position_bias_table" not in state:
        return None
    depths = tuple(
        len({k.split(".")[4] for k in state if k.startswith(f"backbone.layers.{i}.blocks.")}) for i in range(4)
    )
    window = round((state["backbone.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0] ** 0.5 + 1) / 2)
    for name, cfg in CONFIGS.items():
        if (cfg.embed_dim, cfg.depths, cfg.window_size) == (w.shape[0], depths, window):
            return name
    return f"a Swin with embed_dim {w.shape[0]}, depths {list(depths)} and window {window}"


CONVERTERS = (convert_from_transformers, convert_from_mmseg)

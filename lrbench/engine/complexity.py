"""Parameter and FLOP counting in the convention the papers use (``lrbench flops``).

Counting is fvcore's ``FlopCountAnalysis`` (the same jit-trace analyser that mmengine's
``get_model_complexity_info`` ports, which LRFormer's own tools call), with these decisions:

- One fused multiply-add = one FLOP (fvcore's convention; the papers' "GFLOPs" are GMACs).
- Backbone + decode head on a (1, 3, H, W) input; no final upsampling to the image size (the models here return
  head logits, so it is simply not part of the trace), no auxiliary head.
- ``aten::scaled_dot_product_attention`` (not known to fvcore): the two matmuls, ``B*h*Nq*Nk*d + B*h*Nq*Nk*d_v``.
  This is exactly what fvcore counts for the official implementations, which write ``(q @ k^T) * scale``,
  ``softmax`` and ``attn @ v`` explicitly (matmul counted; scaling, masking and softmax ignored).
- ``adaptive_avg_pool2d`` (1 per input element), ``upsample_bilinear2d`` (4 per output element), ``layer_norm`` /
  ``group_norm`` (5 per element with affine), ``batch_norm`` in eval (2 per element with affine): fvcore's default
  handles, kept because the published counts (mmengine/fvcore) include them.
- Mask2Former (LRFormer+ and the Swin / ResNet baselines): each value the deformable attention samples counts 5: 4 for the bilinear
  taps of ``grid_sample`` (as bilinear upsampling; fvcore has no handle for it) and 1 for its attention weight in the
  weighted sum; the masked cross-attention is SDPA (handled above). Each family is compared in the convention of its
  published figures: the LRFormer+ README's (mmseg ``get_flops``: the tensor-mode forward, which ends at the head's
  query outputs) counts backbone + head only; the Mask2Former paper's (detectron2 ``analyze_model``: the whole
  inference) also counts the semantic combination (mask upsampling to the input and the class x mask einsum, about
  4 GFLOPs at 512x512). ``gflops_full`` is always the whole forward, image to per-class scores, for comparisons
  across families. Measured against the published figures: Mask2Former-Swin T/S/B/L within 1%; LRFormer+ T+/S+/B+/L+
  within 3%; XL+ 13% below the README's 365 G (our 317 G: a 248 G backbone at 640x640 and the same 68 G head that
  makes L+ match within 1%, so the gap is not the head; how the README counted XL+ is unknown -- the authors'
  ``get_flops_ori.py`` says Mask2Former is unsupported, their ``get_flops.py`` averages over real images).
- GELU / ReLU / element-wise adds and multiplies: not counted, as in fvcore/mmengine (they are not multiply-adds).
  Any op that is neither counted nor deliberately ignored is reported in ``unsupported_ops`` instead of silently
  dropped, and the ignored ones are listed too (``skipped_ops``: calls, elements written and, for the arithmetic
  ones, an estimated share of the total at one FLOP per element), so a figure says what it leaves out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ..errors import UsageError
from ..settings import check_shape
from ..zoo import resolve
from .models import check_input_shape, create_model

aten = torch.ops.aten


def _numel(shape) -> int:
    return math.prod(shape)


# fvcore's counts for the memory-bound ops torch's counter skips; FlopCounterMode counts 2 FLOPs per multiply-add,
# so these are given as 2 x fvcore's number and every total is halved.
FVCORE_EXTRAS = {
    aten._adaptive_avg_pool2d: lambda x, *a, out_shape=None, **k: 2 * _numel(x),
    aten.mean: lambda x, *a, out_shape=None, **k: 2 * _numel(x),  # adaptive_avg_pool2d to 1x1 arrives as a mean
    aten.upsample_bilinear2d: lambda x, *a, out_shape=None, **k: 2 * 4 * _numel(out_shape),
    aten.native_layer_norm: lambda x, *a, out_shape=None, **k: 2 * 5 * _numel(x),
    aten.native_group_norm: lambda x, *a, out_shape=None, **k: 2 * 5 * _numel(x),
    aten._native_batch_norm_legit_no_training: lambda x, *a, out_shape=None, **k: 2 * 2 * _numel(x),
    # the CPU flash kernel SDPA dispatches to on real tensors (e.g. with a mask), which torch's counter lacks: the
    # same two matmuls as every other SDPA kernel
    aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, out_shape=None, **kw: (
        2 * math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])
    ),
    # deformable attention: 4 per sampled value for the bilinear taps (as bilinear upsampling) + 1 for its attention
    # weight (the weighted sum that follows is a mul and a sum, which the convention does not see on their own)
    aten.grid_sampler_2d: lambda x, *a, out_shape=None, **k: 2 * 5 * _numel(out_shape),
}
# Not counted by the convention: activations, element-wise arithmetic, reductions to build masks, memory and shape ops.
FREE_OPS = frozenset(
    "view _unsafe_view reshape permute transpose t expand clone contiguous cat stack split split_with_sizes slice "
    "select unsqueeze squeeze flatten unflatten as_strided as_strided_ detach alias add sub mul div rsub neg gelu relu relu_ "
    "silu sigmoid tanh _softmax softmax _safe_softmax _to_copy copy_ zeros zero_ fill_ empty empty_like new_zeros "
    "new_empty new_ones ones ones_like zeros_like full full_like lift_fresh constant_pad_nd pad index index_select "
    "arange masked_fill masked_fill_ ne eq lt gt ge le where roll repeat _reshape_alias max_pool2d_with_indices "
    "native_dropout dropout scalar_tensor add_ mul_ div_ sub_ clamp clamp_min pow sin cos all any bitwise_not "
    "bitwise_and logical_not logical_and sum".split()
)
# Composite names under which counted ops can reach the op recorder before their decomposition.
COUNTED_ALIASES = frozenset("native_batch_norm _native_batch_norm_legit batch_norm layer_norm group_norm".split())
OP_NAMES = {
    "convolution": "conv",
    "addmm": "linear",
    "mm": "linear",
    "bmm": "matmul (attention)",
    "native_layer_norm": "layer_norm",
    "native_group_norm": "group_norm",
    "_native_batch_norm_legit_no_training": "batch_norm",
    "_adaptive_avg_pool2d": "adaptive_avg_pool2d",
    "upsample_bilinear2d": "upsample_bilinear2d",
    "mean": "adaptive_avg_pool2d",
    "grid_sampler_2d": "grid_sample (deformable attention)",
}


def _opname(op) -> str:
    return str(op).split(".", 1)[-1]  # aten.convolution -> convolution


# The skipped ops that do arithmetic: their share of the work is estimated at one FLOP per output element (softmax and
# GELU cost a few more, a mask comparison less); shape and memory ops do no arithmetic and get no share.
ARITHMETIC_OPS = frozenset(
    "add sub mul div rsub neg gelu relu relu_ silu sigmoid tanh _softmax softmax _safe_softmax masked_fill masked_fill_ "
    "where pow sin cos clamp clamp_min sum add_ mul_ div_ sub_ max_pool2d_with_indices".split()
)
UNIT = "GFLOPs: 10^9 multiply-adds (fvcore's convention, 1 fused multiply-add = 1 FLOP)"


class _OpRecorder(TorchDispatchMode):
    """Counts every aten op a forward calls and the elements each writes (to name, and size, the ones the
    convention skips)."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()
        self.elements: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls[func.overloadpacket] += 1
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        if isinstance(first, torch.Tensor):
            self.elements[func.overloadpacket] += first.numel()
        return out


def count_macs(fn: Callable[[], object]) -> dict:
    """Multiply-adds of ``fn()`` in the convention above: ``{total, by_module, by_operator, unsupported_ops}``
    (``by_module`` by fully qualified module name, e.g. ``Segmentor.backbone``)."""
    with FlopCounterMode(display=False, custom_mapping=FVCORE_EXTRAS) as fc, _OpRecorder() as rec, torch.no_grad():
        fn()
    counts = fc.get_flop_counts()
    counted = set(flop_registry) | set(FVCORE_EXTRAS)
    by_op: dict[str, float] = {}
    for op, flops in counts.get("Global", {}).items():
        name = OP_NAMES.get(_opname(op), "attention" if "attention" in _opname(op) else _opname(op))
        by_op[name] = by_op.get(name, 0) + flops / 2
    unsupported = {
        f"aten::{_opname(op)}": n
        for op, n in rec.calls.items()
        if op not in counted and _opname(op) not in FREE_OPS | COUNTED_ALIASES
    }
    total = fc.get_total_flops() / 2
    skipped = {}
    for op, n in sorted(rec.calls.items(), key=lambda kv: -rec.elements[kv[0]]):
        name = _opname(op)
        if op in counted or name not in FREE_OPS:
            continue
        arithmetic = name in ARITHMETIC_OPS
        skipped[f"aten::{name}"] = {
            "calls": n,
            "elements": rec.elements[op],
            "share": rec.elements[op] / total if arithmetic and total else None,  # vs the counted total
        }
    return {
        "total": total,
        "by_module": {k: sum(v.values()) / 2 for k, v in counts.items()},
        "by_operator": by_op,
        "unsupported_ops": unsupported,
        "skipped_ops": skipped,
    }


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(
    model: nn.Module | str,
    shape: tuple[int, int] | None = None,
    num_classes: int | None = None,
    dataset: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Parameters and GFLOPs of a model, or of an architecture / zoo entry by name, for one (1, 3, H, W) input.

    For a name, ``shape`` and ``num_classes`` default to its recipe's FLOPs shape and its dataset's classes
    (``dataset`` default: the entry's, else ADE20K). Returns ``{model, shape, num_classes, params,
    params_backbone, params_head, gflops, gflops_backbone, gflops_head, by_operator (GFLOPs), unsupported_ops
    (op -> count), skipped_ops (op -> calls, elements written, estimated share of the counted total, for the ops
    the convention does not count), skipped_share (their sum: an estimate, one FLOP per element), unit}``.
    """

    def step(i: int, what: str) -> None:
        if progress:
            progress(i, 3, what)

    if num_classes is not None and num_classes < 1:
        raise UsageError(f"--num-classes must be >= 1, got {num_classes}")
    if isinstance(model, str):
        r = resolve(model, dataset)
        name, shape = r.arch, shape or tuple(r.recipe["flops_shape"])
        num_classes = num_classes if num_classes is not None else r.num_classes
        on_meta = True
    else:
        on_meta = False
        name = getattr(model, "name", type(model).__name__)
        if shape is None:
            raise UsageError("count_flops needs a shape for a model object")
    shape = check_shape(shape, name)
    step(1, f"counting {name} at {shape[0]}x{shape[1]}")
    if on_meta:
        with torch.device("meta"):
            model = create_model(name, num_classes=num_classes)
    model = model.eval()
    check_input_shape(model, shape)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(1, 3, *shape, device=device)
    res = count_macs(lambda: model(x))
    step(3, "counted")
    root = type(model).__name__
    parts = {n: m for n, m in model.named_children() if n in ("backbone", "decode_head")}
    full = res["total"]
    backbone = res["by_module"].get(f"{root}.backbone", full)  # a bare backbone (lrformer-xl): all of it
    head = res["by_module"].get(f"{root}.decode_head", 0)
    total = backbone + head if getattr(model, "flops_convention", "scores") == "queries" else full
    return {
        "model": name,
        "shape": list(shape),
        "num_classes": getattr(model, "num_classes", num_classes),
        "params": param_count(model),
        "params_backbone": param_count(parts["backbone"]) if "backbone" in parts else param_count(model),
        "params_head": param_count(parts["decode_head"]) if "decode_head" in parts else 0,
        "gflops": total / 1e9,
        "gflops_full": full / 1e9,
        "gflops_backbone": backbone / 1e9,
        "gflops_head": head / 1e9,
        "by_operator": {k: v / 1e9 for k, v in sorted(res["by_operator"].items(), key=lambda kv: -kv[1])},
        "unsupported_ops": res["unsupported_ops"],
        "skipped_ops": res["skipped_ops"],
        "skipped_share": sum(v["share"] or 0 for v in res["skipped_ops"].values()),
        "unit": UNIT,
    }

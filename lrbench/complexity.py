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
- GELU / ReLU / element-wise adds and multiplies: not counted, as in fvcore/mmengine (they are not multiply-adds).
  Any op that is neither counted nor deliberately ignored is reported in ``unsupported_ops`` instead of silently
  dropped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from .errors import UsageError
from .models import create_model
from .zoo import resolve

# Ops deliberately not counted (convention above): activations and element-wise arithmetic.
IGNORED_OPS = (
    "aten::gelu",
    "aten::dropout",
    "aten::feature_dropout",
    "aten::softmax",
    "aten::add",
    "aten::add_",
    "aten::mul",
    "aten::mul_",
    "aten::sub",
    "aten::div",
    "aten::fill_",
    "aten::zeros",
    "aten::zeros_like",
    "aten::pad",
    "aten::repeat",
    "aten::unflatten",
    "aten::masked_fill_",
    "aten::ne",
)


def _shape(v: Any) -> list[int] | None:
    t = v.type()
    return list(t.sizes()) if hasattr(t, "sizes") and t.sizes() is not None else None


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """FLOPs of ``scaled_dot_product_attention``: ``q @ k^T`` plus ``attn @ v`` (multiply-adds)."""
    q, k, v = (_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    Nq, d, Nk, dv = q[-2], q[-1], k[-2], v[-1]
    return batch * Nq * Nk * d + batch * Nq * Nk * dv


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flop_analysis(model: nn.Module, inputs: torch.Tensor):
    """A configured fvcore FlopCountAnalysis (handles and ignores as documented in the module docstring)."""
    from fvcore.nn import FlopCountAnalysis

    fca = FlopCountAnalysis(model, inputs)
    fca.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
    fca.set_op_handle(**{op: None for op in IGNORED_OPS})
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    return fca


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
    (op -> count)}``.
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
        step(0, f"building {name}")
        model = create_model(name, num_classes=num_classes)
    else:
        name = getattr(model, "name", type(model).__name__)
        if shape is None:
            raise UsageError("count_flops needs a shape for a model object")
    shape = tuple(shape)
    if len(shape) != 2 or min(shape) < 32:
        raise UsageError(f"--shape must be two sizes H W of at least 32 pixels, got {list(shape)}")
    step(1, f"tracing {name} at {shape[0]}x{shape[1]}")
    model = model.eval()
    x = torch.zeros(1, 3, *shape)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # jit tracer chatter
        fca = flop_analysis(model, x)
        total = fca.total()
        by_module = fca.by_module()
        by_op = fca.by_operator()
        unsupported = dict(fca.unsupported_ops())
    step(3, "counted")
    parts = {n: m for n, m in model.named_children() if n in ("backbone", "decode_head")}
    return {
        "model": name,
        "shape": list(shape),
        "num_classes": getattr(model, "num_classes", num_classes),
        "params": param_count(model),
        "params_backbone": param_count(parts["backbone"]) if "backbone" in parts else param_count(model),
        "params_head": param_count(parts["decode_head"]) if "decode_head" in parts else 0,
        "gflops": total / 1e9,
        "gflops_backbone": by_module.get("backbone", total) / 1e9,
        "gflops_head": by_module.get("decode_head", 0) / 1e9,
        "by_operator": {k: v / 1e9 for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "unsupported_ops": unsupported,
    }

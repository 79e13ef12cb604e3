"""lrbench vs transformers forward time on the same (random) weights, measured in one run.

    python benchmarks/baselines_forward.py [--size 512 512] [--iters 10] [--device cpu|cuda] [--json]

Prints median latency for each implementation and the ratio transformers / lrbench (> 1: lrbench is faster).
transformers is a test dependency; weights are random (no download), converted with lrbench's own converters.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch


def _pairs():
    import transformers

    from lrbench.engine.models.segformer import CONFIGS as SF
    from lrbench.engine.models.upernet_swin import CONFIGS as SW

    for name in ("segformer-b0", "segformer-b2"):
        c = SF[name]
        cfg = transformers.SegformerConfig(
            hidden_sizes=list(c.embed_dims), depths=list(c.depths), decoder_hidden_size=c.decoder_dim, num_labels=150
        )
        hf = transformers.SegformerForSemanticSegmentation(cfg).eval()
        yield name, hf, lambda m, x: m(pixel_values=x).logits
    c = SW["upernet-swin-t"]
    bc = transformers.SwinConfig(
        embed_dim=c.embed_dim,
        depths=list(c.depths),
        num_heads=list(c.num_heads),
        window_size=c.window_size,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    hf = transformers.UperNetForSemanticSegmentation(transformers.UperNetConfig(backbone_config=bc, num_labels=150))
    yield "upernet-swin-t", hf.eval(), lambda m, x: m.decode_head(m.backbone(x).feature_maps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs=2, default=(512, 512))
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from lrbench.engine.models import convert_weights, create_model, model_family
    from lrbench.engine.speed import time_forward

    x = torch.randn(1, 3, *args.size, device=args.device)
    rows = []
    for name, hf, hf_fwd in _pairs():
        ours = create_model(name)
        state, _ = convert_weights(hf.state_dict(), model_family(name))
        ours.load_state_dict({k: v for k, v in state.items() if not k.startswith("auxiliary_head.")})
        hf, ours = hf.to(args.device), ours.to(args.device)
        time_forward(lambda: (hf_fwd(hf, x), ours(x)), args.device, args.warmup, 1)  # warm both up
        times = {"hf": [], "ours": []}
        for _ in range(args.iters):  # interleaved, so both see the same machine state
            times["hf"] += time_forward(lambda: hf_fwd(hf, x), args.device, 0, 1)["times_ms"]
            times["ours"] += time_forward(lambda: ours(x), args.device, 0, 1)["times_ms"]
        t_hf, t_ours = statistics.median(times["hf"]), statistics.median(times["ours"])
        rows.append({"model": name, "transformers_ms": t_hf, "lrbench_ms": t_ours, "speedup": t_hf / t_ours})
    meta = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "size": list(args.size),
        "iters": args.iters,
    }
    if args.json:
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
        return
    print(f"device {meta['device']} ({meta['threads']} threads), torch {meta['torch']}, input {args.size}")
    for r in rows:
        print(
            f"{r['model']:16s} transformers {r['transformers_ms']:8.1f} ms   lrbench {r['lrbench_ms']:8.1f} ms   "
            f"ratio {r['speedup']:.2f}x"
        )


if __name__ == "__main__":
    main()

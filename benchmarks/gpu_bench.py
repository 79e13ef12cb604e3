"""The steps of benchmarks/gpu.sh that need Python: speed at the paper input sizes (batch 1 and the largest batch
that fits in a memory budget, fp32 / bf16 / fp16, channels-last), and an eval on the device checked against the CPU.

    python benchmarks/gpu_bench.py speed --device cuda --out results
    python benchmarks/gpu_bench.py eval-check --device cuda --work /tmp/w
Needs only torch and lrbench's own dependencies minus fvcore; writes ``results/speed/*.json`` for ``lrbench report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lrbench.engine.speed import measure_speed  # noqa: E402
from lrbench.results import write_result  # noqa: E402

# (model, classes, paper input sizes): ADE20K models at 512 (L and B5 at 640), and the Cityscapes input for the
# latency-vs-resolution curve of the two families' small models.
MODELS = [
    ("lrformer-t", 150, [(512, 512), (1024, 1024), (1024, 2048)]),
    ("lrformer-s", 150, [(512, 512), (1024, 1024), (1024, 2048)]),
    ("lrformer-b", 150, [(512, 512)]),
    ("lrformer-l", 150, [(640, 640)]),
    ("segformer-b0", 150, [(512, 512), (1024, 1024), (1024, 2048)]),
    ("segformer-b2", 150, [(512, 512), (1024, 1024), (1024, 2048)]),
    ("segformer-b5", 150, [(640, 640)]),
    ("lrformer-s-plus", 150, [(512, 512)]),
    ("mask2former-swin-t", 150, [(512, 512)]),
    ("upernet-swin-t", 150, [(512, 512)]),
]
TINY = [
    ("lrformer-t", 150, [(64, 64), (64, 128)]),
    ("segformer-b0", 150, [(64, 64)]),
    ("lrformer-t-plus", 150, [(64, 64)]),
]


def largest_batch(name: str, shape, k: int, dtype: str, device: str, budget_mb: float, cap: int) -> dict | None:
    """Double the batch while the forward fits in ``budget_mb`` (peak allocated memory; CPU: up to ``cap``);
    returns the speed result of the largest batch that fits, or None when only batch 1 does."""
    best = None
    batch = 2
    while batch <= cap:
        try:
            res = measure_speed(name, shape, batch, dtype, True, False, device, warmup=1, iters=3, num_classes=k)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        if res["peak_mem_mb"] is not None and res["peak_mem_mb"] > budget_mb:
            break
        best, batch = res, batch * 2
    return best


def speed(args) -> None:
    out = Path(args.out) / "speed"
    dtypes = ["fp32", "bf16", "fp16"] if args.device.startswith("cuda") else ["fp32", "bf16"]
    for name, k, shapes in TINY if args.tiny else MODELS:
        for shape in shapes:
            for dtype in dtypes:
                tag = f"{name}_{shape[0]}x{shape[1]}_{dtype}_cl_{args.device}"
                res = measure_speed(
                    name, shape, 1, dtype, True, False, args.device, args.warmup, args.iters, num_classes=k
                )
                write_result(out / f"{tag}_b1.json", "speed", **res)
                print(f"{tag} b1: {res['median_ms']:.2f} ms", flush=True)
                if shape == shapes[0]:  # the batch search at the paper input size only
                    big = largest_batch(name, shape, k, dtype, args.device, args.budget_gb * 1024, args.max_batch)
                    if big is not None:
                        write_result(out / f"{tag}_bmax.json", "speed", **big)
                        print(f"{tag} b{big['batch_size']}: {big['images_per_s']:.1f} images/s", flush=True)


def eval_check(args) -> None:
    """A synthetic ADE20K eval on ``--device`` and on the CPU: the mIoU must agree to 0.01."""
    from conftest import _mmengine_bytes, _randomize

    from lrbench.engine.evaluate import evaluate
    from lrbench.engine.models import create_model
    from lrbench.settings import EvalSettings

    from synth import write_dataset

    work = Path(args.work)
    write_dataset(work / "data", "ade20k", n=2, sizes=((96, 128), (128, 96)))
    (work / "t.pth").write_bytes(_mmengine_bytes(_randomize(create_model("lrformer-t"), seed=1)))
    res = {}
    for device in ("cpu", args.device):
        res[device] = evaluate(
            EvalSettings(
                "lrformer-t",
                dataset="ade20k",
                data_root=work / "data",
                checkpoint=str(work / "t.pth"),
                workers=0,
                device=device,
            )
        )["mIoU"]
    diff = abs(res["cpu"] - res[args.device])
    print(json.dumps({"mIoU": res, "abs_diff": diff}))
    if diff > 0.01:
        sys.exit(f"eval on {args.device} differs from the CPU by {diff:.4f} mIoU")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--device", default="cuda")
    s.add_argument("--out", default="results")
    s.add_argument("--tiny", action="store_true", help="Two small models at 64 pixels (a CPU smoke run).")
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--iters", type=int, default=20)
    s.add_argument("--budget-gb", type=float, default=16.0)
    s.add_argument("--max-batch", type=int, default=64)
    e = sub.add_parser("eval-check")
    e.add_argument("--device", default="cuda")
    e.add_argument("--work", required=True)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = False
    speed(args) if args.step == "speed" else eval_check(args)


if __name__ == "__main__":
    main()

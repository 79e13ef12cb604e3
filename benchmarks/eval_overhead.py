"""Share of `lrbench eval` wall time spent outside the model forward (decode, resize, metric), on a synthetic set.

    python benchmarks/eval_overhead.py [--model lrformer-t] [--images 24] [--workers 0 2] [--device cpu|cuda]

Writes a synthetic ADE20K-layout set (random JPEGs, 512x683 like typical ADE images) and random LRFormer weights
into a temporary folder, runs the evaluator once per worker count and prints the outside-model share (target <= 10%
with workers) and images/s. Weights are random: only timing is meaningful.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lrformer-t")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from lrbench.evaluate import evaluate
    from lrbench.models import create_model
    from lrbench.settings import EvalSettings

    from synth import write_dataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp), "ade20k", n=args.images, sizes=((512, 683), (683, 512)), lossless=False)
        ckpt = Path(tmp) / "model.pth"
        torch.save({"state_dict": create_model(args.model).state_dict()}, ckpt)
        for w in args.workers:
            res = evaluate(
                EvalSettings(
                    args.model, dataset="ade20k", data_root=tmp, checkpoint=str(ckpt), workers=w, device=args.device
                )
            )
            t = res["timings"]
            rows.append(
                {
                    "workers": w,
                    "images_per_s": t["images_per_s"],
                    "outside_model_share": t["outside_model_share"],
                    "device": res["device_name"],
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for r in rows:
        print(
            f"{args.model} on {r['device']}, workers {r['workers']}: {r['images_per_s']:.2f} images/s, "
            f"{r['outside_model_share']:.1%} of wall time outside the model forward"
        )


if __name__ == "__main__":
    main()

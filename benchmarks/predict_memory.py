"""Peak memory and time of `lrbench predict` on one phone-sized photo, fast vs reference post-processing, each in
a fresh process (peak resident memory from the OS).

    PYTHONPATH=. python benchmarks/predict_memory.py [--model segformer-b0] [--size 3000 4000]

Target: <= 3 GB for a 12-megapixel photo (4000x3000) with the same label map as the reference path.
Measured on the 2-core CPU machine (segformer-b0, random weights), 4000x3000 JPEG:
- bands of taps (2026-12-01, first): fast 1.07 GB peak, 12.2 s; reference 14.35 GB, 23.3 s;
- windows' survivors (one view; 2026-12-01, second): fast 1.16 GB peak, 1.9 s; reference 14.34 GB, 20.6 s;
label maps equal on 99.99973% of pixels (near-ties) both times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
sys.path.insert(0, "tests")
import lrbench.engine.predictions as P
from lrbench.engine.pipeline import predict_logits
from lrbench.engine.models import create_model
model, photo, out, path = sys.argv[1:5]
if path == "reference":
    def call(self, images):
        x = torch.as_tensor(np.array(images)).to(self.device)
        with torch.inference_mode():
            logits = predict_logits(self.model, x, self.cfg.test, self.cfg.protocol, self.cfg.mode, self.cfg.merge)
        return logits.argmax(1).cpu().numpy()[0]
    P.Predictor.__call__ = call
torch.manual_seed(0)  # the same random weights in both processes
predictor = P.load_predictor(create_model(model).eval(), "ade20k")
t0 = time.perf_counter()
labels = predictor(P.load_image(photo))
np.save(out, labels.astype(np.uint8))
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="segformer-b0")
    ap.add_argument("--size", type=int, nargs=2, default=[3000, 4000], metavar=("H", "W"))
    args = ap.parse_args()
    from PIL import Image

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, size=(args.size[0] // 16, args.size[1] // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize(args.size[::-1], Image.BILINEAR).save(Path(tmp) / "photo.jpg", quality=90)
        for path in ("fast", "reference"):
            out = Path(tmp) / f"{path}.npy"
            r = subprocess.run(
                [sys.executable, "-c", CHILD, args.model, str(Path(tmp) / "photo.jpg"), str(out), path],
                capture_output=True,
                text=True,
            )
            if r.returncode:
                rows[path] = {"error": r.stderr.strip().splitlines()[-1]}
                continue
            rows[path] = json.loads(r.stdout.strip().splitlines()[-1]) | {"labels": np.load(out)}
        if all("labels" in v for v in rows.values()):
            same = float((rows["fast"]["labels"] == rows["reference"]["labels"]).mean())
        else:
            same = None
    mp = args.size[0] * args.size[1] / 1e6
    print(f"{args.model} on a {args.size[1]}x{args.size[0]} photo ({mp:.0f} MP):")
    for path, r in rows.items():
        if "error" in r:
            print(f"  {path:9s} failed: {r['error']}")
        else:
            print(f"  {path:9s} peak {r['peak_gb']:.2f} GB, {r['seconds']:.1f} s")
    if same is not None:
        print(f"  label maps equal on {same:.6%} of pixels")


if __name__ == "__main__":
    main()

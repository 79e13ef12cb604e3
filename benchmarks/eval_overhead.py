"""Where `lrbench eval`'s wall time goes, per stage (decode, preprocess, forward, post-process, metric), with the fast
post-processing and with the straightforward reference path measured in the same run, on a synthetic set.

    PYTHONPATH=. python benchmarks/eval_overhead.py [--models lrformer-t lrformer-t-plus] [--protocols ss ms]
        [--images 8] [--workers 0 2] [--device cpu|cuda] [--json]

Writes a synthetic ADE20K-layout set (random JPEGs, 512x683 / 683x512 like typical ADE images) and random weights into
a temporary folder and runs the evaluator for every model x protocol x workers x path, recording the labels of both
paths to count the pixels where they differ. Weights are random (seeded): only the timing is meaningful; random
weights make noisy predictions, the worst case for the single-view shortcut (few windows with one surviving class).
The reference path is :func:`lrbench.engine.pipeline.predict_logits` + argmax, as lrbench did before; its pre-processing is
counted in its post-process column (its views interleave them).

Measured on the 2-core CPU machine (2 threads, random weights seeded 0, 2026-12-01; per image; "outside" = share of
the wall time outside the model forward). "before" is the fast path as first built (bands of taps, consensus of the
sources), measured on the same kind of machine earlier that day; "now" is this version (one view: windows'
survivors; several: bands of matrix products), measured in one run per row group, reference and fast side by side:

| model | protocol | workers | path | images/s | outside the forward | post-process | labels that differ |
|---|---|---|---|---|---|---|---|
| LRFormer-T | ss | 0 | reference | 0.82 | 42.9% | 504 ms | |
| LRFormer-T | ss | 0 | fast, before | 1.73 | 20.9% | 107 ms | |
| LRFormer-T | ss | 0 | fast, now | 1.56 | **11.0%** | 42 ms | 1 of 2,797,568 px |
| LRFormer-T | ss | 2 | reference | 0.95 | 45.6% | 449 ms | |
| LRFormer-T | ss | 2 | fast, now | 1.70 | **13.6%** | 40 ms | 1 of 2,797,568 px |
| LRFormer-T | ms | 0 | reference | 0.06 | 43.2% | 7576 ms | |
| LRFormer-T | ms | 0 | fast, before | 0.13 | 12.1% | 802 ms | |
| LRFormer-T | ms | 0 | fast, now | 0.09 | **7.4%** | 576 ms | 0 of 1,398,784 px |
| LRFormer-T+ | ss | 0 | reference | 0.36 | 8.3% | 207 ms | |
| LRFormer-T+ | ss | 0 | fast, before | 0.50 | 3.5% | 44 ms | |
| LRFormer-T+ | ss | 0 | fast, now | 0.37 | **5.1%** | 98 ms | 0 of 2,797,568 px |

(8 images, ms 4. This machine's forward times vary by up to 1.5x between runs of the day, so compare shares and
post-process times within a row group, not images/s across groups. The differing pixel is a near-tie: top-2 gap
1.2e-7 of a logit range of 2.7.) LRFormer-T+'s logits come at the input size (Mask2Former upsamples its masks
before the sigmoid, inside the forward), so its post-processing is one argmax over 512x704x150 scores
whichever path: its "before" and "now" rows differ by the day, not the method (both versions timed side by side on
one T+ view: 65-71 ms before, 61-69 ms now, the same labels).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

STAGES = ("decode", "preprocess", "forward", "post-process", "metric")


def reference_labels(model, images, test, protocol="ss", mode="whole", merge=None, stages=None):
    """The straightforward path: every view's logits resized to the input, then to the original, summed, argmax."""
    from lrbench.engine.pipeline import predict_logits

    if stages:
        stages.mark("preprocess")
    labels = predict_logits(model, images, test, protocol, mode, merge).argmax(1)
    if stages:
        stages.mark("post-process")
    return labels


def recording(fn, store: list):
    """``fn``, keeping a CPU copy of each batch of labels it returns in ``store``."""

    def run(*args, **kwargs):
        labels = fn(*args, **kwargs)
        store.append(labels.cpu())
        return labels

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lrformer-t", "lrformer-t-plus"])
    ap.add_argument("--protocols", nargs="+", default=["ss", "ms"])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--workers", type=int, nargs="+", default=[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import lrbench.engine.evaluate as ev
    from lrbench.engine.models import create_model
    from lrbench.settings import EvalSettings

    from synth import write_dataset

    fast = ev.predict_labels
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(Path(tmp), "ade20k", n=args.images, sizes=((512, 683), (683, 512)), lossless=False)
        for model in args.models:
            ckpt = Path(tmp) / f"{model}.pth"
            torch.manual_seed(0)  # the same random weights in every run of the benchmark
            torch.save({"state_dict": create_model(model).state_dict()}, ckpt)
            for protocol in args.protocols:
                for w in args.workers:
                    labels = {"reference": [], "fast": []}
                    for path, fn in (("reference", reference_labels), ("fast", fast)):
                        ev.predict_labels = recording(fn, labels[path])  # the evaluator's, swapped for this run
                        res = ev.evaluate(
                            EvalSettings(
                                model,
                                tmp,
                                "ade20k",
                                checkpoint=str(ckpt),
                                workers=w,
                                device=args.device,
                                protocol=protocol,
                            )
                        )
                        t = res["timings"]
                        st = dict(t["stages_s"])
                        if path == "reference":  # its views interleave pre-processing, forward and resizes
                            st["forward"] = t["model_s"]
                            st["post-process"] = st.get("post-process", 0.0) - t["model_s"]  # (+ pre-processing)
                        rows.append(
                            {
                                "model": model,
                                "protocol": protocol,
                                "workers": w,
                                "path": path,
                                "images_per_s": t["images_per_s"],
                                "outside_model_share": t["outside_model_share"],
                                "stages_s": {k: st.get(k, 0.0) / res["num_images"] for k in STAGES},
                                "device": res["device_name"],
                            }
                        )
                    pairs = list(zip(labels["reference"], labels["fast"]))  # the same images in the same order
                    rows[-1]["pixels"] = sum(a.numel() for a, _ in pairs)
                    rows[-1]["pixels_differ"] = sum(int((a != b).sum()) for a, b in pairs)
    ev.predict_labels = fast
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"per image, {rows[0]['device']}:")
    print("| model | protocol | workers | path | images/s | outside the forward | " + " | ".join(STAGES) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(STAGES))
    for r in rows:
        stages = " | ".join(f"{r['stages_s'][k] * 1000:.0f} ms" for k in STAGES)
        same = "" if r["path"] == "reference" else f" ({r['pixels_differ']} of {r['pixels']} px differ)"
        print(
            f"| {r['model']} | {r['protocol']} | {r['workers']} | {r['path']}{same} | {r['images_per_s']:.2f} | "
            f"{r['outside_model_share']:.1%} | {stages} |"
        )


if __name__ == "__main__":
    main()

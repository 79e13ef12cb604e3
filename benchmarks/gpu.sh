#!/usr/bin/env bash
# The GPU benchmark, in one script. Run from the repository root on a machine with a CUDA GPU and a preinstalled
# PyTorch (nothing is installed; fvcore is not needed):
#     PYTHONPATH=. bash benchmarks/gpu.sh                 # ~8 min on one H100: results/speed/*.json, RESULTS.md
#     PYTHONPATH=. bash benchmarks/gpu.sh --device cpu --tiny --out DIR   # the same steps in seconds (the tests)
# Steps: (1) the tests marked `cuda`; (2) `lrbench speed` for LRFormer T/S/B/L, SegFormer B0/B2/B5,
# UperNet-Swin-T, LRFormer-S+ and Mask2Former-Swin-T at their paper input sizes, batch 1 and the largest batch within 16 GiB, fp32/bf16/fp16,
# channels-last; (3) a synthetic ADE20K eval on the device whose mIoU must equal the CPU's to 0.01; (4) a
# one-process torchrun eval (NCCL on CUDA); (5) where eval's time goes per stage, fast vs reference post-processing
# (benchmarks/eval_overhead.py, written to OUT/eval_overhead.json); (6) `lrbench report` over the results.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
TINY=""
OUT=results
REPORT=RESULTS.md
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --tiny) TINY="--tiny"; shift ;;
    --out) OUT="$2"; REPORT="$2/RESULTS.md"; shift 2 ;;
    *) echo "usage: benchmarks/gpu.sh [--device cuda|cpu] [--tiny] [--out DIR]" >&2; exit 2 ;;
  esac
done
export PYTHONPATH="${PYTHONPATH:-.}"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "== 1. tests marked cuda"
if [ "$DEVICE" = cuda ]; then "$PY" -m pytest -q -m cuda tests -p no:cacheprovider; else echo "skipped (--device $DEVICE)"; fi

echo "== 2. speed"
"$PY" benchmarks/gpu_bench.py speed --device "$DEVICE" --out "$OUT" $TINY $( [ -n "$TINY" ] && echo "--warmup 1 --iters 2 --max-batch 2" )

echo "== 3. eval on $DEVICE = eval on cpu"
"$PY" benchmarks/gpu_bench.py eval-check --device "$DEVICE" --work "$WORK"

echo "== 4. one-process torchrun eval"
"$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m lrbench eval lrformer-t --data-root "$WORK/data" \
  --checkpoint "$WORK/t.pth" --workers 0 --device "$DEVICE" --out "$WORK/torchrun.json" --json > "$WORK/torchrun.out"
"$PY" - "$WORK/torchrun.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
backend = "nccl" if res["device"].startswith("cuda") else "gloo"
assert res["world_size"] == 1 and res["num_images"] == 2 and res["dist_backend"] == backend, res
print(f"torchrun: world {res['world_size']}, {res['dist_backend']} on {res['device_name']}, mIoU {res['mIoU']:.2f}")
PY

echo "== 5. eval stages (fast vs reference post-processing)"
if [ -n "$TINY" ]; then
  "$PY" benchmarks/eval_overhead.py --device "$DEVICE" --images 1 --models lrformer-t --protocols ss --json > "$WORK/overhead.json"
else
  "$PY" benchmarks/eval_overhead.py --device "$DEVICE" --images 16 --workers 0 4 --json > "$OUT/eval_overhead.json"
  cp "$OUT/eval_overhead.json" "$WORK/overhead.json"
fi
"$PY" - "$WORK/overhead.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    differ = f", labels differ on {r['pixels_differ']} of {r['pixels']} px" if "pixels" in r else ""
    print(f"{r['model']} {r['protocol']} workers {r['workers']} {r['path']}: {r['images_per_s']:.2f} images/s, "
          f"{r['outside_model_share']:.1%} outside the forward{differ}")
PY

echo "== 6. report"
"$PY" -m lrbench report --results "$OUT" --out "$REPORT" --plots "$(dirname "$REPORT")/plots"

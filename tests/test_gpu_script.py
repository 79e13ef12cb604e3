"""benchmarks/gpu.sh runs end to end on the CPU in its tiny setting (the GPU run is the same script)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_script_on_cpu(tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT), "PYTHON": sys.executable}
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu.sh"), "--device", "cpu", "--tiny", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for step in ("== 1.", "== 2.", "== 3.", "== 4.", "== 5.", "== 6."):
        assert step in r.stdout
    speed = sorted((tmp_path / "out/speed").glob("*.json"))
    names = {p.name for p in speed}
    assert "lrformer-t_64x64_bf16_cl_cpu_b1.json" in names and "lrformer-t_64x64_fp32_cl_cpu_bmax.json" in names
    res = json.loads((tmp_path / "out/speed/lrformer-t_64x64_fp32_cl_cpu_bmax.json").read_text())
    assert res["kind"] == "speed" and res["batch_size"] == 2 and res["channels_last"]
    assert "torchrun: world 1, gloo" in r.stdout and '"abs_diff": 0.0' in r.stdout
    md = (tmp_path / "out/RESULTS.md").read_text()
    assert "## Speed" in md and "| lrformer-t | 64x128 | 1 | fp32 cl |" in md
    assert "![latency vs resolution](plots/latency_vs_resolution.png)" in md
    assert (tmp_path / "out/plots/latency_vs_resolution.png").read_bytes()[:4] == b"\x89PNG"

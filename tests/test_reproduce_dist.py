"""Cluster scale: `torchrun --nproc-per-node 2 -m lrbench reproduce --data-root D` (gloo on CPU) shards every eval
across the ranks and writes the same result files and report as one process (provenance aside)."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from lrbench.engine.models import create_model

PROVENANCE = {"date", "timings", "world_size", "dist_backend", "fingerprint", "device_name", "versions", "data_root"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


@pytest.mark.slow
def test_torchrun_reproduce_equals_one_process(tmp_path, hub, synth, randomize, mmengine_bytes):
    data = mmengine_bytes(randomize(create_model("lrformer-t"), seed=2))
    hub.add("yuhuan-wu/LRFormer-Models", "lrformer-t-160k_ade20k_46.7.pth", data)
    synth(tmp_path / "data", "ade20k", n=5, sizes=((64, 96), (96, 64), (80, 80)))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    common = ["reproduce", "--data-root", str(tmp_path / "data"), "--evals-only", "--device", "cpu"]
    one = _run([sys.executable, "-m", "lrbench", *common, "--out", str(tmp_path / "one" / "RESULTS.md")], env)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    launcher += ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    two = _run([*launcher, "-m", "lrbench", *common, "--out", str(tmp_path / "two" / "RESULTS.md")], env)
    assert one.stdout.count("wrote ") == two.stdout.count("wrote ") == 1  # rank 0 alone reports

    a = json.loads((tmp_path / "one/results/eval/lrformer-t_ade20k_ss.json").read_text())
    b = json.loads((tmp_path / "two/results/eval/lrformer-t_ade20k_ss.json").read_text())
    assert (a["world_size"], b["world_size"], b["dist_backend"]) == (1, 2, "gloo")
    assert {k: v for k, v in a.items() if k not in PROVENANCE} == {k: v for k, v in b.items() if k not in PROVENANCE}
    assert sum(a["areas"]["label"]) > 0 and a["num_images"] == 5
    files = {p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file()}
    assert files == {p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file()}
    md = [(tmp_path / d / "RESULTS.md").read_text().split("## Provenance")[0] for d in ("one", "two")]
    assert md[0] == md[1] and "lrformer-t_ade20k_ss.json | lrformer-t_ade20k | ade20k | ss | 5 |" in md[0]
    assert not list((tmp_path / "two").rglob("*.state*.pt"))  # the finished results superseded every rank's state
    assert torch.distributed.is_available()

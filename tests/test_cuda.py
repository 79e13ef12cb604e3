"""The CUDA paths on a real GPU (run by benchmarks/gpu.sh; skipped without one): CUDA-event timing and peak memory,
autocast fp16, channels-last, and an eval on the GPU equal to the CPU's."""

import pytest
import torch

from lrbench.engine.evaluate import evaluate
from lrbench.engine.models import create_model
from lrbench.engine.speed import measure_speed
from lrbench.settings import EvalSettings

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_speed_on_cuda(dtype):
    res = measure_speed(
        "lrformer-t", (256, 256), batch_size=2, dtype=dtype, channels_last=True, device="cuda", warmup=2, iters=5
    )
    assert res["device"] == "cuda" and res["peak_mem_mb"] > 0 and res["median_ms"] > 0
    assert res["device_name"] == torch.cuda.get_device_name()


def test_fp16_logits_close_to_fp32():
    model = create_model("segformer-b0").cuda()
    x = torch.randn(1, 3, 256, 256, device="cuda")
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast("cuda", dtype=torch.float16):
            half = model(x).float()
    assert (half.argmax(1) == ref.argmax(1)).float().mean() > 0.99


@pytest.mark.parametrize("name", ["lrformer-t-plus", "mask2former-swin-t"])
def test_mask2former_on_cuda_equals_cpu_and_runs_in_fp16(name):
    """grid_sample deformable attention and the masked decoder on the GPU (mmcv's CUDA kernel is not needed)."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.inference_mode():
        ref = model(x)
        gpu = model.cuda()(x.cuda())
        with torch.autocast("cuda", dtype=torch.float16):
            half = model(x.cuda())
    assert (gpu.cpu().argmax(1) == ref.argmax(1)).float().mean() > 0.999
    assert torch.isfinite(half).all() and (half.float().argmax(1) == gpu.argmax(1)).float().mean() > 0.95


def test_eval_on_cuda_equals_cpu(tmp_path, synth, randomize, save_mmengine):
    synth(tmp_path / "data", "ade20k", n=3, sizes=((96, 128),))
    save_mmengine(randomize(create_model("lrformer-t"), seed=1), tmp_path / "t.pth")
    res = {
        d: evaluate(
            EvalSettings(
                "lrformer-t",
                dataset="ade20k",
                data_root=tmp_path / "data",
                checkpoint=str(tmp_path / "t.pth"),
                workers=0,
                device=d,
            )
        )
        for d in ("cpu", "cuda")
    }
    assert abs(res["cpu"]["mIoU"] - res["cuda"]["mIoU"]) <= 0.01

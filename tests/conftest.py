import os

import pytest
import torch

# Never let a test reach the real hub, and keep caches inside the test's tmp dirs.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Any hub request a test did not plan goes to a closed local port, never to the internet; tests that need a hub
# start one on 127.0.0.1 and point HF_ENDPOINT at it.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
torch.set_num_threads(min(2, torch.get_num_threads()))


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter and buffer with random values of a sensible scale (layer scales included, so that the
    attention and FFN branches matter; BN variances positive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() <= 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) / fan_in ** 0.5)
    return model


@pytest.fixture
def rand_images():
    def make(h, w, b=1, seed=0):
        return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))
    return make

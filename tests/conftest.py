"""Shared fixtures: random weights, synthetic datasets in the real layouts, a local hub, official-format saving."""

import hashlib
import io
import os
import subprocess
from pathlib import Path

import pytest
import torch

from hubserver import FileServer, LocalHub
from synth import write_dataset

# Never let a test reach the real hub, and keep caches inside the test's tmp dirs.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Any hub request a test did not plan goes to a closed local port, never to the internet; tests that need a hub
# use the `hub` fixture, which starts one on 127.0.0.1 and points HF_ENDPOINT at it.
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["LRBENCH_URL_MIRROR"] = "http://127.0.0.1:9"  # the same for url: entries (download.openmmlab.com)
os.environ.pop("LRBENCH_OFFLINE", None)
torch.set_num_threads(min(2, torch.get_num_threads()))


# ---------------------------------------------------------------- the suite leaves the checkout as it found it
REPO = Path(__file__).resolve().parent.parent


def _tree_state() -> str | None:
    """``git status --porcelain`` of the checkout plus the content hash of every file it lists (None outside git)."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO, capture_output=True, text=True
        )
    except OSError:
        return None
    if out.returncode != 0:
        return None
    lines = []
    for line in out.stdout.splitlines():
        path = REPO / line[3:].split(" -> ")[-1]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "-"
        lines.append(f"{line} {digest}")
    return "\n".join(lines)


def pytest_sessionstart(session):
    session.config._tree_before = _tree_state()


def pytest_sessionfinish(session, exitstatus):
    before, after = getattr(session.config, "_tree_before", None), _tree_state()
    if before is not None and after != before:
        changed = sorted(set(after.splitlines()) ^ set(before.splitlines()))
        print("\nthe test run changed the checkout (a test wrote into the repository):\n  " + "\n  ".join(changed))
        session.exitstatus = 1


def fill_random(named_tensors, seed: int = 0) -> None:
    """Fill each (name, tensor) with random values of a sensible scale (layer scales included, so that the attention
    and FFN branches matter; BN variances positive), in order, from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in named_tensors:
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() <= 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) / fan_in**0.5)


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and buffer of ``model`` filled by :func:`fill_random`."""
    fill_random(list(model.named_parameters()) + list(model.named_buffers()), seed)
    return model


def _mmengine_bytes(model_or_state, extra: dict | None = None) -> bytes:
    """A checkpoint in the layout mmseg releases: {'meta': ..., 'state_dict': ...} (+ extra top-level keys)."""
    sd = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    ckpt = {
        "meta": {
            "mmengine_version": "0.10.6",
            "dataset_meta": {"classes": ("wall", "building")},
            "iter": 160000,
            "seed": 0,
        },
        "state_dict": sd,
    }
    ckpt.update(extra or {})
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


@pytest.fixture(scope="session")
def claims_study():
    """The LRSA scaling study measured once for the whole session (the CLI and reproduce tests check their wiring
    around it; test_complexity checks the measurements): three sizes, MHSA over 5 GMACs left untimed."""
    from lrbench.engine.measure import run_claims

    return run_claims([(128, 128), (256, 256)], warmup=0, iters=1, max_gmacs=1.0)


@pytest.fixture(scope="session")
def randomize():
    return _randomize


@pytest.fixture
def mmengine_bytes():
    return _mmengine_bytes


@pytest.fixture
def save_mmengine():
    """save(model_or_state, path, extra=None): write an official-layout .pth file."""

    def save(model_or_state, path, extra=None):
        with open(path, "wb") as f:
            f.write(_mmengine_bytes(model_or_state, extra))
        return path

    return save


@pytest.fixture
def synth():
    """write(root, dataset, n=4, sizes=..., seed=0, lossless=True): a synthetic set in the real folder layout."""
    return write_dataset


@pytest.fixture
def rand_images():
    def make(h, w, b=1, seed=0):
        return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))

    return make


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local stand-in for the Hugging Face hub on 127.0.0.1, with HF and lrbench caches inside tmp_path."""
    h = LocalHub()
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("LRBENCH_HOME", str(tmp_path / "lrbench"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("LRBENCH_ZOO", raising=False)
    yield h
    h.close()


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A plain HTTP file server on 127.0.0.1 standing in for download.openmmlab.com ($LRBENCH_URL_MIRROR points at
    it), with lrbench's cache inside tmp_path."""
    f = FileServer()
    monkeypatch.setenv("LRBENCH_URL_MIRROR", f.url)
    monkeypatch.setenv("LRBENCH_HOME", str(tmp_path / "lrbench"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("LRBENCH_OFFLINE", raising=False)
    yield f
    f.close()

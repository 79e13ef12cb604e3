"""``lrbench env``: what a bug report needs -- versions, devices, where weights come from (and whether the hub
answers, within :data:`PROBE_S`), and the caches with their sizes. Works offline.

torch is asked about CUDA only where an NVIDIA driver is installed (importing it takes seconds): elsewhere no GPU can
be used, and the CUDA version torch was built for is read from its ``version.py``."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from ..results import versions
from ..sources import hf_cache_dir, lrbench_home, offline, url_mirror
from ..version import torch_build

PROBE_S = 5.0


def _size(path: Path) -> int | None:
    """Bytes under ``path`` (files once, links not followed); None when it does not exist."""
    if not path.exists():
        return None
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _answers(url: str) -> str:
    """'answers (HTTP n)' / 'unreachable (...)' for one HEAD request; 'not asked (offline)' when offline."""
    if offline():
        return "not asked (offline mode)"
    try:
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "lrbench-env"})
        with urllib.request.urlopen(req, timeout=PROBE_S) as r:
            return f"answers (HTTP {r.status})"
    except urllib.error.HTTPError as e:
        return f"answers (HTTP {e.code})"
    except (urllib.error.URLError, OSError) as e:
        return f"unreachable ({getattr(e, 'reason', e)})"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)  # without importing it (timm alone takes seconds)
    except importlib.metadata.PackageNotFoundError:
        return None


def nvidia_driver() -> bool:
    """Whether an NVIDIA driver is installed (its /proc entry or nvidia-smi): without one CUDA cannot be available."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def cuda_facts() -> tuple[dict, int]:
    """(CUDA availability, torch's CUDA and cuDNN versions, device names; torch's CPU threads), from torch itself
    where a driver is installed, else without importing it (CPU threads: the CPUs this process may use)."""
    if not nvidia_driver():
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return {"available": False, "torch_cuda": torch_build("cuda"), "cudnn": None, "devices": []}, cpus
    import torch

    cuda = torch.cuda.is_available()
    facts = {
        "available": cuda,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
    }
    return facts, torch.get_num_threads()


def environment() -> dict:
    cuda, threads = cuda_facts()
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    hf_cache = Path(hf_cache_dir() or Path.home() / ".cache" / "huggingface" / "hub")
    home = lrbench_home()
    return {
        "versions": versions() | {p: _version(p) for p in ("timm", "huggingface_hub", "transformers")},
        "platform": platform.platform(),
        "cpu_threads": threads,
        "cuda": cuda,
        "hub": {"endpoint": endpoint, "status": _answers(endpoint), "offline": offline()},
        "url_mirror": url_mirror() or None,
        "caches": {
            "lrbench_home": {"path": str(home), "bytes": _size(home)},
            "hf_hub_cache": {"path": str(hf_cache), "bytes": _size(hf_cache)},
        },
        "zoo_manifest": os.environ.get("LRBENCH_ZOO") or None,
    }

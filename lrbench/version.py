"""The installed package version (a module of its own so that every layer can read it without importing more)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lrbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"


def torch_version() -> str | None:
    """``torch.__version__`` of the installed torch without importing it (the reading layer never does): read from
    ``torch/version.py``, which torch's own ``__init__`` takes it from; the package metadata's when that file is odd."""
    import importlib.util
    import re
    from pathlib import Path

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "version.py"
        if path.is_file():
            m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", path.read_text(), re.M)
            if m:
                return m.group(1)
    try:
        return version("torch")
    except PackageNotFoundError:
        return None

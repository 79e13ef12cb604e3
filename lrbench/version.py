"""The installed package version (a module of its own so that every layer can read it without importing more)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lrbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"


def torch_build(field: str) -> str | None:
    """A field of the installed torch's ``torch/version.py`` (``__version__``, ``cuda``: the CUDA it was built
    for) without importing torch (the reading layer never does; torch's own ``__init__`` reads the same file)."""
    import importlib.util
    import re
    from pathlib import Path

    spec = importlib.util.find_spec("torch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "version.py"
        if path.is_file():
            m = re.search(rf"^{re.escape(field)}\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", path.read_text(), re.M)
            return m.group(1) if m else None
    return None


def torch_version() -> str | None:
    """``torch.__version__`` of the installed torch without importing it (:func:`torch_build`); the package
    metadata's when that file is odd."""
    found = torch_build("__version__")
    if found:
        return found
    try:
        return version("torch")
    except PackageNotFoundError:
        return None

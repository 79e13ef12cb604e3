"""Atomic result files: readers (and interrupted runs) never see a half-written file."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from .errors import ConfigError, OutputError


def read_yaml(path: str | os.PathLike):
    """A YAML file's data with libyaml's safe loader when PyYAML was built with it (10x faster on the zoo manifest:
    the reading commands answer at once), else the pure-Python one; the same data either way."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(Path(path).read_text(), Loader=loader)  # noqa: S506 - a safe loader


def atomic_write_bytes(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path`` so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    data = json.dumps(obj, indent=2) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(data)

    atomic_write_bytes(path, write)


def now_iso() -> str:
    """UTC time to the second, for the ``date`` of result files."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def data_dir(name: str) -> Path:
    """A top-level folder of the repository (``zoo``, ``recipes``): next to the package in a source checkout or an
    editable install, else where a regular install puts it (``<prefix>/share/lrbench/<name>``)."""
    source = Path(__file__).resolve().parent.parent / name
    installed = Path(sys.prefix) / "share" / "lrbench" / name
    return source if source.is_dir() or not installed.is_dir() else installed


def check_writable(path: str | os.PathLike, what: str = "--out") -> Path:
    """Fail now, not after the work, when ``path`` cannot be written: create its folder and try a file there."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OutputError(
            f"{what} {path}: cannot write there ({e.strerror or type(e).__name__}); choose another {what}"
        ) from None
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name")
    return path


def env_path(var: str, kind: str = "file", fix: str = "", written: bool = False) -> Path | None:
    """The file or folder (``kind``: file | dir) an environment variable names, or None when it is unset or empty. A
    set variable never falls back to a default: a missing, unreadable or wrong-kind target is a one-line
    :class:`ConfigError` naming the variable, its value and ``fix`` (what to do), so that a pinned run cannot quietly
    stop being pinned. A target lrbench ``written`` to (a cache home, the manifest ``zoo publish`` writes) may be
    missing if its parent folder exists -- it is made on first use -- and one that exists must be writable."""
    value = os.environ.get(var, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    fix = fix or f"unset {var}"
    if not path.exists() and written:  # made on first use, as huggingface_hub makes its caches
        if not path.parent.is_dir():
            raise ConfigError(f"{var}={value}: its parent folder does not exist; {fix}")
        return path
    if not path.exists():
        problem = "not found"
    elif kind == "file" and not path.is_file():
        problem = "is not a file"
    elif kind == "dir" and not path.is_dir():
        problem = "is not a folder"
    elif not os.access(path, os.R_OK | (os.X_OK if kind == "dir" else 0)):
        problem = "cannot be read (permission denied)"
    elif written and not os.access(path, os.W_OK):
        problem = "cannot be written (permission denied)"
    else:
        return path
    raise ConfigError(f"{var}={value}: {problem}; {fix}")

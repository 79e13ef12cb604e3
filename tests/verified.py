"""What the peer tests verified, written where ``lrbench zoo info`` reads it (``zoo/verified.yaml``).

Each passing peer test records, per architecture, the peer package and version, what was compared, the tolerance and
the measured error; the file is rewritten whole (sorted, atomically) so a run reproduces it byte for byte up to the
measured errors. Commit it after a run that changed it. Nothing here is typed by hand.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
import threading
from pathlib import Path

import yaml

FILE = Path(__file__).resolve().parent.parent / "zoo" / "verified.yaml"
HEADER = (
    "# What each architecture was verified against: written by the peer tests (tests/verified.py), not by hand.\n"
    "# `lrbench zoo info NAME` shows its entry's architecture's records.\n"
)
_lock = threading.Lock()


def record(arch: str, peer: str, check: str, tolerance: float, error: float, test: str) -> None:
    """Add (or replace) the record of ``test`` for ``arch``."""
    rec = {
        "peer": f"{peer} {importlib.metadata.version(peer)}",
        "check": check,
        "tolerance": float(f"{tolerance:.0e}"),
        "measured": float(f"{error:.0e}") if error else 0.0,
        "test": test,
    }
    with _lock:
        data = (yaml.safe_load(FILE.read_text()) if FILE.is_file() else None) or {}
        archs = data.setdefault("architectures", {})
        rows = [r for r in archs.get(arch, []) if r.get("test") != test] + [rec]
        archs[arch] = sorted(rows, key=lambda r: r["test"])
        data["architectures"] = dict(sorted(archs.items()))
        text = HEADER + yaml.safe_dump(data, sort_keys=False, width=120)
        fd, tmp = tempfile.mkstemp(dir=FILE.parent, prefix=".verified.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, FILE)

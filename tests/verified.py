"""What the peer tests verified: the committed record ``zoo/verified.yaml`` (``lrbench zoo info`` shows it).

A test run never writes it (the suite leaves the checkout as it found it): each peer test *checks* its measurement
against the committed record (:func:`check`): the record exists, its measured error is within its tolerance, and the
error measured now is within ten times the recorded one (float64 round-off moves with the BLAS build and thread count,
not by orders of magnitude; a real change in an operation moves it by many). To rewrite the record after a change that
moved it, run the peer tests with ``LRBENCH_RECORD_VERIFIED=1``::

    LRBENCH_RECORD_VERIFIED=1 pytest -m peer tests/test_peers_mmseg.py

which writes the file whole (sorted, atomically); commit it. Nothing in it is typed by hand.
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
DRIFT = 10  # a re-measured error may be this many times the recorded one
_lock = threading.Lock()


def recording() -> bool:
    return os.environ.get("LRBENCH_RECORD_VERIFIED", "") == "1"


def committed() -> dict[str, list[dict]]:
    return (yaml.safe_load(FILE.read_text()) or {}).get("architectures", {})


def _rounded(rec: dict) -> dict:
    return rec | {"tolerance": float(f"{rec['tolerance']:.0e}"), "measured": float(f"{rec['measured']:.0e}")}


def check(arch: str, peer: str, check: str, tolerance: float, error: float, test: str) -> None:
    """Hold a measurement to the committed record (or, with ``LRBENCH_RECORD_VERIFIED=1``, record it)."""
    rec = _rounded(
        {
            "peer": f"{peer} {importlib.metadata.version(peer)}",
            "check": check,
            "tolerance": tolerance,
            "measured": error,
            "test": test,
        }
    )
    if recording():
        _write(arch, rec)
        return
    rows = [r for r in committed().get(arch, []) if r.get("test") == test]
    assert rows, f"zoo/verified.yaml has no record of {test} for {arch}; record it with LRBENCH_RECORD_VERIFIED=1"
    (old,) = rows
    assert old["peer"] == rec["peer"] and old["check"] == rec["check"], (
        f"zoo/verified.yaml records {old['peer']}: {old['check']} for {arch}, this run checks {rec['peer']}: "
        f"{rec['check']}; record it again with LRBENCH_RECORD_VERIFIED=1"
    )
    assert old["measured"] <= old["tolerance"], f"{arch}: the recorded error exceeds its tolerance"
    assert error <= max(old["measured"], 1e-300) * DRIFT, (
        f"{arch}: error {error:.1e} now, {old['measured']:.0e} recorded (over {DRIFT}x: an operation changed)"
    )


def _write(arch: str, rec: dict) -> None:
    with _lock:
        data = (yaml.safe_load(FILE.read_text()) if FILE.is_file() else None) or {}
        archs = data.setdefault("architectures", {})
        rows = [r for r in archs.get(arch, []) if r.get("test") != rec["test"]] + [rec]
        archs[arch] = sorted(rows, key=lambda r: r["test"])
        data["architectures"] = dict(sorted(archs.items()))
        text = HEADER + yaml.safe_dump(data, sort_keys=False, width=120)
        fd, tmp = tempfile.mkstemp(dir=FILE.parent, prefix=".verified.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, FILE)

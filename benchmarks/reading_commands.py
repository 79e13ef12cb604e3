"""Wall time of the commands that only read files (median of 5 fresh processes each), as a new user types them.

Target (issue: two layers): each under 0.5 s on 2 cores, none importing torch; ``lrbench env`` within 2 s offline (it
asks torch about CUDA only where an NVIDIA driver is installed). Run from the repository root: ``python benchmarks/reading_commands.py``.

Measured on the 2-core development machine (warm disk, idle), 2026-12-03; "before" = the same command before the
two-layer split (issue notes), when each imported torch:

| command | median s | before |
|---|---|---|
| lrbench --help | 0.17 | 0.13 |
| lrbench models | 0.45 | 6.3 |
| lrbench zoo list | 0.38 | 5.9-8 |
| lrbench zoo info segformer-b0-mmseg_ade20k | 0.43 | 3.3 |
| lrbench zoo lock (nothing pulled: one error line) | 0.50 | |
| lrbench compare A B | 0.58 | |
| lrbench report (plots unchanged: their digests match) | 0.8-1.0 | 4.3 |
| lrbench report (plots drawn) | 3.4 | |
| lrbench data check ade20k | 0.52 | 1.2 |
| lrbench --offline env (no NVIDIA driver: torch not imported) | 0.6 | |

This machine's timings move by up to 1.5x between runs; run the script for yours.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from synth import write_dataset, write_eval_result  # noqa: E402


def wall(args: list[str], env: dict, cwd: Path, n: int = 5) -> tuple[float, int]:
    times, code = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        code = subprocess.run(
            [sys.executable, "-m", "lrbench", *args], cwd=cwd, env=env, capture_output=True
        ).returncode
        times.append(time.perf_counter() - t0)
    return statistics.median(times), code


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lrbench-reading-"))
    env = {**os.environ, "LRBENCH_HOME": str(tmp / "home"), "PYTHONPATH": str(REPO)}
    write_dataset(tmp / "data", "ade20k", n=4, sizes=((64, 96),))
    union = np.random.default_rng(0).integers(50, 200, size=(50, 10))
    for name, frac in (("a", 0.5), ("b", 0.4)):
        write_eval_result(tmp, name, (union * frac).astype(np.int64), union)
    commands = [
        ["--help"],
        ["models"],
        ["zoo", "list"],
        ["zoo", "info", "segformer-b0-mmseg_ade20k"],
        ["zoo", "lock", "--out", str(tmp / "lock.yaml")],
        ["compare", str(tmp / "a.json"), str(tmp / "b.json")],
        ["report", "--results", str(REPO / "results"), "--out", str(tmp / "R.md"), "--plots", str(tmp / "plots")],
        ["data", "check", "ade20k", "--data-root", str(tmp / "data")],
        ["--offline", "env"],
    ]
    print("| command | median s (of 5) | exit |")
    print("|---|---|---|")
    for args in commands:
        s, code = wall(args, env, tmp)
        print(f"| lrbench {' '.join(a if len(a) < 40 else '…' + a[-20:] for a in args)} | {s:.2f} | {code} |")


if __name__ == "__main__":
    main()

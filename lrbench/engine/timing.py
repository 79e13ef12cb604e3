"""Stage timing for the eval and predict loops: CPU wall time, or CUDA events read once at the end (no
synchronisation while the work runs)."""

from __future__ import annotations

import time

import torch


class Intervals:
    """Durations added up by name: CPU wall time, or on CUDA the time between events on the current stream, read
    once when the totals are asked for (no synchronisation while the work runs; queued GPU work is charged to the
    interval in which the GPU ran it, idle waits to the interval that kept it waiting)."""

    def __init__(self, cuda: bool = False):
        self.cuda, self.totals_s, self.pending = cuda, {}, []

    def now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def add(self, name: str, start, end) -> None:
        if self.cuda:
            self.pending.append((name, start, end))
        else:
            self.totals_s[name] = self.totals_s.get(name, 0.0) + end - start

    def totals(self) -> dict[str, float]:
        if self.pending:
            self.pending[-1][2].synchronize()
            for name, start, end in self.pending:
                self.totals_s[name] = self.totals_s.get(name, 0.0) + start.elapsed_time(end) / 1000
            self.pending = []
        return dict(self.totals_s)


class Stages:
    """Time per stage of a loop (decode, preprocess, forward, post-process, metric): ``mark(name)`` charges the time
    since the previous mark to ``name``; ``seconds`` are the totals (see :class:`Intervals` for CUDA)."""

    def __init__(self, cuda: bool = False):
        self.clock = Intervals(cuda)
        self.last = self.clock.now()

    def mark(self, name: str) -> None:
        now = self.clock.now()
        self.clock.add(name, self.last, now)
        self.last = now

    @property
    def seconds(self) -> dict[str, float]:
        return self.clock.totals()

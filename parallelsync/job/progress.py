"""Progress of the worker phase: totals counted as workers report, snapshots for the reporter.

How the snapshots look (a live display, plain lines, JSON) is the command line's business
(cli/display.py); this module only counts and decides how often to hand one over.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from parallelsync.job.report import Reporter, Snapshot, WorkerLine

# Snapshots go to the reporter at most this often: a live display redraws 4 times a second, and
# building a snapshot (one line per worker) on every batch message would cost for nothing.
SNAPSHOT_S = 0.25


def human(n: float) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    def __init__(self, estimated_rows: int, reporter: Reporter, ranges: int = 0) -> None:
        self.reporter = reporter
        self.estimated = max(estimated_rows, 0)
        self.ranges = ranges
        self.start = time.monotonic()
        self._last = 0.0
        self.rows = 0
        self.bytes = 0

    def add(self, rows: int, nbytes: int) -> None:
        self.rows += rows
        self.bytes += nbytes

    def fraction(self) -> float:
        if self.estimated <= 0:
            return 0.0
        return min(1.0, self.rows / self.estimated)

    def snapshot(self, workers: tuple[WorkerLine, ...] = (), ranges_done: int = 0) -> Snapshot:
        return Snapshot(
            self.rows, self.bytes, self.estimated, time.monotonic() - self.start, workers,
            ranges_done, self.ranges,
        )  # fmt: skip

    def tick(
        self,
        workers: Callable[[], tuple[WorkerLine, ...]] = tuple,
        ranges_done: Callable[[], int] = lambda: 0,
        *,
        force: bool = False,
    ) -> None:
        now = time.monotonic()
        if not force and now - self._last < SNAPSHOT_S:
            return
        self._last = now
        self.reporter.progress(self.snapshot(workers(), ranges_done()))

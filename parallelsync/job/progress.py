"""Progress while a copy runs: a live line on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


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
    def __init__(self, estimated_rows: int, interval: float, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.estimated = max(estimated_rows, 0)
        self.interval = 0.5 if self.tty else interval
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

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.rows / elapsed
        parts = [
            f"{human(self.rows)} rows",
            f"{human(rate)} rows/s",
            f"{self.bytes / elapsed / 1e6:.1f} MB/s",
        ]
        if self.estimated > 0:
            parts.insert(1, f"~{self.fraction() * 100:.0f}% of ~{human(self.estimated)}")
            if rate > 0 and self.rows < self.estimated:
                parts.append(f"ETA {duration((self.estimated - self.rows) / rate)}")
        parts.append(f"elapsed {duration(elapsed)}")
        return "progress: " + ", ".join(parts)

    def tick(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line())
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

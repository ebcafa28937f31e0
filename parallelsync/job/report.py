"""What a job tells the outside world while it runs: phases, progress, warnings, debug notes.

The job calls a `Reporter`; the command line decides how it looks (a live display on a terminal,
plain periodic lines, one JSON object per event, or nothing: cli/display.py). This module imports
nothing of the display: the job layer must not depend on rich or on the cli. Every phase has a
name from PHASES, so no wait is ever silent: a display shows the current phase and its elapsed
time even while the job waits on one long server call (a count, an index build, the rename).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

# Every phase name a job reports, in the order a copy runs them; `verify` runs preflight,
# snapshot and plan, then reads the source with the workers ("read"), digests the target
# ("compare") and lists sample keys of differing ranges ("samples"); `follow` runs preflight,
# then "follow" until it stops; `copy --follow` runs "catch-up" after "indexes", then "swap",
# then "follow".
PHASES = (
    "preflight", "snapshot", "plan", "copy", "catch-up", "count", "checksums", "indexes",
    "swap", "changed-rows", "read", "compare", "samples", "follow",
)  # fmt: skip
# The phases whose progress is counted in rows (the workers run): displays show totals and
# worker lines for these, a spinner with the elapsed time for the others.
WORKER_PHASES = frozenset({"copy", "read"})
# The phases that hand the reporter progress snapshots: the worker phases and follow (also
# copy --follow's catch-up, which runs follow's loop into the temp collection).
PROGRESS_PHASES = WORKER_PHASES | {"follow", "catch-up"}

STARTED, DONE, FAILED = "started", "done", "failed"


@dataclass(frozen=True)
class WorkerLine:
    """One worker as a display shows it."""

    wid: int
    state: str  # starting | copying | idle | finished (told to exit: nothing left)
    range_id: int | None = None
    rows: int = 0  # rows of its current range so far


@dataclass(frozen=True)
class Snapshot:
    """Progress of the worker phase as of now: totals, rates, estimate, and the workers."""

    rows: int
    bytes: int
    estimated: int  # rows the plan expects (0: unknown)
    elapsed: float  # seconds since the worker phase began
    workers: tuple[WorkerLine, ...] = ()
    ranges_done: int = 0
    ranges: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes / self.elapsed / 1e6 if self.elapsed > 0 else 0.0

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.rows / self.estimated) if self.estimated > 0 else None

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far; None when unknown (no estimate, no rate yet, or more
        rows than estimated: then the estimate says nothing about the rest)."""
        rate = self.rows_per_second
        if self.estimated <= 0 or rate <= 0 or self.rows >= self.estimated:
            return None
        return (self.estimated - self.rows) / rate


@dataclass(frozen=True)
class FollowSnapshot:
    """Progress of `follow` as of now (its statistics: docs/progress.md).

    `lag_bytes`: the server's WAL flush position minus the applied position; `lag_seconds`:
    now minus the server time of the applied position (the commit time of the last applied
    transaction, or the time of the keepalive whose idle position was applied). None: not
    measured yet (or the source could not be asked)."""

    applied_lsn: str
    transactions: int
    changes: int
    elapsed: float  # seconds since the follow phase began
    server_lsn: str | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    retained_wal_bytes: int | None = None  # WAL the slot keeps (from its restart_lsn on)

    @property
    def changes_per_second(self) -> float:
        return self.changes / self.elapsed if self.elapsed > 0 else 0.0

    def as_doc(self) -> dict[str, Any]:
        lag_s = None if self.lag_seconds is None else round(self.lag_seconds, 3)
        return {
            "applied_lsn": self.applied_lsn, "transactions": self.transactions,
            "changes": self.changes, "changes_per_second": round(self.changes_per_second, 1),
            "server_lsn": self.server_lsn, "lag_bytes": self.lag_bytes, "lag_seconds": lag_s,
            "retained_wal_bytes": self.retained_wal_bytes,
        }  # fmt: skip


ProgressSnap = Snapshot | FollowSnapshot


class Reporter(Protocol):
    def phase(self, name: str, state: str, elapsed: float) -> None: ...  # state: STARTED etc.
    def progress(self, snap: ProgressSnap) -> None: ...
    def warning(self, message: str) -> None: ...
    def debug(self, message: str) -> None: ...  # -v/--verbose only
    def close(self) -> None: ...


class LineReporter:
    """Warnings as lines on stderr and nothing else: what a library caller gets by default."""

    def phase(self, name: str, state: str, elapsed: float) -> None:
        pass

    def progress(self, snap: ProgressSnap) -> None:
        pass

    def warning(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def debug(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class PhaseRecord:
    """One phase of a run, for the summary and the job document."""

    name: str
    started: float
    seconds: float | None = None  # None while it runs
    rows: int = 0  # rows (or documents) the phase moved or checked
    bytes: int = 0
    state: str = STARTED

    def as_doc(self) -> dict[str, Any]:
        seconds = self.seconds or 0.0
        return {
            "name": self.name,
            "seconds": round(seconds, 3),
            "rows": self.rows,
            "bytes": self.bytes,
            "rows_per_second": round(self.rows / seconds, 1) if seconds > 0 and self.rows else 0,
            "state": self.state,
        }


@dataclass
class Phases:
    """Times the phases of one run and tells the reporter when each starts and ends."""

    reporter: Reporter
    records: list[PhaseRecord] = field(default_factory=list)
    # Called after each phase that ends well (the copy records the phases in its job document;
    # a failed run records them once, with its error, instead of waiting on a target that may
    # be the reason it failed).
    on_end: Callable[[], object] = lambda: None

    @contextmanager
    def run(self, name: str) -> Iterator[PhaseRecord]:
        """`with phases.run("count") as rec:` times the block; `rec.rows` may be set in it."""
        assert name in PHASES, name
        rec = PhaseRecord(name, time.monotonic())
        self.records.append(rec)
        self.reporter.phase(name, STARTED, 0.0)
        try:
            yield rec
        except BaseException:
            self._end(rec, FAILED)
            raise
        self._end(rec, DONE)

    def _end(self, rec: PhaseRecord, state: str) -> None:
        rec.seconds, rec.state = time.monotonic() - rec.started, state
        self.reporter.phase(rec.name, state, rec.seconds)
        if state == DONE:
            self.on_end()

    def docs(self) -> list[dict[str, Any]]:
        return [r.as_doc() for r in self.records if r.seconds is not None]

"""The state a job carries from phase to phase: ranges, the result, the abort flag."""

from __future__ import annotations

import datetime as dt
import secrets
import signal
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from parallelsync.source.planner import KeyRange
from parallelsync.transcode.checksum import Digest

PENDING, RUNNING, DONE, FAILED = "PENDING", "RUNNING", "DONE", "FAILED"
# A range that was being copied when the job ended (failed or aborted): not DONE, so a resume
# copies it again (from_doc reads every status but DONE as "to do").
INTERRUPTED = "INTERRUPTED"


def new_job_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "_" + secrets.token_hex(3)


@dataclass
class RangeState:
    rng: KeyRange
    query: str
    status: str = PENDING  # PENDING -> RUNNING -> DONE | FAILED | INTERRUPTED (the job ended)
    attempts: int = 0
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    not_before: float = 0.0  # back-off: do not start again before this monotonic time
    error: str | None = None
    digest: Digest | None = None  # content digest of the documents written (checksums on)
    id_filter: dict[str, Any] | None = None  # selects this range in MongoDB, if BSON order allows
    skipped: int = 0  # --oversize skip: documents left out
    skipped_entries: list[dict[str, Any]] = field(default_factory=list)
    read_loop: str = ""  # the COPY read loop of the attempt that copied it ("c" / "python")

    def doc(self) -> dict[str, Any]:
        d = self.rng.describe()
        d.update(
            status=self.status,
            attempts=self.attempts,
            rows=self.rows,
            bytes=self.bytes,
            seconds=round(self.seconds, 3),
            error=self.error,
        )
        if self.digest is not None:
            d["checksum"] = self.digest.as_doc()
        d["query"], d["id_filter"] = self.query, self.id_filter
        return d

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> RangeState:
        """A range as an earlier (dead) run recorded it in its job document."""
        rng = KeyRange.from_doc(d)
        st = cls(
            rng, str(d["query"]), attempts=int(d.get("attempts", 0)), id_filter=d.get("id_filter")
        )
        if d.get("status") == DONE:
            st.status, st.rows, st.bytes = DONE, int(d.get("rows", 0)), int(d.get("bytes", 0))
            st.seconds = float(d.get("seconds", 0.0))
            if d.get("checksum"):
                st.digest = Digest(int(d["checksum"]["count"]), int(d["checksum"]["digest"], 16))
        return st


def interrupt(states: list[RangeState]) -> None:
    """The job ended: ranges still marked RUNNING were cut short, and say so."""
    for st in states:
        if st.status == RUNNING:
            st.status = INTERRUPTED


@dataclass
class Result:
    status: str
    job_id: str
    rows: int = 0
    docs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    consistent_lsn: str | None = None
    slot: str | None = None
    snapshot: str | None = None
    target: str = ""
    workers: int = 0
    ranges: int = 0
    error: str | None = None
    exit_code: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # The exception behind `error`, for `--debug` (never in the JSON).
    exception: BaseException | None = None
    # False when the run failed before it took the target (preflight): then there is no job to
    # summarise, only the error message.
    job_created: bool = True
    # Each phase that ran: {name, seconds, rows, bytes, rows_per_second, state} (report.py).
    phases: list[dict[str, Any]] = field(default_factory=list)
    # The finished ranges that took longest: {range, rows, bytes, seconds, attempts}.
    slowest_ranges: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out = {
            "status": self.status,
            "job_id": self.job_id,
            "rows": self.rows,
            "docs": self.docs,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows / self.seconds, 1) if self.seconds > 0 else None,
            "consistent_lsn": self.consistent_lsn,
            "slot": self.slot,
            "snapshot": self.snapshot,
            "target": self.target,
            "workers": self.workers,
            "ranges": self.ranges,
            "error": self.error,
            "phases": self.phases,
            "slowest_ranges": self.slowest_ranges,
        }
        out.update(self.extra)
        return out


class AbortFlag:
    """First SIGINT/SIGTERM: stop cleanly. Second: stop now (the next run removes leftovers)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

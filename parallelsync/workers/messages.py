"""The protocol between the coordinator and its workers, as typed messages.

Coordinator -> worker (one inbox per worker): a `RangeTask`, or None to stop: no range is left
for this worker (its exit ends its transaction and so releases its locks on the table). SIGTERM
stops a worker at once, after the insert it has in flight (lifeline.py).
Worker -> coordinator (one result queue per worker, see pool.Inbox):

    Ready      the worker connected and imported the snapshot; it can take ranges
    Progress   a batch of a range was written (rows, COPY bytes)
    Heartbeat  the worker still holds this range (every few seconds, from its own thread), so a
               range waiting on a slow server is not taken for a stuck one (job/schedule.py)
    Done       a range finished (totals, seconds, content digest, documents left out)
    Failed     a range failed; `error.transient` says whether another attempt may help.
               After a transient failure the worker exits (its connection may be broken)
    Fatal      the worker could not start (connect, snapshot import, sink)

Every message names its worker, so the coordinator can ignore the late words of a worker it has
already retired. All of them pickle cheaply (plain fields; errors pickle by their message).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parallelsync.errors import ParallelSyncError
from parallelsync.transcode.checksum import Digest


@dataclass(frozen=True)
class RangeTask:
    range_id: int
    attempt: int
    query: str  # the complete COPY statement for this range


@dataclass(frozen=True)
class Ready:
    wid: int
    pid: int


@dataclass(frozen=True)
class Progress:
    wid: int
    range_id: int
    rows: int
    nbytes: int


@dataclass(frozen=True)
class Heartbeat:
    wid: int
    range_id: int


@dataclass(frozen=True)
class Done:
    wid: int
    range_id: int
    rows: int
    nbytes: int
    seconds: float
    digest: Digest | None = None  # with checksums on: the digest of every document written
    skipped: int = 0  # --oversize skip: documents over 16 MiB left out of this range
    skipped_entries: list[dict[str, Any]] = field(default_factory=list)  # first {_id, size}
    read_loop: str = ""  # which loop read the COPY: "c" or "python" (source/readloop.py)
    # --executor dask: `pg_current_snapshot()` as the range's transaction saw it, so the
    # coordinator can check that every host read the same snapshot ("" from local workers).
    snapshot: str = ""


@dataclass(frozen=True)
class Failed:
    wid: int
    range_id: int
    error: ParallelSyncError


@dataclass(frozen=True)
class Fatal:
    wid: int
    error: ParallelSyncError


Message = Ready | Progress | Heartbeat | Done | Failed | Fatal

"""The loop that applies a slot's stream to a collection (shared by `follow` and `copy --follow`).

`FollowLoop.run(until)` reads the stream, applies whole transactions in commit order and returns
at a transaction boundary when `until` says so (a signal, the end position, idle, caught up).
The loop can be run again after it returned, on the same open stream: `copy --follow` runs it
into the temp collection until it is caught up, swaps, points it at the target (`switch`) and
runs it again.

Where a checkpoint goes is the `Checkpoints` the loop holds. A durable one (the follow state
document, targets/mongodb/follow_state.py) is written after MongoDB acknowledged a group of
transactions and only then confirmed to the server (group commit, `save`: transactions that
arrive back to back share one bulk write and one checkpoint; the group ends when the stream has
nothing more to read at once, after `GROUP_S`, at a chunk written, a stop, or a transaction that
read a stored document, cdc/apply.py); a non-durable one (the catch-up of `copy --follow`,
whose writes go to a temp collection that a failure drops) is never confirmed: the slot stays at
the copy's consistent LSN until the swap, as its job document records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pymongo.collection import Collection

from parallelsync.cdc.apply import Applier
from parallelsync.cdc.decode import decode
from parallelsync.cdc.stream import Keepalive, ReplicationStream, format_lsn, unix_seconds
from parallelsync.errors import ParallelSyncError
from parallelsync.job import hooks
from parallelsync.job.follow_stats import FollowMonitor
from parallelsync.job.report import FollowSnapshot, Reporter

# How long one read waits before the loop looks at signals, deadlines and idle positions.
POLL_S = 0.5
# An idle keepalive position is stored (one MongoDB write) at most this often.
IDLE_STORE_S = 1.0
# The display gets a new snapshot this often (it prints one every --progress-seconds).
PROGRESS_S = 0.25
# The statistics in the follow state document are refreshed this often without a checkpoint.
STATS_STORE_S = 5.0
# A group of transactions applied back to back is written and checkpointed at least this often,
# so the checkpoint and the slot's confirmed position stay this close behind a busy stream.
GROUP_S = 0.1
# --stop-at-end follows WAL written after its end position was taken at most this many times.
END_EXTENSIONS = 3

STOPPED, END, IDLE, CAUGHT_UP = "stopped", "end", "idle", "caught_up"


class CatchUpTimeout(ParallelSyncError):
    """copy --follow: the lag never got below --swap-lag-seconds within the bound."""


class Checkpoints(Protocol):
    durable: bool  # confirmed to the server after each store

    def store(self, lsn: str, lsn_int: int, fields: dict[str, Any]) -> None: ...
    def note(self, fields: dict[str, Any]) -> None: ...


class StopFlag(Protocol):
    requested: bool


@dataclass
class Until:
    """When `FollowLoop.run` returns (each checked only between transactions)."""

    end_lsn: int | None = None  # --stop-at-end: this position applied (measured again at it)
    idle_exit: float | None = None  # seconds without a change of the table
    # copy --follow's catch-up: the server's WAL position reached and the lag in seconds at
    # most this; `deadline` (monotonic) bounds how long that may take.
    swap_lag_s: float | None = None
    deadline: float | None = None
    deadline_note: str = ""


def doc_of(snap: FollowSnapshot) -> dict[str, Any]:
    """The statistics for a state document (applied_lsn is the checkpoint's own field)."""
    doc = snap.as_doc()
    del doc["applied_lsn"]
    return doc


class FollowLoop:
    def __init__(
        self,
        stream: ReplicationStream,
        applier: Applier,
        monitor: FollowMonitor,
        checkpoints: Checkpoints,
        stop: StopFlag,
        reporter: Reporter,
        *,
        on_applied: Callable[[str], None] = lambda lsn: None,
    ) -> None:
        self.stream, self.applier, self.monitor = stream, applier, monitor
        self.checkpoints, self.stop, self.reporter = checkpoints, stop, reporter
        self.on_applied = on_applied  # the caller's record of the applied position
        self.seen = applier.checkpoint  # the furthest position the stream has shown
        self.seen_clock: float | None = None  # the server time of that position
        now = time.monotonic()
        self.last_change = self.last_store = self.last_note = self.last_progress = now
        self.group_start = now  # when the first transaction not yet checkpointed was applied
        self.writes_at_save = 0  # the applier's bulk writes at the last group commit
        applier.save = self.save

    def open(self, start: int) -> None:
        self.stream.open(start)
        self.monitor.poll(force=True)

    def stats(self) -> FollowSnapshot:
        t = self.applier.totals
        return self.monitor.snapshot(self.applier.checkpoint, t.transactions, t.changes)

    def switch(self, coll: Collection[Any], checkpoints: Checkpoints) -> None:
        """From here on write `coll` and checkpoint into `checkpoints` (the swap)."""
        self.applier.retarget(coll)
        self.checkpoints = checkpoints

    def checkpoint(self, lsn: int, *, idle: bool = False) -> None:
        t = self.applier.totals
        if self.checkpoints.durable:
            if not idle:
                hooks.fire("follow_applied", lsn=format_lsn(lsn), transactions=t.transactions)
            self.checkpoints.store(format_lsn(lsn), lsn, doc_of(self.stats()))
            hooks.fire("follow_stored", lsn=format_lsn(lsn), transactions=t.transactions, idle=idle)
            self.stream.confirm(lsn)  # only after MongoDB holds the checkpoint
        elif not idle:
            hooks.fire("catch_up_applied", lsn=format_lsn(lsn), transactions=t.transactions)
        self.on_applied(format_lsn(lsn))
        self.last_store = time.monotonic()

    def save(self) -> None:
        """Group commit: write what is applied, THEN checkpoint the last applied commit (which
        confirms it to the server after the checkpoint is stored)."""
        applier = self.applier
        if not applier.unsaved:
            return
        applier.flush()
        self.checkpoint(applier.checkpoint)
        applier.saved()
        self.writes_at_save = applier.totals.bulk_writes

    def _group_ends(self, now: float) -> bool:
        applier = self.applier
        return (
            applier.save_now
            or self.stop.requested
            or now - self.group_start >= GROUP_S
            or applier.totals.bulk_writes != self.writes_at_save  # a chunk reached its bound
            or not self.stream.ready()  # nothing more to read at once: write what we have
        )

    def run(self, until: Until) -> str:
        applier, monitor, stream = self.applier, self.monitor, self.stream
        end_lsn, extensions = until.end_lsn, 0
        target: int | None = None  # catch-up: the server position to reach
        if until.swap_lag_s is not None:
            monitor.poll(force=True)
            target = monitor.server_lsn or 0
        while True:
            msg = stream.read(POLL_S)
            idle = not applier.in_transaction
            if isinstance(msg, Keepalive):
                if msg.end > self.seen:
                    self.seen, self.seen_clock = msg.end, unix_seconds(msg.clock)
            elif msg is not None:
                self.seen = max(self.seen, msg.start)
                commit = applier.feed(decode(msg.payload))
                if commit is not None:
                    monitor.applied_time = unix_seconds(commit.commit_time)
                    if not applier.unsaved:  # a catch-up: nothing is stored
                        self.checkpoint(commit.end_lsn)
                    elif applier.unsaved == 1:
                        self.group_start = time.monotonic()
                    self.seen = max(self.seen, commit.end_lsn)
                    self.last_change = time.monotonic()
                idle = not applier.in_transaction
            now = time.monotonic()
            if idle and applier.unsaved and self._group_ends(now):
                self.save()
            eager = end_lsn is not None or target is not None or not self.checkpoints.durable
            if (
                idle
                and not applier.unsaved
                and self.seen > applier.checkpoint
                and (now - self.last_store >= IDLE_STORE_S or eager)
            ):
                # Nothing received is unapplied: the position the server showed is applied.
                applier.checkpoint = self.seen
                if self.seen_clock is not None:
                    monitor.applied_time = self.seen_clock
                self.checkpoint(self.seen, idle=True)
            if now - self.last_progress >= PROGRESS_S:
                monitor.poll()
                self.reporter.progress(self.stats())
                self.last_progress = now
            if now - max(self.last_store, self.last_note) >= STATS_STORE_S:
                self.checkpoints.note(doc_of(self.stats()))
                self.last_note = now
            if not idle or applier.unsaved:  # mid-transaction, or more of the group ready
                continue
            if msg is None:  # the stream is quiet: what was applied is written
                applier.flush()
            if self.stop.requested:
                return self._done(STOPPED)
            if target is not None:
                assert until.swap_lag_s is not None
                if applier.checkpoint >= target:
                    applier.flush()
                    # Reached: measure again. Caught up with the server, or so close that the
                    # last applied change is at most swap_lag_s old: the swap may go ahead.
                    monitor.poll(force=True)
                    server = monitor.server_lsn or 0
                    lag = self.stats().lag_seconds
                    close = lag is not None and lag <= until.swap_lag_s
                    if server <= applier.checkpoint or close:
                        return self._done(CAUGHT_UP)
                    target = server
                if until.deadline is not None and now >= until.deadline:
                    raise CatchUpTimeout(until.deadline_note)
            if end_lsn is not None and applier.checkpoint >= end_lsn:
                # Reached: measure the server again, so the lag reported is the lag now; WAL
                # written meanwhile (other tables, the server's own records) is followed up to
                # a few times, never chased for ever.
                monitor.poll(force=True)
                server = monitor.server_lsn or 0
                if server <= applier.checkpoint or extensions >= END_EXTENSIONS:
                    return self._done(END)
                end_lsn, extensions = server, extensions + 1
            if (end_lsn is not None or target is not None) and msg is None:
                stream.send_status(reply=True)  # ask for the server's position
            if until.idle_exit is not None and now - self.last_change >= until.idle_exit:
                return self._done(IDLE)

    def _done(self, why: str) -> str:
        self.applier.flush()  # a catch-up's last chunk: everything applied is written
        self.save()
        return why

"""follow's statistics: how far the collection is behind the table, and the WAL the slot keeps.

The lag in bytes is the server's WAL flush position (what decoding can reach) minus the applied
position; in seconds, now minus the server time of the applied position: the commit time of the
last applied transaction, or the clock of the keepalive whose idle position was applied (an
idle table is not "behind" because nothing happened). The slot's retained WAL (from its
restart_lsn on) is what the source must keep on disk for it; past --max-retained-wal-mb a
warning says so, once per crossing. The server is asked on a connection of its own, at most
every POLL_S: a failed look is a warning, never the end of the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from parallelsync.cdc.slots import human_bytes
from parallelsync.cdc.stream import format_lsn, parse_lsn
from parallelsync.job.report import FollowSnapshot
from parallelsync.source.connect import clean, connect

POLL_S = 1.0

_QUERY = """
SELECT pg_current_wal_flush_lsn()::text,
       (SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), restart_lsn)::bigint
        FROM pg_replication_slots WHERE slot_name = %s)
"""


@dataclass
class FollowMonitor:
    dsn: str
    slot: str
    max_retained_bytes: int
    warn: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)
    server_lsn: int | None = None
    retained: int | None = None
    applied_time: float | None = None  # Unix seconds: the server time of the applied position
    _conn: psycopg.Connection[Any] | None = None
    _polled: float = 0.0
    _over: bool = False
    _failed: bool = False

    def poll(self, *, force: bool = False) -> None:
        """Ask the server for its WAL position and the slot's retained WAL (at most every
        POLL_S unless `force`)."""
        now = time.monotonic()
        if not force and now - self._polled < POLL_S:
            return
        self._polled = now
        try:
            if self._conn is None:
                self._conn = connect(
                    self.dsn, autocommit=True, application_name="parallelsync follow stats"
                )
            row = self._conn.execute(_QUERY, (self.slot,)).fetchone()
        except psycopg.Error as exc:
            self.close()
            if not self._failed:  # once: the stream itself says when the source is gone
                self.warn(f"follow: cannot read the server's WAL position: {clean(exc, self.dsn)}")
            self._failed = True
            return
        self._failed = False
        if row is None:
            return
        self.server_lsn = parse_lsn(str(row[0]))
        self.retained = None if row[1] is None else int(row[1])
        self._check_retained()

    def _check_retained(self) -> None:
        over = self.retained is not None and self.retained > self.max_retained_bytes
        if over and not self._over:
            assert self.retained is not None
            self.warn(
                f"warning: slot {self.slot!r} retains {human_bytes(self.retained)} of WAL, more "
                f"than --max-retained-wal-mb {self.max_retained_bytes / 1e6:g} MB: the source "
                "keeps it on disk until follow has applied it (follow is behind, or stopped)"
            )
        self._over = over

    def snapshot(self, applied: int, transactions: int, changes: int) -> FollowSnapshot:
        lag_bytes = None if self.server_lsn is None else max(0, self.server_lsn - applied)
        lag_s = None
        if self.applied_time is not None:
            # Caught up with the server as measured: nothing is waiting, so no time lag.
            lag_s = 0.0 if lag_bytes == 0 else max(0.0, time.time() - self.applied_time)
        return FollowSnapshot(
            applied_lsn=format_lsn(applied), transactions=transactions, changes=changes,
            elapsed=time.monotonic() - self.started,
            server_lsn=None if self.server_lsn is None else format_lsn(self.server_lsn),
            lag_bytes=lag_bytes, lag_seconds=lag_s, retained_wal_bytes=self.retained,
        )  # fmt: skip

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

"""What the snapshot holds: one `count(*)` of the table as the copy reads it, under the workers'
snapshot, and `count(DISTINCT key)` where the catalog cannot prove the key unique.

Comparing the documents written only with the rows the workers read proves nothing about rows no
range selected (a NULL key, a predicate with the wrong operators): both sides miss them alike.
So the count comes from the snapshot itself, in a background thread started with the workers, so
the scan overlaps the copy instead of adding to it; job/checks.py compares. One statement on one
snapshot also makes the distinct count exact.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from parallelsync.errors import ParallelSyncError, SourceError
from parallelsync.source.connect import clean, execute

# How often waiting for the count looks for an abort: as often as the scheduler's loop does.
WAIT_POLL_S = 0.2
# How long a cancel waits for the count to return before leaving its thread behind (it dies
# with the connection, which the guard closes next).
CANCEL_WAIT_S = 10.0


@dataclass(frozen=True)
class Counts:
    rows: int
    distinct_keys: int | None  # None: not counted (the catalog proves the key unique)


def count_query(
    relation: sql.Composable, where: sql.Composable, key: tuple[str, ...] | None
) -> sql.Composed:
    """`key` None: rows only. A NULL key counts as one value, as a NULL `_id` does in MongoDB
    (a ROW is never NULL, and rows compare NULL fields as equal)."""
    distinct: sql.Composable = sql.SQL("NULL::int8")
    if key:
        cols = sql.SQL(", ").join(sql.Identifier(k) for k in key)
        distinct = sql.SQL("count(DISTINCT ROW({}))").format(cols)
    return sql.SQL("SELECT count(*), {} FROM {} WHERE {}").format(distinct, relation, where)


def count_rows(conn: psycopg.Connection[Any], query: sql.Composed) -> Counts:
    row = execute(conn, query).fetchone()
    assert row is not None
    return Counts(int(row[0]), None if row[1] is None else int(row[1]))


class SnapshotCount:
    """`query` in a thread, on a connection that imported the snapshot; `result()` waits.

    It runs on the snapshot guard's connection (guard.py): that one already holds ACCESS SHARE on
    every relation the count reads, so the count never queues for a lock. On a connection of its
    own it would queue behind a TRUNCATE that waits for the guard, which waits for the end of the
    job, which waits for the count."""

    def __init__(self, conn: psycopg.Connection[Any], query: sql.Composed, dsn: str) -> None:
        self._conn = conn
        self._query = query
        self._dsn = dsn
        self._counts: Counts | None = None
        self._error: ParallelSyncError | None = None
        self._thread = threading.Thread(target=self._run, name="snapshot-count", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._counts = count_rows(self._conn, self._query)
        except psycopg.Error as exc:
            self._error = SourceError(
                f"counting the rows of the snapshot failed: {clean(exc, self._dsn)}"
            )
        except Exception as exc:  # report, never die silently
            self._error = SourceError(f"counting the rows of the snapshot failed: {exc!r}")

    def result(self, check: Callable[[], None] = lambda: None) -> Counts:
        """Wait for the count; `check` runs meanwhile and may raise (an abort, a lost lease)."""
        while self._thread.is_alive():
            check()
            self._thread.join(WAIT_POLL_S)
        if self._error is not None:
            raise self._error
        assert self._counts is not None
        return self._counts

    def cancel(self) -> None:
        """Stop a count still running (the job failed or was aborted)."""
        deadline = time.monotonic() + CANCEL_WAIT_S
        while self._thread.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                self._conn.cancel_safe(timeout=5)
            self._thread.join(0.5)

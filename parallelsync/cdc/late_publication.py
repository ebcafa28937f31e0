"""A publication made by `follow` for a slot that exists already, only when nothing is lost.

pgoutput reads the publication under the catalog snapshot of each change it decodes: a change
made before `CREATE PUBLICATION` committed is not published by it (PostgreSQL before 18 even
stops the stream with `publication "p" does not exist` at the first change of any table decoded
under an older snapshot). So a publication created after the slot sends the followed table's
changes only from its creation on. `follow` therefore creates one only when no change of the
table lies between the slot's confirmed position and the creation:

1. in one transaction, `LOCK TABLE ... IN SHARE MODE`: writers of the table in flight finish
   first, new ones wait until the publication is committed, so its creation is the boundary;
2. a temporary copy of the slot with `test_decoding` (which needs no publication) decodes the
   slot's pending changes up to now: any change of the table refuses (the publication would miss
   it), with the count and the fix (a new `copy --slot` makes the publication before the slot);
3. `CREATE PUBLICATION ... FOR TABLE` (marked as ours, like a copy's), commit;
4. the slot is advanced to the position just before that commit: nothing of the table lies
   before it, and decoding other tables' older changes would fail on PostgreSQL before 18.

The temporary slot goes with the session. Every failure of the check refuses (never a follow
that may have lost changes): no `test_decoding`, no free replication slot, a lock not granted.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from parallelsync.cdc.publication import (
    PUBLICATION_MARK,
    relations,
    unpublishable,
    why_not_creatable,
)
from parallelsync.errors import SourceError, UsageError
from parallelsync.source.catalog import TableInfo
from parallelsync.source.connect import clean, connect

# How long the lock that fences the table's writers off may be waited for: a long transaction
# writing the table should not make follow hang; the user is told to try again.
LOCK_TIMEOUT = "10s"
# The WAL writer flushes asynchronous commits within a few wal_writer_delay (200 ms default).
FLUSH_WAIT_S = 10.0

_PENDING = """
SELECT count(*) FILTER (WHERE data LIKE %(prefix)s), count(*)
FROM pg_logical_slot_peek_changes(%(tmp)s, NULL, NULL, 'skip-empty-xacts', '1',
                                  'include-xids', '0')
"""


def create_late_publication(
    dsn: str, name: str, slot: str, table: TableInfo, key: tuple[str, ...]
) -> str:
    """Create publication `name` for `table` for the existing `slot`; returns the position the
    slot was advanced to. Refuses (SourceError / UsageError) when changes could be lost."""
    with connect(dsn, autocommit=True) as conn:
        rels = relations(conn, table, only=True)
        why = unpublishable(table, rels, key)
        if why is not None:
            raise UsageError(f"publication {name!r} does not exist and cannot be made: {why}")
        problem = why_not_creatable(conn, rels)
        if problem is not None:
            raise SourceError(
                f"publication {name!r} does not exist, and follow cannot create it: {problem}. "
                f"Have the owner of {table.display} run CREATE PUBLICATION {name} FOR TABLE "
                f"{table.display} (before any change the slot must carry: see below), or run "
                "follow as the owner"
            )
        with _errors(dsn, name, table), conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            conn.execute(sql.SQL("LOCK TABLE ONLY {} IN SHARE MODE").format(table.ident))
            _refuse_pending(conn, name, slot, table)
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE ONLY {}").format(
                    sql.Identifier(name), table.ident
                )
            )
            conn.execute(
                sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
                    sql.Identifier(name), sql.Literal(f"{PUBLICATION_MARK} {slot}")
                )
            )
            # Still under the lock: no change of the table lies before this position.
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            assert row is not None
            before = str(row[0])
        with _errors(dsn, name, table):
            _wait_flushed(conn)  # the advance stops at the flushed position
            conn.execute(
                "SELECT pg_replication_slot_advance(%s, %s::pg_lsn) "
                "FROM pg_replication_slots WHERE slot_name = %s "
                "AND confirmed_flush_lsn < %s::pg_lsn",
                (slot, before, slot, before),
            )
    return before


def _wait_flushed(conn: psycopg.Connection[Any]) -> None:
    """Decoding reads only flushed WAL: with synchronous_commit off a change already committed
    may not be flushed yet, and the check below must see it. The WAL writer flushes it soon."""
    row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    deadline = time.monotonic() + FLUSH_WAIT_S
    while True:
        done = conn.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", (row[0],)).fetchone()
        if done is not None and done[0]:
            return
        if time.monotonic() >= deadline:
            raise SourceError(
                f"the source's WAL was not flushed up to {row[0]} within {FLUSH_WAIT_S:g} s, so "
                "follow cannot check which changes a new publication would miss; try again"
            )
        time.sleep(0.01)


def _refuse_pending(conn: psycopg.Connection[Any], name: str, slot: str, table: TableInfo) -> None:
    _wait_flushed(conn)
    tmp = f"parallelsync_check_{uuid.uuid4().hex[:12]}"
    conn.execute(
        "SELECT pg_copy_logical_replication_slot(%s, %s, true, 'test_decoding')", (slot, tmp)
    )
    try:
        row = conn.execute(_PENDING, {"prefix": f"table {table.display}:%", "tmp": tmp}).fetchone()
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_drop_replication_slot(%s)", (tmp,))
    assert row is not None
    mine = int(row[0])
    if mine:
        raise SourceError(
            f"publication {name!r} does not exist, and follow does not create it: slot "
            f"{slot!r} holds {mine} change(s) of {table.display} made before any publication "
            "of it, which a publication created now would never send (pgoutput publishes a "
            "change only under a publication that existed when it was made). Copy the table "
            f"again with a new --slot (the copy creates the publication before the slot)"
        )


@contextlib.contextmanager
def _errors(dsn: str, name: str, table: TableInfo) -> Any:
    try:
        yield
    except psycopg.errors.LockNotAvailable:
        raise SourceError(
            f"publication {name!r} does not exist, and follow could not lock {table.display} "
            f"within {LOCK_TIMEOUT} to create it at a known position (a transaction writing the "
            "table held it); try again"
        ) from None
    except psycopg.Error as exc:
        raise SourceError(
            f"publication {name!r} does not exist, and follow could not check that creating it "
            f"loses no change: {clean(exc, dsn)}; nothing was created. Create it with CREATE "
            f"PUBLICATION {name} FOR TABLE {table.display} before changes the slot must carry "
            "(or copy again with a new --slot)"
        ) from None

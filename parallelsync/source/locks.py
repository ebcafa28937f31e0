"""Lock waits: a COPY that cannot get its lock fails after a bound, and says who is in the way.

A worker's COPY takes ACCESS SHARE on the table and keeps it until its transaction ends. DDL such
as `ALTER TABLE ... ADD COLUMN` asks for ACCESS EXCLUSIVE, waits for those locks, and from then on
every new ACCESS SHARE request queues behind it: a worker started to retry a range would wait for
the DDL, which waits for the copy. `lock_timeout` turns that wait into an error the scheduler
retries with back-off (and after --max-attempts reports), instead of a job that never moves.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

# A COPY that cannot lock the table within this many seconds fails and is retried
# (--lock-timeout-seconds): long enough for the short exclusive locks of routine maintenance, short
# enough that a DDL statement queued behind the copy is reported while someone is still watching.
DEFAULT_LOCK_TIMEOUT_S = 10.0
# The longest query text quoted in a message: enough to recognise the statement.
QUERY_CHARS = 120
UNKNOWN_CONFLICT = "another session holds or waits for an exclusive lock on it (see pg_locks)"


def set_lock_timeout(conn: psycopg.Connection[Any], seconds: float) -> None:
    """Bound every lock wait of the current transaction (0: wait as long as it takes)."""
    ms = max(0, round(seconds * 1000))
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{ms}ms")))


def describe_conflict(conn: psycopg.Connection[Any], table_oid: int) -> str:
    """Who holds or waits for an exclusive lock on the table (or one of its partitions), as a
    phrase for a message; on an idle autocommit connection of the same database. (For a table
    that is not partitioned, pg_partition_tree is empty: the table itself is asked for too.)"""
    rows = conn.execute(
        """
        SELECT l.pid, l.granted, coalesce(a.query, '')
        FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
          AND (l.relation = %s::oid
               OR l.relation IN (SELECT relid FROM pg_partition_tree(%s::oid)))
          AND l.pid <> pg_backend_pid()
        ORDER BY l.granted DESC, l.pid
        LIMIT 3
        """,
        (table_oid, table_oid),
    ).fetchall()
    if not rows:
        return UNKNOWN_CONFLICT
    parts = []
    for pid, granted, query in rows:
        text = " ".join(str(query).split())
        if len(text) > QUERY_CHARS:
            text = text[: QUERY_CHARS - 3] + "..."
        verb = "holds" if granted else "is waiting for"
        parts.append(f"pid {pid} ({text or 'no query shown'}) {verb} an exclusive lock on it")
    return "; ".join(parts)

"""The snapshot guard: keeps what the copy reads from being truncated or rewritten under it.

TRUNCATE and table rewrites (VACUUM FULL, CLUSTER, `ALTER TABLE ... TYPE`, REFRESH MATERIALIZED
VIEW) are not MVCC-safe: they give the table a new file, and a snapshot taken before them sees
that file as empty (its rows were written by a transaction the snapshot does not see). Committed
between the snapshot export and the workers' first COPY, one would make the copy read nothing
and end FINISHED. So, as pg_dump does, a connection imports the snapshot before planning and
before any worker starts, takes ACCESS SHARE on the table (which such commands must wait for
while the copy runs), and then checks that every relation read still has the file the snapshot
knows (`pg_class.relfilenode` under the snapshot against `pg_relation_filenode()`, which reads
the current catalog). It stays open until the last range is copied: the snapshot holder cannot
take the lock (with a slot it is a replication connection that must stay idle). The snapshot's
own row count runs on it meanwhile (counts.py says why there).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from parallelsync.errors import SourceError
from parallelsync.source.catalog import TableInfo
from parallelsync.source.connect import clean, connect, execute
from parallelsync.source.counts import SnapshotCount
from parallelsync.source.relations import STORAGE_KINDS, ReadSpec, Relation, leaves
from parallelsync.source.snapshot import import_snapshot

# LOCK TABLE takes tables, partitioned tables and views (a view's base tables are locked too);
# materialized views and foreign tables are locked by planning a read of them instead.
LOCKABLE_KINDS = ("r", "p", "v")


class SnapshotGuard:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._count: SnapshotCount | None = None

    def open(self, snapshot: str, table: TableInfo, read: ReadSpec) -> tuple[Relation, ...]:
        """Lock and check; returns the relations read as the snapshot sees them."""
        conn = connect(self._dsn, autocommit=True)
        self._conn = conn
        try:
            import_snapshot(conn, snapshot)
            if table.relkind in LOCKABLE_KINDS:
                only = sql.SQL("ONLY ") if read.only else sql.SQL("")
                execute(conn, sql.SQL("LOCK TABLE {}{} IN ACCESS SHARE MODE").format(
                    only, table.ident))  # fmt: skip
            else:
                # Planning a query locks every relation it reads until the transaction ends.
                execute(conn, sql.SQL("EXPLAIN SELECT 1 FROM {}").format(read.from_sql(table)))
            rels = leaves(conn, table, children=read.children)
            _check_files(conn, table, rels)
            return rels
        except psycopg.Error as exc:
            self.close()
            raise SourceError(
                f"cannot lock table {table.display} for the copy: {clean(exc, self._dsn)}"
            ) from None
        except BaseException:
            self.close()
            raise

    def start_count(self, query: sql.Composed) -> SnapshotCount:
        """Count under the snapshot on this connection, in the background (counts.py)."""
        assert self._conn is not None, "open the guard first"
        self._count = SnapshotCount(self._conn, query, self._dsn)
        return self._count

    def close(self) -> None:
        if self._count is not None:
            self._count.cancel()
            self._count = None
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def _check_files(
    conn: psycopg.Connection[Any], table: TableInfo, rels: tuple[Relation, ...]
) -> None:
    """Every relation read, as the snapshot lists them (`rels`) and as this session locked them
    (a view's base tables, a partitioned table's partitions), still has the file the snapshot
    knows. A locked relation the snapshot does not know was created since (dropped and created
    again, a partition attached): its rows are not the snapshot's either; one the snapshot lists
    but the lock did not take was detached since."""
    oids = [r.oid for r in rels]
    rows = execute(
        conn,
        """WITH locked AS (
               SELECT relation AS oid FROM pg_locks
               WHERE pid = pg_backend_pid() AND locktype = 'relation' AND relation IS NOT NULL),
           o AS (SELECT unnest(%s::oid[]) AS oid UNION SELECT oid FROM locked)
           SELECT o.oid::regclass::text, c.oid IS NOT NULL, c.relkind::text,
                  n.nspname::text, c.relname::text, c.relfilenode::int8,
                  pg_relation_filenode(o.oid)::int8, o.oid IN (SELECT oid FROM locked)
           FROM o LEFT JOIN pg_class c ON c.oid = o.oid
           LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
           ORDER BY o.oid""",
        (oids,),
    ).fetchall()
    for now_name, known, relkind, schema, name, seen, current, locked in rows:
        if not known:
            if current is not None:
                raise SourceError(
                    f"relation {now_name} (read as part of {table.display}) was created after "
                    "the snapshot was taken (dropped and created again, or attached as a "
                    "partition): its rows are not in the snapshot; run the copy again"
                )
            continue
        if relkind not in STORAGE_KINDS or schema in ("pg_catalog", "information_schema"):
            continue
        if current is None:
            raise SourceError(
                f"table {schema}.{name} was dropped after the snapshot was taken: run the copy "
                "again"
            )
        if seen != current:
            raise SourceError(
                f"table {schema}.{name} was truncated or rewritten after the snapshot was taken "
                "(TRUNCATE, VACUUM FULL, CLUSTER, ALTER TABLE ... TYPE ..., REFRESH MATERIALIZED "
                "VIEW): its rows are not in the snapshot; run the copy again"
            )
        if not locked:
            raise SourceError(
                f"table {schema}.{name} was detached from {table.display} (or no longer inherits "
                "from it) after the snapshot was taken: run the copy again"
            )

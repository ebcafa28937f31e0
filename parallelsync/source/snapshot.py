"""The one consistent snapshot every worker imports.

With a slot: a replication connection runs `CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')`,
which returns the exact LSN where change capture resumes, and must stay idle while the snapshot is
in use. Without: a REPEATABLE READ transaction exports its snapshot. Either way the holder is kept
open until the last range is copied (not only until the first import) so that a replacement worker
started after a failure can still import the very same snapshot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from parallelsync.errors import SourceError, UsageError
from parallelsync.source.connect import clean, connect

SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")


# application_name is cut to 63 bytes (NAMEDATALEN - 1); readers compare the same prefix.
HOLDER_APP_PREFIX = "parallelsync slot "
APP_NAME_MAX = 63


def holder_application_name(slot: str) -> str:
    return (HOLDER_APP_PREFIX + slot)[:APP_NAME_MAX]


@dataclass(frozen=True)
class Snapshot:
    name: str
    consistent_lsn: str | None
    slot: str | None


def check_slot_name(slot: str) -> None:
    if not SLOT_NAME.match(slot):
        raise UsageError(
            f"invalid slot name {slot!r}: use 1-63 lower-case letters, digits and underscores"
        )


def check_logical(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SHOW wal_level").fetchone()
    level = row[0] if row else "?"
    if level != "logical":
        raise SourceError(
            f"--slot needs wal_level=logical on the source, but it is {level!r}: set "
            "wal_level = logical in postgresql.conf and restart PostgreSQL, or run without --slot"
        )


def check_replication_role(conn: psycopg.Connection[Any]) -> None:
    """Creating a replication slot needs the REPLICATION attribute (or superuser)."""
    row = conn.execute(
        "SELECT rolreplication OR rolsuper, current_user::text FROM pg_roles "
        "WHERE rolname = current_user"
    ).fetchone()
    if row is not None and not row[0]:
        raise SourceError(
            f"--slot creates a logical replication slot, which needs the REPLICATION attribute: "
            f"the role {row[1]} lacks it; ALTER ROLE {row[1]} REPLICATION (as a superuser), or "
            "run without --slot"
        )


def slot_exists(conn: psycopg.Connection[Any], slot: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone()
    return row is not None


class SnapshotHolder:
    def __init__(self, dsn: str, slot: str | None, *, temporary: bool = False) -> None:
        self._dsn = dsn
        self._slot = slot
        self._temporary = temporary  # a resume's helper slot: gone when the connection closes
        self._conn: psycopg.Connection[Any] | None = None
        self.snapshot: Snapshot | None = None

    def open(self) -> Snapshot:
        if self._slot is None:
            conn = connect(self._dsn)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            assert row is not None
            self._conn = conn
            self.snapshot = Snapshot(str(row[0]), None, None)
            return self.snapshot
        # While it holds the exported snapshot the slot shows as inactive; this name tells
        # `slot list`, `slot drop` and other copies' preflight that a live copy holds it.
        app = holder_application_name(self._slot)
        conn = connect(self._dsn, autocommit=True, replication="database", application_name=app)
        try:
            cur = conn.execute(
                sql.SQL("CREATE_REPLICATION_SLOT {} {}LOGICAL pgoutput (SNAPSHOT 'export')").format(
                    sql.Identifier(self._slot), sql.SQL("TEMPORARY " if self._temporary else "")
                )
            )
            row = cur.fetchone()
        except psycopg.errors.DuplicateObject:
            conn.close()
            raise SourceError(
                f"replication slot {self._slot!r} already exists: another job or consumer uses it; "
                "choose another --slot, or drop the old one with "
                f"parallelsync slot drop {self._slot} --source DSN if it is abandoned"
            ) from None
        except psycopg.Error as exc:
            conn.close()
            raise SourceError(
                f"cannot create replication slot {self._slot!r}: {clean(exc, self._dsn)}"
            ) from None
        assert row is not None
        # Columns: slot_name, consistent_point, snapshot_name, output_plugin.
        self._conn = conn
        self.snapshot = Snapshot(str(row[2]), str(row[1]), self._slot)
        return self.snapshot

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def drop_slot(self) -> None:
        """Drop the slot this run created: a failed run's slot would only hold WAL back."""
        self.close()
        if self._slot is None or self.snapshot is None:
            return
        drop_slot(self._dsn, self._slot)


def drop_slot(dsn: str, slot: str) -> None:
    try:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s AND NOT active",
                (slot,),
            )
    except (psycopg.Error, SourceError):
        pass


def import_snapshot(conn: psycopg.Connection[Any], name: str) -> None:
    """Start a read-only REPEATABLE READ transaction that sees exactly the exported snapshot."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(name)))
    except psycopg.errors.InvalidParameterValue as exc:
        # The exporting connection is gone (a PostgreSQL restart ends it): no retry can bring the
        # snapshot back, and the rows of a new one would not match the ranges already copied.
        raise SourceError(
            f"importing the snapshot failed: {exc.diag.message_primary or exc}: the snapshot "
            "the copy reads no longer exists (PostgreSQL restarted, or the connection that "
            "exported it was closed); the target is unchanged: run the copy again"
        ) from None

"""The publication that tells the slot which table's changes to decode."""

from __future__ import annotations

import contextlib

import psycopg
from psycopg import sql

from parallelsync.errors import SourceError
from parallelsync.source.catalog import TableInfo
from parallelsync.source.connect import connect

# The start of the comment on every publication parallelsync creates.
PUBLICATION_MARK = "created by parallelsync for replication slot"


def ensure_publication(dsn: str, table: TableInfo, name: str) -> bool:
    """Publish the table for the slot, so a resume can learn which rows changed meanwhile.

    Returns False (and the copy goes on) when the user may not create publications."""
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
        if row is not None:
            return True
        try:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(name), table.ident
                )
            )
        except psycopg.Error:
            return False
        # The mark lets `slot drop` tell our publication from a user's of the same name.
        with contextlib.suppress(psycopg.Error):  # unmarked, it is only never dropped by us
            conn.execute(
                sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
                    sql.Identifier(name), sql.Literal(f"{PUBLICATION_MARK} {name}")
                )
            )
    return True


def drop_publication(dsn: str, name: str) -> None:
    try:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
    except (psycopg.Error, SourceError):
        pass

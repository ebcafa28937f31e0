"""Operations on an existing replication slot."""

from __future__ import annotations

from parallelsync.source.connect import connect


def advance_slot(dsn: str, slot: str, lsn: str) -> None:
    """The target now reflects `lsn`: change capture must start there, not at the old point."""
    with connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, lsn))

"""Which rows changed in the slot's pending WAL, read with the SQL peek function.

Peeking decodes from the slot's restart point on every call and returns whole transactions at
once: fine for the bounded catch-up of a resume and for changed-row jobs, not for following a
table (that streams with the replication protocol)."""

from __future__ import annotations

from typing import Any

import psycopg

from parallelsync.cdc.pgoutput import KeyChanges, KeyCollector


def changed_keys(
    conn: psycopg.Connection[Any],
    slot: str,
    upto_lsn: str,
    publication: str,
    key: tuple[str, ...],
    relids: frozenset[int],
) -> KeyChanges:
    """Keys of rows changed by transactions committed before `upto_lsn` (peeked, not consumed),
    in the relations `relids` only: a publication may cover other tables too."""
    collector = KeyCollector(key, relids)
    cur = conn.cursor(name="ps_peek") if not conn.autocommit else conn.cursor()
    cur.execute(
        "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, "
        "'proto_version', '1', 'publication_names', %s)",
        (slot, upto_lsn, publication),
    )
    for (data,) in cur:
        collector.feed(bytes(data))
    return collector.changes


def flush_position(conn: psycopg.Connection[Any]) -> str | None:
    """Flush the WAL and return the flush position, which then covers every earlier commit.

    Commits made with synchronous_commit=off may not be flushed yet, and decoding only reads
    flushed WAL. A synchronous commit of our own flushes everything before it, but PostgreSQL
    only waits for the flush when the transaction itself wrote WAL (an xid alone writes none, and
    its commit is then asynchronous): a transactional logical message is such a write (pgoutput
    does not pass it on unless asked). The flush position, not pg_current_wal_lsn (the write
    position, which can be behind commits made since), is what decoding can reach."""
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit = on")
        conn.execute("SELECT pg_logical_emit_message(true, 'parallelsync', 'flush')")
    row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
    return str(row[0]) if row else None

"""Downstream refresh jobs: one document per row changed between the snapshot and now.

The copy reflects the snapshot; rows changed while it ran are exactly the slot's pending changes,
which this reads without consuming them (change capture still gets them). The old fullSync.js
created such "refresher" jobs for the rows that moved on during its copy.

The slot gives each key in its text form; `key` in a refresh job has the BSON types of the copied
documents (`{id: 5}` where `_id` is the int32 5, not `"5"`): the text is cast back to the column's
type by PostgreSQL and encoded by the copy's own transcoder, through the projection's key layout,
so the key is written exactly as the document's key columns are."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from bson.raw_bson import RawBSONDocument
from psycopg import sql

from parallelsync.cdc.catchup import chunks, documents, key_rows, sorted_keys
from parallelsync.cdc.peek import changed_keys, flush_position
from parallelsync.cdc.publication import published_relids
from parallelsync.mapping.projection import Projection
from parallelsync.source.catalog import TableInfo
from parallelsync.source.connect import connect
from parallelsync.targets import Target
from parallelsync.transcode.encoder import DocumentEncoder


def typed_keys(
    conn: psycopg.Connection[Any],
    info: TableInfo,
    projection: Projection,
    keys: list[tuple[str | None, ...]],
    dsn: str,
) -> list[RawBSONDocument]:
    """Each text key as the document {column: value} the copy would write, in order."""
    assert projection.key_layout is not None
    encoder = DocumentEncoder(projection.key_layout)
    out: list[RawBSONDocument] = []
    for chunk in chunks(keys):
        q = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT BINARY)").format(
            projection.key_select, key_rows(info, projection.key, chunk)
        )
        out += [RawBSONDocument(d)["_id"] for d in documents(conn, q.as_string(None), encoder, dsn)]
    assert len(out) == len(keys)
    return out


def emit_changed_rows(
    dsn: str,
    *,
    slot: str,
    publication: str,
    info: TableInfo,
    projection: Projection,
    only: bool,
    since_lsn: str | None,
    job_id: str,
    table: str,
    target: Target,
    collection: str,
) -> tuple[int, str]:
    """Write one PENDING document per changed row into `collection`: (count, up-to LSN)."""
    with connect(dsn, autocommit=True) as conn:
        upto = flush_position(conn) or since_lsn or "0/0"
        relids = published_relids(conn, info, only=only)
        changes = changed_keys(conn, slot, upto, publication, projection.key, relids)
        # The text of dates and times follows the session's settings: the peek above and the
        # casts below run in this one session, so they agree.
        keys = typed_keys(conn, info, projection, sorted_keys(changes), dsn)
    now = dt.datetime.now(dt.UTC)
    docs: list[dict[str, Any]] = [
        {
            "job_id": job_id,
            "source": table,
            "key": key,  # raw BSON: inserted byte for byte
            "status": "PENDING",
            "created_at": now,
            "upto_lsn": upto,
        }
        for key in keys
    ]
    target.add_documents(collection, docs)
    return len(docs), upto

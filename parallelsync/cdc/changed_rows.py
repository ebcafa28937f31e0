"""Downstream refresh jobs: one document per row changed between the snapshot and now.

The copy reflects the snapshot; rows changed while it ran are exactly the slot's pending changes,
which this reads without consuming them (change capture still gets them). The old fullSync.js
created such "refresher" jobs for the rows that moved on during its copy."""

from __future__ import annotations

import datetime as dt
from typing import Any

from parallelsync.cdc.peek import changed_keys, flush_position
from parallelsync.source.connect import connect
from parallelsync.targets import Target


def emit_changed_rows(
    dsn: str,
    *,
    slot: str,
    publication: str,
    key: tuple[str, ...],
    since_lsn: str | None,
    job_id: str,
    table: str,
    target: Target,
    collection: str,
) -> tuple[int, str]:
    """Write one PENDING document per changed row into `collection`: (count, up-to LSN)."""
    with connect(dsn, autocommit=True) as conn:
        upto = flush_position(conn) or since_lsn or "0/0"
        changes = changed_keys(conn, slot, upto, publication, key)
    now = dt.datetime.now(dt.UTC)
    docs: list[dict[str, Any]] = [
        {
            "job_id": job_id,
            "source": table,
            "key": dict(zip(key, k, strict=True)),
            "status": "PENDING",
            "created_at": now,
            "upto_lsn": upto,
        }
        for k in sorted(changes.keys, key=lambda t: tuple("" if v is None else v for v in t))
    ]
    target.add_documents(collection, docs)
    return len(docs), upto

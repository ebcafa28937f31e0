"""Resuming a copy whose coordinator died (`copy --resume JOB_ID|last`).

What survives a dead coordinator: the job document (ranges with their status and exact COPY
statements) and the temp collection with every range that finished. The exported snapshot does
not survive (it lives in the coordinator's connection), so the remaining ranges are copied under a
new snapshot. To still give one consistent result:

- With a slot (and the publication created with it), the rows that changed between the first
  snapshot and the new one are read from the slot, their documents deleted from the temp
  collection, and the rows re-read from the new snapshot through the same transcoder. The result
  is the table as of the new snapshot, whose LSN becomes the job's consistent LSN (the slot is
  advanced to it after the swap).
- Without a slot, finished ranges keep the first snapshot's rows and the rest come from the new
  one ("per-range" consistency, recorded in the job document). Partly written ranges are cleared
  by `_id` range first where BSON orders `_id` like PostgreSQL orders the key; otherwise their
  documents are replaced by the new snapshot's version (rows deleted in between can remain).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import psycopg
from bson.raw_bson import RawBSONDocument
from psycopg import sql
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from parallelsync.cdc.pgoutput import KeyChanges, KeyCollector
from parallelsync.config import CopyConfig
from parallelsync.errors import SourceError, TargetError, UsageError
from parallelsync.mapping import Projection
from parallelsync.source.catalog import TableInfo
from parallelsync.source.connect import clean, connect
from parallelsync.source.copystream import copy_batches
from parallelsync.source.predicates import user_filter
from parallelsync.target.stats import ABORTED, FAILED, FINISHED, RUNNING
from parallelsync.transcode.encoder import DocumentEncoder

# Changed keys are re-read and applied in chunks of this many, bounding memory and statement size.
KEY_CHUNK = 5_000


def fingerprint(table: TableInfo, proj: Projection, cfg: CopyConfig) -> str:
    """What must not change between a run and its resumption: table, projection, filter, key."""
    parts = [table.display, proj.select_list.as_string(None), cfg.where or "", ",".join(proj.key)]
    parts.append(repr(proj.layout))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def find_job(stats: Collection[Any], spec: str, db: str, collection: str) -> dict[str, Any]:
    if spec == "last":
        job = stats.find_one(
            {"target.db": db, "target.collection": collection}, sort=[("started_at", -1)]
        )
        if job is None:
            raise UsageError(f"--resume last: no earlier job for {db}.{collection} in {stats.name}")
    else:
        job = stats.find_one({"_id": spec})
        if job is None:
            raise UsageError(f"--resume {spec}: no such job in {db}.{stats.name}")
        if (job.get("target") or {}).get("collection") != collection:
            raise UsageError(
                f"job {spec} copied into {job['target'].get('collection')!r}, not {collection!r}"
            )
    status = job.get("status")
    if status == FINISHED:
        raise UsageError(f"job {job['_id']} already finished: there is nothing to resume")
    if status in (FAILED, ABORTED):
        raise UsageError(
            f"job {job['_id']} ended {status} and removed its temp collection: start a new copy"
        )
    if status != RUNNING:
        raise UsageError(f"job {job['_id']} has status {status!r} and cannot be resumed")
    return dict(job)


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
    return True


def drop_publication(dsn: str, name: str) -> None:
    try:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name)))
    except (psycopg.Error, SourceError):
        pass


def changed_keys(
    conn: psycopg.Connection[Any], slot: str, upto_lsn: str, publication: str, key: tuple[str, ...]
) -> KeyChanges:
    """Keys of rows changed by transactions committed before `upto_lsn` (peeked, not consumed)."""
    collector = KeyCollector(key)
    cur = conn.cursor(name="ps_peek") if not conn.autocommit else conn.cursor()
    cur.execute(
        "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, "
        "'proto_version', '1', 'publication_names', %s)",
        (slot, upto_lsn, publication),
    )
    for (data,) in cur:
        collector.feed(bytes(data))
    return collector.changes


def _chunks(keys: list[tuple[str | None, ...]]) -> Iterator[list[tuple[str | None, ...]]]:
    for i in range(0, len(keys), KEY_CHUNK):
        yield keys[i : i + KEY_CHUNK]


def _unnest(
    table: TableInfo, key: tuple[str, ...], keys: list[tuple[str | None, ...]]
) -> sql.Composable:
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::text[]").format(sql.Literal([k[i] for k in keys])) for i in range(len(key))
    )
    names = sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(len(key)))
    return sql.SQL("unnest({}) AS u({})").format(arrays, names)


def _key_rows(
    table: TableInfo, key: tuple[str, ...], keys: list[tuple[str | None, ...]]
) -> sql.Composable:
    """A relation with the table's column names: key columns from the keys, the rest NULL.

    Running the copy's own SELECT list over it yields, through the transcoder, the `_id` each key
    had in the temp collection, whatever the mapping does to build `_id`."""
    cols = []
    for col in table.columns:
        typ = sql.SQL(col.type_sql)
        if col.name in key:
            src: sql.Composable = sql.SQL("u.{}::{}").format(
                sql.Identifier(f"c{key.index(col.name)}"), typ
            )
        else:
            src = sql.SQL("NULL::{}").format(typ)
        cols.append(sql.SQL("{} AS {}").format(src, sql.Identifier(col.name)))
    return sql.SQL("(SELECT {} FROM {}) AS {}").format(
        sql.SQL(", ").join(cols), _unnest(table, key, keys), sql.Identifier(table.name)
    )


def _documents(
    conn: psycopg.Connection[Any], query: str, encoder: DocumentEncoder, dsn: str
) -> list[bytes]:
    docs: list[bytes] = []
    for buf, start in copy_batches(conn, query, dsn, 10_000, 8 << 20):
        docs.extend(encoder.encode(buf, start).documents())
    return docs


def apply_changes(
    conn: psycopg.Connection[Any],
    table: TableInfo,
    proj: Projection,
    cfg: CopyConfig,
    changes: KeyChanges,
    temp: Collection[Any],
) -> tuple[int, int]:
    """Bring the temp collection's changed rows to the snapshot `conn` is in.

    Returns (rows changed, net change in the document count)."""
    if changes.truncated:
        raise SourceError(
            f"{table.display} was truncated after the first snapshot: resume cannot reconcile "
            "that; start a new copy"
        )
    encoder = DocumentEncoder(proj.layout)
    key = proj.key
    where = user_filter(cfg.where)
    lhs = sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in key))
    typed = sql.SQL(", ").join(
        sql.SQL("u.{}::{}").format(sql.Identifier(f"c{i}"), sql.SQL(table.column(k).type_sql))
        for i, k in enumerate(key)
    )
    delta = 0
    for chunk in _chunks(
        sorted(changes.keys, key=lambda t: tuple("" if v is None else v for v in t))
    ):
        ids_q = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT BINARY)").format(
            proj.select_list, _key_rows(table, key, chunk)
        )
        ids = [
            RawBSONDocument(d)["_id"]
            for d in _documents(conn, ids_q.as_string(None), encoder, cfg.source)
        ]
        rows_q = sql.SQL(
            "COPY (SELECT {} FROM {} WHERE {} IN (SELECT {} FROM {}) AND {}) "
            "TO STDOUT (FORMAT BINARY)"
        ).format(proj.select_list, table.ident, lhs, typed, _unnest(table, key, chunk), where)
        docs = _documents(conn, rows_q.as_string(None), encoder, cfg.source)
        try:
            delta -= temp.delete_many({"_id": {"$in": ids}}).deleted_count
            delta += len(docs)
            if docs:
                temp.insert_many([RawBSONDocument(d) for d in docs], ordered=False)
        except PyMongoError as exc:
            raise TargetError(f"applying changed rows to {temp.name} failed: {exc}") from None
    return len(changes.keys), delta


def count_rows(conn: psycopg.Connection[Any], table: TableInfo, where: str | None) -> int:
    """The one full count a resume with catch-up needs (under the new snapshot)."""
    q = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table.ident, user_filter(where))
    row = conn.execute(q).fetchone()
    return int(row[0]) if row else 0


def clear_range(temp: Collection[Any], id_filter: dict[str, Any] | None) -> bool:
    """Remove what a failed attempt wrote for a range, where the range is selectable by `_id`."""
    if id_filter is None:
        return False
    try:
        temp.delete_many(id_filter)
    except PyMongoError as exc:
        raise TargetError(f"clearing a partly copied range in {temp.name} failed: {exc}") from None
    return True


__all__ = [
    "apply_changes",
    "changed_keys",
    "clean",
    "clear_range",
    "drop_publication",
    "ensure_publication",
    "find_job",
    "fingerprint",
]

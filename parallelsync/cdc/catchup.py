"""Bringing rows that changed after the first snapshot to a newer one (the catch-up of a resume).

The changed rows' keys come from the slot (peek.py); their documents are deleted from the temp
collection by the `_id` they had, and the rows are re-read under the new snapshot through the same
projection and transcoder as the copy, so a caught-up document has exactly the bytes a fresh copy
would write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
from bson.raw_bson import RawBSONDocument
from psycopg import sql

from parallelsync.cdc.pgoutput import KeyChanges
from parallelsync.errors import SourceError
from parallelsync.mapping.projection import Projection
from parallelsync.source.catalog import TableInfo
from parallelsync.source.copystream import copy_batches
from parallelsync.source.predicates import user_filter
from parallelsync.targets import Target
from parallelsync.transcode.encoder import DocumentEncoder

# Changed keys are re-read and applied in chunks of this many, bounding memory and statement size.
KEY_CHUNK = 5_000


def chunks(keys: list[tuple[str | None, ...]]) -> Iterator[list[tuple[str | None, ...]]]:
    for i in range(0, len(keys), KEY_CHUNK):
        yield keys[i : i + KEY_CHUNK]


def sorted_keys(changes: KeyChanges) -> list[tuple[str | None, ...]]:
    return sorted(changes.keys, key=lambda t: tuple("" if v is None else v for v in t))


def _unnest(
    table: TableInfo, key: tuple[str, ...], keys: list[tuple[str | None, ...]]
) -> sql.Composable:
    arrays = sql.SQL(", ").join(
        sql.SQL("{}::text[]").format(sql.Literal([k[i] for k in keys])) for i in range(len(key))
    )
    names = sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(len(key)))
    return sql.SQL("unnest({}) WITH ORDINALITY AS u({}, n)").format(arrays, names)


def key_rows(
    table: TableInfo, key: tuple[str, ...], keys: list[tuple[str | None, ...]]
) -> sql.Composable:
    """A relation with the table's column names: key columns from the keys, the rest NULL, one
    row per key in the order of `keys`.

    Running the copy's own SELECT list over it yields, through the transcoder, the `_id` each key
    had in the temp collection, whatever the mapping does to build `_id`; the projection's key
    SELECT yields the key values with the documents' types (changed_rows.py)."""
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
    return sql.SQL("(SELECT {} FROM {} ORDER BY u.n) AS {}").format(
        sql.SQL(", ").join(cols), _unnest(table, key, keys), sql.Identifier(table.name)
    )


def documents(
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
    where: str | None,
    dsn: str,
    changes: KeyChanges,
    target: Target,
    temp: str,
    relation: sql.Composable | None = None,
) -> tuple[int, int]:
    """Bring the temp collection's changed rows to the snapshot `conn` is in; `relation` is the
    table as the copy reads it (`ONLY t` unless its children are read), by default the table.

    Returns (rows changed, net change in the document count)."""
    if changes.truncated:
        raise SourceError(
            f"{table.display} was truncated after the first snapshot: resume cannot reconcile "
            "that; start a new copy"
        )
    encoder = DocumentEncoder(proj.layout)
    key = proj.key
    cond = user_filter(where)
    lhs = sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in key))
    typed = sql.SQL(", ").join(
        sql.SQL("u.{}::{}").format(sql.Identifier(f"c{i}"), sql.SQL(table.column(k).type_sql))
        for i, k in enumerate(key)
    )
    delta = 0
    for chunk in chunks(sorted_keys(changes)):
        ids_q = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT BINARY)").format(
            proj.select_list, key_rows(table, key, chunk)
        )
        ids = [
            RawBSONDocument(d)["_id"] for d in documents(conn, ids_q.as_string(None), encoder, dsn)
        ]
        rows_q = sql.SQL(
            "COPY (SELECT {} FROM {} WHERE {} IN (SELECT {} FROM {}) AND {}) "
            "TO STDOUT (FORMAT BINARY)"
        ).format(
            proj.select_list, relation or table.ident, lhs, typed, _unnest(table, key, chunk), cond
        )
        docs = documents(conn, rows_q.as_string(None), encoder, dsn)
        delta += target.replace(temp, ids, docs)
    return len(changes.keys), delta

"""From the table's columns to the SELECT list and the document layout the transcoder writes.

`_id` is the key: the single key column's value, or an embedded document of the key columns for a
composite key, or (no key at all) the row's ctid packed as an int64 `block << 16 | offset`, which
is unique and stable for the one snapshot the copy reads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from psycopg import sql

from parallelsync.config import CopyConfig
from parallelsync.errors import SourceError
from parallelsync.source.catalog import Column, TableInfo
from parallelsync.transcode.model import Codec, DocNode, EncodeOptions, FieldNode, Layout, Node


@dataclass(frozen=True)
class Projection:
    select_list: sql.Composable
    layout: Layout
    key: tuple[str, ...]  # key columns used for ranges and _id (empty: ctid)


def choose_key(table: TableInfo, requested: tuple[str, ...] | None) -> tuple[str, ...]:
    if requested:
        for name in requested:
            table.column(name)
        return requested
    return table.primary_key


def with_mode(codec: Codec, cfg: CopyConfig) -> Codec:
    if codec.name == "uuid" and cfg.uuid == "string":
        return replace(codec, mode="string")
    if codec.elem is not None:
        return replace(codec, elem=with_mode(codec.elem, cfg))
    return codec


def build_projection(table: TableInfo, cfg: CopyConfig) -> Projection:
    key = choose_key(table, cfg.key)
    cols_by_name = {c.name: c for c in table.columns}
    exprs: list[sql.Composable] = []
    nodes: list[Node] = []

    def add(col: Column) -> int:
        exprs.append(table.select_expr(col))
        return len(exprs) - 1

    if not key:
        if table.relkind != "r":
            raise SourceError(
                f"{table.display} has no primary key and is not a plain table, so rows have no "
                "stable identity: name a unique key with --key col[,col]"
            )
        exprs.append(sql.SQL("ctid"))
        nodes.append(FieldNode("_id", 0, Codec("tid")))
    elif len(key) == 1:
        col = cols_by_name[key[0]]
        nodes.append(FieldNode("_id", add(col), with_mode(col.codec, cfg)))
    else:
        children = tuple(
            FieldNode(k, add(cols_by_name[k]), with_mode(cols_by_name[k].codec, cfg)) for k in key
        )
        nodes.append(DocNode("_id", children))
    for col in table.columns:
        if col.name in key:
            continue
        nodes.append(FieldNode(col.name, add(col), with_mode(col.codec, cfg)))
    options = EncodeOptions(
        nulls=cfg.nulls,  # type: ignore[arg-type]
        infinity=cfg.infinity,  # type: ignore[arg-type]
        numeric_fallback=cfg.numeric,  # type: ignore[arg-type]
        json_keys=cfg.json_keys,  # type: ignore[arg-type]
    )
    layout = Layout(tuple(nodes), len(exprs), options)
    return Projection(sql.SQL(", ").join(exprs), layout, key)

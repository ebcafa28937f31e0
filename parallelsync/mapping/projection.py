"""From the table's columns (and the `[mapping]` config) to the SELECT list and document layout.

`_id` is the key: the single key column's value, or an embedded document of the key columns for a
composite key (or, with `id_format = "string"`, the key columns' text joined by `id_separator`,
computed in the SELECT), or (no key at all) the row's ctid packed as an int64
`block << 16 | offset`, which is unique and stable for the one snapshot the copy reads.

The mapping is checked against the live table here, at preflight: a column it names that the table
does not have (schema drift), two columns on one path, or a path that is both a value and a parent
stop the run before anything is written. See docs/mapping.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import psycopg
from psycopg import sql

from parallelsync.errors import SourceError, UsageError
from parallelsync.mapping.config import TYPE_OVERRIDES, MappingConfig, check_path
from parallelsync.source.catalog import Column, TableInfo
from parallelsync.transcode.model import Codec, DocNode, EncodeOptions, FieldNode, Layout, Node


class ShapeOptions(Protocol):
    """The options that shape documents (a `CopyConfig` has them all)."""

    @property
    def mapping(self) -> MappingConfig: ...
    @property
    def key(self) -> tuple[str, ...] | None: ...
    @property
    def uuid(self) -> str: ...
    @property
    def nulls(self) -> str: ...
    @property
    def infinity(self) -> str: ...
    @property
    def numeric(self) -> str: ...
    @property
    def json_keys(self) -> str: ...
    @property
    def array_bounds(self) -> str: ...


@dataclass(frozen=True)
class Projection:
    select_list: sql.Composable
    layout: Layout
    key: tuple[str, ...]  # key columns used for ranges and _id (empty: ctid)
    # `_id` is built from the range key itself (or from the ctid that ctid ranges split), so a
    # range's bounds are bounds on `_id` too. False when mapping.id names other columns: then no
    # `_id` filter can select a range (job/checks.py), nor clear one on a resume.
    id_is_key: bool = True
    # Per SELECT expression: the column it reads as is (after a `[mapping.types]` override, which
    # may add a cast), or None for a computed one (ctid, a string _id). Change capture builds
    # these values from the change stream's row (cdc/documents.py).
    sources: tuple[Column | None, ...] = ()
    # The key columns alone, encoded as the copy encodes them (types, overrides, modes) into
    # {_id: {column: value, ...}}: how a changed row's key (text from the slot) gets the BSON
    # types of the documents. Select it from a relation with the table's column names.
    key_select: sql.Composable = field(default_factory=lambda: sql.SQL(""))
    key_layout: Layout | None = None


def choose_key(table: TableInfo, requested: tuple[str, ...] | None) -> tuple[str, ...]:
    if requested:
        for name in requested:
            if not any(c.name == name for c in table.columns):
                raise SourceError(
                    f"key column {name!r} does not exist in table {table.display}: "
                    "check --key / mapping.id"
                )
        return requested
    return table.primary_key


def with_mode(codec: Codec, cfg: ShapeOptions) -> Codec:
    if codec.name == "uuid" and cfg.uuid == "string":
        return replace(codec, mode="string")
    if codec.elem is not None:
        return replace(codec, elem=with_mode(codec.elem, cfg))
    return codec


# Override name -> the codec of the value after the SELECT's cast.
_OVERRIDE_CODECS: dict[str, Codec] = {
    "string": Codec("text"),
    "double": Codec("float8"),
    "decimal": Codec("numeric"),
    "int32": Codec("int4"),
    "int64": Codec("int8"),
    "bool": Codec("bool"),
    "date": Codec("timestamptz"),
    "json": Codec("jsonb"),
    "binary": Codec("bytea"),
    "uuid": Codec("uuid"),
    "uuid_string": Codec("uuid", mode="string"),
}
_UUID_OID = 2950


def override_type(col: Column, name: str) -> Column:
    """The column as a `[mapping.types]` override sends it: cast in the SELECT, fixed codec."""
    codec = _OVERRIDE_CODECS[name]
    cast: str | None = TYPE_OVERRIDES[name]
    if col.type_oid == _UUID_OID and codec.name == "uuid":
        cast = None  # already a uuid: only the output mode changes
    return replace(col, codec=codec, cast=cast)


def check_mapping_columns(table: TableInfo, m: MappingConfig, key: tuple[str, ...] | None) -> None:
    """Schema drift: every column the mapping or --key names must exist in the live table."""
    have = {c.name for c in table.columns}
    named = m.mentioned() | set(key or ())
    missing = sorted(n for n in named if n not in have)
    if missing:
        cols = ", ".join(repr(n) for n in missing)
        raise SourceError(
            f"the mapping names column(s) {cols} that table {table.display} does not have "
            "(the table changed, or a typo in [mapping] / --key): fix the mapping; "
            "nothing was copied"
        )


def copied_columns(table: TableInfo, m: MappingConfig, id_cols: tuple[str, ...]) -> list[Column]:
    """The columns written as ordinary fields, in output order."""
    by_name = {c.name: c for c in table.columns}
    exclude = set(m.exclude)
    if m.include is None:
        chosen = [c.name for c in table.columns if c.name not in exclude]
    else:
        chosen = list(m.include)
        mentioned = set(m.include) | exclude | set(id_cols)
        extra = [c.name for c in table.columns if c.name not in mentioned]
        if extra and m.new_columns == "error":
            raise SourceError(
                f"table {table.display} has column(s) {', '.join(extra)} that mapping.include does "
                "not list: add them to include or exclude, or set mapping.new_columns to "
                '"copy" or "ignore"'
            )
        if m.new_columns == "copy":
            chosen += extra
    if not m.keep_key_fields:
        chosen = [n for n in chosen if n not in id_cols]
    out = [by_name[n] for n in chosen]
    written = set(chosen) | set(id_cols)
    for what, names in (("renames", m.field_map()), ("sets a type for", m.type_map())):
        unused = sorted(n for n in names if n not in written)
        if unused:
            raise UsageError(
                f"mapping.{'fields' if what == 'renames' else 'types'} {what} column(s) "
                f"{', '.join(unused)}, which the mapping does not copy (include/exclude)"
            )
    return out


def _nest(items: list[tuple[tuple[str, ...], FieldNode]], table: TableInfo) -> tuple[Node, ...]:
    """Build the node tree from (path, leaf) pairs; detect duplicates and value/parent clashes."""
    seen: dict[tuple[str, ...], str] = {}
    for path, _leaf in items:
        shown = ".".join(path)
        for i in range(1, len(path) + 1):
            prefix = path[:i]
            if prefix in seen and (i == len(path) or seen[prefix] == "value"):
                raise UsageError(
                    f"mapping: target path {shown!r} clashes with {'.'.join(prefix)!r} in "
                    f"table {table.display}: two columns would write the same field, or one "
                    "field would be both a value and an embedded document"
                )
            if i < len(path):
                seen.setdefault(prefix, "parent")
        seen[path] = "value"

    def build(group: list[tuple[tuple[str, ...], FieldNode]]) -> tuple[Node, ...]:
        order: list[str] = []
        children: dict[str, list[tuple[tuple[str, ...], FieldNode]]] = {}
        leaves: dict[str, FieldNode] = {}
        for path, leaf in group:
            head = path[0]
            if head not in order:
                order.append(head)
            if len(path) == 1:
                leaves[head] = replace(leaf, key=head)
            else:
                children.setdefault(head, []).append((path[1:], leaf))
        return tuple(leaves[h] if h in leaves else DocNode(h, build(children[h])) for h in order)

    return build(items)


def build_projection(table: TableInfo, cfg: ShapeOptions, *, spans: bool = False) -> Projection:
    """`spans`: the read covers several relations (partitions, inheritance children), so a row
    without a key is named by its relation and ctid together (ctids restart in each)."""
    m = cfg.mapping
    check_mapping_columns(table, m, cfg.key)
    # Ranges are cut on --key or the primary key (indexed); mapping.id only chooses _id. Without
    # either, a plain or partitioned table is cut into ctid blocks, anything else on the _id
    # columns.
    key = choose_key(table, cfg.key)
    id_cols = m.id or key
    if not key and m.id and table.relkind not in ("r", "p"):
        key = m.id
    types = m.type_map()
    renames = m.field_map()
    cols_by_name = {c.name: c for c in table.columns}
    exprs: list[sql.Composable] = []
    sources: list[Column | None] = []
    nodes: list[Node] = []

    def column(name: str) -> Column:
        col = cols_by_name[name]
        return override_type(col, types[name]) if name in types else col

    def codec(col: Column) -> Codec:
        return col.codec if col.name in types else with_mode(col.codec, cfg)

    def add(col: Column) -> int:
        exprs.append(table.select_expr(col))
        sources.append(col)
        return len(exprs) - 1

    if not id_cols:
        if table.relkind not in ("r", "p"):
            raise SourceError(
                f"{table.display} has no primary key and is not a table (rows have no ctid), so "
                "rows have no stable identity: name a unique key with --key col[,col]"
            )
        if spans or table.relkind == "p":
            # {rel, ctid}: the relation's name (as the reading session's search_path shows it)
            # and the int64 ctid, unique across the relations read.
            exprs += [sql.SQL("tableoid::regclass::text"), sql.SQL("ctid")]
            sources += [None, None]
            rel_ctid = (FieldNode("rel", 0, Codec("text")), FieldNode("ctid", 1, Codec("tid")))
            nodes.append(DocNode("_id", rel_ctid))
        else:
            exprs.append(sql.SQL("ctid"))
            sources.append(None)
            nodes.append(FieldNode("_id", 0, Codec("tid")))
    elif m.id_format == "string":
        parts = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k)) for k in id_cols)
        exprs.append(sql.SQL("concat_ws({}, {})").format(sql.Literal(m.id_separator), parts))
        sources.append(None)
        nodes.append(FieldNode("_id", 0, Codec("text")))
    elif len(id_cols) == 1:
        col = column(id_cols[0])
        nodes.append(FieldNode("_id", add(col), codec(col)))
    else:
        children = []
        for k in id_cols:
            sub = renames.get(k, k)
            if "." in sub:
                raise UsageError(
                    f"mapping.fields.{k}: {sub!r} nests, but inside a composite _id a key column "
                    "can only be renamed to a plain name"
                )
            col = column(k)
            children.append(FieldNode(sub, add(col), codec(col)))
        nodes.append(DocNode("_id", tuple(children)))
    items: list[tuple[tuple[str, ...], FieldNode]] = []
    for col in copied_columns(table, m, id_cols):
        path = (
            check_path(renames[col.name], f"mapping.fields.{col.name}")
            if col.name in renames
            else (col.name,)
        )
        if path == ("_id",):
            raise UsageError(
                f"column {col.name!r} would be written as _id: choose _id with mapping.id"
            )
        col = column(col.name)
        items.append((path, FieldNode(path[-1], add(col), codec(col))))
    nodes.extend(_nest(items, table))
    options = EncodeOptions(
        nulls=cfg.nulls,  # type: ignore[arg-type]
        infinity=cfg.infinity,  # type: ignore[arg-type]
        numeric_fallback=cfg.numeric,  # type: ignore[arg-type]
        json_keys=cfg.json_keys,  # type: ignore[arg-type]
        array_bounds=cfg.array_bounds,  # type: ignore[arg-type]
    )
    layout = Layout(tuple(nodes), len(exprs), options)
    id_is_key = tuple(id_cols) == tuple(key) and m.id_format != "string"
    key_cols = [column(k) for k in key]
    key_layout = Layout(
        (DocNode("_id", tuple(FieldNode(c.name, i, codec(c)) for i, c in enumerate(key_cols))),),
        len(key_cols),
        options,
    )
    key_select = sql.SQL(", ").join(table.select_expr(c) for c in key_cols)
    return Projection(
        sql.SQL(", ").join(exprs), layout, key, id_is_key, tuple(sources), key_select,
        key_layout if key else None,
    )  # fmt: skip


def check_projection(pg: psycopg.Connection[Any], table: TableInfo, proj: Projection) -> None:
    """EXPLAIN the SELECT once, so a type override with no cast fails at preflight, not mid-copy."""
    q = sql.SQL("EXPLAIN SELECT {} FROM {}").format(proj.select_list, table.ident)
    try:
        pg.execute(q)
    except psycopg.errors.InsufficientPrivilege as exc:
        msg = (exc.diag.message_primary or str(exc)).strip()
        role = pg.info.user  # no query: the failed statement may have aborted a transaction
        raise SourceError(
            f"{msg}: the role {role} cannot read {table.display}; "
            f"GRANT SELECT ON {table.display} TO {role} (copy, plan and verify need SELECT)"
        ) from None
    except psycopg.Error as exc:
        msg = (exc.diag.message_primary or str(exc)).strip()
        raise UsageError(
            f"the SELECT for {table.display} is not valid: {msg}; check [mapping.types]"
        ) from None

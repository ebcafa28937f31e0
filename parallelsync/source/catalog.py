"""Reads what the copy needs from PostgreSQL's catalogs: the table, its columns, types and key.

Every column is resolved once to a transcoder `Codec` plus the SQL expression that the COPY SELECT
uses for it. Types without a binary codec are cast to text (or to jsonb for composites and hstore)
in the SELECT, so no column type stops a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from parallelsync.errors import SourceError
from parallelsync.source.names import split_qualified
from parallelsync.transcode.model import Codec

# Built-in type OIDs whose binary send format the transcoder decodes directly.
BASE_CODECS: dict[int, str] = {
    16: "bool",
    17: "bytea",
    18: "char",
    19: "text",  # name
    20: "int8",
    21: "int2",
    23: "int4",
    25: "text",
    26: "oid",
    27: "tid",
    28: "xid",
    114: "json",
    142: "text",  # xml: xml_send sends the text
    650: "cidr",
    700: "float4",
    701: "float8",
    774: "macaddr8",
    790: "money",
    829: "macaddr",
    869: "inet",
    1042: "text",  # bpchar
    1043: "text",  # varchar
    1082: "date",
    1083: "time",
    1114: "timestamp",
    1184: "timestamptz",
    1186: "interval",
    1266: "timetz",
    1700: "numeric",
    2950: "uuid",
    3802: "jsonb",
    5069: "xid8",
}
# Extension types whose binary send format is plain text.
TEXT_LIKE_NAMES = frozenset({"citext"})
# Extension types best shown as documents: cast to jsonb in the SELECT.
JSONB_CAST_NAMES = frozenset({"hstore"})


@dataclass(frozen=True)
class Column:
    name: str
    attnum: int
    type_oid: int
    type_sql: str  # format_type(), for messages and docs
    not_null: bool
    codec: Codec
    cast: str | None  # None, "text", "jsonb" or "text[]": applied in the COPY SELECT


@dataclass(frozen=True)
class TableInfo:
    oid: int
    schema: str
    name: str
    relkind: str  # r = table, p = partitioned, v = view, m = matview, f = foreign
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    relpages: int
    reltuples: float  # -1 when never analysed

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise SourceError(f"column {name!r} does not exist in table {self.display}")

    def select_expr(self, col: Column) -> sql.Composable:
        ident = sql.Identifier(col.name)
        if col.cast is None:
            return ident
        if col.cast == "to_jsonb":
            return sql.SQL("to_jsonb({})").format(ident)
        return sql.SQL("{}::{}").format(ident, sql.SQL(col.cast))


def resolve_table(conn: psycopg.Connection[Any], name: str) -> TableInfo:
    schema, table, quoted = split_qualified(name)
    candidates = [(schema, table)]
    if not quoted:
        folded = (schema.lower() if schema else None, table.lower())
        candidates = [folded] + ([(schema, table)] if folded != (schema, table) else [])
    row = None
    for sch, tab in candidates:
        row = _find_relation(conn, sch, tab)
        if row is not None:
            break
    if row is None:
        _raise_not_found(conn, schema, table, quoted)
    assert row is not None
    oid, nsp, rel, relkind = row
    columns = read_columns(conn, oid)
    if not columns:
        raise SourceError(f"table {nsp}.{rel} has no columns to copy")
    pk = _primary_key(conn, oid)
    relpages, reltuples = _size_estimate(conn, oid, relkind)
    return TableInfo(oid, nsp, rel, relkind, tuple(columns), pk, relpages, reltuples)


def _find_relation(
    conn: psycopg.Connection[Any], schema: str | None, table: str
) -> tuple[int, str, str, str] | None:
    kinds = ("r", "p", "v", "m", "f")
    if schema is not None:
        q = """SELECT c.oid::int, n.nspname::text, c.relname::text, c.relkind::text
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relname = %s AND c.relkind = ANY(%s)"""
        row = conn.execute(q, (schema, table, list(kinds))).fetchone()
    else:
        # Search the session's search_path in order, as an unqualified name in SQL would.
        q = """SELECT c.oid::int, n.nspname::text, c.relname::text, c.relkind::text
               FROM unnest(current_schemas(false)) WITH ORDINALITY s(nsp, pos)
               JOIN pg_namespace n ON n.nspname = s.nsp
               JOIN pg_class c ON c.relnamespace = n.oid
               WHERE c.relname = %s AND c.relkind = ANY(%s) ORDER BY s.pos LIMIT 1"""
        row = conn.execute(q, (table, list(kinds))).fetchone()
    return None if row is None else (int(row[0]), str(row[1]), str(row[2]), str(row[3]))


def _raise_not_found(
    conn: psycopg.Connection[Any], schema: str | None, table: str, quoted: bool
) -> None:
    if schema is not None:
        exists = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s OR nspname = lower(%s)",
            (schema, schema),
        ).fetchone()
        if exists is None:
            raise SourceError(
                f"schema {schema!r} does not exist in the source database: "
                'check --table (use "Quoted" names for mixed case)'
            )
        where = f"schema {schema!r}"
    else:
        path = conn.execute("SELECT array_to_string(current_schemas(false), ', ')").fetchone()
        where = f"the search path ({path[0] if path else ''})"
    hint = "" if quoted else "; names with capitals or spaces need double quotes"
    raise SourceError(f"table {table!r} does not exist in {where}, or the user cannot see it{hint}")


def _primary_key(conn: psycopg.Connection[Any], oid: int) -> tuple[str, ...]:
    rows = conn.execute(
        """SELECT a.attname::text
           FROM pg_index i
           CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
           WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord""",
        (oid,),
    ).fetchall()
    return tuple(str(r[0]) for r in rows)


def _size_estimate(conn: psycopg.Connection[Any], oid: int, relkind: str) -> tuple[int, float]:
    if relkind == "p":
        # A partitioned parent has no storage: add up its leaf partitions.
        row = conn.execute(
            """SELECT coalesce(sum(c.relpages), 0)::bigint,
                      coalesce(sum(greatest(c.reltuples, 0)), 0)::float8,
                      bool_or(c.reltuples < 0)
               FROM pg_partition_tree(%s::regclass) p JOIN pg_class c ON c.oid = p.relid
               WHERE p.isleaf""",
            (oid,),
        ).fetchone()
        assert row is not None
        pages, tuples, unknown = int(row[0]), float(row[1]), bool(row[2])
        return pages, (-1.0 if unknown and tuples == 0 else tuples)
    row = conn.execute("SELECT relpages, reltuples FROM pg_class WHERE oid = %s", (oid,)).fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


def read_columns(conn: psycopg.Connection[Any], oid: int) -> list[Column]:
    rows = conn.execute(
        """SELECT a.attnum::int, a.attname::text, a.atttypid::int,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull
           FROM pg_attribute a
           WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
        (oid,),
    ).fetchall()
    resolver = TypeResolver(conn)
    cols = []
    for attnum, name, typoid, typsql, notnull in rows:
        codec, cast = resolver.resolve(int(typoid))
        cols.append(
            Column(str(name), int(attnum), int(typoid), str(typsql), bool(notnull), codec, cast)
        )
    return cols


class TypeResolver:
    """Maps a type OID to (Codec, cast), following domains, arrays, ranges and composites."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._cache: dict[int, tuple[Codec, str | None]] = {}

    def resolve(self, oid: int) -> tuple[Codec, str | None]:
        if oid not in self._cache:
            self._cache[oid] = self._resolve(oid)
        return self._cache[oid]

    def _type_row(self, oid: int) -> tuple[str, str, str, int, int, int, int]:
        row = self._conn.execute(
            """SELECT t.typname::text, t.typtype::text, t.typcategory::text, t.typelem::int,
                      t.typbasetype::int, t.typrelid::int,
                      coalesce((SELECT r.rngsubtype::int FROM pg_range r
                                WHERE r.rngtypid = t.oid), 0)
               FROM pg_type t WHERE t.oid = %s""",
            (oid,),
        ).fetchone()
        if row is None:
            raise SourceError(f"type oid {oid} not found in pg_type")
        return (
            str(row[0]),
            str(row[1]),
            str(row[2]),
            int(row[3]),
            int(row[4]),
            int(row[5]),
            int(row[6]),
        )

    def _resolve(self, oid: int) -> tuple[Codec, str | None]:
        if oid in BASE_CODECS:
            return Codec(BASE_CODECS[oid]), None
        typname, typtype, category, elem, base, relid, subtype = self._type_row(oid)
        if typtype == "d":
            # A domain is sent in its base type's binary form.
            return self.resolve(base)
        if typtype == "e" or typname in TEXT_LIKE_NAMES:
            return Codec("text"), None
        if typname in JSONB_CAST_NAMES:
            return Codec("jsonb"), "jsonb"
        if category == "A" and elem != 0:
            ecodec, ecast = self.resolve(elem)
            if ecast is None:
                return Codec("array", elem=ecodec), None
            if ecast == "text":
                return Codec("array", elem=Codec("text")), "text[]"
            return Codec("text"), "text"
        if typtype == "r" and subtype != 0:
            scodec, scast = self.resolve(subtype)
            if scast is None:
                return Codec("range", elem=scodec), None
            return Codec("text"), "text"
        if typtype == "c" and relid != 0:
            return self._composite(relid)
        return Codec("text"), "text"

    def _composite(self, relid: int) -> tuple[Codec, str | None]:
        rows = self._conn.execute(
            """SELECT a.attname::text, a.atttypid::int FROM pg_attribute a
               WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
            (relid,),
        ).fetchall()
        names, codecs = [], []
        for name, typoid in rows:
            codec, cast = self.resolve(int(typoid))
            if cast is not None:
                # A field needing a cast cannot be cast inside the binary composite: let the
                # server render the whole value as jsonb instead.
                return Codec("jsonb"), "to_jsonb"
            names.append(str(name))
            codecs.append(codec)
        return Codec("composite", fields=tuple(codecs), field_names=tuple(names)), None

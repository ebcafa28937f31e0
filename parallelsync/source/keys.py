"""The range key: is it really unique and NOT NULL, and which operators compare it.

Ranges are `lower <= key < upper` over a sample read in the key's own order, so two things must
hold or rows are lost or duplicated without any count noticing:

- Every row has a non-NULL, unique key. Where the catalog can prove it (tables, partitioned
  tables, materialized views), a key that is not NOT NULL and covered by a unique index is
  refused at preflight. Where it cannot (views, foreign tables, a parent read with its children),
  one more range takes the rows with a NULL key, the other ranges exclude them, and the copy
  counts the distinct keys under the snapshot (source/counts.py, compared in job/checks.py).
- The predicates compare with the operators the sample was ordered by: those of the key type's
  default btree operator class, schema-qualified (`k OPERATOR(ext.>=) CAST('v' AS ext.citext)`).
  Unqualified, `>=` on a type whose operators are not on the search path (citext installed in
  another schema) silently resolves to text's operators and the ranges overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from parallelsync.errors import SourceError
from parallelsync.source.catalog import TableInfo
from parallelsync.source.connect import execute
from parallelsync.source.relations import ReadSpec

# btree strategy numbers (access/stratnum.h).
LT, LE, EQ, GE, GT = 1, 2, 3, 4, 5
# Operator names are symbols from the catalog; checked before they are pasted into SQL.
OPERATOR_NAME = re.compile(r"^[+\-*/<>=~!@#%^&|`?]{1,63}$")


@dataclass(frozen=True)
class KeyColumn:
    name: str
    cast: tuple[str, str]  # (schema, type) that bounds are cast to: the operator class's input
    ops: dict[int, tuple[str, str]]  # strategy -> (schema, operator name)
    by_name: bool  # `>=` and `<` found by name on the search path are these operators

    def op(self, strategy: int) -> sql.Composable:
        schema, name = self.ops[strategy]
        if not OPERATOR_NAME.match(name):
            raise SourceError(f"unexpected operator name {name!r} for key column {self.name!r}")
        return sql.SQL("OPERATOR({}.{})").format(sql.Identifier(schema), sql.SQL(name))

    def value(self, v: Any) -> sql.Composable:
        return sql.SQL("CAST({} AS {})").format(sql.Literal(v), sql.Identifier(*self.cast))

    def compare(self, strategy: int, v: Any) -> sql.Composable:
        col = sql.Identifier(self.name)
        return sql.SQL("{} {} {}").format(col, self.op(strategy), self.value(v))


@dataclass(frozen=True)
class KeySpec:
    """The range key as the predicates use it. `not_null` and `unique` say what the catalog
    proves; what it does not is covered at run time (a NULL range, a distinct count)."""

    columns: tuple[KeyColumn, ...]
    not_null: bool
    unique: bool

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def check_distinct(self) -> bool:
        """Count distinct keys under the snapshot: duplicates (NULLs included) are possible."""
        return bool(self.columns) and not (self.not_null and self.unique)

    def any_null(self) -> sql.Composable:
        return sql.SQL(" OR ").join(
            sql.SQL("{} IS NULL").format(sql.Identifier(c.name)) for c in self.columns
        )

    def none_null(self) -> sql.Composable:
        return sql.SQL(" AND ").join(
            sql.SQL("{} IS NOT NULL").format(sql.Identifier(c.name)) for c in self.columns
        )

    def at_least(self, values: tuple[Any, ...]) -> sql.Composable:
        return self._bound(values, GE, GT)

    def below(self, values: tuple[Any, ...]) -> sql.Composable:
        return self._bound(values, LT, LT)

    def _bound(self, values: tuple[Any, ...], last: int, strict: int) -> sql.Composable:
        cols = self.columns
        if len(cols) == 1:
            return cols[0].compare(last, values[0])
        if all(c.by_name for c in cols):
            # The row comparison is what a btree index on (a, b, ...) can use, and `>=`/`<`
            # resolve by name to the operator classes' own operators here.
            lhs = sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(c.name) for c in cols))
            rhs = sql.SQL("ROW({})").format(
                sql.SQL(", ").join(c.value(v) for c, v in zip(cols, values, strict=True))
            )
            op = ">=" if last == GE else "<"
            return sql.SQL("{} {} {}").format(lhs, sql.SQL(op), rhs)
        # (a, b, c) >= (x, y, z) spelled out with qualified operators:
        #   a >= x AND (a > x OR (a = x AND (b > y OR (b = y AND c >= z))))
        # The leading `a >= x` (`a <= x` for an upper bound) lets an index on a narrow the scan.
        expr = cols[-1].compare(last, values[-1])
        for c, v in zip(reversed(cols[:-1]), reversed(values[:-1]), strict=True):
            expr = sql.SQL("({} OR ({} AND {}))").format(
                c.compare(strict, v), c.compare(EQ, v), expr
            )
        lead = cols[0].compare(GE if last == GE else LE, values[0])
        return sql.SQL("{} AND {}").format(lead, expr)


def resolve_key(
    conn: psycopg.Connection[Any],
    table: TableInfo,
    key: tuple[str, ...],
    read: ReadSpec,
    origin: str,
) -> KeySpec:
    """The key's operators, and what the catalog proves about it; refuses a key that can be
    proven not to be NOT NULL and unique. `origin` names where the key came from, for messages."""
    if not key:
        return KeySpec((), True, True)
    columns = tuple(_key_column(conn, table, name) for name in key)
    not_null = all(table.column(k).not_null for k in key)
    unique = _unique_index_covers(conn, table, key)
    shown = ", ".join(key)
    if read.children:
        # A unique index holds per table, never across a parent and its children; NOT NULL is
        # inherited (a child cannot drop it), so it is proven by the parent.
        unique = False
    if table.relkind in ("r", "p") and not not_null:
        col = next(k for k in key if not table.column(k).not_null)
        raise SourceError(
            f"{origin} {shown}: column {col!r} of table {table.display} allows NULL, so rows "
            "with a NULL key would be missed by every range: choose NOT NULL unique columns with "
            f"--key, or declare {col!r} NOT NULL"
        )
    if table.relkind in ("r", "p", "m") and not read.children and not unique:
        raise SourceError(
            f"{origin} {shown}: no unique index or constraint of table {table.display} covers "
            f"({shown}), so rows could share a key and ranges could not be told apart: choose "
            "columns with a unique index with --key, or create one"
        )
    return KeySpec(columns, not_null, unique)


def _unique_index_covers(
    conn: psycopg.Connection[Any], table: TableInfo, key: tuple[str, ...]
) -> bool:
    """A valid unique index on plain columns, without a predicate, whose columns are all key
    columns: then no two rows share a key. Deferrable ones count too: a snapshot sees only
    committed rows, and a deferred check has passed for every committed row."""
    attnums = [table.column(k).attnum for k in key]
    row = execute(
        conn,
        """SELECT EXISTS (
               SELECT 1 FROM pg_index i
               WHERE i.indrelid = %s AND i.indisunique AND i.indisvalid
                 AND i.indpred IS NULL AND i.indexprs IS NULL
                 AND (i.indkey::int2[])[0:i.indnkeyatts - 1] <@ %s::int2[])""",
        (table.oid, attnums),
    ).fetchone()
    return bool(row and row[0])


def _key_column(conn: psycopg.Connection[Any], table: TableInfo, name: str) -> KeyColumn:
    col = table.column(name)
    base = _base_type(conn, col.type_oid)
    rows = execute(
        conn,
        """WITH oc AS (
               SELECT c.opcfamily, c.opcintype FROM pg_opclass c
               JOIN pg_am am ON am.oid = c.opcmethod AND am.amname = 'btree'
               WHERE c.opcdefault AND (
                   c.opcintype = %(t)s
                   OR EXISTS (SELECT 1 FROM pg_cast k WHERE k.castsource = %(t)s
                              AND k.casttarget = c.opcintype AND k.castmethod = 'b'
                              AND k.castcontext = 'i')
                   OR (c.opcintype = 'anyenum'::regtype
                       AND EXISTS (SELECT 1 FROM pg_enum e WHERE e.enumtypid = %(t)s))
                   OR (c.opcintype = 'anyarray'::regtype
                       AND EXISTS (SELECT 1 FROM pg_type y WHERE y.oid = %(t)s
                                   AND y.typcategory = 'A'))
                   OR (c.opcintype = 'anyrange'::regtype
                       AND EXISTS (SELECT 1 FROM pg_range r WHERE r.rngtypid = %(t)s))
                   OR (c.opcintype = 'record'::regtype
                       AND EXISTS (SELECT 1 FROM pg_type y WHERE y.oid = %(t)s
                                   AND y.typtype = 'c')))
               ORDER BY c.opcintype = %(t)s DESC LIMIT 1)
           SELECT o.amopstrategy::int, opn.nspname::text, op.oprname::text, op.oid::int,
                  tn.nspname::text, t.typname::text, t.typtype::text,
                  to_regoperator(format('%%s(%%s,%%s)', op.oprname,
                      format_type(oc.opcintype, NULL), format_type(oc.opcintype, NULL)))::int
           FROM oc
           JOIN pg_amop o ON o.amopfamily = oc.opcfamily AND o.amoplefttype = oc.opcintype
                AND o.amoprighttype = oc.opcintype
           JOIN pg_operator op ON op.oid = o.amopopr
           JOIN pg_namespace opn ON opn.oid = op.oprnamespace
           JOIN pg_type t ON t.oid = oc.opcintype
           JOIN pg_namespace tn ON tn.oid = t.typnamespace""",
        {"t": base},
    ).fetchall()
    ops: dict[int, tuple[str, str]] = {}
    by_name = True
    cast: tuple[str, str] | None = None
    for strategy, opschema, opname, opoid, tschema, tname, ttype, found in rows:
        ops[int(strategy)] = (str(opschema), str(opname))
        if ttype == "p":
            # A polymorphic class (enums, arrays, ranges, records): bounds keep the column's own
            # (base) type; its pg_catalog operators are what `>=` resolves to by name.
            by_name = by_name and opschema == "pg_catalog"
        elif int(strategy) in (LT, GE):
            by_name = by_name and found is not None and int(found) == int(opoid)
        cast = (str(tschema), str(tname)) if ttype != "p" else None
    if not all(s in ops for s in (LT, LE, EQ, GE, GT)):
        raise SourceError(
            f"key column {name!r} of table {table.display} has type {col.type_sql}, which has no "
            "default btree operator class, so it cannot be split into ranges: choose another --key"
        )
    if cast is None:
        cast = _type_name(conn, base)
    return KeyColumn(name, cast, ops, by_name)


def _base_type(conn: psycopg.Connection[Any], oid: int) -> int:
    """A domain's base type (domains over domains included); any other type itself."""
    for _ in range(100):  # a domain chain is short; the bound only guards against a cycle
        row = execute(conn, "SELECT typtype::text, typbasetype::int FROM pg_type WHERE oid = %s",
                      (oid,)).fetchone()  # fmt: skip
        if row is None or row[0] != "d":
            return oid
        oid = int(row[1])
    return oid


def _type_name(conn: psycopg.Connection[Any], oid: int) -> tuple[str, str]:
    row = execute(
        conn,
        """SELECT n.nspname::text, t.typname::text FROM pg_type t
           JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = %s""",
        (oid,),
    ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])

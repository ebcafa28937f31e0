"""Which relations a copy reads: the named table alone, with its inheritance children, or a
partitioned table's leaf partitions.

A plain table (relkind r) is read `FROM ONLY` the table unless `--include-children` asks for its
inheritance children too: without ONLY, PostgreSQL silently adds every child's rows. A
partitioned table (relkind p) has no rows of its own and is always read whole. A read that spans
several relations (a partitioned table, or a parent read with its children) has no single ctid
space: ctids restart at (0,1) in every relation, so rows without a key are told apart by
(relation, ctid) and planned per leaf relation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from parallelsync.errors import SourceError
from parallelsync.source.catalog import TableInfo
from parallelsync.source.connect import execute

# Relation kinds that hold rows of their own (a partitioned parent does not).
STORAGE_KINDS = ("r", "m")


@dataclass(frozen=True)
class Relation:
    """One relation whose rows the copy reads (a leaf: the table itself, a child, a partition)."""

    oid: int
    schema: str
    name: str
    relkind: str
    relpages: int
    reltuples: float

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class ReadSpec:
    """How the copy's queries name the table, decided at preflight from the catalog."""

    only: bool  # FROM ONLY: a plain table whose inheritance children are not read
    spans: bool  # the rows come from several relations (no single ctid space)
    children: bool  # a plain table read with its inheritance children
    foreign: tuple[str, ...]  # foreign tables among the relations read (read outside the snapshot)

    def from_sql(self, table: TableInfo) -> sql.Composable:
        if self.only:
            return sql.SQL("ONLY {}").format(table.ident)
        return table.ident


def read_spec(conn: psycopg.Connection[Any], table: TableInfo, include_children: bool) -> ReadSpec:
    has_children = table.relkind == "r" and _has_children(conn, table.oid)
    children = has_children and include_children
    spans = table.relkind == "p" or children
    foreign: tuple[str, ...] = ()
    if table.relkind == "f":
        foreign = (table.display,)
    elif spans:
        rels = leaves(conn, table, children=children)
        foreign = tuple(r.display for r in rels if r.relkind == "f")
    return ReadSpec(only=table.relkind == "r" and not children, spans=spans, children=children,
                    foreign=foreign)  # fmt: skip


def _has_children(conn: psycopg.Connection[Any], oid: int) -> bool:
    row = execute(conn, "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = %s)", (oid,))
    found = row.fetchone()
    return bool(found and found[0])


def leaves(
    conn: psycopg.Connection[Any], table: TableInfo, *, children: bool
) -> tuple[Relation, ...]:
    """The relations holding the rows read, as the connection's snapshot sees the catalog (under
    the workers' snapshot, a partition attached or detached since the preflight counts as the
    snapshot says): the table itself, its inheritance descendants when they are read, a
    partitioned table's leaf partitions."""
    if table.relkind != "p" and not children:
        rels = [table.oid]
    else:
        rows = execute(
            conn,
            """WITH RECURSIVE tree(oid) AS (
                   SELECT %s::oid
                   UNION ALL
                   SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid)
               SELECT oid::int FROM tree""",
            (table.oid,),
        ).fetchall()
        rels = [int(r[0]) for r in rows]
    rows = execute(
        conn,
        """SELECT c.oid::int, n.nspname::text, c.relname::text, c.relkind::text, c.relpages::int,
                  c.reltuples::float8
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.oid = ANY(%s) AND c.relkind IN ('r', 'm', 'f', 'v') ORDER BY c.oid""",
        (rels,),
    ).fetchall()
    out = tuple(
        Relation(int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), float(r[5])) for r in rows
    )
    if not out and table.relkind != "p":
        raise SourceError(f"table {table.display} is not visible in the snapshot")
    return out

"""The operator's `--where` as an SQL condition, built in one place for every query that uses it."""

from __future__ import annotations

from psycopg import sql


def user_filter(where: str | None) -> sql.Composable:
    """`(<where>)`, or `true` when there is none. `--where` is trusted operator input: it is
    pasted into the query as written (documented), never built from data."""
    return sql.SQL("({})").format(sql.SQL(where)) if where else sql.SQL("true")

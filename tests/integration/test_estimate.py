"""The row estimate of a plan (and so the ETA of a copy) on a large, freshly analysed table."""

from __future__ import annotations

from typing import Any

import psycopg

from parallelsync.source.planner import FULL_SCAN_PAGES
from tests.integration.cli_helpers import run_cli

SPARSE_ROWS = FULL_SCAN_PAGES + 1_000  # one row per page: past the size that reads every key
DENSE_ROWS = 100_000  # a few hundred pages, so a block sample sees few of them


def make_uneven_table(conn: psycopg.Connection[Any]) -> int:
    """Most pages hold one row, a few hold hundreds: a block sample's row count swings with how
    many dense pages it happens to pick, while ANALYZE (which reads every page of a table this
    size) knows the true density."""
    conn.execute(
        "CREATE TABLE uneven (id int8 PRIMARY KEY, pad text) "
        "WITH (fillfactor = 10, autovacuum_enabled = false)"
    )
    conn.execute(
        "INSERT INTO uneven SELECT g, repeat('x', 500) FROM generate_series(1, %s) g",
        (SPARSE_ROWS,),
    )
    conn.execute("ALTER TABLE uneven SET (fillfactor = 100)")
    conn.execute(
        "INSERT INTO uneven SELECT g, '' FROM generate_series(%s, %s) g",
        (SPARSE_ROWS + 1, SPARSE_ROWS + DENSE_ROWS),
    )
    conn.execute("ANALYZE uneven")
    pages = conn.execute("SELECT relpages FROM pg_class WHERE relname = 'uneven'").fetchone()
    assert pages is not None and pages[0] > FULL_SCAN_PAGES
    return SPARSE_ROWS + DENSE_ROWS


def test_estimate_of_a_freshly_analysed_table_is_within_a_few_percent(
    pg_conn: psycopg.Connection[Any], pg_dsn: str
) -> None:
    true = make_uneven_table(pg_conn)
    plan = run_cli("plan", "--source", pg_dsn, "--table", "uneven", "--json", "--quiet")
    assert plan.rc == 0, plan.stderr
    out = plan.json
    assert out["method"].startswith("TABLESAMPLE SYSTEM ("), out["method"]
    assert "pg_class.reltuples" in out["method"]
    assert abs(out["estimated_rows"] - true) / true < 0.03, (out["estimated_rows"], true)


def test_estimate_with_a_where_comes_from_the_sample(
    pg_conn: psycopg.Connection[Any], pg_dsn: str
) -> None:
    """The catalog knows nothing of the rows --where keeps: the sample counts them."""
    make_uneven_table(pg_conn)
    where = f"id <= {SPARSE_ROWS}"  # the sparse rows only: evenly spread, so a sample sees them
    plan = run_cli("plan", "--source", pg_dsn, "--table", "uneven", "--where", where, "--json")
    assert plan.rc == 0, plan.stderr
    assert "reltuples" not in plan.json["method"]
    est = plan.json["estimated_rows"]
    assert abs(est - SPARSE_ROWS) / SPARSE_ROWS < 0.25, (est, SPARSE_ROWS)

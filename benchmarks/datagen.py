"""Create benchmark tables with server-side generate_series (no Python row loop).

Every value is a pure function of the row number `i`, so a table of N rows always has the same
content and the same COPY size. The row count and a layout version are stored in the table's
comment: an existing table is reused when they match, so repeated runs skip the load.

    python benchmarks/datagen.py --dsn DSN --kind mixed --rows 2000000
"""

from __future__ import annotations

import argparse
import time

import psycopg
from psycopg import sql

LAYOUT_VERSION = 1

DEFAULT_ROWS = {"mixed": 2_000_000, "narrow": 2_000_000, "wide": 500_000, "jsonb": 1_000_000}

# The 9-column table of PERF-NOTES: one column of each common type family.
MIXED_COLS: list[tuple[str, str, str]] = [
    ("i4", "int4", "(i % 2000000000)::int4"),
    ("f8", "float8", "i * 1.25::float8"),
    ("t", "text", "'name-' || md5(i::text)"),  # 5 + 32 = 37 characters
    ("ts", "timestamptz", "timestamptz '2020-01-01 00:00:00+00' + i * interval '1 second'"),
    ("n", "numeric(12,2)", "((i % 10000000) / 100.0)::numeric(12,2)"),
    ("b", "bool", "(i % 2 = 0)"),
    ("u", "uuid", "md5(i::text)::uuid"),
    ("j", "jsonb", "jsonb_build_object('k', i, 'tag', 'abc', 'v', jsonb_build_array(1, 2))"),
]

# Fixed-width only: the cheapest table to transcode, so it shows per-row overheads.
NARROW_COLS: list[tuple[str, str, str]] = [
    ("a", "int4", "(i % 1000000)::int4"),
    ("b", "int8", "i * 7"),
    ("c", "float8", "i / 3.0::float8"),
    ("d", "timestamptz", "timestamptz '2021-06-01 00:00:00+00' + i * interval '1 minute'"),
]

# Type cycle for the wide table (39 columns = id + 39): each entry is (type, expression of i and
# the column number k) so neighbouring columns differ.
_WIDE_CYCLE: list[tuple[str, str]] = [
    ("int4", "((i + {k}) % 1000000)::int4"),
    ("int8", "i * {k}"),
    ("float8", "(i + {k}) / 7.0::float8"),
    ("text", "'c{k}-' || left(md5((i + {k})::text), 12)"),
    ("timestamptz", "timestamptz '2022-01-01 00:00:00+00' + (i + {k}) * interval '1 second'"),
    ("numeric(12,2)", "(((i + {k}) % 1000000) / 100.0)::numeric(12,2)"),
    ("bool", "((i + {k}) % 3 = 0)"),
    ("int2", "((i + {k}) % 30000)::int2"),
    ("date", "date '2000-01-01' + ((i + {k}) % 9000)::int4"),
    ("varchar(32)", "left(md5(({k} * i)::text), 20)"),
]
WIDE_COLS: list[tuple[str, str, str]] = [
    (f"c{k:02d}", typ, expr.format(k=k))
    for k in range(1, 40)
    for typ, expr in [_WIDE_CYCLE[(k - 1) % len(_WIDE_CYCLE)]]
]

# ~300 bytes of nested JSON text per row (objects, arrays, numbers, strings, bools, null).
JSONB_COLS: list[tuple[str, str, str]] = [
    (
        "doc",
        "jsonb",
        """jsonb_build_object(
        'id', i,
        'name', 'user-' || left(md5(i::text), 10),
        'active', i % 2 = 0,
        'score', round((i % 1000) / 10.0, 1),
        'address', jsonb_build_object(
            'street', (i % 999) || ' Main Street',
            'city', 'Springfield', 'zip', lpad((i % 99999)::text, 5, '0'),
            'geo', jsonb_build_array((i % 180) - 90.5, (i % 360) - 180.25)),
        'tags', jsonb_build_array('alpha', 'beta', 'tag' || (i % 17)),
        'orders', jsonb_build_array(
            jsonb_build_object('sku', 'SKU-' || (i % 5000), 'qty', i % 7, 'price', 19.99),
            jsonb_build_object('sku', 'SKU-' || (i % 3000), 'qty', 1, 'price', 5.5)),
        'note', NULL)""",
    ),
]

KINDS: dict[str, list[tuple[str, str, str]]] = {
    "mixed": MIXED_COLS,
    "narrow": NARROW_COLS,
    "wide": WIDE_COLS,
    "jsonb": JSONB_COLS,
}


def table_name(kind: str, rows: int) -> str:
    """bench_<kind> for the default size, bench_<kind>_<rows> otherwise (scaling runs)."""
    return f"bench_{kind}" if rows == DEFAULT_ROWS[kind] else f"bench_{kind}_{rows}"


def _marker(kind: str, rows: int) -> str:
    return f"parallelsync-bench kind={kind} rows={rows} v={LAYOUT_VERSION}"


def ensure_table(
    dsn: str,
    kind: str,
    rows: int,
    name: str | None = None,
    force: bool = False,
    verbose: bool = True,
) -> str:
    """Create and fill the table unless an identical one already exists; return its name."""
    name = name or table_name(kind, rows)
    cols = KINDS[kind]
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (name,))
        row = cur.fetchone()
        if not force and row and row[0] == _marker(kind, rows):
            return name
        t0 = time.perf_counter()
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
        col_defs = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t, _ in cols
        )
        conn.execute(sql.SQL("CREATE TABLE {} (id int8 NOT NULL, {})").format(ident, col_defs))
        exprs = sql.SQL(", ").join(sql.SQL(e) for _, _, e in cols)
        conn.execute(
            sql.SQL("INSERT INTO {} SELECT i, {} FROM generate_series(1, {}::int8) AS i").format(
                ident, exprs, sql.Literal(rows)
            )
        )
        # Adding the PK after the load builds the index in one sort instead of row by row.
        conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (id)").format(ident))
        conn.execute(sql.SQL("VACUUM (FREEZE, ANALYZE) {}").format(ident))
        conn.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(ident, sql.Literal(_marker(kind, rows)))
        )
        if verbose:
            print(f"datagen: {name}: {rows} rows in {time.perf_counter() - t0:.1f} s", flush=True)
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dsn", help="PostgreSQL DSN (default: start a private cluster and keep it)")
    ap.add_argument("--kind", choices=sorted(KINDS), default="mixed")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--name", help="table name (default bench_<kind>[_<rows>])")
    ap.add_argument(
        "--force", action="store_true", help="recreate even if an identical table exists"
    )
    args = ap.parse_args()
    dsn = args.dsn
    if dsn is None:
        import pgserver  # type: ignore[import-not-found,unused-ignore]

        srv = pgserver.start(keep=True)
        dsn = srv.dsn
        print(f"started a private cluster (left running): {dsn}")
    rows = args.rows or DEFAULT_ROWS[args.kind]
    ensure_table(dsn, args.kind, rows, args.name, args.force)


if __name__ == "__main__":
    main()

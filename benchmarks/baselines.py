"""Baselines that parallelsync is compared with, each run as its own process tree.

Every baseline prints one JSON line {"rows", "bytes", "seconds", ...} on stdout so the runner
can measure wall time and peak RSS of exactly that process tree, the same way as parallelsync.

    python benchmarks/baselines.py read_limit --dsn DSN --table T --procs 2
    python benchmarks/baselines.py psql       --dsn DSN --table T --procs 1
    python benchmarks/baselines.py old        --dsn DSN --table T --uri URI [--max-id K]
    python benchmarks/baselines.py rows_bson  --dsn DSN --table T --uri URI [--max-id K]
    python benchmarks/baselines.py connectorx --url URL --table T --uri URI --procs 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import pq, sql

# Documents per insert_many call in the Python baselines: the same order of magnitude as the
# old script's page, large enough that round trips do not dominate.
BATCH = 10_000
OLD_PAGE = 10_000  # the old script's keyset page size


def id_ranges(dsn: str, table: str, parts: int, max_id: int | None) -> list[tuple[int, int]]:
    """Half-open [lo, hi) id ranges of equal width; the bench tables have dense ids from 1."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            sql.SQL("SELECT min(id), max(id) FROM {}").format(sql.Identifier(table))
        ).fetchone()
    assert row is not None and row[0] is not None, f"table {table} is empty"
    lo, hi = int(row[0]), int(row[1]) + 1
    if max_id is not None:
        hi = min(hi, max_id + 1)
    step = -(-(hi - lo) // parts)
    return [(a, min(a + step, hi)) for a in range(lo, hi, step)]


def _copy_query(table: str, lo: int, hi: int) -> bytes:
    return (
        f'COPY (SELECT * FROM "{table}" WHERE id >= {lo} AND id < {hi}) TO STDOUT (FORMAT BINARY)'
    ).encode()


def _read_range(args: tuple[str, str, int, int]) -> tuple[int, int]:
    """Raw libpq COPY loop: the cheapest way Python can receive the stream (bytes, rows)."""
    dsn, table, lo, hi = args
    conn = psycopg.connect(dsn, autocommit=True)
    pg = conn.pgconn
    pg.send_query(_copy_query(table, lo, hi))
    res = pg.get_result()
    assert res is not None and res.status == pq.ExecStatus.COPY_OUT, res
    nbytes = rows = 0
    while True:
        n, _ = pg.get_copy_data(0)
        if n <= 0:
            break
        nbytes += n
        rows += 1
    while pg.get_result() is not None:
        pass
    conn.close()
    # one message per tuple, plus the header in the first and the trailer in the last
    return nbytes, rows - 1


def _warm(_: int) -> int:
    return 0


def read_limit(a: argparse.Namespace) -> dict[str, Any]:
    ranges = id_ranges(a.dsn, a.table, a.procs, a.max_id)
    jobs = [(a.dsn, a.table, lo, hi) for lo, hi in ranges]
    if len(jobs) == 1:
        t0 = time.perf_counter()
        out = [_read_range(jobs[0])]
        sec = time.perf_counter() - t0
    else:
        # spawn, like parallelsync's workers; the pool is started and warmed before the clock
        # starts because this baseline is about the stream, not about interpreter start-up.
        with mp.get_context("spawn").Pool(len(jobs)) as pool:
            pool.map(_warm, range(len(jobs)), chunksize=1)
            t0 = time.perf_counter()
            out = pool.map(_read_range, jobs, chunksize=1)
            sec = time.perf_counter() - t0
    return {"rows": sum(r for _, r in out), "bytes": sum(b for b, _ in out), "seconds": sec}


def psql_copy(a: argparse.Namespace) -> dict[str, Any]:
    psql = shutil.which("psql")
    if psql is None:
        return {"unavailable": "psql not on PATH"}
    ranges = id_ranges(a.dsn, a.table, a.procs, a.max_id)
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                psql,
                a.dsn,
                "-X",
                "-q",
                "-c",
                f'\\copy (SELECT * FROM "{a.table}" WHERE id >= {lo} AND id < {hi}) '
                "to /dev/null (format binary)",
            ]
        )
        for lo, hi in ranges
    ]
    rcs = [p.wait() for p in procs]
    sec = time.perf_counter() - t0
    if any(rcs):
        raise RuntimeError(f"psql exited with {rcs}")
    return {"rows": ranges[-1][1] - ranges[0][0], "seconds": sec}


def _mongo(uri: str, table: str) -> Any:
    from pymongo import MongoClient

    client: Any = MongoClient(uri)
    coll = client.bench_baseline[table]
    coll.drop()
    return client, coll


def old_approach(a: argparse.Namespace) -> dict[str, Any]:
    """What the old script did: keyset pages -> dict rows -> insert_many(dicts)."""
    from bson.binary import UuidRepresentation
    from bson.codec_options import CodecOptions
    from bson.decimal128 import Decimal128
    from psycopg.rows import dict_row

    client, coll = _mongo(a.uri, a.table)
    coll = coll.with_options(
        codec_options=CodecOptions(uuid_representation=UuidRepresentation.STANDARD)
    )
    query = sql.SQL("SELECT * FROM {} WHERE id > %s AND id <= %s ORDER BY id LIMIT %s").format(
        sql.Identifier(a.table)
    )
    max_id = a.max_id if a.max_id is not None else 2**62
    t0 = time.perf_counter()
    rows = 0
    last = 0
    with psycopg.connect(a.dsn, row_factory=dict_row) as conn:
        while True:
            page = conn.execute(query, (last, max_id, OLD_PAGE)).fetchall()
            if not page:
                break
            for r in page:  # the old script converted what BSON cannot take
                for k, v in r.items():
                    if isinstance(v, Decimal):
                        r[k] = Decimal128(v)
                    elif type(v) is dt.date:
                        r[k] = dt.datetime(v.year, v.month, v.day)
                r["_id"] = r.pop("id")
            coll.insert_many(page, ordered=False)
            rows += len(page)
            last = page[-1]["_id"]
    sec = time.perf_counter() - t0
    client.close()
    return {"rows": rows, "seconds": sec}


def _converters(
    conn: psycopg.Connection[Any], table: str
) -> tuple[list[str], list[str], list[Callable[[Any], Any] | None]]:
    from bson.decimal128 import Decimal128

    cur = conn.execute(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    )
    cols = cur.fetchall()
    names = ["_id" if c == "id" else c for c, _ in cols]
    types = [t for _, t in cols]
    conv: list[Callable[[Any], Any] | None] = []
    for t in types:
        if t == "numeric":
            conv.append(Decimal128)
        elif t == "date":
            conv.append(lambda d: dt.datetime(d.year, d.month, d.day))
        else:
            conv.append(None)
    return names, types, conv


def rows_bson(a: argparse.Namespace) -> dict[str, Any]:
    """psycopg COPY rows() with C loaders -> dict -> bson.encode -> RawBSONDocument."""
    import bson
    import orjson
    from bson.binary import UuidRepresentation
    from bson.codec_options import CodecOptions
    from bson.raw_bson import RawBSONDocument
    from psycopg.types.json import set_json_loads

    opts = CodecOptions(uuid_representation=UuidRepresentation.STANDARD)
    client, coll = _mongo(a.uri, a.table)
    lo, hi = id_ranges(a.dsn, a.table, 1, a.max_id)[0]
    t0 = time.perf_counter()
    rows = 0
    with psycopg.connect(a.dsn) as conn:
        set_json_loads(orjson.loads, conn)  # must precede cursor creation, or it is ignored
        names, types, conv = _converters(conn, a.table)
        fix = [(n, f) for n, f in zip(names, conv, strict=True) if f is not None]
        encode = bson.encode
        batch: list[RawBSONDocument] = []
        with conn.cursor() as cur, cur.copy(_copy_query(a.table, lo, hi).decode()) as copy:
            copy.set_types(types)
            for row in copy.rows():
                d = dict(zip(names, row, strict=True))
                for n, f in fix:
                    if d[n] is not None:
                        d[n] = f(d[n])
                batch.append(RawBSONDocument(encode(d, codec_options=opts)))
                if len(batch) == BATCH:
                    coll.insert_many(batch, ordered=False)
                    rows += len(batch)
                    batch = []
        if batch:
            coll.insert_many(batch, ordered=False)
            rows += len(batch)
    sec = time.perf_counter() - t0
    client.close()
    return {"rows": rows, "seconds": sec}


def connectorx_arrow(a: argparse.Namespace) -> dict[str, Any]:
    """connectorx partitioned read into Arrow, then pymongoarrow.api.write."""
    try:
        import connectorx as cx
        from pymongoarrow.api import write
    except ImportError as e:
        return {"unavailable": f"import failed: {e}"}
    client, coll = _mongo(a.uri, a.table)
    where = f" WHERE id <= {a.max_id}" if a.max_id is not None else ""
    t0 = time.perf_counter()
    kw: dict[str, Any] = {"partition_on": "id", "partition_num": a.procs} if a.procs > 1 else {}
    tbl = cx.read_sql(a.url, f'SELECT * FROM "{a.table}"{where}', return_type="arrow", **kw)
    t_read = time.perf_counter() - t0
    tbl = tbl.rename_columns(["_id" if c == "id" else c for c in tbl.column_names])
    try:
        res = write(coll, tbl)
    except Exception as e:
        return {
            "unavailable": f"pymongoarrow.write failed: {type(e).__name__}: {e}"[:500],
            "read_seconds": t_read,
            "schema": str(tbl.schema)[:500],
        }
    sec = time.perf_counter() - t0
    client.close()
    return {
        "rows": tbl.num_rows,
        "seconds": sec,
        "read_seconds": t_read,
        "inserted": res.raw_result.get("insertedCount"),
    }


BASELINES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "read_limit": read_limit,
    "psql": psql_copy,
    "old": old_approach,
    "rows_bson": rows_bson,
    "connectorx": connectorx_arrow,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("name", choices=sorted(BASELINES))
    ap.add_argument("--dsn", default="")
    ap.add_argument("--url", default="", help="postgresql:// URL (connectorx)")
    ap.add_argument("--table", required=True)
    ap.add_argument("--uri", default="", help="MongoDB URI of the sink")
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--max-id", type=int, help="only rows with id <= this (slow baselines)")
    a = ap.parse_args()
    try:
        out = BASELINES[a.name](a)
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}"[:1000]}
    print(json.dumps(out), flush=True)
    sys.exit(0 if "error" not in out else 1)


if __name__ == "__main__":
    main()

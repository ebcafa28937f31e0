"""Child processes of bench_impl.py; each prints one JSON line. Runs under either build's venv
(it imports `parallelsync` from the interpreter's own install, never from this checkout).

    python implstages.py stages --dsn DSN --table T --sink URI [--c-read]
    python implstages.py spawn [--repeat 5]
    python implstages.py sizes
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BATCH_ROWS, BATCH_BYTES = 10_000, 8 * 1024 * 1024  # the CLI's defaults


def _cpu() -> float:
    return time.process_time()


def _backend_cpu(pid: int) -> float:
    # /proc/<pid>/stat fields 14 and 15: utime and stime in clock ticks (same machine)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _copy_query(conn: Any, table_name: str) -> tuple[str, Any]:
    from psycopg import sql

    from parallelsync.config import build_copy_config

    try:
        from parallelsync.mapping.projection import build_projection
    except ImportError:  # the numba baseline's flat layout (before the restructure)
        from parallelsync.mapping import build_projection  # type: ignore[attr-defined,no-redef]
    from parallelsync.source.catalog import resolve_table

    cfg = build_copy_config({"source": "x", "table": table_name, "target": "null:"}, env={})
    table = resolve_table(conn, table_name)
    proj = build_projection(table, cfg)
    query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT BINARY)").format(
        proj.select_list, table.ident
    )
    return query.as_string(conn), proj.layout


def stages(a: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    from parallelsync.source.copystream import copy_batches

    try:
        from parallelsync.targets.mongodb.client import connect as mongo_connect
        from parallelsync.targets.mongodb.sink import MongoSink
    except ImportError:  # the numba baseline's flat layout (before the restructure)
        from parallelsync.target.client import (  # type: ignore[import-not-found,no-redef]
            connect as mongo_connect,
        )
        from parallelsync.target.sink import MongoSink  # type: ignore[import-not-found,no-redef]
    from parallelsync.transcode.encoder import DocumentEncoder

    conn = psycopg.connect(a.dsn, autocommit=True)
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    backend = int(row[0])
    query, layout = _copy_query(conn, a.table)
    result: dict[str, Any] = {}
    args = (conn, query, a.dsn, BATCH_ROWS, BATCH_BYTES)
    if a.c_read:  # this build has both loops (source/readloop.py): psycopg's, then the C one
        reads: list[tuple[str, Any]] = [
            ("read", lambda: list(copy_batches(*args, "python"))),
            ("read_c", lambda: list(copy_batches(*args, "c"))),
        ]
    else:  # the numba baseline: psycopg's loop only
        reads = [("read", lambda: list(copy_batches(*args)))]
    batches: list[tuple[bytearray, int]] = []
    for name, read in reads:
        pg0, cpu0, wall0 = _backend_cpu(backend), _cpu(), time.perf_counter()
        batches = read()
        result[name] = _cpu() - cpu0
        result[name + "_wall"] = time.perf_counter() - wall0
        result[name + "_pg"] = _backend_cpu(backend) - pg0
    encoder = DocumentEncoder(layout)
    encoder.encode(*batches[0])  # numba: load the kernels before the clock
    sink = MongoSink(mongo_connect(a.sink), "bench", f"stages_{os.getpid()}")
    # Batch by batch, as a worker does: each batch's documents are inserted and dropped before
    # the next is encoded (keeping all 2 M documents would hand every batch fresh memory, whose
    # first-touch page faults a worker, reusing freed memory, does not pay).
    transcode = insert = 0.0
    rows = 0
    for buf, start in batches:
        cpu0 = _cpu()
        batch = encoder.encode(buf, start)
        cpu1 = _cpu()
        sink.insert(batch, allow_duplicates=False)
        insert += _cpu() - cpu1
        transcode += cpu1 - cpu0
        rows += batch.rows
        del batch
    result["transcode"] = transcode
    result["insert"] = insert
    result["rows"] = rows
    result["impl"] = getattr(sys.modules.get("parallelsync.transcode"), "IMPL", "numba")
    return result


def _spawned(conn: Any, t0: float) -> None:
    imported = time.perf_counter()
    try:
        import parallelsync.workers.worker as worker
    except ImportError:  # the numba baseline's flat layout (before the restructure)
        import parallelsync.worker as worker  # type: ignore[import-not-found,no-redef]

    worker.warm_up()
    conn.send((imported - t0, time.perf_counter() - t0, time.process_time()))


def spawn(a: argparse.Namespace) -> dict[str, Any]:
    """A fresh worker process until it has imported the worker and warmed up: spawned (a new
    interpreter), or forked from a fork server that preloaded the worker (pool.py). For the fork
    server, `server_s` is its own start (launch + preload) before the first fork."""
    ctx = mp.get_context(a.method)
    server_s = 0.0
    if a.method == "forkserver":
        import multiprocessing.forkserver

        ctx.set_forkserver_preload(["parallelsync.workers.preload"])
        t0 = time.perf_counter()
        multiprocessing.forkserver.ensure_running()
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_spawned, args=(child, t0))
        proc.start()
        parent.recv()
        server_s = time.perf_counter() - t0
        proc.join()
    samples = []
    for _ in range(a.repeat):
        parent, child = ctx.Pipe()
        t0 = time.perf_counter()
        proc = ctx.Process(target=_spawned, args=(child, t0))
        proc.start()
        _boot, ready_rel, cpu = parent.recv()
        ready = time.perf_counter() - t0
        proc.join()
        samples.append({"ready_s": ready, "child_ready_s": ready_rel, "cpu_s": cpu})
    return {
        "method": a.method,
        "server_s": server_s,
        "samples": samples,
        "ready_s": statistics.median(s["ready_s"] for s in samples),
        "cpu_s": statistics.median(s["cpu_s"] for s in samples),
    }


def sizes(_: argparse.Namespace) -> dict[str, Any]:
    """Installed bytes per distribution of this venv (pip/setuptools: the venv's own seed)."""
    from importlib import metadata

    per: dict[str, int] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        total = 0
        for f in dist.files or ():
            p = Path(str(dist.locate_file(f)))
            if p.is_file():
                total += p.stat().st_size
        per[name] = per.get(name, 0) + total
    seed = {"pip", "setuptools", "wheel"}
    runtime = {k: v for k, v in per.items() if k.lower() not in seed}
    return {
        "per_dist": dict(sorted(runtime.items(), key=lambda kv: -kv[1])),
        "total": sum(runtime.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stages")
    s.add_argument("--dsn", required=True)
    s.add_argument("--table", required=True)
    s.add_argument("--sink", required=True)
    s.add_argument("--c-read", action="store_true", help="also time the C read loop")
    p = sub.add_parser("spawn")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--method", choices=("spawn", "forkserver"), default="spawn")
    sub.add_parser("sizes")
    a = ap.parse_args()
    out = {"stages": stages, "spawn": spawn, "sizes": sizes}[a.cmd](a)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

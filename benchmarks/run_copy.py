"""parallelsync copy throughput against baselines measured in the same run.

    python benchmarks/run_copy.py                       # bench_mixed, 2 M rows, workers 1 and 2
    python benchmarks/run_copy.py --four --repeat 5     # also 4 workers
    python benchmarks/run_copy.py --scaling             # workers=2 at 0.5/1/2/5 M rows

Each command runs as its own process tree; repeats are interleaved (all commands once, then
again) so that a noisy minute hurts every row alike. Results: a table on stdout and
benchmarks/results/<name>.json with every sample.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import datagen  # noqa: E402
import measure  # noqa: E402
import pgserver  # noqa: E402
import report  # noqa: E402
from report import Entry  # noqa: E402

READ, PSQL, OLD, ROWS_BSON, CX = (
    "read limit",
    "psql \\copy",
    "old approach",
    "rows+bson.encode",
    "connectorx+pymongoarrow",
)
# The old approach and the per-row Python baselines run at ~15-20 k rows/s: measuring them on
# the whole table would take most of the run's time for no extra information (their cost per
# row is flat), so by default they read only the first rows.
DEFAULT_SLOW_ROWS = 300_000
SCALING_SIZES = (500_000, 1_000_000, 2_000_000, 5_000_000)


class Env:
    """The servers a run needs, started once: PostgreSQL and the wire sink."""

    def __init__(self, unique_ids: bool) -> None:
        self.pg = pgserver.start()
        self.sink_proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "wiresink.py"),
                "--port",
                "0",
                "--parent-pid",
                str(os.getpid()),
                *(["--unique-ids"] if unique_ids else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.sink_proc.stdout is not None
        self.sink_uri = self.sink_proc.stdout.readline().strip()
        self.sink = psutil.Process(self.sink_proc.pid)
        self.server = _postmaster(self.pg.dsn)
        self.clusters: dict[int, Any] = {}

    def dask_cluster(self, workers: int) -> str:
        """The address of a standing Dask cluster of `workers` processes (1 thread each), as a
        user would keep one: the copy connects to it, so its start-up is not in the copy's
        time. Its worker processes are not the copy's children: their CPU and RSS are not in
        the copy's columns, only its rows/s compare."""
        if workers not in self.clusters:
            import logging

            import distributed

            self.clusters[workers] = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=":0", silence_logs=logging.ERROR,
            )  # fmt: skip
            # A standing cluster has run a job before: its workers have imported the task's code
            # (numpy, psycopg, pymongo, the transcoder), which a first job pays once per process.
            with distributed.Client(self.clusters[workers]) as client:
                client.run(importlib.import_module, "parallelsync.workers.dask_task")
        return str(self.clusters[workers].scheduler_address)

    def close(self) -> None:
        for cluster in self.clusters.values():
            cluster.close()
        self.sink_proc.terminate()
        self.sink_proc.wait(10)
        self.pg.stop()


def _postmaster(dsn: str) -> psutil.Process | None:
    """The local postmaster (reaps backends, so its children CPU is the server's CPU)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    try:
        return psutil.Process(int(row[0])).parent() if row else None
    except psutil.Error:
        return None  # a remote server: its CPU is not measured


def _py(*args: str) -> list[str]:
    return [sys.executable, *args]


def build_entries(a: argparse.Namespace, env: Env, table: str, rows: int) -> list[Entry]:
    slow_rows = min(rows, a.slow_rows)
    base = [str(HERE / "baselines.py")]
    common = ["--dsn", env.pg.dsn, "--table", table]
    slow = [*common, "--uri", env.sink_uri, "--max-id", str(slow_rows)]
    out: list[Entry] = []
    want = set(a.baselines.split(",")) if a.baselines else set()
    for n in a.workers:
        if "read" in want:
            out.append(
                Entry(READ, n, "read", _py(*base, "read_limit", *common, "--procs", str(n)), rows)
            )
        if "psql" in want:
            out.append(Entry(PSQL, n, "read", _py(*base, "psql", *common, "--procs", str(n)), rows))
    if "old" in want:
        out.append(Entry(OLD, 1, "baseline", _py(*base, "old", *slow), slow_rows))
    if "rows_bson" in want:
        out.append(Entry(ROWS_BSON, 1, "baseline", _py(*base, "rows_bson", *slow), slow_rows))
    if "connectorx" in want:
        for n in a.workers:
            out.append(
                Entry(
                    CX,
                    n,
                    "baseline",
                    _py(*base, "connectorx", *slow, "--url", env.pg.url, "--procs", str(n)),
                    slow_rows,
                )
            )
    for target in a.targets:
        uri = target_uri(env, target)
        for n in a.workers:
            for executor in a.executors:
                name = f"parallelsync {target}" + ("" if executor == "local" else f" {executor}")
                cmd = parallelsync_cmd(env.pg.dsn, table, uri, n)
                if executor == "dask":
                    cmd += ["--executor", "dask", "--scheduler", env.dask_cluster(n)]
                out.append(Entry(name, n, "parallelsync", cmd, rows))
    return out


def target_uri(env: Env, target: str) -> str:
    """null: discards in the worker; wire: the wiresink over TCP; file: a .bson file on disk."""
    if target == "wire":
        return env.sink_uri
    if target == "file":
        directory = Path(tempfile.gettempdir()) / "parallelsync-bench-file"
        directory.mkdir(exist_ok=True)
        return f"file:{directory}"
    return "null:"


def parallelsync_cmd(dsn: str, table: str, uri: str, workers: int) -> list[str]:
    return _py(
        "-m",
        "parallelsync",
        "copy",
        "--source",
        dsn,
        "--table",
        table,
        "--target",
        uri,
        "--db",
        "bench",
        "--collection",
        table,
        "--workers",
        str(workers),
        "--json",
    )


def run_entries(entries: list[Entry], env: Env, repeat: int, timeout: float) -> None:
    penv = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for rep in range(repeat):
        for e in entries:
            if e.unavailable:
                continue
            s = measure.run(e.cmd, timeout, env=penv, server=env.server, sink=env.sink)
            e.add(s)
            last = e.samples[-1]
            detail = json.dumps(s.result)[:300] if s.result else s.stderr_tail[-300:]
            state = (
                f"{last['rows_per_s']:,.0f} rows/s" if last["ok"] else f"FAILED rc={s.rc} {detail}"
            )
            print(
                f"[{rep + 1}/{repeat}] {e.name:<26} N={e.workers}  wall {s.wall:6.1f} s  "
                f"rss {s.peak_rss_mb:6.0f} MB  {state}",
                file=sys.stderr,
                flush=True,
            )


def copy_bytes_per_row(entries: list[Entry]) -> float:
    for e in entries:
        for s in e.samples:
            r = s.get("result") or {}
            if s.get("ok") and r.get("bytes") and r.get("rows"):
                return float(r["bytes"]) / float(r["rows"])
    return 0.0


def parallelsync_available() -> str | None:
    p = subprocess.run(
        _py("-m", "parallelsync", "copy", "--help"),
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )
    return None if p.returncode == 0 else (p.stderr or p.stdout)[-500:]


def write_json(name: str, payload: dict[str, Any]) -> Path:
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(payload, indent=1, default=str))
    return out


def main_suite(a: argparse.Namespace, env: Env) -> dict[str, Any]:
    rows = a.rows or datagen.DEFAULT_ROWS[a.kind]
    table = datagen.ensure_table(env.pg.dsn, a.kind, rows)
    entries = build_entries(a, env, table, rows)
    why = parallelsync_available()
    for e in entries:
        if e.kind == "parallelsync" and why:
            e.unavailable = f"python -m parallelsync copy --help failed: {why}"
    run_entries(entries, env, a.repeat, a.timeout)
    bpr = copy_bytes_per_row(entries)
    rows_out = report.summarize(entries, bpr)
    print(
        f"\n{table}: {rows:,} rows, {bpr * rows / 1e6:,.0f} MB as COPY BINARY "
        f"({bpr:.0f} B/row); medians of {a.repeat}; slow baselines on the first "
        f"{min(rows, a.slow_rows):,} rows"
    )
    print(report.table(rows_out))
    print("\n" + report.markdown(rows_out))
    return {
        "table": table,
        "kind": a.kind,
        "rows": rows,
        "copy_bytes_per_row": bpr,
        "copy_bytes": bpr * rows,
        "summary": rows_out,
        "entries": [vars(e) for e in entries],
    }


def scaling_suite(a: argparse.Namespace, env: Env) -> dict[str, Any]:
    """workers=2 at growing sizes: rows/s and peak RSS should stay flat."""
    entries: list[Entry] = []
    for size in a.sizes:
        table = datagen.ensure_table(env.pg.dsn, a.kind, size)
        for target in a.targets:
            uri = target_uri(env, target)
            entries.append(
                Entry(
                    f"parallelsync {target} {size:,}",
                    2,
                    "parallelsync",
                    parallelsync_cmd(env.pg.dsn, table, uri, 2),
                    size,
                )
            )
    run_entries(entries, env, a.repeat, a.timeout)
    out = []
    for e in entries:
        out.append(
            {
                "name": e.name,
                "rows": e.rows,
                "rows_per_s": e.median("rows_per_s"),
                "wall_s": e.median("wall"),
                "peak_rss_mb": e.median("peak_rss_mb"),
                "error": e.error(),
            }
        )
    fits = {
        t: _fit(
            [
                (o["rows"], o["wall_s"])
                for o in out
                if o["name"].startswith(f"parallelsync {t} ") and o["wall_s"]
            ]
        )
        for t in a.targets
    }
    print("\nscaling, workers=2 (medians):")
    print(f"{'name':<34} {'rows/s':>10} {'wall s':>8} {'peak RSS MB':>12}")
    for o in out:
        print(
            f"{o['name']:<34} {report._f(o['rows_per_s'], ',.0f'):>10} "
            f"{report._f(o['wall_s'], '.1f'):>8} {report._f(o['peak_rss_mb'], '.0f'):>12}"
            + (f"  ERROR {o['error'][:80]}" if o["error"] else "")
        )
    for t, f in fits.items():
        if f:
            print(f"{t}: wall ≈ {f['fixed_s']:.1f} s + {f['us_per_row']:.2f} µs/row")
    return {
        "kind": a.kind,
        "sizes": a.sizes,
        "summary": out,
        "fits": fits,
        "entries": [vars(e) for e in entries],
    }


def _fit(points: list[tuple[int, float]]) -> dict[str, float] | None:
    """Least-squares wall = fixed + per_row * rows: separates start-up from the per-row cost."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    if sxx == 0:
        return None
    b = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx
    return {"fixed_s": my - b * mx, "us_per_row": b * 1e6}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kind", choices=sorted(datagen.KINDS), default="mixed")
    ap.add_argument("--rows", type=int, help="table rows (default: datagen's default per kind)")
    ap.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    ap.add_argument("--four", action="store_true", help="also run with 4 workers")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--targets",
        type=lambda s: s.split(","),
        default=["null", "wire"],
        help="parallelsync targets: null (in-process discard), wire (wiresink), file (.bson file)",
    )
    ap.add_argument(
        "--baselines",
        default="read,psql,old,rows_bson,connectorx",
        help="comma list of read,psql,old,rows_bson,connectorx ('' for none)",
    )
    ap.add_argument(
        "--slow-rows",
        type=int,
        default=DEFAULT_SLOW_ROWS,
        help="rows read by the old/rows_bson/connectorx baselines",
    )
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(SCALING_SIZES)
    )
    ap.add_argument(
        "--sink-unique-ids",
        action="store_true",
        help="the sink rejects duplicate _ids like a server, so a range that "
        "parallelsync retries is still counted right (costs sink CPU/memory)",
    )
    ap.add_argument(
        "--executors",
        type=lambda s: s.split(","),
        default=["local"],
        help="local (worker processes) and/or dask (the ranges as tasks on a standing "
        "LocalCluster of N worker processes, 1 thread each, started once by this script)",
    )
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per command")
    ap.add_argument("--name", help="results/<name>.json (default from kind and mode)")
    a = ap.parse_args()
    if a.four and 4 not in a.workers:
        a.workers.append(4)
    return a


def main() -> None:
    a = parse_args()
    name = a.name or (f"scaling_{a.kind}" if a.scaling else f"copy_{a.kind}")
    t0 = time.time()
    env = Env(a.sink_unique_ids)
    try:
        machine = report.machine()
        body = scaling_suite(a, env) if a.scaling else main_suite(a, env)
    finally:
        env.close()
    payload = {
        "name": name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0)),
        "elapsed_s": time.time() - t0,
        "machine": machine,
        "config": {k: v for k, v in vars(a).items()},
        **body,
    }
    print(f"\nwrote {write_json(name, payload)}")


if __name__ == "__main__":
    main()

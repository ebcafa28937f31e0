"""The compiled (Cython) transcoder against the numba build, measured in the same run.

    python benchmarks/bench_impl.py --numba-repo /work/wt-numba-base [--repeat 3] [--only ...]

Sections (`--only install,stages,e2e,kinds,spawn`):
- install: a fresh venv per build, `pip install .` of a clean export of the commit, then the first
  `parallelsync copy` of a 1,000-row table into null: (--workers 2), and the installed size of the
  runtime dependencies;
- stages: client CPU per row on bench_mixed (2 M rows) per stage (read loop, transcode, insert
  into the wire sink), PostgreSQL's backend CPU for the same COPY; the read loop both ways
  (source/readloop.py): psycopg's `get_copy_data` ("read") and the C loop ("read_c");
- e2e: `copy --workers 2` into the wire sink against two `psql \\copy` on the table's ctid halves,
  with the C read loop (cython), psycopg's (cython-py, PARALLELSYNC_COPY_READER=python), numba;
- kinds: narrow, mixed, wide, jsonb into the wire sink, one run: both builds, and the compiled
  build with psycopg's read loop;
- spawn: a new worker process until it can copy (imports + kernel load): spawned, and forked
  from a fork server that preloaded it (the pool's way).
The numba build is the worktree given by --numba-repo with its own .venv (scripts/setup.sh).
Prints tables; writes benchmarks/results/impl.json with every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import datagen  # noqa: E402
import measure  # noqa: E402
from run_copy import Env  # noqa: E402

STAGES = ("read", "read_c", "transcode", "insert")


class Build:
    def __init__(self, name: str, repo: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.repo, self.python = name, repo, str(repo / ".venv" / "bin" / "python")
        self.env = env or {}  # e.g. PARALLELSYNC_COPY_READER=python: the same build, other loop

    def run_json(self, args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
        p = subprocess.run(
            [self.python, str(HERE / "implstages.py"), *args],
            cwd=self.repo,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=1800,
        )
        if p.returncode:
            raise RuntimeError(f"{self.name} {args[0]} failed: {p.stderr[-2000:]}")
        return dict(json.loads(p.stdout.strip().splitlines()[-1]))

    def copy_cmd(self, dsn: str, table: str, uri: str, workers: int, python: str = "") -> list[str]:
        return [
            python or self.python,
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
        ]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def section_install(builds: list[Build], dsn: str, repeat: int) -> dict[str, Any]:
    table = datagen.ensure_table(dsn, "mixed", 1000)
    out: dict[str, Any] = {}
    for b in builds:
        runs = []
        for _ in range(repeat if b.name == "cython" else 1):  # numba: one cold run (~80 s)
            with tempfile.TemporaryDirectory(prefix=f"psync-{b.name}-") as tmp:
                src, venv = Path(tmp) / "src", Path(tmp) / "venv"
                src.mkdir()
                archive = subprocess.run(
                    ["git", "-C", str(b.repo), "archive", "HEAD"], check=True, capture_output=True
                ).stdout
                subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                t0 = time.perf_counter()
                subprocess.run(
                    [str(venv / "bin" / "pip"), "install", "-q", str(src)],
                    check=True,
                    capture_output=True,
                )
                install_s = time.perf_counter() - t0
                py = str(venv / "bin" / "python")
                cmd = b.copy_cmd(dsn, table, "null:", 2, python=py)
                t0 = time.perf_counter()
                p = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
                first_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
                second_s = time.perf_counter() - t0
                sizes = json.loads(
                    subprocess.run(
                        [py, str(HERE / "implstages.py"), "sizes"],
                        cwd=tmp,
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                )
                runs.append(
                    {
                        "install_s": install_s,
                        "first_copy_s": first_s,
                        "second_copy_s": second_s,
                        "rc": p.returncode,
                        "result": measure.last_json_line(p.stdout),
                        "size_mb": sizes["total"] / 1e6,
                        "top": {
                            k: round(v / 1e6, 1) for k, v in list(sizes["per_dist"].items())[:6]
                        },
                    }
                )
                print(f"install {b.name}: {runs[-1]}", file=sys.stderr, flush=True)
        out[b.name] = {
            "runs": runs,
            "first_copy_s": med([r["first_copy_s"] for r in runs]),
            "size_mb": med([r["size_mb"] for r in runs]),
        }
    return out


def section_stages(builds: list[Build], env: Env, table: str, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {b.name: [] for b in builds}
    for _ in range(repeat):
        for b in builds:
            args = ["stages", "--dsn", env.pg.dsn, "--table", table, "--sink", env.sink_uri]
            r = b.run_json(args + (["--c-read"] if b.name == "cython" else []))
            out[b.name].append(r)
            print(f"stages {b.name}: {r}", file=sys.stderr, flush=True)
    summary = {}
    for name, runs in out.items():
        rows = runs[0]["rows"]
        s = {
            k: med([r[k] for r in runs if k in r]) / rows * 1e6
            for k in (*STAGES, "read_pg", "read_c_pg")
            if any(k in r for r in runs)
        }
        s["client"] = s["read"] + s["transcode"] + s["insert"]
        if "read_c" in s:
            s["client_c"] = s["read_c"] + s["transcode"] + s["insert"]
        summary[name] = s
    return {"samples": out, "us_per_row": summary}


def ctid_halves(dsn: str, table: str) -> list[str]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT relpages FROM pg_class WHERE oid = to_regclass(%s)", (table,)
        ).fetchone()
        assert row is not None
        half = int(row[0]) // 2
        base = sql.SQL(
            "\\copy (SELECT * FROM {} WHERE ctid {} {}) to '/dev/null' with (format binary)"
        )
        return [
            base.format(sql.Identifier(table), sql.SQL(op), sql.Literal(f"({half},0)")).as_string(
                conn
            )
            for op in ("<", ">=")
        ]


def psql_pair(dsn: str, commands: list[str]) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["psql", dsn, "-X", "-q", "-c", c]) for c in commands]
    if any(p.wait() for p in procs):
        raise RuntimeError("psql failed")
    elapsed = time.perf_counter() - t0
    settle(dsn)
    return elapsed


def settle(dsn: str, timeout: float = 60) -> None:
    """Wait until no other client backend is left. The server's CPU is counted from the backends
    the postmaster has reaped: a backend still exiting (psql's, datagen's) would otherwise be
    charged to the next measured copy (seen: +3 to +11 CPU-s on the first copy after them)."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ).fetchone()
            if row == (0,):
                break
            time.sleep(0.05)
    time.sleep(0.5)  # let the postmaster reap the last ones (SIGCHLD)


def copy_sample(b: Build, env: Env, table: str, workers: int) -> dict[str, Any]:
    s = measure.run(
        b.copy_cmd(env.pg.dsn, table, env.sink_uri, workers),
        1800,
        env={**os.environ, **b.env},
        server=env.server,
        sink=env.sink,
        cwd=str(b.repo),
    )
    r = s.result or {}
    return {
        "wall": s.wall,
        "job_s": r.get("seconds"),
        "rows": r.get("rows"),
        "rc": s.rc,
        "cpu_client": s.cpu_client_s,
        "cpu_pg": s.cpu_server_s,
        "cpu_sink": s.cpu_sink_s,
        "rss_mb": s.peak_rss_mb,
        "err": "" if s.rc == 0 else s.stderr_tail[-500:],
        "read_loop": r.get("read_loop", "python"),  # the numba build has psycopg's loop only
    }


def section_e2e(builds: list[Build], env: Env, table: str, repeat: int) -> dict[str, Any]:
    cmds = ctid_halves(env.pg.dsn, table)
    psql_s: list[float] = []
    runs: dict[str, list[dict[str, Any]]] = {b.name: [] for b in builds}
    for _ in range(repeat):
        psql_s.append(psql_pair(env.pg.dsn, cmds))
        for b in builds:
            runs[b.name].append(copy_sample(b, env, table, 2))
            print(f"e2e {b.name}: {runs[b.name][-1]}", file=sys.stderr, flush=True)
    limit = med(psql_s)
    out: dict[str, Any] = {"psql_ctid_halves_s": limit, "psql_samples": psql_s, "runs": runs}
    for name, rs in runs.items():
        out[name] = {
            k: med([r[k] for r in rs if r[k] is not None])
            for k in ("wall", "job_s", "cpu_client", "cpu_pg")
        }
        out[name]["ratio_wall"] = limit / out[name]["wall"]
        out[name]["ratio_job"] = limit / out[name]["job_s"]
    return out


def section_kinds(builds: list[Build], env: Env) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("narrow", "mixed", "wide", "jsonb"):
        table = datagen.ensure_table(env.pg.dsn, kind, datagen.DEFAULT_ROWS[kind])
        settle(env.pg.dsn)
        out[kind] = {}
        for workers in (1, 2):
            for b in builds:
                s = copy_sample(b, env, table, workers)
                s["rows_per_s"] = (s["rows"] or 0) / s["job_s"] if s["job_s"] else None
                out[kind][f"{b.name} N={workers}"] = s
                print(f"kinds {kind} {b.name} N={workers}: {s}", file=sys.stderr, flush=True)
    return out


def report(res: dict[str, Any]) -> None:
    if "install" in res:
        print("\nfirst copy after a fresh `pip install .` (1,000 rows, null:, --workers 2)")
        for name, r in res["install"].items():
            firsts = [round(x["first_copy_s"], 2) for x in r["runs"]]
            print(
                f"  {name:<7} first copy {r['first_copy_s']:7.2f} s  "
                f"installed {r['size_mb']:6.1f} MB  runs {firsts}"
            )
    if "stages" in res:
        print("\nclient CPU per row, bench_mixed (µs/row, medians)")
        cols = (*STAGES, "client", "client_c", "read_pg")
        print(f"  {'build':<7} " + " ".join(f"{k:>9}" for k in cols))
        for name, s in res["stages"]["us_per_row"].items():
            print(f"  {name:<7} " + " ".join(f"{s.get(k, float('nan')):9.3f}" for k in cols))
    if "e2e" in res:
        e = res["e2e"]
        print(
            f"\n2 M rows, --workers 2, wire sink; psql ctid halves {e['psql_ctid_halves_s']:.2f} s"
        )
        for b in ("cython", "cython-py", "numba"):
            if b in e:
                r = e[b]
                print(
                    f"  {b:<9} wall {r['wall']:6.2f} s (x{r['ratio_wall']:.2f} of psql)  job "
                    f"{r['job_s']:6.2f} s (x{r['ratio_job']:.2f})  "
                    f"cpu client {r['cpu_client']:.1f} s pg {r['cpu_pg']:.1f} s"
                )
    if "kinds" in res:
        print("\nall tables, wire sink, one run (rows/s by the job's clock)")
        for kind, rs in res["kinds"].items():
            print(
                f"  {kind:<7} "
                + "  ".join(f"{k} {v['rows_per_s'] or 0:>10,.0f}" for k, v in rs.items())
            )
    if "spawn" in res:
        print("\nnew worker ready (imports + kernel load), medians")
        for name, r in res["spawn"].items():
            server = f" (fork server's own start {r['server_s']:.3f} s)" if r["server_s"] else ""
            print(f"  {name:<16} {r['ready_s']:.3f} s wall, {r['cpu_s']:.3f} s CPU{server}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--numba-repo", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="install,stages,e2e,kinds,spawn")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "impl.json")
    a = ap.parse_args()
    only = set(a.only.split(","))
    builds = [Build("cython", REPO), Build("numba", a.numba_repo)]
    res: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "loadavg": os.getloadavg(),
    }
    env = Env(unique_ids=False)
    try:
        table = datagen.ensure_table(env.pg.dsn, "mixed", datagen.DEFAULT_ROWS["mixed"])
        if "spawn" in only:
            res["spawn"] = {b.name: b.run_json(["spawn"]) for b in builds}
            res["spawn"]["cython forkserver"] = builds[0].run_json(
                ["spawn", "--method", "forkserver"]
            )
        if "stages" in only:
            res["stages"] = section_stages(builds, env, table, a.repeat)
        # the C read loop (the default) and psycopg's, against numba, in the same run
        py_loop = Build("cython-py", REPO, {"PARALLELSYNC_COPY_READER": "python"})
        if "e2e" in only:
            res["e2e"] = section_e2e([builds[0], py_loop, builds[1]], env, table, a.repeat)
        if "kinds" in only:
            res["kinds"] = section_kinds([builds[0], py_loop, builds[1]], env)
        if "install" in only:
            res["install"] = section_install(builds, env.pg.dsn, a.repeat)
    finally:
        env.close()
        res["loadavg_end"] = os.getloadavg()
        a.json.parent.mkdir(exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1, default=str))
    report(res)
    print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()

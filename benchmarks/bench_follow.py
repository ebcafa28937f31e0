"""`parallelsync follow` throughput: decode + transcode + apply, in changes/s (issue 14, "Speed").

    python benchmarks/bench_follow.py                      # 100 k changes, 3 repeats
    python benchmarks/bench_follow.py --changes 30000 --single-changes 3000 --repeat 1

Per repeat: the table (`bench_mixed` layout, `--rows` rows) is copied with `copy --slot` into
each target (the wire sink, SecantusDB): the full copy's rows/s of the same table in the same
run. Then each scenario's changes are generated on the server (a procedure that COMMITs per
transaction), so that every slot holds them, and only `follow --stop-at-end` is timed, once per
target:

  single   --single-changes single-row transactions, cycling insert, update, delete
  batch    --changes / 1,000 transactions of 1,000 changes (334 inserts, 333 updates, 333 deletes)
  txn1k    one transaction of 1,000 changes (same mix): peak RSS of the follow process
  txn100k  one transaction of 100,000 changes (same mix): peak RSS, flat against txn1k

txn1k and txn100k run against --rss-targets only (default: the wire sink; SecantusDB applies a
few hundred changes a second). They come last in a repeat, so a slot that skips them is
dropped with their changes unread.

Inserts are new ids above the largest, deletes the smallest ids, updates set two columns of the
newest rows (of before the transaction; in txn100k on a small table, of the rows it inserts);
the table has no TOASTed columns, so an update arrives whole and is applied as
a replace (like an insert); a delete is a delete by `_id`. Rates are changes per second of
follow's own clock (`seconds` of its --json: after the preflight, to the end position applied),
`wall` the whole process; for a copy, `phase per s` is its workers' phase alone (the job's
clock also holds ~1-4 s of set-up, much of a small table's copy). `x copy` is follow's rate over
the copy's (job clock) into the same target. Results: a table on stdout,
benchmarks/results/follow.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import datagen  # benchmarks/ is on sys.path: run as a script from there
import measure
import psutil
import psycopg
import report
from psycopg import sql
from run_copy import REPO, Env, _py, write_json

from parallelsync.demo.secantus import SecantusServer

TABLE = "bench_follow"
SCENARIOS = ("single", "batch", "txn1k", "txn100k")
RSS_SCENARIOS = ("txn1k", "txn100k")

# One procedure for every scenario: n transactions of `per` changes, a third each inserts,
# updates and deletes (a single-row transaction takes the kinds in turn); `total` returns the
# row changes made. Inserts go above the largest id, deletes take the smallest ids (the ids stay
# contiguous, the table keeps its size), updates the newest rows of before the transaction, or
# when the table has too few, the rows it inserts (txn100k on a small table).
PROCEDURE = f"""
CREATE OR REPLACE PROCEDURE bench_changes(n int, per int, INOUT total int8 DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE lo int8; hi int8; top int8; ins int; upd int; del int; k int8;
BEGIN
  total := 0;
  FOR t IN 0 .. n - 1 LOOP
    IF per = 1 THEN
      ins := (t % 3 = 0)::int; upd := (t % 3 = 1)::int; del := (t % 3 = 2)::int;
    ELSE
      upd := per / 3; del := per / 3; ins := per - upd - del;
    END IF;
    SELECT min(id), max(id) INTO lo, hi FROM {TABLE};
    INSERT INTO {TABLE} SELECT i, {", ".join(e for _, _, e in datagen.MIXED_COLS)}
      FROM generate_series(hi + 1, hi + ins) i;
    GET DIAGNOSTICS k = ROW_COUNT; total := total + k;
    top := CASE WHEN hi - lo + 1 >= upd + del THEN hi ELSE hi + ins END;
    UPDATE {TABLE} SET i4 = i4 + 1, t = 'updated-' || md5(id::text)
      WHERE id > top - upd AND id <= top;
    GET DIAGNOSTICS k = ROW_COUNT; total := total + k;
    DELETE FROM {TABLE} WHERE id < lo + del;
    GET DIAGNOSTICS k = ROW_COUNT; total := total + k;
    COMMIT;
  END LOOP;
END $$;
"""


@dataclass
class Row:
    """One measured command (a copy or a follow of one scenario into one target)."""

    what: str  # copy | follow
    scenario: str  # "" for a copy
    target: str  # wire | secantus
    samples: list[dict[str, Any]] = field(default_factory=list)

    def median(self, key: str) -> float | None:
        vals = [s[key] for s in self.samples if s.get("ok") and s.get(key) is not None]
        return statistics.median(vals) if vals else None


def scenario_shape(name: str, a: argparse.Namespace) -> tuple[int, int]:
    """(transactions, changes per transaction)."""
    return {
        "single": (a.single_changes, 1),
        "batch": (max(1, a.changes // 1000), 1000),
        "txn1k": (1, 1000),
        "txn100k": (1, 100_000),
    }[name]


def generate(dsn: str, scenario: str, a: argparse.Namespace) -> tuple[int, float]:
    """Make the scenario's changes; (row changes made, seconds)."""
    n, per = scenario_shape(scenario, a)
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("CALL bench_changes(%s, %s)", (n, per)).fetchone()
    made = int(row[0]) if row else 0
    if made != n * per:
        raise SystemExit(f"bench_changes made {made} changes, not {n * per}: is the table empty?")
    return made, time.perf_counter() - t0


def copy_cmd(dsn: str, uri: str, slot: str, workers: int) -> list[str]:
    return _py("-m", "parallelsync", "copy", "--source", dsn, "--table", TABLE, "--target", uri,
               "--db", "bench", "--collection", TABLE, "--workers", str(workers),
               "--slot", slot, "--json")  # fmt: skip


def follow_cmd(dsn: str, uri: str, slot: str) -> list[str]:
    return _py("-m", "parallelsync", "follow", "--source", dsn, "--table", TABLE, "--target",
               uri, "--db", "bench", "--collection", TABLE, "--slot", slot, "--stop-at-end",
               "--json")  # fmt: skip


def sample(s: measure.Sample, what: str, expected: int | None) -> dict[str, Any]:
    r = s.result or {}
    d: dict[str, Any] = {
        "rc": s.rc, "wall": s.wall, "peak_rss_mb": s.peak_rss_mb, "cpu_client_s": s.cpu_client_s,
        "cpu_server_s": s.cpu_server_s, "cpu_sink_s": s.cpu_sink_s, "result": r,
        "loadavg_1m": s.extra.get("loadavg_1m"), "stderr_tail": s.stderr_tail[-600:],
    }  # fmt: skip
    ok = s.rc == 0 and r.get("status") == "FINISHED" and bool(r.get("seconds"))
    if what == "copy":
        ok = ok and bool(r.get("rows"))
        if ok:
            d["count"] = int(r["rows"])
    else:
        ok = ok and (expected is None or r.get("changes") == expected)
        if ok:
            d["count"] = int(r["changes"])
            d["transactions"] = int(r["transactions"])
    d["ok"] = ok
    if ok:
        d["per_s"] = d["count"] / float(r["seconds"])
        d["wall_per_s"] = d["count"] / s.wall
        phase = [p for p in r.get("phases") or () if p.get("name") == "copy"]
        if phase and phase[0].get("seconds"):  # the workers' phase alone, without set-up
            d["phase_per_s"] = d["count"] / float(phase[0]["seconds"])
    return d


def drop_slots(dsn: str, slots: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for slot in slots:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(slot)))


def run(a: argparse.Namespace, env: Env, uris: dict[str, str]) -> list[Row]:
    dsn = env.pg.dsn
    datagen.ensure_table(dsn, "mixed", a.rows, name=TABLE, force=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PROCEDURE)
    penv = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    penv = {k: v for k, v in penv.items() if not k.startswith("PARALLELSYNC_")}
    sinks = {"wire": env.sink, "secantus": env_secantus(uris)}
    rows: dict[tuple[str, str, str], Row] = {}

    def measured(what: str, scen: str, target: str, cmd: list[str], expected: int | None) -> None:
        key = (what, scen, target)
        row = rows.setdefault(key, Row(what, scen, target))
        s = measure.run(cmd, a.timeout, env=penv, server=env.server, sink=sinks[target])
        d = sample(s, what, expected)
        row.samples.append(d)
        rate = f"{d['per_s']:,.0f}/s" if d["ok"] else f"FAILED rc={s.rc} {d['stderr_tail'][-300:]}"
        print(f"  {what:<6} {scen:<8} {target:<8} wall {s.wall:6.1f} s  "
              f"rss {s.peak_rss_mb:5.0f} MB  {rate}", file=sys.stderr, flush=True)  # fmt: skip

    for rep in range(a.repeat):
        print(f"[{rep + 1}/{a.repeat}]", file=sys.stderr, flush=True)
        slots = {t: f"bench_follow_{t}_{rep}" for t in uris}
        drop_slots(dsn, list(slots.values()))
        for t, uri in uris.items():
            measured("copy", "", t, copy_cmd(dsn, uri, slots[t], a.workers), None)
        for scen in (s for s in SCENARIOS if s in a.scenarios):  # the order matters: see above
            n, seconds = generate(dsn, scen, a)
            print(f"  generated {scen}: {n:,} changes in {seconds:.1f} s", file=sys.stderr)
            for t, uri in uris.items():
                if scen in RSS_SCENARIOS and t not in a.rss_targets:
                    continue
                measured("follow", scen, t, follow_cmd(dsn, uri, slots[t]), n)
        drop_slots(dsn, list(slots.values()))
    return list(rows.values())


_SECANTUS: dict[str, psutil.Process] = {}


def env_secantus(uris: dict[str, str]) -> psutil.Process | None:
    return _SECANTUS.get("proc") if "secantus" in uris else None


def summarize(rows: list[Row]) -> list[dict[str, Any]]:
    copy_rate = {r.target: r.median("per_s") for r in rows if r.what == "copy"}
    out = []
    for r in rows:
        per_s = r.median("per_s")
        base = copy_rate.get(r.target)
        out.append({
            "what": r.what, "scenario": r.scenario, "target": r.target,
            "count": r.median("count"), "transactions": r.median("transactions"),
            "per_s": per_s, "wall_per_s": r.median("wall_per_s"),
            "copy_phase_per_s": r.median("phase_per_s"),
            "x_copy": per_s / base if per_s and base and r.what == "follow" else None,
            "peak_rss_mb": r.median("peak_rss_mb"), "cpu_client_s": r.median("cpu_client_s"),
            "cpu_server_s": r.median("cpu_server_s"), "cpu_sink_s": r.median("cpu_sink_s"),
            "ok": sum(1 for s in r.samples if s["ok"]), "runs": len(r.samples),
        })  # fmt: skip
    return out


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(summary: list[dict[str, Any]]) -> str:
    head = ("what", "scenario", "target", "changes/rows", "txns", "per s", "wall per s",
            "phase per s", "x copy", "RSS MB", "cpu cli/pg/sink s", "ok")  # fmt: skip
    lines = [head]
    for r in summary:
        cpu = "/".join(_f(r[k], ".1f") for k in ("cpu_client_s", "cpu_server_s", "cpu_sink_s"))
        lines.append((
            r["what"], r["scenario"] or "-", r["target"], _f(r["count"], ",.0f"),
            _f(r["transactions"], ",.0f"), _f(r["per_s"], ",.0f"), _f(r["wall_per_s"], ",.0f"),
            _f(r["copy_phase_per_s"], ",.0f"), _f(r["x_copy"], ".2f"),
            _f(r["peak_rss_mb"], ".0f"), cpu, f"{r['ok']}/{r['runs']}",
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) if j < 3 else c.rjust(w)
                      for j, (c, w) in enumerate(zip(line, widths, strict=True)))
            for line in lines]  # fmt: skip
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="table rows (copied per repeat)")
    ap.add_argument("--changes", type=int, default=100_000, help="changes of batch")
    ap.add_argument("--single-changes", type=int, default=100_000,
                    help="single-row transactions of single")  # fmt: skip
    ap.add_argument("--rss-targets", type=lambda s: s.split(","), default=["wire"],
                    help="targets of txn1k and txn100k")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="workers of the copies")
    ap.add_argument("--targets", type=lambda s: s.split(","), default=["wire", "secantus"])
    ap.add_argument("--scenarios", type=lambda s: s.split(","), default=list(SCENARIOS))
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per command")
    ap.add_argument("--name", default="follow", help="results/<name>.json")
    return ap.parse_args()


def main() -> None:
    a = parse_args()
    unknown = set(a.scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(sorted(unknown))}: use {SCENARIOS}")
    t0 = time.time()
    env = Env(unique_ids=False)
    secantus: SecantusServer | None = None
    try:
        uris: dict[str, str] = {}
        if "wire" in a.targets:
            uris["wire"] = env.sink_uri
        if "secantus" in a.targets:
            secantus = SecantusServer()
            secantus.start()
            uris["secantus"] = secantus.uri
            if secantus.pid is not None:
                _SECANTUS["proc"] = psutil.Process(secantus.pid)
        machine = report.machine()
        rows = run(a, env, uris)
    finally:
        if secantus is not None:
            secantus.cleanup()
        env.close()
    summary = summarize(rows)
    print(f"\n{TABLE}: {a.rows:,} rows (bench_mixed layout); single {a.single_changes:,}, "
          f"batch {a.changes:,} changes; medians of {a.repeat}")  # fmt: skip
    print(table(summary))
    payload = {
        "name": a.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0)),
        "elapsed_s": time.time() - t0,
        "machine": machine,
        "config": vars(a),
        "summary": summary,
        "rows": [vars(r) for r in rows],
    }
    print(f"\nwrote {write_json(a.name, payload)}")


if __name__ == "__main__":
    main()

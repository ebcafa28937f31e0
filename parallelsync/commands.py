"""The subcommands behind the CLI: each turns a config into an outcome and an exit code."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from parallelsync.config import CopyConfig
from parallelsync.errors import EXIT_OK
from parallelsync.mapping import build_projection
from parallelsync.progress import human
from parallelsync.source.catalog import resolve_table
from parallelsync.source.connect import connect
from parallelsync.source.planner import plan_ranges

if TYPE_CHECKING:
    from parallelsync.coordinator import Result


def run_copy(cfg: CopyConfig, *, as_json: bool) -> int:
    from parallelsync.coordinator import CopyJob

    result = CopyJob(cfg).run()
    print_summary(result)
    if as_json:
        print(json.dumps(result.as_json(), default=str), flush=True)
    if result.error:
        print(f"parallelsync: error: {result.error}", file=sys.stderr)
    return result.exit_code if result.status != "FINISHED" else EXIT_OK


def print_summary(r: Result) -> None:
    rate = r.rows / r.seconds if r.seconds > 0 else 0.0
    rows = [
        ("job", r.job_id),
        ("status", r.status),
        ("target", r.target),
        ("rows", f"{r.rows:,}"),
        ("documents", f"{r.docs:,}"),
        ("COPY bytes", f"{r.bytes / 1e6:,.1f} MB"),
        ("seconds", f"{r.seconds:,.2f}"),
        ("rate", f"{human(rate)} rows/s, {r.bytes / max(r.seconds, 1e-9) / 1e6:.1f} MB/s"),
        ("workers / ranges", f"{r.workers} / {r.ranges}"),
        ("consistent LSN", f"{r.consistent_lsn} (slot {r.slot})" if r.slot else "- (no slot)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}", file=sys.stderr)
    sys.stderr.flush()


def run_verify(cfg: CopyConfig, *, as_json: bool) -> int:
    from parallelsync.errors import EXIT_VERIFY
    from parallelsync.verify_job import run_verify as verify_target

    report = verify_target(cfg)
    if as_json:
        print(json.dumps(report, default=str), flush=True)
    else:
        src, tgt = report["source"], report["target_digest"]
        print(f"{report['status']}: {report['table']} -> {report['target']}")
        print(f"  source {src['count']:,} docs, digest {src['digest']}")
        print(f"  target {tgt['count']:,} docs, digest {tgt['digest']}")
        if not report["per_range"]:
            print("  (this key's order differs in BSON: compared as a whole, not per range)")
        for r in report["ranges"]:
            if r["equal"] is False:
                b = r["bounds"]
                print(
                    f"  range {r['range']} [{b['lower']} .. {b['upper']}): source "
                    f"{r['source']['count']} docs, target {r['target']['count']} docs"
                )
        for smp in report.get("samples", []):
            print(
                f"  range {smp['range']}: {smp['missing_in_target']} missing, "
                f"{smp['extra_in_target']} extra, {smp['different']} different; sample keys: "
                f"missing {smp['sample_missing']}, extra {smp['sample_extra']}, "
                f"different {smp['sample_different']}"
            )
    return EXIT_OK if report["status"] == "EQUAL" else EXIT_VERIFY


def run_plan(cfg: CopyConfig, *, as_json: bool) -> int:
    with connect(cfg.source, autocommit=True) as pg:
        table = resolve_table(pg, cfg.table)
        proj = build_projection(table, cfg)
        plan = plan_ranges(pg, table, proj.key, cfg.workers * cfg.ranges_per_worker, cfg.where)
    ranges = sorted((r.describe() for r in plan.ranges), key=lambda d: d["id"])
    out: dict[str, Any] = {
        "table": table.display,
        "key": list(plan.key),
        "method": plan.method,
        "estimated_rows": plan.estimated_rows,
        "ranges": ranges,
    }
    if as_json:
        print(json.dumps(out, default=str), flush=True)
        return EXIT_OK
    print(
        f"table {table.display}, key ({', '.join(plan.key) or 'ctid'}), {plan.method}, "
        f"~{plan.estimated_rows:,} rows"
    )
    print(f"{'range':>5}  {'estimated rows':>14}  lower (inclusive) .. upper (exclusive)")
    for d in ranges:
        lo = "-inf" if d["lower"] is None else ", ".join(map(str, d["lower"]))
        hi = "+inf" if d["upper"] is None else ", ".join(map(str, d["upper"]))
        print(f"{d['id']:>5}  {d['estimated_rows']:>14,}  {lo} .. {hi}")
    return EXIT_OK

"""The subcommands behind the CLI: each turns a config into printed output and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from parallelsync.cli.display import Display, JsonDisplay, make_display
from parallelsync.cli.output import (
    ReportedError,
    print_json,
    print_phases,
    print_summary,
    print_traceback,
)
from parallelsync.config import CopyConfig
from parallelsync.errors import EXIT_OK, EXIT_VERIFY, ParallelSyncError


@contextmanager
def display_for(cfg: CopyConfig) -> Iterator[Display]:
    """The display the options ask for, closed (the live area cleared) before anything after
    the run is printed; an error raised meanwhile goes out in the display's format."""
    display = make_display(
        quiet=cfg.quiet, verbose=cfg.verbose, log_format=cfg.log_format,
        interval=cfg.progress_seconds,
    )  # fmt: skip
    try:
        yield display
    except ParallelSyncError as exc:
        display.close()
        if isinstance(display, JsonDisplay):
            display.emit("error", message=str(exc), exit_code=exc.exit_code)
            raise ReportedError(exc) from exc
        raise
    finally:
        display.close()


def run_copy(cfg: CopyConfig, *, as_json: bool, debug: bool = False) -> int:
    from parallelsync.job.copy import CopyJob

    with display_for(cfg) as display:
        result = CopyJob(cfg, display).run()
    if isinstance(display, JsonDisplay):
        if result.job_created:
            display.emit("summary", **result.as_json())
        if result.error:
            display.emit("error", message=result.error, exit_code=result.exit_code)
    elif result.job_created:
        print_summary(result)
    if as_json:
        print_json(result.as_json())
    if result.error:
        if debug and result.exception is not None:
            print_traceback(result.exception)
        if not isinstance(display, JsonDisplay):
            print(f"parallelsync: error: {result.error}", file=sys.stderr)
    # copy --follow: a FINISHED copy whose follow part failed after the swap has an error.
    return result.exit_code if result.status != "FINISHED" or result.error else EXIT_OK


def run_verify(cfg: CopyConfig, *, as_json: bool, debug: bool = False) -> int:
    from parallelsync.job.verify import run_verify as verify_target

    with display_for(cfg) as display:
        report = verify_target(cfg, display)
    if isinstance(display, JsonDisplay):
        display.emit("summary", **report)
    else:
        print_phases(report["phases"], report["slowest_ranges"])
    if as_json:
        print_json(report)
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


def run_plan(cfg: CopyConfig, *, as_json: bool, debug: bool = False) -> int:
    from parallelsync.job.phases import make_plan, preflight
    from parallelsync.job.report import Phases

    with display_for(cfg) as display:
        phases = Phases(display)
        with phases.run("preflight"):
            prepared = preflight(cfg, display.warning)
        with phases.run("plan"):
            plan = make_plan(cfg, prepared, None)
    ranges = sorted((r.describe() for r in plan.ranges), key=lambda d: d["id"])
    out: dict[str, Any] = {
        "table": prepared.table.display,
        "key": list(plan.key),
        "method": plan.method,
        "estimated_rows": plan.estimated_rows,
        "ranges": ranges,
    }
    if as_json:
        print_json(out)
        return EXIT_OK
    print(
        f"table {prepared.table.display}, key ({', '.join(plan.key) or 'ctid'}), {plan.method}, "
        f"~{plan.estimated_rows:,} rows"
    )
    print(f"{'range':>5}  {'estimated rows':>14}  lower (inclusive) .. upper (exclusive)")
    for d in ranges:
        lo = "-inf" if d["lower"] is None else ", ".join(map(str, d["lower"]))
        hi = "+inf" if d["upper"] is None else ", ".join(map(str, d["upper"]))
        where = "rows whose key is NULL" if d["kind"] == "nulls" else f"{lo} .. {hi}"
        if d.get("relation"):
            where = f"{'.'.join(d['relation'])}: {where}"
        print(f"{d['id']:>5}  {d['estimated_rows']:>14,}  {where}")
    return EXIT_OK


def run_follow(cfg: CopyConfig, *, as_json: bool, debug: bool = False) -> int:
    from parallelsync.job.follow import run_follow as follow

    with display_for(cfg) as display:
        result = follow(cfg, display)
    if isinstance(display, JsonDisplay):
        display.emit("summary", **result.as_json())
    if as_json:
        print_json(result.as_json())
    else:
        print(
            f"{result.status}: {result.transactions:,} transactions, {result.changes:,} changes "
            f"applied ({result.skipped:,} already applied skipped), from {result.start_lsn} to "
            f"{result.applied_lsn} in {result.seconds:.1f} s; {result.reason}"
        )
        lag, retained = result.extra.get("lag_bytes"), result.extra.get("retained_wal_bytes")
        if lag is not None:
            print(f"  lag {lag:,} bytes, {result.extra.get('lag_seconds') or 0:.1f} s; "
                  f"{result.extra.get('changes_per_second', 0):,.1f} changes/s; the slot retains "
                  f"{'unknown' if retained is None else f'{retained:,} bytes'} of WAL")  # fmt: skip
    return EXIT_OK

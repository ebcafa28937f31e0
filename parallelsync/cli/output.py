"""What the CLI prints: the summary, JSON results, tracebacks for --debug."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from parallelsync.errors import InternalError, ParallelSyncError
from parallelsync.job.progress import human
from parallelsync.job.state import Result
from parallelsync.redact import scrub_known


class ReportedError(ParallelSyncError):
    """An error the display has already reported (as a JSON event): main only exits with it."""

    def __init__(self, exc: ParallelSyncError) -> None:
        super().__init__(str(exc))
        self.exit_code = exc.exit_code


def print_json(obj: Any) -> None:
    print(json.dumps(obj, default=str), flush=True)


def print_traceback(exc: BaseException) -> None:
    # A traceback quotes exception messages, driver ones included: scrubbed like every message.
    print(scrub_known("".join(traceback.format_exception(exc))), end="", file=sys.stderr)
    if isinstance(exc, InternalError) and exc.details:
        print(f"in the worker process:\n{exc.details}", file=sys.stderr)


def _lsn(r: Result) -> str:
    if not r.slot:
        return "- (no slot)"
    if r.status != "FINISHED" and r.extra.get("swap_outcome") == "unknown":
        return f"{r.consistent_lsn} (slot {r.slot} kept: valid only if the swap took place)"
    if r.status != "FINISHED":
        return f"- (the run's slot {r.slot} was dropped)" if r.consistent_lsn else "-"
    return f"{r.consistent_lsn} (slot {r.slot})"


def _consistency(r: Result) -> str:
    if r.extra.get("consistency") == "per-range":
        return "per-range: a resume without a slot; finished ranges keep the first snapshot"
    return "one snapshot" if r.status == "FINISHED" else "-"


# How the summary words the swap's outcome (the job document's swap_outcome).
SWAP_SHOWN = {
    "done": "done: the target is the new collection",
    "not_done": "not done: the target is unchanged",
    "unknown": "UNKNOWN: the target may be the old or the new collection; look before using it",
}


def _follow_rows(r: Result) -> list[tuple[str, str]]:
    """copy --follow: the catch-up at the swap and how the follow after it ended."""
    swap, follow = r.extra.get("swap"), r.extra.get("follow")
    out = []
    if swap:
        lag_s = swap.get("lag_seconds_at_swap")
        out.append((
            "caught up", f"{swap['changes_before_swap']:,} changes, swapped at "
            f"{swap['swap_lsn']}, lag {swap.get('lag_bytes_at_swap') or 0:,} bytes / "
            f"{lag_s or 0:.1f} s",
        ))  # fmt: skip
    if follow:
        out.append((
            "follow", f"{follow['status']} ({follow['reason']}) at {follow['applied_lsn']}, "
            f"{follow['changes']:,} changes in all",
        ))  # fmt: skip
    return out


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
        ("consistent LSN", _lsn(r)),
        ("consistency", _consistency(r)),
    ]
    if r.extra.get("swap_outcome"):
        rows.append(("swap", SWAP_SHOWN.get(str(r.extra["swap_outcome"]), "-")))
    rows += _follow_rows(r)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}", file=sys.stderr)
    print_phases(r.phases, r.slowest_ranges)


def print_phases(phases: Sequence[dict[str, Any]], slowest: Sequence[dict[str, Any]]) -> None:
    """The summary per phase (seconds, rows, MB, rows/s) and the slowest ranges, on stderr."""
    out = sys.stderr
    if phases:
        width = max(len(p["name"]) for p in phases)
        print(f"\n  {'phase':<{width}}  {'seconds':>9}  {'rows':>13}  {'MB':>9}  {'rows/s':>8}",
              file=out)  # fmt: skip
        for p in phases:
            rows = f"{p['rows']:,}" if p["rows"] else "-"
            mb = f"{p['bytes'] / 1e6:,.1f}" if p["bytes"] else "-"
            rate = human(p["rows_per_second"]) if p["rows_per_second"] else "-"
            note = "" if p.get("state", "done") == "done" else f"  ({p['state']})"
            print(f"  {p['name']:<{width}}  {p['seconds']:>9,.2f}  {rows:>13}  {mb:>9}  "
                  f"{rate:>8}{note}", file=out)  # fmt: skip
    if slowest:
        print("\n  slowest ranges:", file=out)
        for s in slowest:
            print(f"    range {s['range']:>4}  {s['rows']:>13,} rows  {s['seconds']:>9,.2f} s",
                  file=out)  # fmt: skip
    out.flush()

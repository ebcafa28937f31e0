"""What the CLI prints: the summary, JSON results, tracebacks for --debug."""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from parallelsync.errors import InternalError
from parallelsync.job.progress import human
from parallelsync.job.state import Result
from parallelsync.redact import scrub_known


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
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}", file=sys.stderr)
    sys.stderr.flush()

"""The job document's fields: what a run records about itself, the same while running and at the
end (README "Job statistics" lists them)."""

from __future__ import annotations

import os
import socket
from typing import Any

from parallelsync import transcode
from parallelsync.config import CopyConfig
from parallelsync.job.phases import Prepared
from parallelsync.job.state import RangeState
from parallelsync.redact import redact_dsn, redact_uri
from parallelsync.source import readloop
from parallelsync.source.planner import Plan
from parallelsync.source.snapshot import Snapshot
from parallelsync.transcode.oversize import MAX_SKIPPED_ENTRIES


def initial(
    cfg: CopyConfig,
    prepared: Prepared,
    plan: Plan,
    snap: Snapshot,
    states: list[RangeState],
    *,
    temp: str,
    fingerprint: str,
    publication: str | None,
) -> dict[str, Any]:
    table = prepared.table
    doc: dict[str, Any] = {
        "source": {
            "dsn": redact_dsn(cfg.source),
            "schema": table.schema,
            "table": table.name,
            "filter": cfg.where,
            "key": list(plan.key),
            # The columns (name, type oid) the documents were made from: the shape a later
            # `follow` compares the table and its change stream with (job/follow.py).
            "columns": [[c.name, c.type_oid] for c in table.columns],
        },
        "target": {
            "uri": redact_uri(cfg.target),
            "db": cfg.db,
            "collection": cfg.collection,
            "temp": temp,
        },
        "workers": cfg.workers,
        # Which process runs the job: `status` tells a dead coordinator's job by it.
        "coordinator": coordinator(),
        # Which transcoder encoded the documents: "c" (the compiled kernel) or "python".
        "transcoder": transcode.IMPL,
        # Which loop reads the COPY stream: "c" (compiled) or "python"; at the end, the loops
        # the workers reported (source/readloop.py).
        "read_loop": readloop.choose(),
        "snapshot": {"name": snap.name, "consistent_lsn": snap.consistent_lsn, "slot": snap.slot},
        "plan": {"method": plan.method, "estimated_rows": plan.estimated_rows},
        "ranges": [s.doc() for s in states],
        "fingerprint": fingerprint,
        "publication": publication,
        "totals": {"rows": 0, "docs": 0, "bytes": 0},
        "progress": 0.0,
    }
    if prepared.read.foreign:
        # Each range read the foreign table at its own moment (--allow-foreign-table).
        doc["consistency"] = "per-range (foreign table)"
    return doc


def coordinator() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def figures(
    states: list[RangeState], rows: int, docs: int, nbytes: int, seconds: float, progress: float
) -> dict[str, Any]:
    """The running figures: per-range states, totals, progress, rates."""
    return {
        "ranges": [s.doc() for s in states],
        "totals": {"rows": rows, "docs": docs, "bytes": nbytes},
        "progress": progress,
        "elapsed": round(seconds, 3),
        "rates": {
            "rows_per_second": round(rows / seconds, 1) if seconds > 0 else 0,
            "mb_per_second": round(nbytes / seconds / 1e6, 2) if seconds > 0 else 0,
        },
    }


def skipped(states: list[RangeState]) -> tuple[int, list[dict[str, Any]]]:
    """--oversize skip: documents left out (count, first entries with their range)."""
    count = sum(s.skipped for s in states)
    entries = [
        {"range": s.rng.id, **e}
        for s in sorted(states, key=lambda s: s.rng.id)
        for e in s.skipped_entries
    ][:MAX_SKIPPED_ENTRIES]
    return count, entries

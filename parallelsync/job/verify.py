"""`parallelsync verify`: compare a finished target with the source as it is now.

The source is read exactly as a copy reads it (the same preflight, one fresh snapshot, the same
ranges, workers and transcoder) but the documents are only digested, never written. The target
collection is then digested per range where BSON orders `_id` like PostgreSQL orders the key, or
as a whole. For differing ranges up to SAMPLE_LIMIT_ROWS in size, sample keys are listed.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from bson.raw_bson import RawBSONDocument

from parallelsync.config import CopyConfig
from parallelsync.errors import Aborted, UsageError
from parallelsync.job.checks import compare
from parallelsync.job.copy import run_workers, slowest_ranges
from parallelsync.job.phases import Prepared, make_plan, preflight, range_states
from parallelsync.job.progress import Progress
from parallelsync.job.report import LineReporter, Phases, Reporter
from parallelsync.job.state import AbortFlag
from parallelsync.redact import scrub_known
from parallelsync.source.connect import connect
from parallelsync.source.copystream import copy_batches
from parallelsync.source.guard import SnapshotGuard
from parallelsync.source.snapshot import SnapshotHolder
from parallelsync.targets import Target, open_target
from parallelsync.targets.mongodb.digest import id_key
from parallelsync.targets.null import NullTarget
from parallelsync.transcode.checksum import doc_hash
from parallelsync.transcode.encoder import DocumentEncoder
from parallelsync.workers.pool import WorkerPool
from parallelsync.workers.worker import WorkerSetup

# Sample keys are listed for at most this many differing ranges, this many keys per kind.
MAX_SAMPLED_RANGES = 5
MAX_SAMPLE_KEYS = 10
# Sample keys are collected only for ranges up to this size, so verify memory stays bounded.
SAMPLE_LIMIT_ROWS = 200_000


def source_hashes(cfg: CopyConfig, query: str, prepared: Prepared) -> dict[Any, int]:
    """Per-`_id` hashes of one range as the source gives it now (read in this process)."""
    out: dict[Any, int] = {}
    encoder = DocumentEncoder(prepared.projection.layout)
    with connect(cfg.source, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # the query holds --where
        for buf, start in copy_batches(conn, query, cfg.source, cfg.batch_rows, cfg.batch_bytes):
            for doc in encoder.encode(buf, start).documents():
                out[id_key(RawBSONDocument(doc)["_id"])] = doc_hash(doc)
    return out


def sample_differences(
    cfg: CopyConfig, target: Target, query: str, filt: dict[str, Any], prepared: Prepared
) -> dict[str, Any]:
    src = source_hashes(cfg, query, prepared)
    tgt = target.hashes(cfg.collection, filt, SAMPLE_LIMIT_ROWS) or {}
    missing = [k for k in src if k not in tgt]
    extra = [k for k in tgt if k not in src]
    changed = [k for k in src if k in tgt and src[k] != tgt[k]]
    return {
        "missing_in_target": len(missing),
        "extra_in_target": len(extra),
        "different": len(changed),
        "sample_missing": missing[:MAX_SAMPLE_KEYS],
        "sample_extra": extra[:MAX_SAMPLE_KEYS],
        "sample_different": changed[:MAX_SAMPLE_KEYS],
    }


def run_verify(cfg: CopyConfig, reporter: Reporter | None = None) -> dict[str, Any]:
    started = time.monotonic()
    reporter = reporter or LineReporter()

    def log(message: str) -> None:
        reporter.warning(scrub_known(message))

    phases = Phases(reporter)
    with phases.run("preflight"):
        prepared = preflight(cfg, log)
        cfg = replace(cfg, workers=prepared.workers)  # capped to the source's free connections
        target = open_target(
            cfg.target, db=cfg.db, collection=cfg.collection, stats_collection=cfg.stats_collection,
            timeout_s=cfg.target_timeout_seconds, long_timeout_s=cfg.long_timeout_seconds,
        )  # fmt: skip
    abort, pool = AbortFlag(), WorkerPool()
    try:
        if target.kind != "mongodb":
            raise UsageError(
                f"verify reads the target back: it needs a MongoDB URI, not {cfg.target}"
            )
        if not target.exists(cfg.collection):
            raise UsageError(
                f"the target collection {target.display} does not exist: nothing to verify "
                "(check --db and --collection)"
            )
        abort.install()
        pool.prestart()
        holder = SnapshotHolder(cfg.source, None)
        guard = SnapshotGuard(cfg.source)
        try:
            with phases.run("snapshot"):
                snap = holder.open()
                # Not truncated since the snapshot.
                guard.open(snap.name, prepared.table, prepared.read)
            with phases.run("plan"):
                plan = make_plan(cfg, prepared, snap.name)
                states = range_states(cfg, prepared, plan)
            # The workers digest every document and discard it: the source side of the check.
            sink = NullTarget(cfg.collection).sink_spec("")
            setup = WorkerSetup(
                "verify", cfg.source, snap.name, prepared.projection.layout, sink,
                cfg.batch_rows, cfg.batch_bytes, checksum=True, oversize=cfg.oversize,
                lock_timeout=cfg.lock_timeout_seconds, table=prepared.table.display,
                table_oid=prepared.table.oid, log_format=cfg.log_format,
            )  # fmt: skip
            progress = Progress(plan.estimated_rows, reporter, ranges=len(states))
            with phases.run("read") as rec:
                run_workers(
                    pool, setup, states, cfg, progress, log=log,
                    check=lambda: _check(abort), on_stats=lambda: None, debug=reporter.debug,
                )  # fmt: skip
                rec.rows, rec.bytes = progress.rows, progress.bytes
        finally:
            pool.stop()
            guard.close()
            holder.close()
            abort.restore()
        with phases.run("compare") as rec:
            cmp = compare(target, cfg.collection, states)
            rec.rows = cmp.target.count
        by_id = {s.rng.id: s for s in states}
        sampled = [
            c for c in cmp.differing[:MAX_SAMPLED_RANGES] if c.source.count <= SAMPLE_LIMIT_ROWS
        ]
        samples = []
        if sampled:
            with phases.run("samples"):
                samples = [
                    sample_differences(
                        cfg, target, by_id[c.range_id].query, c.filter or {}, prepared
                    )
                    | {"range": c.range_id}
                    for c in sampled
                ]
        return {
            "status": "EQUAL" if cmp.equal else "DIFFERENT",
            "table": prepared.table.display,
            "target": target.display,
            "source": cmp.source.as_doc(),
            "target_digest": cmp.target.as_doc(),
            "per_range": cmp.per_range,
            "ranges": [
                c.as_doc() | {"bounds": by_id[c.range_id].rng.describe()} for c in cmp.checks
            ],
            "differing_ranges": [c.range_id for c in cmp.differing],
            "samples": samples,
            "seconds": round(time.monotonic() - started, 3),
            "phases": phases.docs(),
            "slowest_ranges": slowest_ranges(states),
        }
    finally:
        target.close()


def _check(abort: AbortFlag) -> None:
    if abort.requested:
        raise Aborted("verify was interrupted (SIGINT/SIGTERM)")

"""`parallelsync verify`: compare a finished target with the source as it is now.

The source is read exactly as a copy would read it (one fresh snapshot, the same ranges, the same
workers and transcoder) but the documents are only digested, never written. The target collection
is then digested per range where BSON orders `_id` like PostgreSQL orders the key, or as a whole.
For differing ranges up to SAMPLE_LIMIT_ROWS in size, sample keys are listed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

from parallelsync import verify
from parallelsync.checksum import Digest, doc_hash
from parallelsync.config import CopyConfig
from parallelsync.coordinator import CopyJob
from parallelsync.progress import Progress
from parallelsync.source.connect import connect
from parallelsync.source.copystream import copy_batches
from parallelsync.target.client import connect as mongo_connect
from parallelsync.transcode.encoder import DocumentEncoder
from parallelsync.transcode.model import Layout

# Sample keys are listed for at most this many differing ranges, this many keys per kind.
MAX_SAMPLED_RANGES = 5
MAX_SAMPLE_KEYS = 10


def source_hashes(cfg: CopyConfig, query: str, layout: Layout) -> dict[Any, int]:
    """Per-`_id` hashes of one range as the source gives it now (read in this process)."""
    out: dict[Any, int] = {}
    encoder = DocumentEncoder(layout)
    with connect(cfg.source, autocommit=True) as conn:
        for buf, start in copy_batches(conn, query, cfg.source, cfg.batch_rows, cfg.batch_bytes):
            for doc in encoder.encode(buf, start).documents():
                key = RawBSONDocument(doc)["_id"]
                out[key.raw if isinstance(key, RawBSONDocument) else key] = doc_hash(doc)
    return out


def sample_differences(
    cfg: CopyConfig, coll: Collection[Any], query: str, filt: dict[str, Any], layout: Layout
) -> dict[str, Any]:
    src = source_hashes(cfg, query, layout)
    tgt = verify.target_hashes(coll, filt, verify.SAMPLE_LIMIT_ROWS) or {}
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


def run_verify(cfg: CopyConfig) -> dict[str, Any]:
    started = time.monotonic()
    source_cfg = dataclasses.replace(cfg, target="null:", slot=None)
    job = CopyJob(source_cfg)
    job.checksum = True
    client = mongo_connect(cfg.target)
    try:
        coll = client[cfg.db][cfg.collection]
        job.abort.install()
        try:
            job.pool.prestart()
            table, proj, pg = job._preflight()
            try:
                snap = job._open_snapshot(table, proj)
                plan = job._plan(pg, table, proj, snap)
            finally:
                pg.close()
            states = job._states(table, proj, plan)
            progress = Progress(plan.estimated_rows, cfg.progress_seconds)
            job._run_workers(proj, snap, states, progress)
            progress.done()
        finally:
            job.pool.stop()
            if job.holder is not None:
                job.holder.close()
            job.abort.restore()
        triples = [(s.rng.id, s.id_filter, s.digest or Digest()) for s in states]
        checks, src, tgt = verify.compare(coll, triples)
        per_range = all(c.target is not None for c in checks)
        differing = [c for c in checks if c.target is not None and not c.equal]
        equal = src.count == tgt.count and src.total == tgt.total and not differing
        ranges_by_id = {s.rng.id: s.rng for s in states}
        queries = {s.rng.id: s.query for s in states}
        samples = [
            sample_differences(cfg, coll, queries[c.range_id], c.filter or {}, proj.layout)
            | {"range": c.range_id}
            for c in differing[:MAX_SAMPLED_RANGES]
            if c.source.count <= verify.SAMPLE_LIMIT_ROWS
        ]
        return {
            "status": "EQUAL" if equal else "DIFFERENT",
            "table": table.display,
            "target": f"{cfg.db}.{cfg.collection}",
            "source": src.as_doc(),
            "target_digest": tgt.as_doc(),
            "per_range": per_range,
            "ranges": [
                c.as_doc() | {"bounds": ranges_by_id[c.range_id].describe()} for c in checks
            ],
            "differing_ranges": [c.range_id for c in differing],
            "samples": samples,
            "seconds": round(time.monotonic() - started, 3),
        }
    finally:
        client.close()

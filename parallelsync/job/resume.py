"""Resuming a copy whose coordinator died (`copy --resume JOB_ID|last`).

What survives a dead coordinator: the job document (ranges with their status and exact COPY
statements) and the temp collection with every range that finished. The exported snapshot does
not survive (it lives in the coordinator's connection), so the remaining ranges are copied under a
new snapshot. To still give one consistent result:

- With a slot (and the publication created with it), the rows that changed between the first
  snapshot and the new one are read from the slot, their documents deleted from the temp
  collection, and the rows re-read from the new snapshot through the same transcoder
  (cdc/catchup.py). The result is the table as of the new snapshot, whose LSN becomes the job's
  consistent LSN (the slot is advanced to it after the swap).
- Without a slot, finished ranges keep the first snapshot's rows and the rest come from the new
  one ("per-range" consistency, recorded in the job document). Partly written ranges are cleared
  by `_id` range first where BSON orders `_id` like PostgreSQL orders the key; otherwise their
  documents are replaced by the new snapshot's version (rows deleted in between can remain).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from parallelsync.cdc.catchup import apply_changes
from parallelsync.cdc.peek import changed_keys
from parallelsync.cdc.publication import published_relids
from parallelsync.config import CopyConfig
from parallelsync.errors import UsageError
from parallelsync.job.phases import Prepared, id_filter
from parallelsync.job.state import DONE, PENDING, RangeState
from parallelsync.source.connect import connect
from parallelsync.source.snapshot import Snapshot, SnapshotHolder, import_snapshot
from parallelsync.targets import Target
from parallelsync.targets.base import JobStore, Log


def fingerprint(prepared: Prepared, cfg: CopyConfig) -> str:
    """What must not change between a run and its resumption: table, projection, filter, key."""
    table, proj = prepared.table, prepared.projection
    parts = [table.display, proj.select_list.as_string(None), cfg.where or "", ",".join(proj.key)]
    parts.append(repr(proj.layout))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass
class ResumeStart:
    """A resumed job's starting point: its ranges and a new snapshot to copy the rest under."""

    job: dict[str, Any]
    states: list[RangeState]
    holder: SnapshotHolder
    snapshot: Snapshot
    slot: str | None  # the job's own slot (the new snapshot comes from a temporary helper slot)
    publication: str | None
    estimated_rows: int

    @property
    def exact(self) -> bool:
        """Changes since the first snapshot can be read from the slot (one consistent result)."""
        return bool(self.slot and self.publication)


def check_resume(cfg: CopyConfig, prepared: Prepared, target: Target, job: dict[str, Any]) -> None:
    """Whether `job` can be resumed with these options, checked before this run owns anything
    of it: a refused resume must leave the job exactly as it was, resumable later."""
    job_id, temp = str(job["_id"]), str(job["target"]["temp"])
    if job.get("fingerprint") != fingerprint(prepared, cfg):
        raise UsageError(
            f"job {job_id} copied a different table, filter, key or mapping: resume it with "
            "the same options it was started with"
        )
    if not target.exists(temp):
        raise UsageError(f"job {job_id}'s temp collection {temp} is gone: start a new copy")
    old = job.get("snapshot") or {}
    if cfg.publication and cfg.publication != job.get("publication"):
        raise UsageError(
            f"job {job_id} was started with publication {job.get('publication') or 'none'}, not "
            f"{cfg.publication}: a resume reads the job's own; leave out --publication"
        )
    if not (old.get("slot") and job.get("publication")) and cfg.changed_rows_collection:
        raise UsageError(
            f"job {job_id} has no slot with a publication, so the rows changed during the copy "
            "cannot be read: resume it without --changed-rows-collection, or start a new copy "
            "with --slot"
        )
    if not (old.get("slot") and job.get("publication")) and cfg.require_snapshot_consistency:
        raise UsageError(
            f"job {job_id} has no slot with a publication, so a resume can only give per-range "
            "consistency (finished ranges keep the first snapshot, the rest come from a new "
            "one); start a new copy, or resume without --require-snapshot-consistency"
        )


def start_resume(
    cfg: CopyConfig,
    prepared: Prepared,
    target: Target,
    job: dict[str, Any],
    jobs: JobStore,
    log: Log,
) -> ResumeStart:
    job_id, temp = str(job["_id"]), str(job["target"]["temp"])
    old = job.get("snapshot") or {}
    slot, publication = old.get("slot"), job.get("publication")
    states = [RangeState.from_doc(d) for d in job.get("ranges", [])]
    exact = bool(slot and publication)
    for st in states:
        # From this run's projection, not the document: an `_id` not built from the range key
        # (mapping.id on another column) must never be cleared by the range's bounds.
        st.id_filter = id_filter(prepared, st.rng)
        if st.status != DONE:
            # The job document lags the workers by a few seconds: any unfinished range may
            # have written documents already, so every attempt from here tolerates duplicates.
            st.status, st.rows, st.bytes = PENDING, 0, 0
            st.attempts = max(st.attempts, 1)
            if not exact and st.id_filter is not None:
                target.clear(temp, st.id_filter)
    if exact:
        helper = f"{slot}_r{secrets.token_hex(3)}"[:63]
        holder = SnapshotHolder(cfg.source, helper, temporary=True)
    else:
        holder = SnapshotHolder(cfg.source, None)
    snap = holder.open()
    done = sum(1 for s in states if s.status == DONE)
    log(
        f"resuming job {job_id}: {done} of {len(states)} ranges already copied; "
        + (
            "changes since the first snapshot will be applied from the slot"
            if exact
            else "no slot: finished ranges keep the first snapshot (per-range consistency)"
        )
    )
    jobs.update(
        {
            "resumes": int(job.get("resumes", 0)) + 1,
            "resumed_at": dt.datetime.now(dt.UTC),
            "consistency": "snapshot" if exact else "per-range",
            "snapshot_resumed": {"name": snap.name, "consistent_lsn": snap.consistent_lsn},
        }
    )
    estimated = int((job.get("plan") or {}).get("estimated_rows", 0))
    return ResumeStart(job, states, holder, snap, slot, publication, estimated)


def catch_up(
    cfg: CopyConfig,
    prepared: Prepared,
    target: Target,
    temp: str,
    start: ResumeStart,
    jobs: JobStore,
    log: Log,
) -> int:
    """Bring finished ranges from the first snapshot to the new one, using the slot; returns the
    rows caught up (0 without a slot). After a catch-up the rows read per range no longer add up
    to the table (ranges were read under two snapshots): the count to check is the new
    snapshot's own, which the job counts meanwhile (job/checks.py `expected_documents`)."""
    snap = start.snapshot
    if not (start.exact and snap.consistent_lsn):
        return 0
    assert start.slot is not None and start.publication is not None
    table, proj = prepared.table, prepared.projection
    with connect(cfg.source, autocommit=True) as conn:
        relids = published_relids(conn, table, only=prepared.read.only)
        changes = changed_keys(
            conn, start.slot, snap.consistent_lsn, start.publication, proj.key, relids
        )
        import_snapshot(conn, snap.name)
        n, _ = apply_changes(
            conn, table, proj, cfg.where, cfg.source, changes, target, temp, prepared.relation
        )
        conn.execute("ROLLBACK")
    log(f"applied {n} rows changed between the first snapshot and the resume")
    jobs.update({"snapshot.consistent_lsn": snap.consistent_lsn, "resume_changed_rows": n})
    return n

"""The copy job: preflight -> lease -> snapshot -> plan -> workers -> verify -> swap.

The target is only ever changed by the final `renameCollection`; every other write goes to a temp
collection named after the target and the job id, which is dropped on any failure or abort.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import random
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from parallelsync import resume, verify
from parallelsync.checksum import Digest
from parallelsync.config import CopyConfig
from parallelsync.errors import (
    Aborted,
    ParallelSyncError,
    SourceError,
    TargetError,
    UsageError,
    VerifyError,
    WorkerDied,
)
from parallelsync.mapping import Projection, build_projection, check_projection
from parallelsync.oversize import MAX_SKIPPED_ENTRIES
from parallelsync.pool import WorkerPool
from parallelsync.progress import Progress
from parallelsync.redact import redact_dsn, redact_uri
from parallelsync.source.catalog import TableInfo, resolve_table
from parallelsync.source.connect import clean, connect
from parallelsync.source.planner import KeyRange, Plan, plan_ranges
from parallelsync.source.predicates import user_filter
from parallelsync.source.snapshot import (
    Snapshot,
    SnapshotHolder,
    check_logical,
    check_slot_name,
    drop_slot,
    import_snapshot,
    slot_exists,
)
from parallelsync.target import bsonfile, finalize
from parallelsync.target.client import connect as mongo_connect
from parallelsync.target.lock import Lease
from parallelsync.target.stats import ABORTED, FAILED, FINISHED, RUNNING, JobStats
from parallelsync.worker import RangeTask, WorkerSetup

LOCK_COLLECTION = "parallelsync_locks"
# Job-document updates at most this often: the stats write must stay negligible next to the copy.
STATS_INTERVAL_S = 2.0


def new_job_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "_" + secrets.token_hex(3)


@dataclass
class RangeState:
    rng: KeyRange
    query: str
    status: str = "PENDING"  # PENDING -> RUNNING -> DONE | FAILED
    attempts: int = 0
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    not_before: float = 0.0  # back-off: do not start again before this monotonic time
    error: str | None = None
    digest: Digest | None = None  # content digest of the documents written (--verify checksum)
    id_filter: dict[str, Any] | None = None  # selects this range in MongoDB, if BSON order allows

    def doc(self) -> dict[str, Any]:
        d = self.rng.describe()
        d.update(
            status=self.status,
            attempts=self.attempts,
            rows=self.rows,
            bytes=self.bytes,
            seconds=round(self.seconds, 3),
            error=self.error,
        )
        if self.digest is not None:
            d["checksum"] = self.digest.as_doc()
        d["query"], d["id_filter"] = self.query, self.id_filter
        return d

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> RangeState:
        """A range as an earlier (dead) run recorded it; values are only for display."""
        lower = None if d.get("lower") is None else tuple(d["lower"])
        upper = None if d.get("upper") is None else tuple(d["upper"])
        rng = KeyRange(
            int(d["id"]), d.get("kind", "key"), lower, upper, int(d.get("estimated_rows", 0))
        )
        st = cls(
            rng, str(d["query"]), attempts=int(d.get("attempts", 0)), id_filter=d.get("id_filter")
        )
        if d.get("status") == "DONE":
            st.status, st.rows, st.bytes = "DONE", int(d.get("rows", 0)), int(d.get("bytes", 0))
            st.seconds = float(d.get("seconds", 0.0))
            if d.get("checksum"):
                st.digest = Digest(int(d["checksum"]["count"]), int(d["checksum"]["digest"], 16))
        return st


@dataclass
class Result:
    status: str
    job_id: str
    rows: int = 0
    docs: int = 0
    bytes: int = 0
    seconds: float = 0.0
    consistent_lsn: str | None = None
    slot: str | None = None
    snapshot: str | None = None
    target: str = ""
    workers: int = 0
    ranges: int = 0
    error: str | None = None
    exit_code: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out = {
            "status": self.status,
            "job_id": self.job_id,
            "rows": self.rows,
            "docs": self.docs,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows / self.seconds, 1) if self.seconds > 0 else None,
            "consistent_lsn": self.consistent_lsn,
            "slot": self.slot,
            "snapshot": self.snapshot,
            "target": self.target,
            "workers": self.workers,
            "ranges": self.ranges,
            "error": self.error,
        }
        out.update(self.extra)
        return out


class _AbortFlag:
    """First SIGINT/SIGTERM: stop cleanly. Second: stop now (the next run removes leftovers)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def _stats_fields(
    states: list[RangeState], rows: int, docs: int, nbytes: int, seconds: float, progress: float
) -> dict[str, Any]:
    """The job document's running figures, the same while running and at the end."""
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


class CopyJob:
    def __init__(self, cfg: CopyConfig, log: Any = None) -> None:
        self.cfg = cfg
        self.job_id = new_job_id()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.abort = _AbortFlag()
        self.client: MongoClient[Any] | None = None
        self.db: Database[Any] | None = None
        self.lease: Lease | None = None
        self.holder: SnapshotHolder | None = None
        self.stats = JobStats(None, self.job_id)
        self.temp = finalize.temp_name(cfg.collection, self.job_id)
        self.temp_created = False
        self.pool = WorkerPool()
        self.started = time.monotonic()
        # --oversize skip (issue 3): range id -> (skipped count, first entries {_id, size}).
        self.skipped: dict[int, tuple[int, list[dict[str, Any]]]] = {}
        self.checksum = False  # set by `verify`, which reads the source only to digest it
        self.slot = cfg.slot  # the job's slot (a resume's new snapshot comes from a helper slot)
        self.publication: str | None = None
        self.resumed: dict[str, Any] | None = None  # the job document being resumed
        self.caught_up = 0  # rows a resume re-read because they changed since the first snapshot

    # ---------------------------------------------------------------- the whole job
    def run(self) -> Result:
        cfg = self.cfg
        shown = f"{cfg.db}.{cfg.collection}"
        if cfg.file_target:
            shown = str(bsonfile.target_dir(cfg.target) / f"{cfg.collection}.bson")
        result = Result("FAILED", self.job_id, target=shown, workers=cfg.workers)
        self.abort.install()
        try:
            # The fork server loads the workers' code while the snapshot and plan are made.
            self.pool.prestart()
            table, proj, pg = self._preflight()
            try:
                self._open_target()
                if self.resumed is not None:
                    snap, states, estimated = self._resume_setup(table, proj)
                else:
                    snap = self._open_snapshot(table, proj)
                    plan = self._plan(pg, table, proj, snap)
                    states, estimated = self._states(table, proj, plan), plan.estimated_rows
                    self._create_stats(table, proj, plan, snap, states)
            finally:
                pg.close()
            result.job_id = self.job_id
            result.consistent_lsn, result.slot, result.snapshot = (
                snap.consistent_lsn,
                self.slot,
                snap.name,
            )
            result.ranges = len(states)
            progress = Progress(estimated, cfg.progress_seconds)
            progress.add(sum(s.rows for s in states), sum(s.bytes for s in states))
            self._run_workers(proj, snap, states, progress)
            progress.done()
            expected = (
                self._resume_catch_up(table, proj, snap) if self.resumed is not None else None
            )
            result.rows = sum(s.rows for s in states)
            result.bytes = sum(s.bytes for s in states)
            if expected is not None:
                result.rows = expected
            result.docs = self._finalize(result.rows, states, proj)
            result.status = FINISHED
            result.seconds = time.monotonic() - self.started
            self.stats.finish(
                FINISHED,
                self._totals(states, result)
                | {"target_count": result.docs}
                | self._skipped_doc(result),
            )
            if self.holder is not None:
                self.holder.close()  # keep the slot: change capture resumes from it
            if self.resumed is not None and self.slot and snap.consistent_lsn:
                self._advance_slot(snap.consistent_lsn)
            if cfg.changed_rows_collection:
                result.extra["changed_rows"] = self._emit_changed_rows(proj, snap)
            return result
        except (ParallelSyncError, KeyboardInterrupt) as exc:
            err = (
                exc
                if isinstance(exc, ParallelSyncError)
                else Aborted("stopped by a second interrupt")
            )
            status = ABORTED if isinstance(err, Aborted) else FAILED
            result.status, result.error, result.exit_code = status, str(err), err.exit_code
            result.seconds = time.monotonic() - self.started
            self._cleanup_failed(status, str(err))
            return result
        finally:
            self.pool.stop()
            if self.lease is not None:
                self.lease.release()
            if self.client is not None:
                self.client.close()
            self.abort.restore()

    # ---------------------------------------------------------------- phases
    def _preflight(self) -> tuple[TableInfo, Projection, psycopg.Connection[Any]]:
        cfg = self.cfg
        if cfg.slot:
            check_slot_name(cfg.slot)
        pg = connect(cfg.source, autocommit=True)
        try:
            table = resolve_table(pg, cfg.table)
            proj = build_projection(table, cfg)
            check_projection(pg, table, proj)  # issue 3: type overrides fail here, not mid-copy
            if cfg.where:
                self._check_where(pg, table)
            if cfg.slot:
                check_logical(pg)
                if not cfg.resume and slot_exists(pg, cfg.slot):
                    raise SourceError(
                        f"replication slot {cfg.slot!r} already exists: another job or consumer "
                        "uses "
                        "it; choose another --slot, or drop the abandoned one with "
                        f"SELECT pg_drop_replication_slot('{cfg.slot}')"
                    )
        except BaseException:
            pg.close()
            raise
        return table, proj, pg

    def _check_where(self, pg: psycopg.Connection[Any], table: TableInfo) -> None:
        q = sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE {}").format(
            table.ident, user_filter(self.cfg.where)
        )
        try:
            pg.execute(q)
        except psycopg.Error as exc:
            raise UsageError(
                f"invalid --where {self.cfg.where!r}: {clean(exc, self.cfg.source)}"
            ) from None

    def _open_target(self) -> None:
        cfg = self.cfg
        if cfg.null_target:
            return
        if cfg.file_target:
            directory = bsonfile.target_dir(cfg.target)
            if not directory.is_dir() or not os.access(directory, os.W_OK):
                raise UsageError(f"--target {cfg.target}: {directory} is not a writable directory")
            return
        self.client = mongo_connect(cfg.target)
        self.db = self.client[cfg.db]
        if cfg.resume:
            job = resume.find_job(self.db[cfg.stats_collection], cfg.resume, cfg.db, cfg.collection)
            self.resumed, self.job_id = job, str(job["_id"])
            self.temp = str(job["target"]["temp"])
        self.lease = Lease(self.db[LOCK_COLLECTION], f"{cfg.db}.{cfg.collection}", self.job_id)
        try:
            self.lease.acquire(resume=self.resumed is not None)
        except PyMongoError as exc:
            raise TargetError(f"cannot take the target lease: {exc}") from None
        self.lease.start_heartbeat()
        self._drop_stale_temps()
        self.stats = JobStats(self.db[cfg.stats_collection], self.job_id)

    def _drop_stale_temps(self) -> None:
        # We hold the lease for this target, so any temp collection for it belongs to a dead job.
        assert self.db is not None
        prefix = self.cfg.collection + finalize.TEMP_MARKER
        for name in self.db.list_collection_names():
            if name.startswith(prefix) and name != self.temp:
                finalize.drop_quietly(self.db, name)
                self.log(f"removed stale temp collection {name} left by an earlier run")
        # Job documents of this target still saying RUNNING belong to dead coordinators too
        # (we hold the lease); their temp collections are gone, so they can no longer be resumed.
        with contextlib.suppress(PyMongoError):
            self.db[self.cfg.stats_collection].update_many(
                {
                    "target.db": self.cfg.db,
                    "target.collection": self.cfg.collection,
                    "status": RUNNING,
                    "_id": {"$ne": self.job_id},
                },
                {
                    "$set": {
                        "status": FAILED,
                        "error": "abandoned: its coordinator died; "
                        f"job {self.job_id} took over the target",
                        "finished_at": dt.datetime.now(dt.UTC),
                    }
                },
            )

    def _open_snapshot(self, table: TableInfo, proj: Projection) -> Snapshot:
        # Publish the table under the slot's name before the slot exists, so the slot can tell a
        # later resume which rows changed (tables without a primary key are not published: a
        # publication would make their UPDATEs fail for lack of replica identity).
        if (
            self.cfg.slot
            and proj.key
            and proj.key == table.primary_key
            and resume.ensure_publication(self.cfg.source, table, self.cfg.slot)
        ):
            self.publication = self.cfg.slot
        self.holder = SnapshotHolder(self.cfg.source, self.cfg.slot)
        return self.holder.open()

    def _states(self, table: TableInfo, proj: Projection, plan: Plan) -> list[RangeState]:
        return [
            RangeState(
                r, self._copy_query(table, proj, r), id_filter=verify.mongo_filter(r, proj.layout)
            )
            for r in plan.ranges
        ]

    def _resume_setup(
        self, table: TableInfo, proj: Projection
    ) -> tuple[Snapshot, list[RangeState], int]:
        job, cfg = self.resumed, self.cfg
        assert job is not None and self.db is not None
        if job.get("fingerprint") != resume.fingerprint(table, proj, cfg):
            raise UsageError(
                f"job {self.job_id} copied a different table, filter, key or mapping: "
                "resume it with "
                "the same options it was started with"
            )
        if self.temp not in self.db.list_collection_names(filter={"name": self.temp}):
            raise UsageError(
                f"job {self.job_id}'s temp collection {self.temp} is gone: start a new copy"
            )
        old = job.get("snapshot") or {}
        self.slot, self.publication = old.get("slot"), job.get("publication")
        states = [RangeState.from_doc(d) for d in job.get("ranges", [])]
        self.temp_created = True  # it exists: a failure of this run must drop it too
        temp = self.db[self.temp]
        exact = bool(self.slot and self.publication)
        for st in states:
            if st.status != "DONE":
                # The job document lags the workers by a few seconds: any unfinished range may
                # have written documents already, so every attempt from here tolerates duplicates.
                st.status, st.rows, st.bytes = "PENDING", 0, 0
                st.attempts = max(st.attempts, 1)
                if not exact:
                    resume.clear_range(temp, st.id_filter)
        if exact:
            helper = f"{self.slot}_r{secrets.token_hex(3)}"[:63]
            self.holder = SnapshotHolder(cfg.source, helper, temporary=True)
        else:
            self.holder = SnapshotHolder(cfg.source, None)
        snap = self.holder.open()
        done = sum(1 for s in states if s.status == "DONE")
        self.log(
            f"resuming job {self.job_id}: {done} of {len(states)} ranges already copied; "
            + (
                "changes since the first snapshot will be applied from the slot"
                if exact
                else "no slot: finished ranges keep the first snapshot (per-range consistency)"
            )
        )
        self.stats = JobStats(self.db[cfg.stats_collection], self.job_id)
        self.stats.update(
            {
                "resumes": int(job.get("resumes", 0)) + 1,
                "resumed_at": dt.datetime.now(dt.UTC),
                "consistency": "snapshot" if exact else "per-range",
                "snapshot_resumed": {"name": snap.name, "consistent_lsn": snap.consistent_lsn},
            }
        )
        estimated = int((job.get("plan") or {}).get("estimated_rows", 0))
        return snap, states, estimated

    def _resume_catch_up(self, table: TableInfo, proj: Projection, snap: Snapshot) -> int | None:
        """Bring finished ranges from the first snapshot to the new one, using the slot.

        Returns the number of rows the new snapshot holds, for the count check: after a catch-up
        the rows read per range no longer add up to it (ranges were read under two snapshots)."""
        job = self.resumed
        assert job is not None and self.db is not None
        if not (self.slot and self.publication and snap.consistent_lsn):
            return None
        with connect(self.cfg.source, autocommit=True) as conn:
            changes = resume.changed_keys(
                conn, self.slot, snap.consistent_lsn, self.publication, proj.key
            )
            import_snapshot(conn, snap.name)
            n, _ = resume.apply_changes(conn, table, proj, self.cfg, changes, self.db[self.temp])
            expected = resume.count_rows(conn, table, self.cfg.where)
            conn.execute("ROLLBACK")
        self.caught_up = n
        self.log(f"applied {n} rows changed between the first snapshot and the resume")
        self.stats.update(
            {"snapshot.consistent_lsn": snap.consistent_lsn, "resume_changed_rows": n}
        )
        return expected

    def _emit_changed_rows(self, proj: Projection, snap: Snapshot) -> int | None:
        """Downstream refresh jobs: one document per row changed between the snapshot and now.

        The copy reflects the snapshot; rows changed while it ran are exactly the slot's pending
        changes, which this reads without consuming them (change capture still gets them)."""
        cfg = self.cfg
        target = cfg.changed_rows_collection
        if not (target and self.slot and self.publication and self.db is not None):
            self.log(
                "--changed-rows-collection needs --slot on a table with a primary key; skipped"
            )
            return None
        with connect(cfg.source, autocommit=True) as conn:
            # Commits made with synchronous_commit=off may not be flushed yet, and decoding only
            # reads flushed WAL. A synchronous commit of our own flushes everything before it,
            # but PostgreSQL only waits for the flush when the transaction itself wrote WAL (an
            # xid alone writes none, and its commit is then asynchronous): a transactional
            # logical message is such a write (pgoutput does not pass it on unless asked).
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = on")
                conn.execute("SELECT pg_logical_emit_message(true, 'parallelsync', 'changed-rows')")
            # The flush position (not pg_current_wal_lsn, the write position, which can be
            # behind commits made since) now covers every transaction committed before ours.
            row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
            upto = str(row[0]) if row else snap.consistent_lsn or "0/0"
            changes = resume.changed_keys(conn, self.slot, upto, self.publication, proj.key)
        now = dt.datetime.now(dt.UTC)
        docs = [
            {
                "job_id": self.job_id,
                "source": self.cfg.table,
                "key": dict(zip(proj.key, k, strict=True)),
                "status": "PENDING",
                "created_at": now,
                "upto_lsn": upto,
            }
            for k in sorted(changes.keys, key=lambda t: tuple("" if v is None else v for v in t))
        ]
        try:
            if docs:
                self.db[target].insert_many(docs, ordered=False)
        except PyMongoError as exc:
            self.log(f"writing changed-row jobs to {target} failed: {exc}")
            return None
        self.stats.update({"changed_rows": {"count": len(docs), "upto_lsn": upto}})
        return len(docs)

    def _advance_slot(self, lsn: str) -> None:
        """The target now reflects `lsn`: change capture must start there, not at the old point."""
        assert self.slot is not None
        with connect(self.cfg.source, autocommit=True) as conn:
            conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, lsn))

    def _plan(
        self, pg: psycopg.Connection[Any], table: TableInfo, proj: Projection, snap: Snapshot
    ) -> Plan:
        # Sample under the same snapshot the workers read, so ranges describe the copied data.
        pg.autocommit = True
        import_snapshot(pg, snap.name)
        try:
            nranges = self.cfg.workers * self.cfg.ranges_per_worker
            return plan_ranges(pg, table, proj.key, nranges, self.cfg.where)
        except psycopg.Error as exc:
            raise SourceError(f"planning ranges failed: {clean(exc, self.cfg.source)}") from None
        finally:
            pg.execute("ROLLBACK")

    def _copy_query(self, table: TableInfo, proj: Projection, rng: KeyRange) -> str:
        cond = rng.predicate(proj.key)
        if self.cfg.where:
            cond = sql.SQL("({}) AND {}").format(cond, user_filter(self.cfg.where))
        q = sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT BINARY)").format(
            proj.select_list, table.ident, cond
        )
        return q.as_string(None)

    def _create_stats(
        self,
        table: TableInfo,
        proj: Projection,
        plan: Plan,
        snap: Snapshot,
        states: list[RangeState],
    ) -> None:
        cfg = self.cfg
        self.stats.create(
            {
                "source": {
                    "dsn": redact_dsn(cfg.source),
                    "schema": table.schema,
                    "table": table.name,
                    "filter": cfg.where,
                    "key": list(plan.key),
                },
                "target": {
                    "uri": redact_uri(cfg.target),
                    "db": cfg.db,
                    "collection": cfg.collection,
                    "temp": self.temp,
                },
                "workers": cfg.workers,
                "snapshot": {
                    "name": snap.name,
                    "consistent_lsn": snap.consistent_lsn,
                    "slot": snap.slot,
                },
                "plan": {"method": plan.method, "estimated_rows": plan.estimated_rows},
                "ranges": [s.doc() for s in states],
                "fingerprint": resume.fingerprint(table, proj, cfg),
                "publication": self.publication,
                "totals": {"rows": 0, "docs": 0, "bytes": 0},
                "progress": 0.0,
            }
        )
        if self.db is not None:
            try:
                self.db.create_collection(self.temp)
                self.temp_created = True
            except PyMongoError as exc:
                raise TargetError(f"cannot create the temp collection {self.temp}: {exc}") from None

    # ---------------------------------------------------------------- workers
    def _run_workers(
        self, proj: Projection, snap: Snapshot, states: list[RangeState], progress: Progress
    ) -> None:
        cfg = self.cfg
        pool = self.pool
        setup = WorkerSetup(
            job_id=self.job_id,
            source_dsn=cfg.source,
            snapshot=snap.name,
            layout=proj.layout,
            target_uri=cfg.target,
            db=cfg.db,
            temp_collection=self.temp,
            batch_rows=cfg.batch_rows,
            batch_bytes=cfg.batch_bytes,
            oversize=cfg.oversize,
            checksum=self.checksum or cfg.verify == "checksum",
        )
        assigned: dict[int, int | None] = {}
        ready: set[int] = set()

        by_id = {s.rng.id: s for s in states}
        last_stats = 0.0
        spawn_budget = cfg.workers + cfg.max_attempts * len(states)

        def fail_range(state: RangeState, err: ParallelSyncError) -> None:
            state.error = str(err)
            progress.add(-state.rows, -state.bytes)
            state.rows = state.bytes = 0
            if not err.transient or state.attempts >= cfg.max_attempts:
                state.status = "FAILED"
                if err.transient:
                    raise type(err)(
                        f"range {state.rng.id} failed {state.attempts} times; last error: {err}"
                    )
                raise err
            state.status = "PENDING"
            # Exponential back-off with jitter so retries do not hammer a recovering server.
            delay = min(30.0, 0.5 * 2 ** (state.attempts - 1)) * (0.5 + random.random())
            state.not_before = time.monotonic() + delay
            self.log(f"range {state.rng.id}: attempt {state.attempts} failed ({err}); retrying")

        def handle(msg: tuple[Any, ...]) -> None:
            kind, wid = msg[0], msg[1]
            if wid not in pool.procs:
                return  # a retired worker's late words: its range was already rescheduled
            if kind == "ready":
                ready.add(wid)
            elif kind == "progress":
                st = by_id[msg[2]]
                st.rows += msg[3]
                st.bytes += msg[4]
                progress.add(msg[3], msg[4])
            elif kind == "done":
                st = by_id[msg[2]]
                st.status, st.seconds, st.error, st.digest = "DONE", msg[5], None, msg[6]
                assigned[wid] = None
            elif kind == "skipped":  # --oversize skip (issue 3); comes just before "done"
                self.skipped[msg[2]] = (msg[3], msg[4])
            elif kind == "failed":
                assigned[wid] = None
                fail_range(by_id[msg[2]], msg[3])
            elif kind == "fatal":
                err: ParallelSyncError = msg[2]
                if not err.transient:
                    raise err
                self.log(f"worker {wid} could not start ({err}); starting another")
                self._retire(wid, ready, assigned)

        def drain() -> None:
            while True:
                try:
                    handle(pool.results.get_nowait())
                except queue.Empty:
                    return

        while True:
            if self.abort.requested:
                raise Aborted("the job was interrupted (SIGINT/SIGTERM); the target is unchanged")
            if self.lease is not None and self.lease.lost:
                raise TargetError("the target lease was lost to another job; nothing was swapped")
            now = time.monotonic()
            for wid in sorted(ready):
                if assigned.get(wid) is not None:
                    continue
                pending = [s for s in states if s.status == "PENDING" and s.not_before <= now]
                if not pending:
                    break
                st = pending[0]
                st.status, st.attempts, st.rows, st.bytes = "RUNNING", st.attempts + 1, 0, 0
                assigned[wid] = st.rng.id
                pool.send(wid, RangeTask(st.rng.id, st.attempts, st.query))
            if all(s.status == "DONE" for s in states):
                break
            with contextlib.suppress(queue.Empty):
                handle(pool.results.get(timeout=0.2))
            # Workers that died without a word (killed, crashed, or exited after a transient error).
            for wid, proc in list(pool.procs.items()):
                if proc.is_alive():
                    continue
                drain()  # its last messages were flushed before it exited
                if wid not in pool.procs:
                    continue
                rid = assigned.get(wid)
                self._retire(wid, ready, assigned)
                if rid is not None:
                    fail_range(
                        by_id[rid],
                        WorkerDied(f"worker process {wid} exited with code {proc.exitcode}"),
                    )
            remaining = sum(1 for s in states if s.status != "DONE")
            while len(pool.procs) < min(cfg.workers, remaining):
                if spawn_budget <= 0:
                    raise WorkerDied(
                        "workers keep dying before they can start; see the messages above"
                    )
                spawn_budget -= 1
                assigned[pool.spawn(setup)] = None
            progress.tick()
            if time.monotonic() - last_stats > STATS_INTERVAL_S:
                last_stats = time.monotonic()
                self._stats_progress(states, progress)
        progress.tick(force=True)
        self._stats_progress(states, progress)

    def _retire(self, wid: int, ready: set[int], assigned: dict[int, int | None]) -> None:
        ready.discard(wid)
        assigned.pop(wid, None)
        self.pool.retire(wid)

    def _stats_progress(self, states: list[RangeState], progress: Progress) -> None:
        rows, nbytes = sum(s.rows for s in states), sum(s.bytes for s in states)
        elapsed = time.monotonic() - self.started
        self.stats.update(_stats_fields(states, rows, rows, nbytes, elapsed, progress.fraction()))

    # ---------------------------------------------------------------- the end
    def _finalize(self, rows: int, states: list[RangeState], proj: Projection) -> int:
        if self.cfg.file_target:
            directory = bsonfile.target_dir(self.cfg.target)
            parts = bsonfile.temp_dir(directory, self.temp)
            if rows == 0:
                parts.mkdir(exist_ok=True)  # an empty table gives an empty file
            final = bsonfile.assemble(directory, self.cfg.collection, parts, rows)
            self.log(f"wrote {final}")
            return rows
        if self.db is None:
            return rows  # null: target
        cfg = self.cfg
        try:
            docs = finalize.check_count(self.db, self.temp, rows)
        except VerifyError:
            # Every document of range R comes from a row read for R and no _id repeats, so each
            # range holds at most the rows read for it: the totals matching implies every range
            # matches. When they do not, name the ranges that differ (where _id order allows).
            if not self.caught_up and all(s.id_filter is not None for s in states):
                finalize.check_range_counts(
                    self.db, self.temp, [(s.rng.id, s.id_filter or {}, s.rows) for s in states]
                )
            raise
        if cfg.verify == "checksum" and self.caught_up:
            # Digests were taken as ranges were copied, before the catch-up rewrote changed rows.
            self.log(
                "checksums skipped: the resume rewrote changed rows; run `parallelsync verify`"
            )
        elif cfg.verify == "checksum":
            self._verify_checksums(states, proj)
        specs = finalize.existing_secondary_indexes(self.db, cfg.collection)
        finalize.build_indexes(self.db, self.temp, specs)
        if self.abort.requested:
            raise Aborted("the job was interrupted before the swap; the target is unchanged")
        if self.lease is not None and not self.lease.still_held():
            raise TargetError(
                "the target lease was taken by another job before the swap; nothing was swapped"
            )
        finalize.swap(self.db, self.temp, cfg.collection)
        self.temp_created = False
        return docs

    def _verify_checksums(self, states: list[RangeState], proj: Projection) -> None:
        assert self.db is not None
        triples = [(s.rng.id, s.id_filter, s.digest or Digest()) for s in states]
        checks, src, tgt = verify.compare(self.db[self.temp], triples)
        bad = [c.range_id for c in checks if c.target is not None and not c.equal]
        self.stats.update(
            {
                "verify": {
                    "mode": "checksum",
                    "source": src.as_doc(),
                    "target": tgt.as_doc(),
                    "per_range": all(c.target is not None for c in checks),
                    "differing_ranges": bad,
                }
            }
        )
        if bad or src.count != tgt.count or src.total != tgt.total:
            where = f"ranges {bad}" if bad else "the collection as a whole"
            raise VerifyError(
                f"checksum verification failed for {where}: source {src.count} docs "
                f"digest {src.hex()}, temp {tgt.count} docs digest {tgt.hex()}; nothing was swapped"
            )

    def _skipped_doc(self, result: Result) -> dict[str, Any]:
        """--oversize skip (issue 3): the job-document fields, also added to the JSON result.

        Skipped rows were read but not written; the count check compared documents with the
        rows actually written, so `source rows = rows + skipped_count`.
        """
        if self.cfg.oversize != "skip":
            return {}
        count = sum(n for n, _ in self.skipped.values())
        entries = [
            {"range": rid, **e} for rid in sorted(self.skipped) for e in self.skipped[rid][1]
        ][:MAX_SKIPPED_ENTRIES]
        if count:
            self.log(f"skipped {count} document(s) over 16 MiB; see 'skipped' in the job document")
        result.extra["skipped_count"] = count
        return {"skipped": entries, "skipped_count": count}

    def _totals(self, states: list[RangeState], result: Result) -> dict[str, Any]:
        r = result
        fields = _stats_fields(states, r.rows, r.docs, r.bytes, r.seconds, 1.0)
        return fields | {"source_count": r.rows}

    def _cleanup_failed(self, status: str, error: str) -> None:
        self.pool.stop()
        if self.cfg.file_target:
            bsonfile.discard(bsonfile.temp_dir(bsonfile.target_dir(self.cfg.target), self.temp))
        if self.db is not None and self.temp_created:
            finalize.drop_quietly(self.db, self.temp)
        if self.holder is not None:
            self.holder.drop_slot()
        if self.resumed is not None and self.slot:
            # The resumed job's own slot is as useless as its temp collection now.
            drop_slot(self.cfg.source, self.slot)
        if self.publication:
            resume.drop_publication(self.cfg.source, self.publication)
        self.stats.finish(
            status, {"error": error, "elapsed": round(time.monotonic() - self.started, 3)}
        )

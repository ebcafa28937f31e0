"""The copy job: preflight -> lock -> snapshot -> plan -> workers -> checks -> swap.

`CopyJob.run` only composes the phases (phases.py, resume.py, schedule.py, checks.py and the
target); each returns what it made. The target is only ever changed by the final swap; every other
write goes to a temp collection named after the target and the job id, which is dropped on any
failure or abort.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from parallelsync import transcode
from parallelsync.cdc.changed_rows import emit_changed_rows
from parallelsync.cdc.publication import create_publication, drop_publication
from parallelsync.cdc.slots import advance_slot, report_idle_slots
from parallelsync.config import CopyConfig
from parallelsync.errors import (
    SWAP_DONE,
    SWAP_UNKNOWN,
    Aborted,
    ParallelSyncError,
    SwapFailed,
    TargetError,
    UsageError,
)
from parallelsync.job import hooks, jobdoc
from parallelsync.job.checks import check_counts, expected_documents, verify_checksums
from parallelsync.job.cleanup import drop_temp
from parallelsync.job.copy_follow import CopyFollow
from parallelsync.job.phases import (
    Prepared,
    make_plan,
    preflight,
    range_states,
    snapshot_count_query,
)
from parallelsync.job.progress import Progress
from parallelsync.job.report import LineReporter, Phases, Reporter
from parallelsync.job.resume import (
    ResumeStart,
    catch_up,
    check_resume,
    fingerprint,
    start_resume,
)
from parallelsync.job.schedule import JobPool, Scheduler
from parallelsync.job.state import AbortFlag, RangeState, Result, interrupt, new_job_id
from parallelsync.redact import scrub_known
from parallelsync.source import readloop
from parallelsync.source.counts import Counts
from parallelsync.source.guard import SnapshotGuard
from parallelsync.source.snapshot import Snapshot, SnapshotHolder, drop_slot
from parallelsync.targets import Target, open_target
from parallelsync.targets.base import JobStore, NullJobs, temp_name
from parallelsync.targets.mongodb.jobs import ABORTED, FAILED, FINISHED
from parallelsync.targets.mongodb.target import MongoTarget
from parallelsync.workers.pool import WorkerPool
from parallelsync.workers.worker import WorkerSetup

# Job-document updates at most this often: the stats write must stay negligible next to the copy.
STATS_INTERVAL_S = 2.0
# The summary and the job's JSON list this many of the slowest ranges (skew shows there).
SLOWEST_RANGES = 5


def refuse_empty(target: Target) -> None:
    """Zero rows must not silently replace a target that holds documents."""
    held = target.final_count()
    if held:
        raise UsageError(
            f"the source yields no rows (an empty table, or a --where that matches none), and "
            f"the swap would replace {target.display}, which holds {held:,} documents, with an "
            "empty collection; nothing was swapped. Check --where, or pass --allow-empty to "
            "replace it anyway"
        )


def slowest_ranges(states: list[RangeState], n: int = SLOWEST_RANGES) -> list[dict[str, Any]]:
    """The `n` finished ranges that took longest (this run's or, on a resume, an earlier's)."""
    done = sorted((s for s in states if s.status == "DONE"), key=lambda s: -s.seconds)[:n]
    return [
        {"range": s.rng.id, "rows": s.rows, "bytes": s.bytes, "seconds": round(s.seconds, 3),
         "attempts": s.attempts}
        for s in done
    ]  # fmt: skip


@dataclass
class Run:
    """What this run holds, so that a failure releases exactly that and nothing more."""

    job_id: str
    temp: str
    target: Target | None = None
    jobs: JobStore = field(default_factory=NullJobs)
    locked: bool = False  # the target's lock is ours: its temp, slot and job document are too
    temp_live: bool = False
    holder: SnapshotHolder | None = None
    guard: SnapshotGuard | None = None  # locks the table, checks its files, counts the snapshot
    slot: str | None = None  # the job's slot
    publication: str | None = None
    resumed: ResumeStart | None = None
    states: list[RangeState] = field(default_factory=list)  # for the job document at the end
    swapping: bool = False  # the swap was started: a failure from here on may have replaced it


def make_pool(cfg: CopyConfig, log: Callable[[str], None]) -> JobPool:
    """The local worker processes, or a Dask cluster (imported only then: an optional extra)."""
    if cfg.executor != "dask":
        return WorkerPool()
    from parallelsync.workers.dask_pool import DaskPool

    return DaskPool(cfg.scheduler, cfg.workers, log)


def run_workers(
    pool: JobPool,
    setup: WorkerSetup,
    states: list[RangeState],
    cfg: CopyConfig,
    progress: Progress,
    *,
    log: Callable[[str], None],
    check: Callable[[], None],
    on_stats: Callable[[], None],
    on_done: Callable[[RangeState], None] = lambda state: None,
    debug: Callable[[str], None] = lambda message: None,
) -> None:
    """The workers copy every range (shared by copy and verify)."""
    last = [0.0]

    def tick() -> None:
        progress.tick(sched.worker_lines, sched.ranges_done)
        if time.monotonic() - last[0] > STATS_INTERVAL_S:
            last[0] = time.monotonic()
            on_stats()

    def done(st: RangeState) -> None:
        debug(
            f"range {st.rng.id} done: {st.rows:,} rows, {st.bytes / 1e6:.1f} MB in "
            f"{st.seconds:.2f} s (attempt {st.attempts})"
        )
        on_done(st)

    progress.add(sum(s.rows for s in states), sum(s.bytes for s in states))
    sched = Scheduler(
        pool, setup, states, workers=cfg.workers, max_attempts=cfg.max_attempts, log=log,
        on_rows=progress.add, check=check, tick=tick, on_done=done,
        stall_seconds=cfg.stall_seconds,
    )  # fmt: skip
    sched.run()
    progress.tick(sched.worker_lines, sched.ranges_done, force=True)
    on_stats()


class CopyJob:
    def __init__(self, cfg: CopyConfig, reporter: Reporter | None = None) -> None:
        self.cfg = cfg
        self.reporter = reporter or LineReporter()
        self.phases = Phases(self.reporter)
        self.abort = AbortFlag()
        self.pool = make_pool(cfg, self.log)
        self.started = time.monotonic()
        self.job_id = new_job_id()

    def run(self) -> Result:
        cfg = self.cfg
        run = Run(self.job_id, temp_name(cfg.collection, self.job_id))
        result = Result(FAILED, run.job_id, workers=cfg.workers)
        states: list[RangeState] = []
        phases = self.phases
        self.abort.install()
        try:
            with phases.run("preflight"):
                self.pool.prestart()  # the fork server loads the workers' code meanwhile
                prepared = preflight(cfg, self.log)
                # A bad PARALLELSYNC_COPY_READER fails here; the workers report theirs (_totals).
                result.extra["read_loop"] = readloop.choose()
                if prepared.workers != cfg.workers:  # capped to the source's free connections
                    self.cfg = cfg = replace(cfg, workers=prepared.workers)
                    result.workers = cfg.workers
                run.target = target = open_target(
                    cfg.target, db=cfg.db, collection=cfg.collection,
                    stats_collection=cfg.stats_collection,
                    timeout_s=cfg.target_timeout_seconds, long_timeout_s=cfg.long_timeout_seconds,
                )  # fmt: skip
                result.target = target.display
                job = self._lock(prepared, target, run)
            states, snap, estimated = self._start(prepared, target, run, job)
            run.states = states
            result.job_id, result.ranges = run.job_id, len(states)
            consistent = run.resumed is None or run.resumed.exact
            result.extra["consistency"] = "snapshot" if consistent else "per-range"
            result.extra["transcoder"] = transcode.IMPL
            result.consistent_lsn, result.slot, result.snapshot = (
                snap.consistent_lsn, run.slot, snap.name,
            )  # fmt: skip
            setup = WorkerSetup(
                run.job_id, cfg.source, snap.name, prepared.projection.layout,
                target.sink_spec(run.temp), cfg.batch_rows, cfg.batch_bytes,
                checksum=cfg.verify == "checksum", oversize=cfg.oversize,
                lock_timeout=cfg.lock_timeout_seconds, table=prepared.table.display,
                table_oid=prepared.table.oid, log_format=cfg.log_format,
            )  # fmt: skip
            progress = Progress(estimated, self.reporter, ranges=len(states))
            hooks.fire("before_workers", source=cfg.source, table=prepared.table.display,
                       states=states)  # fmt: skip
            assert run.guard is not None
            with phases.run("copy") as rec:
                counter = run.guard.start_count(snapshot_count_query(cfg, prepared))
                before = sum(s.rows for s in states), sum(s.bytes for s in states)
                run_workers(
                    self.pool, setup, states, cfg, progress, log=self.log,
                    check=lambda: self._check(target),
                    on_stats=lambda: self._stats(run, states, progress),
                    on_done=lambda st: self._range_done(run, states, progress),
                    debug=self.reporter.debug,
                )  # fmt: skip
                # This run's rows: a resume's ranges finished earlier are not this phase's work.
                rec.rows = sum(s.rows for s in states) - before[0]
                rec.bytes = sum(s.bytes for s in states) - before[1]
            result.bytes = sum(s.bytes for s in states)
            caught_up, consistency = 0, "per-range" if prepared.read.foreign else "snapshot"
            with phases.run("count") as rec:
                counts = counter.result(check=lambda: self._check(target))
                run.guard.close()  # the last range is copied: a TRUNCATE may go ahead now
                hooks.fire("before_checks", target_uri=cfg.target, db=cfg.db, temp=run.temp)
                if run.resumed is None:
                    result.rows, result.docs = self._counts(
                        target, run, states, counts, 0, consistency
                    )
                    rec.rows = result.docs
            if run.resumed is not None:
                # The target's count comes after the catch-up: it checks the caught-up temp.
                with phases.run("catch-up") as rec:
                    caught_up = catch_up(
                        cfg, prepared, target, run.temp, run.resumed, run.jobs, self.log
                    )
                    consistency = "caught_up" if run.resumed.exact else "per-range"
                    result.rows, result.docs = self._counts(
                        target, run, states, counts, caught_up, consistency
                    )
                    rec.rows = caught_up
            if cfg.verify == "checksum" and caught_up:
                # Digests were taken as ranges were copied, before the catch-up rewrote rows.
                self.log("checksums skipped: the resume rewrote changed rows; run `verify`")
            elif cfg.verify == "checksum":
                with phases.run("checksums") as rec:
                    verify_checksums(target, run.temp, states, run.jobs)
                    rec.rows, rec.bytes = result.docs, result.bytes
            with phases.run("indexes"):
                target.seal(run.temp)
            if self.abort.requested:
                raise Aborted("the job was interrupted before the swap; the target is unchanged")
            if cfg.follow:
                self._follow(prepared, target, run, states, snap, result)
                return result
            self._swap(target, run, states, result)
            if run.holder is not None:
                run.holder.close()  # keep the slot: change capture resumes from it
            if run.resumed is not None and run.slot and snap.consistent_lsn:
                advance_slot(cfg.source, run.slot, snap.consistent_lsn)
            if cfg.changed_rows_collection:
                with phases.run("changed-rows") as rec:
                    changed = self._changed_rows(prepared, target, run, snap)
                    rec.rows = changed or 0
                result.extra["changed_rows"] = changed
            return result
        except (ParallelSyncError, KeyboardInterrupt) as exc:
            err = (
                exc
                if isinstance(exc, ParallelSyncError)
                else Aborted("stopped by a second interrupt")
            )
            status = ABORTED if isinstance(err, Aborted) else FAILED
            result.status, result.error, result.exit_code = status, str(err), err.exit_code
            result.exception = exc
            result.seconds = time.monotonic() - self.started
            result.rows, result.bytes = sum(s.rows for s in states), sum(s.bytes for s in states)
            result.job_created = run.locked  # before that, no job document and no summary
            outcome = None
            if run.swapping:  # what became of the swap: the target's state depends on it
                outcome = err.outcome if isinstance(err, SwapFailed) else SWAP_UNKNOWN
                result.extra["swap_outcome"] = outcome
            self._cleanup(run, status, str(err), swap_outcome=outcome)
            return result
        finally:
            result.phases = phases.docs()
            result.slowest_ranges = slowest_ranges(states)
            self.pool.stop()
            if run.guard is not None:
                run.guard.close()
            if run.target is not None:
                run.target.close()
            self.abort.restore()

    def _swap(
        self,
        target: Target,
        run: Run,
        states: list[RangeState],
        result: Result,
        fields: dict[str, Any] | None = None,
    ) -> None:
        """The rename of the temp collection over the target, then the job FINISHED."""
        cfg = self.cfg
        hooks.fire("before_swap", target_uri=cfg.target, db=cfg.db, temp=run.temp,
                   collection=cfg.collection)  # fmt: skip
        run.swapping = True
        with self.phases.run("swap"):
            note = target.swap(run.temp, self.log)
        run.temp_live, run.swapping = False, False
        result.status, result.seconds = FINISHED, time.monotonic() - self.started
        result.extra["swap_outcome"] = SWAP_DONE
        done = self._totals(states, result) | {"swap_outcome": SWAP_DONE} | (fields or {})
        if note:  # the rename's answer was lost; looking showed it took place
            done["swap_note"] = note
        run.jobs.finish(FINISHED, done)

    def _follow(
        self,
        prepared: Prepared,
        target: Target,
        run: Run,
        states: list[RangeState],
        snap: Snapshot,
        result: Result,
    ) -> None:
        """copy --follow (job/copy_follow.py): catch up, swap, follow until told to stop."""
        assert isinstance(target, MongoTarget) and snap.consistent_lsn
        self.pool.stop()  # the workers' source connections are not needed while following
        if run.holder is not None:
            # Every worker is done with the snapshot: the slot must be free for the stream.
            run.holder.close()
        cutover = CopyFollow(
            self.cfg, prepared, target, run.job_id, run.temp, run.jobs, snap.consistent_lsn,
            self.phases, self.reporter, self.abort,
        )  # fmt: skip

        def swap(figures: dict[str, Any]) -> None:
            self._swap(target, run, states, result, {"follow": figures})
            result.extra["swap"] = figures

        follow = cutover.run(swap)
        result.extra["follow"] = follow.as_json()
        if cutover.failure is not None:
            exc = cutover.failure
            result.error = str(exc)
            result.exit_code = (
                exc.exit_code if isinstance(exc, ParallelSyncError) else Aborted.exit_code
            )
            result.exception = exc

    def _counts(
        self,
        target: Target,
        run: Run,
        states: list[RangeState],
        counts: Counts,
        caught_up: int,
        consistency: str,
    ) -> tuple[int, int]:
        """The rows the source holds and the documents the temp holds, checked equal."""
        rows = expected_documents(counts, states, consistency=consistency)
        if rows == 0 and not self.cfg.allow_empty:
            refuse_empty(target)
        docs = check_counts(target, run.temp, states, rows, per_range=not caught_up)
        return rows, docs

    def log(self, message: str) -> None:
        """A message for the user (a note or warning): through the reporter, scrubbed."""
        self.reporter.warning(scrub_known(message))

    # ---------------------------------------------------------------- phases
    def _lock(self, prepared: Prepared, target: Target, run: Run) -> dict[str, Any] | None:
        """Take the target's lock for a new job, or for the job named by --resume (returned)."""
        cfg = self.cfg
        job = target.find_job(cfg.resume) if cfg.resume else None
        # Leftover slots hold WAL back on the source: say so (a resumed job's own slot is used).
        report_idle_slots(
            cfg.source, self.log, keep=((job or {}).get("snapshot") or {}).get("slot")
        )
        if job is not None:
            check_resume(cfg, prepared, target, job)
            run.job_id, run.temp = str(job["_id"]), str(job["target"]["temp"])
        target.lock(run.job_id, resume=job is not None)
        run.locked, run.jobs = True, target.jobs(run.job_id)
        # From now on the job document records each phase as it ends (`status` shows them).
        self.phases.on_end = lambda: run.jobs.update({"phases": self.phases.docs()})
        target.remove_leftovers(run.temp, run.job_id, self.log)
        return job

    def _start(
        self, prepared: Prepared, target: Target, run: Run, job: dict[str, Any] | None
    ) -> tuple[list[RangeState], Snapshot, int]:
        """Either resume the job found by `_lock` or start a new one: snapshot, then plan."""
        cfg = self.cfg
        if job is not None:
            run.temp_live = True  # it exists: a failure of this run must drop it too
            run.jobs.update({"coordinator": jobdoc.coordinator()})  # this process runs it now
            with self.phases.run("snapshot"):
                run.resumed = start = start_resume(cfg, prepared, target, job, run.jobs, self.log)
                run.holder, run.slot, run.publication = start.holder, start.slot, start.publication
                self._guard(prepared, start.snapshot, run)
            return start.states, start.snapshot, start.estimated_rows
        with self.phases.run("snapshot"):
            # The publication preflight chose (cdc/publication.py), made before the slot exists,
            # so the slot can tell a later resume which rows changed.
            pub = prepared.publication
            if pub is not None:
                if pub.create:
                    create_publication(cfg.source, prepared.table, pub)
                run.publication = pub.name
            run.holder, run.slot = SnapshotHolder(cfg.source, cfg.slot), cfg.slot
            snap = run.holder.open()
            self._guard(prepared, snap, run)
        with self.phases.run("plan"):
            plan = make_plan(cfg, prepared, snap.name)
            states = range_states(cfg, prepared, plan)
            run.jobs.create(
                jobdoc.initial(
                    cfg, prepared, plan, snap, states, temp=run.temp,
                    fingerprint=fingerprint(prepared, cfg), publication=run.publication,
                )
            )  # fmt: skip
            target.prepare(run.temp)
            run.temp_live = True
        return states, snap, plan.estimated_rows

    def _guard(self, prepared: Prepared, snap: Snapshot, run: Run) -> None:
        """Before planning and before any worker: lock what is read, check it was not truncated
        or rewritten since the snapshot (source/guard.py)."""
        hooks.fire("after_snapshot", source=self.cfg.source, table=prepared.table.display,
                   snapshot=snap.name)  # fmt: skip
        run.guard = SnapshotGuard(self.cfg.source)
        run.guard.open(snap.name, prepared.table, prepared.read)
        if prepared.read.foreign:
            self.log(
                f"{', '.join(prepared.read.foreign)}: foreign table(s) are read outside the "
                "snapshot, each range at its own moment (--allow-foreign-table): the copy has "
                "per-range consistency"
            )

    def _check(self, target: Target) -> None:
        if self.abort.requested:
            raise Aborted("the job was interrupted (SIGINT/SIGTERM); the target is unchanged")
        if target.lease_lost:
            raise TargetError("the target lease was lost to another job; nothing was swapped")

    def _stats(self, run: Run, states: list[RangeState], progress: Progress) -> None:
        rows, nbytes = sum(s.rows for s in states), sum(s.bytes for s in states)
        elapsed = time.monotonic() - self.started
        run.jobs.update(jobdoc.figures(states, rows, rows, nbytes, elapsed, progress.fraction()))

    def _range_done(self, run: Run, states: list[RangeState], progress: Progress) -> None:
        # Recorded at once, not at the next periodic update: a resume keeps what is recorded.
        self._stats(run, states, progress)
        done = sum(1 for s in states if s.status == "DONE")
        rows = sum(s.rows for s in states)
        hooks.fire("range_done", job_id=run.job_id, rows=rows, done=done, ranges=len(states))

    def _totals(self, states: list[RangeState], r: Result) -> dict[str, object]:
        fields = jobdoc.figures(states, r.rows, r.docs, r.bytes, r.seconds, 1.0)
        fields |= {"source_count": r.rows, "target_count": r.docs, "phases": self.phases.docs()}
        # Which COPY read loop the workers ran: "c", "python", or both ("c,python").
        loops = sorted({s.read_loop for s in states if s.read_loop})
        if loops:
            r.extra["read_loop"] = fields["read_loop"] = ",".join(loops)
        if self.cfg.oversize == "skip":
            # Skipped rows were read but not written: source rows = rows + skipped_count.
            count, entries = jobdoc.skipped(states)
            if count:
                self.log(
                    f"skipped {count} document(s) over 16 MiB; see 'skipped' in the job document"
                )
            r.extra["skipped_count"] = count
            fields |= {"skipped": entries, "skipped_count": count}
        return fields

    def _changed_rows(
        self, prepared: Prepared, target: Target, run: Run, snap: Snapshot
    ) -> int | None:
        cfg = self.cfg
        assert cfg.changed_rows_collection is not None
        # Preflight (and check_resume) refused a run that could not write them.
        assert run.slot and run.publication and target.resumable
        try:
            count, upto = emit_changed_rows(
                cfg.source, slot=run.slot, publication=run.publication, info=prepared.table,
                projection=prepared.projection, only=prepared.read.only,
                since_lsn=snap.consistent_lsn, job_id=run.job_id, table=cfg.table, target=target,
                collection=cfg.changed_rows_collection,
            )  # fmt: skip
        except TargetError as exc:
            self.log(f"writing changed-row jobs to {cfg.changed_rows_collection} failed: {exc}")
            return None
        run.jobs.update({"changed_rows": {"count": count, "upto_lsn": upto}})
        return count

    def _cleanup(
        self, run: Run, status: str, error: str, *, swap_outcome: str | None = None
    ) -> None:
        """Undo what this run made: workers, temp, its slot and publication. A run that never
        took the target's lock (refused, or failed before) owns nothing and drops nothing."""
        self.pool.stop()  # every worker gone, after its insert in flight, before the drop
        target = run.target
        if target is not None and run.temp_live and swap_outcome != SWAP_UNKNOWN:
            # (An unknown outcome means the server could not be reached to settle it: a leftover
            # temp is dropped by the next run instead of waiting for the server again here.)
            drop_temp(target, run.temp, unclean_since=self.pool.last_unclean_exit, log=self.log)
        if swap_outcome == SWAP_UNKNOWN and run.slot:
            # The target may be the new copy, for which the slot is where change capture
            # resumes: dropping it could not be undone, keeping it costs WAL until decided.
            if run.holder is not None:
                run.holder.close()
            self.log(
                f"kept replication slot {run.slot} (and its publication): if {self.cfg.db}."
                f"{self.cfg.collection} turns out to be the new copy, change capture resumes from "
                "it; otherwise drop it: parallelsync slot drop "
                f"{run.slot} --source DSN"
            )
        else:
            if run.holder is not None:
                run.holder.drop_slot()
            if run.locked and run.resumed is not None and run.slot:
                # The resumed job's own slot is as useless as its temp collection now.
                drop_slot(self.cfg.source, run.slot)
            if run.locked and run.publication:
                drop_publication(self.cfg.source, run.publication)  # only ours: it checks the mark
        interrupt(run.states)  # ranges cut short say so (a resume copies them again)
        ended: dict[str, object] = {"error": error}
        if swap_outcome is not None:
            ended["swap_outcome"] = swap_outcome
        if run.states:
            ended["ranges"] = [s.doc() for s in run.states]
        ended["elapsed"] = round(time.monotonic() - self.started, 3)
        ended["phases"] = self.phases.docs()
        run.jobs.finish(status, ended)

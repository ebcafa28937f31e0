"""`copy --slot NAME --follow`: catch up the temp collection from the slot, swap, keep following.

After the workers and the checks, the slot's changes since the copy's consistent LSN are applied
to the temp collection with follow's loop (job/follow_loop.py) until it is caught up: it has
reached the server's WAL position (measured again when reached), or the last change applied is
at most --swap-lag-seconds old. Nothing is confirmed to the server meanwhile: until the swap the
slot stays at the consistent LSN the job document records, so a failure (the temp collection
and the slot dropped, as for any failed copy) or a SIGKILL (the next run's `--resume` peeks the
slot from there) loses nothing.

At the swap, in this order: the follow checkpoint of the target (copy_job = this job, applied
position = the swap LSN) is stored, the temp collection is renamed over the target, the job
document becomes FINISHED with the swap's figures, and the swap LSN is confirmed to the server.
From then on the loop writes the target and checkpoints as `follow` does, so a later `parallelsync
follow --slot NAME` continues exactly from where this run stopped. A failure after the swap ends
the follow part only: the copy stays FINISHED and nothing is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parallelsync.cdc.apply import columns_of
from parallelsync.cdc.slots import list_slots
from parallelsync.cdc.stream import format_lsn, parse_lsn
from parallelsync.config import CopyConfig
from parallelsync.errors import Aborted, ParallelSyncError
from parallelsync.job.follow import (
    FollowResult,
    fail_state,
    finish_state,
    open_loop,
    reason,
)
from parallelsync.job.follow_loop import STOPPED, FollowLoop, StopFlag, Until
from parallelsync.job.phases import Prepared
from parallelsync.job.report import Phases, Reporter
from parallelsync.source.connect import connect
from parallelsync.targets.base import JobStore
from parallelsync.targets.mongodb.follow_state import FollowState
from parallelsync.targets.mongodb.target import MongoTarget

# A closed replication connection's walsender exits within moments; the slot can only be dropped
# (a failed catch-up) once it has.
INACTIVE_WAIT_S = 10.0


class CatchUpNotes:
    """The catch-up's checkpoints: in memory only (never confirmed), its statistics in the job
    document (`follow.catch_up`) every few seconds."""

    durable = False

    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs

    def store(self, lsn: str, lsn_int: int, fields: dict[str, Any]) -> None:
        pass

    def note(self, fields: dict[str, Any]) -> None:
        self._jobs.update({"follow.catch_up": fields})


@dataclass
class CopyFollow:
    cfg: CopyConfig
    prepared: Prepared
    target: MongoTarget
    job_id: str
    temp: str
    jobs: JobStore
    consistent_lsn: str
    phases: Phases
    reporter: Reporter
    stop: StopFlag
    # What ended the follow part after the swap (the copy itself is FINISHED): its exit code.
    failure: BaseException | None = None

    def run(self, swap: Callable[[dict[str, Any]], None]) -> FollowResult:
        """Catch up, call `swap(figures)` (the copy's own swap and FINISHED), follow on.

        An error before the swap is raised (the copy fails as any copy does); after it, it is in
        the returned result (status FAILED, `error`) and the copy stays FINISHED."""
        cfg, prepared = self.cfg, self.prepared
        assert cfg.slot is not None and prepared.publication is not None
        start = parse_lsn(self.consistent_lsn)
        result = FollowResult(slot=cfg.slot, start_lsn=self.consistent_lsn)
        result.applied_lsn = self.consistent_lsn
        shape = columns_of(prepared.table)
        temp = self.target.db[self.temp]
        swapped = False
        try:
            with open_loop(
                cfg, prepared.table, prepared.projection, prepared.publication.name, temp,
                start=start, shape=shape, checkpoints=CatchUpNotes(self.jobs), stop=self.stop,
                reporter=self.reporter, result=result, catch_up=True,
            ) as loop:  # fmt: skip
                with self.phases.run("catch-up") as rec:
                    loop.open(start)
                    figures = self._catch_up(loop)
                    rec.rows = figures["changes_before_swap"]
                state = self._start_state(shape, loop)
                swap(figures)  # the rename, then the job document FINISHED
                swapped = True
                self._follow(loop, state, result)
        except (ParallelSyncError, KeyboardInterrupt) as exc:
            if not swapped:
                self._wait_inactive()  # the failed copy's cleanup drops the slot
                raise
            self.failure = exc
        return result

    def _catch_up(self, loop: FollowLoop) -> dict[str, Any]:
        cfg = self.cfg
        bound = cfg.catch_up_timeout_seconds
        self.reporter.warning(
            f"catching up {self.prepared.table.display} -> temp collection from "
            f"{self.consistent_lsn} (slot {cfg.slot}): the changes made during the copy"
        )
        why = loop.run(
            Until(
                swap_lag_s=cfg.swap_lag_seconds,
                deadline=time.monotonic() + bound if bound > 0 else None,
                deadline_note=(
                    f"the catch-up did not get within --swap-lag-seconds {cfg.swap_lag_seconds:g} "
                    f"of the table in {bound:g} s (--catch-up-timeout-seconds): changes are "
                    "written faster than they are applied; nothing was swapped, the target is "
                    "unchanged. Copy at a quieter time, allow a larger lag, or copy without "
                    f"--follow and run `parallelsync follow --slot {cfg.slot}` after it"
                ),
            )
        )
        if why == STOPPED:
            raise Aborted(
                "stopped (SIGINT/SIGTERM) during the catch-up, before the swap: the target is "
                "unchanged"
            )
        snap = loop.stats()
        t = loop.applier.totals
        return {
            "swap_lsn": format_lsn(loop.applier.checkpoint),
            "server_lsn_at_swap": snap.server_lsn,
            "lag_bytes_at_swap": snap.lag_bytes,
            "lag_seconds_at_swap": snap.lag_seconds,
            "transactions_before_swap": t.transactions,
            "changes_before_swap": t.changes,
            "catch_up_seconds": round(snap.elapsed, 3),
        }

    def _start_state(self, shape: list[tuple[str, int]], loop: FollowLoop) -> FollowState:
        """The target's follow checkpoint at the swap LSN, stored BEFORE the rename: if the
        rename fails it names a copy that never finished, which `follow` ignores."""
        cfg, table = self.cfg, self.prepared.table
        assert self.prepared.publication is not None
        state = FollowState(self.target.db[cfg.stats_collection], cfg.db, cfg.collection)
        swap_lsn = loop.applier.checkpoint
        state.start({
            "job_id": self.job_id, "slot": cfg.slot,
            "publication": self.prepared.publication.name, "copy_job": self.job_id,
            "source": {"schema": table.schema, "table": table.name},
            "target": {"db": cfg.db, "collection": cfg.collection},
            "start_lsn": self.consistent_lsn, "columns": [list(c) for c in shape],
            "error": None,
        })  # fmt: skip
        state.store(format_lsn(swap_lsn), swap_lsn, {})
        return state

    def _follow(self, loop: FollowLoop, state: FollowState, result: FollowResult) -> None:
        cfg = self.cfg
        # --stop-at-end: the WAL written until the swap (as last measured), then a few more.
        end = (loop.monitor.server_lsn or loop.applier.checkpoint) if cfg.stop_at_end else None
        result.end_lsn = None if end is None else format_lsn(end)
        self.reporter.warning(
            f"swapped at {format_lsn(loop.applier.checkpoint)}; following "
            f"{self.prepared.table.display} -> {self.target.display} (slot {cfg.slot})"
        )
        before = loop.applier.totals.changes
        try:
            with self.phases.run("follow") as rec:
                loop.stream.confirm(loop.applier.checkpoint)  # only now: the target holds it
                loop.switch(self.target.db[cfg.collection], state)
                why = loop.run(Until(end_lsn=end, idle_exit=cfg.idle_exit))
                result.status = "STOPPED" if why == STOPPED else "FINISHED"
                result.reason = reason(why, cfg)
                rec.rows = loop.applier.totals.changes - before
        except BaseException as exc:
            fail_state(state, loop, result, self.job_id, exc)
            self.jobs.update({"follow.state": "FAILED", "follow.error": str(exc)})
            raise
        finish_state(state, loop, result, self.reporter)
        result.seconds = round(loop.stats().elapsed, 3)  # catch-up and follow
        self.jobs.update({
            "follow.state": result.status, "follow.reason": result.reason,
            "follow.applied_lsn": result.applied_lsn,
        })  # fmt: skip

    def _wait_inactive(self) -> None:
        """Until the walsender of the closed stream has exited (bounded)."""
        assert self.cfg.slot is not None
        deadline = time.monotonic() + INACTIVE_WAIT_S
        try:
            with connect(self.cfg.source, autocommit=True) as conn:
                while time.monotonic() < deadline:
                    found = list_slots(conn, [self.cfg.slot])
                    if not found or not found[0].active:
                        return
                    time.sleep(0.05)
        except ParallelSyncError:
            return

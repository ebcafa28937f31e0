"""Ranges to idle workers: retries with back-off, dead workers replaced, nothing waits forever.

The scheduler owns the loop of a copy (and of `verify`, which runs the same workers into a
discarding sink). It talks to the workers only through the pool's protocol (spawn, send, retire,
one result inbox), so tests can drive it with a pool of their own, without servers.

Nothing waits forever: a worker that dies is replaced and its range retried; a worker that sends
nothing (no progress, no heartbeat) for `stall_seconds` while it holds a range is killed and the
range retried elsewhere; a worker with nothing left to do is told to exit (None), which ends its
transaction and releases its locks, so DDL waiting for them can go ahead instead of blocking the
copy's retries behind it (source/locks.py).
"""

from __future__ import annotations

import contextlib
import queue
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from parallelsync.errors import ParallelSyncError, SnapshotMismatch, WorkerDied, WorkerStalled
from parallelsync.job.report import WorkerLine
from parallelsync.job.state import DONE, FAILED, PENDING, RUNNING, RangeState
from parallelsync.workers.messages import (
    Done,
    Failed,
    Fatal,
    Heartbeat,
    Message,
    Progress,
    RangeTask,
    Ready,
)
from parallelsync.workers.worker import DEFAULT_HEARTBEAT_S, WorkerSetup

# How long one loop turn waits for a worker's message: short enough to notice dead workers,
# aborts and back-off expiries promptly, long enough that an idle loop costs nothing.
POLL_S = 0.2
# Retry back-off: attempt n+1 waits min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**(n-1)) s, times a
# random factor in [0.5, 1.5) so that retries of several ranges do not hammer a recovering
# server in step.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
# Workers beat at least this many times within --stall-seconds, so a late beat or two on a busy
# machine is not taken for a stall.
BEATS_PER_STALL = 4


class Results(Protocol):
    def get(self, timeout: float) -> Message: ...
    def get_nowait(self) -> Message: ...


class Process(Protocol):
    @property
    def exitcode(self) -> int | None: ...
    def is_alive(self) -> bool: ...


class Pool(Protocol):
    @property
    def procs(self) -> dict[int, Any]: ...
    @property
    def results(self) -> Results: ...

    def spawn(self, setup: WorkerSetup) -> int: ...
    def send(self, wid: int, task: RangeTask | None) -> None: ...  # None: exit, nothing left
    def retire(self, wid: int) -> None: ...  # forget a worker (SIGKILL it if still alive)


class JobPool(Pool, Protocol):
    """A pool as a job holds it: the local processes (workers/pool.py) or a Dask cluster
    (workers/dask_pool.py, --executor dask)."""

    @property
    def last_unclean_exit(self) -> float | None: ...  # an insert may still land after this

    def prestart(self) -> None: ...
    def stop(self) -> None: ...


def backoff(attempts: int, jitter: float) -> float:
    """Seconds to wait before the next attempt after `attempts` failed ones (jitter in [0, 1))."""
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** (attempts - 1)) * (0.5 + jitter)


def heartbeat_interval(stall_seconds: float) -> float:
    """How often workers beat for this stall bound (0: no bound, the default pace)."""
    if stall_seconds <= 0:
        return DEFAULT_HEARTBEAT_S
    return min(DEFAULT_HEARTBEAT_S, stall_seconds / BEATS_PER_STALL)


class Scheduler:
    def __init__(
        self,
        pool: Pool,
        setup: WorkerSetup,
        states: list[RangeState],
        *,
        workers: int,
        max_attempts: int,
        log: Callable[[str], None],
        on_rows: Callable[[int, int], None] = lambda rows, nbytes: None,
        check: Callable[[], None] = lambda: None,
        tick: Callable[[], None] = lambda: None,
        on_done: Callable[[RangeState], None] = lambda state: None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        poll: float = POLL_S,
        stall_seconds: float = 0.0,  # 0: no stall detection (copy passes --stall-seconds)
    ) -> None:
        self.pool = pool
        self.stall_seconds = stall_seconds
        self.setup = replace(setup, heartbeat_seconds=heartbeat_interval(stall_seconds))
        self.states = states
        self.by_id = {s.rng.id: s for s in states}
        self.workers = workers
        self.max_attempts = max_attempts
        self.log = log
        self.on_rows = on_rows  # progress: rows and bytes written (negative when a range restarts)
        self.check = check  # raises to stop the job (abort, lost lease)
        self.tick = tick  # called every turn: progress display, job document
        self.on_done = on_done  # a range finished (the job document records it at once)
        self.clock = clock
        self.jitter = jitter
        self.poll = poll
        self.assigned: dict[int, int | None] = {}  # worker -> range it copies (None: idle)
        self.ready: set[int] = set()  # workers that imported the snapshot and take ranges
        self.released: set[int] = set()  # workers told to exit: nothing left for them
        self.pids: dict[int, int] = {}  # worker -> its process id (from Ready), for messages
        self.heard: dict[int, float] = {}  # worker -> when it last sent a message (or got a range)
        # The first range's `pg_current_snapshot()` (Done.snapshot, --executor dask) and its id:
        # every other range must have read the same one.
        self.snapshot: tuple[str, int] | None = None
        # Bounds worker starts, so a worker that dies at every start cannot loop forever.
        self.spawn_budget = workers + max_attempts * len(states)

    # ---------------------------------------------------------------- the loop
    def run(self) -> None:
        while True:
            self.check()
            self._assign()
            if all(s.status == DONE for s in self.states):
                break
            with contextlib.suppress(queue.Empty):
                self.handle(self.pool.results.get(timeout=self.poll))
            self._reap()
            self._stalls()
            self._spawn()
            self.tick()

    def worker_lines(self) -> tuple[WorkerLine, ...]:
        """Each live worker as a display shows it: starting (not ready yet), copying a range
        (with that range's rows so far), or idle."""
        lines = []
        for wid in sorted(self.pool.procs):
            rid = self.assigned.get(wid)
            if rid is not None:
                lines.append(WorkerLine(wid, "copying", rid, self.by_id[rid].rows))
            else:
                idle = "idle" if wid in self.ready else "starting"
                lines.append(WorkerLine(wid, "finished" if wid in self.released else idle))
        return tuple(lines)

    def ranges_done(self) -> int:
        return sum(1 for s in self.states if s.status == DONE)

    def _assign(self) -> None:
        now = self.clock()
        for wid in sorted(self.ready):
            if self.assigned.get(wid) is not None:
                continue
            pending = [s for s in self.states if s.status == PENDING and s.not_before <= now]
            if not pending:
                break
            st = pending[0]
            st.status, st.attempts, st.rows, st.bytes = RUNNING, st.attempts + 1, 0, 0
            self.assigned[wid] = st.rng.id
            self.heard[wid] = now  # the stall clock starts with the range
            self.pool.send(wid, RangeTask(st.rng.id, st.attempts, st.query))
        self._release()

    def _release(self) -> None:
        """Idle workers exit when no range waits for a worker (none PENDING, not even in
        back-off): their open transactions would hold the table's locks for nothing. A new worker
        starts only if a running range fails and needs another attempt (_spawn)."""
        if any(s.status == PENDING for s in self.states):
            return
        for wid in sorted(self.ready):
            if self.assigned.get(wid) is None:
                self.ready.discard(wid)
                self.released.add(wid)
                self.pool.send(wid, None)

    def handle(self, msg: Message) -> None:
        if msg.wid not in self.pool.procs:
            return  # a retired worker's late words: its range was already rescheduled
        self.heard[msg.wid] = self.clock()
        match msg:
            case Ready(wid=wid, pid=pid):
                self.ready.add(wid)
                self.pids[wid] = pid
            case Heartbeat():
                pass  # alive; noted above
            case Progress(range_id=rid, rows=rows, nbytes=nbytes):
                st = self.by_id[rid]
                st.rows += rows
                st.bytes += nbytes
                self.on_rows(rows, nbytes)
            case Done(wid=wid, range_id=rid) as done:
                self._same_snapshot(done)
                st = self.by_id[rid]
                st.status, st.seconds, st.error, st.digest = DONE, done.seconds, None, done.digest
                st.skipped, st.skipped_entries = done.skipped, done.skipped_entries
                st.read_loop = done.read_loop
                self.assigned[wid] = None
                self.on_done(st)
            case Failed(wid=wid, range_id=rid, error=err):
                self.assigned[wid] = None
                if err.transient:
                    # The worker exits after a transient failure (its connection may be broken):
                    # give it nothing more, so its exit costs no other range an attempt.
                    self.ready.discard(wid)
                self._fail(self.by_id[rid], err)
            case Fatal(wid=wid, error=err):
                if not err.transient:
                    raise err
                self.log(f"worker {wid} could not start ({err}); starting another")
                self._retire(wid)

    def _same_snapshot(self, done: Done) -> None:
        """Ranges copied on other hosts each imported the snapshot themselves: they must all have
        seen the same one, or the copy is not one consistent image of the table."""
        if not done.snapshot:
            return
        if self.snapshot is None:
            self.snapshot = (done.snapshot, done.range_id)
            return
        seen, first = self.snapshot
        if done.snapshot != seen:
            raise SnapshotMismatch(
                f"range {done.range_id} read snapshot {done.snapshot} but range {first} read "
                f"{seen}: the ranges did not see one snapshot, so the copy would not be "
                "consistent; nothing was swapped. Check that every host reaches the same "
                "PostgreSQL server and database"
            )

    def _fail(self, state: RangeState, err: ParallelSyncError, retry_note: str = "") -> None:
        state.error = str(err)
        self.on_rows(-state.rows, -state.bytes)
        state.rows = state.bytes = 0
        if not err.transient or state.attempts >= self.max_attempts:
            state.status = FAILED
            if err.transient:
                raise type(err)(
                    f"range {state.rng.id} failed {state.attempts} times; last error: {err}"
                )
            raise err
        state.status = PENDING
        state.not_before = self.clock() + backoff(state.attempts, self.jitter())
        self.log(
            retry_note or f"range {state.rng.id}: attempt {state.attempts} failed ({err}); retrying"
        )

    def _reap(self) -> None:
        """Workers that died without a word (killed, crashed, or exited after a failure)."""
        for wid, proc in list(self.pool.procs.items()):
            if proc.is_alive():
                continue
            self._drain()  # its last messages were flushed before it exited
            if wid not in self.pool.procs:
                continue
            rid = self.assigned.get(wid)
            self._retire(wid)
            if rid is not None:
                self._fail(
                    self.by_id[rid],
                    WorkerDied(f"worker process {wid} exited with code {proc.exitcode}"),
                )

    def _stalls(self) -> None:
        """Kill workers that hold a range but sent nothing for `stall_seconds`; retry the range."""
        if self.stall_seconds <= 0:
            return
        if not self._silent():
            return
        self._drain()  # what arrived meanwhile counts: judge the workers, not this loop's pace
        for wid, rid, silent in self._silent():
            pid = self.pids.get(wid, "?")
            self._retire(wid)
            what = f"worker {wid} (pid {pid}) sent nothing for {int(silent)} s"
            self._fail(
                self.by_id[rid],
                WorkerStalled(f"{what}; killed it"),
                retry_note=f"range {rid}: {what}; killed it, retrying the range",
            )

    def _silent(self) -> list[tuple[int, int, float]]:
        now = self.clock()
        return [
            (wid, rid, now - self.heard.get(wid, now))
            for wid, rid in sorted(self.assigned.items())
            if rid is not None and now - self.heard.get(wid, now) > self.stall_seconds
        ]

    def _drain(self) -> None:
        while True:
            try:
                self.handle(self.pool.results.get_nowait())
            except queue.Empty:
                return

    def _spawn(self) -> None:
        remaining = sum(1 for s in self.states if s.status != DONE)
        while len(self.pool.procs) < min(self.workers, remaining):
            if self.spawn_budget <= 0:
                raise WorkerDied("workers keep dying before they can start; see the messages above")
            self.spawn_budget -= 1
            self.assigned[self.pool.spawn(self.setup)] = None

    def _retire(self, wid: int) -> None:
        self.ready.discard(wid)
        self.released.discard(wid)
        self.assigned.pop(wid, None)
        self.heard.pop(wid, None)
        self.pool.retire(wid)

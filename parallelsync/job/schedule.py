"""Ranges to idle workers: retries with back-off, dead workers replaced, nothing waits forever.

The scheduler owns the loop of a copy (and of `verify`, which runs the same workers into a
discarding sink). It talks to the workers only through the pool's protocol (spawn, send, retire,
one result inbox), so tests can drive it with a pool of their own, without servers.
"""

from __future__ import annotations

import contextlib
import queue
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from parallelsync.errors import ParallelSyncError, WorkerDied
from parallelsync.job.state import DONE, FAILED, PENDING, RUNNING, RangeState
from parallelsync.workers.messages import Done, Failed, Fatal, Message, Progress, RangeTask, Ready
from parallelsync.workers.worker import WorkerSetup

# How long one loop turn waits for a worker's message: short enough to notice dead workers,
# aborts and back-off expiries promptly, long enough that an idle loop costs nothing.
POLL_S = 0.2
# Retry back-off: attempt n+1 waits min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**(n-1)) s, times a
# random factor in [0.5, 1.5) so that retries of several ranges do not hammer a recovering
# server in step.
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


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
    def send(self, wid: int, task: RangeTask) -> None: ...
    def retire(self, wid: int) -> None: ...


def backoff(attempts: int, jitter: float) -> float:
    """Seconds to wait before the next attempt after `attempts` failed ones (jitter in [0, 1))."""
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** (attempts - 1)) * (0.5 + jitter)


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
    ) -> None:
        self.pool = pool
        self.setup = setup
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
            self._spawn()
            self.tick()

    def _assign(self) -> None:
        now = self.clock()
        for wid in sorted(self.ready):
            if self.assigned.get(wid) is not None:
                continue
            pending = [s for s in self.states if s.status == PENDING and s.not_before <= now]
            if not pending:
                return
            st = pending[0]
            st.status, st.attempts, st.rows, st.bytes = RUNNING, st.attempts + 1, 0, 0
            self.assigned[wid] = st.rng.id
            self.pool.send(wid, RangeTask(st.rng.id, st.attempts, st.query))

    def handle(self, msg: Message) -> None:
        if msg.wid not in self.pool.procs:
            return  # a retired worker's late words: its range was already rescheduled
        match msg:
            case Ready(wid=wid):
                self.ready.add(wid)
            case Progress(range_id=rid, rows=rows, nbytes=nbytes):
                st = self.by_id[rid]
                st.rows += rows
                st.bytes += nbytes
                self.on_rows(rows, nbytes)
            case Done(wid=wid, range_id=rid) as done:
                st = self.by_id[rid]
                st.status, st.seconds, st.error, st.digest = DONE, done.seconds, None, done.digest
                st.skipped, st.skipped_entries = done.skipped, done.skipped_entries
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

    def _fail(self, state: RangeState, err: ParallelSyncError) -> None:
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
        self.log(f"range {state.rng.id}: attempt {state.attempts} failed ({err}); retrying")

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
        self.assigned.pop(wid, None)
        self.pool.retire(wid)

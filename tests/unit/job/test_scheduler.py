"""The scheduler, driven by an in-process pool of scripted workers and a fake clock (no servers).

`FakePool` implements the scheduler's Pool protocol. Each worker is scripted per range and
attempt: it reports progress, finishes, fails or dies as told, at once when it is sent the task.
When the scheduler would wait for a message and none is queued, the fake clock moves on by
`STEP` seconds instead of sleeping, so back-off passes in a few hundred loop turns.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from parallelsync.errors import (
    Aborted,
    EncodeError,
    ParallelSyncError,
    SnapshotMismatch,
    SourceConnectionLost,
    SourceError,
    TargetUnavailable,
    WorkerDied,
)
from parallelsync.job.schedule import BACKOFF_MAX_S, Scheduler, backoff
from parallelsync.job.state import DONE, FAILED, PENDING, RUNNING, RangeState
from parallelsync.source.planner import KeyRange
from parallelsync.targets.base import SinkSpec
from parallelsync.transcode.checksum import Digest
from parallelsync.transcode.model import Layout
from parallelsync.workers.messages import Done, Failed, Fatal, Message, Progress, RangeTask, Ready
from parallelsync.workers.worker import WorkerSetup

STEP = 0.01  # fake seconds that pass each time the scheduler waits on an empty inbox
MAX_WAITS = 100_000  # a scheduler that waits this often is stuck: fail instead of hanging
SETUP = WorkerSetup(
    "job", "postgresql://x", "snap", Layout((), 0), SinkSpec("null", "", "", ""), 10, 1024
)


# ------------------------------------------------------------------------ scripted actions
@dataclass(frozen=True)
class Rows:
    """A Progress message: a batch of the range was written."""

    rows: int
    nbytes: int = 0


@dataclass(frozen=True)
class Finish:
    """Done, with the attempt's totals."""

    seconds: float = 1.0
    digest: Digest | None = None
    skipped: int = 0
    read_loop: str = "c"
    snapshot: str = ""  # pg_current_snapshot() as a Dask task saw it ("" from local workers)


@dataclass(frozen=True)
class Fail:
    """Failed; after a transient error the worker exits (`linger` waits later), as real ones do."""

    error: ParallelSyncError
    linger: int = 0


@dataclass(frozen=True)
class Die:
    """The process dies without a word (e.g. SIGKILL: exit code -9)."""

    exitcode: int = -9


@dataclass(frozen=True)
class Hang:
    """Says nothing more (a long COPY)."""


Action = Rows | Finish | Fail | Die | Hang


@dataclass(frozen=True)
class StartFatal:
    """The worker cannot start: Fatal, then it exits."""

    error: ParallelSyncError


@dataclass(frozen=True)
class StartDie:
    """The worker dies before it can say anything."""

    exitcode: int = 1


@dataclass(frozen=True)
class StartReadyThenDie:
    """Ready, then it dies while idle."""

    exitcode: int = -9


Start = StartFatal | StartDie | StartReadyThenDie | None  # None: starts normally (Ready)
DEFAULT_ATTEMPT: list[Action] = [Rows(10, 100), Finish()]


# --------------------------------------------------------------------------------- the fake
@dataclass
class FakeProc:
    alive: bool = True
    exitcode: int | None = None
    exit_in: int | None = None  # waits until it exits (a worker lingering after a failure)

    def is_alive(self) -> bool:
        return self.alive

    def die(self, code: int) -> None:
        self.alive, self.exitcode, self.exit_in = False, code, None


class FakeResults:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool
        self.queue: list[Message] = []

    def get_nowait(self) -> Message:
        if not self.queue:
            raise queue.Empty
        msg = self.queue.pop(0)
        self.pool.delivered.append((self.pool.now[0], msg))
        return msg

    def get(self, timeout: float) -> Message:
        if not self.queue:
            self.pool.wait()
        return self.get_nowait()


@dataclass
class FakePool:
    """Scripts: `script[range_id][attempt - 1]` is what the worker does with that attempt (the
    default copies 10 rows and finishes); `starts[n]` is how the n-th spawned worker starts."""

    script: dict[int, list[list[Action]]] = field(default_factory=dict)
    starts: list[Start] = field(default_factory=list)
    start_default: Start = None
    now: list[float] = field(default_factory=lambda: [0.0])
    procs: dict[int, FakeProc] = field(default_factory=dict)
    # What happened: (time, wid, task) per send; spawned and retired workers; every message
    # handed to the scheduler with the time it was handed over.
    sends: list[tuple[float, int, RangeTask]] = field(default_factory=list)
    spawned: list[int] = field(default_factory=list)
    stops: list[int] = field(default_factory=list)
    retired: list[int] = field(default_factory=list)
    delivered: list[tuple[float, Message]] = field(default_factory=list)
    # Messages a worker "still had in its pipe", handed over after the scheduler retired it.
    late: dict[int, list[Message]] = field(default_factory=dict)
    waits: int = 0

    def __post_init__(self) -> None:
        self._results = FakeResults(self)

    @property
    def results(self) -> FakeResults:
        return self._results

    def clock(self) -> float:
        return self.now[0]

    def wait(self) -> None:
        """The scheduler would block: time passes, lingering workers exit when their time comes."""
        self.waits += 1
        if self.waits > MAX_WAITS:
            raise AssertionError(f"scheduler stuck at t={self.now[0]:.2f}: {self.sends}")
        self.now[0] += STEP
        for proc in self.procs.values():
            if proc.exit_in is not None:
                proc.exit_in -= 1
                if proc.exit_in <= 0:
                    proc.die(1)

    def put(self, msg: Message) -> None:
        self._results.queue.append(msg)

    # ------------------------------------------------------------------- the Pool protocol
    def spawn(self, setup: WorkerSetup) -> int:
        # The scheduler adds the heartbeat interval; everything else is passed through.
        assert setup.job_id == SETUP.job_id and setup.snapshot == SETUP.snapshot
        wid = len(self.spawned)
        self.spawned.append(wid)
        proc = self.procs[wid] = FakeProc()
        start = self.starts[wid] if wid < len(self.starts) else self.start_default
        match start:
            case None:
                self.put(Ready(wid, 1000 + wid))
            case StartFatal(error=err):
                self.put(Fatal(wid, err))
                proc.die(0)
            case StartDie(exitcode=code):
                proc.die(code)
            case StartReadyThenDie(exitcode=code):
                self.put(Ready(wid, 1000 + wid))
                proc.die(code)
        return wid

    def send(self, wid: int, task: RangeTask | None) -> None:
        proc = self.procs[wid]
        if task is None:  # an idle worker told to stop (no range left for it): it exits
            self.stops.append(wid)
            proc.die(0)
            return
        self.sends.append((self.now[0], wid, task))
        if not proc.alive or proc.exit_in is not None:
            return  # an exiting worker never reads its inbox again: the task is lost
        attempts = self.script.get(task.range_id, [])
        actions = attempts[task.attempt - 1] if task.attempt <= len(attempts) else DEFAULT_ATTEMPT
        rows = nbytes = 0
        for action in actions:
            match action:
                case Rows():
                    rows, nbytes = rows + action.rows, nbytes + action.nbytes
                    self.put(Progress(wid, task.range_id, action.rows, action.nbytes))
                case Finish():
                    self.put(
                        Done(
                            wid,
                            task.range_id,
                            rows,
                            nbytes,
                            action.seconds,
                            action.digest,
                            action.skipped,
                            read_loop=action.read_loop,
                            snapshot=action.snapshot,
                        )
                    )
                case Fail(error=err, linger=linger):
                    self.put(Failed(wid, task.range_id, err))
                    if err.transient:
                        if linger:
                            proc.exit_in = linger
                        else:
                            proc.die(1)
                case Die(exitcode=code):
                    proc.die(code)
                case Hang():
                    pass

    def retire(self, wid: int) -> None:
        self.retired.append(wid)
        self.procs.pop(wid, None)
        for msg in self.late.pop(wid, []):
            self.put(msg)

    # ------------------------------------------------------------------------ for asserts
    def sent(self) -> list[tuple[int, int, int]]:
        """(worker, range, attempt) per send."""
        return [(wid, t.range_id, t.attempt) for _, wid, t in self.sends]

    def delivered_at(self, pred: Callable[[Message], bool]) -> list[float]:
        return [t for t, m in self.delivered if pred(m)]


def states(n: int) -> list[RangeState]:
    out = []
    for i in range(n):
        lower = None if i == 0 else (i * 100,)
        upper = None if i == n - 1 else ((i + 1) * 100,)
        rng = KeyRange(i, "key", lower, upper, 100)
        out.append(RangeState(rng, f"COPY (SELECT * FROM t WHERE range {i}) TO STDOUT"))
    return out


@dataclass
class Run:
    pool: FakePool
    states: list[RangeState]
    scheduler: Scheduler
    logs: list[str]
    rows: list[tuple[int, int]]

    @property
    def totals(self) -> tuple[int, int]:
        return sum(r for r, _ in self.rows), sum(b for _, b in self.rows)


def make(
    pool: FakePool,
    nranges: int = 1,
    *,
    workers: int = 1,
    max_attempts: int = 3,
    jitter: float = 0.5,
    check: Callable[[], None] = lambda: None,
    given: list[RangeState] | None = None,
) -> Run:
    sts = given if given is not None else states(nranges)
    logs: list[str] = []
    rows: list[tuple[int, int]] = []
    sched = Scheduler(
        pool,
        SETUP,
        sts,
        workers=workers,
        max_attempts=max_attempts,
        log=logs.append,
        on_rows=lambda r, b: rows.append((r, b)),
        check=check,
        clock=pool.clock,
        jitter=lambda: jitter,
        poll=0,
    )
    return Run(pool, sts, sched, logs, rows)


def lost(n: int = 1) -> SourceConnectionLost:
    return SourceConnectionLost(f"connection to PostgreSQL lost ({n})")


# ---------------------------------------------------------------------------------- backoff
@pytest.mark.parametrize(
    ("attempts", "jitter", "seconds"),
    [
        (1, 0.5, 0.5),
        (1, 0.0, 0.25),
        (2, 0.5, 1.0),
        (3, 0.5, 2.0),
        (4, 0.25, 3.0),
        (6, 0.5, 16.0),
        (7, 0.5, 30.0),  # 32 s capped at 30
        (7, 0.0, 15.0),
        (40, 0.5, 30.0),
    ],
)
def test_backoff_values(attempts: int, jitter: float, seconds: float) -> None:
    assert backoff(attempts, jitter) == pytest.approx(seconds)


def test_backoff_jitter_applies_after_the_cap() -> None:
    # As schedule.py documents: min(30 s, 0.5 s * 2**(n-1)), times a factor in [0.5, 1.5).
    assert BACKOFF_MAX_S == 30.0
    assert backoff(40, 0.999) == pytest.approx(30.0 * 1.499)
    assert all(backoff(n, j) < 45.0 for n in range(1, 60) for j in (0.0, 0.5, 0.999))


# ------------------------------------------------------------------------------- happy path
def test_every_range_done_rows_summed() -> None:
    digest = Digest(2, 12345)
    pool = FakePool(
        script={
            0: [[Rows(10, 100), Rows(5, 50), Finish(seconds=2.5, digest=digest)]],
            1: [[Rows(7, 70), Finish(skipped=3, read_loop="python")]],
            2: [[Finish()]],  # an empty range
            3: [[Rows(1, 10), Rows(1, 10), Rows(1, 10), Finish()]],
        }
    )
    run = make(pool, 4, workers=2)
    run.scheduler.run()
    assert [s.status for s in run.states] == [DONE] * 4
    assert [(s.rows, s.bytes, s.attempts) for s in run.states] == [
        (15, 150, 1),
        (7, 70, 1),
        (0, 0, 1),
        (3, 30, 1),
    ]
    assert run.states[0].seconds == 2.5
    assert run.states[0].digest == digest
    assert run.states[1].skipped == 3
    # Which read loop the worker ran, per range (the job document's read_loop).
    assert [s.read_loop for s in run.states] == ["c", "python", "c", "c"]
    assert all(s.error is None for s in run.states)
    assert run.totals == (25, 250)
    assert all(r > 0 for r, _ in run.rows)
    # Each range sent once, in the order of the states (largest first, as planned).
    assert sorted(rid for _, rid, _ in pool.sent()) == [0, 1, 2, 3]
    assert [t.range_id for _, _, t in pool.sends[:2]] == [0, 1]
    assert {t.query for _, _, t in pool.sends} == {s.query for s in run.states}
    assert pool.spawned == [0, 1]
    assert run.logs == []


def test_no_more_workers_than_ranges() -> None:
    pool = FakePool()
    run = make(pool, 2, workers=8)
    run.scheduler.run()
    assert pool.spawned == [0, 1]
    assert [s.status for s in run.states] == [DONE, DONE]
    assert run.totals == (20, 200)


def test_ranges_already_done_are_not_copied_again() -> None:
    given = states(3)
    given[1].status, given[1].rows = DONE, 55
    pool = FakePool()
    run = make(pool, workers=2, given=given)
    run.scheduler.run()
    assert sorted(rid for _, rid, _ in pool.sent()) == [0, 2]
    assert [s.rows for s in run.states] == [10, 55, 10]


def test_nothing_to_do_starts_no_worker() -> None:
    given = states(2)
    for s in given:
        s.status = DONE
    pool = FakePool()
    make(pool, workers=2, given=given).scheduler.run()
    assert (pool.spawned, pool.sends) == ([], [])


# -------------------------------------------------------------------------- transient errors
def test_transient_failure_is_retried_on_a_fresh_worker_after_the_backoff() -> None:
    pool = FakePool(script={0: [[Rows(5, 50), Fail(lost())], [Rows(7, 70), Finish()]]})
    run = make(pool, jitter=0.5)
    run.scheduler.run()
    st = run.states[0]
    assert (st.status, st.attempts, st.rows, st.bytes, st.error) == (DONE, 2, 7, 70, None)
    # Attempt 2 goes to another worker: the first one exits after a transient failure.
    assert pool.sent() == [(0, 0, 1), (1, 0, 2)]
    assert pool.retired == [0]
    # Not re-sent before the back-off (0.5 s * 2**0 * (0.5 + 0.5)) has passed on the clock.
    (failed_at,) = pool.delivered_at(lambda m: isinstance(m, Failed))
    resent_at = pool.sends[1][0]
    assert resent_at >= failed_at + 0.5
    assert resent_at < failed_at + 0.5 + 5 * STEP  # and not much later
    # The failed attempt's rows are taken back from the progress total.
    assert run.rows == [(5, 50), (-5, -50), (7, 70)]
    assert run.logs == [
        "range 0: attempt 1 failed (connection to PostgreSQL lost (1)); retrying",
    ]


def test_not_before_holds_the_range_back_while_a_worker_is_idle() -> None:
    # Two workers: the second one is idle and ready all along, yet gets the range only once the
    # back-off has passed.
    pool = FakePool(script={0: [[Fail(lost())], [Finish()]], 1: [[Rows(1, 1), Finish()]]})
    run = make(pool, 2, workers=2, jitter=0.0)  # back-off 0.25 s
    run.scheduler.run()
    (failed_at,) = pool.delivered_at(lambda m: isinstance(m, Failed))
    retry = [(t, wid) for t, wid, task in pool.sends if task.range_id == 0 and task.attempt == 2]
    assert len(retry) == 1
    assert retry[0][0] >= failed_at + 0.25
    assert retry[0][0] == pytest.approx(run.states[0].not_before, abs=STEP)
    assert retry[0][1] == 1  # the worker that was idle, not the one that failed
    assert [s.attempts for s in run.states] == [2, 1]


def test_backoff_grows_between_attempts() -> None:
    pool = FakePool(
        script={0: [[Fail(lost(1))], [Fail(lost(2))], [Fail(lost(3))], [Rows(4, 4), Finish()]]}
    )
    run = make(pool, max_attempts=4, jitter=0.0)
    run.scheduler.run()
    fails = pool.delivered_at(lambda m: isinstance(m, Failed))
    sends = [t for t, _, _ in pool.sends]
    assert len(fails) == 3 and len(sends) == 4
    waits = [sends[i + 1] - fails[i] for i in range(3)]
    for waited, expected in zip(waits, (0.25, 0.5, 1.0), strict=True):
        assert expected <= waited < expected + 5 * STEP
    assert (run.states[0].status, run.states[0].attempts) == (DONE, 4)
    assert [t.attempt for _, _, t in pool.sends] == [1, 2, 3, 4]


def test_max_attempts_transient_failures_fail_the_range() -> None:
    pool = FakePool(script={0: [[Rows(2, 2), Fail(lost(n))] for n in (1, 2, 3)]})
    run = make(pool, max_attempts=3)
    with pytest.raises(SourceConnectionLost) as info:
        run.scheduler.run()
    assert str(info.value) == (
        "range 0 failed 3 times; last error: connection to PostgreSQL lost (3)"
    )
    st = run.states[0]
    assert (st.status, st.attempts, st.rows) == (FAILED, 3, 0)
    assert st.error == "connection to PostgreSQL lost (3)"
    assert len(pool.sends) == 3
    assert run.totals == (0, 0)
    assert len(run.logs) == 2


def test_terminal_error_fails_at_once() -> None:
    err = EncodeError("cannot encode column price of row id=7: NaN")
    pool = FakePool(script={0: [[Rows(3, 30), Fail(err)]]})
    run = make(pool, 2, workers=1, max_attempts=5)
    with pytest.raises(EncodeError) as info:
        run.scheduler.run()
    assert info.value is err
    assert str(info.value) == "cannot encode column price of row id=7: NaN"
    assert pool.sent() == [(0, 0, 1)]
    assert (run.states[0].status, run.states[0].attempts) == (FAILED, 1)
    assert run.states[0].error == str(err)
    assert run.states[1].status == PENDING
    assert run.totals == (0, 0)
    assert run.logs == []


# ----------------------------------------------------------------------------- dead workers
def test_worker_dying_while_holding_a_range_is_retried() -> None:
    pool = FakePool(script={0: [[Rows(3, 30), Die(-9)], [Rows(8, 80), Finish()]]})
    run = make(pool)
    run.scheduler.run()
    st = run.states[0]
    assert (st.status, st.attempts, st.rows) == (DONE, 2, 8)
    assert pool.sent() == [(0, 0, 1), (1, 0, 2)]
    assert run.rows == [(3, 30), (-3, -30), (8, 80)]
    assert run.logs == [
        "range 0: attempt 1 failed (worker process 0 exited with code -9); retrying",
    ]


def test_worker_deaths_exhaust_max_attempts() -> None:
    pool = FakePool(script={0: [[Die(-9)], [Die(-11)]]})
    run = make(pool, max_attempts=2)
    with pytest.raises(WorkerDied) as info:
        run.scheduler.run()
    assert str(info.value) == (
        "range 0 failed 2 times; last error: worker process 1 exited with code -11"
    )
    assert run.states[0].status == FAILED


def test_exit_after_a_transient_failure_costs_no_attempt() -> None:
    # Two separate blips on two ranges with max_attempts=2: each range's one failure is its
    # only lost attempt, the worker's exit afterwards is not another one.
    pool = FakePool(script={0: [[Fail(lost(1))], [Finish()]], 1: [[Fail(lost(2))], [Finish()]]})
    run = make(pool, 2, workers=1, max_attempts=2)
    run.scheduler.run()
    assert [(s.status, s.attempts) for s in run.states] == [(DONE, 2), (DONE, 2)]
    assert len(pool.spawned) == 3
    # Workers 0 and 1 failed once each and got nothing after; worker 2 did both retries.
    assert pool.sent() == [(0, 0, 1), (1, 1, 1), (2, 0, 2), (2, 1, 2)]


def test_worker_lingering_after_a_transient_failure_gets_no_other_range() -> None:
    # Worker 0 fails range 0 and takes 10 waits to exit (the back-off is 25); worker 1 finishes
    # range 1 meanwhile. Ranges 0 and 2 must not go to worker 0: it never reads them, and its exit
    # would cost them an attempt.
    pool = FakePool(
        script={0: [[Fail(lost(), linger=10)], [Finish()]], 1: [[Finish()]], 2: [[Finish()]]}
    )
    run = make(pool, 3, workers=2, max_attempts=2, jitter=0.0)
    run.scheduler.run()
    assert [(s.status, s.attempts) for s in run.states] == [(DONE, 2), (DONE, 1), (DONE, 1)]
    assert [rid for wid, rid, _ in pool.sent() if wid == 0] == [0]
    assert pool.retired == [0]
    assert pool.spawned == [0, 1]  # worker 0's exit left one worker enough for one range


def test_failed_message_read_before_the_exit_is_noticed() -> None:
    # The worker is still alive when its Failed is handled, and exits a moment later.
    pool = FakePool(script={0: [[Rows(1, 1), Fail(lost(), linger=1)], [Finish()]]})
    run = make(pool, max_attempts=2)
    run.scheduler.run()
    assert (run.states[0].status, run.states[0].attempts) == (DONE, 2)
    assert pool.sent() == [(0, 0, 1), (1, 0, 2)]


def test_idle_worker_dying_is_replaced_without_an_attempt() -> None:
    pool = FakePool(starts=[StartReadyThenDie(-9)])
    run = make(pool, max_attempts=1)
    run.scheduler.run()
    assert (run.states[0].status, run.states[0].attempts) == (DONE, 1)
    assert pool.spawned == [0, 1]
    assert pool.sent() == [(1, 0, 1)]


def test_late_messages_from_a_retired_worker_are_ignored() -> None:
    pool = FakePool(script={0: [[Rows(2, 20), Die(-9)], [Rows(6, 60), Finish(seconds=3.0)]]})
    # What worker 0 "still had in its pipe" turns up after it was retired.
    pool.late[0] = [Progress(0, 0, 999, 9990), Done(0, 0, 1001, 10010, 9.0)]
    run = make(pool)
    run.scheduler.run()
    st = run.states[0]
    assert (st.status, st.attempts, st.rows, st.bytes, st.seconds) == (DONE, 2, 6, 60, 3.0)
    assert run.totals == (6, 60)
    assert any(m.wid == 0 and isinstance(m, Done) for _, m in pool.delivered)  # it did arrive


# ------------------------------------------------------------------------ workers at start
def test_fatal_non_transient_error_raises() -> None:
    err = SourceError("permission denied for table t")
    pool = FakePool(starts=[StartFatal(err)])
    run = make(pool, 2, workers=1)
    with pytest.raises(SourceError) as info:
        run.scheduler.run()
    assert info.value is err
    assert pool.sends == []
    assert [s.status for s in run.states] == [PENDING, PENDING]


def test_fatal_transient_error_starts_another_worker() -> None:
    pool = FakePool(starts=[StartFatal(TargetUnavailable("not primary"))])
    run = make(pool, 2, workers=1)
    run.scheduler.run()
    assert [(s.status, s.attempts) for s in run.states] == [(DONE, 1), (DONE, 1)]
    assert pool.spawned == [0, 1]
    assert pool.retired == [0]
    assert {wid for wid, _, _ in pool.sent()} == {1}
    assert run.logs == ["worker 0 could not start (not primary); starting another"]


@pytest.mark.parametrize(
    "start", [StartDie(1), StartFatal(SourceConnectionLost("snapshot import failed"))]
)
def test_workers_dying_at_start_exhaust_the_spawn_budget(start: Start) -> None:
    pool = FakePool(start_default=start)
    run = make(pool, 2, workers=2, max_attempts=3)
    with pytest.raises(WorkerDied) as info:
        run.scheduler.run()
    assert str(info.value) == "workers keep dying before they can start; see the messages above"
    assert len(pool.spawned) == 2 + 3 * 2  # workers + max_attempts * ranges
    assert run.scheduler.spawn_budget == 0
    assert pool.sends == []


def test_a_few_deaths_at_start_are_survived() -> None:
    # Budget: workers + max_attempts * ranges = 1 + 3 * 1 starts.
    pool = FakePool(starts=[StartDie(1), StartDie(-9), StartFatal(lost())])
    run = make(pool, 1, workers=1, max_attempts=3)
    run.scheduler.run()
    assert (run.states[0].status, run.states[0].attempts) == (DONE, 1)
    assert pool.sent() == [(3, 0, 1)]


# ---------------------------------------------------------------------------------- check
def test_check_raising_stops_the_loop() -> None:
    pool = FakePool(script={0: [[Rows(1, 1), Hang()]], 1: [[Hang()]]})

    def check() -> None:
        if pool.waits >= 10:  # two ranges running, nothing heard for a while: Ctrl-C
            raise Aborted("interrupted by signal")

    run = make(pool, 3, workers=2, check=check)
    with pytest.raises(Aborted, match=r"^interrupted by signal$"):
        run.scheduler.run()
    assert [s.status for s in run.states] == [RUNNING, RUNNING, PENDING]
    assert sorted(rid for _, rid, _ in pool.sent()) == [0, 1]
    assert run.totals == (1, 1)
    assert pool.waits == 10  # stopped at the first check after the condition held


def test_check_is_called_before_anything_is_sent() -> None:
    def check() -> None:
        raise Aborted("lease lost")

    pool = FakePool()
    run = make(pool, 2, check=check)
    with pytest.raises(Aborted, match="lease lost"):
        run.scheduler.run()
    assert (pool.spawned, pool.sends) == ([], [])


def test_worker_lines_show_each_worker_starting_copying_and_finished() -> None:
    pool = FakePool(script={0: [[Rows(10, 100), Rows(5, 50), Finish()]], 1: [[Finish()]]})
    run = make(pool, 2, workers=2)
    seen: list[tuple[tuple[int, str, int | None, int], ...]] = []
    run.scheduler.tick = lambda: seen.append(
        tuple((w.wid, w.state, w.range_id, w.rows) for w in run.scheduler.worker_lines())
    )
    run.scheduler.run()
    assert seen[0] == ((0, "starting", None, 0), (1, "starting", None, 0))
    lines = {line for snap in seen for line in snap}
    assert all(state in ("starting", "copying", "idle", "finished") for _, state, _, _ in lines)
    # A worker's line carries its range and that range's rows so far.
    assert {(0, "copying", 0, 10), (0, "copying", 0, 15), (1, "copying", 1, 0)} <= lines
    assert run.scheduler.ranges_done() == 2


# ------------------------------------------------------------------------ one snapshot
def test_ranges_that_read_the_same_snapshot_finish() -> None:
    same = [[Rows(10, 100), Finish(snapshot="750:760:752")]]
    run = make(FakePool(script={0: same, 1: same, 2: same}), 3, workers=2)
    run.scheduler.run()
    assert [s.status for s in run.states] == [DONE] * 3
    assert run.scheduler.snapshot == ("750:760:752", 0)


def test_a_range_that_read_another_snapshot_fails_the_job() -> None:
    """Each Dask task imports the snapshot itself: one that saw another must stop the job
    (terminal: no retry would make the copy consistent)."""
    script = {
        0: [[Rows(10, 100), Finish(snapshot="750:760:752")]],
        1: [[Rows(10, 100), Finish(snapshot="751:761:")]],
    }
    run = make(FakePool(script=script), 2, workers=1)
    with pytest.raises(SnapshotMismatch) as info:
        run.scheduler.run()
    assert str(info.value).startswith(
        "range 1 read snapshot 751:761: but range 0 read 750:760:752: the ranges did not see "
        "one snapshot"
    )
    assert run.pool.sent() == [(0, 0, 1), (0, 1, 1)]  # no retry

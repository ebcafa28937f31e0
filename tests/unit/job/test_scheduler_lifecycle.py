"""The scheduler without servers: stalled workers (no message for --stall-seconds) are killed and
their range retried; heartbeats keep a slow worker alive; idle workers are released when nothing is
left for them and not replaced; a worker that failed transiently gets no further range; ranges
cut short end INTERRUPTED.

The pool is a script: each fake worker answers a task according to its behaviour, and time is a
fake clock that moves only when the scheduler waits for a message (poll), so a "60 s stall" takes
no real time and no test depends on timing.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from parallelsync.errors import SourceConnectionLost, WorkerStalled
from parallelsync.job.schedule import Scheduler, heartbeat_interval
from parallelsync.job.state import (
    DONE,
    INTERRUPTED,
    PENDING,
    RUNNING,
    RangeState,
    interrupt,
)
from parallelsync.source.planner import KeyRange
from parallelsync.targets.base import SinkSpec
from parallelsync.transcode.model import Layout
from parallelsync.workers.messages import (
    Done,
    Failed,
    Heartbeat,
    Message,
    Progress,
    RangeTask,
    Ready,
)
from parallelsync.workers.worker import WorkerSetup

POLL = 0.5
# Fake seconds after which a scheduler that has not finished is taken to hang: the test fails
# instead of looping for ever (every scenario here ends within a few hundred fake seconds).
HANG_S = 10_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeProc:
    pid: int
    exitcode: int | None = None

    def is_alive(self) -> bool:
        return self.exitcode is None


# What a fake worker does with a task: returns the messages it sends, each with the fake time at
# which it arrives (relative to the task's arrival).
Behaviour = Callable[[int, RangeTask], list[tuple[float, Message]]]


def finishes(after: float = 1.0, rows: int = 10) -> Behaviour:
    def run(wid: int, task: RangeTask) -> list[tuple[float, Message]]:
        return [
            (after / 2, Progress(wid, task.range_id, rows, rows * 10)),
            (after, Done(wid, task.range_id, rows, rows * 10, after)),
        ]

    return run


def silent(wid: int, task: RangeTask) -> list[tuple[float, Message]]:
    return []  # a frozen process: never a word again


def slow_with_heartbeats(seconds: float, every: float) -> Behaviour:
    def run(wid: int, task: RangeTask) -> list[tuple[float, Message]]:
        beats = [(t * every, Heartbeat(wid, task.range_id)) for t in range(1, int(seconds / every))]
        return [*beats, (seconds, Done(wid, task.range_id, 5, 50, seconds))]

    return run


def blips_once_on(ranges: set[int]) -> Behaviour:
    """A transient failure (a terminated backend) on the first attempt of these ranges."""

    def run(wid: int, task: RangeTask) -> list[tuple[float, Message]]:
        if task.range_id in ranges and task.attempt == 1:
            return [(0.5, Failed(wid, task.range_id, SourceConnectionLost("backend terminated")))]
        return finishes()(wid, task)

    return run


@dataclass
class FakePool:
    clock: Clock
    # Behaviour of the n-th worker started (the last one repeats).
    behaviours: list[Behaviour]
    procs: dict[int, FakeProc] = field(default_factory=dict)
    sent: list[tuple[int, RangeTask | None]] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)
    spawned: int = 0
    _due: list[tuple[float, int, Message]] = field(default_factory=list)
    _ready: deque[Message] = field(default_factory=deque)
    _exit_after_transient: set[int] = field(default_factory=set)

    @property
    def results(self) -> FakePool:
        return self

    # -- the pool's protocol
    def spawn(self, setup: WorkerSetup) -> int:
        wid = self.spawned
        self.spawned += 1
        self.procs[wid] = FakeProc(1000 + wid)
        self._ready.append(Ready(wid, 1000 + wid))
        return wid

    def send(self, wid: int, task: RangeTask | None) -> None:
        self.sent.append((wid, task))
        proc = self.procs[wid]
        if task is None:
            proc.exitcode = 0  # told to stop: exits
            return
        if not proc.is_alive():
            return  # the task lands in a dead worker's inbox
        behave = self.behaviours[min(wid, len(self.behaviours) - 1)]
        for after, msg in behave(wid, task):
            self._due.append((self.clock.now + after, wid, msg))

    def retire(self, wid: int) -> None:
        proc = self.procs.pop(wid)
        if proc.is_alive():
            proc.exitcode = -9
            self.killed.append(wid)
        self._due = [d for d in self._due if d[1] != wid]

    # -- the results inbox
    def get_nowait(self) -> Message:
        self._release_due()
        if not self._ready:
            raise queue.Empty
        msg = self._ready.popleft()
        if isinstance(msg, Failed) and msg.error.transient:
            self._exit_after_transient.add(msg.wid)
        return msg

    def get(self, timeout: float) -> Message:
        try:
            return self.get_nowait()
        except queue.Empty:
            self.clock.now += timeout
            if self.clock.now > HANG_S:
                raise AssertionError(f"the scheduler still waits after {HANG_S:.0f} s") from None
            self._exits()
            raise

    def _release_due(self) -> None:
        now = self.clock.now
        due = sorted(d for d in self._due if d[0] <= now)
        self._due = [d for d in self._due if d[0] > now]
        self._ready.extend(msg for _, _, msg in due)

    def _exits(self) -> None:
        # A worker exits a moment after reporting a transient failure (its connection may be
        # broken): after the scheduler had one more loop turn to get it wrong.
        for wid in list(self._exit_after_transient):
            if wid in self.procs:
                self.procs[wid].exitcode = 0
            self._exit_after_transient.discard(wid)


def make_states(n: int) -> list[RangeState]:
    return [
        RangeState(KeyRange(i, "key", (i * 10,), (i * 10 + 10,), 10), f"q{i}") for i in range(n)
    ]


SETUP = WorkerSetup(
    "job", "postgresql://x", "snap", Layout((), 0), SinkSpec("null", "", "", ""), 10, 1024
)


def scheduler(
    pool: FakePool,
    states: list[RangeState],
    *,
    workers: int,
    max_attempts: int = 3,
    stall_seconds: float = 0.0,
    logs: list[str] | None = None,
) -> Scheduler:
    return Scheduler(
        pool,
        SETUP,
        states,
        workers=workers,
        max_attempts=max_attempts,
        log=(logs if logs is not None else []).append,
        clock=pool.clock,
        jitter=lambda: 0.0,
        poll=POLL,
        stall_seconds=stall_seconds,
    )


# ---------------------------------------------------------------- stalls (item 14)
def test_a_silent_worker_is_killed_and_its_range_retried_elsewhere() -> None:
    clock = Clock()
    pool = FakePool(clock, [silent, finishes(), finishes()])
    states = make_states(3)
    logs: list[str] = []
    scheduler(pool, states, workers=2, stall_seconds=60, logs=logs).run()
    assert all(s.status == DONE for s in states)
    stuck = next(task for wid, task in pool.sent if wid == 0 and task is not None)
    assert pool.killed == [0]
    assert states[stuck.range_id].attempts == 2
    assert [s.attempts for s in states if s.rng.id != stuck.range_id] == [1, 1]
    line = f"range {stuck.range_id}: worker 0 (pid 1000) sent nothing for 60 s; killed it, "
    assert [m for m in logs if "sent nothing" in m] == [line + "retrying the range"]
    # Judged on the fake clock: the kill came after 60 s of silence, not before.
    assert clock.now >= 60


def test_heartbeats_keep_a_slow_worker_alive() -> None:
    clock = Clock()
    pool = FakePool(clock, [slow_with_heartbeats(200, every=2), finishes()])
    states = make_states(2)
    logs: list[str] = []
    scheduler(pool, states, workers=2, stall_seconds=10, logs=logs).run()
    assert all(s.status == DONE and s.attempts == 1 for s in states)
    assert pool.killed == []
    assert not [m for m in logs if "sent nothing" in m]
    assert clock.now >= 200


def test_stall_detection_off_waits_for_a_slow_worker() -> None:
    clock = Clock()
    pool = FakePool(clock, [finishes(after=500)])
    states = make_states(1)
    scheduler(pool, states, workers=1, stall_seconds=0).run()
    assert states[0].status == DONE and states[0].attempts == 1
    assert pool.killed == []


def test_a_range_stalling_on_every_attempt_fails_the_job_with_the_reason() -> None:
    clock = Clock()
    pool = FakePool(clock, [silent])
    states = make_states(1)
    with pytest.raises(WorkerStalled, match=r"range 0 failed 2 times; last error: worker 1 "):
        scheduler(pool, states, workers=1, max_attempts=2, stall_seconds=5).run()
    assert pool.killed == [0, 1]
    assert "sent nothing for 5 s; killed it" in (states[0].error or "")


def test_heartbeats_come_often_enough_for_short_stall_bounds() -> None:
    assert heartbeat_interval(60) == 2.0
    assert heartbeat_interval(3) == 0.75  # four beats within the bound
    assert heartbeat_interval(0) == 2.0  # off: the default pace


def test_the_scheduler_tells_workers_how_often_to_beat() -> None:
    pool = FakePool(Clock(), [finishes()])
    sched = scheduler(pool, make_states(1), workers=1, stall_seconds=3)
    assert sched.setup.heartbeat_seconds == 0.75


# ---------------------------------------------------------------- idle workers (item 13)
def test_idle_workers_are_released_when_no_range_waits_and_not_replaced() -> None:
    clock = Clock()
    # Worker 0 copies one long range; workers 1 and 2 finish the short ones and then have nothing
    # left: they are told to exit (None) while worker 0 still copies, and nobody replaces them.
    pool = FakePool(clock, [finishes(after=100), finishes(after=1)])
    states = make_states(3)
    scheduler(pool, states, workers=3).run()
    assert all(s.status == DONE and s.attempts == 1 for s in states)
    stops = [i for i, (_, task) in enumerate(pool.sent) if task is None]
    last_range = max(i for i, (_, task) in enumerate(pool.sent) if task is not None)
    released_early = [pool.sent[i][0] for i in stops if i < len(pool.sent) - 1]
    assert set(released_early) >= {1, 2}, pool.sent
    assert pool.spawned == 3  # released workers were not replaced
    assert last_range < min(stops)


def test_a_released_worker_is_replaced_only_when_a_running_range_needs_another_attempt() -> None:
    clock = Clock()
    # Worker 0 fails its range transiently late (after the others were released); a new worker
    # is started for the retry.
    late_blip: Behaviour = lambda wid, task: [  # noqa: E731
        (50, Failed(wid, task.range_id, SourceConnectionLost("backend terminated")))
    ]
    pool = FakePool(clock, [late_blip, finishes(after=1), finishes(after=1), finishes(after=1)])
    states = make_states(3)
    scheduler(pool, states, workers=3).run()
    assert all(s.status == DONE for s in states)
    failed = next(task for wid, task in pool.sent if wid == 0 and task is not None)
    assert states[failed.range_id].attempts == 2
    assert pool.spawned == 4  # three, then one for the retry
    retry = [
        wid for wid, task in pool.sent if task is not None and task.range_id == failed.range_id
    ]
    assert retry == [0, 3]


# ---------------------------------------------------------------- attempts (item 15)
def test_a_worker_that_failed_transiently_gets_no_further_range() -> None:
    """The worker exits after a transient failure: a range handed to it meanwhile would count a
    failed attempt ("worker process N exited with code 0")."""
    clock = Clock()
    pool = FakePool(clock, [blips_once_on({0, 3})])
    states = make_states(6)
    logs: list[str] = []
    scheduler(pool, states, workers=2, max_attempts=2, logs=logs).run()
    assert all(s.status == DONE for s in states)
    assert [s.attempts for s in states] == [2, 1, 1, 2, 1, 1]
    assert not [m for m in logs if "exited with code" in m], logs
    blipped = [(w, t) for w, t in pool.sent if t is not None and t.range_id in (0, 3)]
    for wid, task in blipped:
        if task.attempt == 1:  # the failed attempt was that worker's last range
            assert [t for w, t in pool.sent if w == wid and t is not None][-1] == task


def test_ranges_cut_short_end_interrupted_and_a_resume_copies_them_again() -> None:
    states = make_states(3)
    states[0].status, states[1].status = DONE, RUNNING
    states[1].attempts, states[1].rows = 1, 7
    interrupt(states)
    assert [s.status for s in states] == [DONE, INTERRUPTED, PENDING]
    again = RangeState.from_doc(states[1].doc())
    assert again.status == PENDING and again.attempts == 1 and again.rows == 0
    assert RangeState.from_doc(states[0].doc()).status == DONE

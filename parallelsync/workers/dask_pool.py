"""The range copies on a Dask cluster (--executor dask), behind the scheduler's pool protocol.

job/schedule.py drives this pool exactly like the local one (spawn, send, retire, one result
inbox) and keeps every decision: which range runs, retries and their back-off, stalls, the
attempt bound. Here a "worker" is a slot of the coordinator, not a process: `spawn` makes a slot
that is ready at once, `send` submits its range as one Dask task (dask_task.run_range) under a
deterministic key (job id, range id, attempt) with `retries=0`, and the task's Done/Failed comes
back as its result. Dask reruns a task lost with its worker by itself; the coordinator must count
that attempt and tolerate duplicates, so a lost worker kills the slot of the range it ran (the
scheduler's "remove-worker" event names its tasks) and the coordinator retries the range under a
new key, cancelling the old one.

Progress reaches the coordinator as Dask events (`Worker.log_event` on the job's topic, read with
`Client.subscribe_topic`): fire and forget, batched with the worker's other traffic to the
scheduler, so a range never waits on its reports, unlike a `distributed.Queue` (a scheduler round
trip per put) or pub/sub (deprecated, direct connections). An event can still be on its way when
the result arrives: the result carries the totals the task reported, and the difference is
settled before its Done, so a range's rows are exact however the two paths race.

Losing the scheduler (its connection breaks: Dask cancels every future) fails the job with
`ExecutorLost`, a transient error: the job drops its temp and releases its lease as after any
failure, and the same copy can run again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from parallelsync.errors import ExecutorLost, ExecutorMismatch, ParallelSyncError
from parallelsync.workers.dask_task import Sealed, mismatch, run_range, versions, worker_versions
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


def _distributed() -> Any:
    """The `distributed` package, imported only for --executor dask (an optional extra)."""
    try:
        import distributed
    except ImportError as exc:
        raise ExecutorMismatch(
            "--executor dask needs the dask and distributed packages: pip install "
            f"'parallelsync[dask]' on the coordinator and on every worker host ({exc})"
        ) from None
    return distributed


def quiet_dask() -> None:
    """Dask's own log lines (connections, a lost worker, the tracebacks of a lost scheduler's
    reconnect) would drown the job's messages, which say what happened and what to do."""
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "distributed"]
    for name in ["distributed", *names]:
        logging.getLogger(name).setLevel(logging.CRITICAL)


# How long to wait for the scheduler to answer, and for a first worker to join it.
CONNECT_S = 30.0
WORKERS_S = 60.0
# stop(): how long cancelled tasks get to finish the insert they have in flight and say so
# (their "ended" event), as pool.STOP_WAIT_S does for local workers.
STOP_WAIT_S = 15.0
# A slot whose task waits in Dask's queue for a free worker thread sends nothing; the pool beats
# for it this often, so a cluster with fewer threads than --workers is not taken for stalled.
QUEUED_BEAT_S = 1.0
# The event topic on which the scheduler announces workers that leave.
ALL = "all"


@dataclass
class Slot:
    """One of the coordinator's --workers, as the scheduler sees a worker process."""

    alive: bool = True
    exitcode: int | None = None
    task: RangeTask | None = None
    future: Any = None
    started_on: str | None = None  # the Dask worker running the task (its "started" event)
    rows: int = 0  # what the task's Progress events reported so far
    nbytes: int = 0
    beat: float = 0.0  # the last synthetic heartbeat while queued

    def is_alive(self) -> bool:
        return self.alive

    def die(self, code: int) -> None:
        self.alive, self.exitcode = False, code


def task_key(job_id: str, rid: int, attempt: int) -> str:
    return f"parallelsync-{job_id}-range-{rid}-attempt-{attempt}"


class DaskPool:
    def __init__(self, scheduler: str | None, workers: int, log: Any = None) -> None:
        self.address = scheduler
        self.workers = workers
        self.log = log or (lambda message: None)
        self.procs: dict[int, Slot] = {}
        self.last_unclean_exit: float | None = None
        self.client: Any = None
        self.cluster: Any = None
        self._next = 0
        self._topic: str | None = None
        self._setup: Sealed | None = None
        self._events: queue.Queue[Any] = queue.Queue()  # filled by Dask's threads
        self._inbox: deque[Message] = deque()  # messages for the scheduler, in order
        self._running: dict[str, str] = {}  # task key -> its Dask worker: started, not ended
        self._gone: set[str] = set()  # Dask workers the scheduler removed
        self._lost = False

    @property
    def results(self) -> DaskPool:
        return self

    # ------------------------------------------------------------ connection
    def prestart(self) -> None:
        """Connect (or start a LocalCluster without --scheduler) and check the workers'
        versions, before the job takes its lease: a cluster that cannot run it fails fast."""
        if self.client is not None:
            return
        where = self.address or "a local Dask cluster"
        distributed = _distributed()
        quiet_dask()
        try:
            if self.address is None:
                self.cluster = distributed.LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True,
                    dashboard_address=":0", silence_logs=logging.ERROR,
                )  # fmt: skip
                self.log(
                    f"started a local Dask cluster of {self.workers} worker processes at "
                    f"{self.cluster.scheduler_address} (--scheduler ADDRESS uses an existing one)"
                )
            self.client = distributed.Client(
                self.cluster or self.address, timeout=CONNECT_S, set_as_default=False
            )
        except (OSError, TimeoutError) as exc:
            raise ExecutorLost(
                f"cannot reach the Dask scheduler at {where} ({exc}): start it "
                "(`dask scheduler`) or check --scheduler"
            ) from None
        try:
            self.client.wait_for_workers(1, timeout=WORKERS_S)
        except (OSError, TimeoutError):
            raise ExecutorLost(
                f"no Dask worker joined the scheduler at {where} within {WORKERS_S:g} s: start "
                f"some (`dask worker {self.address or 'ADDRESS'} --nthreads 1`)"
            ) from None
        self.client.subscribe_topic(ALL, self._on_event)
        self._check_versions()
        info = self.client.scheduler_info()["workers"].values()
        threads = sum(int(w.get("nthreads", 1)) for w in info)
        if threads < self.workers:
            self.log(
                f"--workers {self.workers} but the Dask cluster has {threads} worker thread(s): "
                "ranges wait for a free thread"
            )

    def _check_versions(self) -> None:
        """Every worker must run this parallelsync and transcoder (each task checks it again,
        for a worker that joins later)."""
        try:
            found = self.client.run(worker_versions)
        except Exception as exc:
            raise ExecutorMismatch(
                f"a Dask worker cannot run parallelsync ({type(exc).__name__}: {exc}): install "
                "'parallelsync[dask]' (the coordinator's version) on every worker host"
            ) from None
        want = versions()
        for address, have in sorted(found.items()):
            wrong = mismatch(want, (have["version"], have["transcoder"]), f"Dask worker {address}")
            if wrong:
                raise ExecutorMismatch(wrong)

    # ------------------------------------------------------------ the pool protocol
    def spawn(self, setup: WorkerSetup) -> int:
        if self.client is None:
            self.prestart()
        if self._topic is None:
            self._topic = f"parallelsync-{setup.job_id}"
            self.client.subscribe_topic(self._topic, self._on_event)
        self._setup = Sealed(setup)
        wid, self._next = self._next, self._next + 1
        self.procs[wid] = Slot()
        self._inbox.append(Ready(wid, 0))  # no process of its own: ready at once
        return wid

    def send(self, wid: int, task: RangeTask | None) -> None:
        slot = self.procs[wid]
        if task is None:
            slot.die(0)  # nothing left for it: it "exits" cleanly
            return
        assert self._setup is not None
        key = task_key(self._setup.setup.job_id, task.range_id, task.attempt)
        slot.task, slot.started_on, slot.rows, slot.nbytes = task, None, 0, 0
        slot.beat = time.monotonic()
        slot.future = self.client.submit(
            run_range, self._setup, task, wid, versions(), self._topic,
            key=key, pure=False, retries=0,
        )  # fmt: skip
        future = slot.future
        future.add_done_callback(lambda f: self._events.put(("done", wid, f)))

    def retire(self, wid: int) -> None:
        slot = self.procs.pop(wid, None)
        if slot is None or slot.future is None:
            return
        if not slot.future.done() and not self._lost:
            with contextlib.suppress(Exception):
                slot.future.cancel()  # the task stops at its next batch (dask_task.unwanted)
        if slot.started_on is not None:
            self.last_unclean_exit = time.monotonic()  # its insert may still land
        slot.future = None

    def stop(self) -> None:
        """Cancel every task, wait (bounded) until those that started have ended, and close the
        client (and the cluster this pool started). Returns once nothing of the job runs."""
        if self.client is None:
            return
        for wid in list(self.procs):
            self.retire(wid)
        deadline = time.monotonic() + STOP_WAIT_S
        while self._running and not self._lost and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                self._take(self._events.get(timeout=0.1))
        if self._running:
            self.last_unclean_exit = time.monotonic()
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        with contextlib.suppress(Exception):
            client.close(timeout=5)
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close(timeout=10)

    # ------------------------------------------------------------ the inbox
    def get_nowait(self) -> Message:
        while not self._inbox:
            try:
                self._take(self._events.get_nowait())
            except queue.Empty:
                self._alive()
                self._beat_queued()
                if not self._inbox:
                    raise
        return self._inbox.popleft()

    def get(self, timeout: float) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(queue.Empty):
                return self.get_nowait()
            left = deadline - time.monotonic()
            if left <= 0:
                raise queue.Empty
            with contextlib.suppress(queue.Empty):
                self._take(self._events.get(timeout=left))

    def _on_event(self, event: tuple[float, Any]) -> None:
        self._events.put(("event", event[1]))  # on the client's event loop: hand over only

    def _alive(self) -> None:
        if self._lost or (self.client is not None and self.client.status != "running"):
            self._lost = True
            raise ExecutorLost(
                f"lost the Dask scheduler at {self.address or 'the local cluster'}: no range can "
                "run or report; the target is unchanged: run the copy again once the scheduler "
                "is back"
            )

    def _beat_queued(self) -> None:
        now = time.monotonic()
        for wid, slot in self.procs.items():
            queued = slot.future is not None and slot.started_on is None
            if queued and slot.task is not None and now - slot.beat >= QUEUED_BEAT_S:
                slot.beat = now
                self._inbox.append(Heartbeat(wid, slot.task.range_id))

    def _take(self, item: tuple[Any, ...]) -> None:
        if item[0] == "done":
            self._finished(item[1], item[2])
        elif isinstance(item[1], dict):
            self._event(item[1])

    def _current(self, msg: dict[str, Any]) -> Slot | None:
        """The slot this event is about, if it still runs that range's attempt."""
        slot = self.procs.get(int(msg.get("wid", -1)))
        if slot is None or slot.task is None or slot.future is None:
            return None
        if (slot.task.range_id, slot.task.attempt) != (msg.get("range"), msg.get("attempt")):
            return None
        return slot

    def _event(self, msg: dict[str, Any]) -> None:
        if msg.get("action") == "remove-worker":
            self._worker_gone(str(msg.get("worker")), set(msg.get("processing-tasks") or ()))
            return
        kind = msg.get("kind")
        if kind is None or self._setup is None:
            return
        key = task_key(self._setup.setup.job_id, int(msg["range"]), int(msg["attempt"]))
        if kind == "started":
            self._running[key] = str(msg["worker"])
        elif kind == "ended":
            self._running.pop(key, None)
        slot = self._current(msg)
        if slot is None or slot.task is None:
            return  # a retired attempt's late words
        wid, rid = int(msg["wid"]), slot.task.range_id
        if kind == "started":
            slot.started_on = str(msg["worker"])
            if slot.started_on in self._gone:  # removed before its start was heard
                self._lose(wid, slot)
        elif kind == "progress":
            slot.rows += int(msg["rows"])
            slot.nbytes += int(msg["nbytes"])
            self._inbox.append(Progress(wid, rid, int(msg["rows"]), int(msg["nbytes"])))
        elif kind == "beat":
            self._inbox.append(Heartbeat(wid, rid))

    def _worker_gone(self, address: str, keys: set[str]) -> None:
        """A Dask worker left (killed, crashed, its host lost): the ranges it ran are lost."""
        self._gone.add(address)
        for key, where in list(self._running.items()):
            if where == address:
                del self._running[key]  # it died with its worker: nothing more will come
                self.last_unclean_exit = time.monotonic()
        for wid, slot in list(self.procs.items()):
            if slot.future is None:
                continue
            if (slot.started_on == address or slot.future.key in keys) and slot.task is not None:
                self.log(f"Dask worker {address} left while it copied range {slot.task.range_id}")
                self._lose(wid, slot)

    def _lose(self, wid: int, slot: Slot) -> None:
        """The slot's task was lost with its worker: the slot dies, and the scheduler retries its
        range (under a new key: Dask's own rerun of the old one is cancelled by retire)."""
        self.last_unclean_exit = time.monotonic()
        slot.die(-9)

    def _finished(self, wid: int, future: Any) -> None:
        slot = self.procs.get(wid)
        if slot is None or slot.future is not future or slot.task is None:
            return  # retired: its range was already rescheduled
        task, slot.future = slot.task, None
        if future.cancelled():
            self._lost = True  # we did not cancel it: the client lost the scheduler
            self._alive()
        try:
            msg, rows, nbytes = future.result()
        except Exception as exc:
            if type(exc).__name__ == "KilledWorker":
                slot.die(-9)  # Dask gave up after its own reruns: the coordinator retries
                return
            err: ParallelSyncError = ExecutorMismatch(
                f"a Dask worker could not run range {task.range_id} "
                f"({type(exc).__name__}: {exc}): install 'parallelsync[dask]' (the "
                "coordinator's version) on every worker host"
            )
            self._inbox.append(Failed(wid, task.range_id, err))
            slot.die(0)
            return
        if isinstance(msg, Done):
            if rows != slot.rows or nbytes != slot.nbytes:  # events still on their way
                rest = Progress(wid, task.range_id, rows - slot.rows, nbytes - slot.nbytes)
                self._inbox.append(rest)
            slot.rows, slot.nbytes = rows, nbytes
        elif isinstance(msg, Failed) and msg.error.transient:
            slot.die(0)  # as a local worker exits after a transient failure
        self._inbox.append(msg)

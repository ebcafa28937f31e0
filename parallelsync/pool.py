"""The worker processes of a job: started early, given the job's setup once it is known.

A spawned worker needs ~1.3 s of CPU before it can copy a row: importing psycopg, pymongo and
numpy (~0.5 s) and loading the numba kernels from their cache (~0.8 s). The coordinator spends
about as long on the preflight, the snapshot and the range plan, mostly waiting for PostgreSQL.
`prestart` starts the workers before that, so they warm up meanwhile; `spawn` hands the setup
(snapshot name, layout, target) to a warm worker, or starts a new one for a retry.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import queue
import time
from typing import Any

from parallelsync.worker import RangeTask, WorkerSetup, worker_main


class Inbox:
    """The workers' messages, through one queue per worker.

    A `multiprocessing.Queue` guards its pipe with one lock shared by every writer: a worker
    SIGKILLed in the middle of a put would hold it forever and silence all the other workers (the
    coordinator would wait for ever). With a queue per worker, a killed worker only breaks its own.
    Same interface as the queue it replaces: `get(timeout)` / `get_nowait()`, raising queue.Empty.
    """

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self._queues: dict[int, Any] = {}
        self._buffer: list[tuple[Any, ...]] = []

    def new(self, wid: int) -> Any:
        q = self._ctx.Queue()
        self._queues[wid] = q
        return q

    def get_nowait(self) -> tuple[Any, ...]:
        if not self._buffer:
            for q in list(self._queues.values()):
                with contextlib.suppress(queue.Empty):
                    self._buffer.append(q.get_nowait())
        if not self._buffer:
            raise queue.Empty
        return self._buffer.pop(0)

    def get(self, timeout: float) -> tuple[Any, ...]:
        if not self._buffer:
            # `_reader` is the queue's receiving Connection (private, but the only way to wait
            # on several queues at once without a thread per queue).
            readers = [q._reader for q in self._queues.values()]
            multiprocessing.connection.wait(readers, timeout)
        return self.get_nowait()


class WorkerPool:
    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")
        self.results = Inbox(self._ctx)
        self.procs: dict[int, Any] = {}  # workers that have their setup: the job's workers
        self._warm: list[tuple[int, Any, Any]] = []  # (wid, process, inbox) waiting for a setup
        self._inboxes: dict[int, Any] = {}
        self._next = 0

    def prestart(self, n: int) -> None:
        """Start n workers now; they warm up and wait for `spawn` to give them the setup."""
        for _ in range(n):
            self._warm.append(self._start())

    def spawn(self, setup: WorkerSetup) -> int:
        """A worker for this setup (a warm one if any is left); returns its id."""
        wid, proc, inbox = self._warm.pop(0) if self._warm else self._start()
        inbox.put(setup)
        self.procs[wid], self._inboxes[wid] = proc, inbox
        return wid

    def send(self, wid: int, task: RangeTask) -> None:
        self._inboxes[wid].put(task)

    def retire(self, wid: int) -> None:
        self._inboxes.pop(wid, None)
        proc = self.procs.pop(wid, None)
        if proc is not None and proc.is_alive():
            proc.kill()

    def stop(self) -> None:
        """Stop every worker (warm ones included), SIGKILL after 5 s."""
        procs = list(self.procs.values()) + [proc for _, proc, _ in self._warm]
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
        self.procs.clear()
        self._inboxes.clear()
        self._warm.clear()

    def _start(self) -> tuple[int, Any, Any]:
        wid, self._next = self._next, self._next + 1
        inbox = self._ctx.Queue()
        proc = self._ctx.Process(
            target=worker_main,
            args=(wid, inbox, self.results.new(wid)),
            name=f"parallelsync-worker-{wid}",
            daemon=True,
        )
        proc.start()
        return wid, proc, inbox

"""The worker processes of a job.

A freshly spawned Python process needs ~0.65 s of CPU (~1 s of wall time here) before it can copy
a row: importing psycopg, pymongo and numpy; the compiled transcoder then loads in milliseconds
(measured, benchmarks/bench_impl.py). Paid by every worker, that is 2.6 CPU-seconds for
`--workers 4` on a 2-core machine, in a copy of a few million rows.
Where the platform has it (Linux, macOS), workers are therefore forked from a multiprocessing
fork server that has loaded all of that once (`preload.py`): `prestart` launches it when the job
starts, so it warms up while the coordinator makes the snapshot and the plan, and each worker is
then a cheap fork of a process without threads or connections. Elsewhere workers are spawned.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import multiprocessing.forkserver
import queue
import time
from typing import Any

from parallelsync.workers.messages import Message, RangeTask
from parallelsync.workers.worker import WorkerSetup, worker_main


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
        self._buffer: list[Message] = []

    def new(self, wid: int) -> Any:
        q = self._ctx.Queue()
        self._queues[wid] = q
        return q

    def get_nowait(self) -> Message:
        if not self._buffer:
            for q in list(self._queues.values()):
                with contextlib.suppress(queue.Empty):
                    self._buffer.append(q.get_nowait())
        if not self._buffer:
            raise queue.Empty
        return self._buffer.pop(0)

    def get(self, timeout: float) -> Message:
        if not self._buffer:
            # `_reader` is the queue's receiving Connection (private, but the only way to wait
            # on several queues at once without a thread per queue).
            readers = [q._reader for q in self._queues.values()]
            multiprocessing.connection.wait(readers, timeout)
        return self.get_nowait()


def _context() -> Any:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["parallelsync.workers.preload"])
        return ctx
    return mp.get_context("spawn")


class WorkerPool:
    def __init__(self) -> None:
        self._ctx = _context()
        self.results = Inbox(self._ctx)
        self.procs: dict[int, Any] = {}
        self._inboxes: dict[int, Any] = {}
        self._next = 0

    def prestart(self) -> None:
        """Launch the fork server now (returns at once; it warms up in the background)."""
        if self._ctx.get_start_method() == "forkserver":
            multiprocessing.forkserver.ensure_running()

    def spawn(self, setup: WorkerSetup) -> int:
        """Start a worker for this setup; returns its id."""
        wid, self._next = self._next, self._next + 1
        inbox = self._ctx.Queue()
        proc = self._ctx.Process(
            target=worker_main,
            args=(wid, setup, inbox, self.results.new(wid)),
            name=f"parallelsync-worker-{wid}",
            daemon=True,
        )
        proc.start()
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
        """Stop every worker, SIGKILL after 5 s."""
        procs = list(self.procs.values())
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

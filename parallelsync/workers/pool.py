"""The worker processes of a job.

A freshly spawned Python process needs ~0.65 s of CPU (~1 s of wall time here) before it can copy
a row: importing psycopg, pymongo and numpy; the compiled transcoder then loads in milliseconds
(measured, benchmarks/bench_impl.py). Paid by every worker, that is 2.6 CPU-seconds for
`--workers 4` on a 2-core machine, in a copy of a few million rows.
Where the platform has it (Linux, macOS), workers are therefore forked from a multiprocessing
fork server that has loaded all of that once (`preload.py`): `prestart` launches it when the job
starts, so it warms up while the coordinator makes the snapshot and the plan, and each worker is
then a cheap fork of a process without threads or connections. Elsewhere workers are spawned.

Either way workers die with the coordinator (lifeline.py: parent-death signal, lifeline pipe),
and `stop` lets each finish the insert it has in flight before the job drops the temp collection.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection
import multiprocessing.forkserver
import os
import queue
import signal
import time
from typing import Any

from parallelsync.workers.messages import Message, RangeTask
from parallelsync.workers.worker import WorkerSetup, worker_main

# stop(): how long workers get between SIGTERM and SIGKILL. A stopping worker waits for the insert
# it has in flight (one batch: well under a second on a healthy server, up to pipeline.WRITER_WAIT_S
# on a struggling one) and for its reader to cancel the COPY; 15 s covers both and keeps an abort
# bounded. A worker still alive then is killed, and the job watches for its late insert.
STOP_WAIT_S = 15.0


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
        # The lifeline (lifeline.py): workers get the read end; only this process holds the write
        # end, so the workers see EOF when it dies. Closed by stop() once no worker is left.
        self._lifeline: tuple[Any, Any] | None = None
        # When a worker last ended in a way that may leave an insert in flight (SIGKILLed, or
        # it said so): until a few seconds after that, a dropped temp collection may come back.
        self.last_unclean_exit: float | None = None

    def prestart(self) -> None:
        """Launch the fork server now (returns at once; it warms up in the background)."""
        if self._ctx.get_start_method() == "forkserver":
            multiprocessing.forkserver.ensure_running()

    def spawn(self, setup: WorkerSetup) -> int:
        """Start a worker for this setup; returns its id."""
        wid, self._next = self._next, self._next + 1
        if self._lifeline is None:
            self._lifeline = self._ctx.Pipe(duplex=False)
        inbox = self._ctx.Queue()
        proc = self._ctx.Process(
            target=worker_main,
            args=(wid, setup, inbox, self.results.new(wid), self._lifeline[0]),
            name=f"parallelsync-worker-{wid}",
            daemon=True,
        )
        proc.start()
        self.procs[wid], self._inboxes[wid] = proc, inbox
        return wid

    def send(self, wid: int, task: RangeTask | None) -> None:
        """A range to copy, or None: nothing is left for this worker, it exits."""
        self._inboxes[wid].put(task)

    def retire(self, wid: int) -> None:
        """Forget a worker that died (or that the scheduler gave up on: it is SIGKILLed)."""
        self._inboxes.pop(wid, None)
        proc = self.procs.pop(wid, None)
        if proc is not None:
            self._finish(proc)

    def _finish(self, proc: Any) -> None:
        """SIGKILL a worker still alive; note an exit that may have left an insert in flight."""
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=2)
            self._unclean()
        elif not clean_exit(proc.exitcode):
            self._unclean()

    def stop(self) -> None:
        """Stop every worker: SIGTERM, so each finishes its insert in flight and exits; SIGKILL
        for those still alive after STOP_WAIT_S. Returns once every worker is gone."""
        procs = list(self.procs.values())
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                # A stopped worker (SIGSTOP) would only see SIGTERM once continued.
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + STOP_WAIT_S
        for proc in procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            self._finish(proc)
        self.procs.clear()
        self._inboxes.clear()
        if self._lifeline is not None:
            for end in self._lifeline:
                end.close()
            self._lifeline = None

    def _unclean(self) -> None:
        self.last_unclean_exit = time.monotonic()


def clean_exit(code: int | None) -> bool:
    """The worker cannot have left an insert in flight: it exited by itself after its writer
    finished, or SIGTERM ended it before it could connect (its handler was not installed yet).
    Anything else may have: SIGKILL, a crash, `lifeline.EXIT_WRITE_IN_FLIGHT`."""
    return code in (0, -signal.SIGTERM)

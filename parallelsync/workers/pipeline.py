"""The worker's reader and writer threads, and the bounded queues that connect them.

The worker's main thread transcodes; the reader keeps the COPY stream flowing meanwhile, and the
writer inserts the previous batch. Each queue holds `DEPTH` batches, so a worker holds at most
about 2 * DEPTH + 1 batches (~40 MiB at the default 8 MiB), whatever the table's size.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import weakref
from collections.abc import Generator, Iterator
from typing import Any

from parallelsync.targets import Sink
from parallelsync.transcode.batch import EncodedBatch

# Batches queued between two threads: one being worked on downstream, one ready.
DEPTH = 2
_END = object()
# Every writer of this process, until it is garbage: `writing()` asks them.
_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()
# How long stop() waits for a reader blocked on a silent server. The worker then reports the
# range's failure anyway; after a failure it either exits or the job ends, so the thread dies
# with the process and never touches the connection of a later range.
STOP_WAIT_S = 10.0
# How long a failed or stopped range waits for the insert its writer has in flight: one batch, well
# under a second on a healthy server. Bounded below the pool's SIGTERM-to-SIGKILL wait (pool.py),
# so a worker that gives up still exits by itself and says so (lifeline.EXIT_WRITE_IN_FLIGHT).
WRITER_WAIT_S = 10.0


class Reader:
    """Iterates a `copy_batches` generator in its own thread; iterate the Reader to get them."""

    def __init__(self, batches: Generator[tuple[bytearray, int], None, None]) -> None:
        self._batches = batches
        self._queue: queue.Queue[Any] = queue.Queue(DEPTH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        end: object = _END
        try:
            for item in self._batches:
                if not self._offer(item):
                    break
        except BaseException as exc:
            end = exc
        finally:
            self._batches.close()  # after a break: cancels the COPY still streaming
        self._offer(end)

    def _offer(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[tuple[bytearray, int]]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        """Stop reading (cancelling the COPY if it still streams) and wait for the thread."""
        self._stop.set()
        self._thread.join(STOP_WAIT_S)


def writing() -> bool:
    """An insert of this process may still be in flight (a writer thread is not done)."""
    return any(w.busy for w in list(_WRITERS))


class Writer:
    """The writer thread: inserts encoded batches and reports progress after each one."""

    def __init__(self, sink: Sink, allow_duplicates: bool, report: Any) -> None:
        self._sink = sink
        self._allow = allow_duplicates
        self._report = report
        self._queue: queue.Queue[tuple[EncodedBatch, int] | None] = queue.Queue(DEPTH)
        self.error: BaseException | None = None
        # Set when the thread is done. Not Thread.join/is_alive: a join interrupted by a signal
        # handler's exception (SIGTERM -> lifeline.Stopping) can mark a running thread as stopped
        # (CPython 3.11/3.12, the bpo-45274 fix), and this writer's insert would then be taken
        # for finished while it is still in flight.
        self._finished = threading.Event()
        _WRITERS.add(self)
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if self.error is not None:
                    continue  # drain so the reader never blocks on a dead writer
                batch, nbytes = item
                try:
                    self._sink.insert(batch, allow_duplicates=self._allow)
                    self._report(batch.rows, nbytes)
                except BaseException as exc:
                    self.error = exc
        finally:
            self._finished.set()

    @property
    def busy(self) -> bool:
        return not self._finished.is_set()

    def put(self, batch: EncodedBatch, nbytes: int) -> None:
        self._check()
        self._queue.put((batch, nbytes))

    def finish(self) -> None:
        self._queue.put(None)
        self._finished.wait()
        self._check()

    def abandon(self) -> None:
        """Send nothing more: drop the queued batches and let the thread end after the insert
        in flight. Called from the thread that puts, so nothing refills the queue meanwhile."""
        self.error = self.error or RuntimeError("abandoned")
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)

    def wait(self, timeout: float) -> bool:
        """After abandon(): wait for the insert in flight. True when the thread is done, so
        nothing this writer sent can still land on the target."""
        return self._finished.wait(timeout)

    def _check(self) -> None:
        if self.error is not None:
            raise self.error

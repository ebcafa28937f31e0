"""One worker process: import the snapshot, then copy the ranges the coordinator hands it.

Per range: `COPY (SELECT ...) TO STDOUT (FORMAT BINARY)` is read with libpq's blocking
`get_copy_data` (one message per tuple, appended to a bytearray: the cheapest way psycopg offers),
transcoded per batch into BSON bytes, and handed to a writer thread that inserts them, so reading
and transcoding overlap the MongoDB round trips. The queue between them holds at most two batches,
which bounds memory.

Messages to the coordinator are plain tuples (cheap to pickle):
  ("ready", wid, pid) | ("progress", wid, range_id, rows, nbytes) |
  ("done", wid, range_id, rows, nbytes, seconds) | ("failed", wid, range_id, error) |
  ("fatal", wid, error)
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq

from parallelsync.errors import ParallelSyncError, SourceConnectionLost, SourceError, TargetUnavailable
from parallelsync.source.connect import classify, clean, connect
from parallelsync.source.snapshot import import_snapshot
from parallelsync.target.client import connect as mongo_connect
from parallelsync.target.sink import MongoSink, NullSink, Sink
from parallelsync.transcode.encoder import DocumentEncoder, header_length
from parallelsync.transcode.model import Layout

# Batches queued between the reader and the writer thread: one being written, one ready.
WRITE_QUEUE_DEPTH = 2


@dataclass(frozen=True)
class WorkerSetup:
    job_id: str
    source_dsn: str
    snapshot: str
    layout: Layout
    target_uri: str
    db: str
    temp_collection: str
    batch_rows: int
    batch_bytes: int


@dataclass(frozen=True)
class RangeTask:
    range_id: int
    attempt: int
    query: str  # the complete COPY statement for this range


def worker_main(wid: int, setup: WorkerSetup, tasks: Any, results: Any) -> None:
    """Entry point of a worker process (spawned: it creates all its clients itself)."""
    # The coordinator handles Ctrl-C for the whole job and stops workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        conn = connect(setup.source_dsn, autocommit=True)
        import_snapshot(conn, setup.snapshot)
        sink = make_sink(setup)
        encoder = DocumentEncoder(setup.layout)
    except ParallelSyncError as exc:
        results.put(("fatal", wid, exc))
        return
    except psycopg.Error as exc:
        results.put(("fatal", wid, classify(exc, setup.source_dsn, "importing the snapshot failed")))
        return
    except Exception as exc:  # report, never die silently
        results.put(("fatal", wid, ParallelSyncError(f"worker start failed: {exc!r}")))
        return
    results.put(("ready", wid, os.getpid()))
    try:
        while True:
            task = tasks.get()
            if task is None:
                break
            start = time.monotonic()
            try:
                rows, nbytes = copy_range(conn, encoder, sink, setup, task, wid, results)
            except ParallelSyncError as exc:
                results.put(("failed", wid, task.range_id, exc))
                if exc.transient:
                    break  # the connection may be broken: the coordinator starts a fresh worker
                continue
            except Exception as exc:
                results.put(("failed", wid, task.range_id, ParallelSyncError(f"internal error: {exc!r}")))
                break
            results.put(("done", wid, task.range_id, rows, nbytes, time.monotonic() - start))
    finally:
        sink.close()
        conn.close()


def make_sink(setup: WorkerSetup) -> Sink:
    if setup.target_uri.startswith("null:"):
        return NullSink()
    return MongoSink(mongo_connect(setup.target_uri), setup.db, setup.temp_collection)


class _Writer:
    """The writer thread: inserts encoded batches and reports progress after each one."""

    def __init__(self, sink: Sink, allow_duplicates: bool, report: Any) -> None:
        self._sink = sink
        self._allow = allow_duplicates
        self._report = report
        self._queue: queue.Queue[tuple[list[bytes], int, int] | None] = queue.Queue(WRITE_QUEUE_DEPTH)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain so the reader never blocks on a dead writer
            docs, rows, nbytes = item
            try:
                self._sink.insert(docs, allow_duplicates=self._allow)
                self._report(rows, nbytes)
            except BaseException as exc:
                self.error = exc

    def put(self, docs: list[bytes], rows: int, nbytes: int) -> None:
        self._check()
        self._queue.put((docs, rows, nbytes))

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._check()

    def abandon(self) -> None:
        self.error = self.error or RuntimeError("abandoned")
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    def _check(self) -> None:
        if self.error is not None:
            raise self.error


def copy_range(
    conn: psycopg.Connection[Any],
    encoder: DocumentEncoder,
    sink: Sink,
    setup: WorkerSetup,
    task: RangeTask,
    wid: int,
    results: Any,
) -> tuple[int, int]:
    def report(rows: int, nbytes: int) -> None:
        results.put(("progress", wid, task.range_id, rows, nbytes))

    writer = _Writer(sink, task.attempt > 1, report)
    pgconn = conn.pgconn
    total_rows = total_bytes = 0
    try:
        pgconn.send_query(task.query.encode())
        res = pgconn.get_result()
        if res is None or res.status != pq.ExecStatus.COPY_OUT:
            raise _result_error(res, pgconn, setup.source_dsn)
        buf = bytearray()
        start = -1  # -1: the header has not been seen yet
        messages = 0
        while True:
            nbytes, data = pgconn.get_copy_data(0)
            if nbytes == -1:
                break
            if nbytes == -2:
                raise SourceConnectionLost(
                    f"reading COPY data failed: {clean(Exception(pgconn.get_error_message()), setup.source_dsn)}"
                )
            buf += data
            messages += 1
            if messages >= setup.batch_rows or len(buf) >= setup.batch_bytes:
                if start < 0:
                    start = header_length(buf)
                rows = _flush(encoder, buf, start, writer)
                total_rows += rows
                total_bytes += len(buf) - start
                buf, start, messages = bytearray(), 0, 0
        if start < 0 and buf:
            start = header_length(buf)
        if len(buf) > max(start, 0):
            total_rows += _flush(encoder, buf, start, writer)
            total_bytes += len(buf) - start
        # Drain the remaining results so the connection is idle for the next range.
        while True:
            res = pgconn.get_result()
            if res is None:
                break
            if res.status != pq.ExecStatus.COMMAND_OK:
                raise _result_error(res, pgconn, setup.source_dsn)
        writer.finish()
    except BaseException:
        writer.abandon()
        if pgconn.status == pq.ConnStatus.OK:
            _cancel(conn)
        raise
    return total_rows, total_bytes


def _flush(encoder: DocumentEncoder, buf: bytearray, start: int, writer: _Writer) -> int:
    batch = encoder.encode(buf, start)
    if batch.rows:
        writer.put(batch.documents(), batch.rows, batch.end - start)
    return batch.rows


def _result_error(res: pq.abc.PGresult | None, pgconn: pq.abc.PGconn, dsn: str) -> ParallelSyncError:
    if pgconn.status != pq.ConnStatus.OK:
        msg = pgconn.get_error_message().decode(errors="replace")
        return SourceConnectionLost(f"the connection to PostgreSQL was lost during COPY: {clean(Exception(msg), dsn)}")
    msg = res.get_error_message().decode(errors="replace") if res is not None else "no result"
    state = res.error_field(pq.DiagnosticField.SQLSTATE) if res is not None else None
    sqlstate = state.decode() if state else ""
    err = f"COPY failed: {clean(Exception(msg), dsn)}"
    if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"):
        return SourceConnectionLost(err)
    return SourceError(err)


def _cancel(conn: psycopg.Connection[Any]) -> None:
    """Stop a COPY still streaming so the connection can be reused or closed promptly."""
    try:
        conn.cancel_safe(timeout=5)
        pgconn = conn.pgconn
        # libpq wants the COPY stream read to its end (-1) before results can be collected.
        while pgconn.get_copy_data(0)[0] >= 0:
            pass
        while pgconn.get_result() is not None:
            pass
    except Exception:
        pass


__all__ = ["RangeTask", "WorkerSetup", "TargetUnavailable", "worker_main"]

"""One worker process: import the snapshot, then copy the ranges the coordinator hands it.

Per range, three threads pass batches along bounded queues (pipeline.py): a reader thread streams
`COPY (SELECT ...) TO STDOUT (FORMAT BINARY)` a batch at a time (one CopyData message per tuple;
the compiled read loop or psycopg's `get_copy_data`, source/readloop.py); the worker's main
thread transcodes each batch into BSON bytes (compiled kernels, which release the GIL); a writer
thread inserts them. So the server keeps sending while a batch is transcoded, and both overlap the
target's round trips. Each queue holds at most two batches, which bounds memory. Messages:
messages.py. How a worker dies with its coordinator, stops on SIGTERM and shows it is alive:
lifeline.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from parallelsync import logs
from parallelsync.errors import InternalError, ParallelSyncError, SourceLockTimeout
from parallelsync.source import copystream, readloop
from parallelsync.source.connect import classify, connect
from parallelsync.source.copystream import copy_batches
from parallelsync.source.locks import (
    DEFAULT_LOCK_TIMEOUT_S,
    UNKNOWN_CONFLICT,
    describe_conflict,
    set_lock_timeout,
)
from parallelsync.source.snapshot import import_snapshot
from parallelsync.targets import Sink, SinkSpec, open_sink
from parallelsync.transcode.checksum import Digest
from parallelsync.transcode.encoder import DocumentEncoder
from parallelsync.transcode.model import Layout
from parallelsync.transcode.oversize import SkippingEncoder
from parallelsync.transcode.warmup import warm
from parallelsync.workers import lifeline
from parallelsync.workers.messages import Done, Failed, Fatal, Progress, RangeTask, Ready
from parallelsync.workers.pipeline import WRITER_WAIT_S, Reader, Writer, writing

# Heartbeats while a range is held; the scheduler makes them more frequent for a short
# --stall-seconds (job/schedule.py).
DEFAULT_HEARTBEAT_S = 2.0


@dataclass(frozen=True)
class WorkerSetup:
    job_id: str
    source_dsn: str
    snapshot: str
    layout: Layout
    sink: SinkSpec
    batch_rows: int
    batch_bytes: int
    checksum: bool = False  # digest every document (for --verify checksum and `verify`)
    oversize: str = "fail"  # --oversize: "skip" leaves documents over 16 MiB out (oversize.py)
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S  # seconds a COPY may wait for its lock (0: ever)
    table: str = ""  # schema.table, for messages
    table_oid: int = 0  # to find who holds or waits for a lock on it
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_S
    log_format: str = "text"  # --log-format: the worker's own warnings (logs.py)


def internal_error(exc: BaseException, where: str) -> InternalError:
    """An unexpected exception as an error that keeps its traceback across the process boundary."""
    return InternalError(f"internal error {where}: {exc!r}", traceback.format_exc())


def worker_main(
    wid: int, setup: WorkerSetup, tasks: Any, results: Any, lifeline_r: Any = None
) -> None:
    """Entry point of a worker process (it creates all its clients itself)."""
    # The coordinator handles Ctrl-C for the whole job and stops workers itself (SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logs.configure(setup.log_format)
    lifeline.bind_to_coordinator(lifeline_r)
    lifeline.stop_on_sigterm()
    # Stopping: the range in hand has waited for its insert in flight (copy_range).
    with contextlib.suppress(lifeline.Stopping):
        serve(wid, setup, tasks, results)
        # Exiting anyway: a SIGTERM from now on would only break multiprocessing's exit (which
        # flushes our last messages) with a traceback. The pool SIGKILLs a worker that hangs.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if writing():
        # An insert did not return within WRITER_WAIT_S: tell the pool, which then watches the
        # temp collection for a late write before it reports it dropped (job/cleanup.py).
        os._exit(lifeline.EXIT_WRITE_IN_FLIGHT)


def serve(wid: int, setup: WorkerSetup, tasks: Any, results: Any) -> None:
    """Connect, import the snapshot, then copy the ranges handed over until told to stop."""
    try:
        # A broken transcoder is reported here, not hidden (the fork server's preload ignores
        # errors: its workers report them). Milliseconds: the kernels are compiled at install.
        warm()
        conn = connect(setup.source_dsn, autocommit=True)
        loop = readloop.choose()  # after connect: the C loop needs psycopg's libpq loaded
        import_snapshot(conn, setup.snapshot)
        set_lock_timeout(conn, setup.lock_timeout)
        sink = open_sink(setup.sink)
        # --oversize skip: same encode() interface, minus documents over 16 MiB.
        skip = setup.oversize == "skip"
        encoder = SkippingEncoder(setup.layout) if skip else DocumentEncoder(setup.layout)
    except ParallelSyncError as exc:
        results.put(Fatal(wid, exc))
        return
    except psycopg.Error as exc:
        results.put(Fatal(wid, classify(exc, setup.source_dsn, "importing the snapshot failed")))
        return
    except Exception as exc:  # report, never die silently
        results.put(Fatal(wid, internal_error(exc, "starting a worker")))
        return
    heart = lifeline.Heart(wid, results, setup.heartbeat_seconds)
    results.put(Ready(wid, os.getpid()))
    try:
        while True:
            task = tasks.get()
            if task is None:
                break
            start = time.monotonic()
            heart.range_id = task.range_id
            try:
                digest = Digest() if setup.checksum else None
                rows, nbytes = copy_range(
                    conn, encoder, sink, setup, task, wid, results, digest, loop
                )
            except SourceLockTimeout:
                results.put(Failed(wid, task.range_id, lock_timeout_error(conn, setup)))
                break  # the transaction is gone, and with it the snapshot
            except ParallelSyncError as exc:
                results.put(Failed(wid, task.range_id, exc))
                if exc.transient:
                    break  # the connection may be broken: the coordinator starts a fresh worker
                continue
            except Exception as exc:
                results.put(Failed(wid, task.range_id, internal_error(exc, "copying a range")))
                break
            finally:
                heart.range_id = None
            skipped, entries = encoder.take() if isinstance(encoder, SkippingEncoder) else (0, [])
            elapsed = time.monotonic() - start
            results.put(
                Done(wid, task.range_id, rows, nbytes, elapsed, digest, skipped, entries, loop)
            )
    finally:
        sink.close()
        copystream.close(conn)  # waits for a reader given up on to leave the C read loop


def lock_timeout_error(conn: psycopg.Connection[Any], setup: WorkerSetup) -> SourceLockTimeout:
    """The lock timeout as a message that names the session in the way, where it can be found."""
    try:
        conn.execute("ROLLBACK")  # the failed COPY aborted the transaction
        who = describe_conflict(conn, setup.table_oid)
    except psycopg.Error:
        who = UNKNOWN_CONFLICT
    return SourceLockTimeout(
        f"could not lock {setup.table or 'the table'} within {setup.lock_timeout:g} s: {who}, "
        "and this copy's reads queue behind it; cancel that statement or let the copy finish first"
    )


class Stopped(Exception):
    """A range given up by `copy_range`'s `stop`: nobody waits for its result any more."""


def warm_up() -> None:
    """The transcoder's start-up check, errors ignored: for the fork server's preload, whose
    workers run it again in serve() and report what fails."""
    with contextlib.suppress(Exception):
        warm()


def copy_range(
    conn: psycopg.Connection[Any],
    encoder: DocumentEncoder,
    sink: Sink,
    setup: WorkerSetup,
    task: RangeTask,
    wid: int,
    results: Any,
    digest: Digest | None = None,
    loop: readloop.ReadLoop | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[int, int]:
    """Copy one range into the sink; `stop` (a Dask task's: its future was cancelled, or its
    worker lost the scheduler) is asked before each batch and ends the range with `Stopped`."""

    def report(rows: int, nbytes: int) -> None:
        results.put(Progress(wid, task.range_id, rows, nbytes))

    sink.begin_range(task.range_id)
    writer = Writer(sink, task.attempt > 1, report)
    total_rows = total_bytes = 0
    reader = Reader(
        copy_batches(conn, task.query, setup.source_dsn, setup.batch_rows, setup.batch_bytes, loop)
    )
    try:
        for buf, start in reader:
            if stop is not None and stop():
                raise Stopped("the range was cancelled")
            batch = encoder.encode(buf, start)
            if batch.rows:
                if digest is not None:
                    digest.add_all(batch.documents())
                writer.put(batch, batch.end - start)
            total_rows += batch.rows
            total_bytes += len(buf) - start
        writer.finish()
        sink.end_range()  # durable before Done: the coordinator may assemble right after
    except BaseException:
        # Failed or stopped (SIGTERM): wait for the insert in flight, so that nothing this range
        # sent can land after the coordinator has moved on (dropped the temp collection).
        writer.abandon()
        writer.wait(WRITER_WAIT_S)
        raise
    finally:
        reader.stop()  # cancels a COPY still streaming
    return total_rows, total_bytes


__all__ = ["RangeTask", "WorkerSetup", "worker_main"]

"""One worker process: import the snapshot, then copy the ranges the coordinator hands it.

Per range, three threads pass batches along bounded queues (stages.py): a reader thread streams
`COPY (SELECT ...) TO STDOUT (FORMAT BINARY)` with libpq's `get_copy_data` (one message per tuple,
appended to a bytearray: the cheapest way psycopg offers); the worker's main thread transcodes each
batch into BSON bytes (numba kernels, which release the GIL); a writer thread inserts them. So the
server keeps sending while a batch is transcoded, and both overlap the MongoDB round trips. Each
queue holds at most two batches, which bounds memory.

Messages to the coordinator are plain tuples (cheap to pickle):
  ("ready", wid, pid) | ("progress", wid, range_id, rows, nbytes) |
  ("done", wid, range_id, rows, nbytes, seconds, digest) | ("failed", wid, range_id, error) |
  ("fatal", wid, error) | ("skipped", wid, range_id, count, [{_id, size}]) (--oversize skip,
  sent just before that range's "done")
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from parallelsync.checksum import Digest
from parallelsync.errors import (
    ParallelSyncError,
)
from parallelsync.oversize import SkippingEncoder
from parallelsync.source.connect import classify, connect
from parallelsync.source.copystream import copy_batches
from parallelsync.source.snapshot import import_snapshot
from parallelsync.stages import Reader, Writer
from parallelsync.target import bsonfile
from parallelsync.target.client import connect as mongo_connect
from parallelsync.target.sink import MongoSink, NullSink, Sink
from parallelsync.transcode.encoder import DocumentEncoder
from parallelsync.transcode.model import Layout


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
    checksum: bool = False  # digest every document (for --verify checksum and `verify`)
    oversize: str = "fail"  # --oversize: "skip" leaves documents over 16 MiB out (oversize.py)


@dataclass(frozen=True)
class RangeTask:
    range_id: int
    attempt: int
    query: str  # the complete COPY statement for this range


def worker_main(wid: int, setup: WorkerSetup, tasks: Any, results: Any) -> None:
    """Entry point of a worker process (it creates all its clients itself)."""
    # The coordinator handles Ctrl-C for the whole job and stops workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warm_up()  # a no-op in effect when forked from the warm fork server (pool.py)
    try:
        conn = connect(setup.source_dsn, autocommit=True)
        import_snapshot(conn, setup.snapshot)
        sink = make_sink(setup)
        # --oversize skip (issue 3): same encode() interface, minus documents over 16 MiB.
        skip = setup.oversize == "skip"
        encoder = SkippingEncoder(setup.layout) if skip else DocumentEncoder(setup.layout)
    except ParallelSyncError as exc:
        results.put(("fatal", wid, exc))
        return
    except psycopg.Error as exc:
        results.put(
            ("fatal", wid, classify(exc, setup.source_dsn, "importing the snapshot failed"))
        )
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
                digest = Digest() if setup.checksum else None
                rows, nbytes = copy_range(conn, encoder, sink, setup, task, wid, results, digest)
            except ParallelSyncError as exc:
                results.put(("failed", wid, task.range_id, exc))
                if exc.transient:
                    break  # the connection may be broken: the coordinator starts a fresh worker
                continue
            except Exception as exc:
                results.put(
                    ("failed", wid, task.range_id, ParallelSyncError(f"internal error: {exc!r}"))
                )
                break
            elapsed = time.monotonic() - start
            if isinstance(encoder, SkippingEncoder):  # --oversize skip (issue 3)
                skipped, entries = encoder.take()
                if skipped:
                    results.put(("skipped", wid, task.range_id, skipped, entries))
            results.put(("done", wid, task.range_id, rows, nbytes, elapsed, digest))
    finally:
        sink.close()
        conn.close()


def warm_up() -> None:
    """Load the kernels now (from numba's cache when spawned), not on the first batch."""
    try:
        from parallelsync.transcode.warmup import warm

        warm()
    except Exception:
        pass  # no numba, or it failed: the first batch shows what is wrong, or uses Python


def make_sink(setup: WorkerSetup) -> Sink:
    if setup.target_uri.startswith("null:"):
        return NullSink()
    if setup.target_uri.startswith(bsonfile.PREFIX):
        directory = bsonfile.target_dir(setup.target_uri)
        return bsonfile.FileSink(bsonfile.temp_dir(directory, setup.temp_collection))
    return MongoSink(mongo_connect(setup.target_uri), setup.db, setup.temp_collection)


def copy_range(
    conn: psycopg.Connection[Any],
    encoder: DocumentEncoder,
    sink: Sink,
    setup: WorkerSetup,
    task: RangeTask,
    wid: int,
    results: Any,
    digest: Digest | None = None,
) -> tuple[int, int]:
    def report(rows: int, nbytes: int) -> None:
        results.put(("progress", wid, task.range_id, rows, nbytes))

    sink.begin_range(task.range_id)
    writer = Writer(sink, task.attempt > 1, report)
    total_rows = total_bytes = 0
    reader = Reader(
        copy_batches(conn, task.query, setup.source_dsn, setup.batch_rows, setup.batch_bytes)
    )
    try:
        for buf, start in reader:
            total_rows += _flush(encoder, buf, start, writer, digest)
            total_bytes += len(buf) - start
        writer.finish()
        sink.end_range()  # durable before "done": the coordinator may assemble right after
    except BaseException:
        writer.abandon()
        raise
    finally:
        reader.stop()  # cancels a COPY still streaming
    return total_rows, total_bytes


def _flush(
    encoder: DocumentEncoder, buf: bytearray, start: int, writer: Writer, digest: Digest | None
) -> int:
    batch = encoder.encode(buf, start)
    if batch.rows:
        if digest is not None:
            digest.add_all(batch.documents())
        writer.put(batch, batch.end - start)
    return batch.rows


__all__ = ["RangeTask", "WorkerSetup", "worker_main"]

"""One range copy as a Dask task (--executor dask): what runs on the cluster's worker hosts.

The task does what a local worker does for one range (worker.py), on its own connection: it
imports the exported snapshot (`SET TRANSACTION SNAPSHOT` works from any host while the
coordinator's exporting transaction stays open), reads `pg_current_snapshot()` as its transaction
sees it, streams the range into the temp collection and returns a `Done` (or `Failed`) message;
it never raises, so Dask has nothing to retry or to log with the task's arguments (which carry
the connection strings). Progress and heartbeats travel as Dask events on the job's topic while
the range runs (dask_pool.py reads them).

A task stops at the next batch when its future was cancelled (the coordinator retried the range
elsewhere, or stopped the job) or when its worker lost the scheduler: no one would take its
result, and its writes must not outlive the job (job/cleanup.py watches for a late one).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from parallelsync import __version__, redact
from parallelsync.errors import (
    ExecutorMismatch,
    ParallelSyncError,
    SourceLockTimeout,
    WorkerDied,
)
from parallelsync.source import copystream, readloop
from parallelsync.source.connect import classify, connect
from parallelsync.source.locks import set_lock_timeout
from parallelsync.source.snapshot import import_snapshot
from parallelsync.targets import open_sink
from parallelsync.transcode import impl
from parallelsync.transcode.checksum import Digest
from parallelsync.transcode.encoder import DocumentEncoder
from parallelsync.transcode.oversize import SkippingEncoder
from parallelsync.transcode.warmup import warm
from parallelsync.workers.messages import Done, Failed, Heartbeat, Message, Progress, RangeTask
from parallelsync.workers.worker import (
    Stopped,
    WorkerSetup,
    copy_range,
    internal_error,
    lock_timeout_error,
)

# The states of a task on its worker in which nobody wants its result any more.
_UNWANTED = frozenset({"cancelled", "released", "forgotten"})


@dataclass(frozen=True)
class Sealed:
    """The job's WorkerSetup as a task argument: its repr shows no connection string, should a
    Dask log or dashboard print the task's arguments."""

    setup: WorkerSetup

    def __repr__(self) -> str:
        return f"<parallelsync setup of job {self.setup.job_id}>"


def versions() -> tuple[str, str]:
    """What must match between the coordinator and every worker: the documents depend on both."""
    return __version__, impl.IMPL


def worker_versions() -> dict[str, str]:
    """Run on every worker by the coordinator before the first range (dask_pool.py)."""
    version, transcoder = versions()
    return {"version": version, "transcoder": transcoder}


def mismatch(want: tuple[str, str], have: tuple[str, str], where: str) -> str | None:
    """The message for a worker whose versions differ from the coordinator's, or None."""
    if want == have:
        return None
    return (
        f"{where} runs parallelsync {have[0]} with the {have[1]!r} transcoder, the coordinator "
        f"parallelsync {want[0]} with {want[1]!r}: install the same version on every host "
        "(pip install 'parallelsync[dask]==VERSION'; the transcoder is built at install)"
    )


class Events:
    """The `results` of copy_range as Dask events: Progress and Heartbeat go to the job's topic
    (fire and forget: the worker batches them to the scheduler, the range never waits on it).
    `rows`/`nbytes` add up what was reported, so the coordinator can settle the difference if an
    event is still on its way when the result arrives."""

    def __init__(self, worker: Any, topic: str, attempt: int) -> None:
        self.worker = worker
        self.topic = topic
        self.attempt = attempt
        self.rows = self.nbytes = 0

    def put(self, msg: Message) -> None:
        if isinstance(msg, Progress):
            self.rows += msg.rows
            self.nbytes += msg.nbytes
            self.send("progress", msg.wid, msg.range_id, rows=msg.rows, nbytes=msg.nbytes)
        elif isinstance(msg, Heartbeat):
            self.send("beat", msg.wid, msg.range_id)

    def send(self, kind: str, wid: int, rid: int, **fields: Any) -> None:
        event = {"kind": kind, "wid": wid, "range": rid, "attempt": self.attempt, **fields}
        self.worker.log_event(self.topic, event)


class Beat:
    """Heartbeats while the range runs (lifeline.Heart's, but it ends with the task: a Dask
    worker runs many tasks in one process)."""

    def __init__(self, events: Events, wid: int, rid: int, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(events, wid, rid, interval), name="beat", daemon=True
        )
        self._thread.start()

    def _run(self, events: Events, wid: int, rid: int, interval: float) -> None:
        while not self._stop.wait(interval):
            events.put(Heartbeat(wid, rid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def unwanted(worker: Any, key: str) -> bool:
    """Nobody waits for this task's result: it was cancelled, or its worker lost the scheduler."""
    if worker.status.name != "running":
        return True
    ts = worker.state.tasks.get(key)
    return ts is None or ts.state in _UNWANTED


def run_range(
    sealed: Sealed, task: RangeTask, wid: int, want: tuple[str, str], topic: str
) -> tuple[Message, int, int]:
    """The task: copy one range; returns its Done or Failed message and the rows and bytes its
    Progress events reported."""
    from distributed import get_worker

    setup = sealed.setup
    redact.remember(setup.source_dsn, setup.sink.uri)  # no secret in any message of this process
    worker = get_worker()
    key = str(worker.get_current_task())
    events = Events(worker, topic, task.attempt)
    events.send("started", wid, task.range_id, worker=worker.address)
    try:
        return copy_one(setup, task, wid, want, events, lambda: unwanted(worker, key))
    finally:
        events.send("ended", wid, task.range_id)


def copy_one(
    setup: WorkerSetup,
    task: RangeTask,
    wid: int,
    want: tuple[str, str],
    events: Events,
    stop: Any,
) -> tuple[Message, int, int]:
    rid = task.range_id
    wrong = mismatch(want, versions(), "this Dask worker")
    if wrong:
        return Failed(wid, rid, ExecutorMismatch(wrong)), 0, 0
    start = time.monotonic()
    try:
        warm()
        conn = connect(setup.source_dsn, autocommit=True)
    except ParallelSyncError as exc:
        return Failed(wid, rid, exc), 0, 0
    except Exception as exc:
        return Failed(wid, rid, internal_error(exc, "starting a range on a Dask worker")), 0, 0
    beat = Beat(events, wid, rid, setup.heartbeat_seconds)
    sink = None
    try:
        loop = readloop.choose()  # after connect: the C loop needs psycopg's libpq loaded
        import_snapshot(conn, setup.snapshot)
        row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        seen = str(row[0]) if row else ""
        set_lock_timeout(conn, setup.lock_timeout)
        sink = open_sink(setup.sink)
        skip = setup.oversize == "skip"
        encoder = SkippingEncoder(setup.layout) if skip else DocumentEncoder(setup.layout)
        digest = Digest() if setup.checksum else None
        rows, nbytes = copy_range(
            conn, encoder, sink, setup, task, wid, events, digest, loop, stop=stop
        )
        skipped, entries = encoder.take() if isinstance(encoder, SkippingEncoder) else (0, [])
        elapsed = time.monotonic() - start
        done = Done(wid, rid, rows, nbytes, elapsed, digest, skipped, entries, loop, seen)
        return done, events.rows, events.nbytes
    except SourceLockTimeout:
        return Failed(wid, rid, lock_timeout_error(conn, setup)), 0, 0
    except ParallelSyncError as exc:
        return Failed(wid, rid, exc), 0, 0
    except psycopg.Error as exc:
        err = classify(exc, setup.source_dsn, "importing the snapshot failed")
        return Failed(wid, rid, err), 0, 0
    except Stopped as exc:  # nobody reads this one: the coordinator moved on
        return Failed(wid, rid, WorkerDied(str(exc))), 0, 0
    except Exception as exc:
        return Failed(wid, rid, internal_error(exc, "copying a range on a Dask worker")), 0, 0
    finally:
        beat.stop()
        if sink is not None:
            sink.close()
        copystream.close(conn)

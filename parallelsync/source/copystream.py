"""Streams `COPY ... TO STDOUT (FORMAT BINARY)` as batches of whole tuples.

libpq returns one CopyData message per tuple, so a batch of whole messages never splits a tuple.
Two loops collect them (readloop.py chooses): the compiled one reads a whole batch per call in C,
without the GIL (`parallelsync/_native`); psycopg's `get_copy_data`, one Python call per tuple
appended into a bytearray, is the cheapest way psycopg itself offers (its Copy iterator costs
~2.5x more per row) and the fallback. Both stop a batch at the same limits and fail alike.
"""

from __future__ import annotations

import selectors
import threading
import weakref
from collections.abc import Generator
from typing import Any

import psycopg
from psycopg import pq

from parallelsync.errors import (
    ParallelSyncError,
    SourceConnectionLost,
    SourceError,
    SourceLockTimeout,
)
from parallelsync.source import readloop
from parallelsync.source.connect import clean
from parallelsync.transcode.copybinary import header_length

# lock_timeout expired (source/locks.py sets it in every worker's transaction).
LOCK_NOT_AVAILABLE = "55P03"
# How long the C loop waits for a silent server before it lets close() in (milliseconds).
WAIT_MS = 200
# The lock each connection's C read loop holds while it is inside libpq (see close()).
_reading: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()


def copy_batches(
    conn: psycopg.Connection[Any],
    query: str,
    dsn: str,
    batch_rows: int,
    batch_bytes: int,
    loop: readloop.ReadLoop | None = None,
) -> Generator[tuple[bytearray, int], None, None]:
    """Yield (buffer, start): buffer[start:] holds whole tuples (the header is skipped).

    The last batch may end with the COPY trailer. Closing the generator early cancels the COPY so
    the connection stays usable. `loop` None: readloop.choose() picks it.
    """
    if loop is None:
        loop = readloop.choose()
    pgconn = conn.pgconn
    finished = False
    sel = selectors.DefaultSelector()
    try:
        sel.register(pgconn.socket, selectors.EVENT_READ)
        # The extended query protocol (no parameters): exactly one statement. The simple protocol
        # would run every statement in the string, and the query holds --where as written.
        pgconn.send_query_params(query.encode(), None)
        # The COPY may first wait for its table lock (behind DDL, up to lock_timeout): wait on the
        # socket, not in libpq's get_result, which would hold the GIL all that time and so stop
        # the worker's heartbeat and its SIGTERM handler.
        while pgconn.is_busy():
            _wait_readable(pgconn, sel, dsn)
        res = pgconn.get_result()
        if res is None or res.status != pq.ExecStatus.COPY_OUT:
            err = result_error(res, pgconn, dsn)
            # The statement is over: collect what is left, and send no cancel, which could
            # reach the server late and cancel the connection's next statement instead.
            while pgconn.status == pq.ConnStatus.OK and pgconn.get_result() is not None:
                pass
            finished = True
            raise err
        read = _read_c if loop == "c" else _read_python
        yield from read(pgconn, sel, dsn, batch_rows, batch_bytes)
        # Collect the final result so the connection is idle for the next statement.
        while True:
            res = pgconn.get_result()
            if res is None:
                break
            if res.status != pq.ExecStatus.COMMAND_OK:
                raise result_error(res, pgconn, dsn)
        finished = True
    finally:
        sel.close()
        if not finished and pgconn.status == pq.ConnStatus.OK:
            cancel(conn)


def _read_python(
    pgconn: pq.abc.PGconn, sel: selectors.BaseSelector, dsn: str, batch_rows: int, batch_bytes: int
) -> Generator[tuple[bytearray, int], None, None]:
    """psycopg's loop: one `get_copy_data` per message, up to COPY's end (-1)."""
    buf = bytearray()
    start = -1  # -1: the header has not been seen yet
    messages = 0
    get = pgconn.get_copy_data
    while True:
        # Non-blocking: libpq's blocking read keeps the GIL while it waits for the server,
        # which would stall the worker's other threads; wait on the socket without it.
        nbytes, data = get(1)
        if nbytes <= 0:
            if nbytes == 0:
                _wait_readable(pgconn, sel, dsn)
                continue
            if nbytes == -1:
                break
            raise _read_failed(pgconn, dsn)
        buf += data
        messages += 1
        if messages >= batch_rows or len(buf) >= batch_bytes:
            if start < 0:
                start = header_length(buf)
            readloop.stats["python"] += 1
            yield buf, start
            buf, start, messages = bytearray(), 0, 0
    if start < 0 and buf:
        start = header_length(buf)
    if len(buf) > max(start, 0):
        readloop.stats["python"] += 1
        yield buf, start


def _read_c(
    pgconn: pq.abc.PGconn, sel: selectors.BaseSelector, dsn: str, batch_rows: int, batch_bytes: int
) -> Generator[tuple[bytearray, int], None, None]:
    """The compiled loop: one call per batch, GIL released while it reads and waits (poll())."""
    from parallelsync._native import copyreader

    lock = _reading.setdefault(pgconn, threading.Lock())
    first = True
    while True:
        buf, messages = bytearray(), 0
        while True:
            # The loop holds libpq's raw pointer: close() waits for this lock, and the loop
            # returns every WAIT_MS while the server is silent, so close() never waits long.
            with lock:
                if pgconn.status != pq.ConnStatus.OK:  # closed meanwhile
                    raise SourceConnectionLost("reading COPY data failed: the connection is closed")
                got, n, status = copyreader.read_batch(
                    pgconn, batch_rows - messages, batch_bytes - len(buf), WAIT_MS
                )
            if status != copyreader.WAITING:
                break
            buf += got  # a silent server: keep what came and wait again, as one batch
            messages += n
        if status == copyreader.COPY_FAILED:
            raise _read_failed(pgconn, dsn)
        if status == copyreader.READ_FAILED:
            raise SourceConnectionLost(
                "reading COPY data failed: out of memory, or waiting on the socket failed"
            )
        buf = got if not buf else buf + got
        start = header_length(buf) if first and buf else 0
        first = first and not buf
        if len(buf) > start:
            readloop.stats["c"] += 1
            yield buf, start
        if status == copyreader.COPY_DONE:
            return


def close(conn: psycopg.Connection[Any]) -> None:
    """Close a connection that a reader thread may still be reading with the C loop (a reader
    given up on by pipeline.Reader.stop): wait until it is out of libpq, at most one WAIT_MS."""
    lock = _reading.get(conn.pgconn)
    if lock is None:
        conn.close()
        return
    with lock:
        conn.close()


def _read_failed(pgconn: pq.abc.PGconn, dsn: str) -> SourceConnectionLost:
    """libpq could not read the stream (get_copy_data -2, or consuming input failed)."""
    msg = _text(pgconn.get_error_message())
    return SourceConnectionLost(f"reading COPY data failed: {clean(Exception(msg), dsn)}")


def _wait_readable(pgconn: pq.abc.PGconn, sel: selectors.BaseSelector, dsn: str) -> None:
    """Block (GIL released) until the server sent more, then let libpq read it."""
    sel.select()
    try:
        pgconn.consume_input()
    except psycopg.Error as exc:
        raise SourceConnectionLost(f"reading COPY data failed: {clean(exc, dsn)}") from None


def result_error(res: pq.abc.PGresult | None, pgconn: pq.abc.PGconn, dsn: str) -> ParallelSyncError:
    if pgconn.status != pq.ConnStatus.OK:
        msg = _text(pgconn.get_error_message())
        return SourceConnectionLost(
            f"the connection to PostgreSQL was lost during COPY: {clean(Exception(msg), dsn)}"
        )
    msg = _text(res.get_error_message()) if res is not None else "no result"
    state = res.error_field(pq.DiagnosticField.SQLSTATE) if res is not None else None
    sqlstate = state.decode() if state else ""
    err = f"COPY failed: {clean(Exception(msg), dsn)}"
    if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"):
        return SourceConnectionLost(err)
    if sqlstate == LOCK_NOT_AVAILABLE:
        return SourceLockTimeout(err)
    return SourceError(err)


def _text(msg: str | bytes) -> str:
    # psycopg >= 3.2 returns str from get_error_message(); older versions returned bytes.
    return msg.decode(errors="replace") if isinstance(msg, bytes) else msg


def cancel(conn: psycopg.Connection[Any]) -> None:
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

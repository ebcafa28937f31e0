"""Streams `COPY ... TO STDOUT (FORMAT BINARY)` as batches of whole tuples.

libpq's `get_copy_data` returns one CopyData message per tuple; appending each into a bytearray is
the cheapest way psycopg offers to receive them (its Copy iterator costs ~2.5x more per
row). Because every message is a whole tuple, a batch never splits a tuple.
"""

from __future__ import annotations

import selectors
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
from parallelsync.source.connect import clean
from parallelsync.transcode.copybinary import header_length

# lock_timeout expired (source/locks.py sets it in every worker's transaction).
LOCK_NOT_AVAILABLE = "55P03"


def copy_batches(
    conn: psycopg.Connection[Any], query: str, dsn: str, batch_rows: int, batch_bytes: int
) -> Generator[tuple[bytearray, int], None, None]:
    """Yield (buffer, start): buffer[start:] holds whole tuples (the header is skipped).

    The last batch may end with the COPY trailer. Closing the generator early cancels the COPY so
    the connection stays usable.
    """
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
                msg = _text(pgconn.get_error_message())
                raise SourceConnectionLost(
                    f"reading COPY data failed: {clean(Exception(msg), dsn)}"
                )
            buf += data
            messages += 1
            if messages >= batch_rows or len(buf) >= batch_bytes:
                if start < 0:
                    start = header_length(buf)
                yield buf, start
                buf, start, messages = bytearray(), 0, 0
        if start < 0 and buf:
            start = header_length(buf)
        if len(buf) > max(start, 0):
            yield buf, start
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

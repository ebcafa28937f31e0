"""The C COPY read loop (parallelsync/_native) on psycopg's own connection, against psycopg's
`get_copy_data` loop on the same stream."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import pq

from parallelsync._native import copyreader

QUERY = (
    b"COPY (SELECT i, md5(i::text), i * 1.5::float8 FROM generate_series(1, %d) AS i) "
    b"TO STDOUT (FORMAT BINARY)"
)


def start_copy(conn: psycopg.Connection[Any], query: bytes) -> Any:
    pgconn = conn.pgconn
    pgconn.send_query(query)
    res = pgconn.get_result()
    assert res is not None and res.status == pq.ExecStatus.COPY_OUT
    return pgconn


def finish(pgconn: Any) -> list[pq.ExecStatus]:
    statuses = []
    while (res := pgconn.get_result()) is not None:
        statuses.append(res.status)
    return statuses


def python_loop(conn: psycopg.Connection[Any], rows: int) -> tuple[bytes, int]:
    pgconn = start_copy(conn, QUERY % rows)
    out, messages = bytearray(), 0
    while (got := pgconn.get_copy_data(0))[0] > 0:
        out += got[1]
        messages += 1
    assert finish(pgconn) == [pq.ExecStatus.COMMAND_OK]
    return bytes(out), messages


def test_the_loop_is_available() -> None:
    assert copyreader.available() is None


def test_same_bytes_as_psycopg_in_bounded_batches(pg_conn: psycopg.Connection[Any]) -> None:
    expected, expected_messages = python_loop(pg_conn, 5000)
    pgconn = start_copy(pg_conn, QUERY % 5000)
    chunks, statuses, counts = [], [], []
    while True:
        buf, messages, status = copyreader.read_batch(pgconn, 700, 1 << 20)
        chunks.append(bytes(buf))
        counts.append(messages)
        statuses.append(status)
        if status != copyreader.BATCH_FULL:
            break
    assert b"".join(chunks) == expected
    assert sum(counts) == expected_messages and max(counts) == 700
    assert statuses[-1] == copyreader.COPY_DONE and set(statuses[:-1]) == {copyreader.BATCH_FULL}
    assert finish(pgconn) == [pq.ExecStatus.COMMAND_OK]
    assert pg_conn.execute("SELECT 42").fetchone() == (42,)  # the connection is idle again


def test_byte_limit(pg_conn: psycopg.Connection[Any]) -> None:
    pgconn = start_copy(pg_conn, QUERY % 2000)
    buf, messages, status = copyreader.read_batch(pgconn, 1_000_000, 4096)
    assert status == copyreader.BATCH_FULL and 4096 <= len(buf) < 4096 + 200 and messages > 1
    while copyreader.read_batch(pgconn, 1_000_000, 1 << 20)[2] == copyreader.BATCH_FULL:
        pass
    assert finish(pgconn) == [pq.ExecStatus.COMMAND_OK]


def test_a_failing_copy_reports_the_error(pg_conn: psycopg.Connection[Any]) -> None:
    query = (
        b"COPY (SELECT 1 / (i - 3000) FROM generate_series(1, 5000) AS i) TO STDOUT (FORMAT BINARY)"
    )
    pgconn = start_copy(pg_conn, query)
    total = 0
    while True:
        _buf, messages, status = copyreader.read_batch(pgconn, 100, 1 << 20)
        total += messages
        if status != copyreader.BATCH_FULL:
            break
    # the server fails the COPY after the rows before the division by zero
    assert status == copyreader.COPY_DONE and total < 3000
    assert finish(pgconn) == [pq.ExecStatus.FATAL_ERROR]


@pytest.mark.parametrize("rows", [0, 1])
def test_tiny_copies(pg_conn: psycopg.Connection[Any], rows: int) -> None:
    expected, _ = python_loop(pg_conn, rows)
    pgconn = start_copy(pg_conn, QUERY % rows)
    buf, _messages, status = copyreader.read_batch(pgconn, 10_000, 1 << 23)
    assert (bytes(buf), status) == (expected, copyreader.COPY_DONE)
    assert finish(pgconn) == [pq.ExecStatus.COMMAND_OK]


def _low_water_of(pgconn: Any) -> int:
    import os
    import socket

    with socket.socket(fileno=os.dup(pgconn.socket)) as sock:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)


def test_rows_before_a_pause_arrive_without_waiting_for_the_low_water_mark(
    pg_conn: psycopg.Connection[Any],
) -> None:
    # The server is silent at first (the loop is already waiting when rows come), then sends
    # ~16 KiB of rows (its 8 KiB sends before row 400: below the loop's 64 KiB low-water mark)
    # and sleeps again: those rows must come back by the WAITING return after 1 s of silence,
    # not be held until more bytes pile up behind them.
    assert copyreader.LOW_WATER > 24 * 1024
    query = (
        b"COPY (SELECT i, md5(i::text), CASE WHEN i = 1 THEN pg_sleep(0.3) "
        b"WHEN i = 400 THEN pg_sleep(2) END "
        b"FROM generate_series(1, 800) AS i) TO STDOUT (FORMAT BINARY)"
    )
    pgconn = start_copy(pg_conn, query)
    _buf, messages, status = copyreader.read_batch(pgconn, 10_000, 1 << 20, 1000)
    assert status == copyreader.WAITING
    assert messages >= 200  # what the server sent before its second pause
    assert _low_water_of(pgconn) == 1  # psycopg's own waits wake for any byte again
    total = messages
    while status != copyreader.COPY_DONE:
        _buf, messages, status = copyreader.read_batch(pgconn, 10_000, 1 << 20, 1000)
        total += messages
    assert total == 801  # the rows and the trailer
    assert finish(pgconn) == [pq.ExecStatus.COMMAND_OK]
    assert _low_water_of(pgconn) == 1
    assert pg_conn.execute("SELECT 42").fetchone() == (42,)

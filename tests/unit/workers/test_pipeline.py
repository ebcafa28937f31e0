"""The reader thread: everything in order, errors reach the consumer, stop() closes the stream."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator

import pytest

from parallelsync.errors import SourceConnectionLost
from parallelsync.workers.pipeline import DEPTH, Reader


def numbered(n: int, closed: list[str]) -> Generator[tuple[bytearray, int], None, None]:
    try:
        for i in range(n):
            yield bytearray(str(i).encode()), 0
    finally:
        closed.append(threading.current_thread().name)


def test_every_batch_arrives_in_order() -> None:
    closed: list[str] = []
    reader = Reader(numbered(50, closed))
    assert [bytes(buf) for buf, _ in reader] == [str(i).encode() for i in range(50)]
    reader.stop()
    assert closed == ["reader"]


def test_an_error_while_reading_reaches_the_consumer_after_the_batches_before_it() -> None:
    def failing() -> Generator[tuple[bytearray, int], None, None]:
        yield bytearray(b"a"), 0
        raise SourceConnectionLost("the connection to PostgreSQL was lost during COPY")

    reader = Reader(failing())
    got = []
    with pytest.raises(SourceConnectionLost, match="lost during COPY"):
        for buf, _ in reader:
            got.append(bytes(buf))
    assert got == [b"a"]
    reader.stop()


def test_stop_closes_a_stream_that_is_still_producing() -> None:
    closed: list[str] = []
    reader = Reader(numbered(10_000, closed))
    first = next(iter(reader))
    assert bytes(first[0]) == b"0"
    time.sleep(0.2)  # the reader fills its queue and waits
    assert reader._queue.qsize() == DEPTH
    started = time.monotonic()
    reader.stop()
    assert time.monotonic() - started < 2
    assert closed == ["reader"]  # the generator's cleanup (cancelling the COPY) ran in the reader
    assert not reader._thread.is_alive()

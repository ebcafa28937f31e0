"""The slot's change stream over the replication protocol (COPY BOTH), with standby feedback.

A psycopg (>= 3.3) connection opened with `replication="database"` runs `START_REPLICATION SLOT
s LOGICAL lsn (...)`; the server then sends CopyData messages: XLogData (`w`: one pgoutput
message each) and primary keepalives (`k`). The client answers with standby status updates
(`r`) carrying the position it has made durable; the server drops the connection when it hears
nothing for `wal_sender_timeout`, and the slot keeps WAL from the last confirmed position on.

This module only moves bytes and positions: what counts as durable is the caller's decision
(`confirm`), and the stream never reports a flush position beyond it.
"""

from __future__ import annotations

import selectors
import struct
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq, sql

from parallelsync.errors import SourceConnectionLost, SourceError
from parallelsync.source.connect import clean, connect

# Microseconds between the Unix epoch and PostgreSQL's (2000-01-01), for the clock fields.
_PG_EPOCH_US = 946_684_800_000_000
_XLOG = struct.Struct("!QQq")  # after 'w': data start, WAL end, server clock
_KEEPALIVE = struct.Struct("!QqB")  # after 'k': WAL end, server clock, reply requested
_STATUS = struct.Struct("!cQQQqB")  # 'r', written, flushed, applied, client clock, reply
# Feedback at least this often even with a long wal_sender_timeout: the server shows our
# position (pg_stat_replication) and the slot's confirmed_flush_lsn follows within seconds.
MAX_STATUS_INTERVAL_S = 10.0
# binary 'true' (PG 14+) sends values in their send format, the bytes COPY BINARY sends.
BINARY_SINCE = 140000


def parse_lsn(text: str) -> int:
    hi, _, lo = text.partition("/")
    try:
        return (int(hi, 16) << 32) | int(lo, 16)
    except ValueError:
        raise SourceError(f"not an LSN: {text!r} (expected the form 16/B374D848)") from None


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _now_us() -> int:
    return time.time_ns() // 1000 - _PG_EPOCH_US


def unix_seconds(pg_clock_us: int) -> float:
    """A server clock field (a commit time, a keepalive's clock) as Unix seconds."""
    return (pg_clock_us + _PG_EPOCH_US) / 1e6


@dataclass(frozen=True, slots=True)
class XLogData:
    start: int  # the LSN of the change (for a commit: the commit's end LSN)
    end: int
    payload: bytes  # one pgoutput message


@dataclass(frozen=True, slots=True)
class Keepalive:
    end: int  # the server's position: every transaction committed before it was sent
    reply: bool  # the server wants a status update now (it is about to time us out)
    clock: int = 0  # the server's clock when it sent it (microseconds since 2000-01-01)


def status_interval(wal_sender_timeout_ms: int) -> float:
    """Seconds between status updates: well within the server's timeout (0 = no timeout)."""
    if wal_sender_timeout_ms <= 0:
        return MAX_STATUS_INTERVAL_S
    return min(MAX_STATUS_INTERVAL_S, wal_sender_timeout_ms / 1000 / 4)


class ReplicationStream:
    def __init__(self, dsn: str, slot: str, publication: str, *, application_name: str) -> None:
        self._dsn = dsn
        self.slot = slot
        self.publication = publication
        self._app = application_name
        self._conn: psycopg.Connection[Any] | None = None
        self._sel: selectors.BaseSelector | None = None
        self.flushed = 0  # the position the caller made durable: what the server is told
        self.interval = MAX_STATUS_INTERVAL_S
        self._last_status = 0.0
        self.server_version = 0
        self._next: XLogData | Keepalive | None = None  # read ahead by `ready`

    def open(self, start_lsn: int) -> None:
        conn = connect(
            self._dsn, autocommit=True, replication="database", application_name=self._app
        )
        self._conn = conn
        self.server_version = conn.info.server_version
        row = conn.execute("SHOW wal_sender_timeout").fetchone()
        self.interval = status_interval(_milliseconds(str(row[0]) if row else "60s"))
        opts = [
            sql.SQL("proto_version '1'"),
            sql.SQL("publication_names {}").format(sql.Literal(_quoted_name(self.publication))),
        ]
        if self.server_version >= BINARY_SINCE:
            opts += [sql.SQL("binary 'true'"), sql.SQL("messages 'true'")]
        query = sql.SQL("START_REPLICATION SLOT {} LOGICAL {} ({})").format(
            sql.Identifier(self.slot), sql.SQL(format_lsn(start_lsn)), sql.SQL(", ").join(opts)
        )
        try:
            cur = conn.execute(query)
        except psycopg.Error as exc:
            conn.close()
            self._conn = None
            raise SourceError(
                f"cannot stream replication slot {self.slot!r}: {clean(exc, self._dsn)}"
            ) from None
        if cur.pgresult is None or cur.pgresult.status != pq.ExecStatus.COPY_BOTH:
            conn.close()
            self._conn = None
            raise SourceError(f"START_REPLICATION on slot {self.slot!r} did not start a stream")
        self.flushed = start_lsn
        self._sel = selectors.DefaultSelector()
        self._sel.register(conn.pgconn.socket, selectors.EVENT_READ)
        self._last_status = time.monotonic()

    @property
    def binary(self) -> bool:
        return self.server_version >= BINARY_SINCE

    def read(self, timeout: float) -> XLogData | Keepalive | None:
        """The next message, or None when nothing came within `timeout` seconds.

        Sends the periodic status update when it is due, and answers a keepalive that asks for
        one at once."""
        assert self._conn is not None and self._sel is not None
        if self._next is not None:
            self._status_if_due()
            ahead, self._next = self._next, None
            return ahead
        deadline = time.monotonic() + timeout
        while True:
            self._status_if_due()
            msg = self._take()
            if msg is not None:
                return msg
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            wait = min(left, max(0.0, self._last_status + self.interval - time.monotonic()))
            if self._sel.select(wait):
                self._consume()

    def ready(self) -> bool:
        """Whether a message can be read now, without waiting (what the socket already holds):
        follow writes the transactions applied so far once this says no (group commit)."""
        assert self._conn is not None and self._sel is not None
        if self._next is None:
            self._next = self._take()
        if self._next is None and self._sel.select(0):
            self._consume()
            self._next = self._take()
        return self._next is not None

    def _take(self) -> XLogData | Keepalive | None:
        """The next message libpq has buffered, or None (non-blocking)."""
        assert self._conn is not None
        pgconn = self._conn.pgconn
        nbytes, data = pgconn.get_copy_data(1)  # non-blocking: wait on the socket instead
        if nbytes > 0:
            msg = self._parse(bytes(data))
            if isinstance(msg, Keepalive) and msg.reply:
                self.send_status()
            return msg
        if nbytes == -1:
            raise SourceConnectionLost(f"the replication stream of slot {self.slot!r} ended")
        if nbytes < -1:
            raise SourceConnectionLost(
                f"reading the replication stream failed: {self._error(pgconn)}"
            )
        return None

    def _consume(self) -> None:
        assert self._conn is not None
        try:
            self._conn.pgconn.consume_input()
        except psycopg.Error as exc:
            raise SourceConnectionLost(
                f"reading the replication stream failed: {clean(exc, self._dsn)}"
            ) from None

    def _parse(self, data: bytes) -> XLogData | Keepalive:
        kind = data[:1]
        if kind == b"w":
            start, end, _clock = _XLOG.unpack_from(data, 1)
            return XLogData(start, end, data[1 + _XLOG.size :])
        if kind == b"k":
            end, clock, reply = _KEEPALIVE.unpack_from(data, 1)
            return Keepalive(end, bool(reply), clock)
        raise SourceError(f"unexpected replication message type {kind!r}")

    def confirm(self, lsn: int) -> None:
        """Everything up to `lsn` is durable in the target: tell the server (never more)."""
        if lsn > self.flushed:
            self.flushed = lsn
            self.send_status()

    def send_status(self, *, reply: bool = False) -> None:
        """A standby status update; `reply` asks the server for a keepalive (its position)."""
        assert self._conn is not None
        pos = self.flushed
        msg = _STATUS.pack(b"r", pos, pos, pos, _now_us(), 1 if reply else 0)
        pgconn = self._conn.pgconn
        try:
            if pgconn.put_copy_data(msg) != 1 or pgconn.flush() != 0:
                raise SourceConnectionLost(
                    f"sending feedback on the replication stream failed: {self._error(pgconn)}"
                )
        except psycopg.Error as exc:
            raise SourceConnectionLost(
                f"sending feedback on the replication stream failed: {clean(exc, self._dsn)}"
            ) from None
        self._last_status = time.monotonic()

    def _status_if_due(self) -> None:
        if time.monotonic() - self._last_status >= self.interval:
            self.send_status()

    def _error(self, pgconn: pq.abc.PGconn) -> str:
        msg = pgconn.get_error_message()
        text = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
        return clean(Exception(text), self._dsn)

    def close(self) -> None:
        if self._sel is not None:
            self._sel.close()
            self._sel = None
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def _quoted_name(name: str) -> str:
    """publication_names is a comma-separated list of identifiers: quote the one name."""
    return '"' + name.replace('"', '""') + '"'


def _milliseconds(setting: str) -> int:
    """A SHOW value such as '60s', '1min', '500ms' or '0' in milliseconds."""
    units = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
    digits = setting.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = setting[len(digits) :] or "ms"
    try:
        return int(float(digits) * units.get(unit, 1))
    except ValueError:
        return 60_000

"""The pgoutput logical replication protocol, version 1: bytes in, typed messages out. Pure.

Message formats: PostgreSQL docs, "Logical Replication Message Formats". Integers are
big-endian; strings are NUL-terminated. A tuple is an int16 column count and per column a kind
byte: `n` NULL, `u` unchanged TOASTed value (not sent: the row kept it), `t` text or `b` binary
(then an int32 length and the bytes). With `binary 'true'` a value is the type's send format,
the bytes COPY BINARY carries for it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from parallelsync.errors import SourceError

_I16 = struct.Struct("!h").unpack_from
_I32 = struct.Struct("!i").unpack_from
_U32 = struct.Struct("!I").unpack_from
_I64 = struct.Struct("!q").unpack_from
_U64 = struct.Struct("!Q").unpack_from

NULL, UNCHANGED, TEXT, BINARY = "n", "u", "t", "b"


@dataclass(frozen=True, slots=True)
class Value:
    kind: str  # NULL, UNCHANGED, TEXT or BINARY
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # the commit record's LSN
    commit_time: int  # µs since 2000-01-01
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # the end of the commit record: the position to confirm once applied
    commit_time: int


@dataclass(frozen=True, slots=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelColumn:
    flags: int  # 1: part of the replica identity (the key)
    name: str
    type_oid: int
    typmod: int

    @property
    def is_key(self) -> bool:
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    relid: int
    namespace: str
    name: str
    replica_identity: str  # d default (primary key), n nothing, f full, i index
    columns: tuple[RelColumn, ...]


@dataclass(frozen=True, slots=True)
class TypeMsg:
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relid: int
    new: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Update:
    relid: int
    new: tuple[Value, ...]
    # The old row: "K" its key columns (others NULL), sent when the key changed; "O" the whole
    # row (REPLICA IDENTITY FULL); "" none (the key did not change).
    old_kind: str = ""
    old: tuple[Value, ...] | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    relid: int
    old_kind: str  # "K" or "O", as for Update
    old: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Truncate:
    options: int  # 1 CASCADE, 2 RESTART IDENTITY
    relids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Decoded = (
    Begin | Commit | Origin | Relation | TypeMsg | Insert | Update | Delete | Truncate | Message
)


class DecodeError(SourceError):
    """A pgoutput message that does not follow the protocol (truncated, unknown kind)."""


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise DecodeError(f"pgoutput string at byte {pos} has no terminator")
    return buf[pos:end].decode(), end + 1


def read_tuple(buf: bytes, pos: int) -> tuple[tuple[Value, ...], int]:
    (n,) = _I16(buf, pos)
    pos += 2
    values: list[Value] = []
    for _ in range(n):
        kind = chr(buf[pos])
        pos += 1
        if kind in (TEXT, BINARY):
            (length,) = _I32(buf, pos)
            pos += 4
            if pos + length > len(buf):
                raise DecodeError(f"pgoutput value at byte {pos} runs past the message end")
            values.append(Value(kind, buf[pos : pos + length]))
            pos += length
        elif kind == NULL:
            values.append(_NULL)
        elif kind == UNCHANGED:
            values.append(_UNCHANGED)
        else:
            raise DecodeError(f"unknown pgoutput tuple value kind {kind!r} at byte {pos - 1}")
    return tuple(values), pos


_NULL = Value(NULL)
_UNCHANGED = Value(UNCHANGED)


def _relation(msg: bytes) -> Relation:
    (relid,) = _U32(msg, 1)
    nsp, pos = _cstring(msg, 5)
    name, pos = _cstring(msg, pos)
    ident = chr(msg[pos])
    (ncols,) = _I16(msg, pos + 1)
    pos += 3
    cols = []
    for _ in range(ncols):
        flags = msg[pos]
        col, pos = _cstring(msg, pos + 1)
        oid, typmod = _U32(msg, pos)[0], _I32(msg, pos + 4)[0]
        pos += 8
        cols.append(RelColumn(flags, col, oid, typmod))
    return Relation(relid, nsp, name, ident, tuple(cols))


def _update(msg: bytes) -> Update:
    (relid,) = _U32(msg, 1)
    pos = 5
    marker = chr(msg[pos])
    old_kind, old = "", None
    if marker in ("K", "O"):
        old_kind = marker
        old, pos = read_tuple(msg, pos + 1)
        marker = chr(msg[pos])
    if marker != "N":
        raise DecodeError(f"pgoutput Update: expected the new tuple ('N'), got {marker!r}")
    new, _ = read_tuple(msg, pos + 1)
    return Update(relid, new, old_kind, old)


def _delete(msg: bytes) -> Delete:
    (relid,) = _U32(msg, 1)
    marker = chr(msg[5])
    if marker not in ("K", "O"):
        raise DecodeError(f"pgoutput Delete: expected the old tuple ('K' or 'O'), got {marker!r}")
    old, _ = read_tuple(msg, 6)
    return Delete(relid, marker, old)


def _insert(msg: bytes) -> Insert:
    (relid,) = _U32(msg, 1)
    if msg[5:6] != b"N":
        raise DecodeError(f"pgoutput Insert: expected the new tuple ('N'), got {msg[5:6]!r}")
    new, _ = read_tuple(msg, 6)
    return Insert(relid, new)


def _truncate(msg: bytes) -> Truncate:
    (n,) = _I32(msg, 1)
    options = msg[5]
    return Truncate(options, tuple(_U32(msg, 6 + 4 * i)[0] for i in range(n)))


def _message(msg: bytes) -> Message:
    flags = msg[1]
    (lsn,) = _U64(msg, 2)
    prefix, pos = _cstring(msg, 10)
    (length,) = _I32(msg, pos)
    return Message(bool(flags & 1), lsn, prefix, msg[pos + 4 : pos + 4 + length])


def decode(msg: bytes) -> Decoded:
    """One pgoutput message (the payload of one XLogData)."""
    if not msg:
        raise DecodeError("empty pgoutput message")
    kind = msg[:1]
    try:
        if kind == b"B":
            return Begin(_U64(msg, 1)[0], _I64(msg, 9)[0], _U32(msg, 17)[0])
        if kind == b"C":
            return Commit(msg[1], _U64(msg, 2)[0], _U64(msg, 10)[0], _I64(msg, 18)[0])
        if kind == b"I":
            return _insert(msg)
        if kind == b"U":
            return _update(msg)
        if kind == b"D":
            return _delete(msg)
        if kind == b"R":
            return _relation(msg)
        if kind == b"T":
            return _truncate(msg)
        if kind == b"M":
            return _message(msg)
        if kind == b"Y":
            oid = _U32(msg, 1)[0]
            nsp, pos = _cstring(msg, 5)
            name, _ = _cstring(msg, pos)
            return TypeMsg(oid, nsp, name)
        if kind == b"O":
            lsn = _U64(msg, 1)[0]
            name, _ = _cstring(msg, 9)
            return Origin(lsn, name)
    except (struct.error, IndexError) as exc:
        raise DecodeError(
            f"truncated pgoutput {kind.decode(errors='replace')!r} message: {exc}"
        ) from None
    raise DecodeError(f"unknown pgoutput message type {kind!r} (only protocol version 1 is read)")

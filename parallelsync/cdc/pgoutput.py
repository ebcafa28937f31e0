"""A small decoder for the pgoutput logical replication protocol (version 1).

Only what parallelsync needs from a change stream: which rows changed (their key columns, in
text form) and whether the table was truncated. Values other than the key are not decoded: the
changed rows are re-read from the new snapshot through the same transcoder as the copy, so a
change is applied with exactly the bytes a fresh copy would write.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

_I16 = struct.Struct("!h").unpack_from
_I32 = struct.Struct("!i").unpack_from
_U32 = struct.Struct("!I").unpack_from


@dataclass
class Relation:
    relid: int
    namespace: str
    name: str
    columns: list[str]


@dataclass
class KeyChanges:
    """Keys of rows inserted, updated or deleted, as tuples of text values (None for NULL)."""

    keys: set[tuple[str | None, ...]] = field(default_factory=set)
    truncated: bool = False
    messages: int = 0


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\x00", pos)
    return buf[pos:end].decode(), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[list[str | None], int]:
    (n,) = _I16(buf, pos)
    pos += 2
    values: list[str | None] = []
    for _ in range(n):
        kind = buf[pos : pos + 1]
        pos += 1
        if kind in (b"t", b"b"):
            (length,) = _I32(buf, pos)
            pos += 4
            values.append(buf[pos : pos + length].decode())
            pos += length
        else:  # b"n" NULL, b"u" unchanged TOAST value (never a key column)
            values.append(None)
    return values, pos


class KeyCollector:
    """Feed pgoutput messages; collects the key of every changed row of the relations `relids`
    (the copied table, its partitions or the children it reads). A publication may cover other
    tables, and one transaction may change several: their rows are not the table's."""

    def __init__(self, key: tuple[str, ...], relids: frozenset[int]) -> None:
        self.key = key
        self.relids = relids
        self.relations: dict[int, Relation] = {}
        self.changes = KeyChanges()

    def _add(self, relid: int, values: list[str | None]) -> None:
        if relid in self.relids:
            self.changes.keys.add(self._key_of(relid, values))

    def _key_of(self, relid: int, values: list[str | None]) -> tuple[str | None, ...]:
        rel = self.relations[relid]
        idx = [rel.columns.index(k) for k in self.key]
        return tuple(values[i] for i in idx)

    def feed(self, msg: bytes) -> None:
        self.changes.messages += 1
        kind = msg[:1]
        if kind == b"R":
            (relid,) = _U32(msg, 1)
            nsp, pos = _cstring(msg, 5)
            name, pos = _cstring(msg, pos)
            pos += 1  # replica identity
            (ncols,) = _I16(msg, pos)
            pos += 2
            cols = []
            for _ in range(ncols):
                pos += 1  # flags
                col, pos = _cstring(msg, pos)
                pos += 8  # type oid, typmod
                cols.append(col)
            self.relations[relid] = Relation(relid, nsp, name, cols)
        elif kind == b"I":
            (relid,) = _U32(msg, 1)
            values, _ = _tuple(msg, 6)  # after relid and the 'N' marker
            self._add(relid, values)
        elif kind == b"U":
            (relid,) = _U32(msg, 1)
            pos = 5
            if msg[pos : pos + 1] in (b"K", b"O"):
                old, pos = _tuple(msg, pos + 1)
                self._add(relid, old)
            new, _ = _tuple(msg, pos + 1)
            self._add(relid, new)
        elif kind == b"D":
            (relid,) = _U32(msg, 1)
            old, _ = _tuple(msg, 6)
            self._add(relid, old)
        elif kind == b"T":
            (nrels,) = _U32(msg, 1)  # then one byte of options, then the relids
            truncated = {_U32(msg, 6 + 4 * i)[0] for i in range(nrels)}
            self.changes.truncated = self.changes.truncated or bool(truncated & self.relids)
        # B (begin), C (commit), O (origin), Y (type), M (message): nothing to collect

"""The full pgoutput v1 decoder (cdc/decode.py) on golden bytes built by hand from the protocol
spec (PostgreSQL docs, "Logical Replication Message Formats"), and the stream's framing helpers.

Each message is written out field by field (`_msg`), so a reader can check it against the spec;
the first Insert is also given as the literal bytes a PostgreSQL 15 server sent for
`INSERT INTO t VALUES (1, 'a', '\\x0102')` (binary 'true'), captured with cdc/stream.py.
"""

from __future__ import annotations

import struct

import pytest

from parallelsync.cdc.decode import (
    Begin,
    Commit,
    DecodeError,
    Delete,
    Insert,
    Message,
    Origin,
    Relation,
    RelColumn,
    Truncate,
    TypeMsg,
    Update,
    Value,
    decode,
)
from parallelsync.cdc.stream import format_lsn, parse_lsn, status_interval


def _msg(*parts: bytes | str | tuple[str, int]) -> bytes:
    """Concatenate fields: bytes as is, str as a NUL-terminated string, (fmt, n) packed."""
    out = b""
    for p in parts:
        if isinstance(p, bytes):
            out += p
        elif isinstance(p, str):
            out += p.encode() + b"\x00"
        else:
            out += struct.pack("!" + p[0], p[1])
    return out


def _tuple(*values: tuple[str, bytes] | str) -> bytes:
    out = struct.pack("!h", len(values))
    for v in values:
        if isinstance(v, str):  # "n" or "u"
            out += v.encode()
        else:
            kind, data = v
            out += kind.encode() + struct.pack("!i", len(data)) + data
    return out


INT4_1 = b"\x00\x00\x00\x01"
# From a PostgreSQL 15 server: Insert into relid 0x4002, (int4 1, text 'a', bytea \x0102).
SERVER_INSERT = (
    b"I\x00\x00@\x02N\x00\x03b\x00\x00\x00\x04\x00\x00\x00\x01b\x00\x00\x00\x01a"
    b"b\x00\x00\x00\x02\x01\x02"
)


def test_begin_commit_origin() -> None:
    begin = _msg(b"B", ("Q", 0x1_924C68), ("q", 757_000_000_123), ("I", 728))
    assert decode(begin) == Begin(0x1_924C68, 757_000_000_123, 728)
    commit = _msg(b"C", ("B", 0), ("Q", 0x1_924C68), ("Q", 0x1_924DF8), ("q", 5))
    assert decode(commit) == Commit(0, 0x1_924C68, 0x1_924DF8, 5)
    assert decode(_msg(b"O", ("Q", 77), "node_a")) == Origin(77, "node_a")


def test_relation_and_type() -> None:
    rel = _msg(
        b"R", ("I", 0x4002), "public", "t", b"d", ("h", 3),
        ("B", 1), "id", ("I", 23), ("i", -1),
        ("B", 0), "v", ("I", 1043), ("i", 24),
        ("B", 0), "b", ("I", 17), ("i", -1),
    )  # fmt: skip
    assert decode(rel) == Relation(
        0x4002,
        "public",
        "t",
        "d",
        (RelColumn(1, "id", 23, -1), RelColumn(0, "v", 1043, 24), RelColumn(0, "b", 17, -1)),
    )
    assert [c.is_key for c in decode(rel).columns] == [True, False, False]  # type: ignore[union-attr]
    assert decode(_msg(b"Y", ("I", 16400), "public", "mood")) == TypeMsg(16400, "public", "mood")


def test_insert_binary_text_null() -> None:
    built = _msg(b"I", ("I", 0x4002), b"N", _tuple(("b", INT4_1), ("b", b"a"), ("b", b"\x01\x02")))
    assert built == SERVER_INSERT
    assert decode(SERVER_INSERT) == Insert(
        0x4002, (Value("b", INT4_1), Value("b", b"a"), Value("b", b"\x01\x02"))
    )
    text = _msg(b"I", ("I", 9), b"N", _tuple(("t", b"42"), "n", ("t", b"")))
    assert decode(text) == Insert(9, (Value("t", b"42"), Value("n"), Value("t", b"")))


def test_update_without_with_key_and_full_old_tuple() -> None:
    new = _tuple(("b", INT4_1), ("b", b"z"), "u")
    plain = decode(_msg(b"U", ("I", 7), b"N", new))
    assert plain == Update(7, (Value("b", INT4_1), Value("b", b"z"), Value("u")))
    assert plain.old is None and plain.old_kind == ""  # type: ignore[union-attr]
    key = _tuple(("b", b"\x00\x00\x00\x02"), "n", "n")
    assert decode(_msg(b"U", ("I", 7), b"K", key, b"N", new)) == Update(
        7,
        (Value("b", INT4_1), Value("b", b"z"), Value("u")),
        "K",
        (Value("b", b"\x00\x00\x00\x02"), Value("n"), Value("n")),
    )
    full = _tuple(("b", INT4_1), ("b", b"y"), ("b", b"big"))
    upd = decode(_msg(b"U", ("I", 7), b"O", full, b"N", new))
    assert isinstance(upd, Update) and upd.old_kind == "O"
    assert upd.old == (Value("b", INT4_1), Value("b", b"y"), Value("b", b"big"))


def test_delete_truncate_message() -> None:
    key = _tuple(("b", INT4_1), "n")
    deleted = Delete(7, "K", (Value("b", INT4_1), Value("n")))
    assert decode(_msg(b"D", ("I", 7), b"K", key)) == deleted
    assert decode(_msg(b"D", ("I", 7), b"O", key)).old_kind == "O"  # type: ignore[union-attr]
    trunc = _msg(b"T", ("i", 2), ("B", 3), ("I", 7), ("I", 8))
    assert decode(trunc) == Truncate(3, (7, 8))
    # From the server: pg_logical_emit_message(true, 'px', 'hello').
    server = b"M\x01\x00\x00\x00\x00\x01\x92\\\x18px\x00\x00\x00\x00\x05hello"
    assert decode(server) == Message(True, 0x1_925C18, "px", b"hello")
    assert decode(_msg(b"M", ("B", 0), ("Q", 1), "", ("i", 0))) == Message(False, 1, "", b"")


@pytest.mark.parametrize(
    ("msg", "what"),
    [
        (b"", "empty"),
        (b"Z\x00", "unknown pgoutput message type"),
        (b"B\x00\x00", "truncated"),
        (_msg(b"I", ("I", 1), b"N", ("h", 1), b"x"), "unknown pgoutput tuple value kind"),
        (_msg(b"I", ("I", 1), b"N", ("h", 1), b"b", ("i", 10), b"abc"), "runs past"),
        (_msg(b"I", ("I", 1), b"K", ("h", 0)), "expected the new tuple"),
        (_msg(b"D", ("I", 1), b"N", ("h", 0)), "expected the old tuple"),
        (_msg(b"R", ("I", 1), b"public"), "no terminator"),
    ],
)
def test_bad_messages_fail_clearly(msg: bytes, what: str) -> None:
    with pytest.raises(DecodeError, match=what):
        decode(msg)


def test_lsn_text_round_trip_and_status_interval() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert format_lsn(0) == "0/0"
    with pytest.raises(Exception, match="not an LSN"):
        parse_lsn("nope")
    assert status_interval(60_000) == 10.0  # capped
    assert status_interval(8_000) == 2.0  # a quarter of a short timeout
    assert status_interval(0) == 10.0  # no timeout: still report our position

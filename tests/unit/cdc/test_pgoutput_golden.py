"""The pgoutput decoder, fed messages recorded from a real server (golden bytes) and hand-built.

How the golden bytes were produced (once; the test needs no server): PostgreSQL 15.18 (Debian
15.18-0+deb12u1, x86_64), a private cluster from tests/servers.py's PostgresCluster
(wal_level=logical), session `SET synchronous_commit = on`, autocommit, then:

    CREATE TABLE orders (id int PRIMARY KEY, note text, doc text);  -- REPLICA IDENTITY DEFAULT
    ALTER TABLE orders ALTER COLUMN doc SET STORAGE EXTERNAL;  -- TOASTed, not compressed
    CREATE TABLE audit (id int PRIMARY KEY, what text);
    CREATE PUBLICATION p FOR TABLE orders;
    CREATE PUBLICATION p2 FOR TABLE orders, audit;
    SELECT pg_create_logical_replication_slot('s', 'pgoutput');
    INSERT INTO orders VALUES (1, 'first', repeat('x', 2100));
    UPDATE orders SET note = 'changed' WHERE id = 1;                  -- doc arrives as 'u'
    UPDATE orders SET id = 2 WHERE id = 1;                             -- old key arrives as 'K'
    DELETE FROM orders WHERE id = 2;
    INSERT INTO orders VALUES (3, 'third', NULL);
    TRUNCATE orders;
    BEGIN; INSERT INTO orders VALUES (4, 'four', 'd'); INSERT INTO audit VALUES (40, 'audit row');
    COMMIT;

    SELECT lsn, data FROM pg_logical_slot_peek_binary_changes('s', NULL, NULL,
        'proto_version', '1', 'publication_names', 'p');               -- and again with 'p2'

Each `data` is one message below, in order, as hex (spaces between fields are ignored by
bytes.fromhex); the 2100 'x' of the first insert are appended as b"x" * 2100. orders has relid
16385 (0x4001), audit 16392 (0x4008). The p2 stream is the p stream plus the two audit messages
in the last transaction.
"""

from __future__ import annotations

import struct

import pytest

from parallelsync.cdc.pgoutput import KeyCollector, Relation


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


# ------------------------------------------------------------------------------ golden bytes
# Relation: 'R', relid, namespace, name, replica identity 'd', 3 columns (flags, name, type oid,
# typmod): id int4 (flag 1 = part of the key), note text, doc text.
REL_ORDERS = _hex(
    "52 00004001 7075626c696300 6f726465727300 64 0003"
    " 01 696400 00000017 ffffffff 00 6e6f746500 00000019 ffffffff 00 646f6300 00000019 ffffffff"
)
REL_AUDIT = _hex(
    "52 00004008 7075626c696300 617564697400 64 0002"
    " 01 696400 00000017 ffffffff 00 7768617400 00000019 ffffffff"
)

# INSERT INTO orders VALUES (1, 'first', repeat('x', 2100))
TX_INSERT = [
    ("0/150B728", _hex("42 000000000150b820 0003048fc3cc3ac7 000002da")),
    ("0/150B728", REL_ORDERS),
    (
        "0/150B728",
        _hex("49 00004001 4e 0003 74 00000001 31 74 00000005 6669727374 74 00000834") + b"x" * 2100,
    ),
    ("0/150B850", _hex("43 00 000000000150b820 000000000150b850 0003048fc3cc3ac7")),
]
# UPDATE orders SET note = 'changed' WHERE id = 1: no old tuple, the TOASTed doc as 'u'
TX_UPDATE = [
    ("0/150B888", _hex("42 000000000150b8e8 0003048fc3cc3f6f 000002db")),
    ("0/150B888", _hex("55 00004001 4e 0003 74 00000001 31 74 00000007 6368616e676564 75")),
    ("0/150B918", _hex("43 00 000000000150b8e8 000000000150b918 0003048fc3cc3f6f")),
]
# UPDATE orders SET id = 2 WHERE id = 1: old key 'K' (non-key columns 'n'), then the new tuple 'N'
TX_UPDATE_KEY = [
    ("0/150B950", _hex("42 000000000150ba00 0003048fc3cc40a2 000002dc")),
    (
        "0/150B950",
        _hex(
            "55 00004001 4b 0003 74 00000001 31 6e 6e"
            " 4e 0003 74 00000001 32 74 00000007 6368616e676564 75"
        ),
    ),
    ("0/150BA30", _hex("43 00 000000000150ba00 000000000150ba30 0003048fc3cc40a2")),
]
# DELETE FROM orders WHERE id = 2: the old key as 'K'
TX_DELETE = [
    ("0/150BA30", _hex("42 000000000150bae0 0003048fc3cc41c0 000002dd")),
    ("0/150BA30", _hex("44 00004001 4b 0003 74 00000001 32 6e 6e")),
    ("0/150BB10", _hex("43 00 000000000150bae0 000000000150bb10 0003048fc3cc41c0")),
]
# INSERT INTO orders VALUES (3, 'third', NULL): doc as 'n'
TX_INSERT_NULL = [
    ("0/150BB10", _hex("42 000000000150bb98 0003048fc3cc4278 000002de")),
    ("0/150BB10", _hex("49 00004001 4e 0003 74 00000001 33 74 00000005 7468697264 6e")),
    ("0/150BBC8", _hex("43 00 000000000150bb98 000000000150bbc8 0003048fc3cc4278")),
]
# TRUNCATE orders: the relation again (new relfilenode), then 'T' (1 relation, options 0)
TX_TRUNCATE = [
    ("0/150C738", _hex("42 000000000150c768 0003048fc3cc5a04 000002df")),
    ("0/150C738", REL_ORDERS),
    ("0/150C738", _hex("54 00000001 00 00004001")),
    ("0/150C8D8", _hex("43 00 000000000150c768 000000000150c8d8 0003048fc3cc5a04")),
]
# BEGIN; INSERT INTO orders VALUES (4, 'four', 'd'); INSERT INTO audit VALUES (40, 'audit row');
# COMMIT -- through publication p (orders only): audit's insert is not sent at all
INSERT_ORDERS_4 = _hex("49 00004001 4e 0003 74 00000001 34 74 00000004 666f7572 74 00000001 64")
INSERT_AUDIT_40 = _hex("49 00004008 4e 0002 74 00000002 3430 74 00000009 617564697420726f77")
TX_TWO_TABLES_BEGIN = ("0/150C8D8", _hex("42 000000000150caa8 0003048fc3cc62d3 000002e0"))
TX_TWO_TABLES_COMMIT = (
    "0/150CAD8",
    _hex("43 00 000000000150caa8 000000000150cad8 0003048fc3cc62d3"),
)
TX_TWO_TABLES = [
    TX_TWO_TABLES_BEGIN,
    ("0/150C8D8", REL_ORDERS),
    ("0/150C8D8", INSERT_ORDERS_4),
    TX_TWO_TABLES_COMMIT,
]
# The same transaction through publication p2 (orders and audit)
TX_TWO_TABLES_P2 = [
    TX_TWO_TABLES_BEGIN,
    ("0/150C8D8", REL_ORDERS),
    ("0/150C8D8", INSERT_ORDERS_4),
    ("0/150C9C0", REL_AUDIT),
    ("0/150C9C0", INSERT_AUDIT_40),
    TX_TWO_TABLES_COMMIT,
]

STREAM_P = [
    *TX_INSERT,
    *TX_UPDATE,
    *TX_UPDATE_KEY,
    *TX_DELETE,
    *TX_INSERT_NULL,
    *TX_TRUNCATE,
    *TX_TWO_TABLES,
]
ORDERS = Relation(16385, "public", "orders", ["id", "note", "doc"])
AUDIT = Relation(16392, "public", "audit", ["id", "what"])


def collect(
    messages: list[tuple[str, bytes]] | list[bytes],
    key: tuple[str, ...] = ("id",),
    relids: frozenset[int] = frozenset({16385, 7}),  # orders, and the hand-built table t
) -> KeyCollector:
    collector = KeyCollector(key, relids)
    for msg in messages:
        collector.feed(msg[1] if isinstance(msg, tuple) else msg)
    return collector


def test_golden_stream_sizes() -> None:
    # The fixture itself: one message per row of the peek, the long insert intact.
    assert len(STREAM_P) == 24
    assert len(TX_INSERT[2][1]) == 29 + 2100
    assert [m[:1] for _, m in TX_UPDATE_KEY] == [b"B", b"U", b"C"]


def test_whole_stream() -> None:
    c = collect(STREAM_P)
    assert c.changes.keys == {("1",), ("2",), ("3",), ("4",)}
    assert c.changes.truncated is True
    assert c.changes.messages == 24
    assert c.relations == {16385: ORDERS}


def test_insert() -> None:
    c = collect(TX_INSERT)
    assert c.changes.keys == {("1",)}
    assert c.changes.truncated is False
    assert c.changes.messages == 4
    assert c.relations == {16385: ORDERS}


def test_update_of_a_non_key_column_with_unchanged_toast() -> None:
    c = collect([REL_ORDERS, *(m for _, m in TX_UPDATE)])
    assert c.changes.keys == {("1",)}
    assert c.changes.messages == 4


def test_update_of_the_key_yields_old_and_new_key() -> None:
    c = collect([REL_ORDERS, *(m for _, m in TX_UPDATE_KEY)])
    assert c.changes.keys == {("1",), ("2",)}
    assert c.changes.truncated is False


def test_delete_yields_the_old_key() -> None:
    c = collect([REL_ORDERS, *(m for _, m in TX_DELETE)])
    assert c.changes.keys == {("2",)}


def test_insert_with_a_null_column() -> None:
    c = collect([REL_ORDERS, *(m for _, m in TX_INSERT_NULL)])
    assert c.changes.keys == {("3",)}


def test_truncate_sets_the_flag_and_collects_no_key() -> None:
    c = collect(TX_TRUNCATE)
    assert c.changes.truncated is True
    assert c.changes.keys == set()
    assert c.changes.messages == 4


def test_transaction_touching_two_tables_through_a_one_table_publication() -> None:
    c = collect(TX_TWO_TABLES)
    assert c.changes.keys == {("4",)}
    assert c.relations == {16385: ORDERS}
    assert c.changes.messages == 4


def test_two_table_publication_collects_only_the_copied_tables_keys() -> None:
    # Through p2 (orders and audit, one transaction changing both) only the rows of the relations
    # asked for are collected: audit's key 40 is not a key of orders. Before, it was.
    c = collect(TX_TWO_TABLES_P2)
    assert c.relations == {16385: ORDERS, 16392: AUDIT}
    assert c.changes.keys == {("4",)}
    assert c.changes.messages == 6
    audit = collect(TX_TWO_TABLES_P2, relids=frozenset({16392}))
    assert audit.changes.keys == {("40",)}


def test_truncate_of_another_table_is_not_the_copied_tables() -> None:
    assert collect(TX_TRUNCATE, relids=frozenset({16392})).changes.truncated is False
    assert collect(TX_TRUNCATE, relids=frozenset({16385})).changes.truncated is True
    # one TRUNCATE of two tables names both
    two = b"T" + struct.pack("!IB", 2, 0) + struct.pack("!II", 16392, 16385)
    assert collect([two], relids=frozenset({16385})).changes.truncated is True
    assert collect([two], relids=frozenset({99})).changes.truncated is False


def test_begin_and_commit_alone_collect_nothing() -> None:
    c = collect([TX_TWO_TABLES_BEGIN, TX_TWO_TABLES_COMMIT])
    assert (c.changes.keys, c.changes.truncated, c.changes.messages) == (set(), False, 2)
    assert c.relations == {}


# -------------------------------------------------------------------------- hand-built messages
def cstr(text: str) -> bytes:
    return text.encode() + b"\x00"


def relation(
    relid: int, name: str, columns: list[str], key: tuple[str, ...], types: list[int] | None = None
) -> bytes:
    """A Relation message; every column text (oid 25) unless `types` says otherwise."""
    out = b"R" + struct.pack("!I", relid) + cstr("public") + cstr(name) + b"d"
    out += struct.pack("!h", len(columns))
    for col, oid in zip(columns, types or [25] * len(columns), strict=True):
        out += bytes([1 if col in key else 0]) + cstr(col) + struct.pack("!Ii", oid, -1)
    return out


Value = str | bytes | None  # str: 't' text; bytes: 'b' binary; None: 'n'; "<u>": 'u'
UNCHANGED = "<u>"


def tuple_data(values: list[Value]) -> bytes:
    out = struct.pack("!h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == UNCHANGED:
            out += b"u"
        elif isinstance(v, bytes):
            out += b"b" + struct.pack("!i", len(v)) + v
        else:
            raw = v.encode()
            out += b"t" + struct.pack("!i", len(raw)) + raw
    return out


def insert(relid: int, values: list[Value]) -> bytes:
    return b"I" + struct.pack("!I", relid) + b"N" + tuple_data(values)


def update(
    relid: int, new: list[Value], old: list[Value] | None = None, kind: bytes = b"K"
) -> bytes:
    head = b"U" + struct.pack("!I", relid)
    if old is not None:
        head += kind + tuple_data(old)
    return head + b"N" + tuple_data(new)


def delete(relid: int, old: list[Value], kind: bytes = b"K") -> bytes:
    return b"D" + struct.pack("!I", relid) + kind + tuple_data(old)


COLS = ["note", "id", "region", "doc"]
KEY = ("region", "id")  # the key in its own order, not the table's
REL = relation(7, "t", COLS, KEY)


def test_hand_built_messages_match_the_golden_bytes() -> None:
    # The helpers write what the server writes.
    assert relation(16385, "orders", ["id", "note", "doc"], ("id",), [23, 25, 25]) == REL_ORDERS
    assert insert(16385, ["4", "four", "d"]) == INSERT_ORDERS_4
    assert update(16385, ["2", "changed", UNCHANGED], old=["1", None, None]) == TX_UPDATE_KEY[1][1]
    assert delete(16385, ["2", None, None]) == TX_DELETE[1][1]


def test_multi_column_key_in_key_order() -> None:
    c = collect([REL, insert(7, ["hello", "42", "eu", "doc"])], key=KEY)
    assert c.changes.keys == {("eu", "42")}
    assert c.relations[7] == Relation(7, "public", "t", COLS)


def test_null_and_unchanged_toast_markers_keep_the_positions() -> None:
    # 'n' and 'u' carry no length: a value after them must still be read from the right place.
    c = collect(
        [REL, update(7, [None, "5", "us", UNCHANGED]), insert(7, [UNCHANGED, "6", "ap", None])],
        key=KEY,
    )
    assert c.changes.keys == {("us", "5"), ("ap", "6")}


def test_null_key_value_is_none() -> None:
    c = collect([REL, insert(7, ["n", "9", None, "d"])], key=KEY)
    assert c.changes.keys == {(None, "9")}


def test_binary_values_of_text_columns() -> None:
    c = collect([REL, insert(7, [b"\x00\x01", b"8", "région".encode(), None])], key=KEY)
    assert c.changes.keys == {("région", "8")}


def test_text_values_empty_and_multibyte() -> None:
    c = collect([REL, insert(7, ["", "1", "", "😀"]), insert(7, ["x", "2", "日本", ""])], key=KEY)
    assert c.changes.keys == {("", "1"), ("日本", "2")}


def test_update_with_full_old_row() -> None:
    # REPLICA IDENTITY FULL sends the old row as 'O'.
    msg = update(7, ["b", "2", "eu", "d"], old=["a", "1", "eu", "d"], kind=b"O")
    c = collect([REL, msg], key=KEY)
    assert c.changes.keys == {("eu", "1"), ("eu", "2")}


def test_update_of_a_multi_column_key() -> None:
    msg = update(7, ["n", "1", "us", UNCHANGED], old=[None, "1", "eu", None])
    c = collect([REL, msg], key=KEY)
    assert c.changes.keys == {("eu", "1"), ("us", "1")}


@pytest.mark.parametrize("kind", [b"K", b"O"])
def test_delete_with_key_or_full_old_row(kind: bytes) -> None:
    c = collect([REL, delete(7, ["n", "3", "ap", None], kind=kind)], key=KEY)
    assert c.changes.keys == {("ap", "3")}


def test_repeated_keys_count_once() -> None:
    msgs = [REL, insert(7, ["a", "1", "eu", "d"]), update(7, ["b", "1", "eu", "d"])]
    msgs.append(delete(7, [None, "1", "eu", None]))
    c = collect(msgs, key=KEY)
    assert c.changes.keys == {("eu", "1")}
    assert c.changes.messages == 4


def test_relation_sent_again_with_new_columns() -> None:
    # After ALTER TABLE the server sends the relation again; later tuples follow the new layout.
    c = collect(
        [
            REL,
            insert(7, ["a", "1", "eu", "d"]),
            relation(7, "t", ["region", "extra", "id"], KEY),
            insert(7, ["us", "x", "2"]),
        ],
        key=KEY,
    )
    assert c.changes.keys == {("eu", "1"), ("us", "2")}
    assert c.relations[7].columns == ["region", "extra", "id"]


def test_truncate_of_several_relations_with_cascade() -> None:
    msg = b"T" + struct.pack("!I", 2) + b"\x01" + struct.pack("!II", 7, 8)
    c = collect([REL, msg], key=KEY)
    assert (c.changes.truncated, c.changes.keys, c.changes.messages) == (True, set(), 2)


def test_other_message_types_are_counted_and_ignored() -> None:
    origin = b"O" + struct.pack("!Q", 0x150B728) + cstr("upstream")
    type_msg = b"Y" + struct.pack("!I", 16400) + cstr("public") + cstr("mood")
    logical = b"M" + b"\x01" + struct.pack("!Q", 1) + cstr("prefix") + struct.pack("!i", 2) + b"hi"
    c = collect([REL, origin, type_msg, logical], key=KEY)
    assert (c.changes.keys, c.changes.truncated, c.changes.messages) == (set(), False, 4)
    assert list(c.relations) == [7]

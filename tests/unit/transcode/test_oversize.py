"""`--oversize skip`: oversized documents are left out of the batch and named (no database)."""

from __future__ import annotations

import struct

import bson
import pytest

from parallelsync.errors import DocumentTooLarge
from parallelsync.transcode.copybinary import SIGNATURE
from parallelsync.transcode.encoder import DocumentEncoder
from parallelsync.transcode.model import Codec, EncodeOptions, FieldNode, Layout
from parallelsync.transcode.oversize import MAX_SKIPPED_ENTRIES, SkippingEncoder

LAYOUT = Layout(
    (FieldNode("_id", 0, Codec("int4")), FieldNode("body", 1, Codec("text"))),
    2,
    EncodeOptions(max_document_size=200),
)


def copy_stream(rows: list[tuple[int, str]]) -> bytes:
    out = bytearray(SIGNATURE + struct.pack(">II", 0, 0))
    for ident, body in rows:
        data = body.encode()
        out += struct.pack(">hii", 2, 4, ident) + struct.pack(">i", len(data)) + data
    return bytes(out + struct.pack(">h", -1))


def test_oversized_documents_are_left_out_and_named() -> None:
    rows = [(1, "a"), (2, "x" * 500), (3, "b"), (4, "y" * 300), (5, "c")]
    buf = copy_stream(rows)
    with pytest.raises(DocumentTooLarge, match="_id 2"):
        DocumentEncoder(LAYOUT).encode(buf, 19)
    enc = SkippingEncoder(LAYOUT)
    batch = enc.encode(buf, 19)
    assert batch.rows == 3 and batch.finished and batch.end == len(buf)
    assert [bson.decode(d) for d in batch.documents()] == [
        {"_id": 1, "body": "a"},
        {"_id": 3, "body": "b"},
        {"_id": 5, "body": "c"},
    ]
    count, entries = enc.take()
    assert count == 2
    assert [e["_id"] for e in entries] == [2, 4]
    assert entries[0]["size"] == len(bson.encode({"_id": 2, "body": "x" * 500}))
    assert enc.take() == (0, [])  # per range


def test_small_batches_take_the_normal_path_and_entries_are_bounded() -> None:
    enc = SkippingEncoder(LAYOUT)
    assert enc.encode(copy_stream([(1, "a")]), 19).rows == 1
    assert enc.take() == (0, [])
    big = [(i, "z" * 300) for i in range(MAX_SKIPPED_ENTRIES + 5)]
    batch = enc.encode(copy_stream(big), 19)
    assert batch.rows == 0 and len(batch.documents()) == 0
    count, entries = enc.take()
    assert count == MAX_SKIPPED_ENTRIES + 5 and len(entries) == MAX_SKIPPED_ENTRIES

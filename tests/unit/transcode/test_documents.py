"""Document-level behaviour: framing, layout nesting, NULL policies, limits, errors."""

from __future__ import annotations

import struct

import bson
import pytest

from parallelsync.errors import DocumentTooLarge, EncodeError
from parallelsync.transcode import DocumentEncoder, header_length
from parallelsync.transcode.model import Codec, DocNode, EncodeOptions, FieldNode, Layout
from tests.unit.transcode import copy_helpers as h
from tests.unit.transcode.support import DECODE, each_impl, encode_both, encode_with


def nested_layout(options: EncodeOptions | None = None) -> Layout:
    return Layout(
        nodes=(
            DocNode("_id", (FieldNode("a", 0, Codec("int4")), FieldNode("b", 1, Codec("text")))),
            FieldNode("name", 2, Codec("text")),
            DocNode("address", (FieldNode("city", 3, Codec("text")),)),
        ),
        ncolumns=4,
        options=options or EncodeOptions(),
    )


def test_golden_nested_document() -> None:
    data = h.stream([[h.p_int4(1), h.p_text("k"), h.p_text("Ann"), h.p_text("Oslo")]])
    (doc,) = encode_both(nested_layout(), data)
    id_doc = b"\x10a\x00\x01\x00\x00\x00" + b"\x02b\x00\x02\x00\x00\x00k\x00"
    id_doc = struct.pack("<i", len(id_doc) + 5) + id_doc + b"\x00"
    addr = b"\x02city\x00\x05\x00\x00\x00Oslo\x00"
    addr = struct.pack("<i", len(addr) + 5) + addr + b"\x00"
    body = (
        b"\x03_id\x00" + id_doc + b"\x02name\x00\x04\x00\x00\x00Ann\x00" + b"\x03address\x00" + addr
    )
    assert doc == struct.pack("<i", len(body) + 5) + body + b"\x00"
    assert bson.decode(doc) == {
        "_id": {"a": 1, "b": "k"},
        "name": "Ann",
        "address": {"city": "Oslo"},
    }


def test_golden_null_row() -> None:
    data = h.stream([[h.p_int4(7), None, None, None]])
    (doc,) = encode_both(nested_layout(), data)
    assert bson.decode(doc) == {
        "_id": {"a": 7, "b": None},
        "name": None,
        "address": {"city": None},
    }
    (doc,) = encode_both(nested_layout(EncodeOptions(nulls="omit")), data)
    # an embedded document is written even when all its fields are omitted
    assert doc == (
        b"\x24\x00\x00\x00"
        b"\x03_id\x00\x0c\x00\x00\x00\x10a\x00\x07\x00\x00\x00\x00"
        b"\x03address\x00\x05\x00\x00\x00\x00"
        b"\x00"
    )
    assert bson.decode(doc) == {"_id": {"a": 7}, "address": {}}


def test_golden_scalar_document() -> None:
    layout = Layout(
        nodes=(
            FieldNode("_id", 0, Codec("int8")),
            FieldNode("f", 1, Codec("float8")),
            FieldNode("t", 2, Codec("bool")),
            FieldNode("d", 3, Codec("timestamptz")),
        ),
        ncolumns=4,
    )
    data = h.stream([[h.p_int8(-2), h.p_float8(1.5), h.p_bool(True), h.p_timestamp(1500)]])
    (doc,) = encode_both(layout, data)
    body = (
        b"\x12_id\x00" + struct.pack("<q", -2)
        + b"\x01f\x00" + struct.pack("<d", 1.5)
        + b"\x08t\x00\x01"
        + b"\x09d\x00" + struct.pack("<q", 946684800000 + 1)
    )  # fmt: skip
    assert doc == struct.pack("<i", len(body) + 5) + body + b"\x00"


@each_impl
def test_batch_framing(impl: str) -> None:
    layout = Layout(nodes=(FieldNode("_id", 0, Codec("int4")),), ncolumns=1)
    encoder = DocumentEncoder(layout, fast=impl == "c")
    rows = [[h.p_int4(i)] for i in range(5)]
    data = h.stream(rows, trailer=False)
    start = header_length(data)
    assert start == 19
    batch = encode_with(impl, layout, data, start)
    assert (batch.rows, batch.end, batch.finished) == (5, len(data), False)
    assert [bson.decode(d)["_id"] for d in batch.documents()] == [0, 1, 2, 3, 4]
    assert batch.offsets.tolist() == [0, 14, 28, 42, 56, 70]
    # trailer only, in a bytearray (the worker's buffer), with a start offset
    buf = bytearray(b"junk" + h.TRAILER)
    batch = encoder.encode(buf, 4)
    assert (batch.rows, batch.end, batch.finished, batch.data) == (0, 6, True, b"")
    assert batch.documents() == []
    # empty input
    batch = encoder.encode(b"", 0)
    assert (batch.rows, batch.end, batch.finished) == (0, 0, False)
    # tuples then trailer, via a memoryview
    full = h.stream(rows)
    batch = encoder.encode(memoryview(full), 19)
    assert (batch.rows, batch.end, batch.finished) == (5, len(full), True)


def test_header_errors() -> None:
    with pytest.raises(EncodeError, match="not a binary COPY stream"):
        header_length(b"PGCOPY\n\xff\r\n\x01" + b"\x00" * 8)
    with pytest.raises(EncodeError, match="truncated"):
        header_length(b"PGCOPY")
    with pytest.raises(EncodeError, match="OIDs"):
        header_length(h.HEADER[:11] + struct.pack(">ii", 1 << 16, 0))
    with pytest.raises(EncodeError, match="critical"):
        header_length(h.HEADER[:11] + struct.pack(">ii", 1 << 20, 0))
    with_ext = h.HEADER[:11] + struct.pack(">ii", 0, 3) + b"abc"
    assert header_length(with_ext) == 22
    with pytest.raises(EncodeError, match="extension truncated"):
        header_length(with_ext[:-1])


@each_impl
def test_field_count_mismatch(impl: str) -> None:
    layout = Layout(nodes=(FieldNode("_id", 0, Codec("int4")),), ncolumns=1)
    data = h.stream([[h.p_int4(1)], [h.p_int4(1), h.p_int4(2)]], header=False)
    with pytest.raises(EncodeError, match="has 2 fields, the layout expects 1"):
        DocumentEncoder(layout, fast=impl == "c").encode(data)


@each_impl
def test_truncated_data(impl: str) -> None:
    layout = Layout(nodes=(FieldNode("_id", 0, Codec("text")),), ncolumns=1)
    data = h.row(h.p_text("hello"))
    with pytest.raises(EncodeError, match="truncated"):
        DocumentEncoder(layout, fast=impl == "c").encode(data[:-1])


@each_impl
def test_document_too_large(impl: str) -> None:
    layout = Layout(
        nodes=(FieldNode("_id", 0, Codec("text")), FieldNode("body", 1, Codec("bytea"))),
        ncolumns=2,
        options=EncodeOptions(max_document_size=100),
    )
    data = h.stream(
        [[h.p_text("small"), b"x" * 10], [h.p_text("big-one"), b"x" * 200]], header=False
    )
    with pytest.raises(DocumentTooLarge, match=r"_id 'big-one' is 233 bytes, over the 100-byte"):
        DocumentEncoder(layout, fast=impl == "c").encode(data)


@each_impl
def test_value_error_names_column_and_id(impl: str) -> None:
    layout = Layout(
        nodes=(
            DocNode("_id", (FieldNode("a", 0, Codec("int4")), FieldNode("b", 1, Codec("int4")))),
            FieldNode("doc", 2, Codec("jsonb")),
        ),
        ncolumns=3,
    )
    data = h.stream([[h.p_int4(1), h.p_int4(2), h.p_jsonb("{")]], header=False, trailer=False)
    with pytest.raises(EncodeError, match=r"column 'doc' \(jsonb\) of the row with _id \{'a': 1"):
        DocumentEncoder(layout, fast=impl == "c").encode(data)


def test_unknown_codec_and_bad_key() -> None:
    with pytest.raises(EncodeError, match="unknown codec 'hstore'"):
        DocumentEncoder(Layout(nodes=(FieldNode("_id", 0, Codec("hstore")),), ncolumns=1))
    with pytest.raises(EncodeError, match="NUL"):
        DocumentEncoder(Layout(nodes=(FieldNode("_\x00id", 0, Codec("int4")),), ncolumns=1))
    with pytest.raises(EncodeError, match="reads column 3"):
        DocumentEncoder(Layout(nodes=(FieldNode("_id", 3, Codec("int4")),), ncolumns=1))


def test_compiled_path_is_the_default() -> None:
    """With the extension built every layout uses it (a batch costs the kernel microseconds, so
    there is no small-input or Python-only shortcut any more)."""
    for codec in ("int4", "numeric", "interval"):
        layout = Layout(nodes=(FieldNode("_id", 0, Codec(codec)),), ncolumns=1)
        encoder = DocumentEncoder(layout)
        assert (encoder.fast, encoder.impl) == (True, "c")
    assert DocumentEncoder(layout, fast=False).impl == "python"


def test_decode_options_roundtrip() -> None:
    layout = Layout(nodes=(FieldNode("_id", 0, Codec("date")),), ncolumns=1)
    (doc,) = encode_both(layout, h.stream([[h.p_date(0)]]))
    assert int(bson.decode(doc, codec_options=DECODE)["_id"]) == 946684800000


@each_impl
def test_worker_buffer_can_be_reused(impl: str) -> None:
    """The worker clears and refills one bytearray: no buffer export may outlive encode()."""
    layout = Layout(
        nodes=(FieldNode("_id", 0, Codec("int4")), FieldNode("j", 1, Codec("jsonb"))),
        ncolumns=2,
    )
    encoder = DocumentEncoder(layout, fast=impl == "c")
    buf = bytearray(h.stream([[h.p_int4(i), h.p_jsonb('{"a": 1}')] for i in range(200)]))
    batch = encoder.encode(buf, header_length(buf))
    assert batch.rows == 200
    del buf[: batch.end]  # would raise BufferError if an export were still alive
    buf += h.row(h.p_int4(1), h.p_jsonb("{"))
    with pytest.raises(EncodeError):
        encoder.encode(buf, 0)
    buf.clear()

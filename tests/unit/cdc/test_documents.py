"""Stream rows into documents (cdc/documents.py): the bytes a copy would write, `$set` updates
that leave unchanged TOASTed columns alone, merged documents for a key change, and refusals."""

from __future__ import annotations

import bson
import pytest
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

from parallelsync.cdc.decode import Value
from parallelsync.cdc.documents import RowEncoder, check_followable, elements
from parallelsync.config.build import CopyConfig
from parallelsync.errors import EncodeError, UsageError
from parallelsync.mapping.config import MappingConfig
from parallelsync.mapping.projection import build_projection
from parallelsync.source.catalog import Column, TableInfo
from parallelsync.transcode.encoder import DocumentEncoder
from parallelsync.transcode.model import Codec
from tests.unit.transcode.copy_helpers import p_int4, p_int8, row


def _col(name: str, attnum: int, oid: int, codec: str, cast: str | None = None) -> Column:
    return Column(name, attnum, oid, codec, False, Codec(codec), cast)


TABLE = TableInfo(
    16385, "public", "orders",  "r",
    (_col("id", 1, 20, "int8"), _col("note", 2, 25, "text"), _col("city", 3, 25, "text"),
     _col("doc", 4, 25, "text")),
    ("id",), 1, 10.0,
)  # fmt: skip
COLUMNS = [c.name for c in TABLE.columns]


def _encoder(mapping: MappingConfig | None = None, **opts: str) -> RowEncoder:
    cfg = CopyConfig(source="", table="orders", mapping=mapping or MappingConfig(), **opts)  # type: ignore[arg-type]
    return RowEncoder(build_projection(TABLE, cfg), COLUMNS)


def b(data: bytes) -> Value:
    return Value("b", data)


N, U = Value("n"), Value("u")


def test_a_row_is_the_document_the_copy_writes() -> None:
    enc = _encoder()
    doc = enc.documents([(b(p_int8(7)), b(b"hello"), N, b(b"x" * 3000))])[0]
    assert doc == bson.encode({"_id": Int64(7), "note": "hello", "city": None, "doc": "x" * 3000})
    # The same bytes the copy's encoder makes from the same values in a COPY tuple.
    copy = DocumentEncoder(enc.layout).encode(row(p_int8(7), b"hello", None, b"x" * 3000))
    assert copy.documents()[0] == doc
    assert enc.ids([(b(p_int8(7)), N, N, N)])[0] == bson.encode({"_id": Int64(7)})


def test_unchanged_toast_is_never_written() -> None:
    enc = _encoder()
    new = (b(p_int8(7)), b(b"changed"), N, U)
    unchanged = enc.unchanged(new)
    assert unchanged == frozenset({3})  # the SELECT expression of column doc
    update = enc.partial_update(enc.documents([new])[0], unchanged)
    assert isinstance(update, RawBSONDocument)
    assert bson.decode(update.raw) == {"$set": {"note": "changed", "city": None}}


def test_nested_fields_and_omitted_nulls() -> None:
    mapping = MappingConfig(fields=(("city", "addr.city"), ("doc", "addr.doc")))
    enc = _encoder(mapping, nulls="omit")
    new = (b(p_int8(1)), N, b(b"Oslo"), U)
    update = enc.partial_update(enc.documents([new])[0], enc.unchanged(new))
    assert bson.decode(update.raw) == {"$set": {"addr.city": "Oslo"}, "$unset": {"note": 1}}
    # Nothing unchanged inside addr: the embedded document is set whole.
    full = (b(p_int8(1)), b(b"n"), b(b"Oslo"), b(b"d"))
    assert enc.unchanged(full) == frozenset()


def test_key_change_with_unchanged_toast_merges_the_old_document() -> None:
    mapping = MappingConfig(fields=(("city", "addr.city"), ("doc", "addr.doc")))
    enc = _encoder(mapping)
    old = enc.documents([(b(p_int8(1)), b(b"a"), b(b"Oslo"), b(b"big" * 1000))])[0]
    new_row = (b(p_int8(2)), b(b"b"), b(b"Rome"), U)
    merged = enc.merge(enc.documents([new_row])[0], old, enc.unchanged(new_row))
    expected = {"_id": Int64(2), "note": "b", "addr": {"city": "Rome", "doc": "big" * 1000}}
    assert merged == bson.encode(expected)


def test_elements_walks_every_bson_type_the_copy_writes() -> None:
    doc = bson.encode(
        {"a": 1.5, "b": "s", "c": {"x": 1}, "d": [1, 2], "e": b"\x00\x01", "f": True,
         "g": None, "h": Int64(3), "i": bson.decimal128.Decimal128("1.1")}
    )  # fmt: skip
    keys = [k for k, _, _ in elements(doc)]
    assert keys == list("abcdefghi")
    last_end = max(end for _, _, end in elements(doc))
    assert last_end == len(doc) - 1


def test_refusals_say_what_to_change() -> None:
    string_id = MappingConfig(id_format="string")
    with pytest.raises(UsageError, match="string _id"):
        _encoder(string_id)
    with pytest.raises(UsageError, match=r"column\(s\) note: the copy casts"):
        _encoder(MappingConfig(types=(("note", "int32"),)))
    cfg = CopyConfig(source="", table="orders")
    hstore = TableInfo(1, "public", "h", "r", (_col("id", 1, 23, "int4"),
                       _col("attrs", 2, 99999, "jsonb", "jsonb")), ("id",), 1, 1.0)  # fmt: skip
    with pytest.raises(UsageError, match="attrs"):
        check_followable(build_projection(hstore, cfg))
    with pytest.raises(EncodeError, match="arrived in text form"):
        _encoder().documents([(b(p_int8(1)), Value("t", b"x"), N, N)])
    assert p_int4(1)  # the helpers are the copy tests' own

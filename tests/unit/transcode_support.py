"""Shared helpers for the transcoder tests: one-column layouts, both paths, decoding."""

from __future__ import annotations

from typing import Any

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion

from parallelsync.transcode import DocumentEncoder, header_length
from parallelsync.transcode.model import Codec, EncodeOptions, FieldNode, Layout
from tests.unit.copy_helpers import p_int4, stream

DECODE: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS,
    uuid_representation=UuidRepresentation.STANDARD,
)


def one_column_layout(codec: Codec, options: EncodeOptions | None = None) -> Layout:
    return Layout(
        nodes=(FieldNode("_id", 0, Codec("int4")), FieldNode("v", 1, codec)),
        ncolumns=2,
        options=options or EncodeOptions(),
    )


def encode_both(layout: Layout, data: bytes) -> list[bytes]:
    """Encode with both paths, assert identical bytes, return the documents."""
    start = header_length(data)
    ref = DocumentEncoder(layout, fast=False).encode(data, start)
    fast = DocumentEncoder(layout, fast=True).encode(data, start)
    assert ref.data == fast.data
    assert ref.offsets.tolist() == fast.offsets.tolist()
    assert (ref.rows, ref.end, ref.finished) == (fast.rows, fast.end, fast.finished)
    return ref.documents()


def value_doc(codec: Codec, payload: bytes | None, options: EncodeOptions | None = None) -> bytes:
    layout = one_column_layout(codec, options)
    (doc,) = encode_both(layout, stream([[p_int4(1), payload]]))
    return doc


def value_of(codec: Codec, payload: bytes | None, options: EncodeOptions | None = None) -> Any:
    decoded = bson.decode(value_doc(codec, payload, options), codec_options=DECODE)
    assert next(iter(decoded)) == "_id"
    return decoded.get("v", "<omitted>")

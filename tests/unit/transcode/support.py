"""Shared helpers for the transcoder tests: one-column layouts, both implementations, decoding.

Every helper that encodes with the compiled implementation also checks, through
`parallelsync.transcode.stats`, that the compiled kernel encoded the batch itself: a kernel that
silently handed its batches to the reference path would produce the same bytes and pass any
comparison of outputs, so the batch counter is what makes these tests fail then.
"""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion

from parallelsync.transcode import DocumentEncoder, EncodedBatch, header_length, stats
from parallelsync.transcode.bson_writer import Buffer
from parallelsync.transcode.model import Codec, EncodeOptions, FieldNode, Layout
from tests.unit.transcode.copy_helpers import p_int4, stream

DECODE: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_MS,
    uuid_representation=UuidRepresentation.STANDARD,
)

# The implementations every transcode suite runs against ("python" is the reference).
IMPLS = ("python", "c")
each_impl = pytest.mark.parametrize("impl", IMPLS)


def encode_with(impl: str, layout: Layout, data: Buffer, start: int = 0) -> EncodedBatch:
    """Encode with one implementation; for "c", assert that the kernel itself encoded it."""
    encoder = DocumentEncoder(layout, fast=impl == "c")
    assert encoder.impl == impl
    before = stats.batches[impl]
    batch = encoder.encode(data, start)
    assert stats.batches[impl] == before + 1, f"the {impl} path did not encode the batch"
    return batch


def encode_both(layout: Layout, data: bytes) -> list[bytes]:
    """Encode with both implementations, assert identical bytes, return the documents.

    When the reference raises, the compiled path must raise the same error (then re-raised)."""
    start = header_length(data)
    try:
        ref = encode_with("python", layout, data, start)
    except Exception as exc:
        with pytest.raises(type(exc)) as compiled:
            DocumentEncoder(layout, fast=True).encode(data, start)
        assert str(compiled.value) == str(exc)
        raise
    fast = encode_with("c", layout, data, start)
    assert ref.data == fast.data
    assert ref.offsets.tolist() == fast.offsets.tolist()
    assert (ref.rows, ref.end, ref.finished) == (fast.rows, fast.end, fast.finished)
    return ref.documents()


def one_column_layout(codec: Codec, options: EncodeOptions | None = None) -> Layout:
    return Layout(
        nodes=(FieldNode("_id", 0, Codec("int4")), FieldNode("v", 1, codec)),
        ncolumns=2,
        options=options or EncodeOptions(),
    )


def value_doc(codec: Codec, payload: bytes | None, options: EncodeOptions | None = None) -> bytes:
    layout = one_column_layout(codec, options)
    (doc,) = encode_both(layout, stream([[p_int4(1), payload]]))
    return doc


def value_of(codec: Codec, payload: bytes | None, options: EncodeOptions | None = None) -> Any:
    decoded = bson.decode(value_doc(codec, payload, options), codec_options=DECODE)
    assert next(iter(decoded)) == "_id"
    return decoded.get("v", "<omitted>")


def error_of(impl: str, codec: Codec, payload: bytes, options: EncodeOptions | None = None) -> str:
    """The message of the error one implementation raises for a value (pytest.fail if none)."""
    layout = one_column_layout(codec, options)
    encoder = DocumentEncoder(layout, fast=impl == "c")
    try:
        encoder.encode(stream([[p_int4(1), payload]]), 19)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    pytest.fail(f"{impl}: no error for {codec.name} {payload[:40]!r}")

"""BSON building blocks: type bytes, key cstrings, value payloads and document framing.

Every encoder returns a `Value`: the BSON type byte and the value payload (the bytes that follow
the element key). Keeping the type separate from the key lets the same value encoder serve
top-level fields, array elements (keys "0", "1", ...) and embedded documents.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeAlias

from parallelsync.errors import EncodeError

T_DOUBLE = 0x01
T_STRING = 0x02
T_DOCUMENT = 0x03
T_ARRAY = 0x04
T_BINARY = 0x05
T_BOOL = 0x08
T_DATE = 0x09
T_NULL = 0x0A
T_INT32 = 0x10
T_INT64 = 0x12
T_DECIMAL128 = 0x13

Buffer: TypeAlias = bytes | bytearray | memoryview
Value: TypeAlias = tuple[int, bytes]
# (buffer, offset of the value, length of the value) -> (BSON type, payload)
ValueEncoder: TypeAlias = Callable[[Buffer, int, int], Value]

pack_i32 = struct.Struct("<i").pack
pack_i64 = struct.Struct("<q").pack
pack_f64 = struct.Struct("<d").pack

EMPTY_DOCUMENT = b"\x05\x00\x00\x00\x00"
NULL_VALUE: Value = (T_NULL, b"")


def cstring(key: str) -> bytes:
    """A BSON key: UTF-8 plus the terminating NUL (a NUL inside would end the key early)."""
    raw = key.encode("utf-8")
    if b"\x00" in raw:
        raise EncodeError(f"key {key!r} contains a NUL character: BSON keys cannot hold one")
    return raw + b"\x00"


def string_payload(raw: bytes | memoryview) -> bytes:
    return pack_i32(len(raw) + 1) + raw + b"\x00"


def str_value(text: str) -> Value:
    return (T_STRING, string_payload(text.encode("utf-8")))


def binary_payload(raw: bytes | memoryview, subtype: int) -> bytes:
    return pack_i32(len(raw)) + bytes((subtype,)) + raw


def frame_document(elements: bytes | bytearray) -> bytes:
    """Wrap element bytes in the int32 total length and the trailing NUL."""
    return pack_i32(len(elements) + 5) + elements + b"\x00"


# Arrays are documents keyed "0", "1", ...; most arrays are short, so cache the common keys.
_ARRAY_KEYS = [str(i).encode("ascii") + b"\x00" for i in range(1024)]


def array_key(index: int) -> bytes:
    if index < len(_ARRAY_KEYS):
        return _ARRAY_KEYS[index]
    return str(index).encode("ascii") + b"\x00"


def array_payload(values: list[Value]) -> bytes:
    parts = bytearray()
    for index, (btype, payload) in enumerate(values):
        parts.append(btype)
        parts += array_key(index)
        parts += payload
    return frame_document(parts)

"""Fixed-width scalars: bool, integers, floats, uuid, tid, "char"."""

from __future__ import annotations

import struct

from parallelsync.transcode.bson_writer import (
    T_BINARY,
    T_BOOL,
    T_DOUBLE,
    T_INT32,
    T_INT64,
    T_STRING,
    Buffer,
    Value,
    ValueEncoder,
    pack_f64,
    pack_i32,
    pack_i64,
    string_payload,
)
from parallelsync.transcode.model import Codec

_i16 = struct.Struct(">h").unpack_from
_i32 = struct.Struct(">i").unpack_from
_u32 = struct.Struct(">I").unpack_from
_i64 = struct.Struct(">q").unpack_from
_u64 = struct.Struct(">Q").unpack_from
_f32 = struct.Struct(">f").unpack_from
_f64 = struct.Struct(">d").unpack_from
_tid = struct.Struct(">IH").unpack_from

_INT64_MAX = (1 << 63) - 1
_TRUE: Value = (T_BOOL, b"\x01")
_FALSE: Value = (T_BOOL, b"\x00")
_UUID_PREFIX = b"\x10\x00\x00\x00\x04"  # int32 length 16 + binary subtype 4 (standard UUID)


def check_length(length: int, expected: int, name: str) -> None:
    if length != expected:
        raise ValueError(f"{name} value has {length} bytes, expected {expected}")


def encode_bool(buf: Buffer, pos: int, length: int) -> Value:
    check_length(length, 1, "bool")
    return _TRUE if buf[pos] else _FALSE


def encode_int2(buf: Buffer, pos: int, length: int) -> Value:
    check_length(length, 2, "int2")
    return (T_INT32, pack_i32(_i16(buf, pos)[0]))


def encode_int4(buf: Buffer, pos: int, length: int) -> Value:
    check_length(length, 4, "int4")
    return (T_INT32, pack_i32(_i32(buf, pos)[0]))


def encode_int8(buf: Buffer, pos: int, length: int) -> Value:
    check_length(length, 8, "int8")
    return (T_INT64, pack_i64(_i64(buf, pos)[0]))


def encode_uint32(buf: Buffer, pos: int, length: int) -> Value:
    """oid and xid are unsigned 32-bit: int32 would turn the upper half negative."""
    check_length(length, 4, "oid/xid")
    return (T_INT64, pack_i64(_u32(buf, pos)[0]))


def encode_xid8(buf: Buffer, pos: int, length: int) -> Value:
    check_length(length, 8, "xid8")
    value = _u64(buf, pos)[0]
    if value > _INT64_MAX:
        raise ValueError(f"xid8 {value} does not fit in a BSON int64")
    return (T_INT64, pack_i64(value))


def encode_float4(buf: Buffer, pos: int, length: int) -> Value:
    check_length(length, 4, "float4")
    return (T_DOUBLE, pack_f64(_f32(buf, pos)[0]))


def encode_float8(buf: Buffer, pos: int, length: int) -> Value:
    check_length(length, 8, "float8")
    return (T_DOUBLE, pack_f64(_f64(buf, pos)[0]))


def encode_tid(buf: Buffer, pos: int, length: int) -> Value:
    check_length(length, 6, "tid")
    block, offset = _tid(buf, pos)
    return (T_INT64, pack_i64(block << 16 | offset))


def encode_char(buf: Buffer, pos: int, length: int) -> Value:
    """The one-byte "char": high-bit bytes become charout's octal escape (not valid UTF-8 alone)."""
    if length == 0:
        return (T_STRING, b"\x01\x00\x00\x00\x00")
    check_length(length, 1, "char")
    byte = buf[pos]
    if byte == 0:
        text = b""
    elif byte < 0x80:
        text = bytes((byte,))
    else:
        text = b"\\%03o" % byte
    return (T_STRING, string_payload(text))


def encode_uuid(buf: Buffer, pos: int, length: int) -> Value:
    check_length(length, 16, "uuid")
    return (T_BINARY, _UUID_PREFIX + buf[pos : pos + 16])


def encode_uuid_string(buf: Buffer, pos: int, length: int) -> Value:
    check_length(length, 16, "uuid")
    h = bytes(buf[pos : pos + 16]).hex()
    text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode("ascii")
    return (T_STRING, string_payload(text))


def encode_text(buf: Buffer, pos: int, length: int) -> Value:
    raw = bytes(buf[pos : pos + length])
    # Validate: a string that is not UTF-8 (SQL_ASCII databases pass bytes through) would make
    # the document unreadable for every driver later.
    raw.decode("utf-8")
    return (T_STRING, string_payload(raw))


def encode_bytea(buf: Buffer, pos: int, length: int) -> Value:
    return (T_BINARY, pack_i32(length) + b"\x00" + buf[pos : pos + length])


def uuid_encoder(codec: Codec) -> ValueEncoder:
    if codec.mode == "string":
        return encode_uuid_string
    if codec.mode != "":
        raise ValueError(f"unknown uuid mode {codec.mode!r}")
    return encode_uuid

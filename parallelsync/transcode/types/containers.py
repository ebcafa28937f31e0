"""array, range and composite: values that contain other values (encoded by their own codecs)."""

from __future__ import annotations

import struct

from parallelsync.transcode.bson_writer import (
    NULL_VALUE,
    T_ARRAY,
    T_BOOL,
    T_DOCUMENT,
    Buffer,
    Value,
    ValueEncoder,
    array_payload,
    cstring,
    frame_document,
    pack_i32,
    str_value,
)
from parallelsync.transcode.model import NullPolicy

_i32 = struct.Struct(">i").unpack_from
_array_header = struct.Struct(">iiI").unpack_from
_dim = struct.Struct(">ii").unpack_from
_field_header = struct.Struct(">Ii").unpack_from

EMPTY_ARRAY: Value = (T_ARRAY, b"\x05\x00\x00\x00\x00")
MAX_DIMS = 6  # PostgreSQL's MAXDIM

RANGE_EMPTY = 0x01
RANGE_LB_INC = 0x02
RANGE_UB_INC = 0x04
RANGE_LB_INF = 0x08
RANGE_UB_INF = 0x10
RANGE_LB_NULL = 0x20
RANGE_UB_NULL = 0x40

_K_LOWER = cstring("lower")
_K_UPPER = cstring("upper")
_K_BOUNDS = cstring("bounds")
_K_VALUES = cstring("values")
_T_INT32 = 0x10
_EMPTY_RANGE: Value = (T_DOCUMENT, frame_document(bytes((T_BOOL,)) + cstring("empty") + b"\x01"))


def bounded_array(lower: list[int], values: Value) -> Value:
    """{lower: [lower bound per dimension], values: [...]}: an array whose lower bound is not 1
    (`'[0:2]={1,2,3}'`), with `--array-bounds keep`; the elements alone would lose the indexes."""
    lows = array_payload([(_T_INT32, pack_i32(b)) for b in lower])
    body = bytearray((T_ARRAY,)) + _K_LOWER + lows
    body.append(values[0])
    body += _K_VALUES + values[1]
    return (T_DOCUMENT, frame_document(body))


def array_encoder(elem: ValueEncoder, *, keep_bounds: bool = False) -> ValueEncoder:
    def read_level(
        buf: Buffer, pos: int, end: int, dims: list[int], level: int
    ) -> tuple[Value, int]:
        values: list[Value] = []
        if level == len(dims) - 1:
            for _ in range(dims[level]):
                if pos + 4 > end:
                    raise ValueError("array value truncated")
                length = _i32(buf, pos)[0]
                pos += 4
                if length < 0:
                    values.append(NULL_VALUE)
                    continue
                if pos + length > end:
                    raise ValueError("array element runs past the value")
                values.append(elem(buf, pos, length))
                pos += length
        else:
            for _ in range(dims[level]):
                value, pos = read_level(buf, pos, end, dims, level + 1)
                values.append(value)
        return (T_ARRAY, array_payload(values)), pos

    def encode_array(buf: Buffer, pos: int, length: int) -> Value:
        end = pos + length
        ndim, _has_null, _elem_oid = _array_header(buf, pos)
        if ndim == 0:
            return EMPTY_ARRAY
        if not 0 < ndim <= MAX_DIMS:
            raise ValueError(f"array with {ndim} dimensions")
        dims, lower = [], []
        for i in range(ndim):
            size, low = _dim(buf, pos + 12 + 8 * i)
            dims.append(size)
            lower.append(low)
        if any(size < 0 for size in dims):
            raise ValueError("array with a negative dimension size")
        value, pos = read_level(buf, pos + 12 + 8 * ndim, end, dims, 0)
        if pos != end:
            raise ValueError(f"array value has {end - pos} bytes left over")
        if keep_bounds and any(low != 1 for low in lower):
            return bounded_array(lower, value)
        return value

    return encode_array


def range_encoder(elem: ValueEncoder) -> ValueEncoder:
    def encode_range(buf: Buffer, pos: int, length: int) -> Value:
        end = pos + length
        flags = buf[pos]
        if flags & RANGE_EMPTY:
            return _EMPTY_RANGE
        pos += 1
        bounds: list[Value] = []
        for missing in (RANGE_LB_INF | RANGE_LB_NULL, RANGE_UB_INF | RANGE_UB_NULL):
            if flags & missing:
                bounds.append(NULL_VALUE)
                continue
            if pos + 4 > end:
                raise ValueError("range value truncated")
            size = _i32(buf, pos)[0]
            if size < 0 or pos + 4 + size > end:
                raise ValueError("range bound runs past the value")
            bounds.append(elem(buf, pos + 4, size))
            pos += 4 + size
        if pos != end:
            raise ValueError(f"range value has {end - pos} bytes left over")
        text = ("[" if flags & RANGE_LB_INC else "(") + ("]" if flags & RANGE_UB_INC else ")")
        (lt, lower), (ut, upper) = bounds
        body = bytearray()
        body.append(lt)
        body += _K_LOWER + lower
        body.append(ut)
        body += _K_UPPER + upper
        st, sp = str_value(text)
        body.append(st)
        body += _K_BOUNDS + sp
        return (T_DOCUMENT, frame_document(body))

    return encode_range


def composite_encoder(
    fields: list[ValueEncoder], names: tuple[str, ...], nulls: NullPolicy
) -> ValueEncoder:
    keys = [cstring(name) for name in names]
    omit = nulls == "omit"

    def encode_composite(buf: Buffer, pos: int, length: int) -> Value:
        end = pos + length
        nfields = _i32(buf, pos)[0]
        if nfields != len(fields):
            raise ValueError(f"composite value has {nfields} fields, the codec has {len(fields)}")
        pos += 4
        body = bytearray()
        for key, encode in zip(keys, fields, strict=True):
            if pos + 8 > end:
                raise ValueError("composite value truncated")
            _oid, size = _field_header(buf, pos)
            pos += 8
            if size < 0:
                if not omit:
                    body.append(NULL_VALUE[0])
                    body += key
                continue
            if pos + size > end:
                raise ValueError("composite field runs past the value")
            btype, payload = encode(buf, pos, size)
            body.append(btype)
            body += key
            body += payload
            pos += size
        if pos != end:
            raise ValueError(f"composite value has {end - pos} bytes left over")
        return (T_DOCUMENT, frame_document(body))

    return encode_composite

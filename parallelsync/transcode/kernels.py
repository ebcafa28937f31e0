# ruff: noqa: SIM109 -- plain comparisons compile to two integer compares; `in (a, b)` builds tuples
"""numba kernels: the tuple walk and the document assembly over whole buffers.

One call handles every tuple of a buffer, so the per-row cost is machine code, not Python
(PERF-NOTES: ~0.34 µs/row for 7 columns). The kernels only signal errors with a code; the caller
then re-runs the reference path, which raises the error with its full message.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Field kinds the assembly kernel writes itself; K_PREENCODED values come from the reference
# encoders as (type byte + payload) in a side blob.
K_PREENCODED = 0
K_BOOL = 1
K_INT2 = 2
K_INT4 = 3
K_INT8 = 4
K_UINT32 = 5
K_FLOAT4 = 6
K_FLOAT8 = 7
K_UUID = 8
K_DATE = 9
K_TIMESTAMP = 10
K_TEXT = 11
K_BYTEA = 12
K_TID = 13
OP_DOC_START = -1
OP_DOC_END = -2

INF_CLAMP = 0
INF_NULL = 1
INF_STRING = 2
INF_ERROR = 3

ERR_NONE = 0
ERR_FRAMING = 1
ERR_VALUE = 2
ERR_TOO_LARGE = 3

_INT32_MAX = 2147483647
_INT32_MIN = -2147483648
_INT64_MAX = 9223372036854775807
_INT64_MIN = -9223372036854775808
_EPOCH_DAYS = 10957
_EPOCH_MS = 946684800000
_MS_PER_DAY = 86400000
MAX_DEPTH = 64


@njit(cache=True, inline="always")
def _i16(buf, p):  # type: ignore[no-untyped-def]
    v = (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])
    return v - 65536 if v >= 32768 else v


@njit(cache=True, inline="always")
def _i32(buf, p):  # type: ignore[no-untyped-def]
    v = (
        (np.int64(buf[p]) << 24)
        | (np.int64(buf[p + 1]) << 16)
        | (np.int64(buf[p + 2]) << 8)
        | np.int64(buf[p + 3])
    )
    return v - 4294967296 if v >= 2147483648 else v


@njit(cache=True, inline="always")
def _u32(buf, p):  # type: ignore[no-untyped-def]
    return (
        (np.int64(buf[p]) << 24)
        | (np.int64(buf[p + 1]) << 16)
        | (np.int64(buf[p + 2]) << 8)
        | np.int64(buf[p + 3])
    )


@njit(cache=True, inline="always")
def _i64(buf, p):  # type: ignore[no-untyped-def]
    v = np.uint64(0)
    for i in range(8):
        v = (v << np.uint64(8)) | np.uint64(buf[p + i])
    return np.int64(v)


@njit(cache=True, inline="always")
def _put_i32(out, q, v):  # type: ignore[no-untyped-def]
    for i in range(4):
        out[q + i] = (v >> (8 * i)) & 0xFF


@njit(cache=True, inline="always")
def _put_i64(out, q, v):  # type: ignore[no-untyped-def]
    for i in range(8):
        out[q + i] = (v >> (8 * i)) & 0xFF


@njit(cache=True, inline="always")
def _valid_utf8(buf, p, n):  # type: ignore[no-untyped-def]
    """Strict UTF-8 (no overlongs, no surrogates), as bytes.decode('utf-8') checks it."""
    i = p
    e = p + n
    while i < e and buf[i] < 0x80:  # most text is ASCII: one compare per byte
        i += 1
    while i < e:
        c = buf[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2 or c > 0xF4:
            return False
        if c < 0xE0:
            need = 1
            lo, hi = 0x80, 0xBF
        elif c < 0xF0:
            need = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        else:
            need = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        if i + need >= e:
            return False
        c2 = buf[i + 1]
        if c2 < lo or c2 > hi:
            return False
        for k in range(2, need + 1):
            ck = buf[i + k]
            if ck < 0x80 or ck > 0xBF:
                return False
        i += need + 1
    return True


@njit(cache=True, nogil=True)
def walk(buf, start, ncols):  # type: ignore[no-untyped-def]
    """Locate every field: (rows, end, finished, error, offsets[r, c], lengths[r, c])."""
    n = buf.shape[0]
    pos = start
    rows = 0
    finished = False
    err = ERR_NONE
    # Count first so the tables are allocated once at their exact size.
    while pos < n:
        if pos + 2 > n:
            err = ERR_FRAMING
            break
        nf = _i16(buf, pos)
        if nf == -1:
            finished = True
            pos += 2
            break
        if nf != ncols:
            err = ERR_FRAMING
            break
        pos += 2
        for _ in range(ncols):
            if pos + 4 > n:
                err = ERR_FRAMING
                break
            length = _i32(buf, pos)
            pos += 4
            if length > 0:
                pos += length
        if err != ERR_NONE or pos > n:
            err = ERR_FRAMING
            break
        rows += 1
    end = pos
    offs = np.empty((rows, ncols), np.int64)
    lens = np.empty((rows, ncols), np.int64)
    if err != ERR_NONE:
        return rows, end, finished, err, offs, lens
    pos = start
    for r in range(rows):
        pos += 2
        for c in range(ncols):
            length = _i32(buf, pos)
            pos += 4
            offs[r, c] = pos
            if length >= 0:
                lens[r, c] = length
                pos += length
            else:
                lens[r, c] = -1
    return rows, end, finished, err, offs, lens


@njit(cache=True, inline="always")
def _value_size(kind, buf, p, n, inf_policy):  # type: ignore[no-untyped-def]
    """Payload bytes of one non-NULL native value; -1 = malformed, -2 = infinity refused.

    For infinity under the null policy the payload is empty (the type byte changes)."""
    if kind == K_BOOL:
        return 1 if n == 1 else -1
    if kind == K_INT2:
        return 4 if n == 2 else -1
    if kind == K_INT4:
        return 4 if n == 4 else -1
    if kind == K_INT8 or kind == K_FLOAT8:
        return 8 if n == 8 else -1
    if kind == K_UINT32 or kind == K_FLOAT4:
        return 8 if n == 4 else -1
    if kind == K_TID:
        return 8 if n == 6 else -1
    if kind == K_UUID:
        return 21 if n == 16 else -1
    if kind == K_TEXT:
        if not _valid_utf8(buf, p, n):
            return -1
        return n + 5
    if kind == K_BYTEA:
        return n + 5
    if kind == K_DATE or kind == K_TIMESTAMP:
        positive = False
        infinite = False
        if kind == K_DATE:
            if n != 4:
                return -1
            v = _i32(buf, p)
            infinite = v == _INT32_MAX or v == _INT32_MIN
            positive = v == _INT32_MAX
        else:
            if n != 8:
                return -1
            v = _i64(buf, p)
            infinite = v == _INT64_MAX or v == _INT64_MIN
            positive = v == _INT64_MAX
        if not infinite or inf_policy == INF_CLAMP:
            return 8
        if inf_policy == INF_NULL:
            return 0
        if inf_policy == INF_STRING:
            return 4 + (8 if positive else 9) + 1
        return -2
    return -1


@njit(cache=True, nogil=True)
def _write_string(out, q, text):  # type: ignore[no-untyped-def]
    _put_i32(out, q, len(text) + 1)
    q += 4
    for ch in text:
        out[q] = ord(ch)
        q += 1
    out[q] = 0
    return q + 1


@njit(cache=True, inline="always")
def _write_value(out, q, kind, buf, p, n, inf_policy, key, kstart, klen, s32, s64):  # type: ignore[no-untyped-def]
    """Write type byte, key and payload of one non-NULL native value; return the new end.

    s32 (uint32[1]) and s64 (float64[1]) are scratch cells for the float4 -> double widening,
    allocated once per call: numba has no bit-cast for scalars."""
    t = q
    q += 1
    for i in range(klen):
        out[q + i] = key[kstart + i]
    q += klen
    if kind == K_BOOL:
        out[t] = 0x08
        out[q] = 1 if buf[p] != 0 else 0
        return q + 1
    if kind == K_INT2:
        out[t] = 0x10
        _put_i32(out, q, _i16(buf, p))
        return q + 4
    if kind == K_INT4:
        out[t] = 0x10
        for i in range(4):
            out[q + i] = buf[p + 3 - i]
        return q + 4
    if kind == K_INT8 or kind == K_FLOAT8:
        out[t] = 0x12 if kind == K_INT8 else 0x01
        for i in range(8):
            out[q + i] = buf[p + 7 - i]
        return q + 8
    if kind == K_UINT32:
        out[t] = 0x12
        _put_i64(out, q, _u32(buf, p))
        return q + 8
    if kind == K_FLOAT4:
        out[t] = 0x01
        s32[0] = np.uint32(_u32(buf, p))
        s64[0] = np.float64(s32.view(np.float32)[0])
        raw = s64.view(np.uint8)
        for i in range(8):
            out[q + i] = raw[i]
        return q + 8
    if kind == K_TID:
        out[t] = 0x12
        _put_i64(out, q, (_u32(buf, p) << 16) | ((np.int64(buf[p + 4]) << 8) | buf[p + 5]))
        return q + 8
    if kind == K_UUID:
        out[t] = 0x05
        _put_i32(out, q, 16)
        out[q + 4] = 4
        for i in range(16):
            out[q + 5 + i] = buf[p + i]
        return q + 21
    if kind == K_TEXT:
        out[t] = 0x02
        _put_i32(out, q, n + 1)
        for i in range(n):
            out[q + 4 + i] = buf[p + i]
        out[q + 4 + n] = 0
        return q + n + 5
    if kind == K_BYTEA:
        out[t] = 0x05
        _put_i32(out, q, n)
        out[q + 4] = 0
        for i in range(n):
            out[q + 5 + i] = buf[p + i]
        return q + n + 5
    # K_DATE / K_TIMESTAMP
    if kind == K_DATE:
        v = _i32(buf, p)
        infinite = v == _INT32_MAX or v == _INT32_MIN
        positive = v == _INT32_MAX
        ms = (v + _EPOCH_DAYS) * _MS_PER_DAY
    else:
        v = _i64(buf, p)
        infinite = v == _INT64_MAX or v == _INT64_MIN
        positive = v == _INT64_MAX
        ms = (v // 1000 + _EPOCH_MS) if not infinite else 0
    if infinite:
        if inf_policy == INF_NULL:
            out[t] = 0x0A
            return q
        if inf_policy == INF_STRING:
            out[t] = 0x02
            return _write_string(out, q, "infinity" if positive else "-infinity")
        ms = _INT64_MAX if positive else _INT64_MIN
    out[t] = 0x09
    _put_i64(out, q, ms)
    return q + 8


@njit(cache=True, nogil=True)
def assemble(  # type: ignore[no-untyped-def]
    buf,
    offs,
    lens,
    op_kind,
    op_col,
    op_key_off,
    op_key_len,
    op_slot,
    keys,
    blob,
    blob_off,
    blob_len,
    omit_null,
    inf_policy,
    max_doc,
):
    """Write every document: (out, doc_offsets, error, error_row)."""
    rows = offs.shape[0]
    nops = op_kind.shape[0]
    doc_off = np.empty(rows + 1, np.int64)
    doc_off[0] = 0
    # Pass 1: exact sizes (and every check), so the output is allocated once.
    for r in range(rows):
        size = 5
        for o in range(nops):
            kind = op_kind[o]
            klen = op_key_len[o]
            if kind == OP_DOC_START:
                size += 1 + klen + 4
                continue
            if kind == OP_DOC_END:
                size += 1
                continue
            c = op_col[o]
            n = lens[r, c]
            if n < 0:
                if not omit_null:
                    size += 1 + klen
                continue
            if kind == K_PREENCODED:
                size += klen + blob_len[r, op_slot[o]]
                continue
            vs = _value_size(kind, buf, offs[r, c], n, inf_policy)
            if vs < 0:
                return np.empty(0, np.uint8), doc_off, ERR_VALUE, r
            size += 1 + klen + vs
        if size > max_doc:
            return np.empty(0, np.uint8), doc_off, ERR_TOO_LARGE, r
        doc_off[r + 1] = doc_off[r] + size
    out = np.empty(doc_off[rows], np.uint8)
    stack = np.empty(MAX_DEPTH, np.int64)
    s32 = np.empty(1, np.uint32)
    s64 = np.empty(1, np.float64)
    # Pass 2: write.
    for r in range(rows):
        q = doc_off[r]
        _put_i32(out, q, doc_off[r + 1] - q)
        q += 4
        depth = 0
        for o in range(nops):
            kind = op_kind[o]
            ks = op_key_off[o]
            klen = op_key_len[o]
            if kind == OP_DOC_START:
                out[q] = 0x03
                for i in range(klen):
                    out[q + 1 + i] = keys[ks + i]
                q += 1 + klen
                stack[depth] = q
                depth += 1
                q += 4
                continue
            if kind == OP_DOC_END:
                out[q] = 0
                q += 1
                depth -= 1
                _put_i32(out, stack[depth], q - stack[depth])
                continue
            c = op_col[o]
            n = lens[r, c]
            if n < 0:
                if not omit_null:
                    out[q] = 0x0A
                    for i in range(klen):
                        out[q + 1 + i] = keys[ks + i]
                    q += 1 + klen
                continue
            if kind == K_PREENCODED:
                s = op_slot[o]
                b = blob_off[r, s]
                m = blob_len[r, s]
                out[q] = blob[b]
                for i in range(klen):
                    out[q + 1 + i] = keys[ks + i]
                q += 1 + klen
                for i in range(m - 1):
                    out[q + i] = blob[b + 1 + i]
                q += m - 1
                continue
            q = _write_value(out, q, kind, buf, offs[r, c], n, inf_policy, keys, ks, klen, s32, s64)
        out[q] = 0
    return out, doc_off, ERR_NONE, -1


_POW10_U64 = np.array([10**i for i in range(20)], dtype=np.uint64)
_MAX_DSCALE = 6176  # exponent -dscale must stay >= Decimal128's smallest exponent


@njit(cache=True, nogil=True)
def numeric_cells(buf, offs, lens, col):  # type: ignore[no-untyped-def]
    """numeric -> Decimal128 (type byte + 16 bytes per row) for coefficients that fit in uint64.

    Returns (cells[rows * 17], ok[rows]); rows with ok False (NULL, or values with more digits)
    are left to the Python encoder, which handles every case."""
    rows = offs.shape[0]
    cells = np.zeros(rows * 17, np.uint8)
    ok = np.zeros(rows, np.bool_)
    for r in range(rows):
        n = lens[r, col]
        if n < 8:
            continue
        p = offs[r, col]
        ndigits = _i16(buf, p)
        weight = _i16(buf, p + 2)
        sign = (np.int64(buf[p + 4]) << 8) | np.int64(buf[p + 5])
        dscale = _i16(buf, p + 6)
        if n != 8 + 2 * ndigits or ndigits < 0 or dscale < 0:
            continue
        q = r * 17
        hi = np.uint64(0)
        lo = np.uint64(0)
        if sign == 0xC000:
            hi = np.uint64(0x7C00000000000000)
        elif sign == 0xD000:
            hi = np.uint64(0x7800000000000000)
        elif sign == 0xF000:
            hi = np.uint64(0xF800000000000000)
        elif sign == 0 or sign == 0x4000:
            if ndigits > 4 or dscale > _MAX_DSCALE:
                continue  # may not fit in uint64: Python's exact path
            d = np.uint64(0)
            bad = False
            for i in range(ndigits):
                g = (np.int64(buf[p + 8 + 2 * i]) << 8) | np.int64(buf[p + 9 + 2 * i])
                if g > 9999:
                    bad = True
                d = d * np.uint64(10000) + np.uint64(g)
            if bad:
                continue
            shift = 4 * (weight - ndigits + 1) + dscale
            if d == 0:
                c = np.uint64(0)
            elif shift >= 0:
                if shift > 19 or d > np.uint64(0xFFFFFFFFFFFFFFFF) // _POW10_U64[shift]:
                    continue
                c = d * _POW10_U64[shift]
            elif -shift > 19:
                c = np.uint64(0)
            else:
                c = d // _POW10_U64[-shift]
            lo = c
            hi = np.uint64(_MAX_DSCALE - dscale) << np.uint64(49)
            if sign == 0x4000 and c != 0:
                hi |= np.uint64(1) << np.uint64(63)
        else:
            continue
        cells[q] = 0x13
        for i in range(8):
            cells[q + 1 + i] = np.uint8((lo >> np.uint64(8 * i)) & np.uint64(0xFF))
            cells[q + 9 + i] = np.uint8((hi >> np.uint64(8 * i)) & np.uint64(0xFF))
        ok[r] = True
    return cells, ok

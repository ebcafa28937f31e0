# ruff: noqa: SIM108 -- explicit branches keep numba's float typing obvious
"""jsonb text -> BSON value in numba, for the common cells; the rest go to the Python encoder.

jsonb arrives as PostgreSQL's canonical output (no duplicate keys, numbers without exponents), so
a small iterative parser covers nearly every value. A cell is handed back (ok=False) whenever the
kernel could differ from orjson + bson: integers over 18 digits, floats that are not exactly
m * 10**e with m < 2**53 and |e| <= 22 (the range where one IEEE operation is correctly rounded),
lone surrogates, NUL in keys, invalid UTF-8, keys the key policy must look at, deep nesting, or
anything malformed. The Python encoder then produces the value or the error.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# numba's on-disk cache is keyed on this file only: after editing these helpers in kernels.py,
# clear __pycache__/*.nbi|*.nbc (deployed code never changes, so this only matters in development).
from parallelsync.transcode.kernels import _put_i32, _put_i64, _valid_utf8

# `_string` and `_number` are inlined into `_cell` by numba (inline="always"): measured 15-20 %
# faster on jsonb cells than separate compiled functions, for ~15 s more compile time at set-up.

_MAX_DEPTH = 128
_EXACT_POW10 = np.array([10.0**i for i in range(23)], dtype=np.float64)


@njit(cache=True, inline="always")
def _skip_ws(buf, pos, end):  # type: ignore[no-untyped-def]
    while pos < end:
        c = buf[pos]
        if c != 0x20 and c != 0x0A and c != 0x0D and c != 0x09:
            break
        pos += 1
    return pos


@njit(cache=True, inline="always")
def _hex4(buf, pos, end):  # type: ignore[no-untyped-def]
    if pos + 4 > end:
        return -1
    v = 0
    for i in range(4):
        c = buf[pos + i]
        if 0x30 <= c <= 0x39:
            d = c - 0x30
        elif 0x61 <= c <= 0x66:
            d = c - 0x61 + 10
        elif 0x41 <= c <= 0x46:
            d = c - 0x41 + 10
        else:
            return -1
        v = v * 16 + d
    return v


@njit(cache=True, inline="always")
def _string(buf, pos, end, out, q, is_key):  # type: ignore[no-untyped-def]
    """Decode the JSON string at pos (after the quote) into out[q:]; return (pos, q) or q = -1."""
    while pos < end:
        c = buf[pos]
        if c == 0x22:
            return pos + 1, q
        if c < 0x20:
            return pos, -1
        if c != 0x5C:
            out[q] = c
            q += 1
            pos += 1
            continue
        if pos + 1 >= end:
            return pos, -1
        e = buf[pos + 1]
        pos += 2
        if e == 0x22 or e == 0x5C or e == 0x2F:
            out[q] = e
        elif e == 0x62:
            out[q] = 0x08
        elif e == 0x66:
            out[q] = 0x0C
        elif e == 0x6E:
            out[q] = 0x0A
        elif e == 0x72:
            out[q] = 0x0D
        elif e == 0x74:
            out[q] = 0x09
        elif e == 0x75:
            cp = _hex4(buf, pos, end)
            if cp < 0:
                return pos, -1
            pos += 4
            if 0xD800 <= cp <= 0xDBFF:
                if pos + 2 > end or buf[pos] != 0x5C or buf[pos + 1] != 0x75:
                    return pos, -1
                low = _hex4(buf, pos + 2, end)
                if not 0xDC00 <= low <= 0xDFFF:
                    return pos, -1
                pos += 6
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
            elif 0xDC00 <= cp <= 0xDFFF:
                return pos, -1
            if cp == 0 and is_key:
                return pos, -1
            if cp < 0x80:
                out[q] = cp
            elif cp < 0x800:
                out[q] = 0xC0 | (cp >> 6)
                q += 1
                out[q] = 0x80 | (cp & 0x3F)
            elif cp < 0x10000:
                out[q] = 0xE0 | (cp >> 12)
                out[q + 1] = 0x80 | ((cp >> 6) & 0x3F)
                q += 2
                out[q] = 0x80 | (cp & 0x3F)
            else:
                out[q] = 0xF0 | (cp >> 18)
                out[q + 1] = 0x80 | ((cp >> 12) & 0x3F)
                out[q + 2] = 0x80 | ((cp >> 6) & 0x3F)
                q += 3
                out[q] = 0x80 | (cp & 0x3F)
        else:
            return pos, -1
        q += 1
    return pos, -1


@njit(cache=True, inline="always")
def _number(buf, pos, end, out, tp, q):  # type: ignore[no-untyped-def]
    """Parse a JSON number; write its type at out[tp] and payload at q; return (pos, q | -1)."""
    negative = False
    if buf[pos] == 0x2D:
        negative = True
        pos += 1
    mantissa = 0
    digits = 0  # significant digits (leading zeros excluded)
    frac = 0
    exponent = 0
    is_float = False
    start = pos
    while pos < end and 0x30 <= buf[pos] <= 0x39:
        if digits or buf[pos] != 0x30:
            digits += 1
            if digits <= 18:
                mantissa = mantissa * 10 + (buf[pos] - 0x30)
        pos += 1
    if pos == start or (pos - start > 1 and buf[start] == 0x30):
        return pos, -1  # no digits, or a leading zero ("01"), which JSON forbids
    if pos < end and buf[pos] == 0x2E:
        is_float = True
        pos += 1
        fstart = pos
        while pos < end and 0x30 <= buf[pos] <= 0x39:
            if digits or buf[pos] != 0x30:
                digits += 1
                if digits <= 18:
                    mantissa = mantissa * 10 + (buf[pos] - 0x30)
            frac += 1
            pos += 1
        if pos == fstart:
            return pos, -1
    if pos < end and (buf[pos] == 0x65 or buf[pos] == 0x45):
        is_float = True
        pos += 1
        eneg = False
        if pos < end and (buf[pos] == 0x2B or buf[pos] == 0x2D):
            eneg = buf[pos] == 0x2D
            pos += 1
        estart = pos
        while pos < end and 0x30 <= buf[pos] <= 0x39:
            if exponent < 100000:
                exponent = exponent * 10 + (buf[pos] - 0x30)
            pos += 1
        if pos == estart:
            return pos, -1
        if eneg:
            exponent = -exponent
    if not is_float:
        if digits > 18:
            return pos, -1
        v = -mantissa if negative else mantissa
        if -2147483648 <= v <= 2147483647:
            out[tp] = 0x10
            _put_i32(out, q, v)
            return pos, q + 4
        out[tp] = 0x12
        _put_i64(out, q, v)
        return pos, q + 8
    if digits > 15:
        return pos, -1
    e10 = exponent - frac
    if e10 < -22 or e10 > 22:
        if mantissa != 0:
            return pos, -1
        e10 = 0
    value = np.float64(mantissa)
    if e10 >= 0:
        value = value * _EXACT_POW10[e10]
    else:
        value = value / _EXACT_POW10[-e10]
    if negative:
        value = -value
    out[tp] = 0x01
    bits = np.empty(1, np.float64)
    bits[0] = value
    raw = bits.view(np.uint8)
    for i in range(8):
        out[q + i] = raw[i]
    return pos, q + 8


@njit(cache=True, inline="always")
def _index_key(out, q, index):  # type: ignore[no-untyped-def]
    if index == 0:
        out[q] = 0x30
        out[q + 1] = 0
        return q + 2
    n = 0
    v = index
    while v:
        n += 1
        v //= 10
    v = index
    for i in range(n - 1, -1, -1):
        out[q + i] = 0x30 + v % 10
        v //= 10
    out[q + n] = 0
    return q + n + 1


@njit(cache=True, inline="always")
def _element_key(buf, pos, end, out, q, in_array, index, check_keys):  # type: ignore[no-untyped-def]
    """Write the BSON key of a container's next element at out[q:]: the decimal index in an
    array, else the JSON `"key":` at pos (up to the value). Return (pos, q) or q = -1."""
    if in_array:
        return pos, _index_key(out, q, index)
    if pos >= end or buf[pos] != 0x22:
        return pos, -1
    kstart = q
    pos, q = _string(buf, pos + 1, end, out, q, True)
    if q < 0:
        return pos, -1
    if check_keys:
        if q > kstart and out[kstart] == 0x24:
            return pos, -1
        for i in range(kstart, q):
            if out[i] == 0x2E:
                return pos, -1
    out[q] = 0
    q += 1
    pos = _skip_ws(buf, pos, end)
    if pos >= end or buf[pos] != 0x3A:
        return pos, -1
    return _skip_ws(buf, pos + 1, end), q


@njit(cache=True, nogil=True)
def _cell(buf, pos, end, out, q, check_keys, kinds, starts, counts):  # type: ignore[no-untyped-def]
    """One JSON text -> type byte + payload at out[q:]; return the end or -1 (not handled)."""
    if not _valid_utf8(buf, pos, end - pos):
        return -1
    depth = 0
    tp = q
    q += 1
    pos = _skip_ws(buf, pos, end)
    while True:
        # --- one value, type byte at tp ---
        if pos >= end:
            return -1
        c = buf[pos]
        if c == 0x7B or c == 0x5B:
            if depth >= _MAX_DEPTH:
                return -1
            out[tp] = 0x03 if c == 0x7B else 0x04
            kinds[depth] = c
            starts[depth] = q
            counts[depth] = 0
            depth += 1
            q += 4
            pos = _skip_ws(buf, pos + 1, end)
            if pos < end and buf[pos] == c + 2:  # "}" is "{" + 2, "]" is "[" + 2
                pos += 1
                out[q] = 0
                q += 1
                depth -= 1
                _put_i32(out, starts[depth], q - starts[depth])
            else:
                tp = q
                pos, q = _element_key(buf, pos, end, out, q + 1, c == 0x5B, 0, check_keys)
                if q < 0:
                    return -1
                continue
        elif c == 0x22:
            out[tp] = 0x02
            at = q
            pos, q = _string(buf, pos + 1, end, out, q + 4, False)
            if q < 0:
                return -1
            out[q] = 0
            q += 1
            _put_i32(out, at, q - at - 4)
        elif c == 0x74 or c == 0x66 or c == 0x6E:
            if (
                c == 0x74
                and pos + 4 <= end
                and buf[pos + 1] == 0x72
                and buf[pos + 2] == 0x75
                and buf[pos + 3] == 0x65
            ):
                out[tp] = 0x08
                out[q] = 1
                q += 1
                pos += 4
            elif (
                c == 0x66
                and pos + 5 <= end
                and buf[pos + 1] == 0x61
                and buf[pos + 2] == 0x6C
                and buf[pos + 3] == 0x73
                and buf[pos + 4] == 0x65
            ):
                out[tp] = 0x08
                out[q] = 0
                q += 1
                pos += 5
            elif (
                c == 0x6E
                and pos + 4 <= end
                and buf[pos + 1] == 0x75
                and buf[pos + 2] == 0x6C
                and buf[pos + 3] == 0x6C
            ):
                out[tp] = 0x0A
                pos += 4
            else:
                return -1
        elif c == 0x2D or 0x30 <= c <= 0x39:
            pos, q = _number(buf, pos, end, out, tp, q)
            if q < 0:
                return -1
        else:
            return -1
        # --- after a value: close containers or start the next element ---
        while True:
            pos = _skip_ws(buf, pos, end)
            if depth == 0:
                return q if pos == end else -1
            if pos >= end:
                return -1
            c = buf[pos]
            kind = kinds[depth - 1]
            if c == kind + 2:
                pos += 1
                out[q] = 0
                q += 1
                depth -= 1
                _put_i32(out, starts[depth], q - starts[depth])
                continue
            if c != 0x2C:
                return -1
            pos = _skip_ws(buf, pos + 1, end)
            counts[depth - 1] += 1
            tp = q
            pos, q = _element_key(
                buf, pos, end, out, q + 1, kind == 0x5B, counts[depth - 1], check_keys
            )
            if q < 0:
                return -1
            break


@njit(cache=True, nogil=True)
def jsonb_cells(buf, offs, lens, col, jsonb, check_keys):  # type: ignore[no-untyped-def]
    """Encode one json/jsonb column: (out, cell_off[rows], cell_len[rows], ok[rows])."""
    rows = offs.shape[0]
    cap = 1024
    for r in range(rows):
        if lens[r, col] > 0:
            cap += 2 * lens[r, col]
    out = np.empty(cap, np.uint8)
    cell_off = np.zeros(rows, np.int64)
    cell_len = np.zeros(rows, np.int64)
    ok = np.zeros(rows, np.bool_)
    kinds = np.empty(_MAX_DEPTH, np.int64)
    starts = np.empty(_MAX_DEPTH, np.int64)
    counts = np.empty(_MAX_DEPTH, np.int64)
    q = 0
    for r in range(rows):
        n = lens[r, col]
        p = offs[r, col]
        if n < 0:
            continue
        if jsonb:
            if n < 1 or buf[p] != 1:
                continue
            p += 1
            n -= 1
        # BSON never needs more than ~10 bytes per JSON byte (a 2-byte "1," array element with
        # a 10-digit index key); grow before the cell so the parser never checks.
        need = q + 16 * n + 64
        if need > out.shape[0]:
            bigger = np.empty(max(need, 2 * out.shape[0]), np.uint8)
            bigger[:q] = out[:q]
            out = bigger
        end = _cell(buf, p, p + n, out, q, check_keys, kinds, starts, counts)
        if end < 0:
            continue
        cell_off[r] = q
        cell_len[r] = end - q
        ok[r] = True
        q = end
    return out[:q], cell_off, cell_len, ok

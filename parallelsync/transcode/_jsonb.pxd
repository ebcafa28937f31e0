# cython: language_level=3
"""jsonb text -> one BSON value (type byte + payload), GIL-free, for the common cells.

jsonb arrives as PostgreSQL's canonical output (no duplicate keys, numbers without exponents), so
a small iterative parser covers nearly every value, in one pass (UTF-8 validated on the way). A cell is handed back (-1) whenever the
result could differ from the reference (orjson + bson): integers over 18 digits, floats that are
not exactly m * 10**e with m < 2**53 and |e| <= 22 (the range where one IEEE operation is
correctly rounded), lone surrogates, NUL in keys, invalid UTF-8, keys the key policy must look
at, nesting deeper than MAX_JSON_DEPTH, or anything malformed. The Python encoder then produces
the value or the error.

The caller guarantees 16 * len + 64 bytes of room at `out + q`: BSON never needs more than ~10
bytes per JSON byte (a 2-byte "1," array element with a 10-digit index key), so the parser never
checks for room.
"""

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcpy

from parallelsync.transcode._wire cimport uchar, utf8_char, wr_f64, wr_i32, wr_i64

cdef enum:
    MAX_JSON_DEPTH = 128
    JSON_ROOM_PER_BYTE = 16
    JSON_ROOM_EXTRA = 64

# Powers of ten that a double holds exactly (10**22 is the largest): m * 10**e, or m / 10**e,
# for m < 2**53 is then one correctly rounded IEEE operation.
cdef extern from *:
    """
    static const double ps_exact_pow10[23] = {
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
        1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22
    };
    """
    const double* EXACT_POW10 "ps_exact_pow10"


cdef inline Py_ssize_t _skip_ws(const uchar* buf, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    cdef uchar c
    while pos < end:
        c = buf[pos]
        if c != 0x20 and c != 0x0A and c != 0x0D and c != 0x09:
            break
        pos += 1
    return pos


cdef inline int _hex4(const uchar* buf, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    if pos + 4 > end:
        return -1
    cdef int v = 0, d, i
    cdef uchar c
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


cdef inline bint _special8(uint64_t w) noexcept nogil:
    """Whether any of 8 bytes is '"', '\\', a control character or not ASCII (SWAR, exact)."""
    cdef uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL
    cdef uint64_t quote = w ^ (0x22 * ones), backslash = w ^ (0x5C * ones)
    return (((quote - ones) & ~quote) | ((backslash - ones) & ~backslash)
            | ((w - 0x20 * ones) & ~w) | w) & high != 0


cdef inline Py_ssize_t _string(const uchar* buf, Py_ssize_t* ppos, Py_ssize_t end, uchar* out,
                               Py_ssize_t q, bint is_key) noexcept nogil:
    """Decode the JSON string at *ppos (after the quote) into out[q:]; return the new q or -1."""
    cdef Py_ssize_t pos = ppos[0]
    cdef uchar c, e
    cdef int cp, low, n
    cdef uint64_t word
    while pos < end:
        # Runs of plain characters eight at a time: one byte per iteration costs ~3 ns a byte.
        while pos + 8 <= end:
            memcpy(&word, buf + pos, 8)
            if _special8(word):
                break
            memcpy(out + q, &word, 8)
            q += 8
            pos += 8
        if pos >= end:
            return -1
        c = buf[pos]
        if c == 0x22:
            ppos[0] = pos + 1
            return q
        if c < 0x20:
            return -1
        if c >= 0x80:  # validated here: JSON outside strings is ASCII, so this covers the text
            n = utf8_char(buf + pos, end - pos)
            if n == 0:
                return -1
            memcpy(out + q, buf + pos, n)
            q += n
            pos += n
            continue
        if c != 0x5C:
            out[q] = c
            q += 1
            pos += 1
            continue
        if pos + 1 >= end:
            return -1
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
                return -1
            pos += 4
            if 0xD800 <= cp <= 0xDBFF:
                if pos + 2 > end or buf[pos] != 0x5C or buf[pos + 1] != 0x75:
                    return -1
                low = _hex4(buf, pos + 2, end)
                if not 0xDC00 <= low <= 0xDFFF:
                    return -1
                pos += 6
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
            elif 0xDC00 <= cp <= 0xDFFF:
                return -1
            if cp == 0 and is_key:
                return -1
            if cp < 0x80:
                out[q] = <uchar>cp
            elif cp < 0x800:
                out[q] = <uchar>(0xC0 | (cp >> 6))
                out[q + 1] = <uchar>(0x80 | (cp & 0x3F))
                q += 1
            elif cp < 0x10000:
                out[q] = <uchar>(0xE0 | (cp >> 12))
                out[q + 1] = <uchar>(0x80 | ((cp >> 6) & 0x3F))
                out[q + 2] = <uchar>(0x80 | (cp & 0x3F))
                q += 2
            else:
                out[q] = <uchar>(0xF0 | (cp >> 18))
                out[q + 1] = <uchar>(0x80 | ((cp >> 12) & 0x3F))
                out[q + 2] = <uchar>(0x80 | ((cp >> 6) & 0x3F))
                out[q + 3] = <uchar>(0x80 | (cp & 0x3F))
                q += 3
        else:
            return -1
        q += 1
    return -1


cdef inline Py_ssize_t _number(const uchar* buf, Py_ssize_t* ppos, Py_ssize_t end, uchar* out,
                               Py_ssize_t tp, Py_ssize_t q) noexcept nogil:
    """Parse a JSON number; write its type at out[tp] and payload at q; return the new q or -1."""
    cdef Py_ssize_t pos = ppos[0], start, fstart, estart
    cdef bint negative = False, is_float = False, eneg
    cdef int64_t mantissa = 0, exponent = 0, e10, v
    cdef int digits = 0, frac = 0  # significant digits (leading zeros excluded); fraction digits
    cdef double value
    if buf[pos] == 0x2D:
        negative = True
        pos += 1
    start = pos
    while pos < end and 0x30 <= buf[pos] <= 0x39:
        if digits or buf[pos] != 0x30:
            digits += 1
            if digits <= 18:
                mantissa = mantissa * 10 + (buf[pos] - 0x30)
        pos += 1
    if pos == start or (pos - start > 1 and buf[start] == 0x30):
        return -1  # no digits, or a leading zero ("01"), which JSON forbids
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
            return -1
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
            return -1
        if eneg:
            exponent = -exponent
    ppos[0] = pos
    if not is_float:
        if digits > 18:
            return -1
        v = -mantissa if negative else mantissa
        if -2147483648 <= v <= 2147483647:
            out[tp] = 0x10
            wr_i32(out + q, <int32_t>v)
            return q + 4
        out[tp] = 0x12
        wr_i64(out + q, v)
        return q + 8
    if digits > 15:
        return -1
    e10 = exponent - frac
    if e10 < -22 or e10 > 22:
        if mantissa != 0:
            return -1
        e10 = 0
    value = <double>mantissa
    if e10 >= 0:
        value = value * EXACT_POW10[e10]
    else:
        value = value / EXACT_POW10[-e10]
    if negative:
        value = -value
    out[tp] = 0x01
    wr_f64(out + q, value)
    return q + 8


cdef inline Py_ssize_t _index_key(uchar* out, Py_ssize_t q, int64_t index) noexcept nogil:
    if index == 0:
        out[q] = 0x30
        out[q + 1] = 0
        return q + 2
    cdef int n = 0, i
    cdef int64_t v = index
    while v:
        n += 1
        v //= 10
    v = index
    for i in range(n - 1, -1, -1):
        out[q + i] = <uchar>(0x30 + v % 10)
        v //= 10
    out[q + n] = 0
    return q + n + 1


cdef inline Py_ssize_t _element_key(const uchar* buf, Py_ssize_t* ppos, Py_ssize_t end,
                                    uchar* out, Py_ssize_t q, bint in_array, int64_t index,
                                    bint check_keys) noexcept nogil:
    """Write the BSON key of a container's next element at out[q:]: the decimal index in an
    array, else the JSON `"key":` at *ppos (up to the value). Return the new q or -1."""
    if in_array:
        return _index_key(out, q, index)
    cdef Py_ssize_t pos = ppos[0], kstart = q, i
    if pos >= end or buf[pos] != 0x22:
        return -1
    ppos[0] = pos + 1
    q = _string(buf, ppos, end, out, q, True)
    if q < 0:
        return -1
    if check_keys:
        if q > kstart and out[kstart] == 0x24:
            return -1
        for i in range(kstart, q):
            if out[i] == 0x2E:
                return -1
    out[q] = 0
    q += 1
    pos = _skip_ws(buf, ppos[0], end)
    if pos >= end or buf[pos] != 0x3A:
        return -1
    ppos[0] = _skip_ws(buf, pos + 1, end)
    return q


cdef inline Py_ssize_t json_value(const uchar* buf, Py_ssize_t pos, Py_ssize_t end, uchar* out,
                                  Py_ssize_t q, bint check_keys) noexcept nogil:
    """One JSON text -> type byte + payload at out[q:]; return the end or -1 (not handled).

    Invalid UTF-8 anywhere is -1: strings validate their bytes, and outside strings every byte
    must be JSON's ASCII syntax."""
    cdef uchar[MAX_JSON_DEPTH] kinds
    cdef Py_ssize_t[MAX_JSON_DEPTH] starts
    cdef int64_t[MAX_JSON_DEPTH] counts
    cdef int depth = 0
    cdef Py_ssize_t tp = q, at
    cdef uchar c, kind
    q += 1
    pos = _skip_ws(buf, pos, end)
    while True:
        # --- one value, type byte at tp ---
        if pos >= end:
            return -1
        c = buf[pos]
        if c == 0x7B or c == 0x5B:
            if depth >= MAX_JSON_DEPTH:
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
                wr_i32(out + starts[depth], <int32_t>(q - starts[depth]))
            else:
                tp = q
                q = _element_key(buf, &pos, end, out, q + 1, c == 0x5B, 0, check_keys)
                if q < 0:
                    return -1
                continue
        elif c == 0x22:
            out[tp] = 0x02
            at = q
            pos += 1
            q = _string(buf, &pos, end, out, q + 4, False)
            if q < 0:
                return -1
            out[q] = 0
            q += 1
            wr_i32(out + at, <int32_t>(q - at - 4))
        elif c == 0x74:
            if (pos + 4 <= end and buf[pos + 1] == 0x72 and buf[pos + 2] == 0x75
                    and buf[pos + 3] == 0x65):
                out[tp] = 0x08
                out[q] = 1
                q += 1
                pos += 4
            else:
                return -1
        elif c == 0x66:
            if (pos + 5 <= end and buf[pos + 1] == 0x61 and buf[pos + 2] == 0x6C
                    and buf[pos + 3] == 0x73 and buf[pos + 4] == 0x65):
                out[tp] = 0x08
                out[q] = 0
                q += 1
                pos += 5
            else:
                return -1
        elif c == 0x6E:
            if (pos + 4 <= end and buf[pos + 1] == 0x75 and buf[pos + 2] == 0x6C
                    and buf[pos + 3] == 0x6C):
                out[tp] = 0x0A
                pos += 4
            else:
                return -1
        elif c == 0x2D or 0x30 <= c <= 0x39:
            q = _number(buf, &pos, end, out, tp, q)
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
                wr_i32(out + starts[depth], <int32_t>(q - starts[depth]))
                continue
            if c != 0x2C:
                return -1
            pos = _skip_ws(buf, pos + 1, end)
            counts[depth - 1] += 1
            tp = q
            q = _element_key(buf, &pos, end, out, q + 1, kind == 0x5B, counts[depth - 1],
                             check_keys)
            if q < 0:
                return -1
            break

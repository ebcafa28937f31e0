# cython: language_level=3
"""Byte-level helpers shared by the compiled kernels: big-endian reads (COPY BINARY), little-endian
writes (BSON) and strict UTF-8 validation. All inline and GIL-free.

Shifts rather than memcpy + byte swap: portable to any host byte order, and gcc/clang turn these
patterns into single loads/stores with a bswap at -O2.
"""

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

ctypedef unsigned char uchar


cdef inline uint16_t rd_u16(const uchar* p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline int16_t rd_i16(const uchar* p) noexcept nogil:
    return <int16_t>rd_u16(p)


cdef inline uint32_t rd_u32(const uchar* p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8)
            | <uint32_t>p[3])


cdef inline int32_t rd_i32(const uchar* p) noexcept nogil:
    return <int32_t>rd_u32(p)


cdef inline uint64_t rd_u64(const uchar* p) noexcept nogil:
    return (<uint64_t>rd_u32(p) << 32) | rd_u32(p + 4)


cdef inline int64_t rd_i64(const uchar* p) noexcept nogil:
    return <int64_t>rd_u64(p)


cdef inline void wr_u32(uchar* q, uint32_t v) noexcept nogil:
    q[0] = <uchar>v
    q[1] = <uchar>(v >> 8)
    q[2] = <uchar>(v >> 16)
    q[3] = <uchar>(v >> 24)


cdef inline void wr_i32(uchar* q, int32_t v) noexcept nogil:
    wr_u32(q, <uint32_t>v)


cdef inline void wr_u64(uchar* q, uint64_t v) noexcept nogil:
    wr_u32(q, <uint32_t>v)
    wr_u32(q + 4, <uint32_t>(v >> 32))


cdef inline void wr_i64(uchar* q, int64_t v) noexcept nogil:
    wr_u64(q, <uint64_t>v)


cdef inline void wr_f64(uchar* q, double v) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &v, 8)
    wr_u64(q, bits)


cdef inline double rd_f32_as_f64(const uchar* p) noexcept nogil:
    """float4 widened exactly to double (the double holds the same binary value)."""
    cdef uint32_t bits = rd_u32(p)
    cdef float f
    memcpy(&f, &bits, 4)
    return <double>f


cdef inline int utf8_char(const uchar* p, Py_ssize_t n) noexcept nogil:
    """Length of the strict UTF-8 sequence at p[0] (a byte >= 0x80; n bytes available), or 0
    when it is invalid: no overlongs, no surrogates, nothing above U+10FFFF."""
    cdef uchar c = p[0], lo, hi
    cdef int need, k
    if c < 0xC2 or c > 0xF4:
        return 0
    if c < 0xE0:
        need = 1
        lo = 0x80
        hi = 0xBF
    elif c < 0xF0:
        need = 2
        lo = 0xA0 if c == 0xE0 else 0x80
        hi = 0x9F if c == 0xED else 0xBF
    else:
        need = 3
        lo = 0x90 if c == 0xF0 else 0x80
        hi = 0x8F if c == 0xF4 else 0xBF
    if need >= n:
        return 0
    if p[1] < lo or p[1] > hi:
        return 0
    for k in range(2, need + 1):
        if p[k] < 0x80 or p[k] > 0xBF:
            return 0
    return need + 1


cdef inline bint valid_utf8(const uchar* p, Py_ssize_t n) noexcept nogil:
    """Strict UTF-8, as bytes.decode('utf-8') checks it."""
    cdef Py_ssize_t i = 0
    cdef uint64_t word
    cdef int k
    while i < n:
        # Most text is ASCII: test eight bytes at a time for a high bit.
        while i + 8 <= n:
            memcpy(&word, p + i, 8)
            if word & 0x8080808080808080ULL:
                break
            i += 8
        if i >= n:
            return True
        if p[i] < 0x80:
            i += 1
            continue
        k = utf8_char(p + i, n - i)
        if k == 0:
            return False
        i += k
    return True


cdef inline void copy_small(uchar* d, const uchar* s, Py_ssize_t n) noexcept nogil:
    """memcpy for the short keys of a document: fixed-size moves instead of a library call
    (two overlapping words cover any length from 4 to 16)."""
    if n > 16:
        memcpy(d, s, n)
    elif n >= 8:
        memcpy(d, s, 8)
        memcpy(d + n - 8, s + n - 8, 8)
    elif n >= 4:
        memcpy(d, s, 4)
        memcpy(d + n - 4, s + n - 4, 4)
    else:
        for i in range(n):
            d[i] = s[i]

# cython: language_level=3
"""numeric (numeric_send's base-10000 digits) -> Decimal128 bits, GIL-free.

Produces exactly what `numeric.exact_bid` produces (the reference): coefficient = value *
10**dscale and exponent = -dscale; when that needs more than 34 digits or an exponent below
-6176, trailing zeros move into the exponent. Whatever that cannot represent exactly (more than
34 significant digits, exponent overflow), malformed input and digit groups above 9999 are left to
the Python encoder (return 0), which applies the job's `numeric_fallback` or raises.

Instead of big integers the value is read as a decimal digit string: the groups give
4 * ndigits digits whose last one is worth 10**(4 * (weight - ndigits + 1)); the coefficient is
that string truncated or zero-extended by the scale. Only its significant part (at most 34
digits) is ever accumulated, in two 64-bit halves of at most 17 digits each.
"""

from libc.stdint cimport int64_t, uint32_t, uint64_t

from parallelsync.transcode._wire cimport rd_i16, rd_u16, uchar, wr_u64

cdef enum:
    SIGN_POS = 0x0000
    SIGN_NEG = 0x4000
    SIGN_NAN = 0xC000
    SIGN_PINF = 0xD000
    SIGN_NINF = 0xF000
    MAX_DIGITS = 34
    EXP_MIN = -6176
    EXP_MAX = 6111
    EXP_BIAS = 6176
    DECIMAL128_BYTES = 16

cdef extern from *:
    """
    static const unsigned long long ps_pow10_u64[20] = {
        1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
        100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL,
        10000000000000ULL, 100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
        100000000000000000ULL, 1000000000000000000ULL, 10000000000000000000ULL
    };
    """
    const uint64_t* POW10 "ps_pow10_u64"


cdef inline int _digit(const uchar* groups, int64_t j) noexcept nogil:
    """Decimal digit j (0 = leftmost) of the digit string of the groups."""
    cdef uint32_t g = rd_u16(groups + 2 * (j >> 2))
    cdef int place = 3 - <int>(j & 3)
    if place == 3:
        return <int>(g // 1000)
    if place == 2:
        return <int>((g // 100) % 10)
    if place == 1:
        return <int>((g // 10) % 10)
    return <int>(g % 10)


cdef inline void _mul_64x64(uint64_t a, uint64_t b, uint64_t* hi, uint64_t* lo) noexcept nogil:
    cdef uint64_t a0 = a & 0xFFFFFFFFULL, a1 = a >> 32
    cdef uint64_t b0 = b & 0xFFFFFFFFULL, b1 = b >> 32
    cdef uint64_t p0 = a0 * b0, p1 = a0 * b1, p2 = a1 * b0, p3 = a1 * b1
    cdef uint64_t mid = (p0 >> 32) + (p1 & 0xFFFFFFFFULL) + (p2 & 0xFFFFFFFFULL)
    lo[0] = (p0 & 0xFFFFFFFFULL) | (mid << 32)
    hi[0] = p3 + (p1 >> 32) + (p2 >> 32) + (mid >> 32)


cdef inline void _put_bid(uchar* out, uint64_t hi, uint64_t lo) noexcept nogil:
    wr_u64(out, lo)
    wr_u64(out + 8, hi)


cdef inline int numeric_decimal128(const uchar* p, Py_ssize_t n, uchar* out) noexcept nogil:
    """Write the 16 bytes of the Decimal128 at out; return 16, or 0 = leave it to Python."""
    if n < 8:
        return 0
    cdef int64_t ndigits = rd_u16(p)  # unsigned: numeric can have more than 32767 groups
    cdef int64_t weight = rd_i16(p + 2)
    cdef uint32_t sign = rd_u16(p + 4)
    cdef int64_t dscale = rd_i16(p + 6)
    if n != 8 + 2 * ndigits or dscale < 0:
        return 0
    if sign == SIGN_NAN:
        _put_bid(out, 0x7C00000000000000ULL, 0)
        return DECIMAL128_BYTES
    if sign == SIGN_PINF:
        _put_bid(out, 0x7800000000000000ULL, 0)
        return DECIMAL128_BYTES
    if sign == SIGN_NINF:
        _put_bid(out, 0xF800000000000000ULL, 0)
        return DECIMAL128_BYTES
    if sign != SIGN_POS and sign != SIGN_NEG:
        return 0
    cdef const uchar* groups = p + 8
    cdef int64_t i
    cdef uint64_t g, small = 0
    for i in range(ndigits):
        g = rd_u16(groups + 2 * i)
        if g > 9999:
            return 0  # never sent by PostgreSQL; the reference defines what it means
        small = small * 10000 + g  # only used when ndigits <= 4 (then < 10**16)
    # coefficient = digit string truncated (shift < 0) or extended by `shift` zeros
    cdef int64_t shift = 4 * (weight - ndigits + 1) + dscale
    if ndigits <= 4 and dscale <= -EXP_MIN and -19 <= shift <= 19:
        # The common case (numeric(p, s) with p <= 16): the coefficient fits in 64 bits.
        if shift < 0:
            small //= POW10[-shift]
        elif small > 0xFFFFFFFFFFFFFFFFULL // POW10[shift]:
            return _general(groups, ndigits, sign, dscale, shift, out)
        else:
            small *= POW10[shift]
        _put_bid(
            out,
            (<uint64_t>(EXP_BIAS - dscale) << 49)
            | ((1ULL << 63) if sign == SIGN_NEG and small != 0 else 0),
            small,
        )
        return DECIMAL128_BYTES
    return _general(groups, ndigits, sign, dscale, shift, out)


cdef inline int _general(const uchar* groups, int64_t ndigits, uint32_t sign, int64_t dscale,
                         int64_t shift, uchar* out) noexcept nogil:
    """Any number of groups, through the decimal digit string (see the module docstring)."""
    cdef int64_t keep = 4 * ndigits + (shift if shift < 0 else 0)
    cdef int64_t zeros = shift if shift > 0 else 0
    cdef int64_t first = 0, last = keep - 1
    while first < keep and _digit(groups, first) == 0:
        first += 1
    cdef int64_t exponent
    if first >= keep:  # zero keeps a positive sign and clamps its exponent
        exponent = -dscale if -dscale > EXP_MIN else EXP_MIN
        _put_bid(out, <uint64_t>(exponent + EXP_BIAS) << 49, 0)
        return DECIMAL128_BYTES
    while _digit(groups, last) == 0:
        last -= 1
    cdef int64_t significant = last - first + 1
    if significant > MAX_DIGITS:
        return 0
    cdef int64_t trailing = (keep - 1 - last) + zeros  # coefficient = M * 10**trailing
    cdef int64_t moved = significant + trailing - MAX_DIGITS  # zeros moved into the exponent
    if moved < 0:
        moved = 0
    if EXP_MIN + dscale > moved:
        moved = EXP_MIN + dscale
    if moved > trailing:
        return 0  # not exact: the job's numeric_fallback decides
    exponent = -dscale + moved
    if exponent > EXP_MAX:
        return 0
    # the coefficient's digits: M's, then (trailing - moved) zeros; at most 34 in all
    cdef int64_t total = significant + trailing - moved
    cdef uint64_t high = 0, low = 0
    cdef int64_t k
    cdef int d
    for k in range(total):
        d = _digit(groups, first + k) if k < significant else 0
        if k < total - 17:
            high = high * 10 + <uint64_t>d
        else:
            low = low * 10 + <uint64_t>d
    cdef uint64_t coef_hi = 0, coef_lo = low
    if high:
        _mul_64x64(high, 100000000000000000ULL, &coef_hi, &coef_lo)  # 10**17
        coef_lo += low
        if coef_lo < low:
            coef_hi += 1
    coef_hi |= <uint64_t>(exponent + EXP_BIAS) << 49
    if sign == SIGN_NEG:
        coef_hi |= 1ULL << 63
    _put_bid(out, coef_hi, coef_lo)
    return DECIMAL128_BYTES

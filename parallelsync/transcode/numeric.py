"""numeric and money -> Decimal128, built directly from the wire digits.

`Decimal128(Decimal(text))` costs ~15 µs per value; building the BID bits from the base-10000
digits costs a fraction of that. The representation chosen is the one
`bson.decimal128.Decimal128(Decimal(text))` produces for PostgreSQL's text output: coefficient =
value * 10**dscale and exponent = -dscale, so "1.50" keeps its scale. When that needs more than 34
digits or an exponent out of range, trailing zeros are shifted into the exponent exactly as
Python's decimal context does (prec=34, clamp=1); only if that is inexact does the job's
`numeric_fallback` apply.
"""

from __future__ import annotations

import decimal
import struct
from typing import cast

from parallelsync.transcode.bson_writer import (
    T_DECIMAL128,
    T_DOUBLE,
    Buffer,
    Value,
    ValueEncoder,
    pack_f64,
    str_value,
)
from parallelsync.transcode.model import Codec, NumericFallback

# ndigits is unsigned: numeric_send writes it with pq_sendint16, and a numeric can have up to
# 131072 + 16383 decimal digits (36,864 base-10000 groups), more than an int16 holds.
_HEADER = struct.Struct(">HhHh")
_unpack_i64 = struct.Struct(">q").unpack_from
_pack_bid = struct.Struct("<QQ").pack

SIGN_POS = 0x0000
SIGN_NEG = 0x4000
SIGN_NAN = 0xC000
SIGN_PINF = 0xD000
SIGN_NINF = 0xF000

MAX_DIGITS = 34
EXP_MIN = -6176  # smallest exponent (Etiny)
EXP_MAX = 6111  # largest exponent with clamp=1 (Emax - prec + 1)
_EXP_BIAS = 6176
_MAX_COEFFICIENT = 10**MAX_DIGITS
_MASK64 = (1 << 64) - 1

BID_NAN = _pack_bid(0, 0x7C00000000000000)
BID_PINF = _pack_bid(0, 0x7800000000000000)
BID_NINF = _pack_bid(0, 0xF800000000000000)

_SPECIAL_TEXT = {SIGN_NAN: "NaN", SIGN_PINF: "Infinity", SIGN_NINF: "-Infinity"}
_SPECIAL_BID = {SIGN_NAN: BID_NAN, SIGN_PINF: BID_PINF, SIGN_NINF: BID_NINF}
_SPECIAL_DOUBLE = {SIGN_NAN: float("nan"), SIGN_PINF: float("inf"), SIGN_NINF: float("-inf")}

_POW10: list[int] = [10**i for i in range(64)]
_LOG10_2 = 0.30102999566398120
_DIGIT_STRUCTS: dict[int, struct.Struct] = {}

# Rounding for numeric_fallback="decimal": round half-even to 34 digits; overflow stays an error
# (silently turning a huge value into Infinity would lose it).
_ROUND_CTX = decimal.Context(
    prec=MAX_DIGITS,
    Emin=-6143,
    Emax=6144,
    clamp=1,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[decimal.InvalidOperation, decimal.Overflow],
)


def _pow10(n: int) -> int:
    return _POW10[n] if n < 64 else cast(int, 10**n)


def parse_numeric(buf: Buffer, pos: int, length: int) -> tuple[bool, int, int] | int:
    """(negative, coefficient, dscale) with value = ±coefficient / 10**dscale; or a special sign."""
    ndigits, weight, sign, dscale = _HEADER.unpack_from(buf, pos)
    if length != 8 + 2 * ndigits or dscale < 0:
        raise ValueError(f"malformed numeric: {length} bytes for {ndigits} digits")
    if sign != SIGN_POS and sign != SIGN_NEG:
        if sign in _SPECIAL_TEXT:
            return int(sign)
        raise ValueError(f"malformed numeric: sign word {sign:#06x}")
    unpack = _DIGIT_STRUCTS.get(ndigits)
    if unpack is None:
        unpack = _DIGIT_STRUCTS.setdefault(ndigits, struct.Struct(f">{ndigits}H"))
    digits = _groups_value(unpack.unpack_from(buf, pos + 8))
    # The digits are base-10000 groups, the last one worth 10000**(weight - ndigits + 1).
    shift = 4 * (weight - ndigits + 1) + dscale
    # Digits past dscale are zero in stored values; truncating matches numeric_out anyway.
    coefficient = digits * _pow10(shift) if shift >= 0 else digits // _pow10(-shift)
    return sign == SIGN_NEG and coefficient != 0, coefficient, dscale


def _groups_value(groups: tuple[int, ...]) -> int:
    """The integer of base-10000 digit groups; halves recursively, so a value of 30,000 groups
    costs big-number multiplications (Karatsuba) rather than 30,000 ever longer ones."""
    if len(groups) <= 32:
        value = 0
        for group in groups:
            value = value * 10000 + group
        return value
    half = len(groups) // 2
    low = groups[half:]
    return _groups_value(groups[:half]) * _pow10(4 * len(low)) + _groups_value(low)


# int -> str refuses more than 4300 digits (CVE-2020-10735 guard); numeric can have 147k.
_STR_LIMIT = 10**4000


def digits_text(value: int) -> str:
    """Decimal digits of a non-negative int of any size."""
    return str(value) if value < _STR_LIMIT else str(decimal.Decimal(value))


def digit_count(value: int) -> int:
    """Decimal digits of a positive int, without converting it to text (quadratic when huge)."""
    estimate = int(value.bit_length() * _LOG10_2)  # the count or one less
    return estimate + 1 if value >= _pow10(estimate) else max(estimate, 1)


def bid(negative: bool, coefficient: int, exponent: int) -> bytes:
    """The 16 little-endian bytes of a Decimal128 whose coefficient fits in 113 bits."""
    high = (coefficient >> 64) | ((exponent + _EXP_BIAS) << 49)
    if negative:
        high |= 1 << 63
    return _pack_bid(coefficient & _MASK64, high)


def exact_bid(negative: bool, coefficient: int, exponent: int) -> bytes | None:
    """Decimal128 bits for ±coefficient * 10**exponent, or None when not exactly representable."""
    if coefficient < _MAX_COEFFICIENT and EXP_MIN <= exponent <= EXP_MAX:
        return bid(negative, coefficient, exponent)
    if coefficient == 0:
        # Zero keeps its sign and clamps the exponent, as the decimal context does.
        return bid(negative, 0, min(max(exponent, EXP_MIN), EXP_MAX))
    ndigits = digit_count(coefficient)
    shift = max(0, ndigits - MAX_DIGITS, EXP_MIN - exponent)
    if shift:
        # the low digits first: a huge coefficient's full division is quadratic
        if coefficient % _pow10(min(shift, 18)):
            return None
        coefficient, rest = divmod(coefficient, _pow10(shift))
        if rest:
            return None
        exponent += shift
    if exponent > EXP_MAX:
        return None
    return bid(negative, coefficient, exponent)


def numeric_text(negative: bool, coefficient: int, dscale: int) -> str:
    """PostgreSQL's numeric_out text: exactly dscale fraction digits."""
    text = digits_text(coefficient)
    if dscale:
        text = text.rjust(dscale + 1, "0")
        text = f"{text[:-dscale]}.{text[-dscale:]}"
    return "-" + text if negative else text


def rounded_bid(text: str) -> bytes:
    """Round half-even to 34 digits (numeric_fallback="decimal")."""
    try:
        value = _ROUND_CTX.create_decimal(text)
    except decimal.Overflow:
        raise ValueError(
            f"numeric {text[:40]}... is beyond Decimal128's range even after rounding: "
            "use numeric_fallback 'string' or 'double'"
        ) from None
    sign, digit_tuple, exponent = value.as_tuple()
    coefficient = int("".join(map(str, digit_tuple)) or "0")
    assert isinstance(exponent, int)
    return bid(bool(sign), coefficient, exponent)


def numeric_encoder(codec: Codec, fallback: NumericFallback) -> ValueEncoder:
    mode = codec.mode
    if mode == "string":

        def encode_string(buf: Buffer, pos: int, length: int) -> Value:
            parsed = parse_numeric(buf, pos, length)
            if isinstance(parsed, int):
                return str_value(_SPECIAL_TEXT[parsed])
            return str_value(numeric_text(*parsed))

        return encode_string
    if mode == "double":

        def encode_double(buf: Buffer, pos: int, length: int) -> Value:
            parsed = parse_numeric(buf, pos, length)
            if isinstance(parsed, int):
                return (T_DOUBLE, pack_f64(_SPECIAL_DOUBLE[parsed]))
            # float(text) is correctly rounded; arithmetic on the coefficient would not be.
            return (T_DOUBLE, pack_f64(float(numeric_text(*parsed))))

        return encode_double
    if mode != "":
        raise ValueError(f"unknown numeric mode {mode!r}")

    def encode_decimal(buf: Buffer, pos: int, length: int) -> Value:
        parsed = parse_numeric(buf, pos, length)
        if isinstance(parsed, int):
            return (T_DECIMAL128, _SPECIAL_BID[parsed])
        negative, coefficient, dscale = parsed
        bits = exact_bid(negative, coefficient, -dscale)
        if bits is not None:
            return (T_DECIMAL128, bits)
        text = numeric_text(negative, coefficient, dscale)
        if fallback == "string":
            return str_value(text)
        if fallback == "double":
            return (T_DOUBLE, pack_f64(float(text)))
        return (T_DECIMAL128, rounded_bid(text))

    return encode_decimal


def money_encoder(codec: Codec) -> ValueEncoder:
    """money is an int64 count of cents (lc_monetary with 2 fraction digits is assumed)."""
    mode = codec.mode

    def encode_money(buf: Buffer, pos: int, length: int) -> Value:
        if length != 8:
            raise ValueError(f"money value has {length} bytes, expected 8")
        cents = _unpack_i64(buf, pos)[0]
        if mode == "double":
            return (T_DOUBLE, pack_f64(cents / 100))  # int / int is correctly rounded
        if mode == "string":
            whole, frac = divmod(abs(cents), 100)
            return str_value(f"{'-' if cents < 0 else ''}{whole}.{frac:02d}")
        return (T_DECIMAL128, bid(cents < 0, abs(cents), -2))

    if mode not in ("", "double", "string"):
        raise ValueError(f"unknown money mode {mode!r}")
    return encode_money

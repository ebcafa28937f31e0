"""date/timestamp/timestamptz -> BSON date; time/timetz/interval -> ISO 8601 strings."""

from __future__ import annotations

import struct

from parallelsync.transcode.bson_writer import (
    NULL_VALUE,
    T_DATE,
    Buffer,
    Value,
    ValueEncoder,
    pack_i64,
    str_value,
)
from parallelsync.transcode.model import InfinityPolicy

_i32 = struct.Struct(">i").unpack_from
_i64 = struct.Struct(">q").unpack_from
_timetz = struct.Struct(">qi").unpack_from
_interval = struct.Struct(">qii").unpack_from

# PostgreSQL counts from 2000-01-01, BSON from 1970-01-01.
EPOCH_DAYS = 10957
EPOCH_MS = 946684800000
MS_PER_DAY = 86400000
INT32_MAX = (1 << 31) - 1
INT32_MIN = -(1 << 31)
INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
# --infinity clamp: 0001-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z, the range every BSON
# reader can represent (Python's datetime, JavaScript's Date, the mongo tools); the int64 limits
# (--infinity clamp-int64) are dates of year ±292,278,994 that most of them cannot decode.
CLAMP_MIN_MS = -62135596800000
CLAMP_MAX_MS = 253402300799999

USECS_PER_HOUR = 3600000000
USECS_PER_MINUTE = 60000000
USECS_PER_SEC = 1000000


def infinity_value(positive: bool, policy: InfinityPolicy) -> Value:
    if policy == "clamp":
        return (T_DATE, pack_i64(CLAMP_MAX_MS if positive else CLAMP_MIN_MS))
    if policy == "clamp-int64":
        return (T_DATE, pack_i64(INT64_MAX if positive else INT64_MIN))
    if policy == "null":
        return NULL_VALUE
    if policy == "string":
        return str_value("infinity" if positive else "-infinity")
    raise ValueError(
        f"{'' if positive else '-'}infinity has no BSON date: choose the infinity policy "
        "clamp, clamp-int64, null or string"
    )


def date_encoder(policy: InfinityPolicy) -> ValueEncoder:
    pos_inf = infinity_value(True, policy) if policy != "error" else None
    neg_inf = infinity_value(False, policy) if policy != "error" else None

    def encode_date(buf: Buffer, pos: int, length: int) -> Value:
        if length != 4:
            raise ValueError(f"date value has {length} bytes, expected 4")
        days = _i32(buf, pos)[0]
        if days == INT32_MAX:
            return pos_inf or infinity_value(True, policy)
        if days == INT32_MIN:
            return neg_inf or infinity_value(False, policy)
        return (T_DATE, pack_i64((days + EPOCH_DAYS) * MS_PER_DAY))

    return encode_date


def timestamp_encoder(policy: InfinityPolicy) -> ValueEncoder:
    pos_inf = infinity_value(True, policy) if policy != "error" else None
    neg_inf = infinity_value(False, policy) if policy != "error" else None

    def encode_timestamp(buf: Buffer, pos: int, length: int) -> Value:
        if length != 8:
            raise ValueError(f"timestamp value has {length} bytes, expected 8")
        usecs = _i64(buf, pos)[0]
        if usecs == INT64_MAX:
            return pos_inf or infinity_value(True, policy)
        if usecs == INT64_MIN:
            return neg_inf or infinity_value(False, policy)
        # Floor, not truncation: -1 µs is in the millisecond before the epoch.
        return (T_DATE, pack_i64(usecs // 1000 + EPOCH_MS))

    return encode_timestamp


def _tdiv(a: int, b: int) -> tuple[int, int]:
    """C division (truncating toward zero), as PostgreSQL's interval output uses."""
    q = abs(a) // b
    if a < 0:
        q = -q
    return q, a - q * b


def _fraction(usecs: int) -> str:
    """ ".ffffff" with trailing zeros trimmed, or "" (PostgreSQL's AppendSeconds)."""
    if usecs == 0:
        return ""
    return "." + f"{abs(usecs):06d}".rstrip("0")


def time_text(usecs: int) -> str:
    hours, rest = divmod(usecs, USECS_PER_HOUR)
    minutes, rest = divmod(rest, USECS_PER_MINUTE)
    seconds, fraction = divmod(rest, USECS_PER_SEC)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{_fraction(fraction)}"


def encode_time(buf: Buffer, pos: int, length: int) -> Value:
    if length != 8:
        raise ValueError(f"time value has {length} bytes, expected 8")
    return str_value(time_text(_i64(buf, pos)[0]))


def encode_timetz(buf: Buffer, pos: int, length: int) -> Value:
    if length != 12:
        raise ValueError(f"timetz value has {length} bytes, expected 12")
    usecs, zone_west = _timetz(buf, pos)
    # The wire carries seconds WEST of UTC; ISO 8601 writes the offset EAST of UTC.
    east = -zone_west
    sign = "-" if east < 0 else "+"
    hours, rest = divmod(abs(east), 3600)
    minutes, seconds = divmod(rest, 60)
    zone = f"{sign}{hours:02d}:{minutes:02d}"
    if seconds:
        zone += f":{seconds:02d}"
    return str_value(time_text(usecs) + zone)


def interval_text(usecs: int, days: int, months: int) -> str:
    """PostgreSQL's IntervalStyle iso_8601 output (each component carries its own sign)."""
    years, months = _tdiv(months, 12)
    hours, rest = _tdiv(usecs, USECS_PER_HOUR)
    minutes, rest = _tdiv(rest, USECS_PER_MINUTE)
    seconds, fraction = _tdiv(rest, USECS_PER_SEC)
    if not (years or months or days or hours or minutes or seconds or fraction):
        return "PT0S"
    parts = ["P"]
    for value, unit in ((years, "Y"), (months, "M"), (days, "D")):
        if value:
            parts.append(f"{value}{unit}")
    if hours or minutes or seconds or fraction:
        parts.append("T")
        for value, unit in ((hours, "H"), (minutes, "M")):
            if value:
                parts.append(f"{value}{unit}")
        if seconds or fraction:
            sign = "-" if seconds < 0 or fraction < 0 else ""
            parts.append(f"{sign}{abs(seconds)}{_fraction(fraction)}S")
    return "".join(parts)


def encode_interval(buf: Buffer, pos: int, length: int) -> Value:
    if length != 16:
        raise ValueError(f"interval value has {length} bytes, expected 16")
    return str_value(interval_text(*_interval(buf, pos)))

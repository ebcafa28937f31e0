"""Per-codec value tests: every codec and its edge values, through both paths."""

from __future__ import annotations

import datetime as dt
import math
import struct
import uuid
from decimal import Decimal
from typing import Any

import bson
import pytest
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from parallelsync.errors import EncodeError
from parallelsync.transcode.model import Codec, EncodeOptions
from tests.unit.transcode import copy_helpers as h
from tests.unit.transcode.support import value_doc, value_of

EPOCH_MS = 946684800000


@pytest.mark.parametrize(
    ("codec", "payload", "expected"),
    [
        ("bool", h.p_bool(True), True),
        ("bool", h.p_bool(False), False),
        ("int2", h.p_int2(-32768), -32768),
        ("int2", h.p_int2(32767), 32767),
        ("int4", h.p_int4(-(2**31)), -(2**31)),
        ("int4", h.p_int4(2**31 - 1), 2**31 - 1),
        ("int8", h.p_int8(-(2**63)), -(2**63)),
        ("int8", h.p_int8(2**63 - 1), 2**63 - 1),
        ("oid", h.p_uint32(4294967295), 4294967295),
        ("xid", h.p_uint32(3000000000), 3000000000),
        ("xid8", h.p_uint64(2**63 - 1), 2**63 - 1),
        ("float4", h.p_float4(1.5), 1.5),
        ("float4", h.p_float4(float("inf")), float("inf")),
        ("float8", h.p_float8(-float("inf")), -float("inf")),
        ("float8", h.p_float8(1e308), 1e308),
        ("text", h.p_text(""), ""),
        ("text", h.p_text("héllo wörld ✓ 𝄞"), "héllo wörld ✓ 𝄞"),
        ("bytea", b"", b""),
        ("bytea", b"\x00\xff\x01", b"\x00\xff\x01"),
        ("tid", h.p_tid(7, 3), (7 << 16) | 3),
        ("tid", h.p_tid(4294967295, 65535), (4294967295 << 16) | 65535),
        ("char", h.p_char(ord("x")), "x"),
        ("char", h.p_char(0xE9), "\\351"),
        ("char", h.p_char(0), ""),
        ("time", h.p_time(0), "00:00:00"),
        ("time", h.p_time(((13 * 60 + 5) * 60 + 9) * 1_000_000 + 500_000), "13:05:09.5"),
        ("time", h.p_time(86_400_000_000), "24:00:00"),
        ("time", h.p_time(1), "00:00:00.000001"),
        ("macaddr", h.p_mac("08:00:2b:01:02:03"), "08:00:2b:01:02:03"),
        ("macaddr8", h.p_mac("08:00:2b:01:02:03:04:05"), "08:00:2b:01:02:03:04:05"),
        ("money", h.p_money(-123456), Decimal128("-1234.56")),
        ("money", h.p_money(0), Decimal128("0.00")),
    ],
)
def test_scalar_values(codec: str, payload: bytes, expected: Any) -> None:
    value = value_of(Codec(codec), payload)
    if isinstance(expected, Decimal128):
        assert value.bid == expected.bid
    else:
        assert value == expected
        assert type(value) is type(expected) or isinstance(expected, int)


def test_int_widths_keep_bson_types() -> None:
    doc = value_doc(Codec("int2"), h.p_int2(-1))
    assert doc == (
        b"\x15\x00\x00\x00"  # 21 bytes
        b"\x10_id\x00\x01\x00\x00\x00"
        b"\x10v\x00\xff\xff\xff\xff"  # int2 widened to int32
        b"\x00"
    )
    assert isinstance(value_of(Codec("int8"), h.p_int8(5)), Int64)
    assert isinstance(value_of(Codec("oid"), h.p_uint32(5)), Int64)


def test_float_nan_and_negative_zero() -> None:
    assert math.isnan(value_of(Codec("float8"), h.p_float8(float("nan"))))
    assert math.isnan(value_of(Codec("float4"), h.p_float4(float("nan"))))
    for codec, pack in (("float8", h.p_float8), ("float4", h.p_float4)):
        zero = value_of(Codec(codec), pack(-0.0))
        assert zero == 0.0 and math.copysign(1.0, zero) == -1.0


def test_xid8_above_int64_is_an_error() -> None:
    with pytest.raises(EncodeError, match=r"'v' \(xid8\) of the row with _id 1"):
        value_of(Codec("xid8"), h.p_uint64(2**63))


def test_uuid_binary_and_string() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert value_of(Codec("uuid"), h.p_uuid(u)) == u
    raw = value_doc(Codec("uuid"), h.p_uuid(u))
    assert isinstance(bson.decode(raw)["v"], Binary) and bson.decode(raw)["v"].subtype == 4
    assert value_of(Codec("uuid", mode="string"), h.p_uuid(u)) == str(u)


def test_null_policies() -> None:
    assert value_of(Codec("text"), None) is None
    assert value_of(Codec("text"), None, EncodeOptions(nulls="omit")) == "<omitted>"


def test_invalid_utf8_text_is_an_error() -> None:
    with pytest.raises(EncodeError, match="'v' \\(text\\)"):
        value_of(Codec("text"), b"abc\xff")
    with pytest.raises(EncodeError):
        value_of(Codec("text"), b"\xed\xa0\x80")  # a UTF-16 surrogate encoded as UTF-8


# --- dates and timestamps ------------------------------------------------------------------


def test_dates_and_timestamps() -> None:
    assert int(value_of(Codec("date"), h.p_date(dt.date(1970, 1, 1)))) == 0
    assert int(value_of(Codec("date"), h.p_date(0))) == EPOCH_MS
    assert int(value_of(Codec("date"), h.p_date(-1))) == EPOCH_MS - 86_400_000
    ts = dt.datetime(2024, 2, 29, 12, 34, 56, 789_999, tzinfo=dt.UTC)
    expected = int(ts.timestamp() * 1000) // 1 // 1
    assert int(value_of(Codec("timestamptz"), h.p_timestamp(ts))) == 1709210096789 == expected
    # floor, not truncation, before the epoch
    assert int(value_of(Codec("timestamp"), h.p_timestamp(-1))) == EPOCH_MS - 1
    assert int(value_of(Codec("timestamp"), h.p_timestamp(-1000))) == EPOCH_MS - 1
    assert int(value_of(Codec("timestamp"), h.p_timestamp(-1001))) == EPOCH_MS - 2


CLAMP_MIN_MS = -62135596800000  # 0001-01-01T00:00:00.000Z
CLAMP_MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


@pytest.mark.parametrize("codec", ["date", "timestamp", "timestamptz"])
@pytest.mark.parametrize("positive", [True, False])
def test_infinity_policies(codec: str, positive: bool) -> None:
    if codec == "date":
        payload = h.p_date(h.INT32_MAX if positive else h.INT32_MIN)
    else:
        payload = h.p_timestamp(h.INT64_MAX if positive else h.INT64_MIN)
    # the default clamps to the last/first millisecond of years 1-9999, which decode as datetimes
    clamp = value_of(Codec(codec), payload)
    assert int(clamp) == (CLAMP_MAX_MS if positive else CLAMP_MIN_MS)
    plain = bson.decode(value_doc(Codec(codec), payload))["v"]
    assert plain == (
        dt.datetime(9999, 12, 31, 23, 59, 59, 999000) if positive else dt.datetime(1, 1, 1)
    )
    wide = value_of(Codec(codec), payload, EncodeOptions(infinity="clamp-int64"))
    assert int(wide) == (h.INT64_MAX if positive else h.INT64_MIN)
    assert value_of(Codec(codec), payload, EncodeOptions(infinity="null")) is None
    text = value_of(Codec(codec), payload, EncodeOptions(infinity="string"))
    assert text == ("infinity" if positive else "-infinity")
    with pytest.raises(EncodeError, match="infinity"):
        value_of(Codec(codec), payload, EncodeOptions(infinity="error"))


def test_infinity_clamp_golden_bytes() -> None:
    payload = h.p_timestamp(h.INT64_MAX)
    assert value_doc(Codec("timestamptz"), payload) == (
        b"\x19\x00\x00\x00"  # 25 bytes
        b"\x10_id\x00\x01\x00\x00\x00"
        b"\x09v\x00" + struct.pack("<q", 253402300799999) + b"\x00"
    )
    payload = h.p_date(h.INT32_MIN)
    doc = value_doc(Codec("date"), payload, EncodeOptions(infinity="clamp-int64"))
    assert doc[-9:] == b"\x00\x00\x00\x00\x00\x00\x00\x80\x00"  # int64 min, little-endian


@pytest.mark.parametrize("infinity", ["clamp", "clamp-int64"])
def test_dates_beyond_years_1_to_9999_stay_exact(infinity: Any) -> None:
    """Only ±infinity is clamped: BC dates and PostgreSQL's largest timestamps are kept."""
    options = EncodeOptions(infinity=infinity)
    # 4714-11-24 BC 00:00 UTC (PostgreSQL's first timestamp): Julian day 0, 2451545 days before
    # 2000-01-01; 294276-12-31 23:59:59.999999 UTC (its last)
    first = -2451545 * 86_400_000_000
    last = 9223371331199999999
    assert int(value_of(Codec("timestamptz"), h.p_timestamp(first), options)) == (
        first // 1000 + EPOCH_MS
    )
    assert int(value_of(Codec("timestamptz"), h.p_timestamp(last), options)) == (
        last // 1000 + EPOCH_MS
    )
    # 0044-03-15 BC as a date (year -43 in astronomical numbering), and 5874897-12-31
    for days in (-740_000, 2_145_031_949):
        assert int(value_of(Codec("date"), h.p_date(days), options)) == (
            (days + 10957) * 86_400_000
        )


def test_timetz_offsets() -> None:
    noon = 12 * 3_600_000_000
    assert value_of(Codec("timetz"), h.p_timetz(noon, -19800)) == "12:00:00+05:30"
    assert value_of(Codec("timetz"), h.p_timetz(noon, 28800)) == "12:00:00-08:00"
    assert value_of(Codec("timetz"), h.p_timetz(noon + 250_000, 0)) == "12:00:00.25+00:00"
    assert value_of(Codec("timetz"), h.p_timetz(noon, 3 * 3600 + 7)) == "12:00:00-03:00:07"


@pytest.mark.parametrize(
    ("usecs", "days", "months", "expected"),
    [
        (0, 0, 0, "PT0S"),
        ((4 * 3600 + 5 * 60 + 6) * 1_000_000 + 500_000, 3, 14, "P1Y2M3DT4H5M6.5S"),
        (0, 0, 12, "P1Y"),
        (0, -3, 0, "P-3D"),
        (-((4 * 3600 + 5 * 60 + 6) * 1_000_000 + 500_000), 0, -14, "P-1Y-2MT-4H-5M-6.5S"),
        (-500_000, 0, 0, "PT-0.5S"),
        (1, 0, 0, "PT0.000001S"),
        (3_600_000_000 * 1000, 0, 0, "PT1000H"),
    ],
)
def test_interval(usecs: int, days: int, months: int, expected: str) -> None:
    assert value_of(Codec("interval"), h.p_interval(usecs, days, months)) == expected


# --- numeric -------------------------------------------------------------------------------


def numeric_bid(text: str) -> bytes:
    value: bytes = Decimal128(Decimal(text)).bid
    return value


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "0.00",
        "1",
        "-1",
        "1.50",
        "-123.4500",
        "12345678.12",
        "0.0001",
        "0.000000000000000000000000000000000000000123",
        "10000",
        "99999999999999999999999999999999.99",  # 34 digits
        "9999999999999999999999999999999999",
        "1" + "0" * 40,  # 41 digits, trailing zeros: exact with a raised exponent
        "123456789012345678901234567890123400000",
        "NaN",
        "Infinity",
        "-Infinity",
    ],
)
def test_numeric_bits_match_bson(text: str) -> None:
    value = value_of(Codec("numeric"), h.p_numeric(text))
    assert isinstance(value, Decimal128)
    assert value.bid == numeric_bid(text)


def test_numeric_tiny_and_huge_exponents() -> None:
    tiny = "0." + "0" * 6175 + "1"  # 1E-6176: the smallest representable
    assert value_of(Codec("numeric"), h.p_numeric(tiny)).bid == numeric_bid(tiny)
    tinier = "0." + "0" * 6176 + "1"  # 1E-6177: not representable -> fallback string
    assert value_of(Codec("numeric"), h.p_numeric(tinier)) == tinier
    zero = "0." + "0" * 7000  # zero with a scale below the range clamps the exponent
    assert value_of(Codec("numeric"), h.p_numeric(zero)).bid == numeric_bid(zero)
    huge = "1" + "0" * 6144  # 1E+6144: largest power of ten
    assert value_of(Codec("numeric"), h.p_numeric(huge)).bid == numeric_bid(huge)
    bigger = "1" + "0" * 6145
    assert value_of(Codec("numeric"), h.p_numeric(bigger)) == bigger
    very_long = "1" + "0" * 5000 + "1"  # beyond Python's int-to-str digit limit
    assert value_of(Codec("numeric"), h.p_numeric(very_long)) == very_long


@pytest.mark.parametrize(
    ("text", "fallback", "expected"),
    [
        ("12345678901234567890123456789012345", "string", "12345678901234567890123456789012345"),
        ("12345678901234567890123456789012345", "double", 1.2345678901234568e34),
        ("1234567890.1234567890123456789012345", "string", "1234567890.1234567890123456789012345"),
        (
            "1234567890123456789012345678901234567890",
            "decimal",
            "1.234567890123456789012345678901235E+39",
        ),
        (
            "0.12345678901234567890123456789012345",
            "decimal",
            "0.1234567890123456789012345678901234",
        ),
        (
            "0.12345678901234567890123456789012355",
            "decimal",
            "0.1234567890123456789012345678901236",
        ),
    ],
)
def test_numeric_fallbacks(text: str, fallback: Any, expected: Any) -> None:
    value = value_of(Codec("numeric"), h.p_numeric(text), EncodeOptions(numeric_fallback=fallback))
    if fallback == "decimal":
        assert isinstance(value, Decimal128)
        assert value.bid == numeric_bid(expected)
    else:
        assert value == expected


def test_numeric_decimal_fallback_overflow_is_an_error() -> None:
    text = "9" * 6200
    with pytest.raises(EncodeError, match="beyond Decimal128"):
        value_of(Codec("numeric"), h.p_numeric(text), EncodeOptions(numeric_fallback="decimal"))


@pytest.mark.parametrize(
    ("mode", "text", "expected"),
    [
        ("string", "-123.4500", "-123.4500"),
        ("string", "0.001", "0.001"),
        ("string", "NaN", "NaN"),
        ("string", "-Infinity", "-Infinity"),
        ("double", "-123.45", -123.45),
        ("double", "Infinity", float("inf")),
        ("double", "0.1", 0.1),
    ],
)
def test_numeric_modes(mode: str, text: str, expected: Any) -> None:
    assert value_of(Codec("numeric", mode=mode), h.p_numeric(text)) == expected


def test_numeric_nan_double() -> None:
    assert math.isnan(value_of(Codec("numeric", mode="double"), h.p_numeric("NaN")))


def test_money_modes() -> None:
    assert value_of(Codec("money", mode="double"), h.p_money(-1234567)) == -12345.67
    assert value_of(Codec("money", mode="string"), h.p_money(-5)) == "-0.05"
    assert value_of(Codec("money"), h.p_money(-(2**63))).bid == numeric_bid("-92233720368547758.08")


# --- json ----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["json", "jsonb"])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1, "b": [true, null, 2.5, "x"], "c": {"d": {}}}', None),
        ("[]", []),
        ("[1, [2, [3]]]", [1, [2, [3]]]),
        ("42", 42),
        ('"just a string"', "just a string"),
        ("null", None),
        ("true", True),
        ("1.25", 1.25),
        ("9223372036854775807", 2**63 - 1),
        ("9223372036854775808", 9223372036854775808.0),  # beyond int64: a double (documented)
        ("123456789012345678901234567890", 1.2345678901234568e29),
        ("1e400", float("inf")),
        ('{"z": 1, "_id": 2, "a": 3}', None),  # key order kept, _id not moved
    ],
)
def test_json_values(codec: str, text: str, expected: Any) -> None:
    import json as stdlib_json

    pack = h.p_jsonb if codec == "jsonb" else h.p_json
    value = value_of(Codec(codec), pack(text))
    if expected is None and text != "null":
        expected = stdlib_json.loads(text)
        assert list(value) == list(expected)
    assert value == expected


def test_json_deep_nesting() -> None:
    text = '{"a":' * 60 + "1" + "}" * 60
    value = value_of(Codec("jsonb"), h.p_jsonb(text))
    for _ in range(60):
        value = value["a"]
    assert value == 1


def test_json_key_policies() -> None:
    text = '{"$set": {"a.b": 1, "ok$": 2}, "list": [{"$x": 1}]}'
    kept = value_of(Codec("jsonb"), h.p_jsonb(text))
    assert kept == {"$set": {"a.b": 1, "ok$": 2}, "list": [{"$x": 1}]}
    replaced = value_of(Codec("jsonb"), h.p_jsonb(text), EncodeOptions(json_keys="replace"))
    assert replaced == {"＄set": {"a．b": 1, "ok$": 2}, "list": [{"＄x": 1}]}
    with pytest.raises(EncodeError, match=r"json key '\$set'"):
        value_of(Codec("jsonb"), h.p_jsonb(text), EncodeOptions(json_keys="error"))
    # "." inside a string value is not a key
    assert value_of(
        Codec("jsonb"), h.p_jsonb('{"a": "x.y"}'), EncodeOptions(json_keys="error")
    ) == {"a": "x.y"}


def test_json_invalid_is_an_error() -> None:
    with pytest.raises(EncodeError, match="'v' \\(jsonb\\)"):
        value_of(Codec("jsonb"), h.p_jsonb("{nope"))
    with pytest.raises(EncodeError, match="version"):
        value_of(Codec("jsonb"), b"\x02{}")


# --- arrays, ranges, composites -------------------------------------------------------------


def test_arrays() -> None:
    int4s = Codec("array", elem=Codec("int4"))
    assert value_of(int4s, h.p_array([1, None, 3], h.p_int4)) == [1, None, 3]
    assert value_of(int4s, h.p_array([], h.p_int4)) == []
    two_d = h.p_array([[1, 2, 3], [4, None, 6]], h.p_int4, ndim=2)
    assert value_of(int4s, two_d) == [[1, 2, 3], [4, None, 6]]
    three_d = h.p_array([[[1], [2]], [[3], [4]]], h.p_int4, ndim=3)
    assert value_of(int4s, three_d) == [[[1], [2]], [[3], [4]]]
    texts = Codec("array", elem=Codec("text"))
    assert value_of(texts, h.p_array(["a", "", "ü"], h.p_text)) == ["a", "", "ü"]
    assert value_of(texts, h.p_array([None, None], h.p_text)) == [None, None]
    big = list(range(2000))
    assert value_of(int4s, h.p_array(big, h.p_int4)) == big


@pytest.mark.parametrize("bounds", ["drop", "keep"])
def test_array_lower_bounds(bounds: str) -> None:
    """'[0:2]={1,2,3}': dropped by default; `keep` writes {lower, values} for such arrays only."""
    opts = EncodeOptions(array_bounds=bounds)  # type: ignore[arg-type]
    int4s = Codec("array", elem=Codec("int4"))
    zero_based = h.p_array([1, 2, 3], h.p_int4, lower=[0])
    kept = bounds == "keep"
    assert value_of(int4s, zero_based, opts) == (
        {"lower": [0], "values": [1, 2, 3]} if kept else [1, 2, 3]
    )
    # 2-D with one dimension off 1: every dimension's bound is written, in order
    two_d = h.p_array([[1, 2], [3, None]], h.p_int4, ndim=2, lower=[1, -5])
    assert value_of(int4s, two_d, opts) == (
        {"lower": [1, -5], "values": [[1, 2], [3, None]]} if kept else [[1, 2], [3, None]]
    )
    # lower bound 1 (every array PostgreSQL builds by default) and empty arrays stay plain
    assert value_of(int4s, h.p_array([7], h.p_int4, lower=[1]), opts) == [7]
    assert value_of(int4s, h.p_array([], h.p_int4), opts) == []
    texts = Codec("array", elem=Codec("text"))
    top = h.p_array(["a"], h.p_text, lower=[2**31 - 1])
    expected = {"lower": [2**31 - 1], "values": ["a"]} if kept else ["a"]
    assert value_of(texts, top, opts) == expected
    # an array inside a composite follows the same rule
    comp = Codec("composite", fields=(int4s,), field_names=("xs",))
    inner = h.p_composite([(1007, zero_based)])
    assert value_of(comp, inner, opts) == {
        "xs": {"lower": [0], "values": [1, 2, 3]} if kept else [1, 2, 3]
    }


def test_array_bounds_document_bytes() -> None:
    """The exact bytes of the kept form (both paths give these: value_doc compares them)."""
    opts = EncodeOptions(array_bounds="keep")
    doc = value_doc(Codec("array", elem=Codec("int4")), h.p_array([5], h.p_int4, lower=[0]), opts)
    assert doc == bson.encode({"_id": 1, "v": {"lower": [0], "values": [5]}})


def test_arrays_of_complex_elements() -> None:
    nums = Codec("array", elem=Codec("numeric"))
    value = value_of(nums, h.p_array(["1.5", None, "NaN"], h.p_numeric))
    assert [v.bid if v is not None else None for v in value] == [
        numeric_bid("1.5"),
        None,
        numeric_bid("NaN"),
    ]
    u = uuid.uuid4()
    assert value_of(Codec("array", elem=Codec("uuid")), h.p_array([u], h.p_uuid)) == [u]
    jsons = Codec("array", elem=Codec("jsonb"))
    assert value_of(jsons, h.p_array(['{"a": [1]}', "2"], h.p_jsonb)) == [{"a": [1]}, 2]
    stamps = Codec("array", elem=Codec("timestamptz"))
    assert [int(v) for v in value_of(stamps, h.p_array([0, 1000], h.p_timestamp))] == [
        EPOCH_MS,
        EPOCH_MS + 1,
    ]


def test_ranges() -> None:
    int4range = Codec("range", elem=Codec("int4"))
    assert value_of(int4range, h.p_range(h.p_int4(1), h.p_int4(10))) == {
        "lower": 1,
        "upper": 10,
        "bounds": "[)",
    }
    assert value_of(int4range, h.p_range(h.p_int4(1), h.p_int4(10), "(]")) == {
        "lower": 1,
        "upper": 10,
        "bounds": "(]",
    }
    assert value_of(int4range, h.p_range(None, h.p_int4(10))) == {
        "lower": None,
        "upper": 10,
        "bounds": "()",
    }
    assert value_of(int4range, h.p_range(h.p_int4(5), None, "[)")) == {
        "lower": 5,
        "upper": None,
        "bounds": "[)",
    }
    assert value_of(int4range, h.p_range(None, None, empty=True)) == {"empty": True}
    tsrange = Codec("range", elem=Codec("timestamptz"))
    value = value_of(tsrange, h.p_range(h.p_timestamp(0), h.p_timestamp(1000)))
    assert (int(value["lower"]), int(value["upper"])) == (EPOCH_MS, EPOCH_MS + 1)


def test_composites() -> None:
    codec = Codec(
        "composite",
        fields=(Codec("int4"), Codec("text"), Codec("array", elem=Codec("int8")), Codec("text")),
        field_names=("n", "s", "a", "missing"),
    )
    payload = h.p_composite(
        [(23, h.p_int4(7)), (25, h.p_text("x")), (1016, h.p_array([1], h.p_int8)), (25, None)]
    )
    assert value_of(codec, payload) == {"n": 7, "s": "x", "a": [1], "missing": None}
    assert value_of(codec, payload, EncodeOptions(nulls="omit")) == {"n": 7, "s": "x", "a": [1]}
    with pytest.raises(EncodeError, match="composite value has 1 fields"):
        value_of(codec, h.p_composite([(23, h.p_int4(7))]))


@pytest.mark.parametrize(
    ("codec", "address", "expected"),
    [
        ("inet", "10.1.2.3/24", "10.1.2.3/24"),
        ("inet", "10.1.2.3/32", "10.1.2.3"),
        ("inet", "2001:db8::1/128", "2001:db8::1"),
        ("inet", "2001:0db8:0000:0000:0000:0000:0000:0001/64", "2001:db8::1/64"),
        ("cidr", "10.0.0.0/8", "10.0.0.0/8"),
        ("cidr", "10.1.2.3/32", "10.1.2.3/32"),
        ("cidr", "2001:db8::/32", "2001:db8::/32"),
        # embedded IPv4 in PostgreSQL's dotted form (checked against a PostgreSQL 15 server)
        ("inet", "::ffff:1.2.3.4/128", "::ffff:1.2.3.4"),
        ("inet", "::1.2.3.4/128", "::1.2.3.4"),
        ("inet", "::ffff:1.2.3.4/120", "::ffff:1.2.3.4/120"),
        ("inet", "::0.0.1.2/128", "::102"),
        ("inet", "::1/128", "::1"),
        ("inet", "::/128", "::"),
    ],
)
def test_network(codec: str, address: str, expected: str) -> None:
    payload = h.p_inet(address, cidr=codec == "cidr")
    assert value_of(Codec(codec), payload) == expected


def test_wrong_fixed_width_is_an_error() -> None:
    with pytest.raises(EncodeError, match=r"'v' \(int4\) of the row with _id 1: int4 value has 3"):
        value_of(Codec("int4"), b"\x00\x00\x01")


# --- numeric with more than 32767 base-10000 digit groups (issue 10 item 6) -------------------


def huge_numeric(groups: list[int], weight: int, dscale: int = 0) -> bytes:
    """numeric_send by hand: ndigits is an unsigned 16-bit count."""
    return struct.pack(f">HhHh{len(groups)}H", len(groups), weight, 0, dscale, *groups)


NINE_E_131071_PLUS_1 = huge_numeric([9000] + [0] * 32766 + [1], 32767)  # 9e131071 + 1
NINE_E_131071_TEXT = "9" + "0" * 131070 + "1"


def test_numeric_with_32768_groups_is_not_malformed() -> None:
    assert len(NINE_E_131071_PLUS_1) == 65544
    assert struct.unpack_from(">H", NINE_E_131071_PLUS_1)[0] == 32768
    # --numeric string (the default): the exact text, golden bytes
    doc = value_doc(Codec("numeric"), NINE_E_131071_PLUS_1)
    element = b"\x02v\x00" + struct.pack("<i", 131073) + NINE_E_131071_TEXT.encode() + b"\x00"
    id_element = b"\x10_id\x00\x01\x00\x00\x00"
    assert doc == struct.pack("<i", 5 + len(id_element) + len(element)) + id_element + element + (
        b"\x00"
    )
    # --numeric double: beyond the double range
    double = value_of(
        Codec("numeric"), NINE_E_131071_PLUS_1, EncodeOptions(numeric_fallback="double")
    )
    assert double == float("inf")
    # --numeric decimal: rounding cannot bring it into Decimal128's range
    with pytest.raises(EncodeError, match="beyond Decimal128's range even after rounding"):
        value_of(Codec("numeric"), NINE_E_131071_PLUS_1, EncodeOptions(numeric_fallback="decimal"))
    # the per-column modes read the same header
    assert value_of(Codec("numeric", mode="string"), NINE_E_131071_PLUS_1) == NINE_E_131071_TEXT
    assert value_of(Codec("numeric", mode="double"), NINE_E_131071_PLUS_1) == float("inf")


def test_numeric_with_40000_groups_that_fits_decimal128() -> None:
    """Not produced by PostgreSQL (it strips zero groups) but well-formed: 1 followed by 40000
    zero groups of fraction, scale 16383, is exactly 1E0 with 33 zeros moved into the digits."""
    payload = huge_numeric([1] + [0] * 40000, 0, 16383)
    value = value_of(Codec("numeric"), payload)
    assert value.bid == numeric_bid("1." + "0" * 33)
    assert value_of(Codec("numeric", mode="string"), payload) == "1." + "0" * 16383


def test_numeric_malformed_lengths_are_errors() -> None:
    payload = huge_numeric([1, 2], 0)
    with pytest.raises(EncodeError, match="malformed numeric: 11 bytes for 2 digits"):
        value_of(Codec("numeric"), payload[:-1])
    bad_sign = struct.pack(">HhHh", 0, 0, 0x1234, 0)
    with pytest.raises(EncodeError, match="sign word 0x1234"):
        value_of(Codec("numeric"), bad_sign)


def test_struct_sanity() -> None:
    # the helper's numeric packer agrees with a hand-built numeric_send for 1.50
    assert h.p_numeric("1.50") == struct.pack(">hhHhHH", 2, 0, 0, 2, 1, 5000)

"""Real wire bytes: edge values from PostgreSQL's own regression tests (numeric.sql, float8.sql,
timestamptz.sql, date.sql, jsonb.sql, arrays.sql) through COPY BINARY from the server, encoded by
both implementations (byte-identical, the compiled kernel really ran) and checked against what
PostgreSQL itself says the values are."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import bson
import psycopg
import pytest
from bson.decimal128 import Decimal128
from psycopg import sql

from parallelsync.transcode import header_length
from parallelsync.transcode.model import Codec, EncodeOptions, FieldNode, Layout
from tests.unit.transcode.support import DECODE, encode_with

CLAMP_MIN_MS, CLAMP_MAX_MS = -62135596800000, 253402300799999

NUMERIC = [
    "0", "0.0", "-0.0", "-34338492.215397047", "4.31", "7799461.4119", "16397.038491",
    "93901.57763026", "-83028485", "74881", "-24926804.045047420", "NaN", "Infinity",
    "-Infinity", "1e-1000", "1e1000", "0.000000000000000000000000000000000000001",
    "9999999999999999999999999999999999", "99999999999999999999999999999999999",
    "123456789012345678901234567890.123456789012345678901234567890", "1.000000000123",
]  # fmt: skip
FLOAT8 = [
    "0.0", "-0", "1004.30", "-34.84", "1.2345678901234e+200", "1.2345678901234e-200",
    "1.7976931348623157e+308", "2.2250738585072014E-308", "4.9e-324", "NaN", "Infinity",
    "-Infinity",
]  # fmt: skip
TIMESTAMPTZ = [
    "epoch", "infinity", "-infinity", "Mon Feb 10 17:32:01 1997 PST",
    "1997-02-10 17:32:01.000001 PST", "4714-11-24 00:00:00+00 BC",
    "294276-12-31 23:59:59.999999+00",
    "1999-12-31 23:59:59.999999+00", "2000-01-01 00:00:00+00", "1969-12-31 23:59:59.9995+00",
    "0001-01-01 00:00:00+00", "0001-12-31 23:59:59+00 BC",
]  # fmt: skip
DATE = ["4714-11-24 BC", "5874897-12-31", "infinity", "-infinity", "1957-04-09", "2038-04-08"]
JSONB = [
    '""', '"abc"', '"\\u00e9"', "[]", "{}", "[1,2]", '{"a":null}', "1e100", "-1.5e-10",
    "0.000000001", "12345678901234567890", "true", "false", "null", '"\\ud83d\\ude00"',
    '{"aa":["a","aaa"],"qq":{"a":"12","b":"16","c":["c1","c2"],"d":{"d1":"d1","d2":"d2"}}}',
    "[" * 30 + "1" + "]" * 30, '{"a": {"b": {"c": [1, {"d": 2}]}}}', "-0", "1.0",
    '{"field1": "val1", "field2": -1e20}', '{"x": 1, "x": 2}', '{"$set": {"a.b": 1}}',
]  # fmt: skip
INT_ARRAYS = [
    "{}", "{1,2,3}", "{{1,2},{3,4}}", "{NULL,1}", "[0:2]={1,2,3}", "{{{1},{2}},{{3},{4}}}",
]  # fmt: skip
TEXT_ARRAYS = ['{"a b","\\"q\\"",NULL,""}', "{}", '{{"x","y"},{"ü",NULL}}']


def copy_binary(conn: psycopg.Connection[Any], sql_type: str, texts: list[str]) -> bytes:
    values = sql.SQL(", ").join(
        sql.SQL("({}, {})").format(sql.Literal(i), sql.Literal(t)) for i, t in enumerate(texts)
    )
    query = sql.SQL(
        "COPY (SELECT ord, v::{} FROM (VALUES {}) AS t(ord, v) ORDER BY ord) "
        "TO STDOUT (FORMAT BINARY)"
    ).format(sql.SQL(sql_type), values)
    with conn.cursor().copy(query) as copy:
        return b"".join(bytes(chunk) for chunk in copy)


def values(
    conn: psycopg.Connection[Any],
    sql_type: str,
    codec: Codec,
    texts: list[str],
    options: EncodeOptions | None = None,
) -> list[Any]:
    """The decoded `v` of every row, after checking that both implementations agree."""
    layout = Layout(
        (FieldNode("_id", 0, Codec("int4")), FieldNode("v", 1, codec)), 2,
        options or EncodeOptions(),
    )  # fmt: skip
    data = copy_binary(conn, sql_type, texts)
    start = header_length(data)
    ref = encode_with("python", layout, data, start)
    fast = encode_with("c", layout, data, start)
    assert (ref.data, ref.rows, fast.finished) == (fast.data, len(texts), True)
    return [bson.decode(doc, codec_options=DECODE)["v"] for doc in ref.documents()]


def pg_text(conn: psycopg.Connection[Any], sql_type: str, texts: list[str]) -> list[str]:
    query = sql.SQL(
        "SELECT v::{}::text FROM unnest({}::text[]) WITH ORDINALITY AS t(v, o) ORDER BY o"
    )
    rows = conn.execute(query.format(sql.SQL(sql_type), sql.Literal(texts))).fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def conn(pg_conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    pg_conn.execute("SET TimeZone = 'UTC'")
    pg_conn.execute("SET extra_float_digits = 3")
    return pg_conn


def test_numeric(conn: psycopg.Connection[Any]) -> None:
    got = values(conn, "numeric", Codec("numeric"), NUMERIC)
    for value, text in zip(got, pg_text(conn, "numeric", NUMERIC), strict=True):
        if isinstance(value, Decimal128):
            expected = Decimal(text)
            got = value.to_decimal()
            assert got == expected or (expected.is_nan() and got.is_nan()), text
            if expected.is_finite() and len(expected.as_tuple().digits) <= 34:
                assert got.as_tuple().exponent == expected.as_tuple().exponent, text  # scale kept
        else:
            assert value == text  # beyond 34 digits: the exact text (--numeric string)


def test_numeric_beyond_32767_groups(conn: psycopg.Connection[Any]) -> None:
    query = "COPY (SELECT 1, 9e131071::numeric + 1) TO STDOUT (FORMAT BINARY)"
    with conn.cursor().copy(query) as copy:
        data = b"".join(bytes(chunk) for chunk in copy)
    layout = Layout((FieldNode("_id", 0, Codec("int4")), FieldNode("v", 1, Codec("numeric"))), 2)
    ref = encode_with("python", layout, data, header_length(data))
    assert encode_with("c", layout, data, header_length(data)).data == ref.data
    assert bson.decode(ref.documents()[0])["v"] == "9" + "0" * 131070 + "1"


def test_float8(conn: psycopg.Connection[Any]) -> None:
    got = values(conn, "float8", Codec("float8"), FLOAT8)
    for value, text in zip(got, pg_text(conn, "float8", FLOAT8), strict=True):
        expected = float(text)
        assert value == expected or (math.isnan(value) and math.isnan(expected))
        assert math.copysign(1.0, value) == math.copysign(1.0, expected)


def epoch_ms(conn: psycopg.Connection[Any], sql_type: str, texts: list[str]) -> list[int | None]:
    """PostgreSQL's own epoch milliseconds (floor), None for ±infinity: days and time of day
    apart, since extract(epoch) itself overflows near the end of the timestamp range."""
    day = "(v::{0}::date - date '1970-01-01')::int8 * 86400000"
    time = " + floor(extract(epoch FROM v::{0}::time) * 1000)::int8" if sql_type != "date" else ""
    query = sql.SQL(
        "SELECT CASE WHEN isfinite(v::{0}) THEN " + day + time + " END "
        "FROM unnest({1}::text[]) WITH ORDINALITY AS t(v, o) ORDER BY o"
    ).format(sql.SQL(sql_type), sql.Literal(texts))
    return [row[0] for row in conn.execute(query).fetchall()]


@pytest.mark.parametrize(("sql_type", "texts"), [("timestamptz", TIMESTAMPTZ), ("date", DATE)])
def test_dates(conn: psycopg.Connection[Any], sql_type: str, texts: list[str]) -> None:
    got = values(conn, sql_type, Codec(sql_type), texts)
    for value, text, ms in zip(got, texts, epoch_ms(conn, sql_type, texts), strict=True):
        if ms is None:  # --infinity clamp: the ends of years 1-9999
            ms = CLAMP_MAX_MS if text == "infinity" else CLAMP_MIN_MS
        assert int(value) == ms, text


def plain_json(value: Any) -> Any:
    """The reference's documented mapping: integers beyond int64 become doubles."""
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return float(value)
    return value


def test_jsonb(conn: psycopg.Connection[Any]) -> None:
    got = values(conn, "jsonb", Codec("jsonb"), JSONB)
    for value, text in zip(got, pg_text(conn, "jsonb", JSONB), strict=True):
        assert value == plain_json(json.loads(text)), text


def test_arrays(conn: psycopg.Connection[Any]) -> None:
    ints = values(conn, "int4[]", Codec("array", elem=Codec("int4")), INT_ARRAYS)
    assert ints == [[], [1, 2, 3], [[1, 2], [3, 4]], [None, 1], [1, 2, 3], [[[1], [2]], [[3], [4]]]]
    texts = values(conn, "text[]", Codec("array", elem=Codec("text")), TEXT_ARRAYS)
    assert texts == [["a b", '"q"', None, ""], [], [["x", "y"], ["ü", None]]]
    kept = values(
        conn, "int4[]", Codec("array", elem=Codec("int4")), INT_ARRAYS,
        EncodeOptions(array_bounds="keep"),
    )  # fmt: skip
    assert kept[4] == {"lower": [0], "values": [1, 2, 3]}  # '[0:2]={1,2,3}'
    assert kept[:4] + kept[5:] == ints[:4] + ints[5:]  # lower bound 1: plain arrays
    (two_d,) = values(
        conn, "text[]", Codec("array", elem=Codec("text")), ["[-1:0][3:4]={{a,b},{c,d}}"],
        EncodeOptions(array_bounds="keep"),
    )  # fmt: skip
    assert two_d == {"lower": [-1, 3], "values": [["a", "b"], ["c", "d"]]}
    numerics = values(conn, "numeric[]", Codec("array", elem=Codec("numeric")), ["{1.50,NaN,-0}"])
    assert [str(v) for v in numerics[0]] == ["1.50", "NaN", "0"]
    stamps = Codec("array", elem=Codec("timestamptz"))
    (clamped,) = values(conn, "timestamptz[]", stamps, ["{infinity,-infinity,epoch}"])
    assert [int(v) for v in clamped] == [CLAMP_MAX_MS, CLAMP_MIN_MS, 0]

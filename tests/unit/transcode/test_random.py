"""Randomized: for random rows of every codec, the compiled and reference paths agree byte for
byte (and the compiled kernel really encoded them: see transcode_support.encode_with)."""

from __future__ import annotations

import random
import string
import uuid
from collections.abc import Callable
from typing import Any

import bson
import pytest

from parallelsync.transcode import DocumentEncoder
from parallelsync.transcode.model import Codec, DocNode, EncodeOptions, FieldNode, Layout, Node
from tests.unit.transcode import copy_helpers as h
from tests.unit.transcode.support import DECODE, encode_with

Gen = Callable[[random.Random], bytes]


def _text(r: random.Random) -> str:
    alphabet = string.ascii_letters + "äöü✓𝄞 ."
    return "".join(r.choice(alphabet) for _ in range(r.randint(0, 40)))


def _numeric(r: random.Random) -> str:
    choice = r.random()
    if choice < 0.05:
        return r.choice(["NaN", "Infinity", "-Infinity", "0", "0.00"])
    if choice < 0.1:
        return str(r.randint(10**35, 10**40)) + "." + "1" * r.randint(0, 3)
    whole = r.randint(0, 10 ** r.randint(0, 20))
    frac = r.randint(0, 10 ** r.randint(0, 6))
    sign = "-" if r.random() < 0.3 else ""
    return f"{sign}{whole}.{frac}" if r.random() < 0.8 else f"{sign}{whole}"


def _ts(r: random.Random) -> int:
    return (
        r.choice([h.INT64_MAX, h.INT64_MIN]) if r.random() < 0.05 else r.randint(-(10**16), 10**16)
    )


def _date(r: random.Random) -> int:
    return r.choice([h.INT32_MAX, h.INT32_MIN]) if r.random() < 0.05 else r.randint(-(10**6), 10**6)


def _json(r: random.Random, depth: int = 0) -> str:
    kind = r.randint(0, 5 if depth < 3 else 3)
    if kind == 0:
        return str(r.randint(-(2**40), 2**40))
    if kind == 1:  # short floats take the kernel's exact path, long ones the Python path
        return repr(r.choice([r.uniform(-1e6, 1e6), round(r.uniform(-1e6, 1e6), r.randint(0, 6))]))
    if kind == 2:
        return (
            '"'
            + "".join(
                r.choice(["a", ".", "$", "ü", "\\n", "\\u00e9", '\\"'])
                for _ in range(r.randint(0, 5))
            )
            + '"'
        )
    if kind == 3:
        return r.choice(["true", "false", "null"])
    if kind == 4:
        return "[" + ",".join(_json(r, depth + 1) for _ in range(r.randint(0, 3))) + "]"
    keys = ["a", "b.c", "$d", "_id", "é"]
    return (
        "{"
        + ",".join(f'"{k}":{_json(r, depth + 1)}' for k in r.sample(keys, r.randint(0, 3)))
        + "}"
    )


# Edge values from PostgreSQL's own regression tests (numeric.sql, float8.sql, timestamptz.sql,
# date.sql, jsonb.sql, arrays.sql), mixed into the random rows below.
PG_NUMERIC = [
    "0", "0.0", "-34338492.215397047", "4.31", "7799461.4119", "16397.038491",
    "93901.57763026", "-83028485", "74881", "-24926804.045047420", "NaN", "Infinity",
    "-Infinity", "0.000000000000000000000000000000000000001", "1e-1000", "1e1000",
    "9999999999999999999999999999999999.9", "-0.0000000000000000000000000000000000000001",
    "123456789012345678901234567890.123456789012345678901234567890",
    "0." + "0" * 16382 + "1",  # the largest scale
]  # fmt: skip
PG_FLOAT8 = [
    0.0, -0.0, 1004.30, -34.84, 1.2345678901234e200, 1.2345678901234e-200,
    1.7976931348623157e308, 2.2250738585072014e-308, 5e-324, float("inf"), float("-inf"),
    float("nan"),
]  # fmt: skip
# µs since 2000-01-01: 4714-11-24 BC (the first timestamp), 1997-02-10 17:32:01.000001 PST,
# 294276-12-31 23:59:59.999999 (the last), the epoch, and the last µs before 2000
PG_TIMESTAMPTZ = [
    -211813488000000000, -91060078999999, 9223371331199999999, -946684800000000, -1, 0,
    h.INT64_MAX, h.INT64_MIN,
]  # fmt: skip
# days since 2000-01-01: 4714-11-24 BC, 5874897-12-31, 1957-04-09, 2038-04-08, ±infinity
PG_DATE = [-2451545, 2145031949, -15607, 13977, h.INT32_MAX, h.INT32_MIN]
PG_JSONB = [
    '""', '"abc"', '"\\u00e9"', "[]", "{}", "[1,2]", '{"a":null}', "1e100", "-1.5e-10",
    "0.000000001", "12345678901234567890", "true", "false", "null", '"\\ud83d\\ude00"',
    '{"aa":["a","aaa"],"qq":{"a":"12","b":"16","c":["c1","c2"],"d":{"d1":"d1","d2":"d2"}}}',
    "[" * 20 + "1" + "]" * 20, '{"a": {"b": {"c": [1, {"d": 2}]}}}',
    '{"field1": "val1", "field2": -1e20}', "-0", "1.0", "100000000000000000000000000001",
]  # fmt: skip
PG_INT_ARRAYS: list[list[int | None]] = [[], [1, 2, 3], [None, 1], [None], [2**31 - 1, -(2**31)]]


def edge_or(r: random.Random, edges: list[Any], make: Callable[[random.Random], Any]) -> Any:
    return r.choice(edges) if r.random() < 0.3 else make(r)


GENERATORS: dict[str, tuple[Codec, Gen]] = {
    "bool": (Codec("bool"), lambda r: h.p_bool(r.random() < 0.5)),
    "int2": (Codec("int2"), lambda r: h.p_int2(r.randint(-(2**15), 2**15 - 1))),
    "int4": (Codec("int4"), lambda r: h.p_int4(r.randint(-(2**31), 2**31 - 1))),
    "int8": (Codec("int8"), lambda r: h.p_int8(r.randint(-(2**63), 2**63 - 1))),
    "oid": (Codec("oid"), lambda r: h.p_uint32(r.randint(0, 2**32 - 1))),
    "xid": (Codec("xid"), lambda r: h.p_uint32(r.randint(0, 2**32 - 1))),
    "xid8": (Codec("xid8"), lambda r: h.p_uint64(r.randint(0, 2**63 - 1))),
    "float4": (
        Codec("float4"),
        lambda r: h.p_float4(r.choice([r.uniform(-1e30, 1e30), float("nan"), -0.0, float("inf")])),
    ),
    "float8": (
        Codec("float8"),
        lambda r: h.p_float8(edge_or(r, PG_FLOAT8, lambda r: r.uniform(-1e300, 1e300))),
    ),
    "uuid": (Codec("uuid"), lambda r: h.p_uuid(uuid.UUID(int=r.getrandbits(128)))),
    "uuid_str": (
        Codec("uuid", mode="string"),
        lambda r: h.p_uuid(uuid.UUID(int=r.getrandbits(128))),
    ),
    "date": (Codec("date"), lambda r: h.p_date(edge_or(r, PG_DATE, _date))),
    "timestamp": (Codec("timestamp"), lambda r: h.p_timestamp(_ts(r))),
    "timestamptz": (
        Codec("timestamptz"),
        lambda r: h.p_timestamp(edge_or(r, PG_TIMESTAMPTZ, _ts)),
    ),
    "tid": (Codec("tid"), lambda r: h.p_tid(r.randint(0, 2**32 - 1), r.randint(0, 2**16 - 1))),
    "char": (Codec("char"), lambda r: h.p_char(r.randint(0, 255))),
    "text": (Codec("text"), lambda r: h.p_text(_text(r))),
    "bytea": (Codec("bytea"), lambda r: r.randbytes(r.randint(0, 30))),
    "numeric": (Codec("numeric"), lambda r: h.p_numeric(edge_or(r, PG_NUMERIC, _numeric))),
    "numeric_dbl": (Codec("numeric", mode="double"), lambda r: h.p_numeric(_numeric(r))),
    "money": (Codec("money"), lambda r: h.p_money(r.randint(-(2**63), 2**63 - 1))),
    "json": (Codec("json"), lambda r: h.p_json(_json(r))),
    "jsonb": (Codec("jsonb"), lambda r: h.p_jsonb(edge_or(r, PG_JSONB, _json))),
    "time": (Codec("time"), lambda r: h.p_time(r.randint(0, 86_400_000_000))),
    "timetz": (
        Codec("timetz"),
        lambda r: h.p_timetz(r.randint(0, 86_400_000_000), r.randint(-50400, 50400)),
    ),
    "interval": (
        Codec("interval"),
        lambda r: h.p_interval(
            r.randint(-(10**12), 10**12), r.randint(-1000, 1000), r.randint(-1000, 1000)
        ),
    ),
    "inet": (
        Codec("inet"),
        lambda r: h.p_inet(
            f"{'.'.join(str(r.randint(0, 255)) for _ in range(4))}/{r.randint(0, 32)}"
        ),
    ),
    "cidr": (
        Codec("cidr"),
        lambda r: h.p_inet(f"2001:db8::{r.randint(0, 65535):x}/128", cidr=True),
    ),
    "macaddr": (Codec("macaddr"), lambda r: r.randbytes(6)),
    "macaddr8": (Codec("macaddr8"), lambda r: r.randbytes(8)),
    "int_array": (
        Codec("array", elem=Codec("int4")),
        lambda r: h.p_array(
            edge_or(
                r,
                PG_INT_ARRAYS,
                lambda r: [r.choice([None, r.randint(-5, 5)]) for _ in range(r.randint(0, 5))],
            ),
            h.p_int4,
        ),
    ),
    "numeric_array": (
        Codec("array", elem=Codec("numeric")),
        lambda r: h.p_array([edge_or(r, PG_NUMERIC, _numeric) for _ in range(3)], h.p_numeric),
    ),
    "text_array_2d": (
        Codec("array", elem=Codec("text")),
        lambda r: h.p_array(
            [[_text(r), None], [_text(r), "x"]],
            h.p_text,
            ndim=2,
            lower=r.choice([(1, 1), (0, 1), (-3, 7)]),
        ),
    ),
    "bounded_int_array": (
        Codec("array", elem=Codec("int8")),
        lambda r: h.p_array(
            [r.randint(-9, 9) for _ in range(r.randint(1, 4))],
            h.p_int8,
            elem_oid=20,
            lower=(r.choice([1, 0, -2, 2**31 - 1]),),
        ),
    ),
    "range": (
        Codec("range", elem=Codec("int8")),
        lambda r: h.p_range(
            r.choice([None, h.p_int8(r.randint(-9, 0))]),
            r.choice([None, h.p_int8(r.randint(1, 9))]),
            r.choice(["[)", "(]", "[]", "()"]),
            empty=r.random() < 0.1,
        ),
    ),
    "composite": (
        Codec("composite", fields=(Codec("int4"), Codec("text")), field_names=("n", "s")),
        lambda r: h.p_composite(
            [(23, r.choice([None, h.p_int4(r.randint(0, 9))])), (25, h.p_text(_text(r)))]
        ),
    ),
}


def random_layout(r: random.Random, options: EncodeOptions) -> Layout:
    # column i + 1 holds GENERATORS' i-th codec; the key order is shuffled
    fields: list[Node] = [
        FieldNode(f"c_{name}", i + 1, codec)
        for i, (name, (codec, _)) in enumerate(GENERATORS.items())
    ]
    r.shuffle(fields)
    # nest a few fields under embedded documents, including one that is all-NULL-able
    nodes: list[Node] = [FieldNode("_id", 0, Codec("int8"))]
    nodes += fields[:10]
    nodes.append(DocNode("sub", (*fields[10:14], DocNode("deeper", tuple(fields[14:16])))))
    nodes += fields[16:]
    return Layout(nodes=tuple(nodes), ncolumns=len(GENERATORS) + 1, options=options)


def random_rows(r: random.Random, rows: int, null_rate: float) -> list[list[bytes | None]]:
    out: list[list[bytes | None]] = []
    for i in range(rows):
        values: list[bytes | None] = [h.p_int8(i)]
        for name in GENERATORS:
            values.append(None if r.random() < null_rate else GENERATORS[name][1](r))
        out.append(values)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_compiled_matches_reference(seed: int) -> None:
    r = random.Random(seed)
    options = EncodeOptions(
        nulls=r.choice(["null", "omit"]),
        infinity=r.choice(["clamp", "clamp-int64", "null", "string"]),
        numeric_fallback=r.choice(["string", "double", "decimal"]),
        json_keys=r.choice(["keep", "replace"]),
        array_bounds=r.choice(["drop", "keep"]),
    )
    layout = random_layout(r, options)
    rows = random_rows(r, 300, null_rate=r.choice([0.0, 0.2, 1.0]))
    data = h.stream(rows)
    ref = encode_with("python", layout, data, 19)
    fast = encode_with("c", layout, data, 19)
    assert ref.rows == fast.rows == 300
    assert ref.finished and fast.finished and ref.end == fast.end == len(data)
    assert ref.offsets.tolist() == fast.offsets.tolist()
    assert ref.data == fast.data
    for i, doc in enumerate(ref.documents()):
        decoded = bson.decode(doc, codec_options=DECODE)
        assert next(iter(decoded)) == "_id" and decoded["_id"] == i


TRICKY_JSON = [
    '{"a": 1}',
    ' { "a" : [ 1 , 2 ] , "b" : { } , "c" : [ ] } ',
    '"esc \\" \\\\ \\/ \\b \\f \\n \\r \\t"',
    '"\\u00e9\\u4e2d\\ud834\\udd1e\\u0000"',
    '{"k\\u00e9y": "v"}',
    '"\\ud834"',  # lone surrogate: Python path (an error there)
    '{"\\u0000": 1}',  # NUL in a key: Python path (an error there)
    "01",
    "-0",
    "-0.0",
    "0.1",
    "0.30000000000000004",
    "123456789012345.5",
    "1.5e10",
    "1E-5",
    "2147483647",
    "2147483648",
    "-2147483649",
    "999999999999999999",
    "9999999999999999999",
    "0." + "0" * 30 + "1",
    "0." + "0" * 30,
    "[" * 140 + "]" * 140,
    "[" * 20 + "1" + "]" * 20,
    '{"$x": {"a.b": [1]}}',
    "[1, 2,]",
    "tru",
    "nul",
    '"ctrl\tchar"',
    '[true, false, null, "x", 1.25, -7, {"z": [{}]}]',
    "[" + ",".join(str(i) for i in range(1500)) + "]",
]


@pytest.mark.parametrize("json_keys", ["keep", "replace"])
def test_jsonb_kernel_matches_python(json_keys: str) -> None:
    from parallelsync.errors import EncodeError

    layout = Layout(
        nodes=(FieldNode("_id", 0, Codec("int4")), FieldNode("j", 1, Codec("jsonb"))),
        ncolumns=2,
        options=EncodeOptions(json_keys=json_keys),  # type: ignore[arg-type]
    )
    for i, text in enumerate(TRICKY_JSON):
        data = h.stream([[h.p_int4(i), h.p_jsonb(text)]], header=False)
        try:
            ref = encode_with("python", layout, data).data
        except EncodeError as exc:
            with pytest.raises(EncodeError) as fast_exc:
                DocumentEncoder(layout, fast=True).encode(data)
            assert str(fast_exc.value) == str(exc)
            continue
        assert encode_with("c", layout, data).data == ref, text

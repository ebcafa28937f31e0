"""The compiled kernel itself: which cells it encodes in C, and which it hands to Python.

`Kernel` is driven directly with spy encoders in the pre-encoded slots: a spy call means the
value went through Python. The issue's goal is the whole batch in C except the rare codecs, so
common numeric and jsonb values must never reach the spy, and the ones the C cells cannot
represent exactly must.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import struct
import uuid
from collections.abc import Callable

import bson
import pytest

from parallelsync.errors import EncodeError
from parallelsync.transcode import impl
from parallelsync.transcode.bson_writer import Buffer, Value
from parallelsync.transcode.model import Codec, EncodeOptions
from parallelsync.transcode.types import value_encoder
from tests.unit.transcode import copy_helpers as h
from tests.unit.transcode.support import encode_both, one_column_layout

kernel = impl.load_extension()


class Spy:
    """A reference encoder that records the cells it was called for."""

    def __init__(self, codec: Codec, options: EncodeOptions | None = None) -> None:
        self.encode = value_encoder(codec, options or EncodeOptions())
        self.calls: list[bytes] = []

    def __call__(self, buf: Buffer, pos: int, length: int) -> Value:
        self.calls.append(bytes(buf[pos : pos + length]))
        return self.encode(buf, pos, length)


def run_cells(cell: str, spy: Callable[[Buffer, int, int], Value], payloads: list[bytes]) -> list:
    ops = [("int4", 0, b"_id\x00", -1), ("preencoded", 1, b"v\x00", 0)]
    k = kernel.Kernel(ops, [(1, spy, cell)], 2, False, "clamp", 16 * 1024 * 1024, False)
    data = h.stream([[h.p_int4(i), p] for i, p in enumerate(payloads)], header=False)
    out, offsets, rows, end, finished, err, _row = k.encode(data)
    assert (err, rows, end, finished) == (kernel.ERR_NONE, len(payloads), len(data), True)
    bounds = offsets.tolist()
    return [bson.decode(out[a:b])["v"] for a, b in itertools.pairwise(bounds)]


def test_common_numerics_never_reach_python() -> None:
    texts = ["0", "1.50", "-123.4500", "12345678.12", "0.0001", "NaN", "-Infinity",
             "9" * 34, "1" + "0" * 40, "0." + "0" * 6175 + "1"]  # fmt: skip
    spy = Spy(Codec("numeric"))
    values = run_cells("numeric", spy, [h.p_numeric(t) for t in texts])
    assert spy.calls == []
    assert [str(v) for v in values] == [str(bson.decimal128.Decimal128(t)) for t in texts]


def test_inexact_numerics_go_to_python() -> None:
    inexact = ["12345678901234567890123456789012345", "0." + "0" * 6176 + "1"]
    spy = Spy(Codec("numeric"))
    values = run_cells("numeric", spy, [h.p_numeric(t) for t in inexact])
    assert spy.calls == [h.p_numeric(t) for t in inexact]
    assert values == inexact  # numeric_fallback "string"


def test_common_jsonb_never_reaches_python() -> None:
    texts = ['{"a": 1, "b": [1.5, "x", null, true]}', '"s"', "[]", '{"n": -12.25}',
             '{"k\\u00e9y": "\\ud834\\udd1e"}', "[" * 100 + "]" * 100]  # fmt: skip
    spy = Spy(Codec("jsonb"))
    values = run_cells("jsonb", spy, [h.p_jsonb(t) for t in texts])
    assert spy.calls == []
    assert values[:5] == [{"a": 1, "b": [1.5, "x", None, True]}, "s", [], {"n": -12.25},
                          {"kéy": "𝄞"}]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.1e400", float("inf")),  # beyond the double range
        ("12345678901234567890", 12345678901234567890.0),  # beyond int64: a double
        ("1.2345678901234567", 1.2345678901234567),  # 17 digits: not one exact IEEE operation
        ("[" * 129 + "]" * 129, None),  # deeper than the kernel's stack
    ],
)
def test_jsonb_the_kernel_cannot_match_goes_to_python(text: str, expected: object) -> None:
    spy = Spy(Codec("jsonb"))
    (value,) = run_cells("jsonb", spy, [h.p_jsonb(text)])
    assert spy.calls == [h.p_jsonb(text)]
    if expected is not None:
        assert value == expected


def test_a_python_cell_error_is_an_error_code() -> None:
    spy = Spy(Codec("jsonb"))
    ops = [("int4", 0, b"_id\x00", -1), ("preencoded", 1, b"v\x00", 0)]
    k = kernel.Kernel(ops, [(1, spy, "jsonb")], 2, False, "clamp", 1 << 24, False)
    lone_surrogate = h.p_jsonb('"\\ud834"')
    assert k.encode(h.row(h.p_int4(1), lone_surrogate))[5] == kernel.ERR_CELL
    assert spy.calls == [lone_surrogate]


def test_python_only_codecs_are_called_once_per_non_null_cell() -> None:
    spy = Spy(Codec("interval"))
    payloads = [h.p_interval(1, 2, 3), h.p_interval(0, 0, 0)]
    values = run_cells("", spy, payloads)
    assert spy.calls == payloads
    assert values == ["P3M2DT0.000001S", "PT0S"]


def test_kernel_errors_are_codes() -> None:
    ops = [("text", 0, b"_id\x00", -1)]
    k = kernel.Kernel(ops, [], 1, False, "clamp", 1 << 24, False)
    assert k.encode(h.row(b"ok\xff"))[5:] == (kernel.ERR_VALUE, 0)
    assert k.encode(h.row(b"ok")[:-1])[5] == kernel.ERR_FRAMING
    small = kernel.Kernel(ops, [], 1, False, "clamp", 20, False)
    assert small.encode(h.row(b"x") + h.row(b"y" * 20))[5:] == (kernel.ERR_TOO_LARGE, 1)
    refuse = kernel.Kernel([("date", 0, b"_id\x00", -1)], [], 1, False, "error", 1 << 24, False)
    assert refuse.encode(h.row(struct.pack(">i", 2**31 - 1)))[5] == kernel.ERR_VALUE


def test_kernel_rejects_bad_programs() -> None:
    with pytest.raises(ValueError, match="reads column 3"):
        kernel.Kernel([("int4", 3, b"_id\x00", -1)], [], 1, False, "clamp", 1 << 24, False)
    with pytest.raises(ValueError, match="doc_start without doc_end"):
        kernel.Kernel([("doc_start", 0, b"a\x00", -1)], [], 1, False, "clamp", 1 << 24, False)
    with pytest.raises(KeyError):
        kernel.Kernel([("int4", 0, b"_id\x00", -1)], [], 1, False, "forever", 1 << 24, False)


def test_deep_layouts_have_no_depth_limit() -> None:
    ops = [("doc_start", 0, b"d\x00", -1)] * 200 + [("int4", 0, b"x\x00", -1)]
    ops += [("doc_end", 0, b"", -1)] * 200
    k = kernel.Kernel(ops, [], 1, False, "clamp", 1 << 24, False)
    out, _offsets, rows, *_ = k.encode(h.row(h.p_int4(7)))
    value = bson.decode(out)
    for _ in range(200):
        value = value["d"]
    assert (rows, value) == (1, {"x": 7})


MUTATION_BASE = [
    '{"a": 1, "b": [1.5, "x", null, true]}', '"héllo \\u00e9 𝄞"', '{"k": {"n": -12.25e3}}',
    '[true, false, null, "a\\"b\\\\c"]', '{"key.with": "dots", "$d": [0, -0, 1e5]}',
]  # fmt: skip
MUTANT_BYTES = b'"\\\x80\xc3\xa9\xff\xed\xa0\x00 {}[],:.e-+0123456789tfn'


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("json_keys", ["keep", "replace"])
def test_jsonb_mutations_match_the_reference(seed: int, json_keys: str) -> None:
    """Random byte mutations (broken UTF-8, quotes, escapes, syntax): the compiled path gives
    the reference's bytes or the reference's error, never something else."""
    r = random.Random(seed)
    layout = one_column_layout(Codec("jsonb"), EncodeOptions(json_keys=json_keys))  # type: ignore[arg-type]
    for i in range(300):
        text = bytearray(r.choice(MUTATION_BASE).encode())
        for _ in range(r.randint(1, 3)):
            text[r.randrange(len(text))] = r.choice(MUTANT_BYTES)
        data = h.stream([[h.p_int4(i), b"\x01" + bytes(text)]])
        with contextlib.suppress(EncodeError):
            encode_both(layout, data)  # asserts equal bytes, or the same error


def _scratch_kernel() -> tuple[object, Callable[[int, int], bytes]]:
    """A kernel with native columns, a C cell (jsonb) and a Python cell (uuid as a string)."""
    ops = [("int4", 0, b"_id\x00", -1), ("text", 1, b"t\x00", -1),
           ("preencoded", 2, b"j\x00", 0), ("preencoded", 3, b"s\x00", 1)]  # fmt: skip
    slots = [
        (2, value_encoder(Codec("jsonb"), EncodeOptions()), "jsonb"),
        (3, value_encoder(Codec("uuid", mode="string"), EncodeOptions()), ""),
    ]
    k = kernel.Kernel(ops, slots, 4, False, "clamp", 16 * 1024 * 1024, False)

    def batch(first: int, rows: int) -> bytes:
        fields = [
            [h.p_int4(i), h.p_text("x" * (i % 50)), h.p_jsonb(f'{{"k": {i}, "v": [1, "a"]}}'),
             h.p_uuid(uuid.UUID(int=i * 7))]
            for i in range(first, first + rows)
        ]  # fmt: skip
        return h.stream(fields, header=False)

    return k, batch


def _docs(k: object, data: bytes) -> list[dict[str, object]]:
    out, offsets, rows, _end, _finished, err, _row = k.encode(data)  # type: ignore[attr-defined]
    assert err == kernel.ERR_NONE
    bounds = offsets.tolist()
    assert len(bounds) == rows + 1
    return [bson.decode(out[a:b]) for a, b in itertools.pairwise(bounds)]


def _expected(first: int, rows: int) -> list[dict[str, object]]:
    return [
        {
            "_id": i,
            "t": "x" * (i % 50),
            "j": {"k": i, "v": [1, "a"]},
            "s": str(uuid.UUID(int=7 * i)),
        }
        for i in range(first, first + rows)
    ]


def test_scratch_buffers_reused_across_batches_of_every_size() -> None:
    # The kernel keeps its working arrays between batches: a small batch after a large one
    # (stale entries beyond its rows), a large one after a small one (regrown), and a failed
    # batch in between (left mid-way) must all give exactly their own documents.
    k, batch = _scratch_kernel()
    for first, rows in [(0, 3000), (5, 2), (100, 1), (0, 6000), (7, 40)]:
        assert _docs(k, batch(first, rows)) == _expected(first, rows)
    broken = batch(0, 10)[:-3]  # the last tuple cut short
    assert k.encode(broken)[5] == kernel.ERR_FRAMING  # type: ignore[attr-defined]
    assert _docs(k, batch(9, 500)) == _expected(9, 500)


def test_one_kernel_encodes_in_two_threads_at_once() -> None:
    # The GIL is released while a batch is walked and assembled, so two threads sharing one
    # Kernel really overlap: the second must not write into the first one's scratch buffers.
    import threading

    k, batch = _scratch_kernel()
    inputs = [(t * 10_000, 2000 + 500 * t) for t in range(2)]
    datas = [batch(first, rows) for first, rows in inputs]
    wrong: list[int] = []
    start = threading.Barrier(2)

    def run(t: int) -> None:
        start.wait()
        for _ in range(30):
            if _docs(k, datas[t]) != _expected(*inputs[t]):
                wrong.append(t)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert wrong == []

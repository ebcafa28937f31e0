"""Build binary COPY data in memory: the wire formats of PostgreSQL's *_send functions."""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)

PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
PG_EPOCH_DATE = dt.date(2000, 1, 1)
INT32_MAX = 2**31 - 1
INT32_MIN = -(2**31)
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

Field = bytes | None


def row(*fields: Field) -> bytes:
    out = bytearray(struct.pack(">h", len(fields)))
    for value in fields:
        if value is None:
            out += struct.pack(">i", -1)
        else:
            out += struct.pack(">i", len(value)) + value
    return bytes(out)


def stream(rows: Sequence[Sequence[Field]], *, header: bool = True, trailer: bool = True) -> bytes:
    return (
        (HEADER if header else b"")
        + b"".join(row(*r) for r in rows)
        + (TRAILER if trailer else b"")
    )


def p_bool(v: bool) -> bytes:
    return b"\x01" if v else b"\x00"


def p_int2(v: int) -> bytes:
    return struct.pack(">h", v)


def p_int4(v: int) -> bytes:
    return struct.pack(">i", v)


def p_int8(v: int) -> bytes:
    return struct.pack(">q", v)


def p_uint32(v: int) -> bytes:
    return struct.pack(">I", v)


def p_uint64(v: int) -> bytes:
    return struct.pack(">Q", v)


def p_float4(v: float) -> bytes:
    return struct.pack(">f", v)


def p_float8(v: float) -> bytes:
    return struct.pack(">d", v)


def p_text(v: str) -> bytes:
    return v.encode("utf-8")


def p_uuid(v: uuid.UUID | str) -> bytes:
    return uuid.UUID(str(v)).bytes


def p_date(v: dt.date | int) -> bytes:
    days = v if isinstance(v, int) else (v - PG_EPOCH_DATE).days
    return struct.pack(">i", days)


def p_timestamp(v: dt.datetime | int) -> bytes:
    if isinstance(v, int):
        return struct.pack(">q", v)
    if v.tzinfo is None:
        v = v.replace(tzinfo=dt.UTC)
    delta = v - PG_EPOCH
    return struct.pack(">q", (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)


def p_time(usecs: int) -> bytes:
    return struct.pack(">q", usecs)


def p_timetz(usecs: int, zone_west: int) -> bytes:
    return struct.pack(">qi", usecs, zone_west)


def p_interval(usecs: int, days: int, months: int) -> bytes:
    return struct.pack(">qii", usecs, days, months)


def p_tid(block: int, offset: int) -> bytes:
    return struct.pack(">IH", block, offset)


def p_char(byte: int) -> bytes:
    return bytes((byte,))


def p_numeric(v: str | Decimal) -> bytes:
    """numeric_send: base-10000 digits, weight, sign, dscale (from the text form)."""
    text = str(v)
    if text in ("NaN", "Infinity", "-Infinity"):
        sign = {"NaN": 0xC000, "Infinity": 0xD000, "-Infinity": 0xF000}[text]
        return struct.pack(">hhHh", 0, 0, sign, 0)
    d = Decimal(text)
    negative = d.is_signed()
    plain = format(d.copy_abs(), "f")  # abs() would round to the context precision
    whole, _, frac = plain.partition(".")
    dscale = len(frac)
    whole = whole.lstrip("0")
    whole = "0" * (-len(whole) % 4) + whole
    frac_padded = frac + "0" * (-len(frac) % 4)
    groups = [int(whole[i : i + 4]) for i in range(0, len(whole), 4)]
    weight = len(groups) - 1
    groups += [int(frac_padded[i : i + 4]) for i in range(0, len(frac_padded), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight, negative = 0, False
    sign = 0x4000 if negative else 0
    return struct.pack(f">hhHh{len(groups)}H", len(groups), weight, sign, dscale, *groups)


def p_money(cents: int) -> bytes:
    return struct.pack(">q", cents)


def p_json(text: str) -> bytes:
    return text.encode("utf-8")


def p_jsonb(text: str) -> bytes:
    return b"\x01" + text.encode("utf-8")


def p_inet(address: str, *, cidr: bool = False) -> bytes:
    import ipaddress

    net = ipaddress.ip_interface(address)
    family = 2 if net.version == 4 else 3
    raw = net.ip.packed
    return bytes((family, net.network.prefixlen, 1 if cidr else 0, len(raw))) + raw


def p_mac(address: str) -> bytes:
    return bytes.fromhex(address.replace(":", ""))


def p_array(
    values: Sequence[Any],
    pack: Callable[[Any], bytes],
    *,
    elem_oid: int = 23,
    ndim: int = 1,
    lower: Sequence[int] | None = None,
) -> bytes:
    """array_send; `values` nested `ndim` deep (rectangular), None = NULL element; `lower`: the
    lower bound of each dimension (default 1)."""
    dims: list[int] = []
    level: Any = values
    for _ in range(ndim):
        dims.append(len(level))
        level = level[0] if len(level) else []
    if not values:
        return struct.pack(">iiI", 0, 0, elem_oid)
    flat: list[Any] = list(values)
    for _ in range(ndim - 1):
        flat = [x for sub in flat for x in sub]
    has_null = any(x is None for x in flat)
    out = bytearray(struct.pack(">iiI", ndim, 1 if has_null else 0, elem_oid))
    for i, size in enumerate(dims):
        out += struct.pack(">ii", size, 1 if lower is None else lower[i])
    for x in flat:
        if x is None:
            out += struct.pack(">i", -1)
        else:
            b = pack(x)
            out += struct.pack(">i", len(b)) + b
    return bytes(out)


def p_range(
    lower: bytes | None, upper: bytes | None, bounds: str = "[)", *, empty: bool = False
) -> bytes:
    """range_send; None bound = infinite."""
    if empty:
        return b"\x01"
    flags = 0
    if bounds[0] == "[" and lower is not None:
        flags |= 0x02
    if bounds[1] == "]" and upper is not None:
        flags |= 0x04
    if lower is None:
        flags |= 0x08
    if upper is None:
        flags |= 0x10
    out = bytearray((flags,))
    for bound in (lower, upper):
        if bound is not None:
            out += struct.pack(">i", len(bound)) + bound
    return bytes(out)


def p_composite(fields: Sequence[tuple[int, bytes | None]]) -> bytes:
    """record_send: (oid, value bytes or None) per attribute."""
    out = bytearray(struct.pack(">i", len(fields)))
    for oid, value in fields:
        if value is None:
            out += struct.pack(">Ii", oid, -1)
        else:
            out += struct.pack(">Ii", oid, len(value)) + value
    return bytes(out)

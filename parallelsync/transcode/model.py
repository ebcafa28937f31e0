"""The contract between the PostgreSQL side (which knows the catalog) and the pure transcoder.

The source side resolves every column to a `Codec`: a small closed vocabulary that says how the
value arrives in `COPY ... (FORMAT BINARY)` (after any cast the SELECT applies). Domains are
resolved to their base type; enums, citext and every type without a binary codec here are cast to
text in the SELECT and arrive as `text`. The transcoder never looks at OIDs of the top-level
columns; it only needs them inside composite values, whose binary form carries per-field OIDs.

A document is described by a `Layout`: a tree of nodes in output order, `_id` first. A
`FieldNode` writes one COPY column under a key; a `DocNode` writes an embedded document (used for
composite `_id`s and dotted-path nesting such as `address.city`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Codec names. Grouped by what the binary COPY value looks like.
FIXED_CODECS = frozenset(
    {
        "bool",  # 1 byte -> BSON boolean
        "int2",  # -> int32
        "int4",  # -> int32
        "int8",  # -> int64
        "oid",  # uint32 -> int64
        "xid",  # uint32 -> int64
        "xid8",  # uint64 -> int64 (values above 2**63-1 are an EncodeError)
        "float4",  # -> double (NaN/±Inf kept)
        "float8",  # -> double
        "uuid",  # 16 bytes -> binary subtype 4 (mode "string": canonical 36-char string)
        "date",  # int32 days since 2000-01-01 -> BSON date (UTC ms); ±infinity by policy
        "timestamp",  # int64 µs since 2000-01-01 -> BSON date (ms, floor); ±infinity by policy
        "timestamptz",  # same as timestamp (the value is UTC)
        "tid",  # ctid: uint32 block + uint16 offset -> int64 (block << 16 | offset), generated _id
        "char",  # the one-byte "char" type -> string
    }
)
VARLEN_CODECS = frozenset(
    {
        "text",  # UTF-8 bytes -> string (text, varchar, bpchar, name, citext, enum, casts)
        "bytea",  # -> binary subtype 0
        "numeric",  # -> decimal128 (exact <= 34 significant digits; fallback by option); NaN/±Inf
        "money",  # int64 cents (scale 2) -> decimal128
        "json",  # UTF-8 JSON text -> embedded document / array / scalar (orjson)
        "jsonb",  # version byte 1 + JSON text -> same as json
        "time",  # int64 µs -> "HH:MM:SS[.ffffff]"
        "timetz",  # int64 µs + int32 zone offset (seconds WEST of UTC) -> "HH:MM:SS[.ffffff]+HH:MM"
        "interval",  # int64 µs, int32 days, int32 months -> ISO 8601 duration "P1Y2M3DT4H5M6.5S"
        "inet",  # -> "192.168.0.1/24" style string (host form without /32 or /128)
        "cidr",  # -> "10.0.0.0/8"
        "macaddr",  # 6 bytes -> "08:00:2b:01:02:03"
        "macaddr8",  # 8 bytes -> "08:00:2b:01:02:03:04:05"
        "array",  # any dimension; `elem` is the element codec; N-D -> nested arrays; NULL -> null
        # `elem` is the subtype codec -> {lower, upper, bounds: "[)"}; empty -> {empty: true}
        "range",
        "composite",  # `fields` / `field_names` -> embedded document
    }
)
CODECS = FIXED_CODECS | VARLEN_CODECS

NullPolicy = Literal["null", "omit"]
# clamp: the first/last millisecond of years 1-9999 (what drivers, JavaScript and mongo tools can
# read); clamp-int64: the int64 min/max milliseconds (year ±292 million, the old default)
InfinityPolicy = Literal["clamp", "clamp-int64", "null", "string", "error"]
NumericFallback = Literal["string", "double", "decimal"]
JsonKeyPolicy = Literal["keep", "replace", "error"]
# drop: an array is its elements whatever its lower bounds; keep: an array with a lower bound
# other than 1 becomes {lower: [per dimension], values: [...]}
ArrayBoundsPolicy = Literal["drop", "keep"]

# MongoDB's maximum BSON document size.
MAX_BSON_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Codec:
    """How one value arrives in COPY BINARY and how it maps to BSON.

    `mode` selects a per-column mapping variant:
    - uuid: "" (binary subtype 4) or "string"
    - numeric / money: "" (decimal128 with the job's fallback), "double", "string"
    - anything else: "" only
    """

    name: str
    elem: Codec | None = None  # array element codec, range subtype codec
    fields: tuple[Codec, ...] = ()  # composite attribute codecs (in attribute order)
    field_names: tuple[str, ...] = ()  # composite attribute names (same order)
    mode: str = ""


@dataclass(frozen=True)
class FieldNode:
    key: str  # BSON key (no dots: nesting is expressed with DocNode)
    column: int  # index of the value in the COPY tuple
    codec: Codec


@dataclass(frozen=True)
class DocNode:
    key: str
    children: tuple[FieldNode | DocNode, ...]


Node = FieldNode | DocNode


@dataclass(frozen=True)
class EncodeOptions:
    nulls: NullPolicy = "null"  # NULL -> BSON null, or leave the field out
    # ±infinity dates: clamp to years 1-9999, clamp-int64, null, "infinity"/"-infinity", error
    infinity: InfinityPolicy = "clamp"
    numeric_fallback: NumericFallback = "string"  # numeric with > 34 significant digits
    json_keys: JsonKeyPolicy = "keep"  # json object keys with "$" prefix or "." inside
    array_bounds: ArrayBoundsPolicy = "drop"  # arrays whose lower bound is not 1
    max_document_size: int = MAX_BSON_SIZE


@dataclass(frozen=True)
class Layout:
    """The document shape: top-level nodes in output order; the first node's key is `_id`."""

    nodes: tuple[Node, ...]
    ncolumns: int  # number of columns in each COPY tuple
    options: EncodeOptions = field(default_factory=EncodeOptions)

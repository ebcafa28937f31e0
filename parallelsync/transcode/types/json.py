"""json/jsonb -> BSON document, array or scalar.

Parsing is orjson; the BSON of the parsed value is bson's C encoder on a one-key wrapper
({"v": value}): encoding the object itself at top level would let bson move an "_id" key to the
front, and the wrapper also serves arrays and scalars. Measured ~1.5-3 µs per small value.

Integers outside int64: orjson already turns integers beyond 64 bits into doubles; the ones in
[2**63, 2**64) are turned into doubles here too, so such a value never stops a run (documented:
precision beyond 2**53 is lost, as in JavaScript). Numbers beyond the double range (jsonb accepts
1e400) are re-parsed with the standard library and become ±Infinity.
"""

from __future__ import annotations

import json as stdlib_json
from typing import Any

import bson
import orjson

from parallelsync.transcode.bson_writer import Buffer, Value, ValueEncoder
from parallelsync.transcode.model import JsonKeyPolicy

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_FULLWIDTH_DOLLAR = "\uff04"
_FULLWIDTH_DOT = "\uff0e"


def _bad_key(key: str) -> bool:
    return key.startswith("$") or "." in key


def _replace_key(key: str) -> str:
    # Only a leading "$" is special to MongoDB; every "." is (dotted paths).
    if key.startswith("$"):
        key = _FULLWIDTH_DOLLAR + key[1:]
    return key.replace(".", _FULLWIDTH_DOT)


def fix_keys(value: Any, policy: JsonKeyPolicy) -> Any:
    """Apply the key policy to every object in `value` (recursively)."""
    if isinstance(value, dict):
        fixed: dict[str, Any] = {}
        for key, item in value.items():
            if _bad_key(key):
                if policy == "error":
                    raise ValueError(
                        f"json key {key!r} starts with '$' or contains '.': choose the json key "
                        "policy keep or replace"
                    )
                key = _replace_key(key)
            fixed[key] = fix_keys(item, policy)
        return fixed
    if isinstance(value, list):
        return [fix_keys(item, policy) for item in value]
    return value


def _wide_ints_to_double(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _wide_ints_to_double(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_wide_ints_to_double(item) for item in value]
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not _INT64_MIN <= value <= _INT64_MAX
    ):
        try:
            return float(value)
        except OverflowError:  # beyond the double range: infinity, as for 1e400
            return float("inf") if value > 0 else float("-inf")
    return value


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson refuses numbers beyond the double range; the standard library yields inf.
        return stdlib_json.loads(raw)


def bson_value(value: Any) -> Value:
    try:
        encoded: bytes = bson.encode({"v": value})
    except OverflowError:
        encoded = bson.encode({"v": _wide_ints_to_double(value)})
    # int32 length, type byte, "v\0", payload, trailing NUL
    return (encoded[4], encoded[7:-1])


def json_encoder(jsonb: bool, policy: JsonKeyPolicy) -> ValueEncoder:
    check_keys = policy != "keep"

    def encode_json(buf: Buffer, pos: int, length: int) -> Value:
        if jsonb:
            if length < 1 or buf[pos] != 1:
                raise ValueError("jsonb value does not start with format version 1")
            raw = bytes(buf[pos + 1 : pos + length])
        else:
            raw = bytes(buf[pos : pos + length])
        value = parse_json(raw)
        # Cheap byte test first: most documents have no "$" and the walk is then skipped.
        if check_keys and (b"$" in raw or b"." in raw):
            value = fix_keys(value, policy)
        return bson_value(value)

    return encode_json

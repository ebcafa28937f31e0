"""Per-codec value encoders, chosen once per column (never per value)."""

from __future__ import annotations

from parallelsync.transcode.bson_writer import ValueEncoder
from parallelsync.transcode.model import Codec, EncodeOptions
from parallelsync.transcode.numeric import money_encoder, numeric_encoder
from parallelsync.transcode.types import containers, datetime, json, network, scalars

_SIMPLE: dict[str, ValueEncoder] = {
    "bool": scalars.encode_bool,
    "int2": scalars.encode_int2,
    "int4": scalars.encode_int4,
    "int8": scalars.encode_int8,
    "oid": scalars.encode_uint32,
    "xid": scalars.encode_uint32,
    "xid8": scalars.encode_xid8,
    "float4": scalars.encode_float4,
    "float8": scalars.encode_float8,
    "tid": scalars.encode_tid,
    "char": scalars.encode_char,
    "text": scalars.encode_text,
    "bytea": scalars.encode_bytea,
    "time": datetime.encode_time,
    "timetz": datetime.encode_timetz,
    "interval": datetime.encode_interval,
    "macaddr": network.mac_encoder(6),
    "macaddr8": network.mac_encoder(8),
    "inet": network.inet_encoder(cidr=False),
    "cidr": network.inet_encoder(cidr=True),
}


def value_encoder(codec: Codec, options: EncodeOptions) -> ValueEncoder:
    """The encoder for one codec under the job's options; ValueError for an unknown codec."""
    name = codec.name
    if codec.mode and name not in ("uuid", "numeric", "money"):
        raise ValueError(f"codec {name!r} has no mode {codec.mode!r}")
    simple = _SIMPLE.get(name)
    if simple is not None:
        return simple
    if name == "uuid":
        return scalars.uuid_encoder(codec)
    if name == "numeric":
        return numeric_encoder(codec, options.numeric_fallback)
    if name == "money":
        return money_encoder(codec)
    if name == "date":
        return datetime.date_encoder(options.infinity)
    if name in ("timestamp", "timestamptz"):
        return datetime.timestamp_encoder(options.infinity)
    if name in ("json", "jsonb"):
        return json.json_encoder(name == "jsonb", options.json_keys)
    if name in ("array", "range"):
        if codec.elem is None:
            raise ValueError(f"{name} codec without an element codec")
        elem = value_encoder(codec.elem, options)
        if name == "range":
            return containers.range_encoder(elem)
        return containers.array_encoder(elem, keep_bounds=options.array_bounds == "keep")
    if name == "composite":
        if len(codec.fields) != len(codec.field_names):
            raise ValueError("composite codec: fields and field_names differ in length")
        fields = [value_encoder(field, options) for field in codec.fields]
        return containers.composite_encoder(fields, codec.field_names, options.nulls)
    raise ValueError(f"unknown codec {name!r}")

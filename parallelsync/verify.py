"""Comparing source ranges with what MongoDB holds: counts and content digests per range.

A range can be selected on the MongoDB side only when BSON orders `_id` exactly as PostgreSQL
orders the key: integers, uuids stored as binary (both compare bytewise) and ctid-derived ids.
For other keys (text under a collation, composite keys, timestamps truncated to ms) the target is
compared as a whole and differences are reported for the table rather than per range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bson.binary import Binary
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

from parallelsync.checksum import Digest, doc_hash
from parallelsync.source.planner import KeyRange
from parallelsync.transcode.model import FieldNode, Layout

RAW = CodecOptions(document_class=RawBSONDocument)
INT_CODECS = frozenset({"int2", "int4", "int8"})
# Sample keys are collected only for ranges up to this size, so verify memory stays bounded.
SAMPLE_LIMIT_ROWS = 200_000


def mongo_filter(rng: KeyRange, layout: Layout) -> dict[str, Any] | None:
    """The `_id` filter selecting exactly this range in MongoDB, or None if BSON order differs."""
    if rng.kind == "all":
        return {}
    first = layout.nodes[0]
    if not isinstance(first, FieldNode):
        return None
    name, mode = first.codec.name, first.codec.mode

    def conv(bound: tuple[Any, ...]) -> Any:
        v = bound[0]
        if rng.kind == "ctid":
            return int(v) << 16
        if name == "uuid":
            return Binary(v.bytes, 4)
        return int(v)

    if rng.kind == "ctid" or name in INT_CODECS or (name == "uuid" and mode != "string"):
        cond: dict[str, Any] = {}
        if rng.lower is not None:
            cond["$gte"] = conv(rng.lower)
        if rng.upper is not None:
            cond["$lt"] = conv(rng.upper)
        return {"_id": cond} if cond else {}
    return None


def target_digest(coll: Collection[Any], filt: dict[str, Any]) -> Digest:
    d = Digest()
    raw = coll.with_options(codec_options=RAW)
    d.add_all(bytes(doc.raw) for doc in raw.find(filt, batch_size=10_000))
    return d


def target_hashes(coll: Collection[Any], filt: dict[str, Any], limit: int) -> dict[Any, int] | None:
    out: dict[Any, int] = {}
    raw = coll.with_options(codec_options=RAW)
    for doc in raw.find(filt, batch_size=10_000):
        if len(out) >= limit:
            return None
        out[_key(doc["_id"])] = doc_hash(bytes(doc.raw))
    return out


def _key(v: Any) -> Any:
    return v.raw if isinstance(v, RawBSONDocument) else v


@dataclass
class RangeCheck:
    range_id: int
    source: Digest
    target: Digest | None  # None: not selectable in MongoDB
    filter: dict[str, Any] | None

    @property
    def equal(self) -> bool:
        return self.target is not None and (
            self.source.count == self.target.count and self.source.total == self.target.total
        )

    def as_doc(self) -> dict[str, Any]:
        return {
            "range": self.range_id,
            "source": self.source.as_doc(),
            "target": None if self.target is None else self.target.as_doc(),
            "equal": self.equal if self.target is not None else None,
        }


def compare(
    coll: Collection[Any], ranges: list[tuple[int, dict[str, Any] | None, Digest]]
) -> tuple[list[RangeCheck], Digest, Digest]:
    """Per-range checks where every range has an `_id` filter, whole-collection totals always.

    `ranges` holds (range id, `_id` filter from `mongo_filter` or None, source digest)."""
    checks: list[RangeCheck] = []
    src_total, tgt_total = Digest(), Digest()
    per_range = all(f is not None for _, f, _ in ranges)
    for rid, filt, src in ranges:
        src_total.merge(src)
        tgt = target_digest(coll, filt) if per_range and filt is not None else None
        if tgt is not None:
            tgt_total.merge(tgt)
        checks.append(RangeCheck(rid, src, tgt, filt if per_range else None))
    if not per_range:
        tgt_total = target_digest(coll, {})
    return checks, src_total, tgt_total

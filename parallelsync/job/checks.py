"""Comparing what the source gave with what the target holds: counts and content digests.

A range can be selected on the MongoDB side only when BSON orders `_id` exactly as PostgreSQL
orders the key: integers, uuids stored as binary (both compare bytewise) and ctid-derived ids.
For other keys (text under a collation, composite keys, timestamps truncated to ms) the target is
compared as a whole and differences are reported for the table rather than per range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bson.binary import Binary

from parallelsync.errors import EncodeError, VerifyError
from parallelsync.job.state import RangeState
from parallelsync.source.counts import Counts
from parallelsync.source.planner import KeyRange
from parallelsync.targets import Target
from parallelsync.targets.base import JobStore
from parallelsync.transcode.checksum import Digest
from parallelsync.transcode.model import FieldNode, Layout

INT_CODECS = frozenset({"int2", "int4", "int8"})


def mongo_filter(
    rng: KeyRange, layout: Layout, id_is_key: bool = True, *, null_keys: bool = False
) -> dict[str, Any] | None:
    """The `_id` filter selecting exactly this range in MongoDB, or None if BSON order differs
    or `_id` is not built from the range key (then the range's bounds say nothing about `_id`).
    Embedded `_id`s ({rel, ctid} of a read over several relations, composite keys) get None.
    `null_keys`: the plan has a range of NULL keys, which no other range's filter may select."""
    if rng.kind == "all":
        return {}
    first = layout.nodes[0]
    if not id_is_key or not isinstance(first, FieldNode):
        return None
    name, mode = first.codec.name, first.codec.mode
    if rng.kind == "nulls":
        # The rows whose key is NULL: a NULL _id (BSON null sorts before every other type, so
        # no bounded range's filter selects it).
        return {"_id": None} if name in INT_CODECS or name == "uuid" else None

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
        if not cond and null_keys:
            cond["$ne"] = None
        return {"_id": cond} if cond else {}
    return None


def expected_documents(counts: Counts, states: list[RangeState], *, consistency: str) -> int:
    """The documents the temp must hold, from what the snapshot holds (source/counts.py).

    `consistency`: "snapshot": every range was read under the counted snapshot, so the rows read
    must be exactly the rows it holds (a row no range selected, or one two ranges selected, shows
    here, whatever the documents say); "caught_up": ranges were read under two snapshots and a
    resume's catch-up brought them to the counted one, so the count alone is the truth;
    "per-range": no one snapshot holds what was read (a resume without slot, a foreign table), so
    the rows read are. Duplicate keys fail in every case, for every target kind."""
    skipped = sum(s.skipped for s in states)
    read = sum(s.rows for s in states) + skipped
    if counts.distinct_keys is not None and counts.distinct_keys != counts.rows:
        raise EncodeError(
            f"the snapshot holds {counts.rows} rows but only {counts.distinct_keys} distinct "
            "key values (NULL counted as one value, as a NULL _id is): the chosen key is not "
            "unique: choose a unique key with --key; nothing was swapped"
        )
    if consistency == "per-range":
        return read - skipped
    if consistency == "snapshot" and read != counts.rows:
        raise VerifyError(
            f"the workers read {read} rows but the snapshot holds {counts.rows}: rows were missed "
            "or read twice by the ranges; nothing was swapped and the target is unchanged"
        )
    return counts.rows - skipped


def check_counts(
    target: Target, temp: str, states: list[RangeState], expected: int, *, per_range: bool
) -> int:
    """The temp must hold exactly `expected` documents; returns the count (expected when the
    target cannot be counted, as `null:`)."""
    found = target.count(temp)
    if found is None:
        return expected
    if found == expected:
        return found
    # Every document of range R comes from a row read for R and no _id repeats, so each range
    # holds at most the rows read for it: the totals matching implies every range matches. When
    # they do not, name the ranges that differ (where _id order allows).
    if per_range and all(s.id_filter is not None for s in states):
        bad = []
        for s in states:
            n = target.count(temp, s.id_filter or {})
            if n != s.rows:
                bad.append(f"range {s.rng.id}: {n} documents for {s.rows} rows")
        if bad:
            raise VerifyError(
                f"per-range counts differ ({'; '.join(bad[:5])}); nothing was swapped and the "
                "target is unchanged"
            )
    raise VerifyError(
        f"the temp collection holds {found} documents but {expected} rows were read; "
        "nothing was swapped and the target is unchanged"
    )


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


@dataclass
class Comparison:
    checks: list[RangeCheck]
    source: Digest
    target: Digest

    @property
    def per_range(self) -> bool:
        return all(c.target is not None for c in self.checks)

    @property
    def differing(self) -> list[RangeCheck]:
        return [c for c in self.checks if c.target is not None and not c.equal]

    @property
    def equal(self) -> bool:
        return (
            self.source.count == self.target.count
            and self.source.total == self.target.total
            and not self.differing
        )


def compare(target: Target, collection: str, states: list[RangeState]) -> Comparison:
    """Per-range digests where every range has an `_id` filter, whole-collection totals always."""
    checks: list[RangeCheck] = []
    src_total, tgt_total = Digest(), Digest()
    per_range = all(s.id_filter is not None for s in states)
    for s in states:
        src = s.digest or Digest()
        src_total.merge(src)
        tgt = None
        if per_range and s.id_filter is not None:
            tgt = target.digest(collection, s.id_filter)
        if tgt is not None:
            tgt_total.merge(tgt)
        checks.append(RangeCheck(s.rng.id, src, tgt, s.id_filter if per_range else None))
    if not per_range:
        tgt_total = target.digest(collection, {})
    return Comparison(checks, src_total, tgt_total)


def verify_checksums(target: Target, temp: str, states: list[RangeState], jobs: JobStore) -> None:
    """Digests taken by the workers against the temp collection read back (recorded in the job
    document's `verify`); raises when they differ."""
    cmp = compare(target, temp, states)
    bad = [c.range_id for c in cmp.differing]
    doc = {
        "mode": "checksum",
        "source": cmp.source.as_doc(),
        "target": cmp.target.as_doc(),
        "per_range": cmp.per_range,
        "differing_ranges": bad,
    }
    jobs.update({"verify": doc})
    if not cmp.equal:
        where = f"ranges {bad}" if bad else "the collection as a whole"
        raise VerifyError(
            f"checksum verification failed for {where}: source {cmp.source.count} docs "
            f"digest {cmp.source.hex()}, temp {cmp.target.count} docs digest "
            f"{cmp.target.hex()}; nothing was swapped"
        )

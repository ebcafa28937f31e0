"""The final count against the snapshot, and `_id` filters (no server)."""

from __future__ import annotations

import pytest

from parallelsync.errors import EncodeError, VerifyError
from parallelsync.job.checks import expected_documents, mongo_filter
from parallelsync.job.state import RangeState
from parallelsync.source.counts import Counts
from parallelsync.source.planner import KeyRange
from parallelsync.transcode.model import Codec, DocNode, EncodeOptions, FieldNode, Layout


def states(*rows: int, skipped: int = 0) -> list[RangeState]:
    out = [RangeState(KeyRange(i, "key", None, None, 0), "q", rows=n) for i, n in enumerate(rows)]
    out[0].skipped = skipped
    return out


def test_rows_read_must_be_what_the_snapshot_holds() -> None:
    assert expected_documents(Counts(30, None), states(10, 20), consistency="snapshot") == 30
    with pytest.raises(VerifyError, match="the workers read 29 rows but the snapshot holds 30"):
        expected_documents(Counts(30, None), states(10, 19), consistency="snapshot")
    # --oversize skip: skipped rows were read, not written
    got = expected_documents(Counts(30, None), states(8, 20, skipped=2), consistency="snapshot")
    assert got == 28


def test_other_consistencies() -> None:
    # caught up by a resume: the snapshot's count is the truth, whatever the ranges read
    assert expected_documents(Counts(31, None), states(10, 19), consistency="caught_up") == 31
    # per-range (resume without slot, foreign table): the rows read
    assert expected_documents(Counts(99, None), states(10, 19), consistency="per-range") == 29


def test_duplicate_keys_fail_whatever_the_consistency() -> None:
    for consistency in ("snapshot", "caught_up", "per-range"):
        with pytest.raises(EncodeError, match="the chosen key is not unique"):
            expected_documents(Counts(30, 29), states(10, 20), consistency=consistency)
    assert expected_documents(Counts(30, 30), states(10, 20), consistency="snapshot") == 30


OPTS = EncodeOptions()
INT_ID = Layout((FieldNode("_id", 0, Codec("int8")),), 1, OPTS)
REL_CTID = Layout((DocNode("_id", (FieldNode("rel", 0, Codec("text")),
                                   FieldNode("ctid", 1, Codec("tid")))),), 2, OPTS)  # fmt: skip


def test_id_filters_only_where_id_is_the_range_key() -> None:
    rng = KeyRange(0, "key", (10,), (20,), 5)
    assert mongo_filter(rng, INT_ID) == {"_id": {"$gte": 10, "$lt": 20}}
    assert mongo_filter(rng, INT_ID, id_is_key=False) is None
    ctid = KeyRange(0, "ctid", (3,), None, 5, ("public", "p_1"))
    assert mongo_filter(ctid, REL_CTID) is None
    # with a range of NULL keys, no other range's filter may select the NULL _id
    unbounded = KeyRange(0, "key", None, None, 5)
    assert mongo_filter(unbounded, INT_ID) == {}
    assert mongo_filter(unbounded, INT_ID, null_keys=True) == {"_id": {"$ne": None}}
    nulls = KeyRange(1, "nulls", None, None, 0)
    assert mongo_filter(nulls, INT_ID, null_keys=True) == {"_id": None}

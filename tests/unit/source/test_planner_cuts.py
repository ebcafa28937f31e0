"""The planner's cut algorithm, on samples built in memory (no server).

`cut_positions` and `ranges_from_sample` are pure; `_plan_ctid` needs only a `TableInfo`.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pytest

from parallelsync.source.catalog import TableInfo
from parallelsync.source.keys import KeySpec
from parallelsync.source.planner import KeyRange, _plan_ctid, cut_positions, ranges_from_sample
from tests.unit.source.test_keys import INT, column

Key = tuple[Any, ...]


def singles(values: list[Any]) -> list[Key]:
    return [(v,) for v in values]


def slices(sample: list[Key], cuts: list[int]) -> list[list[Key]]:
    edges = [0, *cuts, len(sample)]
    return [sample[edges[i] : edges[i + 1]] for i in range(len(edges) - 1)]


def contains(rng: KeyRange, key: Key) -> bool:
    """lower <= key < upper, None meaning unbounded (tuples compare like SQL row values)."""
    if rng.lower is not None and key < rng.lower:
        return False
    return rng.upper is None or key < rng.upper


def assert_each_key_in_one_range(ranges: list[KeyRange], keys: list[Key]) -> None:
    for key in keys:
        owners = [r.id for r in ranges if contains(r, key)]
        assert len(owners) == 1, f"{key} is in ranges {owners}"


def by_key_order(ranges: list[KeyRange]) -> list[KeyRange]:
    return sorted(ranges, key=lambda r: r.id)


def table(relkind: str = "r", relpages: int = 100, reltuples: float = 10_000.0) -> TableInfo:
    return TableInfo(
        oid=16384,
        schema="public",
        name="t",
        relkind=relkind,
        columns=(),
        primary_key=(),
        relpages=relpages,
        reltuples=reltuples,
    )


# ------------------------------------------------------------------------------ cut_positions
@pytest.mark.parametrize(("size", "nranges"), [(100, 4), (1000, 8), (12, 3), (10, 10)])
def test_uniform_sample_gives_equal_slices(size: int, nranges: int) -> None:
    sample = singles(list(range(size)))
    cuts = cut_positions(sample, nranges)
    assert len(cuts) == nranges - 1
    assert [len(s) for s in slices(sample, cuts)] == [size // nranges] * nranges


def test_uneven_division_differs_by_at_most_one() -> None:
    sample = singles(list(range(10)))
    cuts = cut_positions(sample, 3)
    assert cuts == [3, 6]
    assert sorted(len(s) for s in slices(sample, cuts)) == [3, 3, 4]


@pytest.mark.parametrize(
    "values",
    [
        list(range(37)),
        [1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 5, 5, 5, 5, 5, 5, 6, 7, 7, 8],
        [v // 7 for v in range(200)],
        [0] * 5 + list(range(1, 50)) + [50] * 40,
    ],
)
@pytest.mark.parametrize("nranges", [2, 3, 5, 16, 100])
def test_cuts_strictly_increasing_inside_the_sample(values: list[int], nranges: int) -> None:
    sample = singles(values)
    cuts = cut_positions(sample, nranges)
    assert all(0 < c < len(sample) for c in cuts)
    assert all(a < b for a, b in itertools.pairwise(cuts))
    assert len(cuts) <= nranges - 1
    # Equal keys never straddle a cut: the key at a cut differs from the one before it.
    assert all(sample[c - 1] != sample[c] for c in cuts)
    assert all(len(s) > 0 for s in slices(sample, cuts))


def test_cut_inside_a_run_moves_to_the_run_start() -> None:
    # Plain cuts would be at 4 and 8; 4 falls inside the run of 3s (positions 3..5).
    sample = singles([1, 2, 3, 3, 3, 3, 4, 5, 6, 7, 8, 9])
    assert cut_positions(sample, 3) == [2, 8]
    assert slices(sample, [2, 8])[1] == singles([3, 3, 3, 3, 4, 5])


def test_run_covering_most_of_the_sample_gives_fewer_nonempty_ranges() -> None:
    sample = singles([1] + [5] * 97 + [8, 9])
    cuts = cut_positions(sample, 4)
    assert cuts == [1]  # every later cut falls inside the run of 5s and moves back to it
    assert [len(s) for s in slices(sample, cuts)] == [1, 99]


def test_run_at_the_start_swallows_cuts_before_its_end() -> None:
    sample = singles([0] * 60 + list(range(1, 41)))
    assert cut_positions(sample, 2) == []  # the only cut (50) moves back to 0: dropped
    assert cut_positions(sample, 4) == [75]


def test_all_keys_equal_gives_one_range() -> None:
    assert cut_positions(singles([7] * 50), 8) == []


def test_more_ranges_than_sample_keys() -> None:
    sample = singles([10, 20, 30])
    cuts = cut_positions(sample, 10)
    assert cuts == [1, 2]
    assert [len(s) for s in slices(sample, cuts)] == [1, 1, 1]


def test_one_range_has_no_cut() -> None:
    assert cut_positions(singles(list(range(100))), 1) == []


def test_composite_keys_cut_on_whole_tuples() -> None:
    # Equal first columns may be split; only whole-key equality keeps keys together.
    sample = [("a", 1), ("a", 2), ("a", 2), ("a", 3), ("b", 1), ("b", 1), ("b", 2), ("c", 1)]
    cuts = cut_positions(sample, 4)
    assert cuts == [1, 4, 6]
    assert slices(sample, cuts) == [
        [("a", 1)],
        [("a", 2), ("a", 2), ("a", 3)],
        [("b", 1), ("b", 1)],
        [("b", 2), ("c", 1)],
    ]


# ------------------------------------------------------------------------- ranges_from_sample
def test_ranges_bounds_come_from_the_sample_and_ends_are_open() -> None:
    sample = singles(list(range(0, 400, 4)))  # 0, 4, ..., 396
    ranges = by_key_order(ranges_from_sample(sample, 4, 100.0))
    assert [r.id for r in ranges] == [0, 1, 2, 3]
    assert [(r.lower, r.upper) for r in ranges] == [
        (None, (100,)),
        ((100,), (200,)),
        ((200,), (300,)),
        ((300,), None),
    ]
    assert all(r.kind == "key" for r in ranges)
    # Consecutive ranges share their edge: no key falls between them.
    assert all(a.upper == b.lower for a, b in itertools.pairwise(ranges))


@pytest.mark.parametrize(
    "values",
    [
        list(range(50)),
        [1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 5, 5, 5, 5, 5, 5, 6, 7, 7, 8],
        [1] + [5] * 97 + [8, 9],
        [v * v % 97 for v in range(300)],
    ],
)
@pytest.mark.parametrize("nranges", [2, 4, 7, 64])
def test_every_sample_key_is_in_exactly_one_range(values: list[int], nranges: int) -> None:
    sample = sorted(singles(values))
    ranges = ranges_from_sample(sample, nranges, 1000.0)
    assert_each_key_in_one_range(ranges, sample)
    # Keys outside the sampled span fall into the open first and last ranges.
    ordered = by_key_order(ranges)
    outside = [(min(values) - 1,), (max(values) + 1,)]
    assert [[r.id for r in ranges if contains(r, k)] for k in outside] == [
        [ordered[0].id],
        [ordered[-1].id],
    ]
    # A range holding no sample key would be an empty range.
    assert all(any(contains(r, k) for k in sample) for r in ranges)


def test_composite_keys_cover_each_key_once() -> None:
    sample = sorted((region, n) for region in ("eu", "us", "ap") for n in range(30))
    ranges = ranges_from_sample(sample, 5, 9000.0)
    assert len(ranges) == 5
    assert_each_key_in_one_range(ranges, sample)
    assert_each_key_in_one_range(ranges, [("aa", 0), ("ap", -1), ("eu", 1000), ("zz", 0)])


def test_estimates_scale_to_the_estimate() -> None:
    sample = singles(list(range(100)))
    ranges = ranges_from_sample(sample, 4, 1_000_000.0)
    assert [r.estimated_rows for r in ranges] == [250_000] * 4


def test_estimates_sum_to_about_the_estimate() -> None:
    sample = singles([v // 3 for v in range(999)])
    ranges = ranges_from_sample(sample, 7, 123_457.0)
    total = sum(r.estimated_rows for r in ranges)
    # Each range's share is truncated to an int: at most one row lost per range.
    assert 123_457 - len(ranges) < total <= 123_457


def test_estimates_follow_the_sample_share() -> None:
    sample = singles([1] + [5] * 97 + [8, 9])
    ranges = ranges_from_sample(sample, 4, 10_000.0)
    assert [(r.lower, r.upper, r.estimated_rows) for r in ranges] == [
        ((5,), None, 9_900),
        (None, (5,), 100),
    ]


def test_ranges_sorted_largest_first() -> None:
    # Plain cuts 3, 6, 9; 3 and 6 fall in the run of 3s and move back to 2: slices of 2, 7, 3.
    sample = singles([1, 2, 3, 3, 3, 3, 3, 3, 3, 4, 5, 6])
    ranges = ranges_from_sample(sample, 4, 120.0)
    assert [(r.id, r.estimated_rows) for r in ranges] == [(1, 70), (2, 30), (0, 20)]
    assert (ranges[0].lower, ranges[0].upper) == ((3,), (4,))


def test_more_ranges_than_sample_keys_gives_one_range_per_key() -> None:
    sample = singles([10, 20, 30])
    ranges = by_key_order(ranges_from_sample(sample, 50, 30.0))
    assert [(r.lower, r.upper) for r in ranges] == [
        (None, (20,)),
        ((20,), (30,)),
        ((30,), None),
    ]
    assert [r.estimated_rows for r in ranges] == [10, 10, 10]


def test_single_range_is_unbounded() -> None:
    ranges = ranges_from_sample(singles(list(range(10))), 1, 10.0)
    assert [(r.lower, r.upper, r.estimated_rows) for r in ranges] == [(None, None, 10)]
    assert ranges[0].predicate(INT).as_string(None) == "true"


def test_describe_is_json_friendly() -> None:
    ranges = by_key_order(ranges_from_sample([(dt.date(2024, 1, d),) for d in range(1, 5)], 2, 4.0))
    assert [r.describe() for r in ranges] == [
        {"id": 0, "kind": "key", "lower": None, "upper": ["2024-01-03"], "estimated_rows": 2},
        {"id": 1, "kind": "key", "lower": ["2024-01-03"], "upper": None, "estimated_rows": 2},
    ]


# -------------------------------------------------------------------------------- predicates
def test_predicates_of_single_column_ranges() -> None:
    ranges = by_key_order(ranges_from_sample(singles(list(range(30))), 3, 30.0))
    ge, lt = 'OPERATOR("pg_catalog".>=)', 'OPERATOR("pg_catalog".<)'
    assert [r.predicate(INT).as_string(None) for r in ranges] == [
        f'"id" {lt} CAST(10 AS "pg_catalog"."int4")',
        f'"id" {ge} CAST(10 AS "pg_catalog"."int4") AND "id" {lt} CAST(20 AS "pg_catalog"."int4")',
        f'"id" {ge} CAST(20 AS "pg_catalog"."int4")',
    ]


def test_predicate_quotes_text_and_identifiers() -> None:
    rng = KeyRange(1, "key", ("O'Brien",), ("Smith",), 5)
    key = KeySpec((column("Last Name", typ="text"),), True, True)
    assert rng.predicate(key).as_string(None) == (
        '"Last Name" OPERATOR("pg_catalog".>=) CAST(\'O\'\'Brien\' AS "pg_catalog"."text") AND '
        '"Last Name" OPERATOR("pg_catalog".<) CAST(\'Smith\' AS "pg_catalog"."text")'
    )


def test_composite_predicates_use_row_comparison() -> None:
    key = KeySpec((column("a", typ="text"), column("b")), True, True)
    ranges = by_key_order(ranges_from_sample([("a", 1), ("a", 2), ("b", 1), ("b", 2)], 2, 4.0))
    row_b1 = 'ROW(CAST(\'b\' AS "pg_catalog"."text"), CAST(1 AS "pg_catalog"."int4"))'
    assert [r.predicate(key).as_string(None) for r in ranges] == [
        f'("a", "b") < {row_b1}',
        f'("a", "b") >= {row_b1}',
    ]
    middle = KeyRange(7, "key", ("a", 2), ("b", 1), 1)
    assert middle.predicate(key).as_string(None) == (
        '("a", "b") >= ROW(CAST(\'a\' AS "pg_catalog"."text"), CAST(2 AS "pg_catalog"."int4")) '
        f'AND ("a", "b") < {row_b1}'
    )


# --------------------------------------------------------------------------------- ctid plans
def test_ctid_plan_cuts_blocks() -> None:
    plan = _plan_ctid(table(relpages=100, reltuples=10_000.0), 4)
    assert plan.key == ()
    assert plan.estimated_rows == 10_000
    assert plan.method == "ctid block ranges"
    assert [(r.id, r.kind, r.lower, r.upper) for r in plan.ranges] == [
        (0, "ctid", None, (25,)),
        (1, "ctid", (25,), (50,)),
        (2, "ctid", (50,), (75,)),
        (3, "ctid", (75,), None),
    ]
    assert [r.estimated_rows for r in plan.ranges] == [2_500] * 4


def test_ctid_predicates() -> None:
    plan = _plan_ctid(table(relpages=10), 2)
    assert [r.predicate(()).as_string(None) for r in plan.ranges] == [
        "ctid < '(5,0)'::tid",
        "ctid >= '(5,0)'::tid",
    ]
    middle = _plan_ctid(table(relpages=9), 3).ranges[1]
    assert middle.predicate(()).as_string(None) == "ctid >= '(3,0)'::tid AND ctid < '(6,0)'::tid"


def test_ctid_plan_has_no_more_ranges_than_pages() -> None:
    plan = _plan_ctid(table(relpages=3, reltuples=30.0), 8)
    assert [(r.lower, r.upper) for r in plan.ranges] == [(None, (1,)), ((1,), (2,)), ((2,), None)]


def test_ctid_plan_of_an_empty_never_analysed_table() -> None:
    plan = _plan_ctid(table(relpages=0, reltuples=-1.0), 4)
    assert [(r.kind, r.lower, r.upper, r.estimated_rows) for r in plan.ranges] == [
        ("ctid", None, None, 0)
    ]
    assert plan.estimated_rows == 0


@pytest.mark.parametrize("relkind", ["p", "v", "m", "f"])
def test_non_plain_tables_get_one_range(relkind: str) -> None:
    plan = _plan_ctid(table(relkind=relkind, relpages=500, reltuples=42.0), 8)
    assert plan.method == "single range"
    assert [(r.id, r.kind, r.lower, r.upper, r.estimated_rows) for r in plan.ranges] == [
        (0, "all", None, None, 42)
    ]
    assert plan.ranges[0].predicate(()).as_string(None) == "true"


def test_ctid_plan_with_one_range_is_all() -> None:
    plan = _plan_ctid(table(relpages=500), 1)
    assert [r.kind for r in plan.ranges] == ["all"]

"""Range predicates with the key type's own operators, the NULL range, per-leaf ctid plans,
key thinning and the range round trip through the job document (no server)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from parallelsync.errors import SourceError
from parallelsync.source.catalog import TableInfo
from parallelsync.source.keys import EQ, GE, GT, LE, LT, KeyColumn, KeySpec
from parallelsync.source.planner import KeyRange, Thinner, _plan_ctid_leaves
from parallelsync.source.relations import Relation


def column(
    name: str, schema: str = "pg_catalog", typ: str = "int4", by_name: bool = True
) -> KeyColumn:
    ops = {s: (schema, o) for s, o in ((LT, "<"), (LE, "<="), (EQ, "="), (GE, ">="), (GT, ">"))}
    return KeyColumn(name, (schema, typ), ops, by_name)


def text(rng: KeyRange, key: KeySpec) -> str:
    return rng.predicate(key).as_string(None)


INT = KeySpec((column("id"),), not_null=True, unique=True)
CITEXT = KeySpec((column("k", "ext", "citext", by_name=False),), not_null=True, unique=True)


def test_single_key_bounds_use_qualified_operators_and_typed_values() -> None:
    rng = KeyRange(1, "key", (10,), (20,), 5)
    assert text(rng, INT) == (
        '"id" OPERATOR("pg_catalog".>=) CAST(10 AS "pg_catalog"."int4") AND '
        '"id" OPERATOR("pg_catalog".<) CAST(20 AS "pg_catalog"."int4")'
    )
    assert text(KeyRange(0, "key", None, ("b",), 1), CITEXT) == (
        '"k" OPERATOR("ext".<) CAST(\'b\' AS "ext"."citext")'
    )
    assert text(KeyRange(0, "key", None, None, 1), INT) == "true"


def test_composite_key_keeps_the_row_comparison_when_operators_resolve_by_name() -> None:
    key = KeySpec((column("a"), column("b", typ="text")), not_null=True, unique=True)
    rng = KeyRange(7, "key", (1, "x"), (2, "y"), 1)
    a, b = '"pg_catalog"."int4"', '"pg_catalog"."text"'
    assert text(rng, key) == (
        f'("a", "b") >= ROW(CAST(1 AS {a}), CAST(\'x\' AS {b})) '
        f'AND ("a", "b") < ROW(CAST(2 AS {a}), CAST(\'y\' AS {b}))'
    )


def test_composite_key_is_spelled_out_when_an_operator_is_not_on_the_search_path() -> None:
    key = KeySpec((column("k", "ext", "citext", by_name=False), column("n")), True, True)
    lower = key.at_least(("m", 3)).as_string(None)
    k = '"k" OPERATOR("ext".{}) CAST(\'m\' AS "ext"."citext")'
    n = '"n" OPERATOR("pg_catalog".{}) CAST(3 AS "pg_catalog"."int4")'
    assert lower == (
        f"{k.format('>=')} AND ({k.format('>')} OR ({k.format('=')} AND {n.format('>=')}))"
    )
    upper = key.below(("m", 3)).as_string(None)
    assert upper == (
        f"{k.format('<=')} AND ({k.format('<')} OR ({k.format('=')} AND {n.format('<')}))"
    )


def test_spelled_out_bounds_order_like_row_comparison() -> None:
    """The OR/AND chain selects exactly what `(a, b, c) >= (x, y, z)` does (Python's tuple
    order is SQL's row order for non-NULL values)."""
    rnd = random.Random(7)
    cols = tuple(column(c, by_name=False) for c in "abc")

    def holds(expr_lower: bool, row: tuple[int, ...], bound: tuple[int, ...]) -> bool:
        # Evaluate the chain as built: lead AND (a > x OR (a = x AND (b > y OR (...))))
        def chain(i: int) -> bool:
            if i == len(bound) - 1:
                return row[i] >= bound[i] if expr_lower else row[i] < bound[i]
            strict = row[i] > bound[i] if expr_lower else row[i] < bound[i]
            return strict or (row[i] == bound[i] and chain(i + 1))

        lead = row[0] >= bound[0] if expr_lower else row[0] <= bound[0]
        return lead and chain(0)

    spec = KeySpec(cols, True, True)
    assert "OR" in spec.at_least((1, 2, 3)).as_string(None)
    for _ in range(2000):
        row = tuple(rnd.randint(0, 3) for _ in range(3))
        bound = tuple(rnd.randint(0, 3) for _ in range(3))
        assert holds(True, row, bound) == (row >= bound)
        assert holds(False, row, bound) == (row < bound)


def test_unproven_keys_get_a_null_range_and_the_others_exclude_nulls() -> None:
    key = KeySpec((column("a"), column("b")), not_null=False, unique=False)
    assert key.check_distinct
    assert text(KeyRange(3, "nulls", None, None, 0), key) == '"a" IS NULL OR "b" IS NULL'
    assert text(KeyRange(0, "key", None, None, 0), key) == '"a" IS NOT NULL AND "b" IS NOT NULL'
    assert text(KeyRange(0, "key", (1, 2), None, 0), key).startswith(
        '"a" IS NOT NULL AND "b" IS NOT NULL AND ("a", "b") >= ROW('
    )
    assert not INT.check_distinct


def test_ranges_round_trip_through_the_job_document() -> None:
    for rng in (
        KeyRange(2, "ctid", (10,), (20,), 100, ("public", "child 1")),
        KeyRange(0, "key", ("a", 1), None, 5),
        KeyRange(4, "nulls", None, None, 0),
    ):
        assert KeyRange.from_doc(rng.describe()) == rng
    # A job document written before `relation` existed still resumes.
    old = {"id": 1, "kind": "ctid", "lower": [3], "upper": None, "estimated_rows": 9}
    assert KeyRange.from_doc(old) == KeyRange(1, "ctid", (3,), None, 9, None)
    assert "relation" not in KeyRange(1, "ctid", (3,), None, 9).describe()


TABLE = TableInfo(16384, "public", "p", "p", (), (), 30, 3000.0)


def leaf(oid: int, name: str, pages: int, kind: str = "r") -> Relation:
    return Relation(oid, "public", name, kind, pages, pages * 100.0)


def test_ctid_plan_per_leaf_reads_each_leaf_only() -> None:
    leaves = (leaf(1, "p_1", 10), leaf(2, "p_2", 30), leaf(3, "p_3", 0))
    plan = _plan_ctid_leaves(TABLE, leaves, 8)
    by_rel: dict[Any, list[KeyRange]] = {}
    for r in plan.ranges:
        by_rel.setdefault(r.relation, []).append(r)
    assert set(by_rel) == {("public", "p_1"), ("public", "p_2"), ("public", "p_3")}
    assert len(by_rel[("public", "p_2")]) > len(by_rel[("public", "p_1")]) >= 1
    assert [(r.lower, r.upper) for r in by_rel[("public", "p_3")]] == [(None, None)]
    for ranges in by_rel.values():  # each leaf's ranges cover its blocks once, open-ended
        ranges.sort(key=lambda r: r.id)
        assert ranges[0].lower is None and ranges[-1].upper is None
        assert all(a.upper == b.lower for a, b in itertools.pairwise(ranges))
    assert len({r.id for r in plan.ranges}) == len(plan.ranges)
    assert plan.estimated_rows == 4000
    with pytest.raises(SourceError, match=r"public.p_f .*no ctid.*--key"):
        _plan_ctid_leaves(TABLE, (*leaves, leaf(4, "p_f", 1, "f")), 8)


def test_thinner_keeps_evenly_spaced_keys_in_bounded_memory() -> None:
    for n, want in ((0, 10), (5, 10), (10, 10), (1000, 10), (2_000_003, 2000)):
        thin = Thinner(want)
        peak = 0
        start = 0
        while start < n:  # in chunks, as the cursor delivers them
            chunk = [(i,) for i in range(start, min(n, start + 10_000))]
            thin.add(chunk)
            peak = max(peak, len(thin.kept))
            start += len(chunk)
        keys = thin.result()
        assert thin.seen == n
        assert peak <= 2 * want + 1
        assert len(keys) == min(n, want)
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        if n > want:
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(keys)]
            assert max(gaps) <= 2 * min(gaps) + 1, gaps[:20]
            assert keys[-1][0] >= n * (want - 1) / want - 2 * n / want  # spans the table

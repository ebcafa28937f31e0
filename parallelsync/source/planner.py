"""Splits a table into key ranges of similar row counts, from estimates and a sample.

Never counts the table. Boundaries come from a sample of the key read in the key's own order (so
text keys follow their collation and no row can fall between two ranges), which handles skewed
keys (dense clusters far apart) as well as any ordered key type and composite keys. The first and
last ranges are open-ended, so rows outside the sampled span are still covered. Tables without a
usable key are split into ctid block ranges (TID range scans, PostgreSQL 14+).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from parallelsync.source.catalog import TableInfo
from parallelsync.source.predicates import user_filter

# A sample of this many keys per planned range keeps the boundary error well under 10 % of a
# range, while the sample itself stays cheap (tens of thousands of keys at most).
SAMPLE_KEYS_PER_RANGE = 200
MIN_SAMPLE = 2_000
MAX_SAMPLE = 200_000
# Below this size (in 8 kB pages, ~80 MB) reading every key is cheaper than being clever.
FULL_SCAN_PAGES = 10_000

RangeKind = Literal["key", "ctid", "all"]


@dataclass(frozen=True)
class KeyRange:
    id: int
    kind: RangeKind
    lower: tuple[Any, ...] | None  # inclusive; None = unbounded (ctid: (block,))
    upper: tuple[Any, ...] | None  # exclusive; None = unbounded
    estimated_rows: int

    def predicate(self, key: tuple[str, ...]) -> sql.Composable:
        """The WHERE condition selecting exactly this range."""
        if self.kind == "all":
            return sql.SQL("true")
        if self.kind == "ctid":
            parts = []
            if self.lower is not None:
                parts.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({self.lower[0]},0)")))
            if self.upper is not None:
                parts.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({self.upper[0]},0)")))
            return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")
        lhs = _key_expr(key)
        parts = []
        if self.lower is not None:
            parts.append(sql.SQL("{} >= {}").format(lhs, _key_values(self.lower)))
        if self.upper is not None:
            parts.append(sql.SQL("{} < {}").format(lhs, _key_values(self.upper)))
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "lower": None if self.lower is None else [_jsonable(v) for v in self.lower],
            "upper": None if self.upper is None else [_jsonable(v) for v in self.upper],
            "estimated_rows": self.estimated_rows,
        }


def _key_expr(key: tuple[str, ...]) -> sql.Composable:
    if len(key) == 1:
        return sql.Identifier(key[0])
    return sql.SQL("({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in key))


def _key_values(values: tuple[Any, ...]) -> sql.Composable:
    if len(values) == 1:
        return sql.Literal(values[0])
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Literal(v) for v in values))


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


@dataclass(frozen=True)
class Plan:
    ranges: tuple[KeyRange, ...]
    key: tuple[str, ...]  # key columns (empty for ctid / single range)
    estimated_rows: int
    method: str  # how boundaries were found, for the plan output and job document


def plan_ranges(
    conn: psycopg.Connection[Any],
    table: TableInfo,
    key: tuple[str, ...],
    nranges: int,
    where: str | None = None,
) -> Plan:
    """Plan `nranges` ranges (fewer when the table is small); largest estimate first."""
    nranges = max(1, nranges)
    if not key:
        return _plan_ctid(table, nranges)
    estimate = max(0.0, table.reltuples)
    sample, fraction, method = _sample_keys(conn, table, key, nranges, where)
    if fraction >= 1.0:
        estimate = float(len(sample))
    elif sample:
        estimate = len(sample) / fraction
    if nranges == 1 or len(sample) < 2:
        only = KeyRange(0, "key", None, None, int(estimate))
        return Plan((only,), key, int(estimate), method)
    ranges = ranges_from_sample(sample, nranges, estimate)
    return Plan(tuple(ranges), key, int(estimate), method)


def ranges_from_sample(
    sample: list[tuple[Any, ...]], nranges: int, estimate: float
) -> list[KeyRange]:
    """Key ranges from a sample read in the key's order: the first and last are open-ended, so
    rows outside the sampled span are still covered; `estimate` rows are spread by sample share.
    Largest first, so the longest range does not start last and stretch the run."""
    cuts = cut_positions(sample, nranges)
    edges: list[tuple[Any, ...] | None] = [None, *(sample[c] for c in cuts), None]
    positions = [0, *cuts, len(sample)]
    scale = estimate / len(sample)
    ranges = [
        KeyRange(i, "key", edges[i], edges[i + 1], int((positions[i + 1] - positions[i]) * scale))
        for i in range(len(edges) - 1)
    ]
    ranges.sort(key=lambda r: -r.estimated_rows)
    return ranges


def cut_positions(sample: list[tuple[Any, ...]], nranges: int) -> list[int]:
    """Where to cut a sorted sample into `nranges` slices of similar size: strictly increasing
    positions in (0, len(sample)); range i covers sample[cuts[i-1]:cuts[i]].

    A cut inside a run of equal keys moves to the run's first element, so equal keys never
    straddle two ranges (a range's upper bound is exclusive); cuts that would repeat are dropped,
    so heavy duplicates give fewer, never empty, ranges."""
    cuts: list[int] = []
    step = len(sample) / nranges
    for i in range(1, nranges):
        idx = int(i * step)
        while idx > 0 and sample[idx - 1] == sample[idx]:
            idx -= 1
        if idx > (cuts[-1] if cuts else 0):
            cuts.append(idx)
    return cuts


def _sample_keys(
    conn: psycopg.Connection[Any],
    table: TableInfo,
    key: tuple[str, ...],
    nranges: int,
    where: str | None,
) -> tuple[list[tuple[Any, ...]], float, str]:
    want = min(MAX_SAMPLE, max(MIN_SAMPLE, nranges * SAMPLE_KEYS_PER_RANGE))
    cols = sql.SQL(", ").join(sql.Identifier(k) for k in key)
    filt = user_filter(where)
    if (
        table.relpages <= FULL_SCAN_PAGES
        or table.reltuples <= 0
        or table.relkind not in ("r", "p", "m")
    ):
        q = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(cols, table.ident, filt, cols)
        rows = conn.execute(q).fetchall()
        keys = [tuple(r) for r in rows]
        if len(keys) > want:
            step = len(keys) / want
            keys = [keys[int(i * step)] for i in range(want)]
            return keys, want / len(rows), "all keys (thinned)"
        return keys, 1.0, "all keys"
    pct = min(100.0, 100.0 * want / table.reltuples)
    # SYSTEM sampling reads only the chosen blocks: cheap on very large tables.
    q = sql.SQL(
        "SELECT {} FROM {} TABLESAMPLE SYSTEM ({}) REPEATABLE (42) WHERE {} ORDER BY {}"
    ).format(cols, table.ident, sql.Literal(pct), filt, cols)
    keys = [tuple(r) for r in conn.execute(q).fetchall()]
    return keys, pct / 100.0, f"TABLESAMPLE SYSTEM ({pct:.4g}%)"


def _plan_ctid(table: TableInfo, nranges: int) -> Plan:
    pages = max(table.relpages, 1)
    est = int(max(table.reltuples, 0))
    if table.relkind != "r" or nranges == 1:
        return Plan((KeyRange(0, "all", None, None, est),), (), est, "single range")
    nranges = min(nranges, pages)
    step = pages / nranges
    edges: list[int | None] = [None] + [int(i * step) for i in range(1, nranges)] + [None]
    ranges = [
        KeyRange(
            i,
            "ctid",
            None if edges[i] is None else (edges[i],),
            None if edges[i + 1] is None else (edges[i + 1],),
            est // nranges,
        )
        for i in range(nranges)
    ]
    return Plan(tuple(ranges), (), est, "ctid block ranges")

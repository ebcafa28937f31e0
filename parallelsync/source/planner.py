"""Splits a table into key ranges of similar row counts, from estimates and a sample.

Never counts the table. Boundaries come from a sample of the key read in the key's own order (so
text keys follow their collation and no row can fall between two ranges), which handles skewed
keys (dense clusters far apart) as well as any ordered key type and composite keys. The first and
last ranges are open-ended, so rows outside the sampled span are still covered. Tables without a
usable key are split into ctid block ranges (TID range scans, PostgreSQL 14+), per leaf relation
when the read spans several (partitions, inheritance children). Predicates compare with the key
type's own operators (keys.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

from parallelsync.errors import SourceError
from parallelsync.source.catalog import TableInfo
from parallelsync.source.connect import execute
from parallelsync.source.keys import KeySpec
from parallelsync.source.predicates import user_filter
from parallelsync.source.relations import STORAGE_KINDS, Relation

# A sample of this many keys per planned range keeps the boundary error well under 10 % of a
# range, while the sample itself stays cheap (tens of thousands of keys at most).
SAMPLE_KEYS_PER_RANGE = 200
MIN_SAMPLE = 2_000
MAX_SAMPLE = 200_000
# Below this size (in 8 kB pages, ~80 MB) reading every key is cheaper than being clever.
FULL_SCAN_PAGES = 10_000
# Keys fetched per round trip when reading every key: large enough that round trips cost little
# next to the rows, small enough that a chunk of wide composite keys stays a few MB.
FETCH_KEYS = 10_000

# key: bounds on the key; nulls: the rows whose key is NULL (keys the catalog cannot prove NOT
# NULL); ctid: block ranges; all: the whole table in one range.
RangeKind = Literal["key", "nulls", "ctid", "all"]


@dataclass(frozen=True)
class KeyRange:
    id: int
    kind: RangeKind
    lower: tuple[Any, ...] | None  # inclusive; None = unbounded (ctid: (block,))
    upper: tuple[Any, ...] | None  # exclusive; None = unbounded
    estimated_rows: int
    # ctid ranges of a read that spans several relations: the one relation (schema, name) this
    # range reads `FROM ONLY`. None: the table as the copy reads it.
    relation: tuple[str, str] | None = None

    def predicate(self, key: KeySpec) -> sql.Composable:
        """The WHERE condition selecting exactly this range."""
        if self.kind == "all":
            return sql.SQL("true")
        if self.kind == "nulls":
            return key.any_null()
        parts: list[sql.Composable] = []
        if self.kind == "ctid":
            if self.lower is not None:
                parts.append(sql.SQL("ctid >= {}::tid").format(sql.Literal(f"({self.lower[0]},0)")))
            if self.upper is not None:
                parts.append(sql.SQL("ctid < {}::tid").format(sql.Literal(f"({self.upper[0]},0)")))
            return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")
        if not key.not_null:
            parts.append(key.none_null())  # NULL keys are the "nulls" range's
        if self.lower is not None:
            parts.append(key.at_least(self.lower))
        if self.upper is not None:
            parts.append(key.below(self.upper))
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    def describe(self) -> dict[str, Any]:
        d = {
            "id": self.id,
            "kind": self.kind,
            "lower": None if self.lower is None else [_jsonable(v) for v in self.lower],
            "upper": None if self.upper is None else [_jsonable(v) for v in self.upper],
            "estimated_rows": self.estimated_rows,
        }
        if self.relation is not None:
            d["relation"] = list(self.relation)
        return d

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> KeyRange:
        """A range as `describe()` recorded it (job documents written before `relation`
        existed have none)."""
        rel = d.get("relation")
        return cls(
            int(d["id"]),
            d.get("kind", "key"),
            None if d.get("lower") is None else tuple(d["lower"]),
            None if d.get("upper") is None else tuple(d["upper"]),
            int(d.get("estimated_rows", 0)),
            None if rel is None else (str(rel[0]), str(rel[1])),
        )


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
    key: KeySpec,
    nranges: int,
    where: str | None = None,
    *,
    relation: sql.Composable,
    spans: bool = False,
    leaves: tuple[Relation, ...] = (),
) -> Plan:
    """Plan `nranges` ranges (fewer when the table is small); largest estimate first.

    `relation` is the table as the copy reads it (`ONLY t`, or `t` with what it spans); a keyless
    read that `spans` several relations is split into ctid ranges per leaf of `leaves`."""
    nranges = max(1, nranges)
    if not key.columns:
        if spans:
            return _plan_ctid_leaves(table, leaves, nranges)
        return _plan_ctid(table, nranges)
    names = key.names
    estimate = max(0.0, table.reltuples)
    sample, fraction, method = _sample_keys(conn, table, key, relation, nranges, where)
    if fraction >= 1.0:
        estimate = float(len(sample))
    elif (
        method.startswith("TABLESAMPLE")
        and where is None
        and (catalog := catalog_rows(conn, [r.oid for r in leaves] if spans else [table.oid]))
    ):
        # A block sample's count swings with the blocks it happens to pick (it was 24 % low on
        # a freshly analysed table); the catalog's figure, scaled to the pages the table has
        # now, is what PostgreSQL's own planner trusts. The sample still gives the boundaries.
        # With --where the catalog knows nothing of the rows it keeps: the sample's count is
        # the estimate then (scaling the catalog by the sample's share of its blocks' rows was
        # tried, and is as far off on unevenly filled pages as the sample itself).
        estimate = catalog
        method += ", rows from pg_class.reltuples scaled to the current pages"
    elif sample:
        estimate = len(sample) / fraction
    if nranges == 1 or len(sample) < 2:
        ranges = [KeyRange(0, "key", None, None, int(estimate))]
    else:
        ranges = ranges_from_sample(sample, nranges, estimate)
    if not key.not_null:
        # Rows whose key is NULL are in no bounded range: one more range takes them.
        ranges.append(KeyRange(len(ranges), "nulls", None, None, 0))
    return Plan(tuple(ranges), names, int(estimate), method)


def catalog_rows(conn: psycopg.Connection[Any], oids: Sequence[int]) -> float | None:
    """Rows of these relations as PostgreSQL's planner estimates them (estimate_rel_size): the
    density the last ANALYZE or VACUUM saw (reltuples / relpages) times the pages each relation
    has now, so that growth since then counts. None when a relation that has pages has no valid
    statistics (never analysed: reltuples < 0; or none recorded: relpages or reltuples 0)."""
    rows = conn.execute(
        """SELECT c.reltuples::float8, c.relpages::int8,
                  pg_relation_size(c.oid) / current_setting('block_size')::int8
           FROM pg_class c WHERE c.oid = ANY(%s) AND c.relkind IN ('r', 'm')""",
        (list(oids),),
    ).fetchall()
    if len(rows) != len(set(oids)):
        return None  # a view, a foreign table: no pages to scale by
    total = 0.0
    for reltuples, relpages, pages in rows:
        if pages == 0:
            continue  # empty now, whatever it held when last analysed
        if reltuples <= 0 or relpages <= 0:
            return None
        total += reltuples / relpages * pages
    return total


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
    key: KeySpec,
    relation: sql.Composable,
    nranges: int,
    where: str | None,
) -> tuple[list[tuple[Any, ...]], float, str]:
    want = min(MAX_SAMPLE, max(MIN_SAMPLE, nranges * SAMPLE_KEYS_PER_RANGE))
    cols = sql.SQL(", ").join(sql.Identifier(k) for k in key.names)
    filt = user_filter(where)
    if not key.not_null:
        filt = sql.SQL("{} AND {}").format(filt, key.none_null())  # a NULL is no bound
    if (
        table.relpages <= FULL_SCAN_PAGES
        or table.reltuples <= 0
        or table.relkind not in ("r", "p", "m")
    ):
        q = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(cols, relation, filt, cols)
        keys, seen = thinned_keys(conn, q, want)
        if seen > len(keys):
            return keys, len(keys) / seen, "all keys (thinned)"
        return keys, 1.0, "all keys"
    pct = min(100.0, 100.0 * want / table.reltuples)
    # SYSTEM sampling reads only the chosen blocks: cheap on very large tables.
    q = sql.SQL(
        "SELECT {} FROM {} TABLESAMPLE SYSTEM ({}) REPEATABLE (42) WHERE {} ORDER BY {}"
    ).format(cols, relation, sql.Literal(pct), filt, cols)
    keys = [tuple(r) for r in execute(conn, q).fetchall()]
    return keys, pct / 100.0, f"TABLESAMPLE SYSTEM ({pct:.4g}%)"


def thinned_keys(
    conn: psycopg.Connection[Any], query: sql.Composed, want: int
) -> tuple[list[tuple[Any, ...]], int]:
    """About `want` evenly spaced keys of `query`'s ordered keys, and how many there were.

    The keys arrive through a server-side cursor in chunks (declared with the extended query
    protocol: psycopg's server cursors) and are thinned as they come (Thinner), so memory is
    bounded by the sample, never by the table: an unanalysed table, a view or a foreign table
    has no estimate to sample by."""
    thin = Thinner(want)
    with conn.cursor(name="parallelsync_keys") as cur:
        cur.execute(query)
        while rows := cur.fetchmany(FETCH_KEYS):
            thin.add(rows)
    return thin.result(), thin.seen


class Thinner:
    """Keeps every `step`-th key from the first; when more than 2 x `want` are kept, drops every
    other one and doubles `step`. So the kept keys stay evenly spaced and are never more than
    2 x `want` + 1 (the check runs per key); `result()` spreads them down to `want`."""

    def __init__(self, want: int) -> None:
        self.want = max(1, want)
        self.kept: list[tuple[Any, ...]] = []
        self.step = 1
        self.seen = 0

    def add(self, rows: Iterable[Sequence[Any]]) -> None:
        kept, step, seen, limit = self.kept, self.step, self.seen, 2 * self.want
        for row in rows:
            if seen % step == 0:
                kept.append(tuple(row))
                if len(kept) > limit:
                    kept = kept[::2]
                    step *= 2
            seen += 1
        self.kept, self.step, self.seen = kept, step, seen

    def result(self) -> list[tuple[Any, ...]]:
        kept = self.kept
        if len(kept) <= self.want:
            return list(kept)
        every = len(kept) / self.want
        return [kept[int(i * every)] for i in range(self.want)]


def _plan_ctid(table: TableInfo, nranges: int) -> Plan:
    pages = max(table.relpages, 1)
    est = int(max(table.reltuples, 0))
    if table.relkind != "r" or nranges == 1:
        return Plan((KeyRange(0, "all", None, None, est),), (), est, "single range")
    nranges = min(nranges, pages)
    return Plan(tuple(_block_ranges(0, pages, nranges, est, None)), (), est, "ctid block ranges")


def _block_ranges(
    first: int, pages: int, nranges: int, est: int, relation: tuple[str, str] | None
) -> list[KeyRange]:
    step = pages / nranges
    edges: list[int | None] = [None] + [int(i * step) for i in range(1, nranges)] + [None]
    return [
        KeyRange(
            first + i,
            "ctid",
            None if edges[i] is None else (edges[i],),
            None if edges[i + 1] is None else (edges[i + 1],),
            est // nranges,
            relation,
        )
        for i in range(nranges)
    ]


def _plan_ctid_leaves(table: TableInfo, leaves: tuple[Relation, ...], nranges: int) -> Plan:
    """ctid block ranges per leaf relation (each read `FROM ONLY` it), the ranges shared out by
    size, at least one per leaf; largest first."""
    for leaf in leaves:
        if leaf.relkind not in STORAGE_KINDS:
            raise SourceError(
                f"{leaf.display} (read as part of {table.display}) is a foreign table or view, so "
                "its rows have no ctid to tell them apart: name a unique key with --key"
            )
    if not leaves:  # a partitioned table without partitions
        return Plan((KeyRange(0, "all", None, None, 0),), (), 0, "single range")
    total = sum(max(leaf.relpages, 1) for leaf in leaves)
    ranges: list[KeyRange] = []
    for leaf in leaves:
        pages = max(leaf.relpages, 1)
        n = max(1, min(pages, round(nranges * pages / total)))
        est = int(max(leaf.reltuples, 0))
        ranges += _block_ranges(len(ranges), pages, n, est, (leaf.schema, leaf.name))
    ranges.sort(key=lambda r: -r.estimated_rows)
    est = sum(int(max(leaf.reltuples, 0)) for leaf in leaves)
    return Plan(tuple(ranges), (), est, f"ctid block ranges of {len(leaves)} relations")

"""The phases every command that reads the source shares: preflight, plan, range states.

`copy`, `plan` and `verify` all run `preflight`, so the same input gets the same message and
exit code from each. Each phase returns what it made; none keeps state of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from parallelsync.config import CopyConfig
from parallelsync.errors import SourceError, UsageError
from parallelsync.job.checks import mongo_filter
from parallelsync.job.state import RangeState
from parallelsync.mapping.projection import Projection, build_projection, check_projection
from parallelsync.source.catalog import TableInfo, resolve_table
from parallelsync.source.connect import clean, connect
from parallelsync.source.planner import KeyRange, Plan, plan_ranges
from parallelsync.source.predicates import user_filter
from parallelsync.source.snapshot import (
    check_logical,
    check_slot_name,
    import_snapshot,
    slot_exists,
)
from parallelsync.targets import check_target


@dataclass(frozen=True)
class Prepared:
    """What preflight found: the table as the catalog describes it, and how it maps to documents."""

    table: TableInfo
    projection: Projection


def preflight(cfg: CopyConfig) -> Prepared:
    """Check every input against the source before anything is written anywhere."""
    if cfg.command != "plan":
        check_target(
            cfg.target, cfg.db, collection=cfg.collection, stats_collection=cfg.stats_collection,
            changed_rows_collection=cfg.changed_rows_collection,
        )  # fmt: skip
    if cfg.slot:
        check_slot_name(cfg.slot)
    with connect(cfg.source, autocommit=True) as pg:
        table = resolve_table(pg, cfg.table)
        proj = build_projection(table, cfg)
        check_projection(pg, table, proj)  # type overrides fail here, not mid-copy
        if cfg.where:
            check_where(pg, table, cfg)
        if cfg.slot:
            check_logical(pg)
            if not cfg.resume and slot_exists(pg, cfg.slot):
                raise SourceError(
                    f"replication slot {cfg.slot!r} already exists: another job or consumer "
                    "uses it; choose another --slot, or drop the abandoned one with "
                    f"parallelsync slot drop {cfg.slot} --source DSN"
                )
    return Prepared(table, proj)


def check_where(pg: psycopg.Connection[Any], table: TableInfo, cfg: CopyConfig) -> None:
    q = sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE {}").format(table.ident, user_filter(cfg.where))
    try:
        pg.execute(q)
    except psycopg.Error as exc:
        raise UsageError(f"invalid --where {cfg.where!r}: {clean(exc, cfg.source)}") from None


def make_plan(cfg: CopyConfig, prepared: Prepared, snapshot: str | None) -> Plan:
    """Key ranges from a sample; under the workers' snapshot when there is one, so the ranges
    describe the data the workers will read."""
    nranges = cfg.workers * cfg.ranges_per_worker
    with connect(cfg.source, autocommit=True) as pg:
        if snapshot is not None:
            import_snapshot(pg, snapshot)
        try:
            return plan_ranges(pg, prepared.table, prepared.projection.key, nranges, cfg.where)
        except psycopg.Error as exc:
            raise SourceError(f"planning ranges failed: {clean(exc, cfg.source)}") from None


def copy_query(cfg: CopyConfig, prepared: Prepared, rng: KeyRange) -> str:
    """The complete COPY statement of one range."""
    proj = prepared.projection
    cond = rng.predicate(proj.key)
    if cfg.where:
        cond = sql.SQL("({}) AND {}").format(cond, user_filter(cfg.where))
    q = sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT BINARY)").format(
        proj.select_list, prepared.table.ident, cond
    )
    return q.as_string(None)


def range_states(cfg: CopyConfig, prepared: Prepared, plan: Plan) -> list[RangeState]:
    layout = prepared.projection.layout
    return [
        RangeState(r, copy_query(cfg, prepared, r), id_filter=mongo_filter(r, layout))
        for r in plan.ranges
    ]

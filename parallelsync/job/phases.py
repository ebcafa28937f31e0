"""The phases every command that reads the source shares: preflight, plan, range states.

`copy`, `plan` and `verify` all run `preflight`, so the same input gets the same message and
exit code from each. Each phase returns what it made; none keeps state of its own.

Every statement that contains `--where` runs as one statement (the extended query protocol,
source/connect.py `execute`) inside a READ ONLY transaction, the preflight's checks included.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from parallelsync.cdc.publication import PublicationPlan, plan_publication
from parallelsync.config import CopyConfig
from parallelsync.errors import SourceError, UsageError
from parallelsync.job.checks import mongo_filter
from parallelsync.job.follow import check_follow_options, check_followable_copy
from parallelsync.job.state import RangeState
from parallelsync.mapping.projection import Projection, build_projection, check_projection
from parallelsync.source.capacity import COPY_EXTRA, VERIFY_EXTRA, cap_workers, connection_capacity
from parallelsync.source.catalog import TableInfo, resolve_table
from parallelsync.source.connect import clean, connect, execute
from parallelsync.source.counts import count_query
from parallelsync.source.keys import KeySpec, resolve_key
from parallelsync.source.planner import KeyRange, Plan, plan_ranges
from parallelsync.source.predicates import user_filter
from parallelsync.source.relations import ReadSpec, leaves, read_spec
from parallelsync.source.snapshot import (
    check_logical,
    check_replication_role,
    check_slot_name,
    import_snapshot,
    slot_exists,
)
from parallelsync.targets import check_target, kind_of


@dataclass(frozen=True)
class Prepared:
    """What preflight found: the table as the catalog describes it, how the copy reads it, its
    key, how it maps to documents, and how many workers the source can take."""

    table: TableInfo
    projection: Projection
    read: ReadSpec
    key: KeySpec
    workers: int
    # The publication a new --slot copy uses (None: no slot, a resume, or a table that cannot be
    # published and no feature that needs it).
    publication: PublicationPlan | None = None

    @property
    def relation(self) -> sql.Composable:
        """The table as every query of the copy names it (`ONLY t` without its children)."""
        return self.read.from_sql(self.table)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def preflight(cfg: CopyConfig, log: Callable[[str], None] = _stderr) -> Prepared:
    """Check every input against the source before anything is written anywhere."""
    if cfg.command != "plan":
        check_target(
            cfg.target, cfg.db, collection=cfg.collection, stats_collection=cfg.stats_collection,
            changed_rows_collection=cfg.changed_rows_collection,
        )  # fmt: skip
    check_slot_features(cfg)
    if cfg.slot:
        check_slot_name(cfg.slot)
    publication = None
    with connect(cfg.source, autocommit=True) as pg:
        # Nothing the preflight runs can write, whatever --where holds.
        pg.execute("BEGIN READ ONLY")
        table = resolve_table(pg, cfg.table)
        read = read_spec(pg, table, cfg.include_children)
        if read.foreign and not cfg.allow_foreign_table:
            raise SourceError(foreign_refusal(table, read))
        proj = build_projection(table, cfg, spans=read.spans)
        origin = "--key" if cfg.key else ("mapping.id" if proj.key != table.primary_key else "")
        key = resolve_key(pg, table, proj.key, read, origin or "the primary key")
        check_projection(pg, table, proj)  # type overrides fail here, not mid-copy
        if cfg.where:
            check_where(pg, table, read, cfg)
        if cfg.slot:
            check_logical(pg)
            check_replication_role(pg)
            if cfg.follow:  # what follow needs, before an hour of copying, not after it
                check_followable_copy(pg, table, proj, cfg)
            if not cfg.resume and slot_exists(pg, cfg.slot):
                raise SourceError(
                    f"replication slot {cfg.slot!r} already exists: another job or consumer "
                    "uses it; choose another --slot, or drop the abandoned one with "
                    f"parallelsync slot drop {cfg.slot} --source DSN"
                )
            if not cfg.resume:  # a resume uses the job's own publication (job/resume.py)
                publication = plan_publication(
                    pg, table, proj.key, slot=cfg.slot, only=read.only,
                    publication=cfg.publication, needed_by=slot_features(cfg), log=log,
                )  # fmt: skip
        extra = VERIFY_EXTRA if cfg.command == "verify" else COPY_EXTRA
        workers, note = cap_workers(connection_capacity(pg), cfg.workers, extra)
        pg.execute("ROLLBACK")
    if note:
        log(note)
    return Prepared(table, proj, read, key, workers, publication)


def slot_features(cfg: CopyConfig) -> list[str]:
    """The requested features that read the table's changes from the slot's publication."""
    out = []
    if cfg.changed_rows_collection:
        out.append("--changed-rows-collection")
    if cfg.require_snapshot_consistency:
        out.append("--require-snapshot-consistency")
    if cfg.follow:
        out.append("--follow")
    return out


def check_slot_features(cfg: CopyConfig) -> None:
    """Options that only work with a slot (or a MongoDB target) are refused, not skipped later."""
    if cfg.command != "copy":
        return
    if cfg.publication and not cfg.slot:
        raise UsageError(
            f"--publication {cfg.publication} names the publication a --slot decodes: pass "
            "--slot NAME too"
        )
    if cfg.changed_rows_collection and not cfg.slot:
        raise UsageError(
            "--changed-rows-collection reads the rows changed during the copy from a "
            "replication slot: pass --slot NAME too"
        )
    check_follow_options(cfg)
    if cfg.changed_rows_collection and kind_of(cfg.target) != "mongodb":
        raise UsageError(
            f"--changed-rows-collection writes a collection next to the target, which a "
            f"{kind_of(cfg.target)}: target cannot hold; use a MongoDB target or leave it out"
        )


def foreign_refusal(table: TableInfo, read: ReadSpec) -> str:
    what = (
        f"table {table.display} is a foreign table"
        if read.foreign == (table.display,)
        else f"table {table.display} reads foreign table(s) {', '.join(read.foreign)}"
    )
    return (
        f"{what}: a foreign table is read outside the snapshot, each range at its own moment, so "
        "the copy would not be one consistent picture of it; pass --allow-foreign-table to "
        "accept per-range consistency"
    )


def check_where(
    pg: psycopg.Connection[Any], table: TableInfo, read: ReadSpec, cfg: CopyConfig
) -> None:
    q = sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE {}").format(
        read.from_sql(table), user_filter(cfg.where)
    )
    try:
        execute(pg, q)
    except psycopg.Error as exc:
        raise UsageError(f"invalid --where {cfg.where!r}: {clean(exc, cfg.source)}") from None


def make_plan(cfg: CopyConfig, prepared: Prepared, snapshot: str | None) -> Plan:
    """Key ranges from a sample; under the workers' snapshot when there is one, so the ranges
    describe the data the workers will read."""
    nranges = prepared.workers * cfg.ranges_per_worker
    table, read = prepared.table, prepared.read
    with connect(cfg.source, autocommit=True) as pg:
        try:
            if snapshot is not None:
                import_snapshot(pg, snapshot)
            else:
                pg.execute("BEGIN READ ONLY")
            rels = leaves(pg, table, children=read.children) if read.spans else ()
            return plan_ranges(
                pg, table, prepared.key, nranges, cfg.where,
                relation=prepared.relation, spans=read.spans, leaves=rels,
            )  # fmt: skip
        except psycopg.Error as exc:
            raise SourceError(f"planning ranges failed: {clean(exc, cfg.source)}") from None


def copy_query(cfg: CopyConfig, prepared: Prepared, rng: KeyRange) -> str:
    """The complete COPY statement of one range."""
    proj = prepared.projection
    cond = rng.predicate(prepared.key)
    if cfg.where:
        cond = sql.SQL("({}) AND {}").format(cond, user_filter(cfg.where))
    relation = (
        prepared.relation
        if rng.relation is None
        else sql.SQL("ONLY {}").format(sql.Identifier(*rng.relation))
    )
    q = sql.SQL("COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT BINARY)").format(
        proj.select_list, relation, cond
    )
    return q.as_string(None)


def snapshot_count_query(cfg: CopyConfig, prepared: Prepared) -> sql.Composed:
    """What the snapshot holds of the table as read (source/counts.py), with the distinct keys
    where the catalog cannot prove the key unique."""
    key = prepared.key.names if prepared.key.check_distinct else None
    return count_query(prepared.relation, user_filter(cfg.where), key)


def id_filter(prepared: Prepared, rng: KeyRange) -> dict[str, Any] | None:
    proj = prepared.projection
    return mongo_filter(rng, proj.layout, proj.id_is_key, null_keys=not prepared.key.not_null)


def range_states(cfg: CopyConfig, prepared: Prepared, plan: Plan) -> list[RangeState]:
    return [
        RangeState(r, copy_query(cfg, prepared, r), id_filter=id_filter(prepared, r))
        for r in plan.ranges
    ]

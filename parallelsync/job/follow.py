"""`parallelsync follow`: keep a copied collection in step with its table from the copy's slot.

Order of a transaction (docs/architecture.md, "Change capture"): its writes are acknowledged by
MongoDB, THEN its commit end LSN is stored in the follow checkpoint document, THEN that LSN is
confirmed to PostgreSQL (`flush_lsn`). A crash between two steps loses nothing: the slot still
holds what was not confirmed, and a restart skips what the checkpoint says is applied. The start
position is the largest of the slot's confirmed position, the checkpoint, and the consistent
LSN of the copy that made the slot.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import psycopg
from pymongo.collection import Collection

from parallelsync.cdc.apply import Applier, ShapeRule, check_columns, columns_of
from parallelsync.cdc.documents import RowEncoder, check_followable
from parallelsync.cdc.follow_changed import ChangedRowJobs
from parallelsync.cdc.late_publication import create_late_publication
from parallelsync.cdc.lookups import LookupStore
from parallelsync.cdc.peek import flush_position
from parallelsync.cdc.publication import check_covers, relations
from parallelsync.cdc.slots import list_slots
from parallelsync.cdc.stream import BINARY_SINCE, ReplicationStream, format_lsn, parse_lsn
from parallelsync.config import CopyConfig
from parallelsync.errors import SourceError, UsageError
from parallelsync.job.follow_loop import (
    CAUGHT_UP,
    END,
    IDLE,
    STOPPED,
    Checkpoints,
    FollowLoop,
    StopFlag,
    Until,
    doc_of,
)
from parallelsync.job.follow_stats import FollowMonitor
from parallelsync.job.report import FollowSnapshot, LineReporter, Phases, Reporter
from parallelsync.mapping.projection import Projection, build_projection
from parallelsync.source.catalog import TableInfo, resolve_table
from parallelsync.source.connect import connect
from parallelsync.source.snapshot import check_logical, check_slot_name
from parallelsync.targets import check_target, kind_of
from parallelsync.targets.mongodb.follow_state import FollowState, latest_copy
from parallelsync.targets.mongodb.target import MongoTarget

# A slot in use at start is waited for this long (a killed follow's walsender exiting), looked
# at this often.
SLOT_WAIT_S = 5.0
SLOT_POLL_S = 0.1


@dataclass
class FollowResult:
    status: str = "FAILED"  # FINISHED (reached the end / idle exit), STOPPED (signal), FAILED
    reason: str = ""
    slot: str = ""
    start_lsn: str = ""
    applied_lsn: str = ""
    end_lsn: str | None = None
    transactions: int = 0
    changes: int = 0
    skipped: int = 0
    bulk_writes: int = 0
    largest_bulk_write: int = 0  # operations: a huge transaction is written in chunks
    changed_rows: int | None = None  # refresh jobs written (--changed-rows-collection)
    write_retries: int = 0  # chunks written again after a transient MongoDB error
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "extra"} | self.extra


@dataclass(frozen=True)
class Prepared:
    table: TableInfo
    projection: Projection
    publication: str
    confirmed_lsn: int
    end_lsn: int | None


def _preflight(cfg: CopyConfig, log: Callable[[str], None]) -> Prepared:
    if not cfg.slot:
        raise UsageError("--slot is required: the slot a `copy --slot NAME` made")
    check_slot_name(cfg.slot)
    _check_stop_options(cfg)
    if kind_of(cfg.target) != "mongodb":
        raise UsageError("follow writes into MongoDB: --target must be a MongoDB URI")
    check_target(
        cfg.target, cfg.db, collection=cfg.collection, stats_collection=cfg.stats_collection,
        changed_rows_collection=cfg.changed_rows_collection,
    )  # fmt: skip
    publication = cfg.publication or cfg.slot
    with connect(cfg.source, autocommit=True) as conn:
        check_logical(conn)
        _check_version(conn)
        table = resolve_table(conn, cfg.table)
        proj = _projection(cfg, table)
        _check_identity(conn, table, proj)
        confirmed = _check_slot(conn, cfg.slot, log)
        key = tuple(_id_columns(proj))
        made_at = _check_publication(cfg.source, conn, publication, cfg.slot, table, key)
        if made_at is not None:  # the slot was advanced to the new publication's creation
            confirmed = max(confirmed, parse_lsn(made_at))
        end = parse_lsn(flush_position(conn) or "0/0") if cfg.stop_at_end else None
    return Prepared(table, proj, publication, confirmed, end)


def check_follow_options(cfg: CopyConfig) -> None:
    """copy: --follow and the follow options it takes, refused when they cannot work."""
    follow_only = [f for f, on in (("--stop-at-end", cfg.stop_at_end),
                                   ("--idle-exit", cfg.idle_exit is not None)) if on]  # fmt: skip
    if not cfg.follow:
        if follow_only:
            raise UsageError(
                f"{' and '.join(follow_only)} tell(s) a copy when to stop following: pass "
                "--follow too (or use `parallelsync follow` after the copy)"
            )
        return
    if not cfg.slot:
        raise UsageError(
            "--follow applies the changes made during the copy from its replication slot: pass "
            "--slot NAME too"
        )
    if kind_of(cfg.target) != "mongodb":
        raise UsageError(
            f"--follow applies changes to a MongoDB collection; a {kind_of(cfg.target)}: target "
            "cannot take them: use a MongoDB target or leave out --follow"
        )
    if cfg.resume:
        raise UsageError(
            "--follow does not combine with --resume: resume the copy without --follow, then run "
            f"`parallelsync follow --slot {cfg.slot} ...`, which starts at the resumed copy's "
            "consistent LSN (nothing is lost, the swapped-in collection is only less recent)"
        )
    if cfg.changed_rows_collection:
        raise UsageError(
            "--changed-rows-collection reads the slot after the swap, which --follow streams: "
            "leave out one of them"
        )
    _check_stop_options(cfg)
    if cfg.swap_lag_seconds < 0:
        raise UsageError(f"--swap-lag-seconds must be 0 or more, got {cfg.swap_lag_seconds:g}")
    if cfg.catch_up_timeout_seconds < 0:
        raise UsageError(
            f"--catch-up-timeout-seconds must be 0 (no bound) or more, got "
            f"{cfg.catch_up_timeout_seconds:g}"
        )


def _check_stop_options(cfg: CopyConfig) -> None:
    if cfg.stop_at_end and cfg.idle_exit is not None:
        raise UsageError("--stop-at-end and --idle-exit exclude each other: choose one")
    if cfg.idle_exit is not None and cfg.idle_exit <= 0:
        raise UsageError(f"--idle-exit must be more than 0 seconds, got {cfg.idle_exit:g}")


def check_followable_copy(
    conn: psycopg.Connection[Any], table: TableInfo, proj: Projection, cfg: CopyConfig
) -> None:
    """copy --follow: the checks `follow` makes of the source, at the copy's preflight."""
    _check_version(conn)
    _check_table(cfg, table)
    check_followable(proj)
    _check_identity(conn, table, proj)


def _check_version(conn: psycopg.Connection[Any]) -> None:
    if conn.info.server_version < BINARY_SINCE:
        raise SourceError(
            "follow needs PostgreSQL 14 or later (pgoutput's binary values are what make a "
            f"followed document the copy's bytes); the source is {conn.info.server_version}"
        )


def _check_table(cfg: CopyConfig, table: TableInfo) -> None:
    if table.relkind == "p":
        # Checked on PostgreSQL 15: with publish_via_partition_root a TRUNCATE of one partition
        # is not sent at all; without it, changes carry each partition's own relation.
        raise UsageError(
            f"{table.display} is partitioned, and follow does not follow partitioned tables yet: "
            "with publish_via_partition_root a TRUNCATE of one partition is not sent at all (its "
            "rows would stay in the collection), and without it the changes arrive under each "
            "partition's own relation (a partition attached later too), which follow does not "
            "map to the table yet. Copy the table again to refresh the collection, or copy and "
            "follow each partition as a table of its own"
        )
    if table.relkind != "r":
        raise UsageError(
            f"{table.display} is not a plain table: follow reads the changes of one plain table "
            "(views, foreign tables and others have no change stream)"
        )
    if not table.primary_key and not cfg.key:
        raise UsageError(f"{table.display} has no primary key: follow needs one to find documents")


def _projection(cfg: CopyConfig, table: TableInfo) -> Projection:
    _check_table(cfg, table)
    proj = build_projection(table, cfg)
    check_followable(proj)
    return proj


def _check_identity(conn: psycopg.Connection[Any], table: TableInfo, proj: Projection) -> None:
    """A delete carries the replica identity's columns only: `_id` must be built from them."""
    row = conn.execute("SELECT relreplident FROM pg_class WHERE oid = %s", (table.oid,)).fetchone()
    ident = str(row[0]) if row else "d"
    id_cols = set(_id_columns(proj))
    if ident == "f" or (ident == "d" and id_cols <= set(table.primary_key)):
        return
    raise UsageError(
        f"the documents' _id is built from {', '.join(sorted(id_cols))}, but deletes of "
        f"{table.display} carry only its replica identity ({_IDENT.get(ident, ident)}): "
        f"ALTER TABLE {table.display} REPLICA IDENTITY FULL, or copy with the primary key as _id"
    )


_IDENT = {"d": "the primary key", "n": "nothing", "i": "an index"}


def _id_columns(proj: Projection) -> Iterator[str]:
    from parallelsync.transcode.model import DocNode, FieldNode, Node

    def walk(node: Node) -> Iterator[int]:
        if isinstance(node, FieldNode):
            yield node.column
        elif isinstance(node, DocNode):
            for child in node.children:
                yield from walk(child)

    for col in walk(proj.layout.nodes[0]):
        src = proj.sources[col]
        if src is not None:
            yield src.name


def _check_slot(conn: psycopg.Connection[Any], slot: str, log: Callable[[str], None]) -> int:
    deadline = time.monotonic() + SLOT_WAIT_S
    told = False
    while True:
        found = list_slots(conn, [slot])
        if not found:
            raise SourceError(
                f"replication slot {slot!r} does not exist: run `parallelsync copy ... --slot "
                f"{slot}` first (it creates the slot at the copy's snapshot)"
            )
        info = found[0]
        if info.plugin != "pgoutput":
            raise SourceError(
                f"replication slot {slot!r} uses {info.plugin}, follow reads pgoutput"
            )
        if not info.in_use:
            return parse_lsn(info.confirmed_flush_lsn or "0/0")
        who = info.active_pid or info.held_by
        # The walsender of a follow killed a moment ago still holds the slot until it sees its
        # client gone: wait for that, briefly, rather than fail a restart made at once.
        if time.monotonic() >= deadline:
            raise SourceError(
                f"replication slot {slot!r} is in use (process {who}), still after "
                f"{SLOT_WAIT_S:g} s: another follow or a running copy reads it; stop that first"
            )
        if not told:
            log(f"replication slot {slot} is in use (process {who}): waiting up to "
                f"{SLOT_WAIT_S:g} s for it to be released")  # fmt: skip
            told = True
        time.sleep(SLOT_POLL_S)


def _check_publication(
    dsn: str,
    conn: psycopg.Connection[Any],
    name: str,
    slot: str,
    table: TableInfo,
    key: tuple[str, ...],
) -> str | None:
    """The publication must send every change of the table, as for a copy's
    (cdc/publication.py): a row filter or a missing operation would drop changes unseen. A
    missing one is created only when the slot holds no change of the table it would miss
    (cdc/late_publication.py)."""
    row = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
    made_at = None if row is not None else create_late_publication(dsn, name, slot, table, key)
    check_covers(conn, name, table, relations(conn, table, only=True), key)
    return made_at


class _Stop:
    """SIGINT/SIGTERM: stop after the transaction in flight."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


@contextmanager
def _signals(stop: _Stop) -> Iterator[None]:
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def run_follow(cfg: CopyConfig, reporter: Reporter | None = None) -> FollowResult:
    reporter = reporter or LineReporter()
    phases = Phases(reporter)
    with phases.run("preflight"):
        prepared = _preflight(cfg, reporter.warning)
    assert cfg.slot is not None
    target = MongoTarget(cfg.target, cfg.db, cfg.collection, cfg.stats_collection)
    result = FollowResult(slot=cfg.slot)
    job_id = f"follow-{uuid.uuid4().hex[:12]}"
    stop = _Stop()
    t0 = time.monotonic()
    # A follow killed outright is restarted at once: its lease (same host, dead process) is
    # taken over, not waited out; its checkpoint says where to go on.
    target.lock(job_id, resume=False, take_dead=True)
    try:
        with _signals(stop), phases.run("follow") as rec:
            _follow(cfg, prepared, target, job_id, result, stop, reporter)
            rec.rows = result.changes
    finally:
        target.unlock()
        target.client.close()
        result.seconds = round(time.monotonic() - t0, 3)
    return result


def _start_position(
    cfg: CopyConfig, prepared: Prepared, state: FollowState, target: MongoTarget
) -> tuple[int, str | None, list[tuple[str, int]]]:
    assert cfg.slot is not None
    copy = latest_copy(target.db[cfg.stats_collection], cfg.db, cfg.collection, cfg.slot)
    copy_job = None if copy is None else str(copy["_id"])
    start = prepared.confirmed_lsn
    if copy is not None:
        start = max(start, parse_lsn((copy.get("snapshot") or {}).get("consistent_lsn") or "0/0"))
    saved = state.load()
    # The columns the documents were made from: the copy's (a column added between the copy and
    # this first follow would otherwise be taken for the documents' shape and written into some
    # documents only); a copy recorded before they were kept: the table now.
    recorded = ((copy or {}).get("source") or {}).get("columns")
    shape = [(str(n), int(t)) for n, t in recorded] if recorded else columns_of(prepared.table)
    # A checkpoint counts only for the copy it continues: a new copy starts a new history.
    if saved and saved.get("slot") == cfg.slot and saved.get("copy_job") == copy_job:
        start = max(start, int(saved.get("applied_lsn_int") or 0))
        if saved.get("columns"):
            shape = [(str(n), int(t)) for n, t in saved["columns"]]
    return start, copy_job, shape


def _follow(
    cfg: CopyConfig,
    prepared: Prepared,
    target: MongoTarget,
    job_id: str,
    result: FollowResult,
    stop: _Stop,
    reporter: Reporter,
) -> None:
    assert cfg.slot is not None
    table = prepared.table
    state = FollowState(target.db[cfg.stats_collection], cfg.db, cfg.collection)
    start, copy_job, shape = _start_position(cfg, prepared, state, target)
    result.start_lsn = result.applied_lsn = format_lsn(start)
    result.end_lsn = None if prepared.end_lsn is None else format_lsn(prepared.end_lsn)
    state.start({
        "job_id": job_id, "slot": cfg.slot, "publication": prepared.publication,
        "copy_job": copy_job, "source": {"schema": table.schema, "table": table.name},
        "target": {"db": cfg.db, "collection": cfg.collection}, "start_lsn": result.start_lsn,
        "columns": [list(c) for c in shape], "error": None,
    })  # fmt: skip
    rule = shape_rule(cfg, prepared.projection)
    jobs = None
    if cfg.changed_rows_collection:
        jobs = ChangedRowJobs(target.db[cfg.changed_rows_collection], job_id, cfg.table)
    try:
        # A change of the table between two runs shows in the catalog even when no change of
        # the new shape is in the stream yet.
        check_columns(table, columns_of(table), shape, "the table now", rule)
    except BaseException as exc:
        _fail_early(state, result, job_id, exc)
        raise
    with open_loop(
        cfg, table, prepared.projection, prepared.publication, target.db[cfg.collection],
        start=start, shape=shape, checkpoints=state, stop=stop, reporter=reporter,
        result=result, jobs=jobs,
    ) as loop:  # fmt: skip
        try:
            loop.open(start)
            reporter.warning(
                f"following {table.display} -> {target.display} from {format_lsn(start)} "
                f"(slot {cfg.slot})"
            )
            why = loop.run(Until(end_lsn=prepared.end_lsn, idle_exit=cfg.idle_exit))
            result.status = "STOPPED" if why == STOPPED else "FINISHED"
            result.reason = reason(why, cfg)
        except BaseException as exc:
            fail_state(state, loop, result, job_id, exc)
            raise
        finish_state(state, loop, result, reporter)


def reason(why: str, cfg: CopyConfig) -> str:
    """What `FollowLoop.run`'s answer means, for the user."""
    return {
        STOPPED: "stopped by a signal", END: "reached the end position",
        IDLE: f"idle for {cfg.idle_exit or 0:g} s", CAUGHT_UP: "caught up",
    }.get(why, why)  # fmt: skip


@contextmanager
def open_loop(
    cfg: CopyConfig,
    table: TableInfo,
    projection: Projection,
    publication: str,
    coll: Collection[Any],
    *,
    start: int,
    shape: list[tuple[str, int]],
    checkpoints: Checkpoints,
    stop: StopFlag,
    reporter: Reporter,
    result: FollowResult,
    catch_up: bool = False,
    jobs: ChangedRowJobs | None = None,
) -> Iterator[FollowLoop]:
    """The loop that applies the slot's stream from `start` into `coll` (`loop.open()` starts
    the stream); the stream is closed on the way out. Column changes are judged by the
    mapping's rule (`shape_rule`), for follow and copy --follow alike."""
    assert cfg.slot is not None
    stream = ReplicationStream(
        cfg.source, cfg.slot, publication, application_name=f"parallelsync follow {cfg.slot}"
    )
    encoder = RowEncoder(projection, [c.name for c in table.columns])
    applier = Applier(
        table, encoder, coll, checkpoint=start, shape=shape, rule=shape_rule(cfg, projection),
        jobs=jobs, catch_up=catch_up,
        # Also in a catch-up: after copy --follow's swap the same applier follows on.
        lookups=LookupStore(coll.database[cfg.stats_collection], f"{cfg.db}.{cfg.collection}"),
    )  # fmt: skip
    monitor = FollowMonitor(
        cfg.source, cfg.slot, int(cfg.max_retained_wal_mb * 1e6), reporter.warning
    )

    def applied(lsn: str) -> None:
        result.applied_lsn = lsn

    loop = FollowLoop(stream, applier, monitor, checkpoints, stop, reporter, on_applied=applied)
    try:
        yield loop
    finally:
        stream.close()
        monitor.close()


def _fail_early(state: FollowState, result: FollowResult, job_id: str, exc: BaseException) -> None:
    result.status, result.reason = "FAILED", str(exc)
    with contextlib.suppress(Exception):
        state.finish("FAILED", {
            "error": str(exc),
            "last_error": {"message": str(exc), "at": _utcnow(), "job_id": job_id},
        })  # fmt: skip


def fail_state(
    state: FollowState, loop: FollowLoop, result: FollowResult, job_id: str, exc: BaseException
) -> None:
    """The run failed: the result and the state document say so (the error is re-raised)."""
    result.status, result.reason = "FAILED", str(exc)
    _totals(result, loop.applier, loop.stats())
    with contextlib.suppress(Exception):  # the error itself is what the user must see
        state.finish("FAILED", {
            "error": str(exc),
            "last_error": {"message": str(exc), "at": _utcnow(), "job_id": job_id},
            **doc_of(loop.stats()),
        })  # fmt: skip


def finish_state(
    state: FollowState, loop: FollowLoop, result: FollowResult, reporter: Reporter
) -> None:
    loop.monitor.poll(force=True)
    final = loop.stats()
    reporter.progress(final)
    _totals(result, loop.applier, final)
    state.finish(result.status, {"reason": result.reason, **doc_of(final)})
    reporter.warning(
        f"follow {result.status.lower()}: {result.reason}; {result.transactions} transactions, "
        f"{result.changes} changes applied, at {result.applied_lsn}"
    )


def shape_rule(cfg: CopyConfig, proj: Projection) -> ShapeRule:
    """The column changes a fresh copy with this mapping would not write either."""
    m = cfg.mapping
    return ShapeRule(
        used=frozenset(c.name for c in proj.sources if c is not None),
        mentioned=frozenset(m.mentioned() | set(cfg.key or ())),
        ignores_new=m.include is not None and m.new_columns == "ignore",
        include_only=m.include is not None,
    )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _totals(result: FollowResult, applier: Applier, snap: FollowSnapshot) -> None:
    t = applier.totals
    result.transactions, result.changes, result.skipped = t.transactions, t.changes, t.skipped
    result.bulk_writes, result.largest_bulk_write = t.bulk_writes, t.largest_write
    result.write_retries = t.retries
    if applier.jobs is not None:
        result.changed_rows = applier.jobs.written
    result.extra = doc_of(snap)
    del result.extra["transactions"], result.extra["changes"]

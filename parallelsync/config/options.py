"""The option table: every option of every subcommand, in one place.

Each option is a flag (`--batch-rows`), an environment variable (`PARALLELSYNC_BATCH_ROWS`, plus
any legacy names such as `SLOTNAME`) and a key of the TOML config file. `commands` says which
subcommands accept it: a subcommand's parser offers only those, so an option a command would not
use is an error on the command line instead of being silently ignored. Environment variables and
config-file keys for other subcommands are ignored, so one file can serve them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from parallelsync.source.locks import DEFAULT_LOCK_TIMEOUT_S
from parallelsync.targets.timeouts import DEFAULT_CALL_TIMEOUT_S, DEFAULT_LONG_TIMEOUT_S

# Batches bounded by rows and bytes: 10k rows or 8 MiB of COPY data, whichever comes first, keeps
# per-worker memory flat (a few batches in flight) while amortising per-batch overhead. Measured
# on the 9-column bench table (1 worker, medians of 3 interleaved runs): 2k, 5k and 10k rows are
# within 5 % of each other to null: and to the wire sink, 50k is ~10 % slower; 10k keeps the
# round trips few on networks with real latency.
DEFAULT_BATCH_ROWS = 10_000
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024
# --stall-seconds: a range whose worker sent nothing (no progress, no heartbeat) for this long is
# retried elsewhere. Workers beat every 2 s while they hold a range, whatever the servers do, so
# only a frozen process (SIGSTOP, swapped out, a hung C call) goes silent; a retry costs the whole
# range again, so a false alarm is expensive, while a real stall costs at most a minute.
DEFAULT_STALL_S = 60.0

COPY, PLAN, VERIFY, STATUS, SLOT = "copy", "plan", "verify", "status", "slot"
FOLLOW = "follow"
READS = frozenset({COPY, PLAN, VERIFY})  # commands that read the source table
WRITES = frozenset({COPY, VERIFY})  # commands that run workers and produce documents
TARGETS = frozenset({COPY, VERIFY, STATUS, FOLLOW})  # commands that talk to the target
# Options that shape documents: follow must write exactly what the copy wrote.
SHAPES = WRITES | {FOLLOW}


@dataclass(frozen=True)
class Option:
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    commands: frozenset[str]
    choices: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()  # extra environment variables, after PARALLELSYNC_<NAME>
    # Commands that cannot run without it (their --help lists it under "required options").
    required: frozenset[str] = frozenset()
    # How `config show` masks the value: "connection" (a DSN or URI: its password becomes ***)
    # or "value" (the whole value is a secret).
    secret: str | None = None
    short: str | None = None  # a one-letter flag as well (`-v`)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_vars(self) -> tuple[str, ...]:
        return (f"PARALLELSYNC_{self.name.upper()}", *self.env)


OPTIONS: tuple[Option, ...] = (
    Option(
        "source",
        str,
        None,
        "PostgreSQL DSN (URI or key=value); the password may come from PGPASSWORD or ~/.pgpass",
        READS | {STATUS, SLOT, FOLLOW},  # status: optional, to show the jobs' slots
        required=READS | {SLOT, FOLLOW},
        secret="connection",
    ),
    Option(
        "table",
        str,
        None,
        "source table as [schema.]table; quote mixed case: '\"Orders\"'",
        READS | {FOLLOW},
        required=READS | {FOLLOW},
    ),
    Option(
        "target",
        str,
        None,
        "MongoDB URI; file:DIR writes DIR/<collection>.bson and .metadata.json (mongorestore "
        "format); null: discards documents (benchmarks)",
        TARGETS,
        required=TARGETS,
        secret="connection",
    ),
    Option(
        "db",
        str,
        None,
        "target database (default: the database named in a MongoDB --target URI)",
        TARGETS,
        required=frozenset({STATUS}),
    ),
    Option("collection", str, None, "target collection (default: the table name)", TARGETS),
    Option("workers", int, 2, "worker processes", READS),
    Option(
        "executor",
        str,
        "local",
        "where the ranges are copied: local (worker processes of this host) or dask (tasks on a "
        "Dask cluster, see docs/scale-out.md; needs parallelsync[dask])",
        frozenset({COPY}),
        choices=("local", "dask"),
    ),
    Option(
        "scheduler",
        str,
        None,
        "--executor dask: the Dask scheduler's address (tcp://host:8786); without it, a local "
        "Dask cluster of --workers processes is started for this copy",
        frozenset({COPY}),
    ),
    Option(
        "where",
        str,
        None,
        "SQL predicate to copy part of the table (trusted operator input)",
        READS,
    ),
    Option(
        "slot",
        str,
        None,
        "copy: create this logical replication slot and record its consistent LSN; "
        "follow: the slot to stream",
        frozenset({COPY, FOLLOW}),
        required=frozenset({FOLLOW}),
        env=("SLOTNAME",),
    ),
    Option(
        "publication",
        str,
        None,
        "copy --slot: decode the table's changes through this existing publication (one the "
        "table's owner created) instead of creating one, never dropped; follow: the publication "
        "to stream (default: the slot's name)",
        frozenset({COPY, FOLLOW}),
    ),
    Option(
        "stats_collection",
        str,
        "parallelsync_jobs",
        "collection for job statistics (and follow checkpoints) in the target database",
        frozenset({COPY, STATUS, FOLLOW}),
    ),
    Option(
        "key",
        str,
        None,
        "comma-separated unique columns to use instead of the primary key",
        READS | {FOLLOW},
    ),
    Option(
        "include_children",
        bool,
        False,
        "also read the inheritance children of a plain table (default: ONLY the table itself; "
        "a partitioned table is always read whole)",
        READS,
    ),
    Option(
        "allow_foreign_table",
        bool,
        False,
        "copy a foreign table (or foreign partitions) although it is read outside the snapshot, "
        "each range at its own moment (per-range consistency, recorded in the job document)",
        READS,
    ),
    Option(
        "ranges_per_worker",
        int,
        4,
        "ranges planned per worker (more ranges balance skew better)",
        READS,
    ),
    Option("batch_rows", int, DEFAULT_BATCH_ROWS, "max documents per insert batch", WRITES),
    Option("batch_bytes", int, DEFAULT_BATCH_BYTES, "max COPY bytes per batch", WRITES),
    Option(
        "nulls",
        str,
        "null",
        "NULL columns become null, or are omitted",
        SHAPES,
        choices=("null", "omit"),
    ),
    Option(
        "uuid",
        str,
        "binary",
        "uuid as BSON binary subtype 4 or as a string",
        SHAPES,
        choices=("binary", "string"),
    ),
    Option(
        "numeric",
        str,
        "string",
        "numeric values beyond Decimal128's 34 digits",
        SHAPES,
        choices=("string", "double", "decimal"),
    ),
    Option(
        "infinity",
        str,
        "clamp",
        "±infinity dates/timestamps: clamp (to 0001-01-01 / 9999-12-31T23:59:59.999), "
        "clamp-int64 (the int64 ms limits), null, string, error",
        SHAPES,
        choices=("clamp", "clamp-int64", "null", "string", "error"),
    ),
    Option(
        "json_keys",
        str,
        "keep",
        "json keys starting with $ or containing .",
        SHAPES,
        choices=("keep", "replace", "error"),
    ),
    Option(
        "array_bounds",
        str,
        "drop",
        "arrays whose lower bound is not 1 ('[0:2]={1,2,3}'): drop the bounds (the elements "
        "only), or keep them as {lower: [per dimension], values: [...]}",
        WRITES,
        choices=("drop", "keep"),
    ),
    Option(
        "verify",
        str,
        "count",
        "before the swap: per-range row counts, or counts and content checksums",
        frozenset({COPY}),
        choices=("count", "checksum"),
    ),
    Option(
        "resume",
        str,
        None,
        "continue a copy whose coordinator died: a job id, or 'last'",
        frozenset({COPY}),
    ),
    Option(
        "changed_rows_collection",
        str,
        None,
        "with --slot: after the swap, write one document per row changed during the copy into "
        "this collection (downstream refresh jobs); follow: one per row each applied "
        "transaction changed",
        frozenset({COPY, FOLLOW}),
    ),
    Option(
        "progress_seconds",
        float,
        5.0,
        "seconds between progress lines when stderr is not a terminal (plain and json logs); "
        "0: only the lines that start and end each phase",
        READS | {FOLLOW},
    ),
    Option(
        "quiet",
        bool,
        False,
        "no progress or phase lines: only warnings, errors and the final summary",
        READS | {FOLLOW},
    ),
    Option(
        "verbose",
        bool,
        False,
        "debug lines as well: each range as it finishes (rows, MB, seconds, attempt)",
        READS | {FOLLOW},
        short="-v",
    ),
    Option(
        "log_format",
        str,
        "text",
        "stderr as text (a live display on a terminal, plain lines otherwise) or one JSON "
        "object per event (docs/progress.md lists the fields)",
        READS | {FOLLOW},
        choices=("text", "json"),
    ),
    Option(
        "max_attempts",
        int,
        3,
        "attempts per range on transient errors (lost connection, dead worker) before failing",
        WRITES,
    ),
    Option(
        "require_snapshot_consistency",
        bool,
        False,
        "refuse a --resume that can only give per-range consistency (a job without a slot)",
        frozenset({COPY}),
    ),
    Option(
        "allow_empty",
        bool,
        False,
        "let a source with no rows (or a --where matching none) replace a non-empty target",
        frozenset({COPY}),
    ),
    Option(
        "stall_seconds",
        float,
        DEFAULT_STALL_S,
        "retry a range elsewhere when its worker sent nothing (no progress, no heartbeat) for "
        "this many seconds; 0 turns stall detection off",
        WRITES,
    ),
    Option(
        "lock_timeout_seconds",
        float,
        DEFAULT_LOCK_TIMEOUT_S,
        "a range's COPY waiting longer for its table lock (behind DDL) fails and is retried; "
        "0 waits as long as it takes",
        WRITES,
    ),
    Option(
        "target_timeout_seconds",
        float,
        DEFAULT_CALL_TIMEOUT_S,
        "a call to MongoDB (an insert batch, a count, the rename, a job document write) that "
        "takes longer fails with a message naming it; 0 waits as long as it takes",
        TARGETS,
    ),
    Option(
        "long_timeout_seconds",
        float,
        DEFAULT_LONG_TIMEOUT_S,
        "the bound for MongoDB calls whose work grows with the data: index builds on the temp "
        "collection, checksum reads and counts of whole collections; 0 waits as long as it takes",
        WRITES,
    ),
    Option(
        "oversize",
        str,
        "fail",
        "documents over 16 MiB: fail the run, or skip them (recorded in the job document)",
        WRITES,
        choices=("fail", "skip"),
    ),
    Option(
        "follow",
        bool,
        False,
        "with --slot: after the copy, apply the changes made meanwhile to the temp collection, "
        "swap once it is caught up (--swap-lag-seconds), then keep following the target",
        frozenset({COPY}),
    ),
    Option(
        "swap_lag_seconds",
        float,
        5.0,
        "copy --follow: swap once the temp collection has reached the server's WAL position, or "
        "is at most this many seconds behind the table",
        frozenset({COPY}),
    ),
    Option(
        "catch_up_timeout_seconds",
        float,
        3600.0,
        "copy --follow: fail (target unchanged) when the catch-up has not got within "
        "--swap-lag-seconds after this many seconds (writers faster than the apply); 0: no bound",
        frozenset({COPY}),
    ),
    Option(
        "stop_at_end",
        bool,
        False,
        "follow: apply the changes up to the WAL position current at the start, then exit; "
        "copy --follow: exit once the swap is done and the WAL written until then is applied",
        frozenset({COPY, FOLLOW}),
    ),
    Option(
        "idle_exit",
        float,
        None,
        "follow (and copy --follow, after the swap): exit when no change came for this many "
        "seconds",
        frozenset({COPY, FOLLOW}),
    ),
    Option(
        "max_retained_wal_mb",
        float,
        1024.0,
        "warn when the slot keeps more WAL than this many MB on the source (follow is behind "
        "or was stopped: the source cannot remove that WAL)",
        frozenset({COPY, FOLLOW}),
    ),
)

BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def options_for(command: str) -> tuple[Option, ...]:
    return tuple(o for o in OPTIONS if command in o.commands)


def required_for(command: str) -> tuple[Option, ...]:
    return tuple(o for o in OPTIONS if command in o.required)


# The commands that take options from this table, in the order `config show --for` and the docs
# list them; a command added to some option's `commands` joins at the end by itself.
_ORDER = (COPY, PLAN, VERIFY, STATUS, SLOT)
COMMANDS_WITH_OPTIONS = _ORDER + tuple(
    sorted({c for o in OPTIONS for c in o.commands} - set(_ORDER))
)

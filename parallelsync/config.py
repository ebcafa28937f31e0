"""One frozen job configuration, built from command line > environment > config file > defaults.

Every option has an environment variable `PARALLELSYNC_<NAME>` and a key in the TOML config file
(`--config FILE`, top-level keys or a `[copy]` table). `SLOTNAME` is also read for `--slot`, as the
old script did. The file may also hold a `[mapping]` table (columns -> document fields; file only,
see mapping_config.py and docs/mapping.md).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from parallelsync.errors import UsageError
from parallelsync.mapping_config import MappingConfig, parse_mapping

# Batches bounded by rows and bytes: 10k rows or 8 MiB of COPY data, whichever comes first, keeps
# per-worker memory flat (a few batches in flight) while amortising per-batch overhead. Measured
# on the 9-column bench table (1 worker, medians of 3 interleaved runs): 2k, 5k and 10k rows are
# within 5 % of each other to null: and to the wire sink, 50k is ~10 % slower; 10k keeps the
# round trips few on networks with real latency.
DEFAULT_BATCH_ROWS = 10_000
DEFAULT_BATCH_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Option:
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()


def _bool(v: str | bool) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {v!r}")


COPY_OPTIONS: tuple[Option, ...] = (
    Option(
        "source",
        str,
        None,
        "PostgreSQL DSN (URI or key=value); the password may come from PGPASSWORD or ~/.pgpass",
    ),
    Option("table", str, None, "source table as [schema.]table; quote mixed case: '\"Orders\"'"),
    Option(
        "target",
        str,
        None,
        "MongoDB URI; file:DIR writes DIR/<collection>.bson (mongorestore format); "
        "null: discards documents (benchmarks)",
    ),
    Option("db", str, None, "target database"),
    Option("collection", str, None, "target collection (default: the table name)"),
    Option("workers", int, 2, "worker processes"),
    Option("where", str, None, "SQL predicate to copy part of the table (trusted operator input)"),
    Option(
        "slot",
        str,
        None,
        "create this logical replication slot and record its consistent LSN",
        env=("SLOTNAME",),
    ),
    Option(
        "stats_collection",
        str,
        "parallelsync_jobs",
        "collection for job statistics in the target database",
    ),
    Option("key", str, None, "comma-separated unique columns to use instead of the primary key"),
    Option(
        "ranges_per_worker", int, 4, "ranges planned per worker (more ranges balance skew better)"
    ),
    Option("batch_rows", int, DEFAULT_BATCH_ROWS, "max documents per insert batch"),
    Option("batch_bytes", int, DEFAULT_BATCH_BYTES, "max COPY bytes per batch"),
    Option(
        "nulls", str, "null", "NULL columns become null, or are omitted", choices=("null", "omit")
    ),
    Option(
        "uuid",
        str,
        "binary",
        "uuid as BSON binary subtype 4 or as a string",
        choices=("binary", "string"),
    ),
    Option(
        "numeric",
        str,
        "string",
        "numeric values beyond Decimal128's 34 digits",
        choices=("string", "double", "decimal"),
    ),
    Option(
        "infinity",
        str,
        "clamp",
        "±infinity dates/timestamps",
        choices=("clamp", "null", "string", "error"),
    ),
    Option(
        "json_keys",
        str,
        "keep",
        "json keys starting with $ or containing .",
        choices=("keep", "replace", "error"),
    ),
    Option(
        "verify",
        str,
        "count",
        "before the swap: per-range row counts, or counts and content checksums",
        choices=("count", "checksum"),
    ),
    Option("resume", str, None, "continue a copy whose coordinator died: a job id, or 'last'"),
    Option(
        "changed_rows_collection",
        str,
        None,
        "with --slot: after the swap, write one document per row changed during the copy into "
        "this collection (downstream refresh jobs)",
    ),
    Option(
        "progress_seconds",
        float,
        5.0,
        "seconds between progress lines when stderr is not a terminal",
    ),
    Option(
        "max_attempts",
        int,
        3,
        "attempts per range on transient errors (lost connection, dead worker) before failing",
    ),
    Option(
        "oversize",
        str,
        "fail",
        "documents over 16 MiB: fail the run, or skip them (recorded in the job document)",
        choices=("fail", "skip"),
    ),
)


@dataclass(frozen=True)
class CopyConfig:
    source: str
    table: str
    target: str
    db: str
    collection: str
    workers: int
    where: str | None
    slot: str | None
    stats_collection: str
    key: tuple[str, ...] | None
    ranges_per_worker: int
    batch_rows: int
    batch_bytes: int
    nulls: str
    uuid: str
    numeric: str
    infinity: str
    json_keys: str
    progress_seconds: float
    verify: str = "count"
    resume: str | None = None
    changed_rows_collection: str | None = None
    oversize: str = "fail"
    max_attempts: int = 3
    # The `[mapping]` table of the config file (file only: it is structured).
    mapping: MappingConfig = field(default_factory=MappingConfig)

    @property
    def null_target(self) -> bool:
        return self.target.startswith("null:")

    @property
    def file_target(self) -> bool:
        return self.target.startswith("file:")


def load_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    section = data.get("copy")
    if isinstance(section, dict):
        data = {**{k: v for k, v in data.items() if k != "copy"}, **section}
    return data


def merge(
    options: tuple[Option, ...],
    cli: Mapping[str, Any],
    env: Mapping[str, str],
    file: Mapping[str, Any],
) -> dict[str, Any]:
    known = {o.name for o in options}
    unknown = sorted(set(file) - known)
    if unknown:
        raise UsageError(
            f"unsupported config key(s): {', '.join(unknown)}; "
            f"supported: {', '.join(sorted(known))}"
        )
    out: dict[str, Any] = {}
    for opt in options:
        value: Any = cli.get(opt.name)
        origin = f"--{opt.name.replace('_', '-')}"
        if value is None:
            for var in (f"PARALLELSYNC_{opt.name.upper()}", *opt.env):
                if env.get(var):
                    value, origin = env[var], f"environment variable {var}"
                    break
        if value is None and opt.name in file:
            value, origin = file[opt.name], f"config key {opt.name!r}"
        if value is None:
            out[opt.name] = opt.default
            continue
        try:
            value = _bool(value) if opt.type is bool else opt.type(value)
        except (TypeError, ValueError):
            raise UsageError(f"{origin}: {value!r} is not a valid {opt.type.__name__}") from None
        if opt.choices and value not in opt.choices:
            raise UsageError(f"{origin}: {value!r} is not one of {', '.join(opt.choices)}")
        out[opt.name] = value
    return out


def build_copy_config(cli: Mapping[str, Any], env: Mapping[str, str] | None = None) -> CopyConfig:
    env = os.environ if env is None else env
    file = load_file(cli.get("config"))
    mapping = parse_mapping(file.pop("mapping", None))
    values = merge(COPY_OPTIONS, cli, env, file)
    values["mapping"] = mapping
    for required in ("source", "table", "target"):
        if not values[required]:
            raise UsageError(
                f"--{required} is required "
                f"(or PARALLELSYNC_{required.upper()} / config key {required!r})"
            )
    if not values["db"] and not str(values["target"]).startswith(("null:", "file:")):
        raise UsageError("--db is required: the target database name")
    if values["workers"] < 1:
        raise UsageError(f"--workers must be at least 1, got {values['workers']}")
    if values["max_attempts"] < 1:
        raise UsageError(f"--max-attempts must be at least 1, got {values['max_attempts']}")
    if values["ranges_per_worker"] < 1:
        raise UsageError("--ranges-per-worker must be at least 1")
    if values["batch_rows"] < 1 or values["batch_bytes"] < 1024:
        raise UsageError("--batch-rows must be >= 1 and --batch-bytes >= 1024")
    key = values["key"]
    values["key"] = tuple(k.strip() for k in key.split(",") if k.strip()) if key else None
    values["db"] = values["db"] or "null"
    if not values["collection"]:
        table = str(values["table"]).split(".")[-1].strip('"')
        values["collection"] = table
    names = {f.name for f in fields(CopyConfig)}
    return CopyConfig(**{k: v for k, v in values.items() if k in names})

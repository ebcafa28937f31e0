"""One frozen job configuration, built from command line > environment > config file > defaults.

Every option has an environment variable `PARALLELSYNC_<NAME>` and a key in the TOML config file
(`--config FILE`, top-level keys or a `[copy]` table). `SLOTNAME` is also read for `--slot`, as the
old script did. The file may also hold a `[mapping]` table (columns -> document fields; file only,
see mapping/config.py and docs/mapping.md).
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from parallelsync.config.options import (
    BY_NAME,
    COPY,
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    DEFAULT_STALL_S,
    OPTIONS,
    Option,
    options_for,
    required_for,
)
from parallelsync.errors import UsageError
from parallelsync.mapping.config import MappingConfig, parse_mapping
from parallelsync.source.locks import DEFAULT_LOCK_TIMEOUT_S
from parallelsync.source.names import split_qualified
from parallelsync.targets import kind_of
from parallelsync.targets.timeouts import DEFAULT_CALL_TIMEOUT_S, DEFAULT_LONG_TIMEOUT_S
from parallelsync.targets.uri import uri_database

# Environment variables of ours that are not options: the config file, and knobs of the tests,
# benchmarks and demo (never needed in production, but not typos either).
OTHER_VARIABLES = frozenset(
    {"PARALLELSYNC_CONFIG", "PARALLELSYNC_PG_BIN", "PARALLELSYNC_IMPL", "PARALLELSYNC_COPY_READER"}
)
OTHER_PREFIXES = ("PARALLELSYNC_TEST_", "PARALLELSYNC_BENCH_", "PARALLELSYNC_DEMO_")


@dataclass(frozen=True)
class CopyConfig:
    """Everything a copy, plan or verify needs; options a command does not take keep defaults."""

    source: str
    table: str
    target: str = "null:"
    db: str = ""
    collection: str = ""
    workers: int = 2
    executor: str = "local"  # copy: "local" processes or "dask" tasks (workers/dask_pool.py)
    scheduler: str | None = None  # --executor dask: the scheduler's address (None: a LocalCluster)
    where: str | None = None
    slot: str | None = None
    publication: str | None = None  # copy --slot and follow
    stats_collection: str = "parallelsync_jobs"
    key: tuple[str, ...] | None = None
    include_children: bool = False
    allow_foreign_table: bool = False
    ranges_per_worker: int = 4
    batch_rows: int = DEFAULT_BATCH_ROWS
    batch_bytes: int = DEFAULT_BATCH_BYTES
    nulls: str = "null"
    uuid: str = "binary"
    numeric: str = "string"
    infinity: str = "clamp"
    json_keys: str = "keep"
    array_bounds: str = "drop"
    progress_seconds: float = 5.0
    quiet: bool = False
    verbose: bool = False
    log_format: str = "text"
    verify: str = "count"
    resume: str | None = None
    changed_rows_collection: str | None = None
    oversize: str = "fail"
    max_attempts: int = 3
    allow_empty: bool = False
    require_snapshot_consistency: bool = False
    stall_seconds: float = DEFAULT_STALL_S
    lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_S
    stop_at_end: bool = False  # follow, copy --follow
    idle_exit: float | None = None  # follow, copy --follow
    max_retained_wal_mb: float = 1024.0  # follow, copy --follow
    follow: bool = False  # copy
    swap_lag_seconds: float = 5.0  # copy --follow
    catch_up_timeout_seconds: float = 3600.0  # copy --follow
    target_timeout_seconds: float = DEFAULT_CALL_TIMEOUT_S
    long_timeout_seconds: float = DEFAULT_LONG_TIMEOUT_S
    # The `[mapping]` table of the config file (file only: it is structured).
    mapping: MappingConfig = field(default_factory=MappingConfig)
    command: str = COPY


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


def _bool(v: str | bool) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {v!r}")


def check_file_keys(file: Mapping[str, Any]) -> None:
    """A config file may hold the keys of every subcommand, but no key that none knows."""
    unknown = sorted(set(file) - set(BY_NAME) - {"mapping"})
    if unknown:
        raise UsageError(
            f"unsupported config key(s): {', '.join(unknown)}; "
            f"supported: {', '.join(sorted(BY_NAME))}"
        )


def _file_value(opt: Option, value: Any) -> Any:
    """A TOML value as the option's text form; a value of the wrong TOML type is refused.

    `workers = 2.5` or `workers = true` must not quietly become 2 or 1; a list of names is
    how TOML writes a list (`key = ["a", "b"]`)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and opt.name == "key":
        return ",".join(value)
    if opt.type is bool:
        if isinstance(value, bool | str):
            return value
        raise UsageError(f"config key {opt.name!r}: {value!r} is not true or false")
    ok = (str,) if opt.type is str else (str, int) if opt.type is int else (str, int, float)
    if isinstance(value, bool) or not isinstance(value, ok):
        raise UsageError(f"config key {opt.name!r}: {value!r} is not a valid {opt.type.__name__}")
    return value


@dataclass(frozen=True)
class Origin:
    """Where an option's value came from: `kind` is flag, env, file or default."""

    kind: str
    detail: str  # the flag, the variable, the config key; "" for a default

    def describe(self) -> str:
        if self.kind == "env":
            return f"environment variable {self.detail}"
        if self.kind == "file":
            return f"config key {self.detail!r}"
        return self.detail or "default"


def resolve(
    options: tuple[Option, ...],
    cli: Mapping[str, Any],
    env: Mapping[str, str],
    file: Mapping[str, Any],
) -> dict[str, tuple[Any, Origin]]:
    """Each option's value by precedence (flag > environment > config file > default), with
    where it came from; a value that does not parse is refused naming its origin."""
    out: dict[str, tuple[Any, Origin]] = {}
    for opt in options:
        value: Any = cli.get(opt.name)
        origin = Origin("flag", opt.flag)
        if value is None:
            for var in opt.env_vars:
                if env.get(var):
                    value, origin = env[var], Origin("env", var)
                    break
        if value is None and opt.name in file:
            value, origin = _file_value(opt, file[opt.name]), Origin("file", opt.name)
        if value is None:
            out[opt.name] = (opt.default, Origin("default", ""))
            continue
        where = origin.describe()
        try:
            value = _bool(value) if opt.type is bool else opt.type(value)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: {value!r} is not a valid {opt.type.__name__}") from None
        if opt.choices and value not in opt.choices:
            raise UsageError(f"{where}: {value!r} is not one of {', '.join(opt.choices)}")
        out[opt.name] = (value, origin)
    return out


def merge(
    options: tuple[Option, ...],
    cli: Mapping[str, Any],
    env: Mapping[str, str],
    file: Mapping[str, Any],
) -> dict[str, Any]:
    """Each option's value by precedence: flag > environment > config file > default."""
    return {name: value for name, (value, _) in resolve(options, cli, env, file).items()}


def _require(values: Mapping[str, Any], name: str, what: str = "") -> None:
    if not values.get(name):
        opt = BY_NAME[name]
        raise UsageError(
            f"{opt.flag} is required{what} (or {opt.env_vars[0]} / config key {name!r})"
        )


def default_collection(table: str) -> str:
    """The collection a table goes to by default: the table's own name, unquoted."""
    return split_qualified(table)[1]


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """Warnings for `PARALLELSYNC_*` variables that no option reads (a typo would otherwise be
    ignored in silence), each naming the closest option."""
    known = {var for opt in OPTIONS for var in opt.env_vars if var.startswith("PARALLELSYNC_")}
    out = []
    for var in sorted(env):
        if not var.startswith("PARALLELSYNC_") or var in known or var in OTHER_VARIABLES:
            continue
        if var.startswith(OTHER_PREFIXES):
            continue
        # Compare what follows the common prefix, which would make every name look close.
        names = sorted(v.removeprefix("PARALLELSYNC_") for v in known)
        close = difflib.get_close_matches(var.removeprefix("PARALLELSYNC_"), names, n=1)
        hint = ""
        if close:
            hint = f" (did you mean PARALLELSYNC_{close[0]}, for {BY_NAME[close[0].lower()].flag}?)"
        out.append(f"unknown environment variable {var} is ignored{hint}")
    return out


def build_config(
    command: str, cli: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> CopyConfig:
    """The configuration of `command` (copy, plan or verify) from flags, environment and file."""
    env = os.environ if env is None else env
    file = load_file(cli.get("config"))
    check_file_keys(file)
    mapping = parse_mapping(file.pop("mapping", None))
    values = merge(options_for(command), cli, env, file)
    for opt in required_for(command):
        _require(values, opt.name)
    target = values.get("target")
    if target and not values["db"] and kind_of(str(target)) == "mongodb":
        values["db"] = uri_database(str(target))  # mongodb://host/shop
    if values.get("workers", 1) < 1:
        raise UsageError(f"--workers must be at least 1, got {values['workers']}")
    if values.get("scheduler") and values.get("executor") != "dask":
        raise UsageError("--scheduler is for --executor dask: add --executor dask, or drop it")
    if values.get("scheduler") and target and kind_of(str(target)) == "file":
        raise UsageError(
            "a file: target cannot be written by a remote Dask cluster: each worker host would "
            "write its own files; use a MongoDB target, or --executor dask without --scheduler"
        )
    if values.get("max_attempts", 1) < 1:
        raise UsageError(f"--max-attempts must be at least 1, got {values['max_attempts']}")
    for name in (
        "stall_seconds", "lock_timeout_seconds", "progress_seconds", "target_timeout_seconds",
        "long_timeout_seconds",
    ):  # fmt: skip
        if not math.isfinite(values.get(name, 0)) or values.get(name, 0) < 0:
            raise UsageError(
                f"{BY_NAME[name].flag} must be 0 (off) or more seconds, got {values[name]}"
            )
    if values.get("ranges_per_worker", 1) < 1:
        raise UsageError("--ranges-per-worker must be at least 1")
    if values.get("batch_rows", 1) < 1 or values.get("batch_bytes", 1024) < 1024:
        raise UsageError("--batch-rows must be >= 1 and --batch-bytes >= 1024")
    key = values.get("key")
    values["key"] = tuple(k.strip() for k in key.split(",") if k.strip()) if key else None
    values["db"] = values.get("db") or ""
    if values.get("collection") is None:
        values["collection"] = default_collection(str(values["table"]))
    elif not values["collection"]:
        # Given but empty (`--collection ""`): not the default in disguise, a name MongoDB refuses.
        raise UsageError("--collection is empty: a MongoDB collection needs a name")
    values["mapping"] = mapping
    values["command"] = command
    names = {f.name for f in fields(CopyConfig)}
    return CopyConfig(**{k: v for k, v in values.items() if k in names})


def build_copy_config(cli: Mapping[str, Any], env: Mapping[str, str] | None = None) -> CopyConfig:
    return build_config(COPY, cli, env)


__all__ = [
    "OPTIONS",
    "CopyConfig",
    "Origin",
    "build_config",
    "build_copy_config",
    "load_file",
    "merge",
    "resolve",
]

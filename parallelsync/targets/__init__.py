"""Where documents go. The only place that tells the target kinds apart:

- `null:` discards documents (benchmarks; `verify` reads the source this way),
- `file:DIR` writes `DIR/<collection>.bson` for mongorestore,
- anything else is a MongoDB URI.
"""

from __future__ import annotations

from parallelsync.errors import UsageError
from parallelsync.targets.base import (
    DEFAULT_STATS_COLLECTION,
    LOCK_COLLECTION,
    TEMP_MARKER,
    Sink,
    SinkSpec,
    Target,
)
from parallelsync.targets.names import check_collection_name, check_db_name, check_file_name
from parallelsync.targets.timeouts import DEFAULT_CALL_TIMEOUT_S, DEFAULT_LONG_TIMEOUT_S


def kind_of(uri: str) -> str:
    if uri.startswith("null:"):
        return "null"
    if uri.startswith("file:"):
        return "file"
    return "mongodb"


def check_target(
    uri: str,
    db: str | None,
    *,
    collection: str = "",
    stats_collection: str = DEFAULT_STATS_COLLECTION,
    changed_rows_collection: str | None = None,
) -> None:
    """What can be checked about the target without connecting (before anything runs).

    In MongoDB the tool's own collections share the target database, so a run must never write
    into them: a target named like the lease collection would replace every target's lease, one
    named like the job history would replace it, and temp-marked names are dropped as dead jobs'
    leftovers by the next run."""
    if kind_of(uri) == "file":
        check_file_name(collection)
    if kind_of(uri) != "mongodb":
        return
    check_db_name(db or "")
    assert db
    # The target's collection also gets a temp collection with a longer name; the others do not.
    check_collection_name("--collection", collection, db, temp=True)
    names = [("--collection", collection), ("--stats-collection", stats_collection)]
    if changed_rows_collection is not None:
        names.append(("--changed-rows-collection", changed_rows_collection))
    for flag, name in names:
        check_collection_name(flag, name, db)
        _check_name(flag, name)
    jobs_names = {stats_collection, DEFAULT_STATS_COLLECTION}
    if collection in jobs_names:
        raise UsageError(
            f"--collection {collection} is where parallelsync keeps its job documents "
            f"(--stats-collection); choose another --collection"
        )
    if changed_rows_collection is None:
        return
    if changed_rows_collection == collection:
        raise UsageError(
            f"--changed-rows-collection {collection} is the target collection: the change "
            "documents would land among the copied rows; choose another --changed-rows-collection"
        )
    if changed_rows_collection in jobs_names:
        raise UsageError(
            f"--changed-rows-collection {changed_rows_collection} is where parallelsync keeps "
            "its job documents; choose another --changed-rows-collection"
        )


def _check_name(flag: str, name: str) -> None:
    if name == LOCK_COLLECTION:
        raise UsageError(
            f"{flag} {name} is where parallelsync keeps its target leases (every run's lock); "
            f"choose another {flag}"
        )
    if TEMP_MARKER in name:
        raise UsageError(
            f"{flag} {name} contains {TEMP_MARKER!r}, which marks parallelsync's temp "
            f"collections (a later run would drop it as a dead job's leftover); choose another "
            f"{flag}"
        )


def open_target(
    uri: str,
    *,
    db: str,
    collection: str,
    stats_collection: str,
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    long_timeout_s: float = DEFAULT_LONG_TIMEOUT_S,
) -> Target:
    """The coordinator's handle on the target (MongoDB: connected and pinged)."""
    kind = kind_of(uri)
    if kind == "null":
        from parallelsync.targets.null import NullTarget

        return NullTarget(collection)
    if kind == "file":
        from parallelsync.targets.file import FileTarget

        return FileTarget(uri, collection)
    from parallelsync.targets.mongodb.target import MongoTarget

    return MongoTarget(
        uri, db, collection, stats_collection, timeout_s=timeout_s, long_timeout_s=long_timeout_s
    )


def open_sink(spec: SinkSpec) -> Sink:
    """A worker's sink for the temp collection the spec names (its own clients)."""
    if spec.kind == "null":
        from parallelsync.targets.null import NullSink

        return NullSink()
    if spec.kind == "file":
        from pathlib import Path

        from parallelsync.targets.file import FileSink, temp_dir

        return FileSink(temp_dir(Path(spec.uri), spec.temp))
    from parallelsync.targets.mongodb.client import call_bound, connect
    from parallelsync.targets.mongodb.sink import MongoSink

    client = connect(spec.uri, call_timeout_s=spec.timeout_s)
    return MongoSink(client, spec.db, spec.temp, flag=call_bound(spec.uri, spec.timeout_s)[1])


__all__ = ["Sink", "SinkSpec", "Target", "check_target", "kind_of", "open_sink", "open_target"]

"""Where documents go. The only place that tells the target kinds apart:

- `null:` discards documents (benchmarks; `verify` reads the source this way),
- `file:DIR` writes `DIR/<collection>.bson` for mongorestore,
- anything else is a MongoDB URI.
"""

from __future__ import annotations

from parallelsync.errors import UsageError
from parallelsync.targets.base import Sink, SinkSpec, Target


def kind_of(uri: str) -> str:
    if uri.startswith("null:"):
        return "null"
    if uri.startswith("file:"):
        return "file"
    return "mongodb"


def check_target(uri: str, db: str | None) -> None:
    """What can be checked about the target without connecting (before anything runs)."""
    if kind_of(uri) == "mongodb" and not db:
        raise UsageError("--db is required: the target database name")


def open_target(uri: str, *, db: str, collection: str, stats_collection: str) -> Target:
    """The coordinator's handle on the target (MongoDB: connected and pinged)."""
    kind = kind_of(uri)
    if kind == "null":
        from parallelsync.targets.null import NullTarget

        return NullTarget(collection)
    if kind == "file":
        from parallelsync.targets.file import FileTarget

        return FileTarget(uri, collection)
    from parallelsync.targets.mongodb.target import MongoTarget

    return MongoTarget(uri, db, collection, stats_collection)


def open_sink(spec: SinkSpec) -> Sink:
    """A worker's sink for the temp collection the spec names (its own clients)."""
    if spec.kind == "null":
        from parallelsync.targets.null import NullSink

        return NullSink()
    if spec.kind == "file":
        from pathlib import Path

        from parallelsync.targets.file import FileSink, temp_dir

        return FileSink(temp_dir(Path(spec.uri), spec.temp))
    from parallelsync.targets.mongodb.client import connect
    from parallelsync.targets.mongodb.sink import MongoSink

    return MongoSink(connect(spec.uri), spec.db, spec.temp)


__all__ = ["Sink", "SinkSpec", "Target", "check_target", "kind_of", "open_sink", "open_target"]

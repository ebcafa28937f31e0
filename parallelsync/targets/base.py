"""What the job needs from the place documents go: the `Target` and `Sink` protocols.

A `Target` lives in the coordinator: it takes the one-run-per-target lock, keeps job documents,
prepares the temp collection (or temp file), counts and digests what the workers wrote, swaps the
result in, or discards it. A `Sink` lives in a worker process and receives encoded batches; the
worker opens it from a picklable `SinkSpec`, because clients must never cross a fork.

`targets/__init__.py` is the only place that tells the kinds (null, file, MongoDB) apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from parallelsync.errors import UsageError
from parallelsync.transcode.batch import EncodedBatch
from parallelsync.transcode.checksum import Digest

TargetKind = Literal["null", "file", "mongodb"]
# A MongoDB filter on `_id` that selects one range ({} = everything).
IdFilter = dict[str, Any]
Log = Callable[[str], None]
# Temp collections (and the file target's temp parts) are named `<collection>__psync_tmp_<job>`:
# a run that holds the target's lock knows every other name with this prefix is a dead job's.
TEMP_MARKER = "__psync_tmp_"
# Length of a job id (job/state.py `new_job_id`: `20260101T120000_a1b2c3`): the temp name's
# suffix, which must fit in MongoDB's namespace limit with the target's name (targets/names.py).
JOB_ID_LENGTH = 22
# The tool's own collections in the target database: one lease per target (every run's lock) and
# the default home of job documents. Neither may ever be a run's target.
LOCK_COLLECTION = "parallelsync_locks"
DEFAULT_STATS_COLLECTION = "parallelsync_jobs"


def temp_name(collection: str, job_id: str) -> str:
    return f"{collection}{TEMP_MARKER}{job_id}"


@dataclass(frozen=True)
class SinkSpec:
    """Everything a worker needs to open its own sink: no clients, only names (picklable)."""

    kind: TargetKind
    uri: str  # MongoDB URI, or the file target's directory
    db: str
    temp: str  # the temp collection (or the file target's temp name)
    timeout_s: float = 0.0  # MongoDB: the bound of every call (--target-timeout-seconds)


class Sink(Protocol):
    def begin_range(self, range_id: int) -> None: ...
    def end_range(self) -> None: ...
    def insert(self, batch: EncodedBatch, *, allow_duplicates: bool) -> int: ...
    def close(self) -> None: ...


class JobStore(Protocol):
    """The job documents of a target (a null store where the target keeps none)."""

    def create(self, doc: dict[str, Any]) -> bool: ...
    def update(self, fields: dict[str, Any]) -> bool: ...
    def finish(self, status: str, fields: dict[str, Any]) -> bool: ...


class NullJobs:
    def create(self, doc: dict[str, Any]) -> bool:
        return True

    def update(self, fields: dict[str, Any]) -> bool:
        return True

    def finish(self, status: str, fields: dict[str, Any]) -> bool:
        return True


class Target(Protocol):
    kind: TargetKind
    display: str  # what messages and the summary call the final target
    resumable: bool  # keeps job documents and temp collections that a resume can use

    @property
    def lease_lost(self) -> bool: ...
    def lock(self, job_id: str, *, resume: bool) -> None: ...
    def unlock(self) -> None: ...
    def jobs(self, job_id: str) -> JobStore: ...
    def find_job(self, spec: str) -> dict[str, Any]: ...
    def remove_leftovers(self, keep: str, job_id: str, log: Log) -> None: ...
    def prepare(self, temp: str) -> None: ...
    def exists(self, name: str) -> bool: ...
    def sink_spec(self, temp: str) -> SinkSpec: ...
    def count(self, name: str, id_filter: IdFilter | None = None) -> int | None: ...
    def final_count(self) -> int | None: ...
    def digest(self, name: str, id_filter: IdFilter) -> Digest: ...
    def hashes(self, name: str, id_filter: IdFilter, limit: int) -> dict[Any, int] | None: ...
    def clear(self, temp: str, id_filter: IdFilter) -> None: ...
    def replace(self, temp: str, ids: list[Any], docs: list[bytes]) -> int: ...
    def add_documents(self, collection: str, docs: list[dict[str, Any]]) -> None: ...
    def seal(self, temp: str) -> None: ...
    def swap(self, temp: str, log: Log) -> str: ...
    def discard(self, temp: str) -> None: ...
    def close(self) -> None: ...


class BaseTarget:
    """Defaults for targets without job documents, leases or server-side reads."""

    kind: TargetKind
    display = ""
    resumable = False

    @property
    def lease_lost(self) -> bool:
        return False

    def lock(self, job_id: str, *, resume: bool) -> None:
        pass

    def unlock(self) -> None:
        pass

    def jobs(self, job_id: str) -> JobStore:
        return NullJobs()

    def find_job(self, spec: str) -> dict[str, Any]:
        raise UsageError(
            f"--resume needs a MongoDB target (job documents and temp collections live there); "
            f"{self.kind}: targets keep neither"
        )

    def remove_leftovers(self, keep: str, job_id: str, log: Log) -> None:
        pass

    def prepare(self, temp: str) -> None:
        pass

    def exists(self, name: str) -> bool:
        return False

    def count(self, name: str, id_filter: IdFilter | None = None) -> int | None:
        return None  # cannot be counted: the count check is skipped

    def final_count(self) -> int | None:
        """Documents the final target holds now (None: nothing to lose, as null:)."""
        return None

    def digest(self, name: str, id_filter: IdFilter) -> Digest:
        raise UsageError(f"content checksums need a MongoDB target, not {self.kind}:")

    def hashes(self, name: str, id_filter: IdFilter, limit: int) -> dict[Any, int] | None:
        raise UsageError(f"content checksums need a MongoDB target, not {self.kind}:")

    def clear(self, temp: str, id_filter: IdFilter) -> None:
        pass

    def replace(self, temp: str, ids: list[Any], docs: list[bytes]) -> int:
        raise UsageError(f"{self.kind}: targets cannot rewrite documents")

    def add_documents(self, collection: str, docs: list[dict[str, Any]]) -> None:
        raise UsageError(f"{self.kind}: targets cannot hold other collections")

    def seal(self, temp: str) -> None:
        pass

    def swap(self, temp: str, log: Log) -> str:
        """Replace the target with `temp`; returns a note when the outcome had to be checked."""
        return ""

    def discard(self, temp: str) -> None:
        pass

    def close(self) -> None:
        pass

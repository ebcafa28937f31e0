"""The follow checkpoint: one document per followed target in the stats collection.

`{_id: "follow:<db>.<collection>", slot, copy_job, applied_lsn, applied_lsn_int, transactions,
changes, changes_per_second, server_lsn, lag_bytes, lag_seconds, retained_wal_bytes, state,
error, last_error, updated_at, ...}` (the counts are the current run's; `last_error` is kept
across runs: the latest failure, with its time and job id). `applied_lsn` is the commit end
LSN of the last transaction whose writes MongoDB acknowledged (or an idle keepalive position):
everything before it is in the collection. Unlike job statistics, a checkpoint write that
fails stops the run: the server must never be told a position MongoDB does not hold.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from bson.int64 import Int64
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from parallelsync.errors import TargetError


def state_id(db: str, collection: str) -> str:
    return f"follow:{db}.{collection}"


class FollowState:
    durable = True  # a checkpoint stored here is confirmed to the server (job/follow_loop.py)

    def __init__(self, stats: Collection[Any], db: str, collection: str) -> None:
        self._coll = stats
        self.id = state_id(db, collection)

    def load(self) -> dict[str, Any] | None:
        doc = self._coll.find_one({"_id": self.id})
        return None if doc is None else dict(doc)

    def start(self, fields: dict[str, Any]) -> None:
        self._write({"state": "RUNNING", "started_at": _now(), **fields}, upsert=True)

    def store(self, lsn: str, lsn_int: int, fields: dict[str, Any]) -> None:
        """The checkpoint: raises when MongoDB did not acknowledge it."""
        self._write(
            {"applied_lsn": lsn, "applied_lsn_int": Int64(lsn_int), "updated_at": _now(), **fields}
        )

    def note(self, fields: dict[str, Any]) -> None:
        """Statistics between checkpoints: a failed write loses only them (the next checkpoint
        fails loudly if MongoDB is gone)."""
        with contextlib.suppress(TargetError):
            self._write({"updated_at": _now(), **fields})

    def finish(self, state: str, fields: dict[str, Any]) -> None:
        self._write({"state": state, "finished_at": _now(), **fields})

    def _write(self, fields: dict[str, Any], *, upsert: bool = False) -> None:
        try:
            self._coll.update_one({"_id": self.id}, {"$set": fields}, upsert=upsert)
        except PyMongoError as exc:
            raise TargetError(
                f"cannot store the follow checkpoint in {self._coll.name}: {exc}"
            ) from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def latest_copy(
    stats: Collection[Any], db: str, collection: str, slot: str
) -> dict[str, Any] | None:
    """The newest finished copy into this target that made `slot` (its consistent LSN)."""
    doc = stats.find_one(
        {"target.db": db, "target.collection": collection, "status": "FINISHED",
         "snapshot.slot": slot},
        sort=[("started_at", -1)],
    )  # fmt: skip
    return None if doc is None else dict(doc)

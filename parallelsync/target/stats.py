"""The job document: one per run in the stats collection, updated while the run goes on."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import PyMongoError

RUNNING, FINISHED, FAILED, ABORTED = "RUNNING", "FINISHED", "FAILED", "ABORTED"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class JobStats:
    """Writes the job document. A failing stats write never fails the copy itself: it is logged
    by the caller through the returned flag, because statistics must not cost the user data."""

    def __init__(self, coll: Collection[Any] | None, job_id: str) -> None:
        self._coll = coll
        self.job_id = job_id

    def create(self, doc: dict[str, Any]) -> bool:
        if self._coll is None:
            return True
        doc = {"_id": self.job_id, "status": RUNNING, "started_at": utcnow(), **doc}
        try:
            self._coll.insert_one(doc)
            return True
        except PyMongoError:
            return False

    def update(self, fields: dict[str, Any]) -> bool:
        if self._coll is None:
            return True
        try:
            self._coll.update_one({"_id": self.job_id}, {"$set": fields})
            return True
        except PyMongoError:
            return False

    def finish(self, status: str, fields: dict[str, Any]) -> bool:
        now = utcnow()
        return self.update({"status": status, "finished_at": now, **fields})

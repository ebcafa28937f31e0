"""Job documents: one per run in the stats collection, updated while the run goes on."""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from parallelsync.errors import UsageError

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


def find_job(stats: Collection[Any], spec: str, db: str, collection: str) -> dict[str, Any]:
    """The job document `--resume spec` names (a job id, or `last` for this target's newest)."""
    if spec == "last":
        job = stats.find_one(
            {"target.db": db, "target.collection": collection}, sort=[("started_at", -1)]
        )
        if job is None:
            raise UsageError(f"--resume last: no earlier job for {db}.{collection} in {stats.name}")
    else:
        job = stats.find_one({"_id": spec})
        if job is None:
            raise UsageError(f"--resume {spec}: no such job in {db}.{stats.name}")
        if (job.get("target") or {}).get("collection") != collection:
            raise UsageError(
                f"job {spec} copied into {job['target'].get('collection')!r}, not {collection!r}"
            )
    status = job.get("status")
    if status == FINISHED:
        raise UsageError(f"job {job['_id']} already finished: there is nothing to resume")
    if status in (FAILED, ABORTED):
        raise UsageError(
            f"job {job['_id']} ended {status} and removed its temp collection: start a new copy"
        )
    if status != RUNNING:
        raise UsageError(f"job {job['_id']} has status {status!r} and cannot be resumed")
    return dict(job)


@dataclass(frozen=True)
class Abandoned:
    """A dead coordinator's job, and the replication slot it left on the source (if any)."""

    job_id: str
    slot: str | None
    publication: str | None


def mark_abandoned(
    stats: Collection[Any], db: str, collection: str, job_id: str
) -> list[Abandoned]:
    """Job documents of this target still saying RUNNING belong to dead coordinators (the caller
    holds the target's lease); their temp collections are gone, so they cannot be resumed. Their
    slots are not dropped here (the target knows no source): each is named in the job document
    (`abandoned_slot`) and returned for the caller to report."""
    found: list[Abandoned] = []
    with contextlib.suppress(PyMongoError):
        query = {
            "target.db": db,
            "target.collection": collection,
            "status": RUNNING,
            "_id": {"$ne": job_id},
        }
        for doc in stats.find(query, {"snapshot.slot": 1, "publication": 1}):
            slot = (doc.get("snapshot") or {}).get("slot")
            fields: dict[str, Any] = {
                "status": FAILED,
                "error": f"abandoned: its coordinator died; job {job_id} took over the target",
                "finished_at": utcnow(),
            }
            if slot:
                fields["abandoned_slot"] = slot
            res = stats.update_one({"_id": doc["_id"], "status": RUNNING}, {"$set": fields})
            if res.modified_count:
                found.append(Abandoned(str(doc["_id"]), slot, doc.get("publication")))
    return found

"""A MongoDB collection as a target: lease, job documents, temp collection, checks and swap."""

from __future__ import annotations

import contextlib
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from parallelsync.errors import SWAP_NOT_DONE, SwapFailed, TargetError
from parallelsync.targets.base import (
    LOCK_COLLECTION,
    TEMP_MARKER,
    IdFilter,
    JobStore,
    Log,
    SinkSpec,
    TargetKind,
)
from parallelsync.targets.mongodb import digest, jobs, swap
from parallelsync.targets.mongodb.client import bounded, call_bound, connect
from parallelsync.targets.mongodb.lease import Lease
from parallelsync.targets.timeouts import DEFAULT_CALL_TIMEOUT_S, DEFAULT_LONG_TIMEOUT_S
from parallelsync.transcode.checksum import Digest


class MongoTarget:
    kind: TargetKind = "mongodb"
    resumable = True

    def __init__(
        self,
        uri: str,
        db: str,
        collection: str,
        stats_collection: str,
        *,
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        long_timeout_s: float = DEFAULT_LONG_TIMEOUT_S,
    ) -> None:
        self.uri = uri
        self.collection = collection
        self.stats_collection = stats_collection
        self.display = f"{db}.{collection}"
        # Every call of this client waits at most timeout_s for its answer; calls whose work
        # grows with the data go through a second client with the long bound (`long_db`).
        self.timeout_s, self.long_timeout_s = timeout_s, long_timeout_s
        self.client: MongoClient[Any] = connect(uri, call_timeout_s=timeout_s)
        # What the messages quote: a socketTimeoutMS in the URI is the real bound.
        self.bound_s, self.bound_flag = call_bound(uri, timeout_s)
        self.db: Database[Any] = self.client[db]
        self._long: MongoClient[Any] | None = None
        self._lease: Lease | None = None
        self._before: swap.Identity | None = None

    @property
    def long_db(self) -> Database[Any]:
        """The database through a client whose calls may take --long-timeout-seconds (made on
        first use: most runs only need it for the final counts)."""
        if self._long is None:
            self._long = connect(self.uri, call_timeout_s=self.long_timeout_s)
        return self._long[self.db.name]

    def long(self, what: str) -> contextlib.AbstractContextManager[None]:
        return bounded(what, *call_bound(self.uri, self.long_timeout_s, "--long-timeout-seconds"))

    def call(self, what: str) -> contextlib.AbstractContextManager[None]:
        return bounded(what, self.bound_s, self.bound_flag)

    # ---------------------------------------------------------------- one run per target
    @property
    def lease_lost(self) -> bool:
        return self._lease is not None and self._lease.lost

    def lock(self, job_id: str, *, resume: bool, take_dead: bool = False) -> None:
        lease = Lease(self.db[LOCK_COLLECTION], self.display, job_id)
        try:
            lease.acquire(resume=resume, take_dead=take_dead)
        except PyMongoError as exc:
            raise TargetError(f"cannot take the target lease: {exc}") from None
        lease.start_heartbeat()
        self._lease = lease

    def unlock(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    # ---------------------------------------------------------------- job documents
    def jobs(self, job_id: str) -> JobStore:
        return jobs.JobStats(self.db[self.stats_collection], job_id)

    def find_job(self, spec: str) -> dict[str, Any]:
        return jobs.find_job(self.db[self.stats_collection], spec, self.db.name, self.collection)

    def remove_leftovers(self, keep: str, job_id: str, log: Log) -> None:
        # We hold the lease for this target, so any temp collection for it belongs to a dead job.
        prefix = self.collection + TEMP_MARKER
        with self.call(f"listing the collections of {self.db.name}"):
            names = self.db.list_collection_names()
        for name in names:
            if name.startswith(prefix) and name != keep:
                swap.drop_quietly(self.db, name)
                log(f"removed stale temp collection {name} left by an earlier run")
        stats = self.db[self.stats_collection]
        for dead in jobs.mark_abandoned(stats, self.db.name, self.collection, job_id):
            if dead.slot:
                also = f" and publication {dead.publication}" if dead.publication else ""
                log(
                    f"warning: job {dead.job_id} was abandoned (its coordinator died) and is "
                    f"marked FAILED; it left replication slot {dead.slot}{also} on the source, "
                    f"which keeps WAL until dropped: parallelsync slot drop {dead.slot} "
                    "--source DSN"
                )

    # ---------------------------------------------------------------- the temp collection
    def prepare(self, temp: str) -> None:
        try:
            self.db.create_collection(temp)
        except PyMongoError as exc:
            raise TargetError(f"cannot create the temp collection {temp}: {exc}") from None

    def exists(self, name: str) -> bool:
        with self.call(f"looking for collection {name}"):
            return name in self.db.list_collection_names(filter={"name": name})

    def sink_spec(self, temp: str) -> SinkSpec:
        return SinkSpec("mongodb", self.uri, self.db.name, temp, timeout_s=self.timeout_s)

    def count(self, name: str, id_filter: IdFilter | None = None) -> int | None:
        with self.long(f"counting the documents of {name}"):
            return int(self.long_db[name].count_documents(id_filter or {}))

    def final_count(self) -> int | None:
        with self.call(f"counting the documents of {self.display}"):
            return int(self.db[self.collection].estimated_document_count())

    def digest(self, name: str, id_filter: IdFilter) -> Digest:
        with self.long(f"reading {name} back for its checksum"):
            return digest.target_digest(self.long_db[name], id_filter)

    def hashes(self, name: str, id_filter: IdFilter, limit: int) -> dict[Any, int] | None:
        with self.long(f"reading {name} back for per-document hashes"):
            return digest.target_hashes(self.long_db[name], id_filter, limit)

    def clear(self, temp: str, id_filter: IdFilter) -> None:
        """Remove what a failed attempt wrote for a range selectable by `_id`."""
        try:
            self.db[temp].delete_many(id_filter)
        except PyMongoError as exc:
            raise TargetError(f"clearing a partly copied range in {temp} failed: {exc}") from None

    def replace(self, temp: str, ids: list[Any], docs: list[bytes]) -> int:
        """Delete documents by `_id`, insert new ones: returns the net change in the count."""
        try:
            delta = -int(self.db[temp].delete_many({"_id": {"$in": ids}}).deleted_count)
            if docs:
                self.db[temp].insert_many([RawBSONDocument(d) for d in docs], ordered=False)
        except PyMongoError as exc:
            raise TargetError(f"applying changed rows to {temp} failed: {exc}") from None
        return delta + len(docs)

    def add_documents(self, collection: str, docs: list[dict[str, Any]]) -> None:
        try:
            if docs:
                self.db[collection].insert_many(docs, ordered=False)
        except PyMongoError as exc:
            raise TargetError(f"writing to {collection} failed: {exc}") from None

    # ---------------------------------------------------------------- the end
    def seal(self, temp: str) -> None:
        """The old target's secondary indexes, built on the temp before it replaces the target."""
        with self.call(f"reading the indexes of {self.display}"):
            specs = swap.existing_secondary_indexes(self.db, self.collection)
            # The target as it is before the swap: a rename whose answer is lost is settled by
            # comparing with it (swap.settle).
            self._before = swap.identity(self.db, self.collection)
        seconds, flag = call_bound(self.uri, self.long_timeout_s, "--long-timeout-seconds")
        swap.build_indexes(self.long_db, temp, specs, timeout_s=seconds, flag=flag)

    def swap(self, temp: str, log: Log) -> str:
        with self.call("checking the target lease"):
            held = self._lease is None or self._lease.still_held()
        if not held:
            raise SwapFailed(
                "the target lease was taken by another job before the swap; nothing was swapped",
                SWAP_NOT_DONE,
            )
        if self._before is None:  # sealed by the job before every swap; looked up if not
            with self.call(f"looking at {self.display}"):
                self._before = swap.identity(self.db, self.collection)
        note = swap.rename(
            self.db, temp, self.collection, before=self._before, timeout_s=self.bound_s,
            flag=self.bound_flag,
        )  # fmt: skip
        if note:
            log(f"warning: {note}")
        return note

    def discard(self, temp: str) -> None:
        swap.drop_quietly(self.db, temp)

    def close(self) -> None:
        self.unlock()
        self.client.close()
        if self._long is not None:
            self._long.close()

"""`follow --changed-rows-collection`: one refresh job per row a followed transaction changed.

The same jobs a copy writes for the rows changed while it ran (cdc/changed_rows.py), built on
the follow's own decoder: `key` is `{key column: value}` encoded with the documents' codecs, so
its values have the BSON types of the documents' `_id`. A job's `_id` is the transaction's
commit LSN and the key, and it is only ever inserted (`$setOnInsert`): a transaction replayed
after a crash neither duplicates its jobs nor resets one a downstream worker already took.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from bson.raw_bson import RawBSONDocument
from pymongo import UpdateOne
from pymongo.collection import Collection


@dataclass
class ChangedRowJobs:
    coll: Collection[Any]
    job_id: str
    source: str  # the table as the user named it, as a copy's jobs say
    written: int = 0  # jobs inserted
    _ops: list[UpdateOne] = field(default_factory=list)

    def add(self, lsn: str, key: RawBSONDocument | None) -> None:
        """A row of the transaction committing at `lsn` changed (None: the table was truncated)."""
        ident: dict[str, Any] = {"lsn": lsn, "key": key} if key is not None else {
            "lsn": lsn, "truncate": True,
        }  # fmt: skip
        job: dict[str, Any] = {
            "job_id": self.job_id, "source": self.source, "key": key, "status": "PENDING",
            "created_at": dt.datetime.now(dt.UTC), "upto_lsn": lsn,
        }  # fmt: skip
        if key is None:
            job["truncate"] = True
        self._ops.append(UpdateOne({"_id": ident}, {"$setOnInsert": job}, upsert=True))

    @property
    def pending(self) -> int:
        return len(self._ops)

    def discard(self, start: int = 0) -> None:
        """Drop the jobs added from position `start` of the pending ones on (a skipped
        transaction's; the ones before belong to transactions applied in the same chunk)."""
        del self._ops[start:]

    def flush(self) -> None:
        """Write the jobs added since the last flush (raises PyMongoError; replaying is safe)."""
        if not self._ops:
            return
        result = self.coll.bulk_write(self._ops, ordered=False)
        self.written += result.upserted_count  # a job written before (a replay) is not counted
        self._ops = []

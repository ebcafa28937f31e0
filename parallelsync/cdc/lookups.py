"""The stored documents a key change read (its columns the stream left out as unchanged TOAST),
kept in MongoDB before the writes that use them.

A transaction that deletes a key and then moves a row onto it (`DELETE ... id = 22; UPDATE ...
SET id = 22 WHERE id = 20`, the moved row's TOASTed column unchanged) reads row 20's document to
fill that column in. If the run is killed after writing the transaction and before its
checkpoint, the replay deletes 22 again, which is now the moved document, and 20 is gone: the
value exists nowhere else. So the document read is stored first, keyed by the transaction's
commit LSN and the old `_id`, and a replay of that transaction reads it from here. A lookup's
transaction is checkpointed alone with everything before it checkpointed (cdc/apply.py), so
entries of earlier transactions are no longer needed and are removed when a new one is stored.
"""

from __future__ import annotations

from typing import Any

from bson.binary import Binary
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from parallelsync.errors import TargetError

KIND = "follow_lookup"


class LookupStore:
    def __init__(self, coll: Collection[Any], namespace: str) -> None:
        self.coll, self.namespace = coll, namespace

    def _id(self, txn: int, key: bytes) -> str:
        return f"{KIND}:{self.namespace}:{txn}:{key.hex()}"

    def save(self, txn: int, key: bytes, doc: bytes) -> None:
        try:
            self.coll.delete_many({"kind": KIND, "ns": self.namespace, "txn": {"$lt": txn}})
            entry = {"kind": KIND, "ns": self.namespace, "txn": txn, "doc": Binary(doc)}
            self.coll.replace_one({"_id": self._id(txn, key)}, entry, upsert=True)
        except PyMongoError as exc:
            raise TargetError(
                f"storing the document a key change read (before writing it) into "
                f"{self.coll.full_name} failed: {exc}"
            ) from None

    def load(self, txn: int, key: bytes) -> bytes | None:
        try:
            found = self.coll.find_one({"_id": self._id(txn, key)})
        except PyMongoError as exc:
            raise TargetError(f"reading {self.coll.full_name} failed: {exc}") from None
        return None if found is None else bytes(found["doc"])

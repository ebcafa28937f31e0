"""Where encoded documents go: a MongoDB temp collection, or nowhere (`null:` for benchmarks)."""

from __future__ import annotations

from typing import Any, Protocol

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, BulkWriteError, ConnectionFailure, PyMongoError

from parallelsync.errors import EncodeError, TargetError, TargetUnavailable

DUPLICATE_KEY = 11000


class Sink(Protocol):
    def insert(self, docs: list[bytes], *, allow_duplicates: bool) -> int: ...
    def close(self) -> None: ...


class NullSink:
    """Discards documents: measures everything but the MongoDB write."""

    def insert(self, docs: list[bytes], *, allow_duplicates: bool) -> int:
        return len(docs)

    def close(self) -> None:
        pass


class MongoSink:
    def __init__(self, client: MongoClient[Any], db: str, collection: str) -> None:
        self._client = client
        self._coll = client[db][collection]

    def insert(self, docs: list[bytes], *, allow_duplicates: bool) -> int:
        """Insert raw BSON documents; returns how many are new in the collection.

        `allow_duplicates` is set on a retried range: the same snapshot yields the same documents,
        so a duplicate `_id` means "already written by the failed attempt", not a conflict.
        """
        if not docs:
            return 0
        raw = [RawBSONDocument(d) for d in docs]
        try:
            result = self._coll.insert_many(raw, ordered=False, bypass_document_validation=True)
            return len(result.inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            other = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if other:
                raise TargetError(f"MongoDB rejected a write: {other[0].get('errmsg')}") from None
            if not allow_duplicates:
                first = errors[0].get("errmsg", "") if errors else ""
                raise EncodeError(
                    f"two source rows map to the same _id ({first}); the chosen key is not unique: "
                    "choose a unique key with --key"
                ) from None
            return int(exc.details.get("nInserted", 0))
        except (AutoReconnect, ConnectionFailure) as exc:
            raise TargetUnavailable(f"lost the connection to MongoDB while inserting: {exc}") from None
        except PyMongoError as exc:
            raise TargetError(f"MongoDB insert failed: {exc}") from None

    def close(self) -> None:
        self._client.close()

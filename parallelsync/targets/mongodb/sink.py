"""The worker side of a MongoDB target: raw inserts into the temp collection."""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient
from pymongo.errors import AutoReconnect, ConnectionFailure, OperationFailure, PyMongoError

from parallelsync.errors import EncodeError, TargetError, TargetUnavailable
from parallelsync.targets.mongodb.client import CALL_FLAG
from parallelsync.targets.mongodb.rawrun import RawRun, runs
from parallelsync.transcode.batch import EncodedBatch

DUPLICATE_KEY = 11000


# Server-side errors that mean "this node cannot take writes right now": worth a retry.
TRANSIENT_CODES = frozenset({6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436})


def insert_error(exc: PyMongoError, flag: str = CALL_FLAG) -> TargetError:
    """A failed insert command as an error; a timeout and a lost connection are worth a retry.
    `flag`: what set the call bound (client.call_bound)."""
    if exc.timeout:
        return TargetUnavailable(
            f"MongoDB did not answer an insert within the call bound ({flag}): {exc}"
        )
    if isinstance(exc, AutoReconnect | ConnectionFailure):
        return TargetUnavailable(f"lost the connection to MongoDB while inserting: {exc}")
    if isinstance(exc, OperationFailure) and exc.code in TRANSIENT_CODES:
        return TargetUnavailable(f"MongoDB cannot take writes right now: {exc}")
    return TargetError(f"MongoDB insert failed: {exc}")


class MongoSink:
    """Inserts with the `insert` command, one `RawRun` (many pre-encoded documents) per command.

    `insert_many` would first run a Python loop per document (type validation, `_id` checks, bulk
    bookkeeping: measured 3.5 µs vs 1.1 µs per document against a discarding server), and wants
    one RawBSONDocument per document (~2 µs each). The insert command is MongoDB's documented
    write command; its documents travel as an OP_MSG document sequence either way, and a RawRun
    puts the same bytes there (see rawrun.py).
    """

    def __init__(
        self, client: MongoClient[Any], db: str, collection: str, *, flag: str = CALL_FLAG
    ) -> None:
        self._client = client
        self._flag = flag  # what set the call bound, for a timeout's message
        self._db = client[db]
        self._name = collection
        wc = client.write_concern
        self._write_concern = None if wc.is_server_default else wc.document
        self._acknowledged = wc.acknowledged  # w=0 replies carry no counts to check

    def begin_range(self, range_id: int) -> None:
        pass  # documents carry their _id: a collection needs no per-range bookkeeping

    def end_range(self) -> None:
        pass

    def insert(self, batch: EncodedBatch, *, allow_duplicates: bool) -> int:
        """Insert the batch's documents; returns how many were inserted.

        `allow_duplicates` is set on a retried range: the same snapshot yields the same documents,
        so a duplicate `_id` means "already written by the failed attempt", not a conflict.
        """
        return sum(self._insert(run, allow_duplicates) for run in runs(batch.data, batch.offsets))

    def _insert(self, run: RawRun, allow_duplicates: bool) -> int:
        cmd: dict[str, Any] = {
            "insert": self._name,
            "documents": [run],
            "ordered": False,
            "bypassDocumentValidation": True,
        }
        if self._write_concern:
            cmd["writeConcern"] = self._write_concern
        try:
            reply = self._db.command(cmd)
        except PyMongoError as exc:
            raise insert_error(exc, self._flag) from None

        errors = reply.get("writeErrors") or []
        other = [e for e in errors if e.get("code") != DUPLICATE_KEY]
        if other:
            if other[0].get("code") in TRANSIENT_CODES:
                raise TargetUnavailable(
                    f"MongoDB cannot take writes right now: {other[0].get('errmsg')}"
                )
            raise TargetError(f"MongoDB rejected a write: {other[0].get('errmsg')}")
        if errors and not allow_duplicates:
            raise EncodeError(
                f"two source rows map to the same _id ({errors[0].get('errmsg', '')}); the chosen "
                "key is not unique: choose a unique key with --key"
            )
        wce = reply.get("writeConcernError")
        if wce:
            raise TargetUnavailable(
                f"MongoDB could not satisfy the write concern: {wce.get('errmsg')}"
            )
        inserted = int(reply.get("n", 0))
        # Every document is either inserted or a tolerated duplicate: anything else means the
        # server saw other documents than we sent, and the copy must not be trusted.
        if self._acknowledged and inserted + len(errors) != run.count:
            raise TargetError(
                f"MongoDB acknowledged {inserted} of {run.count} documents with "
                f"{len(errors)} duplicate-key errors; the insert did not arrive as sent"
            )
        return inserted

    def close(self) -> None:
        self._client.close()

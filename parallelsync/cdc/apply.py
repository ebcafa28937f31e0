"""Applying decoded transactions to the collection, in commit order, as ordered bulk writes.

insert -> replace by `_id` with upsert (the document a copy would write); update -> the same
replace when every column arrived, else `$set` of the received fields (an unchanged TOASTed
column is never written); a key change -> delete the old `_id`, insert the new document;
delete -> delete by `_id`; truncate -> delete every document. Changes of other tables are
ignored. A Relation message for the table that differs from the table the run started with
(a column added, dropped, renamed or retyped) stops the run before any change after it is
written, unless the mapping leaves the difference out of every document (`ShapeRule`: a column
added that `[mapping] include` with `new_columns = "ignore"` does not name, or one dropped or
retyped that no document is made from); values are then found by column name.

Writes are flushed in chunks (`CHUNK_OPS`, `CHUNK_BYTES`), so a huge transaction does not sit
in memory, and several small transactions share one chunk (group commit): the loop
(job/follow_loop.py) writes what is pending and checkpoints the last applied commit when the
stream has nothing more to read at once, after a time bound, or at a stop (`unsaved`). A run that
stops leaves part of the transactions after its checkpoint written; the next run replays them
from the checkpoint, which converges: every operation sets a document or a field to the value
the transaction gives it (none is relative), so replaying the sequence yields its final state.
The one operation that reads the collection (a key change whose TOASTed column arrived
unchanged: `_old_document`) is kept out of groups, so what it reads is never ahead of it but in
the first transaction after a checkpoint (docs/architecture.md, "Change capture").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import DeleteMany, DeleteOne, ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
)

from parallelsync.cdc.decode import (
    Begin,
    Commit,
    Decoded,
    Delete,
    Insert,
    Relation,
    Truncate,
    Update,
)
from parallelsync.cdc.documents import RowEncoder, elements
from parallelsync.cdc.follow_changed import ChangedRowJobs
from parallelsync.cdc.lookups import LookupStore
from parallelsync.cdc.stream import format_lsn
from parallelsync.errors import SourceError, TargetError, TargetUnavailable
from parallelsync.source.catalog import TableInfo
from parallelsync.transcode.bson_writer import frame_document
from parallelsync.transcode.reference import describe_id

# A chunk of a transaction written at once: large enough to amortise the round trip, small
# enough that a transaction of millions of rows keeps memory flat.
CHUNK_OPS = 1000
CHUNK_BYTES = 8 << 20

Op = ReplaceOne[Any] | UpdateOne | DeleteOne | DeleteMany

# A chunk that fails on a transient error is written again this many times in all, waiting
# BACKOFF_S, doubling, at most BACKOFF_MAX_S between: about 6 s, long enough for a replica
# set's election or a dropped connection, short enough that a server that is gone is reported.
WRITE_ATTEMPTS = 5
BACKOFF_S = 0.4
BACKOFF_MAX_S = 3.2
# Server error codes of a write that another attempt may not meet (MongoDB's error_codes.yml:
# the "RetriableError" and "NotPrimaryError" categories, and write-concern shutdowns).
TRANSIENT_CODES = frozenset({
    6, 7, 64, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
})  # fmt: skip


class SchemaChanged(SourceError):
    """The followed table's columns changed in the stream: the mapping no longer fits."""


@dataclass
class Totals:
    transactions: int = 0  # committed transactions that changed the followed table, applied
    changes: int = 0  # row changes of the followed table written
    skipped: int = 0  # transactions at or below the checkpoint, not applied again
    truncates: int = 0
    bulk_writes: int = 0  # ordered bulk writes sent (a transaction is one or more chunks)
    largest_write: int = 0  # operations in the largest of them: at most CHUNK_OPS
    retries: int = 0  # chunks written again after a transient MongoDB error


@dataclass
class _Txn:
    begin: Begin
    skip: bool
    # The first transaction of the table after the start: the run that stopped may have
    # written some or all of it, its lookups included (`_old_document`: a transaction that looks
    # up is checkpointed alone, so no later one is written before it is checkpointed).
    replay: bool = False
    changes: int = 0
    looked_up: bool = False  # read a stored document: checkpointed before anything later
    jobs_mark: int = 0  # where its refresh jobs start in the pending ones


@dataclass
class Applier:
    table: TableInfo
    encoder: RowEncoder
    coll: Collection[Any]
    checkpoint: int  # transactions committed before this position are already applied
    # The columns (name, type oid) the documents are made from; default: the table's.
    shape: list[tuple[str, int]] | None = None
    rule: ShapeRule | None = None  # None: any difference from `shape` stops
    jobs: ChangedRowJobs | None = None  # --changed-rows-collection
    # Where a key change's lookup is kept before its writes, for an exact replay (lookups.py).
    lookups: LookupStore | None = None
    # copy --follow's catch-up into a temp collection that nothing of this stream reached
    # before: no transaction is a replay, and transactions are written in shared chunks instead
    # of one bulk write each (nothing is checkpointed per transaction; the caller flushes
    # before it relies on what was applied).
    catch_up: bool = False
    totals: Totals = field(default_factory=Totals)
    # Group commit (not a catch-up): transactions applied, maybe written, not checkpointed; the
    # loop's `save` writes them and checkpoints the last one (`saved` then resets these).
    unsaved: int = 0
    save_now: bool = False  # the last one looked up a document: checkpoint it before any other
    save: Callable[[], None] | None = None
    _txn: _Txn | None = None
    _ops: list[Op] = field(default_factory=list)
    _bytes: int = 0
    _mark: int = 0  # where the transaction in flight starts in _ops (a catch-up shares chunks)
    _raw: Collection[Any] | None = None
    _first: bool = True  # no transaction of the table applied yet by this run

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    def retarget(self, coll: Collection[Any]) -> None:
        """Write into `coll` from the next transaction on (copy --follow's swap renamed the temp
        collection written so far to it), checkpointed (group commit) from now on: only
        between transactions, with nothing pending."""
        assert self._txn is None and not self._ops
        self.coll, self._raw, self.catch_up = coll, None, False

    def flush(self) -> None:
        """Write what is pending (the transactions applied since the last chunk)."""
        self._flush()

    def saved(self) -> None:
        """The loop checkpointed every transaction applied so far."""
        self.unsaved, self.save_now = 0, False

    def feed(self, msg: Decoded) -> Commit | None:
        """Process one message; returns the Commit of a transaction now written (to checkpoint)."""
        if isinstance(msg, Begin):
            # Checkpoints are commit ends (or idle positions): a commit record that starts
            # before one ends at or before it, so that transaction was applied already.
            replay = self._first and not self.catch_up
            self._mark = len(self._ops)
            self._txn = _Txn(msg, skip=msg.final_lsn < self.checkpoint, replay=replay)
            self._txn.jobs_mark = self.jobs.pending if self.jobs is not None else 0
            return None
        if isinstance(msg, Relation):
            if msg.relid == self.table.oid:
                check_relation(self.table, msg, self.shape or columns_of(self.table), self.rule)
                # The row values that follow are in this message's column order.
                self.encoder.remap([c.name for c in msg.columns])
            return None
        if isinstance(msg, Commit):
            txn, self._txn = self._txn, None
            if txn is None or txn.skip or msg.end_lsn <= self.checkpoint:
                self.totals.skipped += 1
                # Only this transaction's pending operations and jobs: a shared chunk holds
                # earlier ones too, which are applied.
                del self._ops[self._mark :]
                self._bytes = 0 if not self._ops else self._bytes
                if self.jobs is not None and txn is not None:
                    self.jobs.discard(txn.jobs_mark)
                return None
            if txn.changes == 0:  # nothing of the table: its end is an idle position
                return None
            if not self.catch_up:
                self.unsaved += 1
                self.save_now = txn.looked_up
            self._first = False
            self.totals.transactions += 1
            self.totals.changes += txn.changes
            self.checkpoint = msg.end_lsn
            return msg
        txn = self._txn
        if txn is None or txn.skip:
            return None
        if isinstance(msg, Insert | Update | Delete):
            if msg.relid != self.table.oid:
                return None
            txn.changes += 1
            self._change(msg)
        elif isinstance(msg, Truncate) and self.table.oid in msg.relids:
            txn.changes += 1
            self.totals.truncates += 1
            self._add(DeleteMany({}), 0)
            if self.jobs is not None:
                self.jobs.add(format_lsn(txn.begin.final_lsn), None)
        pending = len(self._ops) + (self.jobs.pending if self.jobs is not None else 0)
        if pending >= CHUNK_OPS or self._bytes >= CHUNK_BYTES:
            self._flush()
        return None

    def _job(self, msg: Insert | Update | Delete) -> None:
        """The refresh jobs of a change: the row's key, and its old key when that changed."""
        assert self.jobs is not None and self._txn is not None
        rows = [r for r in (getattr(msg, "old", None), getattr(msg, "new", None)) if r]
        lsn = format_lsn(self._txn.begin.final_lsn)
        seen: list[bytes] = []  # a key change repeats no key
        for key in self.encoder.keys(rows):
            if bytes(key.raw) not in seen:
                seen.append(bytes(key.raw))
                self.jobs.add(lsn, key)

    def _change(self, msg: Insert | Update | Delete) -> None:
        if self.jobs is not None:
            self._job(msg)
        enc = self.encoder
        if isinstance(msg, Delete):
            old_id = enc.ids([msg.old])[0]
            self._add(DeleteOne(RawBSONDocument(old_id)), len(old_id))
            return
        doc = enc.documents([msg.new])[0]
        new_id = _id_document(doc)
        if isinstance(msg, Insert):
            self._add(
                ReplaceOne(RawBSONDocument(new_id), RawBSONDocument(doc), upsert=True), len(doc)
            )
            return
        unchanged = enc.unchanged(msg.new)
        old_id = enc.ids([msg.old])[0] if msg.old is not None else new_id
        if old_id != new_id:  # the key changed
            if unchanged:
                stored = self._old_document(old_id, new_id)
                if stored is None:  # see _old_document: a later change of the replay writes it
                    self._add(DeleteOne(RawBSONDocument(old_id)), len(old_id))
                    return
                doc = enc.merge(doc, stored, unchanged)
            self._add(DeleteOne(RawBSONDocument(old_id)), len(old_id))
            self._add(
                ReplaceOne(RawBSONDocument(new_id), RawBSONDocument(doc), upsert=True), len(doc)
            )
        elif unchanged:
            self._add(
                UpdateOne(RawBSONDocument(new_id), enc.partial_update(doc, unchanged)), len(doc)
            )
        else:
            self._add(
                ReplaceOne(RawBSONDocument(new_id), RawBSONDocument(doc), upsert=True), len(doc)
            )

    def _old_document(self, old_id: bytes, new_id: bytes) -> bytes | None:
        """The stored document of a row whose key changed while some columns were not sent.

        In a transaction the stopped run may have written already (`_Txn.replay`), the key change
        may be in the collection: the new `_id` holds the unchanged columns (the old one is gone,
        or a later change of the transaction reused it: its document is another row's), so it
        is looked at first. When neither is there, a later change of the transaction moved or
        deleted the new row, and replaying it writes what remains: None (write nothing now)."""
        if self._txn is not None:
            self._txn.looked_up = True
        if self.unsaved and self.save is not None:
            # Earlier transactions of the group are checkpointed first (writing this one's
            # changes so far with them): after a crash, the lookup's transaction is then the
            # first after the checkpoint, and nothing written is ahead of what it reads but its
            # own later changes (see _Txn.replay).
            self._flush()
            self.save()
        self._flush()  # it may have been written earlier in this transaction
        if self._raw is None:
            self._raw = self.coll.with_options(CodecOptions(document_class=RawBSONDocument))
        replay = self._txn is not None and self._txn.replay
        txn_lsn = self._txn.begin.final_lsn if self._txn is not None else 0
        if replay and self.lookups is not None:
            # What the stopped run read, before anything of this transaction was written.
            kept = self.lookups.load(txn_lsn, old_id)
            if kept is not None:
                return kept
        for key in (new_id, old_id) if replay else (old_id,):
            try:
                found = self._raw.find_one(RawBSONDocument(key))
            except PyMongoError as exc:
                raise _target_error(exc) from None
            if found is not None:
                if self.lookups is not None and key == old_id:
                    # Kept before the writes that use it (lookups.py); from the new _id it is
                    # the moved document itself, which a replay reads there again.
                    self.lookups.save(txn_lsn, old_id, bytes(found.raw))
                return bytes(found.raw)
        if replay:
            return None
        raise TargetError(
            f"the row with _id {describe_id(old_id[4:-1])} changed its key, but its document "
            f"is missing from {self.coll.full_name}, and its unchanged TOASTed columns are "
            "not in the change stream: the collection no longer matches the table; copy again"
        )

    def _add(self, op: Op, size: int) -> None:
        self._ops.append(op)
        self._bytes += size

    def _flush(self) -> None:
        if not self._ops:
            return
        ops, self._ops, self._bytes, self._mark = self._ops, [], 0, 0
        if self._txn is not None:
            self._txn.jobs_mark = 0  # the jobs pending are written with the chunk
        self.totals.bulk_writes += 1
        self.totals.largest_write = max(self.totals.largest_write, len(ops))
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                # The whole chunk again after a failure that may have written part of it: every
                # operation sets a document or field to a value, or deletes by _id, so the
                # repeated prefix ends as it was (a truncate's DeleteMany is followed again by
                # the chunk's later writes). The jobs are inserted only once ($setOnInsert).
                self.coll.bulk_write(ops, ordered=True)
                if self.jobs is not None:
                    self.jobs.flush()
                return
            except PyMongoError as exc:
                if attempt == WRITE_ATTEMPTS or not transient(exc):
                    err = _target_error(exc)
                    if attempt > 1:
                        err = type(err)(f"{err} (after {attempt} attempts)")
                    raise err from None
                self.totals.retries += 1
                time.sleep(min(BACKOFF_S * 2 ** (attempt - 1), BACKOFF_MAX_S))


def _id_document(doc: bytes) -> bytes:
    """`{_id: ...}` from a document whose first element is `_id` (the layout guarantees it)."""
    _, start, end = next(elements(doc))
    return frame_document(doc[start:end])


def columns_of(table: TableInfo) -> list[tuple[str, int]]:
    return [(c.name, c.type_oid) for c in table.columns]


@dataclass(frozen=True)
class ShapeRule:
    """Which differences from the documents' columns a fresh copy would not see either.

    `used`: the columns the documents are made from; `mentioned`: every column the mapping or
    --key names (a fresh copy refuses when one is gone); `ignores_new`: `[mapping] include` with
    `new_columns = "ignore"`, so a fresh copy leaves a column the mapping does not name out;
    `include_only`: the mapping has an include list, so the documents hold only the columns it
    names. Without one they hold every column of the copy's table: `used` is built from the
    table as it is now, which no longer has a dropped column, so it cannot tell on its own."""

    used: frozenset[str] = frozenset()
    mentioned: frozenset[str] = frozenset()
    ignores_new: bool = False
    include_only: bool = False

    def harmful(self, added: list[str], dropped: list[str], retyped: list[str]) -> bool:
        if any(n in self.mentioned or not self.ignores_new for n in added):
            return True
        return any(
            n in self.used or n in self.mentioned or not self.include_only
            for n in (*dropped, *retyped)
        )


def check_columns(
    table: TableInfo,
    have: list[tuple[str, int]],
    want: list[tuple[str, int]],
    where: str,
    rule: ShapeRule | None = None,
) -> None:
    """`have` (the stream's, or the table's now) must be the shape follow applies (`want`),
    but for differences the rule says leave every document as a fresh copy writes it."""
    if have == want:
        return
    hd, wd = dict(have), dict(want)
    added = [n for n, _ in have if n not in wd]
    dropped = [n for n, _ in want if n not in hd]
    retyped = [n for n, t in have if n in wd and wd[n] != t]
    if rule is not None and not rule.harmful(added, dropped, retyped):
        return  # columns are found by name: another order or an ignored column is harmless
    parts = [f"{what}: {', '.join(names)}" for what, names in (
        ("only in " + where, added), ("missing in " + where, dropped),
        ("another type in " + where, retyped),
    ) if names]  # fmt: skip
    detail = "; ".join(parts) or f"columns in another order in {where}"
    raise SchemaChanged(
        f"table {table.display} changed ({detail}; compared with the columns the followed "
        "documents were made from): follow stopped before writing any change of the new shape; "
        "copy the table again (a new --slot) to follow it"
    )


def check_relation(
    table: TableInfo, rel: Relation, want: list[tuple[str, int]], rule: ShapeRule | None = None
) -> None:
    have = [(c.name, c.type_oid) for c in rel.columns]
    check_columns(table, have, want, "the change stream", rule)


def transient(exc: PyMongoError) -> bool:
    """A failure that another attempt may not meet: the connection, a primary stepping down."""
    if isinstance(exc, ConnectionFailure):  # AutoReconnect, NetworkTimeout, NotPrimaryError
        return True
    if isinstance(exc, BulkWriteError):
        details = exc.details or {}
        codes = [e.get("code") for e in details.get("writeErrors") or []]
        codes += [e.get("code") for e in details.get("writeConcernErrors") or []]
        return bool(codes) and all(c in TRANSIENT_CODES for c in codes)
    if isinstance(exc, OperationFailure):
        return exc.code in TRANSIENT_CODES or exc.has_error_label("RetryableWriteError")
    return False


def _target_error(exc: PyMongoError) -> TargetError:
    if isinstance(exc, AutoReconnect):
        return TargetUnavailable(f"MongoDB became unreachable while applying changes: {exc}")
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or [{}]
        return TargetError(f"MongoDB refused a change: {errors[0].get('errmsg', exc)}")
    return TargetError(f"applying changes to MongoDB failed: {exc}")

"""Applying decoded transactions to the collection, in commit order, as ordered bulk writes.

insert -> replace by `_id` with upsert (the document a copy would write); update -> the same
replace when every column arrived, else `$set` of the received fields (an unchanged TOASTed
column is never written); a key change -> delete the old `_id`, insert the new document;
delete -> delete by `_id`; truncate -> delete every document. Changes of other tables are
ignored. A Relation message for the table that differs from the table the run started with
(a column added, dropped, renamed or retyped) stops the run before any change after it is
written.

Writes are flushed in chunks (`CHUNK_OPS`, `CHUNK_BYTES`), so a huge transaction does not sit
in memory; the checkpoint is only taken after the Commit (job/follow.py). A run that stops
inside a transaction leaves part of it written; the next run replays the whole transaction from
its start, which converges: every operation sets a document or a field to the value the
transaction gives it (none is relative), so replaying the sequence yields its final state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import DeleteMany, DeleteOne, ReplaceOne, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import AutoReconnect, BulkWriteError, PyMongoError

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
from parallelsync.errors import SourceError, TargetError, TargetUnavailable
from parallelsync.source.catalog import TableInfo
from parallelsync.transcode.bson_writer import frame_document
from parallelsync.transcode.reference import describe_id

# A chunk of a transaction written at once: large enough to amortise the round trip, small
# enough that a transaction of millions of rows keeps memory flat.
CHUNK_OPS = 1000
CHUNK_BYTES = 8 << 20

Op = ReplaceOne[Any] | UpdateOne | DeleteOne | DeleteMany


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


@dataclass
class _Txn:
    begin: Begin
    skip: bool
    # The first transaction of the table after the start: the run that stopped may have
    # written some or all of it before its checkpoint (at most this one: each transaction is
    # checkpointed before the next is written).
    replay: bool = False
    changes: int = 0


@dataclass
class Applier:
    table: TableInfo
    encoder: RowEncoder
    coll: Collection[Any]
    checkpoint: int  # transactions committed before this position are already applied
    # The columns (name, type oid) the documents are made from; default: the table's.
    shape: list[tuple[str, int]] | None = None
    # copy --follow's catch-up into a temp collection that nothing of this stream reached
    # before: no transaction is a replay, and transactions are written in shared chunks instead
    # of one bulk write each (nothing is checkpointed per transaction; the caller flushes
    # before it relies on what was applied).
    catch_up: bool = False
    totals: Totals = field(default_factory=Totals)
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
        collection written so far to it), one bulk write per transaction from now on: only
        between transactions, with nothing pending."""
        assert self._txn is None and not self._ops
        self.coll, self._raw, self.catch_up = coll, None, False

    def flush(self) -> None:
        """Write what is pending (catch-up: the transactions applied since the last chunk)."""
        self._flush()

    def feed(self, msg: Decoded) -> Commit | None:
        """Process one message; returns the Commit of a transaction now written (to checkpoint)."""
        if isinstance(msg, Begin):
            # Checkpoints are commit ends (or idle positions): a commit record that starts
            # before one ends at or before it, so that transaction was applied already.
            replay = self._first and not self.catch_up
            self._mark = len(self._ops)
            self._txn = _Txn(msg, skip=msg.final_lsn < self.checkpoint, replay=replay)
            return None
        if isinstance(msg, Relation):
            if msg.relid == self.table.oid:
                check_relation(self.table, msg, self.shape or columns_of(self.table))
            return None
        if isinstance(msg, Commit):
            txn, self._txn = self._txn, None
            if txn is None or txn.skip or msg.end_lsn <= self.checkpoint:
                self.totals.skipped += 1
                # Only this transaction's pending operations: a catch-up's chunk holds earlier
                # ones too, which are applied.
                del self._ops[self._mark :]
                self._bytes = 0 if not self._ops else self._bytes
                return None
            if txn.changes == 0:  # nothing of the table: its end is an idle position
                return None
            if not self.catch_up:
                self._flush()
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
        if len(self._ops) >= CHUNK_OPS or self._bytes >= CHUNK_BYTES:
            self._flush()
        return None

    def _change(self, msg: Insert | Update | Delete) -> None:
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
        self._flush()  # it may have been written earlier in this transaction
        if self._raw is None:
            self._raw = self.coll.with_options(CodecOptions(document_class=RawBSONDocument))
        replay = self._txn is not None and self._txn.replay
        for key in (new_id, old_id) if replay else (old_id,):
            try:
                found = self._raw.find_one(RawBSONDocument(key))
            except PyMongoError as exc:
                raise _target_error(exc) from None
            if found is not None:
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
        self.totals.bulk_writes += 1
        self.totals.largest_write = max(self.totals.largest_write, len(ops))
        try:
            self.coll.bulk_write(ops, ordered=True)
        except PyMongoError as exc:
            raise _target_error(exc) from None


def _id_document(doc: bytes) -> bytes:
    """`{_id: ...}` from a document whose first element is `_id` (the layout guarantees it)."""
    _, start, end = next(elements(doc))
    return frame_document(doc[start:end])


def columns_of(table: TableInfo) -> list[tuple[str, int]]:
    return [(c.name, c.type_oid) for c in table.columns]


def check_columns(
    table: TableInfo, have: list[tuple[str, int]], want: list[tuple[str, int]], where: str
) -> None:
    """`have` (the stream's, or the table's now) must be the shape follow applies (`want`)."""
    if have == want:
        return
    hd, wd = dict(have), dict(want)
    parts = [f"{what}: {', '.join(names)}" for what, names in (
        ("only in " + where, [n for n, _ in have if n not in wd]),
        ("missing in " + where, [n for n, _ in want if n not in hd]),
        ("another type in " + where, [n for n, t in have if n in wd and wd[n] != t]),
    ) if names]  # fmt: skip
    detail = "; ".join(parts) or f"columns in another order in {where}"
    raise SchemaChanged(
        f"table {table.display} changed ({detail}; compared with the columns the followed "
        "documents were made from): follow stopped before writing any change of the new shape; "
        "copy the table again (a new --slot) to follow it"
    )


def check_relation(table: TableInfo, rel: Relation, want: list[tuple[str, int]]) -> None:
    check_columns(table, [(c.name, c.type_oid) for c in rel.columns], want, "the change stream")


def _target_error(exc: PyMongoError) -> TargetError:
    if isinstance(exc, AutoReconnect):
        return TargetUnavailable(f"MongoDB became unreachable while applying changes: {exc}")
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or [{}]
        return TargetError(f"MongoDB refused a change: {errors[0].get('errmsg', exc)}")
    return TargetError(f"applying changes to MongoDB failed: {exc}")

"""RawRun: many pre-encoded documents as one object, on the wire exactly as one per document.

The byte-identity tests use pymongo's own message builders (private functions, on purpose): they
are the contract RawRun relies on, and an upgrade of pymongo that changes it must fail here.
"""

from __future__ import annotations

import bson
import numpy as np
import pytest
from bson.codec_options import DEFAULT_CODEC_OPTIONS
from bson.raw_bson import RawBSONDocument
from pymongo import message

from parallelsync.targets.mongodb.rawrun import RawRun, runs


def docs_and_offsets(sizes: list[int]) -> tuple[list[bytes], bytes, np.ndarray]:
    docs = [bson.encode({"_id": i, "pad": "x" * n}) for i, n in enumerate(sizes)]
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(d) for d in docs])
    return docs, b"".join(docs), offsets


def op_msg_body(documents: list[RawBSONDocument]) -> bytes:
    cmd = {"insert": "c", "documents": documents, "ordered": False}
    _rid, msg, _size, _max = message._op_msg(0, cmd, "db", None, DEFAULT_CODEC_OPTIONS)
    return msg[8:]  # the request id (bytes 4-8) differs per message


def test_the_c_message_is_byte_identical_to_one_raw_document_each() -> None:
    docs, data, offsets = docs_and_offsets([0, 3, 200, 17])
    (run,) = runs(data, offsets)
    per_document = op_msg_body([RawBSONDocument(d) for d in docs])
    assert op_msg_body([run]) == per_document
    assert data in per_document  # the documents travel as one sequence, back to back


def test_the_python_message_is_byte_identical_too() -> None:
    docs, data, offsets = docs_and_offsets([5, 6, 7])
    (run,) = runs(data, offsets)
    cmd = {"insert": "c", "ordered": False, "$db": "db"}
    ours = message._op_msg_no_header(0, cmd, "documents", [run], DEFAULT_CODEC_OPTIONS)
    theirs = message._op_msg_no_header(
        0, cmd, "documents", [RawBSONDocument(d) for d in docs], DEFAULT_CODEC_OPTIONS
    )
    assert ours[0] == theirs[0]
    assert ours[1] == theirs[1]  # total size; only the largest-document figure differs


def test_one_run_when_the_batch_fits_and_its_bytes_are_not_copied() -> None:
    _docs, data, offsets = docs_and_offsets([10] * 50)
    (run,) = runs(data, offsets)
    assert run.count == 50
    assert run.raw is data
    assert dict(run) == {"_id": 0, "pad": "x" * 10}  # as a Mapping: the first document
    assert repr(run) == f"RawRun(50 documents, {len(data)} bytes)"


def test_runs_are_cut_at_the_byte_limit_and_keep_every_document_once() -> None:
    _docs, data, offsets = docs_and_offsets([100 + i for i in range(40)])
    limit = 1000
    cut = list(runs(data, offsets, max_bytes=limit))
    assert len(cut) > 1
    assert all(len(r.raw) <= limit for r in cut)
    assert sum(r.count for r in cut) == 40
    assert b"".join(r.raw for r in cut) == data
    decoded = [d["_id"] for r in cut for d in bson.decode_all(r.raw)]
    assert decoded == list(range(40))
    assert [r.count for r in cut] == [len(bson.decode_all(r.raw)) for r in cut]


def test_runs_are_cut_at_the_document_limit() -> None:
    _docs, data, offsets = docs_and_offsets([1] * 10)
    assert [r.count for r in runs(data, offsets, max_docs=4)] == [4, 4, 2]


def test_a_document_over_the_byte_limit_gets_a_run_of_its_own() -> None:
    docs, data, offsets = docs_and_offsets([10, 5000, 10])
    cut = list(runs(data, offsets, max_bytes=1000))
    assert [r.count for r in cut] == [1, 1, 1]
    assert cut[1].raw == docs[1]


def test_an_empty_batch_gives_no_run() -> None:
    assert list(runs(b"", np.zeros(1, dtype=np.int64))) == []


def test_a_run_validates_its_first_document() -> None:
    with pytest.raises(bson.errors.InvalidBSON):
        RawRun(b"\x05\x00\x00\x00", 4, 1)

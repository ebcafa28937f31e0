"""pymongo against the wire sink: `pytest benchmarks/test_wiresink.py`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).parent))
from wiresink import start_sink


@pytest.fixture()
def client() -> Iterator[MongoClient[dict[str, object]]]:
    uri, stop = start_sink(0)
    c: MongoClient[dict[str, object]] = MongoClient(uri, serverSelectionTimeoutMS=3000)
    try:
        yield c
    finally:
        c.close()
        stop()


def test_insert_many_raw_count_rename_drop(client: MongoClient[dict[str, object]]) -> None:
    assert client.admin.command("ping")["ok"] == 1.0
    docs = [
        RawBSONDocument(bson.encode({"_id": i, "t": "x" * 30, "f": 1.5})) for i in range(100_000)
    ]
    coll = client.bench.tmp
    res = coll.insert_many(docs, ordered=False)
    assert res.acknowledged  # pymongo does not list _ids of raw documents; counts are below
    assert coll.count_documents({}) == 100_000
    assert coll.estimated_document_count() == 100_000
    assert list(coll.aggregate([{"$count": "n"}])) == [{"n": 100_000}]
    coll.create_index("f")
    client.admin.command("renameCollection", "bench.tmp", to="bench.final", dropTarget=True)
    assert coll.count_documents({}) == 0
    final = client.bench.final
    assert final.count_documents({}) == 100_000
    assert {i["name"] for i in final.list_indexes()} == {"_id_", "f_1"}
    assert "final" in client.bench.list_collection_names()
    final.drop()
    assert final.count_documents({}) == 0
    stats = client.admin.command("sinkStats")
    assert stats["totalDocs"] == 100_000


def test_writes_and_errors(client: MongoClient[dict[str, object]]) -> None:
    c = client.bench.jobs
    r = c.update_one({"_id": "job1"}, {"$set": {"status": "RUNNING"}}, upsert=True)
    assert r.upserted_id == "job1"
    doc = c.find_one_and_update(
        {"_id": "lease"}, {"$set": {"owner": "me"}}, upsert=True, return_document=True
    )
    assert doc == {"_id": "lease", "owner": "me"}
    assert c.delete_many({}).deleted_count == 2
    assert c.find_one({}) is None
    with pytest.raises(Exception, match="does not exist"):
        client.admin.command("renameCollection", "bench.nope", to="bench.x")
    # unacknowledged writes (OP_MSG moreToCome) must not get a reply nor break the stream
    c.with_options(write_concern=__import__("pymongo").WriteConcern(w=0)).insert_one({"a": 1})
    assert client.admin.command("ping")["ok"] == 1.0
    assert client.server_info()["version"] == "7.0.0"


def test_lease_like_control_documents(client: MongoClient[dict[str, object]]) -> None:
    import datetime as dt

    from pymongo import ReturnDocument
    from pymongo.errors import DuplicateKeyError

    c = client.bench.leases
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)  # BSON keeps ms
    later = now + dt.timedelta(minutes=1)

    def take(job: str) -> object:
        return c.find_one_and_update(
            {"_id": "bench.t", "$or": [{"expires_at": {"$lt": now}}, {"job_id": job}]},
            {"$set": {"job_id": job, "expires_at": later}, "$inc": {"token": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )

    assert take("a") == {"_id": "bench.t", "job_id": "a", "expires_at": later, "token": 1}
    assert take("a")["token"] == 2  # type: ignore[index]
    with pytest.raises(DuplicateKeyError):
        take("b")  # held and not expired: a server's upsert collides on _id
    assert c.update_one({"_id": "bench.t", "token": 2}, {"$set": {"x": 1}}).matched_count == 1
    assert c.update_one({"_id": "bench.t", "token": 9}, {"$set": {"x": 1}}).matched_count == 0
    assert c.find_one({"_id": "bench.t"})["x"] == 1  # type: ignore[index]
    c.insert_one({"_id": "job-1", "status": "RUNNING"})
    assert c.find_one({"_id": "job-1"}) == {"_id": "job-1", "status": "RUNNING"}
    assert c.count_documents({}) == 2


def test_unique_ids_reject_reinserts() -> None:
    from pymongo.errors import BulkWriteError

    uri, stop = start_sink(0, unique_ids=True)
    c: MongoClient[dict[str, object]] = MongoClient(uri)
    try:
        coll = c.bench.u
        docs = [RawBSONDocument(bson.encode({"_id": i, "s": "x"})) for i in range(1000)]
        coll.insert_many(docs, ordered=False)
        with pytest.raises(BulkWriteError) as exc:  # a retried range writes the same _ids again
            coll.insert_many(
                docs[500:] + [RawBSONDocument(bson.encode({"_id": "new"}))] * 6, ordered=False
            )
        assert exc.value.details["nInserted"] == 1
        assert coll.count_documents({}) == 1001
        # per-range verification: integer _id ranges are counted from the remembered _ids
        assert coll.count_documents({"_id": {"$gte": 100, "$lt": 300}}) == 200
        assert coll.count_documents({"_id": {"$gt": 900}}) == 99
        coll.insert_many([RawBSONDocument(bson.encode({"_id": 5000 + i})) for i in range(10)])
        assert coll.count_documents({"_id": {"$gte": 1000}}) == 10  # the cache is rebuilt
        assert coll.delete_many({"_id": {"$gte": 5000, "$lt": 5005}}).deleted_count == 5
        assert coll.count_documents({}) == 1006
        assert coll.count_documents({"_id": {"$gte": 1000}}) == 5
    finally:
        c.close()
        stop()


def test_follow_like_bulk_writes_are_counted(client: MongoClient[dict[str, object]]) -> None:
    """An ordered bulk of replace-upserts, $set updates and deletes by _id (what `follow`
    sends per transaction) is answered and counted per kind; deleted documents are gone."""
    from pymongo import DeleteOne, ReplaceOne, UpdateOne

    coll = client.bench.followed
    ops: list[ReplaceOne[dict[str, object]] | UpdateOne | DeleteOne] = []
    for i in range(1000):
        ops.append(ReplaceOne({"_id": i}, {"_id": i, "v": "x"}, upsert=True))
    ops += [UpdateOne({"_id": i}, {"$set": {"v": "y"}}) for i in range(10)]
    ops += [DeleteOne({"_id": i}) for i in range(5)]
    res = coll.bulk_write(ops, ordered=True)
    assert res.acknowledged and res.deleted_count == 5
    assert coll.find_one({"_id": 7}) == {"_id": 7, "v": "y"}
    assert coll.find_one({"_id": 3}) is None
    stats = client.admin.command("sinkStats")
    assert stats["writeOps"]["bench.followed"] == {"replace": 1000, "update": 10, "delete": 5}

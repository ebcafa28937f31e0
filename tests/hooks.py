"""Functions the job calls at its test hooks (parallelsync/job/hooks.py) in fault tests."""

from __future__ import annotations

from typing import Any

from pymongo import MongoClient


def alter_one_document(target_uri: str, db: str, temp: str, **_: Any) -> None:
    """Change one document in the temp collection between the copy and the checks."""
    client: MongoClient[dict[str, Any]] = MongoClient(target_uri)
    try:
        coll = client[db][temp]
        doc = coll.find_one(sort=[("_id", 1)])
        assert doc is not None, "the temp collection is empty"
        coll.update_one({"_id": doc["_id"]}, {"$set": {"altered": True}})
    finally:
        client.close()

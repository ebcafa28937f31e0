"""The end of a copy on MongoDB: the target's indexes on the temp collection, the atomic swap."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database
from pymongo.errors import PyMongoError

from parallelsync.errors import TargetError


def existing_secondary_indexes(db: Database[Any], collection: str) -> list[dict[str, Any]]:
    """Index definitions of the current target (all but `_id_`), to rebuild on the temp."""
    if collection not in db.list_collection_names(filter={"name": collection}):
        return []
    specs = []
    for ix in db[collection].list_indexes():
        spec = dict(ix)
        if spec.get("name") == "_id_":
            continue
        spec.pop("v", None)
        spec.pop("ns", None)
        spec["key"] = dict(spec["key"])
        specs.append(spec)
    return specs


def build_indexes(db: Database[Any], temp: str, specs: list[dict[str, Any]]) -> None:
    if not specs:
        return
    try:
        db.command({"createIndexes": temp, "indexes": specs})
    except PyMongoError as exc:
        raise TargetError(f"building the target's indexes on {temp} failed: {exc}") from None


def rename(db: Database[Any], temp: str, target: str) -> None:
    """renameCollection with dropTarget: readers see the old or the new collection, never a mix."""
    try:
        db.client.admin.command(
            "renameCollection", f"{db.name}.{temp}", to=f"{db.name}.{target}", dropTarget=True
        )
    except PyMongoError as exc:
        raise TargetError(
            f"renaming {temp} to {target} failed: {exc}; the target is unchanged"
        ) from None


def drop_quietly(db: Database[Any], collection: str) -> bool:
    try:
        db.drop_collection(collection)
        return True
    except PyMongoError:
        return False

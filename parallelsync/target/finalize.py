"""The end of a copy: indexes on the temp collection, count check, and the one atomic swap."""

from __future__ import annotations

from typing import Any

from pymongo.database import Database
from pymongo.errors import PyMongoError

from parallelsync.errors import TargetError, VerifyError

TEMP_MARKER = "__psync_tmp_"


def temp_name(collection: str, job_id: str) -> str:
    return f"{collection}{TEMP_MARKER}{job_id}"


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


def check_count(db: Database[Any], temp: str, expected: int) -> int:
    found = db[temp].count_documents({})
    if found != expected:
        raise VerifyError(
            f"the temp collection holds {found} documents but {expected} rows were read; "
            "nothing was swapped and the target is unchanged"
        )
    return found


def check_range_counts(
    db: Database[Any], temp: str, ranges: list[tuple[int, dict[str, Any], int]]
) -> None:
    """Per-range counts: (range id, `_id` filter, rows read) for ranges selectable by `_id`."""
    bad = []
    for rid, filt, expected in ranges:
        found = db[temp].count_documents(filt)
        if found != expected:
            bad.append(f"range {rid}: {found} documents for {expected} rows")
    if bad:
        raise VerifyError(
            f"per-range counts differ ({'; '.join(bad[:5])}); nothing was swapped and the "
            "target is unchanged"
        )


def swap(db: Database[Any], temp: str, target: str) -> None:
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

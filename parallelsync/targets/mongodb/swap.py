"""The end of a copy on MongoDB: the target's indexes on the temp collection, the atomic swap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pymongo
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from parallelsync.errors import SWAP_DONE, SWAP_NOT_DONE, SWAP_UNKNOWN, SwapFailed, TargetError
from parallelsync.targets.mongodb.client import CALL_FLAG, bounded, timeout_error


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


def build_indexes(
    db: Database[Any],
    temp: str,
    specs: list[dict[str, Any]],
    *,
    timeout_s: float,
    flag: str = "--long-timeout-seconds",
) -> None:
    if not specs:
        return
    with bounded(f"building the target's indexes on {temp}", timeout_s, flag):
        db.command({"createIndexes": temp, "indexes": specs})


# How long looking at the target after a lost rename may take: a listing and a drop take
# milliseconds on a server that is back; one that is not back within a minute leaves it unknown.
SETTLE_S = 60.0


@dataclass(frozen=True)
class Identity:
    """Which collection a name stands for: whether it exists, and its UUID (None: the server
    shows none). Replacing a collection changes the UUID the name shows (MongoDB shows the
    renamed temp's, SecantusDB a new one), so comparing it with the one taken before the swap
    tells whether the target was replaced."""

    exists: bool
    uuid: Any = None


def identity(db: Database[Any], name: str) -> Identity:
    for info in db.list_collections(filter={"name": name}):
        return Identity(True, (info.get("info") or {}).get("uuid"))
    return Identity(False)


def rename(
    db: Database[Any],
    temp: str,
    target: str,
    *,
    before: Identity,
    timeout_s: float,
    flag: str = CALL_FLAG,
) -> str:
    """renameCollection with dropTarget: readers see the old or the new collection, never a mix.

    Returns how the outcome was established ("" when the server simply answered). A rename whose
    answer was lost (the connection broke, or it did not answer within the bound) may or may not
    have happened: it is settled by looking, never assumed (`settle`); `before` is the target as
    it was before the rename."""
    what = f"renaming {temp} to {target}"
    try:
        # Bounded by the client's socketTimeoutMS (`flag` names what set it).
        db.client.admin.command(
            "renameCollection", f"{db.name}.{temp}", to=f"{db.name}.{target}", dropTarget=True
        )
        return ""
    except OperationFailure as exc:
        if not exc.timeout:  # the server answered: the rename is atomic and did not happen
            msg = f"{what} failed: {exc}; the target is unchanged"
            raise SwapFailed(msg, SWAP_NOT_DONE) from None
        lost = timeout_error(what, exc, timeout_s, flag)
    except PyMongoError as exc:
        lost = (
            timeout_error(what, exc, timeout_s, flag)
            if exc.timeout
            else TargetError(f"{what}: the connection to MongoDB was lost ({exc})")
        )
    outcome = settle(db, temp, target, before, timeout_s)
    if outcome == SWAP_DONE:
        return (
            f"{lost}; after reconnecting, {db.name}.{target} is a new collection (the temp "
            "collection is gone): the swap took place"
        )
    if outcome == SWAP_NOT_DONE:
        raise SwapFailed(
            f"{lost}; after reconnecting, {db.name}.{target} is still the collection it was, and "
            f"the temp collection {temp} was dropped (so a rename still queued on the server "
            "cannot happen later): the target is unchanged",
            SWAP_NOT_DONE,
        )
    raise SwapFailed(
        f"{lost}; the outcome is unknown: checking after reconnecting failed too, so "
        f"{db.name}.{target} is either the old collection or the new copy. Look before relying "
        f"on it (does {temp} still exist? how many documents does {target} hold?); the job "
        "document records swap_outcome 'unknown'",
        SWAP_UNKNOWN,
    )


def settle(db: Database[Any], temp: str, target: str, before: Identity, timeout_s: float) -> str:
    """What became of a rename whose answer was lost: SWAP_DONE, SWAP_NOT_DONE or SWAP_UNKNOWN.

    The temp is dropped first: if the rename has not happened, it never can after that (one still
    queued on the server fails for want of its source), and if it has, there is nothing to drop.
    Then the target was replaced exactly when its name stands for another collection than
    before (the run holds the target's lease: nothing else replaces it)."""
    if before.exists and before.uuid is None:
        return SWAP_UNKNOWN  # the server shows no UUIDs: nothing tells old and new apart
    try:
        # One bound for the whole look (pymongo waits for the server to come back, and retries,
        # within it), so an unreachable server does not hold the run for long twice.
        with pymongo.timeout(min(timeout_s or SETTLE_S, SETTLE_S)):
            db.drop_collection(temp)
            now = identity(db, target)
    except PyMongoError:
        return SWAP_UNKNOWN
    if not before.exists:
        return SWAP_DONE if now.exists else SWAP_NOT_DONE
    if not now.exists:
        return SWAP_UNKNOWN  # someone dropped the target meanwhile
    return SWAP_NOT_DONE if now.uuid == before.uuid else SWAP_DONE


def drop_quietly(db: Database[Any], collection: str) -> bool:
    try:
        db.drop_collection(collection)
        return True
    except PyMongoError:
        return False

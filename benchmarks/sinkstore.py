"""The wire sink's small-document side store: just enough query and update semantics for the
control documents a sync tool keeps next to the bulk data (leases, job statistics).

Bulk inserts are only counted. Documents that arrive through updates, findAndModify or small
inserts (a handful per message) are kept here so that `find_one({_id})`, `update_one(...)
.matched_count`, `$inc` fencing tokens and `$or`/`$lt` lease conditions behave as on a server.
"""

from __future__ import annotations

import copy
from typing import Any

from bson.objectid import ObjectId

# Stored documents per namespace: the store is for control documents; a bulk load that happens
# to arrive in tiny batches is still counted but stops being stored after this many.
MAX_STORED_PER_NS = 10_000


def _get(doc: dict[str, Any], path: str) -> tuple[bool, Any]:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _cmp(op: str, have: bool, v: Any, arg: Any) -> bool:
    if op == "$exists":
        return have == bool(arg)
    if op == "$eq":
        return have and v == arg
    if op == "$ne":
        return not (have and v == arg)
    if op == "$in":
        return have and v in arg
    if op == "$nin":
        return not (have and v in arg)
    if not have or v is None:
        return False
    try:
        if op == "$lt":
            return bool(v < arg)
        if op == "$lte":
            return bool(v <= arg)
        if op == "$gt":
            return bool(v > arg)
        if op == "$gte":
            return bool(v >= arg)
    except TypeError:
        return False
    raise ValueError(f"unsupported query operator {op}")


def matches(doc: dict[str, Any], flt: dict[str, Any]) -> bool:
    for k, cond in flt.items():
        if k == "$or":
            if not any(matches(doc, c) for c in cond):
                return False
        elif k == "$and":
            if not all(matches(doc, c) for c in cond):
                return False
        elif isinstance(cond, dict) and cond and all(str(o).startswith("$") for o in cond):
            have, v = _get(doc, k)
            if not all(_cmp(op, have, v, arg) for op, arg in cond.items()):
                return False
        else:
            have, v = _get(doc, k)
            if not (have and v == cond):
                return False
    return True


def _set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        doc = doc.setdefault(p, {})
    doc[parts[-1]] = value


def apply_update(doc: dict[str, Any], update: Any, inserting: bool) -> dict[str, Any]:
    if isinstance(update, list):
        raise ValueError("pipeline updates are not supported by the wire sink")
    if update and not next(iter(update)).startswith("$"):  # replacement
        return {"_id": doc["_id"], **{k: v for k, v in update.items() if k != "_id"}}
    for op, fields in update.items():
        for path, val in fields.items():
            if op == "$set" or (op == "$setOnInsert" and inserting):
                _set_path(doc, path, copy.deepcopy(val))
            elif op == "$inc":
                _set_path(doc, path, _get(doc, path)[1] + val if _get(doc, path)[0] else val)
            elif op == "$unset":
                parts = path.split(".")
                have, parent = _get(doc, ".".join(parts[:-1])) if len(parts) > 1 else (True, doc)
                if have and isinstance(parent, dict):
                    parent.pop(parts[-1], None)
            elif op == "$max":
                have, cur = _get(doc, path)
                _set_path(doc, path, val if not have or val > cur else cur)
            elif op == "$push":
                have, cur = _get(doc, path)
                _set_path(doc, path, [*(cur if have else []), val])
            elif op != "$setOnInsert":
                raise ValueError(f"unsupported update operator {op}")
    return doc


def upsert_seed(query: dict[str, Any]) -> dict[str, Any]:
    """The document an upsert starts from: the equality fields of its query."""
    doc: dict[str, Any] = {}
    for k, v in query.items():
        if k.startswith("$") or (isinstance(v, dict) and any(str(o).startswith("$") for o in v)):
            continue
        _set_path(doc, k, copy.deepcopy(v))
    doc.setdefault("_id", ObjectId())
    return doc


class DocStore:
    """namespace -> {_id -> document}; callers hold the sink's lock."""

    def __init__(self) -> None:
        self.ns: dict[str, dict[Any, dict[str, Any]]] = {}

    def _key(self, _id: Any) -> Any:
        return repr(_id) if isinstance(_id, dict | list) else _id

    def put(self, ns: str, doc: dict[str, Any]) -> bool:
        docs = self.ns.setdefault(ns, {})
        if len(docs) >= MAX_STORED_PER_NS:
            return False
        docs[self._key(doc.get("_id"))] = doc
        return True

    def find(self, ns: str, flt: dict[str, Any], limit: int = 0) -> list[dict[str, Any]]:
        docs = self.ns.get(ns, {})
        if "_id" in flt and not isinstance(flt["_id"], dict):
            d = docs.get(self._key(flt["_id"]))
            found = [d] if d is not None and matches(d, flt) else []
        else:
            found = [d for d in docs.values() if matches(d, flt)]
        return found[:limit] if limit else found

    def delete(self, ns: str, flt: dict[str, Any], limit: int) -> int:
        victims = self.find(ns, flt, limit)
        docs = self.ns.get(ns, {})
        for d in victims:
            docs.pop(self._key(d.get("_id")), None)
        return len(victims)

    def rename(self, src: str, dst: str) -> None:
        self.ns[dst] = self.ns.pop(src, {})

    def drop(self, ns: str) -> None:
        self.ns.pop(ns, None)

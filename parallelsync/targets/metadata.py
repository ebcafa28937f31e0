"""`<collection>.metadata.json` next to a file target's `.bson`: what mongorestore reads to
recreate the collection's indexes.

The format is mongodump's (mongo-tools `mongodump/metadata_dump.go`): canonical extended JSON
`{"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}, ...],
"collectionName": NAME}`. mongodump adds `uuid` only for a collection that has one and
mongorestore uses it only with --preserveUUID; a file has no collection UUID, so there is none.

The indexes are the ones a MongoDB target would end with: `_id_`, plus the secondary indexes of
the target being replaced (the MongoDB target rebuilds the old collection's on the new one; here
the old target is the previous metadata file, so indexes added to it by hand survive a re-sync).
Collection options (validators, collation) are not carried, as the MongoDB target does not
carry them either.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from parallelsync.errors import TargetError

ID_INDEX: dict[str, Any] = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


def metadata_path(directory: Path, collection: str) -> Path:
    return directory / f"{collection}.metadata.json"


def secondary_indexes(path: Path) -> list[dict[str, Any]]:
    """The indexes other than `_id_` in an existing metadata file ([] when there is none).

    A file that is there but unreadable is refused rather than overwritten: it may hold index
    definitions someone wrote by hand."""
    if not path.exists():
        return []
    try:
        doc = json_util.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TargetError(
            f"{path} is not a metadata file mongorestore can read ({exc}); fix or remove it"
        ) from None
    indexes = doc.get("indexes") if isinstance(doc, dict) else None
    if not isinstance(indexes, list) or not all(_is_index(ix) for ix in indexes):
        raise TargetError(
            f"{path} is not a metadata file mongorestore can read (expected an object with "
            '"indexes": [{"key": {...}, "name": "..."}, ...]); fix or remove it'
        )
    return [{"v": 2, **ix} for ix in indexes if ix["name"] != "_id_"]


def _is_index(ix: Any) -> bool:
    return (
        isinstance(ix, dict)
        and isinstance(ix.get("key"), dict)
        and bool(ix["key"])
        and isinstance(ix.get("name"), str)
    )


def document(collection: str, secondary: list[dict[str, Any]]) -> dict[str, Any]:
    return {"options": {}, "indexes": [ID_INDEX, *secondary], "collectionName": collection}


def write(path: Path, doc: dict[str, Any]) -> None:
    """The metadata as mongodump writes it, flushed to disk (the caller renames it in place)."""
    text = json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS)
    try:
        with open(path, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise TargetError(f"writing {path} failed: {exc}") from None


def indexes_for_create(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The secondary index specs of a metadata document as `createIndexes` takes them."""
    return [
        {k: v for k, v in ix.items() if k not in ("v", "ns")}
        for ix in doc["indexes"]
        if ix["name"] != "_id_"
    ]

"""Reading a collection back for verification: content digests and per-`_id` hashes."""

from __future__ import annotations

from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

from parallelsync.transcode.checksum import Digest, doc_hash

# MongoDB returns the stored BSON byte for byte, so digests of raw documents compare with the
# digests the workers took of what they sent.
RAW = CodecOptions(document_class=RawBSONDocument)


def target_digest(coll: Collection[Any], filt: dict[str, Any]) -> Digest:
    d = Digest()
    raw = coll.with_options(codec_options=RAW)
    d.add_all(bytes(doc.raw) for doc in raw.find(filt, batch_size=10_000))
    return d


def id_key(v: Any) -> Any:
    """A hashable form of an `_id` (embedded documents by their raw bytes)."""
    return v.raw if isinstance(v, RawBSONDocument) else v


def target_hashes(coll: Collection[Any], filt: dict[str, Any], limit: int) -> dict[Any, int] | None:
    """Per-`_id` hashes of the documents the filter selects; None when there are over `limit`."""
    out: dict[Any, int] = {}
    raw = coll.with_options(codec_options=RAW)
    for doc in raw.find(filt, batch_size=10_000):
        if len(out) >= limit:
            return None
        out[id_key(doc["_id"])] = doc_hash(bytes(doc.raw))
    return out

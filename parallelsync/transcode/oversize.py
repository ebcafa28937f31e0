"""`--oversize skip`: leave documents over MongoDB's 16 MiB limit out and say which ones.

The transcoder raises `DocumentTooLarge` for a whole buffer. Only then (the rare case) the buffer
is encoded again without the size limit, the oversized documents are dropped from the batch, and
their `_id` and size are kept for the job document. Batches without an oversized row cost nothing
extra. The `rows` of a returned batch count the documents written, so the coordinator's count
check (documents in the temp collection == rows written) holds; skipped rows are reported apart.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import bson
import numpy as np

from parallelsync.errors import DocumentTooLarge
from parallelsync.transcode.batch import EncodedBatch
from parallelsync.transcode.bson_writer import Buffer
from parallelsync.transcode.encoder import DocumentEncoder
from parallelsync.transcode.model import Layout

# Entries kept per range and per job: enough to find the rows, bounded for the job document.
MAX_SKIPPED_ENTRIES = 1000
# The probe encoders' limit: BSON sizes are int32, and a PostgreSQL value is at most 1 GB.
_NO_LIMIT = 2**31 - 1


class SkippingEncoder(DocumentEncoder):
    """A `DocumentEncoder` whose batches leave out the documents over the limit."""

    def __init__(self, layout: Layout) -> None:
        super().__init__(layout)
        self.limit = layout.options.max_document_size
        unlimited = replace(layout.options, max_document_size=_NO_LIMIT)
        self._probe = DocumentEncoder(replace(layout, options=unlimited))
        # Encodes only `_id` (the first node): the cheap way to name a skipped row.
        self._ids = DocumentEncoder(Layout(layout.nodes[:1], layout.ncolumns, unlimited))
        self.count = 0
        self.entries: list[dict[str, Any]] = []

    def take(self) -> tuple[int, list[dict[str, Any]]]:
        """(count, first entries) since the last call: one range's worth."""
        out = (self.count, self.entries)
        self.count, self.entries = 0, []
        return out

    def encode(self, buf: Buffer, start: int = 0) -> EncodedBatch:
        try:
            return super().encode(buf, start)
        except DocumentTooLarge:
            pass
        full = self._probe.encode(buf, start)
        bounds = full.offsets.tolist()
        kept: list[bytes] = []
        ids: list[bytes] | None = None
        for i in range(full.rows):
            size = bounds[i + 1] - bounds[i]
            if size <= self.limit:
                kept.append(full.data[bounds[i] : bounds[i + 1]])
                continue
            self.count += 1
            if len(self.entries) < MAX_SKIPPED_ENTRIES:
                if ids is None:
                    ids = self._ids.encode(buf, start).documents()
                self.entries.append({"_id": bson.decode(ids[i])["_id"], "size": size})
        offsets = np.zeros(len(kept) + 1, dtype=np.int64)
        if kept:
            offsets[1:] = np.cumsum([len(d) for d in kept])
        return EncodedBatch(b"".join(kept), offsets, len(kept), full.end, full.finished)

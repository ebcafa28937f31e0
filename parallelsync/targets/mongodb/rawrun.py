"""Hand pymongo a whole run of pre-encoded documents as one object.

pymongo's public type for pre-encoded documents is `RawBSONDocument`, one per document. Creating
it costs ~2 µs per document (its `__init__` and size validation run in Python): more than
PostgreSQL's COPY and our transcoder together spend on a narrow row. The `insert` command's
documents travel as an OP_MSG document sequence, which is nothing but the documents' bytes back
to back, and pymongo's encoders (the C extension and the pure-Python fallback alike) write a raw
document by copying its `raw` bytes verbatim. A `RawRun` is a RawBSONDocument whose `raw` is many
documents back to back, so one object per insert command puts exactly the bytes on the wire that
one RawBSONDocument per document would: `tests/unit/test_rawrun.py` builds both messages with the
installed pymongo and compares them byte for byte, so an upgrade that changes this fails there,
and `MongoSink` checks every reply's count against the documents sent.

The only difference pymongo sees is the largest "document" of the command, which it checks
against the server's maxBsonObjectSize: a run is therefore cut at that size (16 MiB), which is
also the limit of a single document.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
from bson.raw_bson import RawBSONDocument

# A run's bytes stay within this, pymongo's maxBsonObjectSize check on the largest document.
MAX_RUN_BYTES = 16 * 1024 * 1024
MAX_RUN_DOCS = 100_000  # the server's maxWriteBatchSize


class RawRun(RawBSONDocument):
    """Documents `data[offsets[0]:offsets[-1]]`, sent as they are.

    As a Mapping it shows its first document (all pymongo's command logging ever reads); `raw`,
    what the encoders write, is the whole run.
    """

    __slots__ = ("_run", "count")

    def __init__(self, run: bytes, first_length: int, count: int) -> None:
        super().__init__(run[:first_length])  # validates the first document's framing
        self._run = run
        self.count = count

    @property
    def raw(self) -> bytes:
        return self._run

    def __repr__(self) -> str:
        return f"RawRun({self.count} documents, {len(self._run)} bytes)"


def runs(
    data: bytes,
    offsets: npt.NDArray[np.int64],
    max_bytes: int = MAX_RUN_BYTES,
    max_docs: int = MAX_RUN_DOCS,
) -> Iterator[RawRun]:
    """Cut documents data[offsets[i]:offsets[i+1]] into runs of at most max_bytes / max_docs.

    A single document over max_bytes still gets a run of its own: the server rejects it with a
    clear error, and `--oversize skip` keeps such documents out before they get here.
    """
    count = len(offsets) - 1
    i = 0
    while i < count:
        base = int(offsets[i])
        # first document whose end would pass the limit; at least one document per run
        j = int(np.searchsorted(offsets, base + max_bytes, side="right")) - 1
        j = min(max(j, i + 1), count, i + max_docs)
        end = int(offsets[j])
        whole = base == 0 and end == len(data)
        run = data if whole else data[base:end]
        yield RawRun(run, int(offsets[i + 1]) - base, j - i)
        i = j

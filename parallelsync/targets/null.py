"""`null:`: documents are encoded and discarded (benchmarks; `verify` reads the source this way)."""

from __future__ import annotations

from parallelsync.targets.base import BaseTarget, SinkSpec, TargetKind
from parallelsync.transcode.batch import EncodedBatch


class NullSink:
    """Discards documents: measures everything but the write."""

    def begin_range(self, range_id: int) -> None:
        pass

    def end_range(self) -> None:
        pass

    def insert(self, batch: EncodedBatch, *, allow_duplicates: bool) -> int:
        return batch.rows

    def close(self) -> None:
        pass


class NullTarget(BaseTarget):
    kind: TargetKind = "null"

    def __init__(self, collection: str) -> None:
        self.display = f"null:{collection}"

    def sink_spec(self, temp: str) -> SinkSpec:
        return SinkSpec("null", "", "", temp)

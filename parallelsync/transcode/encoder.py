"""Public transcoder API: binary COPY tuples in, concatenated BSON documents out."""

from __future__ import annotations

from parallelsync.transcode import impl
from parallelsync.transcode.batch import EncodedBatch
from parallelsync.transcode.bson_writer import Buffer
from parallelsync.transcode.copybinary import header_length
from parallelsync.transcode.impl import stats
from parallelsync.transcode.model import Layout
from parallelsync.transcode.reference import ReferenceEncoder

__all__ = ["DocumentEncoder", "EncodedBatch", "header_length"]


class DocumentEncoder:
    """Encodes whole buffers of COPY tuples with the layout's documents.

    fast=None uses the compiled kernel when it is loaded (`impl.IMPL == "c"`), else the reference
    path; fast=True requires the kernel (ImportError saying how to build it when it is missing),
    fast=False forces the reference path (tests, benchmarks). Both produce the same bytes.
    `impl` says which one this encoder runs.
    """

    def __init__(self, layout: Layout, *, fast: bool | None = None) -> None:
        self.layout = layout
        self._reference = ReferenceEncoder(layout)
        if fast is None:
            fast = impl.IMPL == "c"
        self._encode = self._encode_reference
        if fast:
            from parallelsync.transcode.compiled import CompiledEncoder

            module = impl.KERNEL or impl.load_extension()
            self._encode = CompiledEncoder(layout, self._reference, module).encode
        self.fast = fast
        self.impl: impl.Impl = "c" if fast else "python"

    def encode(self, buf: Buffer, start: int = 0) -> EncodedBatch:
        """Encode every complete tuple of buf[start:] (and note the trailer if present)."""
        return self._encode(buf, start)

    def _encode_reference(self, buf: Buffer, start: int) -> EncodedBatch:
        batch = self._reference.encode(buf, start)
        stats.batches["python"] += 1
        return batch

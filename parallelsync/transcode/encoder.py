"""Public transcoder API: binary COPY tuples in, concatenated BSON documents out."""

from __future__ import annotations

from parallelsync.transcode.batch import EncodedBatch
from parallelsync.transcode.bson_writer import Buffer
from parallelsync.transcode.copybinary import header_length
from parallelsync.transcode.model import Layout
from parallelsync.transcode.reference import ReferenceEncoder

__all__ = ["DocumentEncoder", "EncodedBatch", "header_length"]

# Below this many input bytes the reference path is used even when fast is chosen: the fast
# path has a fixed cost of several kernel dispatches and numpy calls per batch (~50 µs), more
# than the reference path needs for the handful of tuples that fit here. Both produce the same
# bytes (tested), so this only affects speed.
SMALL_INPUT = 1024


def _numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class DocumentEncoder:
    """Encodes whole buffers of COPY tuples with the layout's documents.

    fast=None picks the numba path when numba is importable and at least one field has a native
    kernel kind (otherwise every value would go through Python anyway and the kernel only adds
    its call overhead), and then still encodes inputs under SMALL_INPUT bytes with the reference
    path; fast=True/False forces the choice (tests, benchmarks).
    """

    def __init__(self, layout: Layout, *, fast: bool | None = None) -> None:
        self.layout = layout
        self._reference = ReferenceEncoder(layout)
        # Only an automatic choice hands small inputs to the reference path; fast=True always
        # runs the kernels (tests compare the two paths on tiny inputs).
        self._small_to_reference = fast is None
        if fast is None:
            fast = _numba_available() and _has_native(layout)
        self._encode = self._reference.encode
        if fast:
            from parallelsync.transcode.fast import FastEncoder

            try:
                self._encode = FastEncoder(layout, self._reference).encode
            except ValueError:
                if not self._small_to_reference:
                    raise
                fast = False  # a layout the kernels cannot express (nesting too deep)
        self.fast = fast

    def encode(self, buf: Buffer, start: int = 0) -> EncodedBatch:
        """Encode every complete tuple of buf[start:] (and note the trailer if present)."""
        if self._small_to_reference and len(buf) - start < SMALL_INPUT:
            return self._reference.encode(buf, start)
        return self._encode(buf, start)


def _has_native(layout: Layout) -> bool:
    from parallelsync.transcode.fast import layout_has_native

    return layout_has_native(layout.nodes)

"""The reference transcoder: plain Python, one value encoder per column, every codec.

It is the definition of the output: the fast path must produce the same bytes, and falls back to
this path to report any error with its full context.
"""

from __future__ import annotations

from dataclasses import dataclass

import bson
import numpy as np

from parallelsync.errors import DocumentTooLarge, EncodeError
from parallelsync.transcode.batch import EncodedBatch
from parallelsync.transcode.bson_writer import (
    T_DOCUMENT,
    T_NULL,
    Buffer,
    ValueEncoder,
    cstring,
    frame_document,
    pack_i32,
)
from parallelsync.transcode.copybinary import walk_tuple
from parallelsync.transcode.model import Codec, DocNode, FieldNode, Layout, Node
from parallelsync.transcode.types import value_encoder

_PLACEHOLDER = b"\x00\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class Step:
    """One node compiled: a field (children None) or an embedded document."""

    path: str  # dotted key path, for messages
    key: bytes  # key cstring
    column: int
    codec: Codec | None
    encode: ValueEncoder | None
    children: tuple[Step, ...] | None


def compile_nodes(nodes: tuple[Node, ...], layout: Layout, prefix: str = "") -> tuple[Step, ...]:
    steps: list[Step] = []
    for node in nodes:
        path = prefix + node.key
        key = cstring(node.key)
        if isinstance(node, DocNode):
            children = compile_nodes(node.children, layout, path + ".")
            steps.append(Step(path, key, -1, None, None, children))
            continue
        assert isinstance(node, FieldNode)
        if not 0 <= node.column < layout.ncolumns:
            raise EncodeError(
                f"field {path!r} reads column {node.column}, the COPY has {layout.ncolumns}"
            )
        try:
            encode = value_encoder(node.codec, layout.options)
        except ValueError as exc:
            raise EncodeError(f"field {path!r}: {exc}") from None
        steps.append(Step(path, key, node.column, node.codec, encode, None))
    return tuple(steps)


def describe_id(id_element: bytes | bytearray | None) -> str:
    """repr() of the _id value, from its encoded element."""
    if id_element is None:
        return "<not encodable>"
    try:
        document = bson.decode(frame_document(bytes(id_element)))
        return repr(next(iter(document.values())))
    except Exception:  # a message helper must never mask the real error
        return f"<bson {bytes(id_element).hex()}>"


class ReferenceEncoder:
    def __init__(self, layout: Layout) -> None:
        if not layout.nodes:
            raise EncodeError("the layout has no fields: the first field must be _id")
        self.layout = layout
        self.steps = compile_nodes(layout.nodes, layout)
        self.omit_nulls = layout.options.nulls == "omit"
        self.max_size = layout.options.max_document_size

    def encode(self, buf: Buffer, start: int = 0) -> EncodedBatch:
        ncolumns = self.layout.ncolumns
        steps = self.steps
        first, rest = steps[0], steps[1:]
        write = self._write
        out = bytearray()
        offsets = [0]
        pos, size, finished = start, len(buf), False
        while pos < size:
            cells, pos = walk_tuple(buf, pos, ncolumns)
            if cells is None:
                finished = True
                break
            doc_start = len(out)
            out += _PLACEHOLDER
            write(out, buf, cells, (first,), None)
            id_element = out[doc_start + 4 :]
            write(out, buf, cells, rest, id_element)
            out.append(0)
            doc_size = len(out) - doc_start
            if doc_size > self.max_size:
                raise DocumentTooLarge(
                    f"the document with _id {describe_id(id_element)} is {doc_size} bytes, over "
                    f"the {self.max_size}-byte limit: exclude or shorten its largest columns"
                )
            out[doc_start : doc_start + 4] = pack_i32(doc_size)
            offsets.append(len(out))
        return EncodedBatch(
            data=bytes(out),
            offsets=np.array(offsets, dtype=np.int64),
            rows=len(offsets) - 1,
            end=pos,
            finished=finished,
        )

    def _write(
        self,
        out: bytearray,
        buf: Buffer,
        cells: list[tuple[int, int]],
        steps: tuple[Step, ...],
        id_element: bytearray | None,
    ) -> None:
        for step in steps:
            if step.children is not None:
                out.append(T_DOCUMENT)
                out += step.key
                at = len(out)
                out += _PLACEHOLDER
                self._write(out, buf, cells, step.children, id_element)
                out.append(0)
                out[at : at + 4] = pack_i32(len(out) - at)
                continue
            pos, length = cells[step.column]
            if length < 0:
                if not self.omit_nulls:
                    out.append(T_NULL)
                    out += step.key
                continue
            assert step.encode is not None
            try:
                btype, payload = step.encode(buf, pos, length)
            except Exception as exc:
                raise self._value_error(step, exc, id_element) from exc
            out.append(btype)
            out += step.key
            out += payload

    @staticmethod
    def _value_error(step: Step, exc: Exception, id_element: bytearray | None) -> EncodeError:
        codec = step.codec.name if step.codec is not None else "?"
        reason = str(exc) or type(exc).__name__
        return EncodeError(
            f"cannot encode column {step.path!r} ({codec}) of the row with _id "
            f"{describe_id(id_element)}: {reason}"
        )

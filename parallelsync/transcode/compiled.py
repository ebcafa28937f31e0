"""The compiled path: a layout compiled into the C kernel's program, and the batch fallback.

Native kinds (fixed-width numbers, dates, text, bytea, uuid) are written by the kernel; numeric
(decimal128 mode) and jsonb have C cell encoders that hand the rare values they cannot represent
exactly back to Python. Every other codec (arrays, ranges, composites, time, network ...) is
"pre-encoded": the kernel calls its reference encoder per non-NULL cell and copies the result in.

The kernel reports bad data with an error code and the batch is re-run on the reference path,
which raises the exact error (column, _id): errors are rare and must be exact, not fast. If the
reference path then encodes the batch, the kernel refused good data, which is a kernel bug: the
batch is still delivered, and the fallback is logged and counted (`impl.stats`).
"""

from __future__ import annotations

from types import ModuleType

from parallelsync.transcode.batch import EncodedBatch
from parallelsync.transcode.bson_writer import Buffer, ValueEncoder, cstring
from parallelsync.transcode.impl import record_fallback, stats
from parallelsync.transcode.model import Codec, DocNode, FieldNode, Layout, Node
from parallelsync.transcode.reference import ReferenceEncoder
from parallelsync.transcode.types import value_encoder

# (kind name, column, key cstring, slot) per kernel op; see _kernel.Kernel.
Op = tuple[str, int, bytes, int]
Slot = tuple[int, ValueEncoder, str]


def kernel_kind(codec: Codec, native: dict[str, int]) -> str:
    """The kernel's kind for a codec: a native kind name, or "preencoded"."""
    if codec.mode or codec.name not in native:
        return "preencoded"
    return codec.name


def cell_kernel(codec: Codec) -> str:
    """The C cell encoder a pre-encoded codec tries first ("" = Python only)."""
    if codec.name == "numeric" and codec.mode == "":
        return "numeric"
    # only jsonb: json text may repeat keys, where dict semantics (first place, last value) apply
    if codec.name == "jsonb":
        return "jsonb"
    return ""


def compile_layout(layout: Layout, native: dict[str, int]) -> tuple[list[Op], list[Slot]]:
    ops: list[Op] = []
    slots: list[Slot] = []

    def add(nodes: tuple[Node, ...]) -> None:
        for node in nodes:
            key = cstring(node.key)
            if isinstance(node, DocNode):
                ops.append(("doc_start", 0, key, -1))
                add(node.children)
                ops.append(("doc_end", 0, b"", -1))
                continue
            assert isinstance(node, FieldNode)
            kind = kernel_kind(node.codec, native)
            slot = -1
            if kind == "preencoded":
                slot = len(slots)
                encoder = value_encoder(node.codec, layout.options)
                slots.append((node.column, encoder, cell_kernel(node.codec)))
            ops.append((kind, node.column, key, slot))

    add(layout.nodes)
    return ops, slots


_REASONS = {1: "framing", 2: "value", 3: "document too large", 4: "cell encoder raised"}


class CompiledEncoder:
    def __init__(self, layout: Layout, reference: ReferenceEncoder, module: ModuleType) -> None:
        self.layout = layout
        self.reference = reference
        ops, slots = compile_layout(layout, module.NATIVE_KINDS)
        options = layout.options
        self.kernel = module.Kernel(
            ops,
            slots,
            layout.ncolumns,
            options.nulls == "omit",
            options.infinity,
            options.max_document_size,
            options.json_keys != "keep",
        )

    def encode(self, buf: Buffer, start: int = 0) -> EncodedBatch:
        try:
            data, offsets, rows, end, finished, err, _row = self.kernel.encode(buf, start)
        except MemoryError:
            raise
        except Exception as exc:  # a bug in the kernel's glue: never hide it, never lose data
            return self._fallback(buf, start, f"kernel raised {type(exc).__name__}: {exc}")
        if err:
            return self._fallback(buf, start, _REASONS.get(err, f"error {err}"))
        stats.batches["c"] += 1
        return EncodedBatch(data=data, offsets=offsets, rows=rows, end=end, finished=finished)

    def _fallback(self, buf: Buffer, start: int, reason: str) -> EncodedBatch:
        # The usual case: bad data, and this raises the error with its column and _id.
        batch = self.reference.encode(buf, start)
        record_fallback(reason)
        stats.batches["python"] += 1
        return batch

"""The fast path: numba kernels for the walk and the assembly, reference encoders for rare types.

Native kinds (fixed-width numbers, dates, text, bytea, uuid) are written by the kernel. Other
codecs (numeric, json, arrays, ranges, composites, time, network ...) are "pre-encoded": Python
runs their reference encoder per non-NULL cell into one blob (type byte + payload) and the
kernel copies it into place. Any error sends the whole batch through the reference path, which
raises with the full message (column, _id): errors are rare and must be exact, not fast.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from parallelsync.transcode import jsonkernel, kernels
from parallelsync.transcode.batch import EncodedBatch
from parallelsync.transcode.bson_writer import Buffer, ValueEncoder, cstring
from parallelsync.transcode.model import Codec, DocNode, FieldNode, Layout, Node
from parallelsync.transcode.reference import ReferenceEncoder
from parallelsync.transcode.types import value_encoder

_NATIVE = {
    "bool": kernels.K_BOOL,
    "int2": kernels.K_INT2,
    "int4": kernels.K_INT4,
    "int8": kernels.K_INT8,
    "oid": kernels.K_UINT32,
    "xid": kernels.K_UINT32,
    "float4": kernels.K_FLOAT4,
    "float8": kernels.K_FLOAT8,
    "date": kernels.K_DATE,
    "timestamp": kernels.K_TIMESTAMP,
    "timestamptz": kernels.K_TIMESTAMP,
    "text": kernels.K_TEXT,
    "bytea": kernels.K_BYTEA,
    "tid": kernels.K_TID,
}
_INFINITY = {
    "clamp": kernels.INF_CLAMP,
    "null": kernels.INF_NULL,
    "string": kernels.INF_STRING,
    "error": kernels.INF_ERROR,
}


# Per-cell kernels that try a pre-encoded column first and hand back what they do not handle.
_NO_KERNEL = 0
_NUMERIC_KERNEL = 1
_JSONB_KERNEL = 2


def _cell_kernel(codec: Codec) -> int:
    if codec.name == "numeric" and codec.mode == "":
        return _NUMERIC_KERNEL
    # only jsonb: json text may repeat keys, where dict semantics (first place, last value) apply
    if codec.name == "jsonb":
        return _JSONB_KERNEL
    return _NO_KERNEL


def native_kind(codec: Codec) -> int:
    if codec.name == "uuid" and codec.mode == "":
        return kernels.K_UUID
    if codec.mode:
        return kernels.K_PREENCODED
    return _NATIVE.get(codec.name, kernels.K_PREENCODED)


def layout_has_native(nodes: tuple[Node, ...]) -> bool:
    for node in nodes:
        if isinstance(node, DocNode):
            if layout_has_native(node.children):
                return True
        elif native_kind(node.codec) != kernels.K_PREENCODED:
            return True
    return False


class FastEncoder:
    def __init__(self, layout: Layout, reference: ReferenceEncoder) -> None:
        self.layout = layout
        self.reference = reference
        kinds: list[int] = []
        cols: list[int] = []
        key_offs: list[int] = []
        key_lens: list[int] = []
        slots: list[int] = []
        keys = bytearray()
        # (column, encoder, kernel that tries first) per pre-encoded field, in slot order
        self.preencoded: list[tuple[int, ValueEncoder, int]] = []

        def add(kind: int, column: int, key: bytes, slot: int) -> None:
            kinds.append(kind)
            cols.append(column)
            key_offs.append(len(keys))
            key_lens.append(len(key))
            slots.append(slot)
            keys.extend(key)

        def compile_nodes(nodes: tuple[Node, ...], depth: int) -> None:
            if depth >= kernels.MAX_DEPTH:
                raise ValueError("layout nests deeper than the fast path supports")
            for node in nodes:
                key = cstring(node.key)
                if isinstance(node, DocNode):
                    add(kernels.OP_DOC_START, 0, key, -1)
                    compile_nodes(node.children, depth + 1)
                    add(kernels.OP_DOC_END, 0, b"", -1)
                    continue
                assert isinstance(node, FieldNode)
                kind = native_kind(node.codec)
                slot = -1
                if kind == kernels.K_PREENCODED:
                    slot = len(self.preencoded)
                    encoder = value_encoder(node.codec, layout.options)
                    self.preencoded.append((node.column, encoder, _cell_kernel(node.codec)))
                add(kind, node.column, key, slot)

        compile_nodes(layout.nodes, 0)
        self.op_kind = np.array(kinds, dtype=np.int64)
        self.op_col = np.array(cols, dtype=np.int64)
        self.op_key_off = np.array(key_offs, dtype=np.int64)
        self.op_key_len = np.array(key_lens, dtype=np.int64)
        self.op_slot = np.array(slots, dtype=np.int64)
        self.keys = np.frombuffer(bytes(keys) or b"\x00", dtype=np.uint8)
        options = layout.options
        self.omit_null = options.nulls == "omit"
        self.inf_policy = _INFINITY[options.infinity]
        self.max_doc = options.max_document_size
        self.check_json_keys = options.json_keys != "keep"

    def encode(self, buf: Buffer, start: int = 0) -> EncodedBatch:
        data = np.frombuffer(buf, dtype=np.uint8)
        # numba compiles one variant per array type, and a bytearray (the worker's buffers) would
        # type as writable where bytes (warm-up, tests) type as readonly: a second ~40 s compile
        # on the first batch of every worker. The kernels only read it; make it readonly always.
        data.flags.writeable = False
        rows, end, finished, err, offs, lens = kernels.walk(data, start, self.layout.ncolumns)
        if err != kernels.ERR_NONE:
            return self.reference.encode(buf, start)
        try:
            blob, blob_off, blob_len = self._preencode(buf, data, rows, offs, lens)
        except Exception:
            return self.reference.encode(buf, start)
        out, doc_off, err, _row = kernels.assemble(
            data,
            offs,
            lens,
            self.op_kind,
            self.op_col,
            self.op_key_off,
            self.op_key_len,
            self.op_slot,
            self.keys,
            blob,
            blob_off,
            blob_len,
            self.omit_null,
            self.inf_policy,
            self.max_doc,
        )
        if err != kernels.ERR_NONE:
            return self.reference.encode(buf, start)
        return EncodedBatch(
            data=out.tobytes(), offsets=doc_off, rows=int(rows), end=int(end), finished=finished
        )

    def _preencode(
        self,
        buf: Buffer,
        data: npt.NDArray[np.uint8],
        rows: int,
        offs: npt.NDArray[np.int64],
        lens: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        nslots = len(self.preencoded)
        blob_off = np.zeros((rows, nslots), dtype=np.int64)
        blob_len = np.zeros((rows, nslots), dtype=np.int64)
        pieces: list[npt.NDArray[np.uint8]] = []
        base = 0
        for slot, (column, encode, cell_kernel) in enumerate(self.preencoded):
            lengths = lens[:, column]
            if cell_kernel != _NO_KERNEL:
                if cell_kernel == _NUMERIC_KERNEL:
                    cells, done = kernels.numeric_cells(data, offs, lens, column)
                    cell_off = 17 * np.arange(rows, dtype=np.int64)
                    cell_len = np.full(rows, 17, dtype=np.int64)
                else:
                    cells, cell_off, cell_len, done = jsonkernel.jsonb_cells(
                        data, offs, lens, column, True, self.check_json_keys
                    )
                blob_off[:, slot] = base + cell_off
                blob_len[:, slot] = np.where(done, cell_len, 0)
                pieces.append(cells)
                base += len(cells)
                todo = np.flatnonzero(~done & (lengths >= 0))
            else:
                todo = np.flatnonzero(lengths >= 0)
            if not len(todo):
                continue
            extra = bytearray()
            slot_off: list[int] = []
            slot_len: list[int] = []
            for pos, length in zip(
                offs[todo, column].tolist(), lengths[todo].tolist(), strict=True
            ):
                btype, payload = encode(buf, pos, length)
                slot_off.append(base + len(extra))
                extra.append(btype)
                extra += payload
                slot_len.append(len(payload) + 1)
            blob_off[todo, slot] = slot_off
            blob_len[todo, slot] = slot_len
            pieces.append(np.frombuffer(extra, dtype=np.uint8))
            base += len(extra)
        # never an empty array: numba would have to type a zero-size buffer specially
        pieces.append(np.zeros(1, dtype=np.uint8))
        return np.concatenate(pieces), blob_off, blob_len

# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The compiled transcoder: whole buffers of COPY BINARY tuples -> concatenated BSON documents.

One `Kernel.encode` call handles every tuple of a buffer in four phases:

1. walk (no GIL): the offset and length of every field, checking the framing;
2. C cells (no GIL): numeric -> Decimal128 and jsonb -> BSON for the columns that have them;
3. Python cells (GIL): the reference encoder of every other pre-encoded codec (arrays, ranges,
   composites, intervals, network types ...) and of the cells phase 2 handed back, one call per
   non-NULL cell, into the same side buffer;
4. assembly (no GIL): every document, _id first, written straight into the result `bytes`.

Phases 1, 2 and 4 release the GIL, so the worker's reader and writer threads keep running while a
batch is transcoded. The kernel never raises for bad data: it returns an error code and the
caller re-runs the reference path, which raises with the full message (column, _id).
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF
from libc.stdint cimport INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, int32_t, int64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from parallelsync.transcode._decimal128 cimport DECIMAL128_BYTES, numeric_decimal128
from parallelsync.transcode._jsonb cimport JSON_ROOM_EXTRA, JSON_ROOM_PER_BYTE, json_value
from parallelsync.transcode._wire cimport (
    copy_small,
    rd_f32_as_f64,
    rd_i16,
    rd_i32,
    rd_i64,
    rd_u16,
    rd_u32,
    uchar,
    valid_utf8,
    wr_f64,
    wr_i32,
    wr_i64,
)

import numpy as np

cdef extern from "Python.h":
    # The documents are written straight into the bytes object that is returned: allocated at an
    # upper bound of the batch's size, then shrunk in place (realloc), so nothing is copied.
    # Declared with a raw pointer result so that Cython leaves its reference to us.
    PyObject* _new_bytes "PyBytes_FromStringAndSize"(const char* data, Py_ssize_t size)
    int _PyBytes_Resize(PyObject** obj, Py_ssize_t size) except -1

cdef enum Op:
    OP_DOC_START = -1
    OP_DOC_END = -2
    K_PREENCODED = 0
    K_BOOL = 1
    K_INT2 = 2
    K_INT4 = 3
    K_INT8 = 4
    K_UINT32 = 5
    K_FLOAT4 = 6
    K_FLOAT8 = 7
    K_UUID = 8
    K_DATE = 9
    K_TIMESTAMP = 10
    K_TEXT = 11
    K_BYTEA = 12
    K_TID = 13

cdef enum Cell:
    CELL_PYTHON = 0
    CELL_NUMERIC = 1
    CELL_JSONB = 2

cdef enum Infinity:
    INF_CLAMP = 0
    INF_CLAMP_INT64 = 1
    INF_NULL = 2
    INF_STRING = 3
    INF_ERROR = 4

cdef enum Error:
    E_NONE = 0
    E_FRAMING = 1  # the COPY framing is broken or truncated
    E_VALUE = 2  # a native value is malformed (width, UTF-8) or refused (infinity "error")
    E_TOO_LARGE = 3  # a document is over max_document_size
    E_CELL = 4  # a Python cell encoder raised

ERR_NONE = E_NONE
ERR_FRAMING = E_FRAMING
ERR_VALUE = E_VALUE
ERR_TOO_LARGE = E_TOO_LARGE
ERR_CELL = E_CELL

# Codec name -> the kind the assembly writes itself. Everything else is pre-encoded.
NATIVE_KINDS = {
    "bool": K_BOOL,
    "int2": K_INT2,
    "int4": K_INT4,
    "int8": K_INT8,
    "oid": K_UINT32,
    "xid": K_UINT32,
    "float4": K_FLOAT4,
    "float8": K_FLOAT8,
    "uuid": K_UUID,
    "date": K_DATE,
    "timestamp": K_TIMESTAMP,
    "timestamptz": K_TIMESTAMP,
    "text": K_TEXT,
    "bytea": K_BYTEA,
    "tid": K_TID,
}
_CELLS = {"": CELL_PYTHON, "numeric": CELL_NUMERIC, "jsonb": CELL_JSONB}
_INFINITY = {
    "clamp": INF_CLAMP,
    "clamp-int64": INF_CLAMP_INT64,
    "null": INF_NULL,
    "string": INF_STRING,
    "error": INF_ERROR,
}

cdef int64_t EPOCH_DAYS = 10957  # PostgreSQL counts from 2000-01-01, BSON from 1970-01-01
cdef int64_t EPOCH_MS = 946684800000
cdef int64_t MS_PER_DAY = 86400000
# --infinity clamp: the first and last millisecond of years 1-9999, which every BSON reader
# (drivers' datetime types, JavaScript's Date, mongo tools) can represent.
cdef int64_t CLAMP_MIN_MS = -62135596800000  # 0001-01-01T00:00:00.000Z
cdef int64_t CLAMP_MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


cdef inline Py_ssize_t _max_payload(int kind) noexcept nogil:
    """Upper bound of a native value's payload, beyond the data bytes it copies."""
    if kind == K_BOOL:
        return 1
    if kind == K_INT2 or kind == K_INT4:
        return 4
    if kind == K_UUID:
        return 21
    if kind == K_TEXT or kind == K_BYTEA:
        return 5
    if kind == K_DATE or kind == K_TIMESTAMP:
        return 14  # "-infinity" as a BSON string under the string policy
    if kind == K_PREENCODED:
        return 0  # the cell's own length is added per cell
    return 8


cdef int _walk(const uchar* data, Py_ssize_t size, Py_ssize_t start, int ncols,
               Py_ssize_t* offs, int32_t* lens, Py_ssize_t max_rows, int64_t* col_bytes,
               Py_ssize_t* rows_out, Py_ssize_t* end_out, bint* finished) noexcept nogil:
    """Every field's offset and length (-1 = NULL); per-column sums of the value bytes."""
    cdef Py_ssize_t pos = start, rows = 0, base
    cdef int c, nf
    cdef int32_t length
    cdef int err = E_NONE
    finished[0] = False
    while pos < size:
        if pos + 2 > size:
            err = E_FRAMING
            break
        nf = rd_i16(data + pos)
        if nf == -1:
            finished[0] = True
            pos += 2
            break
        if nf != ncols or rows >= max_rows:
            err = E_FRAMING
            break
        pos += 2
        base = rows * ncols
        for c in range(ncols):
            if pos + 4 > size:
                err = E_FRAMING
                break
            length = rd_i32(data + pos)
            pos += 4
            offs[base + c] = pos
            if length >= 0:
                if length > size - pos:
                    err = E_FRAMING
                    break
                lens[base + c] = length
                col_bytes[c] += length
                pos += length
            else:
                lens[base + c] = -1
        if err != E_NONE:
            break
        rows += 1
    rows_out[0] = rows
    end_out[0] = pos
    return err


cdef inline bint _grow(uchar** buf, Py_ssize_t* cap, Py_ssize_t need) noexcept nogil:
    """Make room for `need` bytes in a malloc'd buffer; False when out of memory."""
    if need <= cap[0]:
        return True
    cdef Py_ssize_t bigger = cap[0] * 2
    if bigger < need:
        bigger = need
    cdef uchar* p = <uchar*>realloc(buf[0], bigger)
    if p == NULL:
        return False
    buf[0] = p
    cap[0] = bigger
    return True


cdef inline Py_ssize_t _write_infinity(uchar* out, Py_ssize_t t, Py_ssize_t q, bint positive,
                                       int policy) noexcept nogil:
    if policy == INF_NULL:
        out[t] = 0x0A
        return q
    if policy == INF_STRING:
        out[t] = 0x02
        if positive:
            wr_i32(out + q, 9)
            memcpy(out + q + 4, b"infinity", 9)
            return q + 13
        wr_i32(out + q, 10)
        memcpy(out + q + 4, b"-infinity", 10)
        return q + 14
    if policy == INF_ERROR:
        return -1
    out[t] = 0x09
    if policy == INF_CLAMP_INT64:
        wr_i64(out + q, INT64_MAX if positive else INT64_MIN)
    else:
        wr_i64(out + q, CLAMP_MAX_MS if positive else CLAMP_MIN_MS)
    return q + 8


cdef inline Py_ssize_t _write_value(uchar* out, Py_ssize_t t, Py_ssize_t q, int kind,
                                    const uchar* p, Py_ssize_t n, int inf_policy) noexcept nogil:
    """Type byte at out[t], payload at out[q:]; return the payload's end, or -1 = bad value."""
    cdef int64_t v
    if kind == K_TEXT:
        if not valid_utf8(p, n):
            return -1
        out[t] = 0x02
        wr_i32(out + q, <int32_t>(n + 1))
        memcpy(out + q + 4, p, n)
        out[q + 4 + n] = 0
        return q + n + 5
    if kind == K_INT4:
        if n != 4:
            return -1
        out[t] = 0x10
        wr_i32(out + q, rd_i32(p))
        return q + 4
    if kind == K_INT8:
        if n != 8:
            return -1
        out[t] = 0x12
        wr_i64(out + q, rd_i64(p))
        return q + 8
    if kind == K_FLOAT8:
        if n != 8:
            return -1
        out[t] = 0x01
        wr_i64(out + q, rd_i64(p))  # the same 8 bytes, reversed
        return q + 8
    if kind == K_TIMESTAMP:
        if n != 8:
            return -1
        v = rd_i64(p)
        if v == INT64_MAX or v == INT64_MIN:
            return _write_infinity(out, t, q, v == INT64_MAX, inf_policy)
        out[t] = 0x09
        # floor, not truncation: -1 µs is in the millisecond before the epoch
        wr_i64(out + q, (v // 1000 - (1 if v % 1000 < 0 else 0)) + EPOCH_MS)
        return q + 8
    if kind == K_BOOL:
        if n != 1:
            return -1
        out[t] = 0x08
        out[q] = 1 if p[0] != 0 else 0
        return q + 1
    if kind == K_INT2:
        if n != 2:
            return -1
        out[t] = 0x10
        wr_i32(out + q, rd_i16(p))
        return q + 4
    if kind == K_UINT32:
        if n != 4:
            return -1
        out[t] = 0x12
        wr_i64(out + q, <int64_t>rd_u32(p))
        return q + 8
    if kind == K_FLOAT4:
        if n != 4:
            return -1
        out[t] = 0x01
        wr_f64(out + q, rd_f32_as_f64(p))
        return q + 8
    if kind == K_UUID:
        if n != 16:
            return -1
        out[t] = 0x05
        wr_i32(out + q, 16)
        out[q + 4] = 4  # binary subtype 4: standard UUID
        memcpy(out + q + 5, p, 16)
        return q + 21
    if kind == K_BYTEA:
        out[t] = 0x05
        wr_i32(out + q, <int32_t>n)
        out[q + 4] = 0
        memcpy(out + q + 5, p, n)
        return q + n + 5
    if kind == K_DATE:
        if n != 4:
            return -1
        v = rd_i32(p)
        if v == INT32_MAX or v == INT32_MIN:
            return _write_infinity(out, t, q, v == INT32_MAX, inf_policy)
        out[t] = 0x09
        wr_i64(out + q, (v + EPOCH_DAYS) * MS_PER_DAY)
        return q + 8
    if kind == K_TID:
        if n != 6:
            return -1
        out[t] = 0x12
        wr_i64(out + q, (<int64_t>rd_u32(p) << 16) | rd_u16(p + 4))
        return q + 8
    return -1


# Scratch buffers above this size are given back after a batch instead of kept for the next.
cdef Py_ssize_t KEEP_SCRATCH = 64 * 1024 * 1024


cdef struct Scratch:
    # A batch's working arrays, kept by the Kernel between batches: fresh malloc'd memory of this
    # size comes from mmap (or a trimmed heap), and first-touch page faults on it cost ~0.1 µs per
    # row of a 9-column table (perf: clear_page, exc_page_fault), a fifth of the whole transcode.
    Py_ssize_t* offs
    int32_t* lens
    Py_ssize_t fields_cap  # entries of offs and lens
    Py_ssize_t* cell_off
    Py_ssize_t* cell_len
    Py_ssize_t cells_idx_cap  # entries of cell_off and cell_len
    uchar* cells
    Py_ssize_t cells_cap  # bytes of cells
    int64_t* col_bytes
    Py_ssize_t* stack


cdef void _scratch_free(Scratch* s) noexcept nogil:
    free(s.offs)
    free(s.lens)
    free(s.cell_off)
    free(s.cell_len)
    free(s.cells)
    s.offs = s.cell_off = s.cell_len = NULL
    s.lens = NULL
    s.cells = NULL
    s.fields_cap = s.cells_idx_cap = s.cells_cap = 0


cdef void _scratch_trim(Scratch* s) noexcept nogil:
    """Give back what one large batch made large, so a worker does not keep it for ever."""
    if s.fields_cap * <Py_ssize_t>(sizeof(Py_ssize_t) + sizeof(int32_t)) > KEEP_SCRATCH:
        free(s.offs)
        free(s.lens)
        s.offs = NULL
        s.lens = NULL
        s.fields_cap = 0
    if s.cells_idx_cap * <Py_ssize_t>(2 * sizeof(Py_ssize_t)) > KEEP_SCRATCH:
        free(s.cell_off)
        free(s.cell_len)
        s.cell_off = s.cell_len = NULL
        s.cells_idx_cap = 0
    if s.cells_cap > KEEP_SCRATCH:
        free(s.cells)
        s.cells = NULL
        s.cells_cap = 0


cdef bint _reserve(void** p, Py_ssize_t* cap, Py_ssize_t need, size_t size) noexcept nogil:
    """At least `need` entries of `size` bytes at p[0] (old contents are not kept)."""
    if need <= cap[0] and p[0] != NULL:
        return True
    free(p[0])
    p[0] = malloc(size * need)
    cap[0] = need if p[0] != NULL else 0
    return p[0] != NULL


cdef class Kernel:
    """One layout compiled for the kernels (immutable, so one Kernel may serve many threads:
    a batch that finds the scratch buffers in use by another thread allocates its own).

    ops: (kind, column, key cstring, slot) in output order, kind a NATIVE_KINDS name,
    "preencoded", "doc_start" or "doc_end"; slot indexes `slots` for pre-encoded fields.
    slots: (column, encoder, cell) per pre-encoded field; encoder(buf, pos, length) ->
    (BSON type, payload) is the reference encoder; cell "numeric"/"jsonb" tries the C cell first.
    """

    cdef int nops, ncols, nslots, depth, inf_policy
    cdef bint omit_null, check_keys
    cdef Py_ssize_t max_doc, row_bound
    cdef int* op_kind
    cdef int* op_col
    cdef int* op_key_off
    cdef int* op_key_len
    cdef int* op_slot
    cdef int* col_refs
    cdef int* slot_col
    cdef int* slot_cell
    cdef bytes keys
    cdef const uchar* key_bytes  # points into `keys`
    cdef list encoders
    cdef Scratch scratch
    cdef bint scratch_busy  # read and set with the GIL held

    def __cinit__(self) -> None:
        self.op_kind = self.op_col = self.op_key_off = self.op_key_len = self.op_slot = NULL
        self.col_refs = self.slot_col = self.slot_cell = NULL
        self.scratch = Scratch(NULL, NULL, 0, NULL, NULL, 0, NULL, 0, NULL, NULL)
        self.scratch_busy = False

    def __init__(self, ops: list, slots: list, int ncolumns, bint omit_null, str infinity,
                 Py_ssize_t max_document_size, bint check_json_keys) -> None:
        if ncolumns < 1:
            raise ValueError("a COPY tuple has at least one column")
        self.nops = len(ops)
        self.ncols = ncolumns
        self.nslots = len(slots)
        self.omit_null = omit_null
        self.inf_policy = _INFINITY[infinity]
        self.max_doc = max_document_size
        self.check_keys = check_json_keys
        self.op_kind = <int*>malloc(sizeof(int) * (self.nops + 1))
        self.op_col = <int*>malloc(sizeof(int) * (self.nops + 1))
        self.op_key_off = <int*>malloc(sizeof(int) * (self.nops + 1))
        self.op_key_len = <int*>malloc(sizeof(int) * (self.nops + 1))
        self.op_slot = <int*>malloc(sizeof(int) * (self.nops + 1))
        self.col_refs = <int*>malloc(sizeof(int) * ncolumns)
        self.slot_col = <int*>malloc(sizeof(int) * (self.nslots + 1))
        self.slot_cell = <int*>malloc(sizeof(int) * (self.nslots + 1))
        if (self.op_kind == NULL or self.op_col == NULL or self.op_key_off == NULL
                or self.op_key_len == NULL or self.op_slot == NULL or self.col_refs == NULL
                or self.slot_col == NULL or self.slot_cell == NULL):
            raise MemoryError()
        cdef int i, kind, depth = 0
        for i in range(ncolumns):
            self.col_refs[i] = 0
        keys = bytearray()
        self.row_bound = 5
        for i, (name, column, key, slot) in enumerate(ops):
            if name == "doc_start":
                kind = OP_DOC_START
                depth += 1
                self.depth = max(self.depth, depth)
                self.row_bound += 1 + len(key) + 4
            elif name == "doc_end":
                kind = OP_DOC_END
                depth -= 1
                self.row_bound += 1
            else:
                kind = K_PREENCODED if name == "preencoded" else NATIVE_KINDS[name]
                if not 0 <= column < ncolumns:
                    raise ValueError(f"op {i} reads column {column} of {ncolumns}")
                if kind == K_PREENCODED and not 0 <= slot < self.nslots:
                    raise ValueError(f"op {i} has no slot {slot}")
                self.col_refs[column] += kind != K_PREENCODED
                self.row_bound += 1 + len(key) + _max_payload(kind)
            if depth < 0:
                raise ValueError("doc_end without doc_start")
            self.op_kind[i] = kind
            self.op_col[i] = column
            self.op_key_off[i] = len(keys)
            self.op_key_len[i] = len(key)
            self.op_slot[i] = slot
            keys += key
        if depth != 0:
            raise ValueError("doc_start without doc_end")
        self.keys = bytes(keys)
        self.key_bytes = <const uchar*>PyBytes_AS_STRING(self.keys)
        self.encoders = []
        for i, (column, encoder, cell) in enumerate(slots):
            if not 0 <= column < ncolumns:
                raise ValueError(f"slot {i} reads column {column} of {ncolumns}")
            self.slot_col[i] = column
            self.slot_cell[i] = _CELLS[cell]
            self.encoders.append(encoder)

    def __dealloc__(self) -> None:
        free(self.op_kind)
        free(self.op_col)
        free(self.op_key_off)
        free(self.op_key_len)
        free(self.op_slot)
        free(self.col_refs)
        free(self.slot_col)
        free(self.slot_cell)
        _scratch_free(&self.scratch)
        free(self.scratch.col_bytes)
        free(self.scratch.stack)

    def encode(self, buf, Py_ssize_t start=0):
        """(data, offsets, rows, end, finished, error, error_row) for every tuple of buf[start:].

        error is E_NONE or the first problem found; data and offsets are then None."""
        cdef Py_buffer view
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            return self._encode(buf, <const uchar*>view.buf, view.len, start)
        finally:
            PyBuffer_Release(&view)

    cdef tuple _encode(self, object buf, const uchar* data, Py_ssize_t size, Py_ssize_t start):
        if start < 0:
            raise ValueError("start must not be negative")
        cdef Scratch own = Scratch(NULL, NULL, 0, NULL, NULL, 0, NULL, 0, NULL, NULL)
        cdef Scratch* s = &own
        cdef bint shared = not self.scratch_busy
        if shared:  # the GIL is held: no other thread can take it between the test and the set
            self.scratch_busy = True
            s = &self.scratch
        try:
            return self._encode_with(buf, data, size, start, s)
        finally:
            if shared:
                _scratch_trim(s)
                self.scratch_busy = False
            else:
                _scratch_free(s)
                free(s.col_bytes)
                free(s.stack)

    cdef tuple _encode_with(self, object buf, const uchar* data, Py_ssize_t size,
                            Py_ssize_t start, Scratch* s):
        cdef int ncols = self.ncols, nslots = self.nslots
        # Every tuple has at least a field count and one length per column: an exact bound.
        cdef Py_ssize_t max_rows = (size - start) // (2 + 4 * ncols) + 1 if size > start else 1
        cdef Py_ssize_t fields = max_rows * ncols, fields_cap = s.fields_cap
        if not (_reserve(<void**>&s.offs, &s.fields_cap, fields, sizeof(Py_ssize_t))
                and _reserve(<void**>&s.lens, &fields_cap, fields, sizeof(int32_t))):
            _scratch_free(s)  # offs and lens must keep the same capacity
            raise MemoryError()
        if s.col_bytes == NULL:
            s.col_bytes = <int64_t*>malloc(sizeof(int64_t) * ncols)
        if s.stack == NULL:
            s.stack = <Py_ssize_t*>malloc(sizeof(Py_ssize_t) * (self.depth + 1))
        if s.col_bytes == NULL or s.stack == NULL:
            raise MemoryError()
        cdef Py_ssize_t* offs = s.offs
        cdef int32_t* lens = s.lens
        cdef int64_t* col_bytes = s.col_bytes
        cdef Py_ssize_t* cell_off = NULL
        cdef Py_ssize_t* cell_len = NULL
        cdef Py_ssize_t cells_used = 0, idx_cap
        cdef Py_ssize_t rows = 0, end = start, i
        cdef bint finished = False
        cdef int err = E_NONE, c
        cdef bint ok
        for c in range(ncols):
            col_bytes[c] = 0
        with nogil:
            err = _walk(data, size, start, ncols, offs, lens, max_rows, col_bytes, &rows,
                        &end, &finished)
        if err != E_NONE:
            return None, None, rows, end, finished, err, -1
        if nslots:
            idx_cap = s.cells_idx_cap
            if not (_reserve(<void**>&s.cell_off, &s.cells_idx_cap, rows * nslots + 1,
                             sizeof(Py_ssize_t))
                    and _reserve(<void**>&s.cell_len, &idx_cap, rows * nslots + 1,
                                 sizeof(Py_ssize_t))):
                _scratch_free(s)
                raise MemoryError()
            cell_off = s.cell_off
            cell_len = s.cell_len
            for i in range(rows * nslots):
                cell_len[i] = 0
            if not _grow(&s.cells, &s.cells_cap, 4096):
                raise MemoryError()
            with nogil:
                ok = self._c_cells(data, rows, offs, lens, cell_off, cell_len, &s.cells,
                                   &s.cells_cap, &cells_used)
            if not ok:
                raise MemoryError()
            if not self._python_cells(buf, rows, offs, lens, cell_off, cell_len, &s.cells,
                                      &s.cells_cap, &cells_used):
                return None, None, rows, end, finished, E_CELL, -1
        return self._assemble(data, rows, offs, lens, col_bytes, cell_off, cell_len, s.cells,
                              cells_used, s.stack, end, finished)

    cdef bint _c_cells(self, const uchar* data, Py_ssize_t rows, const Py_ssize_t* offs,
                       const int32_t* lens, Py_ssize_t* cell_off, Py_ssize_t* cell_len,
                       uchar** cells, Py_ssize_t* cap, Py_ssize_t* used) noexcept nogil:
        """Phase 2: the numeric and jsonb cells the C kernels handle; False = out of memory."""
        cdef int s, kind, col
        cdef Py_ssize_t r, n, q = used[0], e, idx
        cdef const uchar* p
        for s in range(self.nslots):
            kind = self.slot_cell[s]
            if kind == CELL_PYTHON:
                continue
            col = self.slot_col[s]
            for r in range(rows):
                n = lens[r * self.ncols + col]
                if n < 0:
                    continue
                p = data + offs[r * self.ncols + col]
                idx = r * self.nslots + s
                if kind == CELL_NUMERIC:
                    if not _grow(cells, cap, q + 1 + DECIMAL128_BYTES):
                        return False
                    if numeric_decimal128(p, n, cells[0] + q + 1):
                        cells[0][q] = 0x13
                        cell_off[idx] = q
                        cell_len[idx] = 1 + DECIMAL128_BYTES
                        q += 1 + DECIMAL128_BYTES
                else:
                    if n < 1 or p[0] != 1:
                        continue  # not jsonb format version 1: the Python encoder says so
                    if not _grow(cells, cap, q + JSON_ROOM_PER_BYTE * n + JSON_ROOM_EXTRA):
                        return False
                    e = json_value(p, 1, n, cells[0], q, self.check_keys)
                    if e >= 0:
                        cell_off[idx] = q
                        cell_len[idx] = e - q
                        q = e
        used[0] = q
        return True

    cdef bint _python_cells(self, object buf, Py_ssize_t rows, const Py_ssize_t* offs,
                            const int32_t* lens, Py_ssize_t* cell_off, Py_ssize_t* cell_len,
                            uchar** cells, Py_ssize_t* cap, Py_ssize_t* used) except? False:
        """Phase 3: every pre-encoded cell still empty, through its reference encoder.

        False when an encoder raised: the caller re-runs the batch on the reference path, which
        raises that error with its column and _id."""
        cdef int s, col
        cdef Py_ssize_t r, n, q = used[0], idx, plen
        cdef bytes payload
        for s in range(self.nslots):
            col = self.slot_col[s]
            encode = self.encoders[s]
            for r in range(rows):
                idx = r * self.nslots + s
                n = lens[r * self.ncols + col]
                if n < 0 or cell_len[idx]:
                    continue
                try:
                    btype, value = encode(buf, offs[r * self.ncols + col], n)
                    payload = value if type(value) is bytes else bytes(value)
                    if not 0 < btype < 256:
                        return False
                except Exception:
                    return False
                plen = PyBytes_GET_SIZE(payload)
                if not _grow(cells, cap, q + 1 + plen):
                    raise MemoryError()
                cells[0][q] = <uchar>btype
                memcpy(cells[0] + q + 1, PyBytes_AS_STRING(payload), plen)
                cell_off[idx] = q
                cell_len[idx] = 1 + plen
                q += 1 + plen
        used[0] = q
        return True

    cdef tuple _assemble(self, const uchar* data, Py_ssize_t rows, const Py_ssize_t* offs,
                         const int32_t* lens, const int64_t* col_bytes,
                         const Py_ssize_t* cell_off, const Py_ssize_t* cell_len,
                         const uchar* cells, Py_ssize_t cells_used, Py_ssize_t* stack,
                         Py_ssize_t end, bint finished):
        """Phase 4: every document, into one bytes object sized by an upper bound first."""
        if rows == 0:
            return b"", np.zeros(1, dtype=np.int64), 0, end, finished, E_NONE, -1
        cdef Py_ssize_t bound = rows * self.row_bound + cells_used
        cdef int c, err
        for c in range(self.ncols):
            bound += col_bytes[c] * self.col_refs[c]
        offsets = np.empty(rows + 1, dtype=np.int64)
        cdef int64_t[::1] offsets_view = offsets
        cdef Py_ssize_t written = 0, err_row = -1
        cdef PyObject* raw = _new_bytes(NULL, bound)
        if raw == NULL:
            raise MemoryError()
        cdef uchar* out = <uchar*>PyBytes_AS_STRING(<object>raw)
        try:
            with nogil:
                err = self._write_documents(data, rows, offs, lens, cell_off, cell_len, cells,
                                            stack, out, &offsets_view[0], &written, &err_row)
            if err != E_NONE:
                return None, None, rows, end, finished, err, err_row
            _PyBytes_Resize(&raw, written)  # on failure it frees the object and sets raw NULL
            result = <object>raw  # a new reference; ours is dropped below
        finally:
            Py_XDECREF(raw)
        return result, offsets, rows, end, finished, E_NONE, -1

    cdef int _write_documents(self, const uchar* data, Py_ssize_t rows, const Py_ssize_t* offs,
                              const int32_t* lens, const Py_ssize_t* cell_off,
                              const Py_ssize_t* cell_len, const uchar* cells,
                              Py_ssize_t* stack, uchar* out, int64_t* doc_off,
                              Py_ssize_t* written, Py_ssize_t* err_row) noexcept nogil:
        cdef const uchar* keys = self.key_bytes
        cdef Py_ssize_t r, q = 0, q0, n, t, idx, m
        cdef int o, kind, klen, depth
        doc_off[0] = 0
        for r in range(rows):
            q0 = q
            q += 4
            depth = 0
            for o in range(self.nops):
                kind = self.op_kind[o]
                klen = self.op_key_len[o]
                if kind == OP_DOC_START:
                    out[q] = 0x03
                    copy_small(out + q + 1, keys + self.op_key_off[o], klen)
                    q += 1 + klen
                    stack[depth] = q
                    depth += 1
                    q += 4
                    continue
                if kind == OP_DOC_END:
                    out[q] = 0
                    q += 1
                    depth -= 1
                    wr_i32(out + stack[depth], <int32_t>(q - stack[depth]))
                    continue
                idx = r * self.ncols + self.op_col[o]
                n = lens[idx]
                if n < 0:
                    if not self.omit_null:
                        out[q] = 0x0A
                        copy_small(out + q + 1, keys + self.op_key_off[o], klen)
                        q += 1 + klen
                    continue
                t = q
                copy_small(out + q + 1, keys + self.op_key_off[o], klen)
                q += 1 + klen
                if kind == K_PREENCODED:
                    idx = r * self.nslots + self.op_slot[o]
                    m = cell_len[idx]
                    out[t] = cells[cell_off[idx]]
                    memcpy(out + q, cells + cell_off[idx] + 1, m - 1)
                    q += m - 1
                    continue
                q = _write_value(out, t, q, kind, data + offs[idx], n, self.inf_policy)
                if q < 0:
                    err_row[0] = r
                    return E_VALUE
            out[q] = 0
            q += 1
            if q - q0 > self.max_doc:
                err_row[0] = r
                return E_TOO_LARGE
            wr_i32(out + q0, <int32_t>(q - q0))
            doc_off[r + 1] = q
        written[0] = q
        return E_NONE

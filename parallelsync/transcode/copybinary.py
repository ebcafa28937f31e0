"""The binary COPY stream framing: the file header and the tuple walk.

Format (PostgreSQL docs, "COPY ... Binary Format"): an 11-byte signature, an int32 flags field,
an int32 header-extension length plus that many bytes; then tuples of an int16 field count and,
per field, an int32 length (-1 = NULL) followed by that many bytes; the trailer is a field count
of -1. All integers are big-endian.
"""

from __future__ import annotations

import struct

from parallelsync.errors import EncodeError
from parallelsync.transcode.bson_writer import Buffer

SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = struct.Struct(">11sII")
# Bit 16 says every tuple carries an OID column; bits 17-31 are reserved as "critical": a reader
# must reject data that sets any of them because it cannot know how the format changed.
_FLAG_OIDS = 1 << 16
_CRITICAL_FLAGS = 0xFFFF0000

unpack_i16 = struct.Struct(">h").unpack_from
unpack_i32 = struct.Struct(">i").unpack_from


def header_length(buf: Buffer) -> int:
    """Validate the binary COPY header at the start of `buf`; return the offset just after it."""
    if len(buf) < _HEADER.size:
        raise EncodeError(
            f"binary COPY header truncated: got {len(buf)} bytes, need at least {_HEADER.size}"
        )
    signature: bytes
    flags: int
    ext_len: int
    signature, flags, ext_len = _HEADER.unpack_from(buf, 0)
    if signature != SIGNATURE:
        raise EncodeError(
            f"not a binary COPY stream: signature {bytes(signature)!r}, expected {SIGNATURE!r}"
        )
    if flags & _FLAG_OIDS:
        raise EncodeError("binary COPY stream includes OIDs: copy without the OIDS option")
    if flags & _CRITICAL_FLAGS:
        raise EncodeError(f"binary COPY header has unknown critical flags {flags:#010x}")
    end = _HEADER.size + ext_len
    if end > len(buf):
        raise EncodeError("binary COPY header extension truncated")
    return end


def walk_tuple(buf: Buffer, pos: int, ncolumns: int) -> tuple[list[tuple[int, int]] | None, int]:
    """Read one tuple at `pos`: ([(offset, length)] per field, next position); None = trailer."""
    size = len(buf)
    if pos + 2 > size:
        raise EncodeError(f"binary COPY data truncated at byte {pos}: no field count")
    nfields = unpack_i16(buf, pos)[0]
    pos += 2
    if nfields == -1:
        return None, pos
    if nfields != ncolumns:
        raise EncodeError(
            f"binary COPY tuple at byte {pos - 2} has {nfields} fields, the layout expects "
            f"{ncolumns}: the SELECT and the layout disagree"
        )
    cells: list[tuple[int, int]] = []
    for _ in range(nfields):
        if pos + 4 > size:
            raise EncodeError(f"binary COPY data truncated at byte {pos}: no field length")
        length = unpack_i32(buf, pos)[0]
        pos += 4
        if length >= 0:
            if pos + length > size:
                raise EncodeError(f"binary COPY data truncated at byte {pos}: field runs past end")
            cells.append((pos, length))
            pos += length
        else:
            cells.append((pos, -1))
    return cells, pos
